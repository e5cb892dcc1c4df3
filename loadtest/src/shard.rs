//! A worker shard: a slice of the simulated miners, each a small tokio task reading its socket,
//! plus one sweeper task (keepalives, response timeouts, progress) and the share phases.
//!
//! Per connection the harness holds a [`Session`] (a few hundred bytes, jobs included) and a
//! reader task that keeps no buffer while idle: reads go to a stack buffer and only a partial
//! line is kept. Writes go through a per-session async mutex, so the ramp, the sweeper and the
//! share scheduler can all send on the same connection.
//!
//! With `--tls` the same session runs over a rustls stream split in two halves; its reader then
//! awaits `read` with its buffer, so an idle TLS session costs the harness that buffer and
//! rustls's state too. The plain path is unchanged.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::hashing::{fake_result, HashEngine, HashMode, Work};
use crate::identity;
use crate::messages::{Command, Event, Load, PhaseSpec, ShardPlan};
use crate::mix::{arrival_times, ShareKind};
use crate::net::{connect, io_reason};
use crate::plan::{plan_open, SessionView};
use crate::procfs::{mono_us, sample_self};
use crate::stats::{FanoutStats, FinalStats, PhaseStats, Prepared, Progress, RampStats, RawStats};
use crate::tls;
use crate::wire::{self, Incoming, Job, Reason};

/// Jobs a session keeps (the pool accepts shares for its last 4 jobs).
const JOBS_KEPT: usize = 4;
/// A line longer than this ends the session (the pool's own cap is 10 KiB).
const MAX_LINE: usize = 64 * 1024;
/// An open-loop send this late counts as a late send.
const LATE_US: u64 = 5_000;
/// Nonces tried per valid share before giving up (2^16 per share slot; see [`nonce_for`]).
const NONCE_TRIES: u32 = 1 << 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Share slot `n` of a session owns nonces `n << 16 ..= n << 16 | 0xffff`: slots never overlap,
/// so no two shares of a session reuse a nonce by accident.
fn nonce_for(slot: u32) -> u32 {
    slot << 16
}

/// What a request was.
#[derive(Debug, Clone, Copy)]
enum PendingKind {
    Login,
    Keepalive,
    Submit { phase: u32, kind: ShareKind },
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u64,
    at_us: u64,
    kind: PendingKind,
}

/// A share ready to send.
#[derive(Debug, Clone)]
struct Share {
    job_id: Arc<str>,
    nonce: [u8; 4],
    result: [u8; 32],
}

#[derive(Default)]
struct SessionState {
    ready: bool,
    closed: bool,
    pool_id: Box<str>,
    jobs: VecDeque<Arc<Job>>,
    next_req: u64,
    pending: Vec<Pending>,
    last_rx_us: u64,
    slot: u32,
    /// The session's latest submitted share, for duplicates.
    last_share: Option<Share>,
    /// Closed loop: shares still to send, and for which phase.
    feed: VecDeque<Share>,
    feed_phase: u32,
}

impl SessionState {
    fn register(&mut self, kind: PendingKind, at_us: u64) -> u64 {
        self.next_req += 1;
        let id = self.next_req;
        self.pending.push(Pending { id, at_us, kind });
        id
    }

    fn take_pending(&mut self, id: u64) -> Option<Pending> {
        let at = self.pending.iter().position(|p| p.id == id)?;
        Some(self.pending.swap_remove(at))
    }

    fn newest(&self) -> Option<&Arc<Job>> {
        self.jobs.back()
    }

    fn older(&self) -> Option<&Arc<Job>> {
        let newest = self.newest()?.height;
        self.jobs.iter().rev().find(|j| j.height < newest)
    }
}

/// The sending half of a session's connection.
enum Writer {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

/// The receiving half of a session's connection.
enum Reader {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// One simulated miner.
pub struct Session {
    miner: u64,
    pool: SocketAddr,
    source: Option<Ipv4Addr>,
    state: Mutex<SessionState>,
    writer: tokio::sync::Mutex<Option<Writer>>,
    fanout_us: AtomicU64,
    close: Notify,
}

impl Session {
    async fn write(&self, line: &str) -> bool {
        let mut w = self.writer.lock().await;
        match w.as_mut() {
            Some(Writer::Plain(w)) => w.write_all(line.as_bytes()).await.is_ok(),
            Some(Writer::Tls(w)) => w.write_all(line.as_bytes()).await.is_ok(),
            None => false,
        }
    }
}

#[derive(Default)]
struct Counters {
    attempted: AtomicU64,
    connected: AtomicU64,
    logged_in: AtomicU64,
    connect_failed: AtomicU64,
    login_failed: AtomicU64,
    alive: AtomicU64,
    dropped: AtomicU64,
    max_height: AtomicU64,
    fanout_got: AtomicU64,
}

#[derive(Default)]
struct RampAcc {
    stats: RampStats,
    first_us: u64,
    last_us: u64,
}

struct PhaseAcc {
    stats: PhaseStats,
    start_us: u64,
    outstanding: u64,
    /// Closed loop: answers before this time trigger the next send.
    feed_until_us: u64,
}

enum PreparedLoad {
    Open(Vec<(u64, usize, ShareKind, Share)>),
    Closed { depth: usize, seconds: f64 },
}

struct PreparedPhase {
    id: u32,
    sessions: Vec<usize>,
    load: PreparedLoad,
    skipped: BTreeMap<String, u64>,
}

/// A shard's shared state.
pub struct Shard {
    plan: ShardPlan,
    sessions: Vec<Arc<Session>>,
    events: mpsc::UnboundedSender<Event>,
    in_process: bool,
    /// `--tls`: the connector every session handshakes with; `None`: plain TCP.
    tls: Option<TlsConnector>,
    c: Counters,
    ramp: Mutex<RampAcc>,
    phase: Mutex<Option<PhaseAcc>>,
    prepared: Mutex<Option<PreparedPhase>>,
    armed: AtomicU64,
    fanout_complete_sent: AtomicBool,
    closing: AtomicBool,
    misc: Mutex<FinalStats>,
    hasher: Mutex<Option<HashEngine>>,
}

/// Runs a shard until [`Command::Stop`], the end of the command stream or the hard deadline.
pub async fn run(
    plan: ShardPlan,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    in_process: bool,
) {
    let sessions = (0..plan.miners)
        .map(|k| {
            let miner = plan.first_miner + k;
            Arc::new(Session {
                miner,
                pool: plan.pools[(miner % plan.pools.len() as u64) as usize],
                source: (!plan.sources.is_empty()).then(|| plan.sources[(miner % plan.sources.len() as u64) as usize]),
                state: Mutex::new(SessionState::default()),
                writer: tokio::sync::Mutex::new(None),
                fanout_us: AtomicU64::new(0),
                close: Notify::new(),
            })
        })
        .collect();
    let deadline = plan.hard_deadline_us;
    let tls = match plan.tls.as_ref().map(tls::connector).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            let _ = events.send(Event::Fatal(e));
            return;
        }
    };
    let shard = Arc::new(Shard {
        plan,
        sessions,
        events,
        in_process,
        tls,
        c: Counters::default(),
        ramp: Mutex::new(RampAcc::default()),
        phase: Mutex::new(None),
        prepared: Mutex::new(None),
        armed: AtomicU64::new(0),
        fanout_complete_sent: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        misc: Mutex::new(FinalStats::default()),
        hasher: Mutex::new(None),
    });
    let sweeper = tokio::spawn(sweep_loop(shard.clone()));
    let until_deadline = Duration::from_micros(deadline.saturating_sub(mono_us()));
    let hard_stop = tokio::time::sleep(until_deadline);
    tokio::pin!(hard_stop);
    loop {
        let command = tokio::select! {
            c = commands.recv() => c,
            _ = &mut hard_stop => None,
        };
        match command {
            Some(Command::Ramp) => {
                tokio::spawn(ramp(shard.clone()));
            }
            Some(Command::Arm { min_height }) => shard.arm(min_height),
            Some(Command::CollectFanout { t0_us }) => shard.collect_fanout(t0_us),
            Some(Command::Raw { seconds }) => {
                tokio::spawn(raw(shard.clone(), seconds));
            }
            Some(Command::Prepare(spec)) => {
                tokio::spawn(prepare(shard.clone(), spec));
            }
            Some(Command::Go { id }) => {
                tokio::spawn(go(shard.clone(), id));
            }
            Some(Command::Stop) | None => break,
        }
    }
    sweeper.abort();
    shard.stop().await;
}

impl Shard {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn progress(&self) -> Progress {
        let (submits, replies) =
            lock(&self.phase).as_ref().map(|a| (a.stats.sent(), a.stats.sent() - a.outstanding)).unwrap_or((0, 0));
        Progress {
            attempted: self.c.attempted.load(Ordering::Relaxed),
            connected: self.c.connected.load(Ordering::Relaxed),
            logged_in: self.c.logged_in.load(Ordering::Relaxed),
            connect_failed: self.c.connect_failed.load(Ordering::Relaxed),
            login_failed: self.c.login_failed.load(Ordering::Relaxed),
            alive: self.c.alive.load(Ordering::Relaxed),
            dropped: self.c.dropped.load(Ordering::Relaxed),
            max_height: self.c.max_height.load(Ordering::Relaxed),
            fanout_got: self.c.fanout_got.load(Ordering::Relaxed),
            submits,
            replies,
        }
    }

    fn connect_failed(&self, reason: String) {
        self.c.connect_failed.fetch_add(1, Ordering::Relaxed);
        let mut r = lock(&self.ramp);
        *r.stats.connect_failures.entry(reason).or_default() += 1;
        r.last_us = mono_us();
    }

    fn login_failed(&self, reason: String) {
        self.c.login_failed.fetch_add(1, Ordering::Relaxed);
        let mut r = lock(&self.ramp);
        *r.stats.login_failures.entry(reason).or_default() += 1;
        r.last_us = mono_us();
    }

    /// Every session is resolved: logged in, or failed to connect or log in.
    fn ramp_resolved(&self) -> bool {
        let done = self.c.logged_in.load(Ordering::Relaxed)
            + self.c.connect_failed.load(Ordering::Relaxed)
            + self.c.login_failed.load(Ordering::Relaxed);
        done >= self.plan.miners
    }

    fn arm(&self, min_height: u64) {
        for s in &self.sessions {
            s.fanout_us.store(0, Ordering::Relaxed);
        }
        self.c.fanout_got.store(0, Ordering::Relaxed);
        self.fanout_complete_sent.store(false, Ordering::Relaxed);
        self.armed.store(min_height, Ordering::Release);
        self.emit(Event::Armed);
    }

    fn collect_fanout(&self, t0_us: u64) {
        self.armed.store(0, Ordering::Release);
        let mut stats = FanoutStats::default();
        for s in &self.sessions {
            let at = s.fanout_us.load(Ordering::Relaxed);
            let alive = {
                let st = lock(&s.state);
                st.ready && !st.closed
            };
            if alive {
                stats.alive += 1;
            }
            if at > 0 {
                stats.got += 1;
                stats.latency_us.record(at.saturating_sub(t0_us));
            } else if alive {
                stats.missing += 1;
            }
        }
        self.emit(Event::Fanout(Box::new(stats)));
    }

    fn on_job(&self, s: &Session, job: Job, now: u64) {
        let height = job.height;
        {
            let mut st = lock(&s.state);
            st.last_rx_us = now;
            if st.jobs.len() == JOBS_KEPT {
                st.jobs.pop_front();
            }
            st.jobs.push_back(Arc::new(job));
        }
        lock(&self.misc).jobs_received += 1;
        self.c.max_height.fetch_max(height, Ordering::Relaxed);
        let armed = self.armed.load(Ordering::Acquire);
        if armed > 0
            && height >= armed
            && s.fanout_us.compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            let got = self.c.fanout_got.fetch_add(1, Ordering::AcqRel) + 1;
            if got >= self.c.alive.load(Ordering::Relaxed) && !self.fanout_complete_sent.swap(true, Ordering::AcqRel) {
                self.emit(Event::FanoutComplete);
            }
        }
    }

    /// Handles one line; sends that must follow (closed-loop feeding) go to `out`.
    fn on_line(&self, s: &Session, line: &[u8], out: &mut Vec<String>) {
        let now = mono_us();
        match wire::parse_line(line) {
            Incoming::Job(job) => self.on_job(s, job, now),
            Incoming::Unknown(what) => *lock(&self.misc).unknown_lines.entry(what).or_default() += 1,
            Incoming::Reply { id, outcome } => {
                let pending = {
                    let mut st = lock(&s.state);
                    st.last_rx_us = now;
                    st.take_pending(id)
                };
                let Some(p) = pending else {
                    lock(&self.misc).unmatched_replies += 1;
                    return;
                };
                match p.kind {
                    PendingKind::Login => self.on_login_reply(s, outcome, p.at_us, now),
                    PendingKind::Keepalive => {
                        let mut m = lock(&self.misc);
                        if outcome.is_ok() {
                            m.keepalives_ok += 1;
                        } else {
                            m.keepalives_failed += 1;
                        }
                    }
                    PendingKind::Submit { phase, kind } => {
                        let answer = outcome.map(|_| ()).map_err(|m| Reason::of(&m));
                        if self.record_answer(phase, kind, answer, now.saturating_sub(p.at_us), now) {
                            if let Some(line) = self.next_feed(s, phase, now) {
                                out.push(line);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Splits received bytes into lines for [`Shard::on_line`], keeping a partial line in
    /// `partial`; `Some(reason)` ends the session.
    fn on_bytes(&self, s: &Session, mut data: &[u8], partial: &mut Vec<u8>, out: &mut Vec<String>) -> Option<String> {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            if partial.is_empty() {
                self.on_line(s, &data[..pos], out);
            } else {
                partial.extend_from_slice(&data[..pos]);
                let line = std::mem::take(partial);
                self.on_line(s, &line, out);
            }
            data = &data[pos + 1..];
        }
        partial.extend_from_slice(data);
        if partial.is_empty() {
            // Give back the capacity of a line that completed: idle sessions hold no buffer.
            *partial = Vec::new();
        }
        (partial.len() > MAX_LINE).then(|| "line too long".to_string())
    }

    fn on_login_reply(&self, s: &Session, outcome: Result<String, String>, at_us: u64, now: u64) {
        match outcome
            .map_err(|m| Reason::of(&m).name().to_string())
            .and_then(|r| wire::parse_login_result(&r).map_err(|e| format!("unusable login result: {}", e.0)))
        {
            Ok((pool_id, job)) => {
                let height = job.height;
                {
                    let mut st = lock(&s.state);
                    st.pool_id = pool_id;
                    st.jobs.push_back(Arc::new(job));
                    st.ready = true;
                    st.slot = rand::thread_rng().gen_range(0..1 << 12);
                }
                self.c.max_height.fetch_max(height, Ordering::Relaxed);
                self.c.alive.fetch_add(1, Ordering::Relaxed);
                self.c.logged_in.fetch_add(1, Ordering::Relaxed);
                let mut r = lock(&self.ramp);
                r.stats.login_us.record(now.saturating_sub(at_us));
                r.last_us = now;
            }
            Err(reason) => {
                self.login_failed(reason);
                s.close.notify_one();
            }
        }
    }

    /// Records a submit answer in its phase; true if the phase is still feeding (closed loop).
    fn record_answer(&self, phase: u32, kind: ShareKind, answer: Result<(), Reason>, latency: u64, now: u64) -> bool {
        let mut g = lock(&self.phase);
        let Some(acc) = g.as_mut().filter(|a| a.stats.id == phase) else { return false };
        acc.outstanding = acc.outstanding.saturating_sub(1);
        let second = (now.saturating_sub(acc.start_us) / 1_000_000) as usize;
        if acc.stats.max_latency_per_s.len() <= second {
            acc.stats.max_latency_per_s.resize(second + 1, 0);
        }
        acc.stats.max_latency_per_s[second] = acc.stats.max_latency_per_s[second].max(latency);
        let k = acc.stats.kinds.entry(kind).or_default();
        match answer {
            Ok(()) => {
                k.accepted += 1;
                if acc.stats.accepted_per_s.len() <= second {
                    acc.stats.accepted_per_s.resize(second + 1, 0);
                }
                acc.stats.accepted_per_s[second] += 1;
            }
            Err(reason) => *k.rejected.entry(reason.name().to_string()).or_default() += 1,
        }
        acc.stats.latency_all_us.record(latency);
        if kind == ShareKind::Valid {
            acc.stats.latency_valid_us.record(latency);
        }
        now < acc.feed_until_us
    }

    /// Closed loop: the next share of `s` for `phase`, registered and ready to write.
    fn next_feed(&self, s: &Session, phase: u32, now: u64) -> Option<String> {
        let line = {
            let mut st = lock(&s.state);
            if st.feed_phase != phase || st.closed {
                return None;
            }
            match st.feed.pop_front() {
                Some(share) => {
                    let id = st.register(PendingKind::Submit { phase, kind: ShareKind::Valid }, now);
                    let line = wire::submit_line(id, &st.pool_id, &share.job_id, share.nonce, &share.result);
                    st.last_share = Some(share);
                    line
                }
                None => {
                    drop(st);
                    let mut g = lock(&self.phase);
                    if let Some(acc) = g.as_mut().filter(|a| a.stats.id == phase) {
                        if !acc.stats.stock_exhausted {
                            acc.stats.stock_exhausted = true;
                            acc.stats.feed_seconds = now.saturating_sub(acc.start_us) as f64 / 1e6;
                        }
                    }
                    return None;
                }
            }
        };
        let mut g = lock(&self.phase);
        if let Some(acc) = g.as_mut().filter(|a| a.stats.id == phase) {
            acc.stats.kinds.entry(ShareKind::Valid).or_default().sent += 1;
            acc.outstanding += 1;
        }
        Some(line)
    }

    /// The connection of `s` ended: account for it and everything it had in flight.
    fn on_closed(&self, s: &Session, reason: String) {
        let (was_ready, pending) = {
            let mut st = lock(&s.state);
            if st.closed {
                return;
            }
            st.closed = true;
            st.feed.clear();
            (st.ready, std::mem::take(&mut st.pending))
        };
        if was_ready {
            self.c.alive.fetch_sub(1, Ordering::Relaxed);
            if !self.closing.load(Ordering::Relaxed) {
                self.c.dropped.fetch_add(1, Ordering::Relaxed);
                *lock(&self.misc).dropped.entry(reason.clone()).or_default() += 1;
            }
        }
        for p in pending {
            match p.kind {
                PendingKind::Login => self.login_failed(format!("closed: {reason}")),
                PendingKind::Keepalive => lock(&self.misc).keepalives_failed += 1,
                PendingKind::Submit { phase, kind } => {
                    let mut g = lock(&self.phase);
                    if let Some(acc) = g.as_mut().filter(|a| a.stats.id == phase) {
                        acc.outstanding = acc.outstanding.saturating_sub(1);
                        acc.stats.kinds.entry(kind).or_default().closed += 1;
                    }
                }
            }
        }
    }

    /// Keepalives, response timeouts and a progress event.
    async fn sweep(&self) {
        let now = mono_us();
        let keepalive_us = (self.plan.keepalive_s * 1e6) as u64;
        let timeout_us = self.plan.response_timeout_ms * 1000;
        for s in &self.sessions {
            let (ping, expired) = {
                let mut st = lock(&s.state);
                if st.closed || (st.pending.is_empty() && !st.ready) {
                    continue;
                }
                let mut expired = Vec::new();
                st.pending.retain(|p| {
                    let keep = now.saturating_sub(p.at_us) < timeout_us;
                    if !keep {
                        expired.push(*p);
                    }
                    keep
                });
                let keepalive_pending = st.pending.iter().any(|p| matches!(p.kind, PendingKind::Keepalive));
                let ping = if st.ready && !keepalive_pending && now.saturating_sub(st.last_rx_us) >= keepalive_us {
                    let id = st.register(PendingKind::Keepalive, now);
                    // Not an answer, but it restarts the silence clock like xmrig's timer.
                    st.last_rx_us = now;
                    Some(wire::keepalived_line(id, &st.pool_id))
                } else {
                    None
                };
                (ping, expired)
            };
            for p in expired {
                match p.kind {
                    PendingKind::Login => {
                        self.login_failed("timeout".into());
                        s.close.notify_one();
                    }
                    PendingKind::Keepalive => lock(&self.misc).keepalives_failed += 1,
                    PendingKind::Submit { phase, kind } => {
                        let mut g = lock(&self.phase);
                        if let Some(acc) = g.as_mut().filter(|a| a.stats.id == phase) {
                            acc.outstanding = acc.outstanding.saturating_sub(1);
                            acc.stats.kinds.entry(kind).or_default().timed_out += 1;
                        }
                    }
                }
            }
            if let Some(line) = ping {
                lock(&self.misc).keepalives_sent += 1;
                s.write(&line).await;
            }
        }
        self.emit(Event::Progress(self.progress()));
    }

    async fn stop(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let alive = self.c.alive.load(Ordering::Relaxed);
        for s in &self.sessions {
            s.close.notify_one();
            if let Ok(mut w) = s.writer.try_lock() {
                w.take();
            }
        }
        let mut fin = lock(&self.misc).clone();
        fin.alive = alive;
        if !self.in_process {
            let me = sample_self();
            fin.cpu_s = me.cpu_s;
            fin.hwm_kib = me.hwm_kib;
        }
        self.emit(Event::Final(Box::new(fin)));
    }

    fn ready_sessions(&self, limit: usize) -> Vec<usize> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                let st = lock(&s.state);
                st.ready && !st.closed && st.newest().is_some()
            })
            .map(|(i, _)| i)
            .take(limit)
            .collect()
    }
}

async fn sweep_loop(shard: Arc<Shard>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shard.sweep().await;
    }
}

async fn ramp(shard: Arc<Shard>) {
    let start_us = mono_us();
    lock(&shard.ramp).first_us = start_us;
    let rate = shard.plan.ramp_rate.max(1.0);
    let started = tokio::time::Instant::now();
    for (k, s) in shard.sessions.iter().enumerate() {
        let due = started + Duration::from_secs_f64(k as f64 / rate);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        if shard.closing.load(Ordering::Relaxed) {
            return;
        }
        tokio::spawn(run_session(shard.clone(), s.clone()));
    }
    // Every session resolves within connect + response timeouts; the sweeper enforces them.
    let limit = Duration::from_millis(shard.plan.connect_timeout_ms + shard.plan.response_timeout_ms + 2_000);
    let waited = tokio::time::Instant::now();
    while !shard.ramp_resolved() && waited.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = {
        let mut r = lock(&shard.ramp);
        r.stats.attempted = shard.c.attempted.load(Ordering::Relaxed);
        r.stats.connected = shard.c.connected.load(Ordering::Relaxed);
        r.stats.logged_in = shard.c.logged_in.load(Ordering::Relaxed);
        r.stats.seconds = r.last_us.saturating_sub(r.first_us) as f64 / 1e6;
        r.stats.clone()
    };
    shard.emit(Event::RampDone(Box::new(stats)));
}

async fn run_session(shard: Arc<Shard>, s: Arc<Session>) {
    shard.c.attempted.fetch_add(1, Ordering::Relaxed);
    let t = mono_us();
    let timeout = Duration::from_millis(shard.plan.connect_timeout_ms);
    let stream = match connect(s.pool, s.source, timeout).await {
        Ok(stream) => stream,
        Err(reason) => {
            shard.connect_failed(reason);
            return;
        }
    };
    let (read, write) = match &shard.tls {
        None => {
            let (read, write) = stream.into_split();
            (Reader::Plain(read), Writer::Plain(write))
        }
        Some(connector) => {
            let handshake = tokio::time::timeout(timeout, tls::handshake(connector, s.pool, stream));
            match handshake.await.unwrap_or_else(|_| Err("TLS: handshake timeout".into())) {
                Ok(stream) => {
                    let (read, write) = tokio::io::split(stream);
                    (Reader::Tls(read), Writer::Tls(write))
                }
                Err(reason) => {
                    shard.connect_failed(reason);
                    return;
                }
            }
        }
    };
    // With TLS, "connected" is after the handshake and the connect time includes it.
    let connected_us = mono_us();
    shard.c.connected.fetch_add(1, Ordering::Relaxed);
    lock(&shard.ramp).stats.connect_us.record(connected_us - t);
    *s.writer.lock().await = Some(write);
    let plan = &shard.plan;
    let login = identity::address(plan.address_salt, s.miner % plan.addresses.max(1));
    let worker = identity::worker(&plan.worker_prefix, s.miner);
    let id = lock(&s.state).register(PendingKind::Login, mono_us());
    let reason = if s.write(&wire::login_line(id, &login, &worker, &plan.agent)).await {
        match read {
            Reader::Plain(read) => read_loop(&shard, &s, read).await,
            Reader::Tls(read) => read_loop_tls(&shard, &s, read).await,
        }
    } else {
        "write failed".to_string()
    };
    s.writer.lock().await.take();
    shard.on_closed(&s, reason);
}

async fn read_loop(shard: &Shard, s: &Session, read: OwnedReadHalf) -> String {
    let mut partial: Vec<u8> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            r = read.readable() => {
                if let Err(e) = r {
                    return io_reason(&e);
                }
            }
            _ = s.close.notified() => return "closed by the harness".into(),
        }
        // The buffer lives only between awaits, so an idle session holds none.
        let ended = {
            let mut buf = [0u8; 4096];
            match read.try_read(&mut buf) {
                Ok(0) => Some("closed by the pool".to_string()),
                Ok(n) => shard.on_bytes(s, &buf[..n], &mut partial, &mut out),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                Err(e) => Some(io_reason(&e)),
            }
        };
        for line in out.drain(..) {
            s.write(&line).await;
        }
        if let Some(reason) = ended {
            return reason;
        }
    }
}

/// [`read_loop`] over TLS: rustls decrypts inside `read`, so the buffer is held while waiting.
async fn read_loop_tls(shard: &Shard, s: &Session, mut read: ReadHalf<TlsStream<TcpStream>>) -> String {
    let mut partial: Vec<u8> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let ended = tokio::select! {
            r = read.read(&mut buf) => match r {
                Ok(0) => Some("closed by the pool".to_string()),
                Ok(n) => shard.on_bytes(s, &buf[..n], &mut partial, &mut out),
                Err(e) => Some(io_reason(&e)),
            },
            _ = s.close.notified() => return "closed by the harness".into(),
        };
        for line in out.drain(..) {
            s.write(&line).await;
        }
        if let Some(reason) = ended {
            return reason;
        }
    }
}

async fn raw(shard: Arc<Shard>, seconds: f64) {
    let Some(job) = shard.ready_sessions(1).first().and_then(|&i| lock(&shard.sessions[i].state).newest().cloned())
    else {
        shard.emit(Event::Fatal("raw hash rate: no logged-in session has a job to take the seed from".into()));
        return;
    };
    let sh = shard.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut guard = lock(&sh.hasher);
        let build_s = ensure_hasher(&mut guard, sh.plan.hash_mode, job.seed, sh.plan.hash_threads)?;
        let engine = guard.as_mut().expect("hasher just built");
        let (hashes, secs, cpu_s) = engine.raw(&job.blob, job.nonce_offset, Duration::from_secs_f64(seconds));
        Ok::<_, String>(RawStats {
            mode: mode_name(engine.mode).into(),
            threads: engine.threads(),
            hashes,
            seconds: secs,
            cpu_s,
            build_s,
        })
    })
    .await;
    match result {
        Ok(Ok(stats)) => shard.emit(Event::Raw(stats)),
        Ok(Err(e)) => shard.emit(Event::Fatal(format!("raw hash rate: {e}"))),
        Err(e) => shard.emit(Event::Fatal(format!("raw hash rate: {e}"))),
    }
}

fn mode_name(mode: HashMode) -> &'static str {
    match mode {
        HashMode::Light => "light",
        HashMode::Fast => "fast",
    }
}

/// Builds the hasher unless one for `seed` exists; returns the seconds spent building.
fn ensure_hasher(slot: &mut Option<HashEngine>, mode: HashMode, seed: [u8; 32], threads: usize) -> Result<f64, String> {
    if slot.as_ref().is_some_and(|h| h.seed == seed) {
        return Ok(0.0);
    }
    *slot = None;
    let engine = HashEngine::build(mode, seed, threads)?;
    let build_s = engine.build_s;
    *slot = Some(engine);
    Ok(build_s)
}

/// Queues the search for a new valid share of `job` on session state `st`; returns its work index.
fn add_valid(st: &mut SessionState, job: &Job, work: &mut Vec<Work>) -> usize {
    st.slot = st.slot.wrapping_add(1);
    work.push(Work {
        blob: Arc::from(&job.blob[..]),
        nonce_offset: job.nonce_offset,
        base: nonce_for(st.slot),
        tries: NONCE_TRIES,
        difficulty: job.difficulty,
    });
    work.len() - 1
}

/// A share to materialise once hashing is done.
enum Slot {
    Ready(Share),
    Hash(usize, Arc<str>),
}

async fn prepare(shard: Arc<Shard>, spec: PhaseSpec) {
    let id = spec.id;
    let sh = shard.clone();
    let outcome = tokio::task::spawn_blocking(move || prepare_blocking(&sh, spec)).await;
    let prepared = match outcome {
        Ok(p) => p,
        Err(e) => Prepared { id, error: Some(format!("preparing phase {id}: {e}")), ..Default::default() },
    };
    shard.emit(Event::Prepared(prepared));
}

fn prepare_blocking(shard: &Shard, spec: PhaseSpec) -> Prepared {
    let mut result = Prepared { id: spec.id, ..Default::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed ^ (shard.plan.shard as u64).wrapping_mul(0x9e37_79b9));
    let limit = match spec.load {
        Load::Open { sessions, .. } => sessions,
        Load::Closed { sessions, .. } => sessions.max(1),
    };
    let chosen = shard.ready_sessions(limit);
    let mut work: Vec<Work> = Vec::new();
    let mut seed = None;
    let mut slots: Vec<(u64, usize, ShareKind, Slot)> = Vec::new();
    let mut feeds: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
    let mut skipped = BTreeMap::new();

    match &spec.load {
        Load::Open { rate, seconds, arrivals, .. } => {
            let times = arrival_times(*rate, *seconds, *arrivals, &mut rng);
            let views: Vec<SessionView> = chosen
                .iter()
                .map(|&i| {
                    let st = lock(&shard.sessions[i].state);
                    let newest = st.newest().map(|j| j.id.clone());
                    SessionView {
                        has_older_job: st.older().is_some(),
                        has_previous_share: st.last_share.as_ref().map(|s| Some(&*s.job_id) == newest.as_deref())
                            == Some(true),
                    }
                })
                .collect();
            let (entries, skip) = plan_open(&times, &views, &spec.mix);
            skipped = skip;
            // The latest share of each chosen session, to duplicate.
            let mut last: Vec<Option<Slot>> =
                chosen.iter().map(|&i| lock(&shard.sessions[i].state).last_share.clone().map(Slot::Ready)).collect();
            for e in entries {
                let session = &shard.sessions[chosen[e.session]];
                let mut st = lock(&session.state);
                let Some(job) = st.newest().cloned() else { continue };
                seed.get_or_insert(job.seed);
                let job_id: Arc<str> = Arc::from(&*job.id);
                let slot = match e.kind {
                    ShareKind::Valid => {
                        let w = add_valid(&mut st, &job, &mut work);
                        let slot = Slot::Hash(w, job_id.clone());
                        last[e.session] = Some(Slot::Hash(w, job_id));
                        slot
                    }
                    ShareKind::Invalid => {
                        st.slot = st.slot.wrapping_add(1);
                        let share = Share {
                            job_id,
                            nonce: nonce_for(st.slot).to_le_bytes(),
                            result: fake_result(job.difficulty, rng.gen()),
                        };
                        last[e.session] = Some(Slot::Ready(share.clone()));
                        Slot::Ready(share)
                    }
                    ShareKind::Duplicate => match &last[e.session] {
                        Some(Slot::Ready(share)) => Slot::Ready(share.clone()),
                        Some(Slot::Hash(w, id)) => Slot::Hash(*w, id.clone()),
                        None => {
                            *skipped.entry("duplicate: no earlier share on the session".into()).or_default() += 1;
                            continue;
                        }
                    },
                    ShareKind::Stale => {
                        let Some(old) = st.older().cloned() else { continue };
                        st.slot = st.slot.wrapping_add(1);
                        Slot::Ready(Share {
                            job_id: Arc::from(&*old.id),
                            nonce: nonce_for(st.slot).to_le_bytes(),
                            result: fake_result(old.difficulty, rng.gen()),
                        })
                    }
                };
                *result.planned.entry(e.kind).or_default() += 1;
                slots.push((e.at_us, chosen[e.session], e.kind, slot));
            }
        }
        Load::Closed { stock, .. } => {
            let per = stock.div_ceil(chosen.len().max(1));
            for &i in &chosen {
                let mut st = lock(&shard.sessions[i].state);
                let Some(job) = st.newest().cloned() else { continue };
                seed.get_or_insert(job.seed);
                let list = (0..per).map(|_| add_valid(&mut st, &job, &mut work)).collect();
                feeds.push((Arc::from(&*job.id), list));
                *result.planned.entry(ShareKind::Valid).or_default() += per as u64;
            }
        }
    }
    if chosen.is_empty() {
        result.error = Some("no logged-in session with a job to submit from".into());
        return result;
    }
    // Hash the valid shares.
    let mut found = Vec::new();
    if !work.is_empty() {
        let seed = seed.expect("work implies a job");
        let mut guard = lock(&shard.hasher);
        match ensure_hasher(&mut guard, shard.plan.hash_mode, seed, shard.plan.hash_threads) {
            Ok(build_s) => result.build_s = build_s,
            Err(e) => {
                result.error = Some(format!("building the RandomX hasher: {e}"));
                return result;
            }
        }
        let engine = guard.as_mut().expect("hasher just built");
        let started = std::time::Instant::now();
        let (f, hashes) = engine.search(&work);
        result.hash_seconds = started.elapsed().as_secs_f64();
        result.hashes = hashes;
        found = f;
    }
    let resolve = |slot: &Slot| -> Option<Share> {
        match slot {
            Slot::Ready(share) => Some(share.clone()),
            Slot::Hash(w, job_id) => {
                found[*w].map(|f| Share { job_id: job_id.clone(), nonce: f.nonce, result: f.result })
            }
        }
    };
    let load = match spec.load {
        Load::Open { .. } => {
            let mut sends = Vec::with_capacity(slots.len());
            for (at, session, kind, slot) in &slots {
                match resolve(slot) {
                    Some(share) => {
                        if matches!(kind, ShareKind::Valid | ShareKind::Invalid) {
                            lock(&shard.sessions[*session].state).last_share = Some(share.clone());
                        }
                        sends.push((*at, *session, *kind, share));
                    }
                    None => *skipped.entry("valid: no nonce met the share difficulty".into()).or_default() += 1,
                }
            }
            PreparedLoad::Open(sends)
        }
        Load::Closed { depth, seconds, .. } => {
            for (&i, (job_id, list)) in chosen.iter().zip(&feeds) {
                let shares: VecDeque<Share> =
                    list.iter().filter_map(|&w| resolve(&Slot::Hash(w, job_id.clone()))).collect();
                let mut st = lock(&shard.sessions[i].state);
                st.feed = shares;
                st.feed_phase = 0;
            }
            PreparedLoad::Closed { depth, seconds }
        }
    };
    *lock(&shard.prepared) = Some(PreparedPhase { id: spec.id, sessions: chosen, load, skipped });
    result
}

async fn go(shard: Arc<Shard>, id: u32) {
    let Some(prepared) = lock(&shard.prepared).take().filter(|p| p.id == id) else {
        shard.emit(Event::Fatal(format!("phase {id} was not prepared")));
        return;
    };
    let start_us = mono_us();
    let mut stats =
        PhaseStats { id, sessions: prepared.sessions.len() as u64, skipped: prepared.skipped, ..Default::default() };
    let feed_until_us = match prepared.load {
        PreparedLoad::Closed { seconds, .. } => start_us + (seconds * 1e6) as u64,
        PreparedLoad::Open(_) => 0,
    };
    if let PreparedLoad::Closed { seconds, .. } = prepared.load {
        stats.feed_seconds = seconds;
    }
    *lock(&shard.phase) = Some(PhaseAcc { stats, start_us, outstanding: 0, feed_until_us });
    match prepared.load {
        PreparedLoad::Open(sends) => {
            let base = tokio::time::Instant::now();
            for (at, session, kind, share) in sends {
                tokio::time::sleep_until(base + Duration::from_micros(at)).await;
                let intended = start_us + at;
                let s = &shard.sessions[session];
                let line = {
                    let mut st = lock(&s.state);
                    (!st.closed).then(|| {
                        let id = st.register(PendingKind::Submit { phase: id, kind }, intended);
                        wire::submit_line(id, &st.pool_id, &share.job_id, share.nonce, &share.result)
                    })
                };
                {
                    let mut g = lock(&shard.phase);
                    if let Some(acc) = g.as_mut() {
                        let k = acc.stats.kinds.entry(kind).or_default();
                        k.sent += 1;
                        if line.is_some() {
                            acc.outstanding += 1;
                        } else {
                            k.closed += 1;
                        }
                        if mono_us().saturating_sub(intended) > LATE_US {
                            acc.stats.late_sends += 1;
                        }
                    }
                }
                if let Some(line) = line {
                    s.write(&line).await;
                }
            }
        }
        PreparedLoad::Closed { depth, .. } => {
            for &i in &prepared.sessions {
                let s = &shard.sessions[i];
                lock(&s.state).feed_phase = id;
                for _ in 0..depth {
                    if let Some(line) = shard.next_feed(s, id, mono_us()) {
                        s.write(&line).await;
                    }
                }
            }
            tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_micros(feed_until_us - start_us))
                .await;
        }
    }
    // Wait for every answer (the sweeper times out the missing ones).
    let limit = Duration::from_millis(shard.plan.response_timeout_ms + 3_000);
    let waited = tokio::time::Instant::now();
    loop {
        let outstanding = lock(&shard.phase).as_ref().map(|a| a.outstanding).unwrap_or(0);
        if outstanding == 0 || waited.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some(mut acc) = lock(&shard.phase).take() else { return };
    for &i in &prepared.sessions {
        let mut st = lock(&shard.sessions[i].state);
        st.feed.clear();
        st.feed_phase = 0;
    }
    acc.stats.seconds = mono_us().saturating_sub(acc.start_us) as f64 / 1e6;
    shard.emit(Event::PhaseDone(Box::new(acc.stats)));
}

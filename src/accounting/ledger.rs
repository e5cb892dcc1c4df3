//! The ShareLedger actor: the only writer of share records.
//!
//! Accepted shares are summed per (miner, worker, type) and written once a second in one
//! atomic, idempotent Redis script (one record per worker per flush, never one per share). A
//! block candidate's share closes the current batch at once, so the PPLNS window snapshot taken
//! right after ends exactly with that share. A batch that failed is retried under the same
//! flush id until Redis takes it, so a Redis restart loses nothing and a lost reply never
//! counts a batch twice; shares arriving meanwhile wait in later batches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwapOption;

use crate::chain::Hash;
use crate::jobs::JobTemplate;
use crate::store::{CandidateRecord, CandidateResult, PplnsNeed, ShareRecord, Store};
use crate::stratum::unix_ms;

/// A block found by a share (attached to that share's record).
#[derive(Debug, Clone)]
pub struct CandidateShare {
    /// Block id.
    pub hash: Hash,
    /// Block height.
    pub height: u64,
    /// Network difficulty of its template.
    pub network_difficulty: u64,
    /// The pool's coinbase output in its template.
    pub reward: u64,
    /// Unix ms when found.
    pub found_ms: u64,
}

impl CandidateShare {
    /// The candidate as booked, for the share of `difficulty` by `login`/`worker`; the PPLNS
    /// window is `window_factor` x its network difficulty (at least 1).
    pub fn record(
        &self,
        login: &str,
        worker: &str,
        solo: bool,
        difficulty: u64,
        window_factor: f64,
    ) -> CandidateRecord {
        let window = (window_factor * self.network_difficulty as f64).floor() as u64;
        CandidateRecord {
            login: login.to_string(),
            worker: worker.to_string(),
            solo,
            hash: self.hash.to_hex(),
            height: self.height,
            network_difficulty: self.network_difficulty,
            reward: self.reward,
            window: window.max(1),
            share_difficulty: difficulty,
            found_ms: self.found_ms,
        }
    }
}

/// Something for the ledger to record.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum RecordShare {
    /// An accepted share.
    Share {
        /// Miner address.
        login: Arc<str>,
        /// Worker name.
        worker: Arc<str>,
        /// Solo share.
        solo: bool,
        /// Job difficulty.
        difficulty: u64,
        /// Set when this share found a block.
        candidate: Option<Box<CandidateShare>>,
    },
    /// A login from an IP (authorises payout-level changes through the API).
    LoginSeen {
        /// Miner address.
        login: Arc<str>,
        /// Peer IP.
        ip: IpAddr,
    },
}

impl RecordShare {
    /// An accepted share.
    pub fn share(
        login: Arc<str>,
        worker: Arc<str>,
        solo: bool,
        difficulty: u64,
        candidate: Option<Box<CandidateShare>>,
    ) -> RecordShare {
        RecordShare::Share { login, worker, solo, difficulty, candidate }
    }

    /// A login seen from `ip`.
    pub fn login_seen(login: Arc<str>, ip: IpAddr) -> RecordShare {
        RecordShare::LoginSeen { login, ip }
    }
}

/// Waits until every share received so far is in Redis (or `timeout` passes); answers whether
/// nothing is left unwritten. Used at shutdown and by tests.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Drain(pub Duration);

type WorkerKey = (Arc<str>, Arc<str>, bool);

struct Batch {
    id: String,
    shares: HashMap<WorkerKey, u64>,
    candidates: Vec<CandidateRecord>,
    ips: HashSet<(Arc<str>, IpAddr)>,
    /// A write was tried: the id may have been applied, so nothing may be merged in any more.
    attempted: bool,
    /// The share script succeeded; only candidates (and IPs) remain.
    flushed: bool,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.shares.is_empty() && self.candidates.is_empty() && self.ips.is_empty()
    }
}

/// Settings of the ledger.
pub struct LedgerConfig {
    /// This process's instance id, hex (in flush ids and hashrate members).
    pub instance: String,
    /// `pplns.windowFactor`.
    pub window_factor: f64,
    /// How often shares are written.
    pub flush_every: Duration,
}

/// Batches share records into Redis.
pub struct ShareLedger {
    store: Store,
    config: LedgerConfig,
    current: Arc<ArcSwapOption<JobTemplate>>,
    run_id: u32,
    next_batch: u64,
    tail: Batch,
    queue: VecDeque<Batch>,
    writing: bool,
    failures: u32,
    drains: Vec<(Instant, tokio::sync::oneshot::Sender<bool>)>,
}

impl ShareLedger {
    /// A ledger writing to `store`; `current` gives the network difficulty for the PPLNS bound.
    pub fn new(store: Store, config: LedgerConfig, current: Arc<ArcSwapOption<JobTemplate>>) -> ShareLedger {
        let run_id = rand::random();
        let mut ledger = ShareLedger {
            store,
            config,
            current,
            run_id,
            next_batch: 0,
            tail: Batch {
                id: String::new(),
                shares: HashMap::new(),
                candidates: Vec::new(),
                ips: HashSet::new(),
                attempted: false,
                flushed: false,
            },
            queue: VecDeque::new(),
            writing: false,
            failures: 0,
            drains: Vec::new(),
        };
        ledger.tail = ledger.new_batch();
        ledger
    }

    fn new_batch(&mut self) -> Batch {
        self.next_batch += 1;
        Batch {
            id: format!("{}-{:08x}-{}", self.config.instance, self.run_id, self.next_batch),
            shares: HashMap::new(),
            candidates: Vec::new(),
            ips: HashSet::new(),
            attempted: false,
            flushed: false,
        }
    }

    /// Moves the tail into the write queue (merging into the last queued batch if that one was
    /// never tried and holds no candidate, so an outage costs one batch, not one per second).
    fn close_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let fresh = self.new_batch();
        let tail = std::mem::replace(&mut self.tail, fresh);
        match self.queue.back_mut() {
            Some(last) if !last.attempted && last.candidates.is_empty() && tail.candidates.is_empty() => {
                for (key, diff) in tail.shares {
                    *last.shares.entry(key).or_default() += diff;
                }
                last.ips.extend(tail.ips);
            }
            _ => self.queue.push_back(tail),
        }
    }

    fn pending_records(&self) -> usize {
        self.tail.shares.len() + self.queue.iter().map(|b| b.shares.len()).sum::<usize>()
    }

    /// What this node's template may need of the PPLNS list: twice its window, so a
    /// difficulty rise before the next block still finds a full window. Redis keeps the
    /// largest need of recent heights over every node (`store::PPLNS_NEED_HEIGHTS`).
    fn pplns_need(&self) -> PplnsNeed {
        match self.current.load().as_ref() {
            Some(t) => PplnsNeed {
                height: t.template.height,
                units: (self.config.window_factor * t.template.difficulty as f64 * 2.0).ceil() as u64,
            },
            None => PplnsNeed::default(),
        }
    }

    fn write_next(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        let Some(batch) = self.queue.front_mut() else {
            self.answer_drains(true);
            return;
        };
        batch.attempted = true;
        self.writing = true;
        let store = self.store.clone();
        let id = batch.id.clone();
        let records: Vec<ShareRecord> = if batch.flushed {
            Vec::new()
        } else {
            batch
                .shares
                .iter()
                .map(|((login, worker, solo), diff)| ShareRecord {
                    login: login.to_string(),
                    worker: worker.to_string(),
                    solo: *solo,
                    difficulty: *diff,
                })
                .collect()
        };
        let flushed = batch.flushed;
        let candidates = batch.candidates.clone();
        let ips: Vec<(String, IpAddr)> = batch.ips.iter().map(|(login, ip)| (login.to_string(), *ip)).collect();
        let instance = self.config.instance.clone();
        let need = self.pplns_need();
        let pending = self.pending_records();
        let fut = async move {
            if !flushed && !records.is_empty() {
                store.flush_shares(&id, &instance, unix_ms(), need, &records).await?;
                crate::metrics::ledger_flush(records.len(), pending.saturating_sub(records.len()));
            }
            let mut recorded = 0;
            for candidate in &candidates {
                match store.record_candidate(candidate).await? {
                    CandidateResult::Recorded { window_total, round_shares } => tracing::info!(
                        height = candidate.height,
                        hash = %candidate.hash,
                        window = window_total,
                        round_shares,
                        "Block candidate recorded"
                    ),
                    CandidateResult::AlreadyRecorded => {}
                }
                recorded += 1;
            }
            for (login, ip) in &ips {
                // Best effort: only used to authorise payout-level changes.
                let _ = store.record_login_ip(login, *ip, unix_ms() / 1000).await;
            }
            Ok::<usize, crate::store::StoreError>(recorded)
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.writing = false;
            match result {
                Ok(_) => {
                    act.queue.pop_front();
                    if act.failures > 0 {
                        tracing::info!(after = act.failures, "Redis writes resumed; no share lost");
                    }
                    act.failures = 0;
                    act.write_next(ctx);
                }
                Err(e) => {
                    // Keep the batch (same id) and retry on the next tick.
                    if let Some(batch) = act.queue.front_mut() {
                        if !flushed && e.op == "record_candidate" {
                            batch.flushed = true;
                        }
                    }
                    act.failures += 1;
                    if act.failures == 1 || act.failures % 30 == 0 {
                        tracing::error!(
                            pending = act.pending_records(),
                            "cannot write shares to Redis ({e}); keeping them in memory and retrying"
                        );
                    }
                    crate::metrics::ledger_flush(0, act.pending_records());
                }
            }
        }));
    }

    fn answer_drains(&mut self, done: bool) {
        let now = Instant::now();
        let drains = std::mem::take(&mut self.drains);
        for (deadline, reply) in drains {
            if done || now >= deadline {
                let _ = reply.send(done);
            } else {
                self.drains.push((deadline, reply));
            }
        }
    }
}

impl Actor for ShareLedger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.flush_every, |act, ctx| {
            act.close_tail();
            act.write_next(ctx);
            act.answer_drains(act.queue.is_empty() && act.tail.is_empty() && !act.writing);
        });
    }
}

impl Handler<RecordShare> for ShareLedger {
    type Result = ();

    fn handle(&mut self, msg: RecordShare, ctx: &mut Context<Self>) {
        match msg {
            RecordShare::Share { login, worker, solo, difficulty, candidate } => {
                *self.tail.shares.entry((login.clone(), worker.clone(), solo)).or_default() += difficulty;
                if let Some(c) = candidate {
                    self.tail.candidates.push(c.record(&login, &worker, solo, difficulty, self.config.window_factor));
                    // The block's share ends this batch: the window snapshot ends with it.
                    self.close_tail();
                    self.write_next(ctx);
                }
            }
            RecordShare::LoginSeen { login, ip } => {
                self.tail.ips.insert((login, ip));
            }
        }
    }
}

impl Handler<Drain> for ShareLedger {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) -> Self::Result {
        self.close_tail();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.drains.push((Instant::now() + msg.0, reply));
        self.write_next(ctx);
        if self.queue.is_empty() && !self.writing {
            self.answer_drains(true);
        }
        Box::pin(async move { answer.await.unwrap_or(false) })
    }
}

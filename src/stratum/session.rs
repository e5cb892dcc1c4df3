//! The MinerSession actor: one per TCP connection.
//!
//! It owns the socket, the miner's login, difficulty and last few jobs, and answers requests.
//! Every request first passes the IP's rate limit (`poolServer.rateLimits`). Share checks that
//! need RandomX run in a detached task on the verifier pool, bounded per session and per IP
//! (`poolServer.sharesInFlight`); the session only writes the reply and updates vardiff and
//! trust. Ordinary shares still queued when the session closes are dropped unhashed; a claimed
//! block is still verified (it may be real) unless the IP was banned.

use std::borrow::Cow;
use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;

use super::delivery::{self, Group, JobSlot, Pending};
use super::inflight::{Permit, SessionWork};
use super::line::{LineError, LineReader};
use super::login::{self, Login};
use super::protocol::{self, msg, JobFields, Parsed, ProxyJobFields};
use super::ratelimit::{self, Decision};
use super::supervisor::{PortSupervisor, Register, SessionLoggedIn, Unregister};
use super::transport::{MinerStream, StreamWriter};
use super::trust::Trust;
use super::vardiff::VarDiff;
use super::{unix_ms, StratumContext, SubmitTicket, JOBS_KEPT, MAX_LINE, MAX_OUTBOX, TEMPLATE_WAIT};
use crate::accounting::ledger::{CandidateShare, RecordShare};
use crate::chain::difficulty::{hash_difficulty, target_hex4, target_hex8};
use crate::chain::template::MAX_HASHING_BLOB;
use crate::chain::{Hash, HashingBlob};
use crate::jobs::{JobTemplate, ProxyNonces, SubmitBlock, EXTRA_NONCE_LEN, PROXY_POOL_NONCE_AT, PROXY_WORKER_NONCE_AT};
use crate::pow::{PowError, Priority};

/// Housekeeping: timeouts, vardiff for silent miners, bans.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

struct Job {
    id: u64,
    template: Arc<JobTemplate>,
    extra_nonce: [u8; EXTRA_NONCE_LEN],
    difficulty: u64,
    nonces: Vec<u32>,
    /// A proxy's submissions: (nonce, its pool and worker nonces).
    proxy_submissions: Vec<(u32, ProxyNonces)>,
}

struct Miner {
    login: Arc<str>,
    worker: Arc<str>,
    solo: bool,
    fixed: bool,
    difficulty: u64,
    target: String,
    pending_difficulty: Option<u64>,
    jobs: [Option<Job>; JOBS_KEPT],
    next_job: usize,
    vardiff: VarDiff,
    trust: Option<Trust>,
    /// An xmr-node-proxy (agent): gets block-template jobs and submits with its own nonces.
    proxy: bool,
}

impl Miner {
    fn set_difficulty(&mut self, difficulty: u64) {
        self.difficulty = difficulty;
        self.target = job_target(difficulty);
    }

    /// The difficulty and target of a job on `template`: the miner's, capped at the template's
    /// network difficulty (a hash between the two is a block that a miner would never submit).
    fn job_difficulty(&self, template: &JobTemplate) -> (u64, Cow<'_, str>) {
        let network = template.template.difficulty.max(1);
        if self.difficulty <= network {
            (self.difficulty, Cow::Borrowed(&self.target))
        } else {
            (network, Cow::Owned(job_target(network)))
        }
    }

    fn newest_job(&self) -> Option<&Job> {
        self.jobs[(self.next_job + JOBS_KEPT - 1) % JOBS_KEPT].as_ref()
    }
}

/// One miner connection.
pub struct MinerSession {
    id: u64,
    ip: IpAddr,
    port: u16,
    port_difficulty: u64,
    accepted_at: Instant,
    group: Group,
    /// Where the port's fan-out leaves this session's next template.
    jobs: Rc<JobSlot>,
    shared: Arc<StratumContext>,
    supervisor: Addr<PortSupervisor>,
    writer: Option<StreamWriter>,
    outbox: Vec<u8>,
    flushing: bool,
    closing: bool,
    miner: Option<Box<Miner>>,
    /// A login reply waiting for the first template.
    waiting_login: Option<Box<RawValue>>,
    last_active: Instant,
    agent: Option<Box<str>>,
    /// When this session last told the ledger its miner mines from this IP (payout-level
    /// changes need a recent record, so long sessions refresh it).
    ip_recorded: Instant,
    /// In `poolServer.allow`: no per-IP caps or rate limits.
    exempt: bool,
    /// Shares in flight, shared with their permits; closed when the session stops.
    work: Arc<SessionWork>,
    /// Submits taken whose verdict has not been answered yet.
    verdicts_due: usize,
    /// Asked to close (upgrade drain): closes once every verdict is answered.
    retiring: bool,
}

/// Where and how a session was accepted.
pub struct Accepted {
    /// The byte stream (plain or TLS).
    pub stream: MinerStream,
    /// The client's IP (from the PROXY header when a trusted load balancer sent one).
    pub ip: IpAddr,
    /// Local port.
    pub port: u16,
    /// The port's starting difficulty.
    pub port_difficulty: u64,
    /// When the connection was accepted.
    pub at: Instant,
    /// The port supervisor's sessions, for job delivery.
    pub group: Group,
}

impl MinerSession {
    /// Starts a session actor on the current arbiter.
    pub fn start(accepted: Accepted, shared: Arc<StratumContext>, supervisor: Addr<PortSupervisor>) -> Addr<Self> {
        let (read, write) = accepted.stream.into_split();
        let exempt = shared.exempt(accepted.ip);
        let line_timeout = shared.config.load().limits.line_timeout;
        MinerSession::create(move |ctx| {
            ctx.add_stream(LineReader::new(read, MAX_LINE).with_line_timeout(line_timeout));
            let jobs = Rc::new(JobSlot::default());
            ctx.add_stream(jobs.feed());
            MinerSession {
                // 53 bits: safe as a JavaScript number in any tool that parses it.
                id: rand::random::<u64>() >> 11,
                ip: accepted.ip,
                port: accepted.port,
                port_difficulty: accepted.port_difficulty,
                accepted_at: accepted.at,
                group: accepted.group,
                jobs,
                shared,
                supervisor,
                writer: Some(write),
                outbox: Vec::new(),
                flushing: false,
                closing: false,
                miner: None,
                waiting_login: None,
                last_active: Instant::now(),
                agent: None,
                ip_recorded: Instant::now(),
                exempt,
                work: SessionWork::new(),
                verdicts_due: 0,
                retiring: false,
            }
        })
    }

    // ---- output ----

    fn send(&mut self, text: &str, ctx: &mut Context<Self>) {
        if self.outbox.is_empty() && !self.flushing {
            if let Some(writer) = &self.writer {
                match writer.try_write(text.as_bytes()) {
                    Ok(n) if n == text.len() => return,
                    Ok(n) => self.outbox.extend_from_slice(&text.as_bytes()[n..]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.outbox.extend_from_slice(text.as_bytes())
                    }
                    Err(_) => {
                        ctx.stop();
                        return;
                    }
                }
            }
        } else {
            self.outbox.extend_from_slice(text.as_bytes());
        }
        if self.outbox.len() > MAX_OUTBOX {
            crate::metrics::disconnect("slow_reader");
            tracing::debug!(ip = %self.ip, "miner does not read its socket; closing");
            ctx.stop();
            return;
        }
        self.flush(ctx);
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.outbox.is_empty() {
            return;
        }
        let Some(mut writer) = self.writer.take() else { return };
        let data = std::mem::take(&mut self.outbox);
        self.flushing = true;
        let write = async move {
            // The flush matters for TLS only: records rustls could not write yet go out now.
            let result = match writer.write_all(&data).await {
                Ok(()) => writer.flush().await,
                Err(e) => Err(e),
            };
            (writer, result)
        };
        ctx.spawn(write.into_actor(self).map(|(writer, result), act, ctx| {
            act.flushing = false;
            act.writer = Some(writer);
            if result.is_err() {
                ctx.stop();
            } else if !act.outbox.is_empty() {
                act.flush(ctx);
            } else if act.closing {
                ctx.stop();
            }
        }));
    }

    /// Stops after everything queued was written.
    fn close_after_flush(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        if !self.flushing && self.outbox.is_empty() {
            ctx.stop();
        }
    }

    fn reply_error(&mut self, id: &RawValue, message: &str, ctx: &mut Context<Self>) {
        let mut out = String::with_capacity(128 + message.len());
        protocol::write_error(&mut out, id, message);
        self.send(&out, ctx);
    }

    fn reply_result(&mut self, id: &RawValue, result: &str, ctx: &mut Context<Self>) {
        let mut out = String::with_capacity(64 + result.len());
        protocol::write_result(&mut out, id, result);
        self.send(&out, ctx);
    }

    // ---- jobs ----

    /// Builds a new job from `template` for the logged-in miner and appends it to `out`
    /// as a push, a login result (`login_id`) or a bare job object (`getjob`).
    fn new_job(&mut self, template: &Arc<JobTemplate>, out: &mut String, shape: JobShape<'_>) {
        let Some(miner) = self.miner.as_mut() else { return };
        if let Some(difficulty) = miner.pending_difficulty.take() {
            miner.set_difficulty(difficulty);
        }
        let extra_nonce = template.next_extra_nonce();
        let mut hex = [0; 2 * MAX_HASHING_BLOB];
        let blob_hex = job_blob_hex(template, &extra_nonce, miner.proxy, &mut hex);
        let id = self.shared.next_job_id();
        let (difficulty, target) = miner.job_difficulty(template);
        let fields = JobFields {
            blob_hex: &blob_hex,
            job_id: id,
            target: &target,
            session_id: self.id,
            template_tail: &template.json_tail,
            proxy: miner.proxy.then(|| proxy_job_fields(template, difficulty)),
        };
        match shape {
            JobShape::Push => protocol::write_job_push(out, &fields),
            JobShape::Login(login_id) => protocol::write_login_result(out, login_id, &fields),
            JobShape::Reply(request_id) => {
                let mut job = String::with_capacity(512);
                protocol::write_job(&mut job, &fields);
                protocol::write_result(out, request_id, &job);
            }
        }
        let slot = miner.next_job;
        miner.jobs[slot] = Some(Job {
            id,
            template: template.clone(),
            extra_nonce,
            difficulty,
            nonces: Vec::new(),
            proxy_submissions: Vec::new(),
        });
        miner.next_job = (slot + 1) % JOBS_KEPT;
    }

    fn push_job(&mut self, template: &Arc<JobTemplate>, ctx: &mut Context<Self>) {
        // One line buffer per arbiter thread, reused by every push of a fan-out.
        thread_local!(static LINE: Cell<String> = const { Cell::new(String::new()) });
        let mut out = LINE.take();
        out.clear();
        self.new_job(template, &mut out, JobShape::Push);
        if !out.is_empty() {
            self.send(&out, ctx);
        }
        LINE.set(out);
    }

    // ---- requests ----

    fn on_line(&mut self, line: &[u8], ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if line.starts_with(b"GET /") || line.starts_with(b"POST /") {
            self.send(protocol::HTTP_ONLINE, ctx);
            crate::metrics::disconnect("http");
            self.close_after_flush(ctx);
            return;
        }
        let (id, method, params) = match protocol::parse(line) {
            Parsed::Request { id, method, params } => (id, method, params),
            Parsed::Ignored => return,
            Parsed::Invalid => {
                tracing::debug!(ip = %self.ip, "malformed JSON from miner; closing the connection");
                crate::metrics::disconnect("bad_json");
                ctx.stop();
                return;
            }
        };
        let read_at = Instant::now();
        self.last_active = read_at;
        if self.shared.bans.is_banned(self.ip) {
            self.reply_error(id, msg::BANNED, ctx);
            crate::metrics::disconnect("banned");
            self.close_after_flush(ctx);
            return;
        }
        if !self.within_rate(method.as_ref(), read_at) {
            let banned = method.as_ref() == "submit" && self.record_for_ban(false);
            self.reply_error(id, msg::RATE_LIMITED, ctx);
            if method.as_ref() == "submit" {
                crate::metrics::share("rate_limited", read_at.elapsed());
            }
            if banned {
                self.close_banned(ctx);
            }
            return;
        }
        match method.as_ref() {
            "login" => self.login(id, params, ctx),
            "getjob" => self.getjob(id, params, ctx),
            "submit" => self.submit(id, params, read_at, ctx),
            "keepalived" => {
                if self.authenticated(params) {
                    self.reply_result(id, "{\"status\":\"KEEPALIVED\"}", ctx);
                } else {
                    self.reply_error(id, msg::UNAUTHENTICATED, ctx);
                }
            }
            _ => self.reply_error(id, msg::INVALID_METHOD, ctx),
        }
    }

    /// Counts the request against the IP's bucket for its method; false if refused.
    fn within_rate(&self, method: &str, now: Instant) -> bool {
        let method = match method {
            "login" => ratelimit::Method::Login,
            "submit" => ratelimit::Method::Submit,
            "getjob" => ratelimit::Method::GetJob,
            "keepalived" => ratelimit::Method::Keepalived,
            _ => return true,
        };
        match self.shared.rates.check(self.ip, method, now, self.exempt) {
            Decision::Allowed => true,
            Decision::Refused { first } => {
                crate::metrics::request_refused(method.name(), "rate");
                if first {
                    tracing::info!(ip = %self.ip, method = method.name(), "rate limit: refusing requests from this IP");
                } else {
                    tracing::debug!(ip = %self.ip, method = method.name(), "rate limit: request refused");
                }
                false
            }
        }
    }

    fn authenticated(&self, params: &RawValue) -> bool {
        let Some(_) = self.miner else { return false };
        serde_json::from_str::<protocol::IdParams>(params.get())
            .ok()
            .and_then(|p| p.id)
            .and_then(|id| id.parse::<u64>().ok())
            == Some(self.id)
    }

    fn login(&mut self, id: &RawValue, params: &RawValue, ctx: &mut Context<Self>) {
        let Ok(p) = serde_json::from_str::<protocol::LoginParams>(params.get()) else {
            self.reply_error(id, msg::INVALID_PARAMS, ctx);
            return;
        };
        let config = self.shared.config.load();
        let parsed = match p.login.as_deref() {
            None => Err(login::LoginError::Missing),
            Some(text) => {
                login::parse(text, p.pass.as_deref(), p.rigid.as_deref(), &config.fixed_diff, &config.var_diff)
            }
        };
        let login = match parsed {
            Ok(login) => login,
            Err(e) => {
                let result = if e == login::LoginError::Missing { "missing_login" } else { "invalid_address" };
                crate::metrics::login(result, self.accepted_at.elapsed());
                tracing::debug!(ip = %self.ip, "login refused: {e}");
                self.reply_error(id, &e.to_string(), ctx);
                return;
            }
        };
        self.agent = p.agent.map(|a| a.chars().take(128).collect::<String>().into_boxed_str());
        self.start_mining(login, ctx);
        match self.shared.current.load_full() {
            Some(template) => self.answer_login(id, &template, ctx),
            None => self.waiting_login = Some(id.to_owned()),
        }
    }

    fn start_mining(&mut self, login: Login, ctx: &mut Context<Self>) {
        let config = self.shared.config.load();
        let difficulty = login.fixed_diff.unwrap_or(self.port_difficulty);
        let mut miner = Box::new(Miner {
            login: Arc::from(login.login.as_str()),
            worker: Arc::from(login.worker.as_str()),
            solo: login.solo,
            fixed: login.fixed_diff.is_some() || !config.var_diff.enabled,
            difficulty,
            target: String::new(),
            pending_difficulty: None,
            jobs: Default::default(),
            next_job: 0,
            vardiff: VarDiff::new(unix_ms()),
            trust: config.share_trust.enabled.then(|| Trust::new(&config.share_trust)),
            proxy: self.agent.as_deref().is_some_and(is_proxy_agent),
        });
        miner.set_difficulty(difficulty);
        tracing::debug!(
            ip = %self.ip,
            miner = %miner.login,
            worker = %miner.worker,
            solo = miner.solo,
            difficulty,
            agent = self.agent.as_deref().unwrap_or(""),
            "miner logged in"
        );
        self.supervisor.do_send(SessionLoggedIn {
            id: self.id,
            worker_key: format!("{}~{}", miner.login, miner.worker),
            solo: miner.solo,
        });
        self.shared.ledger.do_send(RecordShare::login_seen(miner.login.clone(), self.ip));
        self.ip_recorded = Instant::now();
        let _ = ctx;
        self.miner = Some(miner);
    }

    fn answer_login(&mut self, id: &RawValue, template: &Arc<JobTemplate>, ctx: &mut Context<Self>) {
        let mut out = String::with_capacity(640);
        self.new_job(template, &mut out, JobShape::Login(id));
        crate::metrics::login("ok", self.accepted_at.elapsed());
        self.send(&out, ctx);
    }

    fn getjob(&mut self, id: &RawValue, params: &RawValue, ctx: &mut Context<Self>) {
        if !self.authenticated(params) {
            self.reply_error(id, msg::UNAUTHENTICATED, ctx);
            return;
        }
        let Some(template) = self.shared.current.load_full() else {
            self.reply_error(id, msg::NOT_READY, ctx);
            return;
        };
        let mut out = String::with_capacity(640);
        // Same template, same difficulty: the newest job is still the right answer.
        let cached = self.miner.as_ref().and_then(|m| {
            let job = m.newest_job()?;
            (job.template.seq == template.seq && m.pending_difficulty.is_none()).then_some(job)
        });
        if let (Some(job), Some(miner)) = (cached, self.miner.as_ref()) {
            let mut hex = [0; 2 * MAX_HASHING_BLOB];
            let blob_hex = job_blob_hex(&job.template, &job.extra_nonce, miner.proxy, &mut hex);
            let mut body = String::with_capacity(512);
            let (_, target) = miner.job_difficulty(&job.template);
            protocol::write_job(
                &mut body,
                &JobFields {
                    blob_hex: &blob_hex,
                    job_id: job.id,
                    target: &target,
                    session_id: self.id,
                    template_tail: &job.template.json_tail,
                    proxy: miner.proxy.then(|| proxy_job_fields(&job.template, job.difficulty)),
                },
            );
            protocol::write_result(&mut out, id, &body);
        } else {
            self.new_job(&template, &mut out, JobShape::Reply(id));
        }
        self.send(&out, ctx);
    }

    fn submit(&mut self, id: &RawValue, params: &RawValue, read_at: Instant, ctx: &mut Context<Self>) {
        // Shutdown waits for every ticket: a share reaches the ledger before its final flush.
        let Some(ticket) = SubmitTicket::enter(&self.shared) else {
            self.reply_error(id, msg::SHUTTING_DOWN, ctx);
            return;
        };
        match self.check_share(id, params, read_at) {
            Ok(check) => {
                let permit = match self.shared.in_flight.acquire(&self.work, self.ip, check.block, self.exempt) {
                    Ok(permit) => permit,
                    Err(hit) => {
                        crate::metrics::request_refused("submit", hit.reason());
                        tracing::debug!(ip = %self.ip, cap = hit.reason(), "share refused: too many in flight");
                        self.reject(id, msg::TOO_MANY_IN_FLIGHT, "too_many_in_flight", read_at, true, ctx);
                        return;
                    }
                };
                let shared = self.shared.clone();
                let session = ctx.address();
                let (ip, exempt) = (self.ip, self.exempt);
                self.verdicts_due += 1;
                actix::spawn(async move {
                    let verdict = check.run(&shared, ip, exempt, permit).await;
                    drop(ticket);
                    session.do_send(verdict);
                });
            }
            Err(Rejection { message, result, counts_against_ip }) => {
                self.reject(id, message, result, read_at, counts_against_ip, ctx)
            }
        }
    }

    /// The cheap checks of a submit, in the old pool's order, plus stale and low-difficulty
    /// detection; on success the share is ready for RandomX.
    fn check_share(&mut self, id: &RawValue, params: &RawValue, read_at: Instant) -> Result<ShareCheck, Rejection> {
        let p = serde_json::from_str::<protocol::SubmitParams>(params.get())
            .map_err(|_| Rejection::new(msg::INVALID_PARAMS, "malformed", true))?;
        let session_ok = p.id.as_deref().and_then(|s| s.parse::<u64>().ok()) == Some(self.id);
        let unauthenticated = Rejection::new(msg::UNAUTHENTICATED, "unauthenticated", false);
        let miner = self.miner.as_mut().filter(|_| session_ok).ok_or(unauthenticated)?;
        let current_height = self.shared.current.load().as_ref().map(|t| t.height()).unwrap_or(0);
        let Miner { jobs, trust, login, worker, solo, proxy, .. } = &mut **miner;
        let job_id = p.job_id.as_deref().and_then(|j| j.parse::<u64>().ok());
        let job = jobs.iter_mut().flatten().find(|j| Some(j.id) == job_id).ok_or(Rejection::new(
            msg::INVALID_JOB_ID,
            "unknown_job",
            false,
        ))?;
        if job.template.height() < current_height {
            return Err(Rejection::new(msg::STALE, "stale", false));
        }
        let nonce =
            p.nonce.as_deref().and_then(parse_nonce).ok_or(Rejection::new(msg::MALFORMED_NONCE, "malformed", true))?;
        let claimed = p
            .result
            .as_deref()
            .filter(|r| r.len() == 64)
            .and_then(|r| Hash::from_hex(r).ok())
            .ok_or(Rejection::new(msg::MALFORMED_RESULT, "malformed", true))?;
        let nonce_value = u32::from_le_bytes(nonce);
        // A proxy's workers share the job: a duplicate is the same nonce from the same worker.
        let proxy = if *proxy {
            let (pool, worker) =
                p.proxy_nonces().ok_or(Rejection::new(msg::PROXY_MALFORMED_NONCES, "malformed", true))?;
            Some(ProxyNonces { pool, worker })
        } else {
            None
        };
        if let Some(nonces) = proxy {
            if job.proxy_submissions.contains(&(nonce_value, nonces)) {
                return Err(Rejection::new(msg::PROXY_DUPLICATE, "duplicate", true));
            }
            job.proxy_submissions.push((nonce_value, nonces));
        } else {
            if job.nonces.contains(&nonce_value) {
                return Err(Rejection::new(msg::DUPLICATE, "duplicate", true));
            }
            job.nonces.push(nonce_value);
        }
        let claimed_difficulty = hash_difficulty(&claimed);
        if claimed_difficulty < job.difficulty {
            if let Some(trust) = trust.as_mut() {
                trust.on_invalid(&self.shared.config.load().share_trust);
            }
            return Err(Rejection::new(msg::LOW_DIFFICULTY, "low_difficulty", true));
        }
        let mut blob = match proxy {
            Some(nonces) => job.template.template.hashing_blob(&nonces.reserved(&job.extra_nonce)),
            None => job.template.template.hashing_blob(&job.extra_nonce),
        };
        blob.set_nonce(nonce);
        let block = claimed_difficulty >= job.template.template.difficulty;
        let trusted = !block && trust.map(|t| t.skip_verification(rand::random::<f32>())).unwrap_or(false);
        Ok(ShareCheck {
            reply_id: id.to_owned(),
            read_at,
            job_id: job.id,
            template: job.template.clone(),
            extra_nonce: job.extra_nonce,
            proxy,
            nonce,
            blob,
            claimed,
            difficulty: job.difficulty,
            block,
            trusted,
            login: login.clone(),
            worker: worker.clone(),
            solo: *solo,
        })
    }

    fn reject(
        &mut self,
        id: &RawValue,
        message: &str,
        result: &'static str,
        read_at: Instant,
        counts_against_ip: bool,
        ctx: &mut Context<Self>,
    ) {
        // The ban is in force before the miner reads the answer: a connection it opens next is
        // refused (the reply is written first otherwise, and another arbiter may serve it first).
        let banned = counts_against_ip && self.record_for_ban(false);
        self.reply_error(id, message, ctx);
        crate::metrics::share(result, read_at.elapsed());
        if banned {
            self.close_banned(ctx);
        }
    }

    /// Counts a share toward the IP's ban score; true if that banned the IP.
    fn record_for_ban(&mut self, valid: bool) -> bool {
        self.shared.bans.record(self.ip, valid).is_some()
    }

    /// Closes the session of a just-banned IP once its last answer is written.
    fn close_banned(&mut self, ctx: &mut Context<Self>) {
        crate::metrics::disconnect("banned");
        self.close_after_flush(ctx);
    }

    fn on_verdict(&mut self, v: Verdict, ctx: &mut Context<Self>) {
        match v.outcome {
            Outcome::Accepted => {
                let banned = self.record_for_ban(true);
                self.reply_result(&v.reply_id, "{\"status\":\"OK\"}", ctx);
                crate::metrics::share(if v.block { "block" } else { "accepted" }, v.read_at.elapsed());
                if banned {
                    self.close_banned(ctx);
                }
                let shared = self.shared.clone();
                let Some(miner) = self.miner.as_mut() else { return };
                if let (Some(trust), false) = (miner.trust.as_mut(), v.trusted) {
                    trust.on_valid(&shared.config.load().share_trust);
                }
                let now = unix_ms();
                miner.vardiff.on_share(now);
                let retarget = if miner.fixed {
                    None
                } else {
                    miner.vardiff.retarget(now, miner.difficulty, &shared.vardiff.load())
                };
                if let Some(new) = retarget {
                    self.retarget(new, ctx);
                }
            }
            Outcome::Invalid if v.block => {
                // A claimed block that is not one is never an honest mistake.
                self.reply_error(&v.reply_id, msg::FAKE_BLOCK, ctx);
                crate::metrics::share("fake_block", v.read_at.elapsed());
                crate::metrics::disconnect("fake_block");
                self.close_after_flush(ctx);
            }
            Outcome::Invalid => {
                if let Some(trust) = self.miner.as_mut().and_then(|m| m.trust.as_mut()) {
                    trust.on_invalid(&self.shared.config.load().share_trust);
                }
                self.reject(&v.reply_id, msg::INVALID_RESULT, "invalid", v.read_at, true, ctx);
            }
            Outcome::Cancelled => {}
            Outcome::Error => {
                // Not verified, not accounted: the miner may submit the same nonce again.
                if let Some(job) =
                    self.miner.as_mut().and_then(|m| m.jobs.iter_mut().flatten().find(|j| j.id == v.job_id))
                {
                    match v.proxy {
                        Some(nonces) => job.proxy_submissions.retain(|s| *s != (v.nonce, nonces)),
                        None => job.nonces.retain(|n| *n != v.nonce),
                    }
                }
                self.reply_error(&v.reply_id, msg::VERIFY_FAILED, ctx);
                crate::metrics::share("error", v.read_at.elapsed());
            }
        }
    }

    fn retarget(&mut self, difficulty: u64, ctx: &mut Context<Self>) {
        let Some(miner) = self.miner.as_mut() else { return };
        crate::metrics::retarget(difficulty > miner.difficulty);
        tracing::debug!(miner = %miner.login, worker = %miner.worker, from = miner.difficulty, to = difficulty, "vardiff");
        miner.pending_difficulty = Some(difficulty);
        if let Some(template) = self.shared.current.load_full() {
            self.push_job(&template, ctx);
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let miner_timeout = self.shared.config.load().pool_server.miner_timeout;
        if self.shared.bans.is_banned(self.ip) {
            crate::metrics::disconnect("banned");
            ctx.stop();
            return;
        }
        if let Some(id) = self.waiting_login.take() {
            if self.accepted_at.elapsed() >= TEMPLATE_WAIT {
                crate::metrics::login("not_ready", self.accepted_at.elapsed());
                self.reply_error(&id, msg::NOT_READY, ctx);
                self.miner = None;
            } else {
                self.waiting_login = Some(id);
            }
        }
        if let Some(miner) = self.miner.as_ref().filter(|_| self.ip_recorded.elapsed() >= IP_RECORD_REFRESH) {
            self.shared.ledger.do_send(RecordShare::login_seen(miner.login.clone(), self.ip));
            self.ip_recorded = Instant::now();
        }
        let idle = self.last_active.elapsed();
        let vardiff = **self.shared.vardiff.load();
        let retarget = match &mut self.miner {
            None if self.accepted_at.elapsed() >= self.shared.config.load().limits.login_timeout
                && self.waiting_login.is_none() =>
            {
                self.login_timed_out(ctx);
                None
            }
            Some(_) if idle >= miner_timeout => {
                crate::metrics::disconnect("timeout");
                tracing::debug!(ip = %self.ip, idle_s = idle.as_secs(), "miner timed out");
                ctx.stop();
                None
            }
            Some(miner) if !miner.fixed => miner.vardiff.retarget(unix_ms(), miner.difficulty, &vardiff),
            _ => None,
        };
        if let Some(new) = retarget {
            self.retarget(new, ctx);
        }
    }
}

/// How often a long session renews its miner's IP record (well inside `api.payoutLevelIpAge`).
const IP_RECORD_REFRESH: std::time::Duration = std::time::Duration::from_secs(3600);

impl MinerSession {
    fn login_timed_out(&mut self, ctx: &mut Context<Self>) {
        crate::metrics::disconnect("login_timeout");
        tracing::info!(ip = %self.ip, "no valid login within {} s; closing", self.shared.config.load().limits.login_timeout.as_secs());
        ctx.stop();
    }
}

enum JobShape<'a> {
    Push,
    Login(&'a RawValue),
    Reply(&'a RawValue),
}

/// The stratum target of `difficulty`: 4-byte targets lose all precision beyond 2^32; xmrig
/// reads 8-byte targets too.
fn job_target(difficulty: u64) -> String {
    if difficulty < 1 << 32 {
        target_hex4(difficulty)
    } else {
        target_hex8(difficulty)
    }
}

/// xmr-node-proxy announces itself in the login agent (the old pool's test).
fn is_proxy_agent(agent: &str) -> bool {
    agent.contains("xmr-node-proxy")
}

/// The blob of a job: the hashing blob (nonce zero), or for a proxy the whole block blob with
/// the extra nonce written (it writes its own nonces and builds its workers' hashing blobs).
/// An ordinary job's hex goes into `buf`: nothing is allocated per session in a fan-out.
fn job_blob_hex<'b>(
    template: &JobTemplate,
    extra_nonce: &[u8; EXTRA_NONCE_LEN],
    proxy: bool,
    buf: &'b mut [u8; 2 * MAX_HASHING_BLOB],
) -> Cow<'b, str> {
    if proxy {
        return Cow::Owned(hex::encode(template.template.block_blob(extra_nonce, [0; 4])));
    }
    Cow::Borrowed(template.template.hashing_blob(extra_nonce).hex(buf))
}

/// The offsets and difficulties of a proxy's block-template job.
fn proxy_job_fields(template: &JobTemplate, difficulty: u64) -> ProxyJobFields {
    let reserved = template.template.reserved_offset;
    ProxyJobFields {
        reserved_offset: reserved,
        pool_nonce_offset: reserved + PROXY_POOL_NONCE_AT,
        worker_nonce_offset: reserved + PROXY_WORKER_NONCE_AT,
        network_difficulty: template.template.difficulty,
        difficulty,
    }
}

/// The submitted nonce: exactly 8 hex characters.
pub(crate) fn parse_nonce(text: &str) -> Option<[u8; 4]> {
    let mut nonce = [0u8; 4];
    (text.len() == 8 && hex::decode_to_slice(text, &mut nonce).is_ok()).then_some(nonce)
}

/// A share that passed the cheap checks, on its way to the verifier.
struct ShareCheck {
    reply_id: Box<RawValue>,
    read_at: Instant,
    job_id: u64,
    template: Arc<JobTemplate>,
    extra_nonce: [u8; EXTRA_NONCE_LEN],
    /// A proxy's nonces, written after the extra nonce.
    proxy: Option<ProxyNonces>,
    nonce: [u8; 4],
    blob: HashingBlob,
    claimed: Hash,
    difficulty: u64,
    block: bool,
    trusted: bool,
    login: Arc<str>,
    worker: Arc<str>,
    solo: bool,
}

/// Why a submit was refused before verification.
struct Rejection {
    message: &'static str,
    result: &'static str,
    counts_against_ip: bool,
}

impl Rejection {
    fn new(message: &'static str, result: &'static str, counts_against_ip: bool) -> Rejection {
        Rejection { message, result, counts_against_ip }
    }
}

enum Outcome {
    Accepted,
    Invalid,
    Error,
    /// Dropped unhashed (session closed or IP banned).
    Cancelled,
}

/// The result of a share check, back to its session.
#[derive(Message)]
#[rtype(result = "()")]
struct Verdict {
    reply_id: Box<RawValue>,
    read_at: Instant,
    /// The job and nonce, so a share that could not be verified can be submitted again.
    job_id: u64,
    nonce: u32,
    proxy: Option<ProxyNonces>,
    outcome: Outcome,
    block: bool,
    trusted: bool,
}

impl ShareCheck {
    /// Verifies (unless trusted) and accounts the share; submits the block if it is one.
    /// `permit` holds the share's in-flight slots until the verdict is ready.
    /// A claimed block that fails verification bans `ip` here, so the ban holds even if the
    /// session is already gone (unless `exempt`: then only the session is closed).
    async fn run(self, shared: &Arc<StratumContext>, ip: IpAddr, exempt: bool, permit: Permit) -> Verdict {
        let outcome = if self.trusted {
            Outcome::Accepted
        } else {
            let priority = if permit.urgent() { Priority::Block } else { Priority::Normal };
            let seed = *self.template.template.seed_hash.as_bytes();
            let cancel = cancel_check(shared.clone(), ip, &permit);
            match shared.engine.verify_unless(seed, self.blob.as_slice().to_vec(), priority, Some(cancel)).await {
                Ok(v) => {
                    crate::metrics::verification(v.fast, v.waited, v.hashing);
                    if v.hash == self.claimed.0 {
                        Outcome::Accepted
                    } else {
                        Outcome::Invalid
                    }
                }
                Err(PowError::Cancelled) => Outcome::Cancelled,
                Err(e) => {
                    tracing::error!("share verification failed: {e}");
                    Outcome::Error
                }
            }
        };
        drop(permit);
        if let (Outcome::Invalid, true) = (&outcome, self.block) {
            if exempt {
                tracing::warn!(%ip, miner = %self.login, "claimed a block that fails verification (allowed address: session closed, no ban)");
            } else {
                shared.bans.ban_now(ip, "claimed a block that fails verification");
            }
        }
        if let Outcome::Accepted = outcome {
            self.account(shared).await;
        }
        Verdict {
            reply_id: self.reply_id,
            read_at: self.read_at,
            job_id: self.job_id,
            nonce: u32::from_le_bytes(self.nonce),
            proxy: self.proxy,
            outcome,
            block: self.block,
            trusted: self.trusted,
        }
    }

    /// Books the share; a block is first handed to the distributor, which writes it to Redis
    /// and submits it (only the first block per template height: a later one is an ordinary
    /// share).
    async fn account(&self, shared: &StratumContext) {
        crate::metrics::share_difficulty(self.solo, self.difficulty);
        let mut candidate = None;
        if self.block {
            let t = &self.template.template;
            let hash = self.blob.block_id();
            let share = CandidateShare {
                hash,
                height: t.height,
                network_difficulty: t.difficulty,
                reward: self.template.pool_reward,
                found_ms: unix_ms(),
            };
            tracing::info!(
                height = t.height,
                hash = %hash,
                miner = %self.login,
                worker = %self.worker,
                solo = self.solo,
                "Block candidate found; submitting"
            );
            let submit = SubmitBlock {
                blob_hex: hex::encode(match self.proxy {
                    Some(nonces) => t.block_blob(&nonces.reserved(&self.extra_nonce), self.nonce),
                    None => t.block_blob(&self.extra_nonce, self.nonce),
                }),
                hash,
                height: t.height,
                prev_hash: t.block.header.prev_id,
                candidate: share.record(
                    &self.login,
                    &self.worker,
                    self.solo,
                    self.difficulty,
                    shared.config.load().pplns.window_factor,
                ),
            };
            match shared.jobs.send(submit).await {
                Ok(true) => candidate = Some(Box::new(share)),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(height = t.height, hash = %hash, "block candidate not submitted: the job distributor is gone ({e})")
                }
            }
        }
        shared.ledger.do_send(RecordShare::share(
            self.login.clone(),
            self.worker.clone(),
            self.solo,
            self.difficulty,
            candidate,
        ));
    }
}

/// When a queued share is no longer worth hashing: its IP was banned, or its session closed.
/// The session's one claim in the urgent lane is still checked after a close: it may be a real
/// block (a miner that found one and disconnected), and it costs one hash per session.
fn cancel_check(shared: Arc<StratumContext>, ip: IpAddr, permit: &Permit) -> crate::pow::CancelCheck {
    let work = permit.session_work();
    let urgent = permit.urgent();
    Box::new(move || (!urgent && work.is_closed()) || shared.bans.is_banned(ip))
}

impl Actor for MinerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::metrics::connection_opened(self.port);
        delivery::join(self.group, &self.jobs);
        self.supervisor.do_send(Register { id: self.id, addr: ctx.address() });
        // Exact, rather than at the next housekeeping tick.
        ctx.run_later(self.shared.config.load().limits.login_timeout, |act, ctx| {
            if act.miner.is_none() && act.waiting_login.is_none() && !act.closing {
                act.login_timed_out(ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        crate::metrics::connection_closed(self.port);
        delivery::leave(self.group, &self.jobs);
        self.work.close();
        self.shared.limits.release(self.ip, self.exempt);
        self.supervisor.do_send(Unregister { id: self.id });
    }
}

impl StreamHandler<Result<Vec<u8>, LineError>> for MinerSession {
    fn handle(&mut self, item: Result<Vec<u8>, LineError>, ctx: &mut Context<Self>) {
        match item {
            Ok(line) => self.on_line(&line, ctx),
            Err(LineError::TooLong(max)) => {
                tracing::debug!(ip = %self.ip, "line over {max} bytes without a newline; closing (flooding)");
                crate::metrics::disconnect("flood");
                ctx.stop();
            }
            Err(LineError::Timeout(limit)) => {
                tracing::info!(ip = %self.ip, "request line not finished within {} s; closing (slowloris)", limit.as_secs());
                crate::metrics::disconnect("line_timeout");
                ctx.stop();
            }
            Err(LineError::Io(_)) => ctx.stop(),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl StreamHandler<Pending> for MinerSession {
    fn handle(&mut self, msg: Pending, ctx: &mut Context<Self>) {
        if let Some(id) = self.waiting_login.take() {
            self.answer_login(&id, &msg.job, ctx);
        } else if self.miner.is_some() && !self.closing {
            self.push_job(&msg.job, ctx);
        }
    }
}

impl Handler<Tick> for MinerSession {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.tick(ctx);
    }
}

impl Handler<Verdict> for MinerSession {
    type Result = ();
    fn handle(&mut self, msg: Verdict, ctx: &mut Context<Self>) {
        self.on_verdict(msg, ctx);
        self.verdicts_due = self.verdicts_due.saturating_sub(1);
        if self.retiring && self.verdicts_due == 0 {
            self.close_after_flush(ctx);
        }
    }
}

/// Closes the session once every submit it took is answered and written (upgrade drain: the
/// miner reconnects to the new process and loses no reply).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for MinerSession {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        crate::metrics::disconnect("upgrade");
        self.retiring = true;
        if self.verdicts_due == 0 {
            self.close_after_flush(ctx);
        }
    }
}

//! The JobDistributor actor: polls `getlastblockheader`, fetches a template on a new top block
//! and periodically (so mempool transactions get mined), fans templates out to the port
//! supervisors, and submits block candidates the moment a session finds one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwapOption;

use super::submissions::{self, Admission, Step, Submissions};
use super::JobTemplate;
use crate::chain::{Address, Hash};
use crate::node::{DaemonClient, DaemonError};
use crate::pow::PowEngine;
use crate::store::{CandidateRecord, Store, Submission, SubmissionStatus};
use crate::stratum::unix_ms;

/// A new template for the sessions.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct NewTemplate(pub Arc<JobTemplate>);

/// Registers a receiver of [`NewTemplate`] (a port supervisor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<NewTemplate>);

/// A verified block candidate to send to the daemon now. Answers whether it is submitted
/// (false: another block was already found at its height, so book it as an ordinary share).
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct SubmitBlock {
    /// Full block blob, hex.
    pub blob_hex: String,
    /// Block id.
    pub hash: Hash,
    /// Block height.
    pub height: u64,
    /// Parent block id (of its template).
    pub prev_hash: Hash,
    /// The candidate as booked (written with the blob before the first submit).
    pub candidate: CandidateRecord,
}

/// Candidates a previous run left pending (read from Redis at start-up).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResumeSubmissions(pub Vec<Submission>);

/// Asks how many candidates in hand are not written to Redis yet (shutdown waits for none).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct UnsavedCandidates;

/// Settings of the distributor.
#[derive(Clone)]
pub struct DistributorConfig {
    /// `poolServer.blockRefreshInterval`.
    pub poll_interval: Duration,
    /// `poolServer.templateRefreshInterval`.
    pub refresh_interval: Duration,
    /// The pool's payout address (the coinbase must pay its key).
    pub pool_address: Address,
    /// Extra-nonce bytes asked from the daemon.
    pub reserve_size: usize,
    /// This process's instance id (extra-nonce bytes 4..8).
    pub instance_id: [u8; 4],
}

/// A candidate in hand: what an attempt needs.
struct Candidate {
    submission: Submission,
    /// Written to `blocks:submit:<hash>` (a Redis outage must not delay the first submit).
    saved: bool,
    /// Resolved, but the resolution is not written yet.
    resolved: Option<(SubmissionStatus, String)>,
}

/// Polls the daemon and publishes templates.
pub struct JobDistributor {
    daemon: DaemonClient,
    config: DistributorConfig,
    pool_address_text: String,
    engine: PowEngine,
    current: Arc<ArcSwapOption<JobTemplate>>,
    subscribers: Vec<Recipient<NewTemplate>>,
    last_top: Option<Hash>,
    in_flight: bool,
    failures: u32,
    retry_at: Instant,
    seq: u64,
    store: Store,
    book: Submissions,
    candidates: std::collections::HashMap<Hash, Candidate>,
    /// The next epoch's seed when its block exists and the switch is ahead (announced to the
    /// engine so its dataset is built before the switch).
    upcoming_seed: Option<Hash>,
}

enum PollOutcome {
    Unchanged,
    Fetched(Arc<JobTemplate>, &'static str, Hash, Option<Hash>),
}

impl JobDistributor {
    /// A distributor publishing into `current` (read by sessions at login).
    pub fn new(
        daemon: DaemonClient,
        config: DistributorConfig,
        engine: PowEngine,
        current: Arc<ArcSwapOption<JobTemplate>>,
        store: Store,
    ) -> JobDistributor {
        JobDistributor {
            daemon,
            pool_address_text: config.pool_address.encode(),
            config,
            engine,
            current,
            subscribers: Vec::new(),
            last_top: None,
            in_flight: false,
            failures: 0,
            retry_at: Instant::now(),
            seq: 0,
            store,
            book: Submissions::default(),
            candidates: std::collections::HashMap::new(),
            upcoming_seed: None,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || Instant::now() < self.retry_at {
            return;
        }
        if let Some(current) = self.current.load().as_ref() {
            crate::metrics::template_age(current.fetched_at.elapsed());
        }
        self.in_flight = true;
        let daemon = self.daemon.clone();
        let last_top = self.last_top;
        let refresh_due = self
            .current
            .load()
            .as_ref()
            .map(|c| c.fetched_at.elapsed() >= self.config.refresh_interval)
            .unwrap_or(true);
        let address = self.pool_address_text.clone();
        let config = self.config.clone();
        let seq = self.seq + 1;
        let fut = async move {
            let started = Instant::now();
            let header = daemon.get_last_block_header().await;
            crate::metrics::daemon_rpc("getlastblockheader", started.elapsed(), header.as_ref().err().map(error_kind));
            let top = header?.hash;
            let reason = if last_top != Some(top) {
                "new_block"
            } else if refresh_due {
                "refresh"
            } else {
                return Ok(PollOutcome::Unchanged);
            };
            let started = Instant::now();
            let answer = daemon.get_block_template(config.reserve_size, &address).await;
            crate::metrics::daemon_rpc("getblocktemplate", started.elapsed(), answer.as_ref().err().map(error_kind));
            let answer = answer?;
            let template = answer.parse(config.reserve_size).map_err(|e| FetchError::Template(e.to_string()))?;
            let Some(output) = template.output_to(config.pool_address.key()) else {
                return Err(FetchError::NotOurs(template.height));
            };
            let upcoming = match crate::chain::seed::upcoming_seed_height(template.height) {
                Some(height) => upcoming_seed(&daemon, height).await,
                None => None,
            };
            let job = JobTemplate::new(template, seq, output.amount, config.instance_id);
            Ok(PollOutcome::Fetched(Arc::new(job), reason, top, upcoming))
        };
        ctx.spawn(fut.into_actor(self).map(|result: Result<PollOutcome, FetchError>, act, _| {
            act.in_flight = false;
            match result {
                Ok(PollOutcome::Unchanged) => act.recovered(),
                Ok(PollOutcome::Fetched(job, reason, top, upcoming)) => {
                    act.recovered();
                    act.last_top = Some(top);
                    act.seq = job.seq;
                    act.upcoming_seed = upcoming;
                    act.publish(job, reason);
                }
                Err(e) => act.failed(e),
            }
        }));
    }

    fn publish(&mut self, job: Arc<JobTemplate>, reason: &'static str) {
        let t = &job.template;
        let mut seeds = vec![*t.seed_hash.as_bytes(), *t.next_seed_hash.as_bytes()];
        seeds.extend(self.upcoming_seed.map(|s| *s.as_bytes()));
        self.engine.prepare(&seeds);
        crate::metrics::template(reason, t.height, t.difficulty);
        let log = if reason == "new_block" { tracing::Level::INFO } else { tracing::Level::DEBUG };
        if log == tracing::Level::INFO {
            tracing::info!(
                height = t.height,
                difficulty = t.difficulty,
                txs = t.tx_count(),
                reward = job.pool_reward,
                "New block template"
            );
        } else {
            tracing::debug!(height = t.height, txs = t.tx_count(), "Template refreshed");
        }
        self.current.store(Some(job.clone()));
        // do_send ignores the mailbox bound: a supervisor busy with a login storm still gets it.
        self.subscribers.retain(|s| s.connected());
        for subscriber in &self.subscribers {
            subscriber.do_send(NewTemplate(job.clone()));
        }
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(after = self.failures, "Daemon reachable again");
        }
        self.failures = 0;
    }

    fn failed(&mut self, error: FetchError) {
        self.failures += 1;
        // 100 ms, 200 ms, ... capped at 5 s.
        let backoff =
            Duration::from_millis(100u64.saturating_mul(1 << self.failures.min(6))).min(Duration::from_secs(5));
        self.retry_at = Instant::now() + backoff;
        let serving = match self.current.load().as_ref() {
            Some(job) => format!(
                "still serving the template for height {} fetched {} s ago",
                job.height(),
                job.fetched_at.elapsed().as_secs()
            ),
            None => "no template yet: miners cannot get jobs".to_string(),
        };
        // Log the first failure and then about every 10 s, not every poll.
        if self.failures == 1 || self.failures % 20 == 0 {
            match &error {
                FetchError::NotOurs(_) | FetchError::Template(_) => tracing::error!("{error}; {serving}"),
                _ => tracing::warn!(failures = self.failures, "Daemon: {error}; {serving}"),
            }
        }
    }

    /// Starts an attempt for every candidate that is due: write it (if not yet), check the
    /// chain (on a retry), submit, and write the outcome.
    fn drive_submissions(&mut self, ctx: &mut Context<Self>) {
        for (hash, attempts) in self.book.due(Instant::now()) {
            let Some(c) = self.candidates.get(&hash) else {
                self.book.finish(&hash);
                continue;
            };
            let daemon = self.daemon.clone();
            let store = self.store.clone();
            let submission = c.submission.clone();
            let (mut saved, resolved) = (c.saved, c.resolved.clone());
            let fut = async move {
                let height = submission.candidate.height;
                if !saved {
                    match store.save_submission(&submission, unix_ms()).await {
                        Ok(_) => saved = true,
                        Err(e) => {
                            tracing::error!(height, hash = %hash, "block candidate not written to Redis ({e}); submitting anyway, writing it again later")
                        }
                    }
                }
                let step = match resolved {
                    Some((status, detail)) => Step::Done(status, detail),
                    None => attempt(&daemon, &submission, hash, attempts).await,
                };
                let written = match (&step, saved) {
                    (Step::Done(status, detail), true) => {
                        store.resolve_submission(&submission.candidate.hash, *status, unix_ms(), detail).await.is_ok()
                    }
                    _ => false,
                };
                (step, saved, written)
            };
            ctx.spawn(fut.into_actor(self).map(move |(step, saved, written), act, ctx| {
                let Some(c) = act.candidates.get_mut(&hash) else { return };
                c.saved = saved;
                let height = c.submission.candidate.height;
                match step {
                    Step::Done(status, detail) => {
                        if c.resolved.is_none() {
                            log_outcome(height, &hash, status, &detail);
                            crate::metrics::block_candidate(status.as_str());
                            c.resolved = Some((status, detail));
                            if status == SubmissionStatus::Rejected {
                                if let Ok(parent) = Hash::from_hex(&c.submission.prev_hash) {
                                    act.book.rejected(height, parent, &hash);
                                }
                            }
                            if status == SubmissionStatus::Accepted {
                                // The tip moved: fetch the next template now, not at the next tick.
                                act.retry_at = Instant::now();
                                act.poll(ctx);
                            }
                        }
                        if written || !saved {
                            // Not saved: nothing in Redis to resolve (the ledger books it).
                            act.candidates.remove(&hash);
                            act.book.finish(&hash);
                        } else {
                            act.book.failed(&hash, Instant::now());
                        }
                    }
                    Step::Retry(detail) => {
                        let attempts = act.book.failed(&hash, Instant::now());
                        crate::metrics::block_candidate("retry");
                        if c.saved {
                            let store = act.store.clone();
                            let detail = detail.clone();
                            ctx.spawn(
                                async move {
                                    let key = hash.to_string();
                                    if let Err(e) = store.note_submission_attempt(&key, attempts, unix_ms(), &detail).await {
                                        tracing::debug!(hash = %key, "submission attempt not noted in Redis ({e})");
                                    }
                                }
                                .into_actor(act),
                            );
                        }
                        if attempts == 1 || attempts % 10 == 0 {
                            tracing::warn!(height, hash = %hash, attempts, "submitblock failed ({detail}); the candidate is kept and submitted again");
                        }
                    }
                }
            }));
        }
    }

    fn add_candidate(&mut self, submission: Submission, hash: Hash, saved: bool, ctx: &mut Context<Self>) {
        self.candidates.insert(hash, Candidate { submission, saved, resolved: None });
        self.book.track(hash, Instant::now());
        self.drive_submissions(ctx);
    }
}

/// One attempt: on a retry, the chain at the candidate's height first (accepted after all, or
/// taken by another block); then `submitblock`.
async fn attempt(daemon: &DaemonClient, submission: &Submission, hash: Hash, attempts: u32) -> Step {
    let height = submission.candidate.height;
    if attempts > 0 {
        match daemon.get_block_header_by_height(height).await {
            Ok(header) => {
                if let Some(step) = submissions::from_chain(&hash, Some(&header.hash)) {
                    return step;
                }
            }
            // The chain does not reach the height yet.
            Err(DaemonError::Rpc { code: -2, .. }) => {}
            Err(e) if e.is_transient() => return Step::Retry(e.to_string()),
            Err(e) => tracing::warn!(height, "cannot look up the chain at the candidate's height ({e}); submitting"),
        }
    }
    let started = Instant::now();
    let result = daemon.submit_block(&submission.blob_hex).await;
    crate::metrics::daemon_rpc("submitblock", started.elapsed(), result.as_ref().err().map(error_kind));
    crate::metrics::block_submitted(match &result {
        Ok(()) => "accepted",
        Err(e) if e.is_transient() => "error",
        Err(_) => "rejected",
    });
    submissions::after_submit(&result)
}

fn log_outcome(height: u64, hash: &Hash, status: SubmissionStatus, detail: &str) {
    match status {
        SubmissionStatus::Accepted => {
            tracing::info!(height, hash = %hash, "Block candidate accepted by the daemon ({detail}); confirmation follows by header lookup")
        }
        SubmissionStatus::Rejected => {
            tracing::error!(height, hash = %hash, "Block candidate rejected by the daemon: {detail}")
        }
        SubmissionStatus::Superseded => {
            tracing::warn!(height, hash = %hash, "Block candidate not submitted any more: {detail}")
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("unusable block template: {0}")]
    Template(String),
    #[error("REFUSING the block template for height {0}: its coinbase does not pay the pool address (poolAddress must be the address the daemon is asked to pay)")]
    NotOurs(u64),
}

/// The id of the block at `height` (the next epoch's seed block), or None if the daemon does
/// not answer: the seed is then built at the switch, as before.
async fn upcoming_seed(daemon: &DaemonClient, height: u64) -> Option<Hash> {
    let started = Instant::now();
    let header = daemon.get_block_header_by_height(height).await;
    crate::metrics::daemon_rpc("getblockheaderbyheight", started.elapsed(), header.as_ref().err().map(error_kind));
    match header {
        Ok(header) => Some(header.hash),
        Err(e) => {
            tracing::debug!(height, "next epoch's seed block: {e}");
            None
        }
    }
}

fn error_kind(e: &DaemonError) -> &'static str {
    match e {
        DaemonError::Unreachable(_) => "unreachable",
        DaemonError::NotSynced => "not_synced",
        DaemonError::Rpc { .. } => "rpc",
        DaemonError::Failed { .. } => "failed",
        DaemonError::Api { .. } => "api",
        DaemonError::Http { .. } => "http",
        DaemonError::Decode(_) => "decode",
    }
}

impl Actor for JobDistributor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.poll(ctx);
        ctx.run_interval(self.config.poll_interval, |act, ctx| {
            act.poll(ctx);
            act.drive_submissions(ctx);
        });
    }
}

impl Handler<Subscribe> for JobDistributor {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        if let Some(job) = self.current.load_full() {
            msg.0.do_send(NewTemplate(job));
        }
        self.subscribers.push(msg.0);
    }
}

impl Handler<SubmitBlock> for JobDistributor {
    type Result = bool;
    fn handle(&mut self, msg: SubmitBlock, ctx: &mut Context<Self>) -> bool {
        match self.book.admit(msg.height, msg.prev_hash, msg.hash) {
            Admission::First => {}
            Admission::Known => return false,
            Admission::SecondAtHeight(first) => {
                crate::metrics::block_candidate("second_at_height");
                tracing::warn!(
                    height = msg.height,
                    hash = %msg.hash,
                    first = %first,
                    miner = %msg.candidate.login,
                    "Another block was found at this height on the same parent; not submitting it (it could only become an orphan), its share counts as an ordinary share"
                );
                return false;
            }
        }
        crate::metrics::block_candidate("found");
        let submission = Submission {
            candidate: msg.candidate,
            blob_hex: msg.blob_hex,
            prev_hash: msg.prev_hash.to_hex(),
            instance: hex::encode(self.config.instance_id),
        };
        self.add_candidate(submission, msg.hash, false, ctx);
        true
    }
}

impl Handler<ResumeSubmissions> for JobDistributor {
    type Result = ();
    fn handle(&mut self, msg: ResumeSubmissions, ctx: &mut Context<Self>) {
        for submission in msg.0 {
            let Ok(hash) = Hash::from_hex(&submission.candidate.hash) else {
                tracing::error!(hash = %submission.candidate.hash, "pending block submission with a malformed hash; skipped");
                continue;
            };
            if self.candidates.contains_key(&hash) {
                continue;
            }
            tracing::info!(height = submission.candidate.height, hash = %hash, "Resuming the submission of a block candidate left pending by an earlier run");
            crate::metrics::block_candidate("resumed");
            if let Ok(prev) = Hash::from_hex(&submission.prev_hash) {
                self.book.admit(submission.candidate.height, prev, hash);
            }
            self.add_candidate(submission, hash, true, ctx);
        }
    }
}

impl Handler<UnsavedCandidates> for JobDistributor {
    type Result = usize;
    fn handle(&mut self, _: UnsavedCandidates, _: &mut Context<Self>) -> usize {
        self.candidates.values().filter(|c| !c.saved).count()
    }
}

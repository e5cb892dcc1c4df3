//! The JobDistributor actor: polls `getlastblockheader`, fetches a template on a new top block
//! and periodically (so mempool transactions get mined), fans templates out to the port
//! supervisors, and submits block candidates the moment a session finds one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwapOption;

use super::JobTemplate;
use crate::chain::{Address, Hash};
use crate::node::{DaemonClient, DaemonError};
use crate::pow::PowEngine;

/// A new template for the sessions.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct NewTemplate(pub Arc<JobTemplate>);

/// Registers a receiver of [`NewTemplate`] (a port supervisor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<NewTemplate>);

/// A verified block candidate to send to the daemon now.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SubmitBlock {
    /// Full block blob, hex.
    pub blob_hex: String,
    /// Block id.
    pub hash: Hash,
    /// Block height.
    pub height: u64,
}

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

    fn submit(&self, block: SubmitBlock, ctx: &mut Context<Self>) {
        let daemon = self.daemon.clone();
        let fut = async move {
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let started = Instant::now();
                let result = daemon.submit_block(&block.blob_hex).await;
                crate::metrics::daemon_rpc("submitblock", started.elapsed(), result.as_ref().err().map(error_kind));
                match result {
                    Ok(()) => {
                        crate::metrics::block_submitted("accepted");
                        tracing::info!(height = block.height, hash = %block.hash, "Block candidate accepted by the daemon (confirmation follows by header lookup)");
                        return true;
                    }
                    Err(e) if e.is_transient() && attempt < 5 => {
                        tracing::warn!(height = block.height, hash = %block.hash, attempt, "submitblock failed ({e}); retrying");
                        tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt * attempt))).await;
                    }
                    Err(e) => {
                        crate::metrics::block_submitted(if e.is_transient() { "error" } else { "rejected" });
                        tracing::error!(height = block.height, hash = %block.hash, "Block candidate not accepted by the daemon: {e}");
                        return false;
                    }
                }
            }
        };
        ctx.spawn(fut.into_actor(self).map(|accepted, act, ctx| {
            if accepted {
                // The tip moved: fetch the next template now rather than at the next tick.
                act.retry_at = Instant::now();
                act.poll(ctx);
            }
        }));
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
        ctx.run_interval(self.config.poll_interval, |act, ctx| act.poll(ctx));
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
    type Result = ();
    fn handle(&mut self, msg: SubmitBlock, ctx: &mut Context<Self>) {
        self.submit(msg, ctx);
    }
}

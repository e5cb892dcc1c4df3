//! The BlockUnlocker actor: matures block candidates.
//!
//! For each candidate it looks the block up by height once the chain is `depth` blocks past
//! it: the same hash there means confirmed (credit the PPLNS split, exactly once, atomically);
//! another hash means our block lost to another one (orphaned, never credited). The split uses
//! the pool's own coinbase output recorded when the block was submitted, never the header's
//! reward (which includes staking payouts).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::leader::Lease;
use super::split;
use crate::node::{DaemonClient, DaemonError};
use crate::store::{Candidate, PayoutTerms, Store, StoreError};

/// Unlocker settings (`blockUnlocker`).
#[derive(Debug, Clone)]
pub struct UnlockerSettings {
    /// Between runs.
    pub interval: Duration,
    /// Confirmations before a block is credited.
    pub depth: u64,
    /// Pool fee in basis points.
    pub pool_fee_bps: u32,
    /// Finder reward in basis points.
    pub finder_reward_bps: u32,
    /// Solo fee in basis points (defaults to the pool fee).
    pub solo_fee_bps: u32,
    /// How long a resolved block's window and credits are kept.
    pub payout_keep: Duration,
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnlockReport {
    /// Blocks credited in this run.
    pub confirmed: Vec<String>,
    /// Blocks found orphaned in this run.
    pub orphaned: Vec<String>,
    /// Candidates still waiting.
    pub pending: usize,
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// Redis failed (or this process lost the lease: the script said FENCED).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The daemon failed.
    #[error("daemon: {0}")]
    Daemon(#[from] DaemonError),
}

/// One unlocker pass over every candidate.
pub async fn unlock_once(
    store: &Store,
    daemon: &DaemonClient,
    token: &str,
    settings: &UnlockerSettings,
) -> Result<UnlockReport, UnlockError> {
    let mut report = UnlockReport::default();
    for candidate in store.candidates().await? {
        let header = match daemon.get_block_header_by_height(candidate.height).await {
            Ok(header) => header,
            // The chain is shorter than the candidate (a reorg to a shorter chain, or a node
            // still syncing): wait.
            Err(DaemonError::Rpc { code: -2, .. }) => {
                report.pending += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if header.depth < settings.depth {
            report.pending += 1;
            continue;
        }
        let now = crate::stratum::unix_ms() / 1000;
        if header.hash.to_hex() != candidate.hash {
            if store.orphan_block(token, &candidate.hash, candidate.height, now, settings.payout_keep).await? {
                tracing::warn!(
                    height = candidate.height,
                    hash = %candidate.hash,
                    main_chain = %header.hash,
                    "Block orphaned: another block is at its height; not credited"
                );
                crate::metrics::block_resolved(false, effort(&candidate), 0);
                report.orphaned.push(candidate.hash.clone());
            }
            continue;
        }
        let Some(reward) = candidate.reward else {
            tracing::error!(
                height = candidate.height,
                hash = %candidate.hash,
                "candidate recorded by the old pool has no template data (the pool's own coinbase output is unknown): not credited automatically, see docs/PAYOUTS.md"
            );
            report.pending += 1;
            continue;
        };
        let split = split_for(store, &candidate, reward, settings).await?;
        let terms = if candidate.solo {
            PayoutTerms { fee_bps: settings.solo_fee_bps, finder_bps: 0, keep: settings.payout_keep }
        } else {
            PayoutTerms {
                fee_bps: settings.pool_fee_bps,
                finder_bps: settings.finder_reward_bps,
                keep: settings.payout_keep,
            }
        };
        if store
            .credit_block(
                token,
                &candidate.hash,
                candidate.height,
                &split.credits,
                split.pool_fee,
                split.finder_reward,
                split.dust,
                now,
                &terms,
            )
            .await?
        {
            tracing::info!(
                height = candidate.height,
                hash = %candidate.hash,
                reward,
                credited = split.credited(),
                pool_fee = split.pool_fee,
                dust = split.dust,
                miners = split.credits.len(),
                "Block confirmed and credited"
            );
            crate::metrics::block_resolved(true, effort(&candidate), split.credited());
            report.confirmed.push(candidate.hash.clone());
        }
    }
    Ok(report)
}

async fn split_for(
    store: &Store,
    candidate: &Candidate,
    reward: u64,
    settings: &UnlockerSettings,
) -> Result<split::Split, StoreError> {
    if candidate.solo {
        return Ok(split::solo(reward, &candidate.login, settings.solo_fee_bps));
    }
    let window: BTreeMap<String, u64> = store.block_window(&candidate.hash).await?;
    Ok(split::pplns(reward, &window, &candidate.login, settings.pool_fee_bps, settings.finder_reward_bps))
}

/// Round shares / network difficulty from the candidate member (old format fields 5 and 6).
fn effort(candidate: &Candidate) -> f64 {
    let fields: Vec<&str> = candidate.member.split(':').collect();
    match (fields.get(4).and_then(|d| d.parse::<f64>().ok()), fields.get(5).and_then(|s| s.parse::<f64>().ok())) {
        (Some(difficulty), Some(shares)) if difficulty > 0.0 => shares / difficulty,
        _ => 0.0,
    }
}

/// Runs [`unlock_once`] every interval while this process holds the lease.
pub struct BlockUnlocker {
    store: Store,
    daemon: DaemonClient,
    lease: Lease,
    settings: UnlockerSettings,
    running: bool,
    last_run: Instant,
    failures: u32,
    /// The run timer, re-armed when a reload changes `blockUnlocker.interval`.
    timer: Option<SpawnHandle>,
}

impl BlockUnlocker {
    /// An unlocker acting while `lease` is held.
    pub fn new(store: Store, daemon: DaemonClient, lease: Lease, settings: UnlockerSettings) -> BlockUnlocker {
        BlockUnlocker {
            store,
            daemon,
            lease,
            settings,
            running: false,
            last_run: Instant::now(),
            failures: 0,
            timer: None,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let Some(token) = self.lease.token() else {
            self.last_run = Instant::now();
            return;
        };
        if self.running {
            return;
        }
        self.running = true;
        let (store, daemon, settings) = (self.store.clone(), self.daemon.clone(), self.settings.clone());
        let fut = async move { unlock_once(&store, &daemon, &token, &settings).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.running = false;
            match result {
                Ok(report) => {
                    act.last_run = Instant::now();
                    act.failures = 0;
                    crate::metrics::unlocker_state(report.pending, Duration::ZERO);
                }
                Err(e) => {
                    act.failures += 1;
                    crate::metrics::unlocker_state(0, act.last_run.elapsed());
                    if act.failures == 1 || act.failures % 10 == 0 {
                        tracing::warn!(failures = act.failures, "block unlocker: {e}; retrying next interval");
                    }
                }
            }
        }));
    }
}

impl Actor for BlockUnlocker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.timer = Some(ctx.run_interval(self.settings.interval, |act, ctx| act.tick(ctx)));
    }
}

/// New settings from a config reload (fees, depth, interval): the next run uses them; blocks
/// already credited keep the split they were credited with.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateUnlockerSettings(pub UnlockerSettings);

impl Handler<UpdateUnlockerSettings> for BlockUnlocker {
    type Result = ();
    fn handle(&mut self, msg: UpdateUnlockerSettings, ctx: &mut Context<Self>) {
        let rearm = msg.0.interval != self.settings.interval;
        self.settings = msg.0;
        if rearm {
            super::rearm(ctx, &mut self.timer, self.settings.interval, Self::tick);
        }
    }
}

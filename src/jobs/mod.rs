//! Job distribution: the daemon poller ([`JobDistributor`]) and the shared [`JobTemplate`]
//! every miner session builds its own jobs from.

mod distributor;
pub mod submissions;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::chain::Template;
use crate::stratum::protocol;

pub use distributor::{
    DistributorConfig, JobDistributor, NewTemplate, ResumeSubmissions, SubmitBlock, Subscribe, UnsavedCandidates,
};

/// A parsed template as served to miners: immutable except for its extra-nonce counter.
#[derive(Debug)]
pub struct JobTemplate {
    /// The parsed template.
    pub template: Template,
    /// Increases with every template this process fetched.
    pub seq: u64,
    /// The pool's own coinbase output (what a found block credits; never the header reward).
    pub pool_reward: u64,
    /// When it was fetched.
    pub fetched_at: Instant,
    /// `,"algo":"rx/0","height":..,"seed_hash":..,"next_seed_hash":..}` shared by every job.
    pub json_tail: String,
    /// Hex of the seed hash (for logs and the status page).
    pub seed_hex: String,
    instance_id: [u8; 4],
    next_nonce: AtomicU32,
}

/// Bytes of the reserved area the pool writes: a per-template counter (big-endian) then the
/// instance id, so jobs are unique per (instance, template) (spec §8.2).
pub const EXTRA_NONCE_LEN: usize = 8;

impl JobTemplate {
    /// Wraps a parsed template.
    pub fn new(template: Template, seq: u64, pool_reward: u64, instance_id: [u8; 4]) -> JobTemplate {
        let seed_hex = template.seed_hash.to_hex();
        let json_tail = protocol::template_tail(template.height, &seed_hex, &template.next_seed_hash.to_hex());
        JobTemplate {
            template,
            seq,
            pool_reward,
            fetched_at: Instant::now(),
            json_tail,
            seed_hex,
            instance_id,
            next_nonce: AtomicU32::new(0),
        }
    }

    /// A fresh extra nonce for one job.
    pub fn next_extra_nonce(&self) -> [u8; EXTRA_NONCE_LEN] {
        let counter = self.next_nonce.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let mut out = [0u8; EXTRA_NONCE_LEN];
        out[..4].copy_from_slice(&counter.to_be_bytes());
        out[4..].copy_from_slice(&self.instance_id);
        out
    }

    /// Block height being mined.
    pub fn height(&self) -> u64 {
        self.template.height
    }
}

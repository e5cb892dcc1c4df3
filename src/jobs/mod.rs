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

/// Where an xmr-node-proxy writes its pool nonce, from the start of the reserved bytes
/// (`client_pool_offset - reserved_offset`, spec §8.2: right after the pool's extra nonce).
pub const PROXY_POOL_NONCE_AT: usize = EXTRA_NONCE_LEN;
/// Where it writes its worker nonce (`client_nonce_offset - reserved_offset`).
pub const PROXY_WORKER_NONCE_AT: usize = PROXY_POOL_NONCE_AT + 4;
/// Reserved bytes a proxy job needs: the extra nonce and both proxy nonces
/// (`poolServer.reserveSize` may not be smaller).
pub const PROXY_RESERVED_LEN: usize = PROXY_WORKER_NONCE_AT + 4;

/// The two nonces an xmr-node-proxy writes into a block-template job: one per proxy job it
/// hands out (`poolNonce`) and one per worker of that job (`workerNonce`), so each of its
/// workers hashes a distinct block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxyNonces {
    /// Written big-endian at `client_pool_offset`.
    pub pool: u32,
    /// Written big-endian at `client_nonce_offset`.
    pub worker: u32,
}

impl ProxyNonces {
    /// The reserved bytes of a proxy share: the job's extra nonce, then both nonces big-endian,
    /// exactly as the proxy wrote them into the block blob it was given.
    pub fn reserved(&self, extra_nonce: &[u8; EXTRA_NONCE_LEN]) -> [u8; PROXY_RESERVED_LEN] {
        let mut out = [0u8; PROXY_RESERVED_LEN];
        out[..EXTRA_NONCE_LEN].copy_from_slice(extra_nonce);
        out[PROXY_POOL_NONCE_AT..PROXY_WORKER_NONCE_AT].copy_from_slice(&self.pool.to_be_bytes());
        out[PROXY_WORKER_NONCE_AT..].copy_from_slice(&self.worker.to_be_bytes());
        out
    }
}

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

    /// A template for unit tests elsewhere (spec §12.3's synthetic block), numbered `seq`.
    #[cfg(test)]
    pub(crate) fn for_tests(seq: u64) -> JobTemplate {
        JobTemplate::new(tests::synthetic(), seq, 0, [0; 4])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::params::genesis_id;
    use crate::chain::{Block, Template};
    use proptest::prelude::*;

    /// Spec §12.3 (17 reserved bytes at offset 125).
    const SYNTHETIC_BLOB: &str = concat!(
        "0200c0c086cd06c5b9f61b36604388205be8d6a9d1c0f9fde7f90f70fefce3e69e9353a652b7c70000000001f20701ffe807018088debe0102",
        "69499635a9e294755ad720fcb1cdf1fa4e776ed069bf537886bc48f5467465a03401c18acd318998cdff799152afa2fd8a17c9b77cc4cc0eae",
        "d27e7dfe58e4143f0902110000000000000000000000000000000000025fe7f977e71dba2ea1a68e21057beebb9be2ac30c6410aa38d4f3fbe",
        "41dcffd2f2ee15ea639b73fa3db9b34a245bdfa015c260c598b211bf05a1ecc4b3e3b4f2"
    );

    pub(super) fn synthetic() -> Template {
        let seed = genesis_id();
        Template::parse(hex::decode(SYNTHETIC_BLOB).unwrap(), 125, 17, 1000, 5000, seed, seed).unwrap()
    }

    #[test]
    fn proxy_nonces_follow_the_extra_nonce_big_endian() {
        let n = ProxyNonces { pool: 0x0102_0304, worker: 0xa0b0_c0d0 };
        let extra = [9, 9, 9, 1, 0xde, 0xad, 0xbe, 0xef];
        assert_eq!(n.reserved(&extra), [9, 9, 9, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0]);
        assert_eq!((PROXY_POOL_NONCE_AT, PROXY_WORKER_NONCE_AT, PROXY_RESERVED_LEN), (8, 12, 16));
    }

    proptest! {
        /// What a proxy builds (the block blob it got, its nonces written at the announced
        /// offsets, then the block's own hashing blob) is what the pool verifies, for any
        /// extra nonce, proxy nonces and miner nonce; and the block the pool would submit is
        /// that very block.
        #[test]
        fn the_pool_rebuilds_the_blob_a_proxy_hashes(
            extra in any::<[u8; EXTRA_NONCE_LEN]>(),
            pool in any::<u32>(),
            worker in any::<u32>(),
            nonce in any::<[u8; 4]>(),
        ) {
            let t = synthetic();
            // The job's blob as sent to the proxy: the extra nonce written, nonce zero.
            let mut proxy_blob = t.block_blob(&extra, [0; 4]);
            let at = t.reserved_offset;
            proxy_blob[at + PROXY_POOL_NONCE_AT..at + PROXY_WORKER_NONCE_AT].copy_from_slice(&pool.to_be_bytes());
            proxy_blob[at + PROXY_WORKER_NONCE_AT..at + PROXY_RESERVED_LEN].copy_from_slice(&worker.to_be_bytes());
            let (block, layout) = Block::parse(&proxy_blob).unwrap();
            let mut worker_blob = block.hashing_blob();
            worker_blob[layout.nonce_offset..layout.nonce_offset + 4].copy_from_slice(&nonce);

            let reserved = ProxyNonces { pool, worker }.reserved(&extra);
            let mut pool_blob = t.hashing_blob(&reserved);
            pool_blob.set_nonce(nonce);
            prop_assert_eq!(pool_blob.as_slice(), &worker_blob[..]);

            let mut submitted = proxy_blob.clone();
            submitted[layout.nonce_offset..layout.nonce_offset + 4].copy_from_slice(&nonce);
            prop_assert_eq!(t.block_blob(&reserved, nonce), submitted);
            // The last reserved byte (the spare one) is never written.
            prop_assert_eq!(t.block_blob(&reserved, nonce)[at + PROXY_RESERVED_LEN], 0);
        }
    }
}

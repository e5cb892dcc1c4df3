//! The harness's own RandomX: one VM per hashing thread over a shared cache (light) or dataset
//! (fast), used to precompute valid shares before a replay and to measure the raw hash rate the
//! pool's verification throughput is compared with.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pastella_pool::chain::difficulty::hash_difficulty;
use pastella_pool::chain::Hash;
use pastella_pool::pow::ffi::{recommended_flags, Cache, Dataset, Vm};
use serde::{Deserialize, Serialize};

/// RandomX mode of the harness's hashers (match the pool's `randomx.mode` for a fair ratio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum HashMode {
    /// 256 MiB cache, slow hashes (~10x slower than fast).
    Light,
    /// 2 GiB dataset, built first on all hashing threads.
    Fast,
}

/// One share to find: hash `blob` with nonces `base, base+1, ...` until one meets `difficulty`.
#[derive(Debug, Clone)]
pub struct Work {
    /// The job's hashing blob.
    pub blob: Arc<[u8]>,
    /// Where the nonce goes.
    pub nonce_offset: usize,
    /// First nonce to try.
    pub base: u32,
    /// Nonces to try before giving up.
    pub tries: u32,
    /// Share difficulty to meet.
    pub difficulty: u64,
}

/// A found share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Nonce bytes as stored in the blob (and sent on the wire).
    pub nonce: [u8; 4],
    /// The RandomX hash.
    pub result: [u8; 32],
}

/// Hashing threads for one seed.
pub struct HashEngine {
    /// Mode.
    pub mode: HashMode,
    /// The seed the VMs are keyed with.
    pub seed: [u8; 32],
    /// Seconds spent building the cache (and dataset).
    pub build_s: f64,
    vms: Vec<Vm>,
}

impl HashEngine {
    /// Builds `threads` VMs for `seed` (light: about a second; fast: the dataset, tens of seconds).
    pub fn build(mode: HashMode, seed: [u8; 32], threads: usize) -> Result<HashEngine, String> {
        let started = Instant::now();
        let threads = threads.max(1);
        let flags = recommended_flags();
        let cache = Arc::new(Cache::new(flags, &seed, true).map_err(|e| e.to_string())?);
        let vms = match mode {
            HashMode::Light => (0..threads)
                .map(|_| Vm::light(flags, cache.clone()).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?,
            HashMode::Fast => {
                let dataset = Dataset::alloc(flags, true).map_err(|e| e.to_string())?;
                let total = Dataset::item_count();
                let next = AtomicU64::new(0);
                std::thread::scope(|scope| {
                    for _ in 0..threads {
                        scope.spawn(|| loop {
                            const CHUNK: u64 = 1 << 16;
                            let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                            if start >= total {
                                break;
                            }
                            dataset.init_items(&cache, start, CHUNK.min(total - start));
                        });
                    }
                });
                let dataset = Arc::new(dataset);
                (0..threads)
                    .map(|_| Vm::fast(flags, dataset.clone()).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(HashEngine { mode, seed, build_s: started.elapsed().as_secs_f64(), vms })
    }

    /// Hashing threads.
    pub fn threads(&self) -> usize {
        self.vms.len()
    }

    /// Solves every work item on all threads; `None` where no nonce of the range met the
    /// difficulty. Returns the results in order and the number of hashes computed.
    pub fn search(&mut self, work: &[Work]) -> (Vec<Option<Found>>, u64) {
        let threads = self.vms.len();
        let mut results: Vec<Option<Found>> = vec![None; work.len()];
        let hashes = AtomicU64::new(0);
        std::thread::scope(|scope| {
            let mut slots: Vec<&mut [Option<Found>]> =
                results.chunks_mut(work.len().div_ceil(threads).max(1)).collect();
            let chunks = work.chunks(work.len().div_ceil(threads).max(1));
            for ((vm, items), out) in self.vms.iter_mut().zip(chunks).zip(slots.drain(..)) {
                let hashes = &hashes;
                scope.spawn(move || {
                    let mut done = 0u64;
                    for (w, slot) in items.iter().zip(out.iter_mut()) {
                        let mut blob = w.blob.to_vec();
                        for k in 0..w.tries {
                            let nonce = w.base.wrapping_add(k).to_le_bytes();
                            blob[w.nonce_offset..w.nonce_offset + 4].copy_from_slice(&nonce);
                            let result = vm.hash(&blob);
                            done += 1;
                            if hash_difficulty(&Hash(result)) >= w.difficulty {
                                *slot = Some(Found { nonce, result });
                                break;
                            }
                        }
                    }
                    hashes.fetch_add(done, Ordering::Relaxed);
                });
            }
        });
        (results, hashes.into_inner())
    }

    /// Hashes `blob` with changing nonces on all threads for `duration`: the raw hash rate.
    /// Returns (hashes, wall seconds, CPU seconds the hashing threads got).
    pub fn raw(&mut self, blob: &[u8], nonce_offset: usize, duration: Duration) -> (u64, f64, f64) {
        let stop = AtomicBool::new(false);
        let hashes = AtomicU64::new(0);
        let cpu_us = AtomicU64::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for (t, vm) in self.vms.iter_mut().enumerate() {
                let (stop, hashes, cpu_us) = (&stop, &hashes, &cpu_us);
                let mut blob = blob.to_vec();
                scope.spawn(move || {
                    let cpu_start = thread_cpu_us();
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let nonce = ((t as u32) << 24 | n).to_le_bytes();
                        blob[nonce_offset..nonce_offset + 4].copy_from_slice(&nonce);
                        std::hint::black_box(vm.hash(&blob));
                        n = n.wrapping_add(1);
                        hashes.fetch_add(1, Ordering::Relaxed);
                    }
                    cpu_us.fetch_add(thread_cpu_us() - cpu_start, Ordering::Relaxed);
                });
            }
            std::thread::sleep(duration);
            stop.store(true, Ordering::Relaxed);
        });
        (hashes.into_inner(), started.elapsed().as_secs_f64(), cpu_us.into_inner() as f64 / 1e6)
    }
}

/// CPU time of the calling thread, µs.
fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// A made-up result that passes the pool's cheap difficulty check for `difficulty` (so the pool
/// has to run RandomX to find it wrong) without looking like a block: the top 64 bits sit just
/// under the share target, the rest is random.
pub fn fake_result(difficulty: u64, random: [u8; 32]) -> [u8; 32] {
    let mut out = random;
    let top = (u64::MAX / difficulty.max(1)).saturating_sub(1).max(1);
    out[24..].copy_from_slice(&top.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_results_meet_the_share_difficulty_and_no_more() {
        for d in [1u64, 2, 100, 5000, 1_000_000, 1 << 40] {
            for r in [[0u8; 32], [0xff; 32], [0x5a; 32]] {
                let h = hash_difficulty(&Hash(fake_result(d, r)));
                assert!(h >= d, "difficulty {d}: fake result only reaches {h}");
                assert!(h < d.saturating_mul(4), "difficulty {d}: fake result reaches {h}");
            }
        }
    }
}

//! Verifier throughput: RandomX hashes through the pool's verifier pool (queue, rayon task per
//! request, thread-local VMs, oneshot replies) against a raw loop with the same number of
//! threads, in the same run; prints both rates and their ratio.
//!
//! `cargo bench --bench verify` (light mode, 2 threads)
//! `PASTELLA_BENCH_MODE=fast PASTELLA_BENCH_THREADS=2 PASTELLA_BENCH_SECONDS=20 cargo bench --bench verify`
//!
//! The raw loop is randomx-rs's own VM in light mode; in fast mode (whose dataset randomx-rs
//! can only build on one thread) it is a plain loop over RandomX VMs on one shared dataset.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pastella_pool::pow::{ffi, Mode, PowConfig, PowEngine, Priority};
use randomx_rs::{RandomXCache, RandomXFlag, RandomXVM};

const SEED: [u8; 32] = [0x5e; 32];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn input(i: u64) -> Vec<u8> {
    let mut blob = vec![0x11u8; 76];
    blob[39..47].copy_from_slice(&i.to_le_bytes());
    blob
}

/// What a raw loop hashes with.
enum Raw {
    /// randomx-rs's safe API: one cache and VM per thread, no huge pages.
    SafeApi,
    /// The same C library through the pool's owners: one shared cache (light) or dataset
    /// (fast), with or without transparent huge pages.
    Shared(Arc<ffi::Cache>, Option<Arc<ffi::Dataset>>),
}

/// Hashes per second of `threads` threads each hashing in a loop for `seconds`.
fn raw_rate(raw: &Raw, threads: usize, seconds: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, count, ready) = (stop.clone(), count.clone(), ready.clone());
            let shared = match raw {
                Raw::SafeApi => None,
                Raw::Shared(cache, dataset) => Some((cache.clone(), dataset.clone())),
            };
            std::thread::spawn(move || {
                let mut local = 0u64;
                match shared {
                    None => {
                        let flags = RandomXFlag::get_recommended_flags();
                        let cache = RandomXCache::new(flags, &SEED).unwrap();
                        let vm = RandomXVM::new(flags, Some(cache), None).unwrap();
                        ready.wait();
                        while !stop.load(Ordering::Relaxed) {
                            vm.calculate_hash(&input(t as u64 * 1_000_000_000 + local)).unwrap();
                            local += 1;
                        }
                    }
                    Some((cache, dataset)) => {
                        let flags = ffi::recommended_flags();
                        let mut vm = match dataset {
                            Some(ds) => ffi::Vm::fast(flags, ds).unwrap(),
                            None => ffi::Vm::light(flags, cache).unwrap(),
                        };
                        ready.wait();
                        while !stop.load(Ordering::Relaxed) {
                            vm.hash(&input(t as u64 * 1_000_000_000 + local));
                            local += 1;
                        }
                    }
                }
                count.fetch_add(local, Ordering::Relaxed);
            })
        })
        .collect();
    ready.wait();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Hashes per second through the verifier pool, keeping it saturated for `seconds`.
fn pool_rate(engine: &PowEngine, threads: usize, seconds: u64) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // Warm every thread's VM first.
        let warm: Vec<_> = (0..threads * 4).map(|i| engine.verify(SEED, input(i as u64), Priority::Normal)).collect();
        for w in warm {
            w.await.unwrap();
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let mut in_flight = std::collections::VecDeque::new();
        let mut done = 0u64;
        let mut next = 1_000_000u64;
        // Keep a few requests per thread queued, like a busy pool.
        while Instant::now() < deadline {
            while in_flight.len() < threads * 4 {
                in_flight.push_back(engine.verify(SEED, input(next), Priority::Normal));
                next += 1;
            }
            if let Some(f) = in_flight.pop_front() {
                f.await.unwrap();
                done += 1;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        for f in in_flight {
            f.await.unwrap();
        }
        done as f64 / elapsed
    })
}

/// Pool and raw rates with the same threads and the same memory settings (best of two
/// alternating runs each).
fn pair(mode: Mode, threads: usize, seconds: u64, huge_pages: bool) -> (f64, f64) {
    let engine = PowEngine::new(PowConfig { mode, threads, dataset_threads: 0, huge_pages }).unwrap();
    engine.prepare(&[SEED]);
    let flags = ffi::recommended_flags();
    let cache = Arc::new(ffi::Cache::new(flags, &SEED, huge_pages).unwrap());
    let mut dataset = None;
    if mode == Mode::Fast {
        let started = Instant::now();
        while !engine.status().seeds.first().map(|s| s.fast_ready).unwrap_or(false) {
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("  pool dataset (huge pages {huge_pages}) ready in {:.1} s", started.elapsed().as_secs_f64());
        let started = Instant::now();
        let built = pastella_pool::pow::build_dataset(&cache, flags, huge_pages, threads, &|| false, &mut |_| {});
        dataset = Some(Arc::new(built.unwrap()));
        eprintln!("  raw dataset ready in {:.1} s", started.elapsed().as_secs_f64());
    }
    let raw_loop = Raw::Shared(cache, dataset);
    let (mut raw, mut pool) = (0.0f64, 0.0f64);
    for _ in 0..2 {
        raw = raw.max(raw_rate(&raw_loop, threads, seconds));
        pool = pool.max(pool_rate(&engine, threads, seconds));
    }
    (raw, pool)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs us without it: stay quick then.
    let benching = std::env::args().any(|a| a == "--bench");
    let mode = if env_or("PASTELLA_BENCH_MODE", "light".to_string()) == "fast" { Mode::Fast } else { Mode::Light };
    let threads: usize = env_or("PASTELLA_BENCH_THREADS", 2);
    let seconds: u64 = if benching { env_or("PASTELLA_BENCH_SECONDS", 10) } else { 1 };
    let label = format!("verify/{mode:?}/{threads}_threads").to_lowercase();
    let mut with = [0.0f64; 2];
    for (i, huge_pages) in [false, true].into_iter().enumerate() {
        eprintln!("{label}: measuring with transparent huge pages {}", if huge_pages { "on" } else { "off" });
        let (raw, pool) = pair(mode, threads, seconds, huge_pages);
        with[i] = pool;
        println!(
            "{label}/thp_{}: raw {raw:.1} H/s, pool {pool:.1} H/s, pool/raw = {:.3}",
            if huge_pages { "on" } else { "off" },
            pool / raw
        );
    }
    if mode == Mode::Light {
        let safe = raw_rate(&Raw::SafeApi, threads, seconds);
        println!("{label}/randomx-rs safe API loop (no huge pages): {safe:.1} H/s");
    }
    println!("{label}: transparent huge pages speed the pool up {:.2}x", with[1] / with[0]);
}

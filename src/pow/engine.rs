//! The verifier pool and the seed lifecycle.
//!
//! Requests go into two lock-free queues (block candidates first) and every request spawns one
//! rayon job that pops the most urgent request, so a claimed block never waits behind a backlog
//! of ordinary shares. Each verifier thread keeps its own VMs (one per live seed) in a
//! thread-local; nothing is hashed on an async thread. Replies go back on a oneshot channel,
//! out of order.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam::queue::SegQueue;
use tokio::sync::oneshot;

use super::ffi::{self, AllocError, Cache, Dataset, Vm};

/// Which RandomX mode the pool verifies in once a seed's dataset is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Build the 2 GiB dataset per seed and verify at full speed once it is ready.
    Fast,
    /// Only ever use the 256 MiB cache (small machines, tests): about 8x slower per hash.
    Light,
}

/// Engine settings (from the `randomx` config section).
#[derive(Debug, Clone)]
pub struct PowConfig {
    /// Fast or light mode.
    pub mode: Mode,
    /// Verifier threads; 0 = one per core.
    pub threads: usize,
    /// Threads building a dataset; 0 = one per core.
    pub dataset_threads: usize,
    /// Advise the kernel to back the cache and dataset with transparent huge pages.
    pub huge_pages: bool,
}

/// Urgency of a verification request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// An ordinary share.
    Normal,
    /// A claimed block candidate: jumps the queue.
    Block,
}

/// A computed hash with timing.
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    /// The RandomX hash of the input.
    pub hash: [u8; 32],
    /// True if a fast-mode VM computed it.
    pub fast: bool,
    /// Time spent queued before a verifier thread took it.
    pub waited: Duration,
    /// Time spent hashing (including VM creation, if this thread had none for the seed).
    pub hashing: Duration,
}

/// Why a hash could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    /// RandomX could not allocate memory.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The verifier pool could not be started.
    #[error("cannot start the verifier threads: {0}")]
    Threads(String),
    /// The engine was dropped before answering.
    #[error("the verifier pool stopped")]
    Stopped,
    /// A fault injected with [`PowEngine::fail_next`] (tests of the verifier-error path).
    #[error("verification failed (injected fault)")]
    Injected,
    /// The requester withdrew the request before a thread hashed it.
    #[error("verification cancelled before hashing")]
    Cancelled,
}

/// Asked by the verifier thread just before hashing: true drops the request unhashed.
pub type CancelCheck = Box<dyn Fn() -> bool + Send + Sync>;

/// State of one seed, as reported by [`PowEngine::status`].
#[derive(Debug, Clone)]
pub struct SeedStatus {
    /// The seed hash.
    pub seed: [u8; 32],
    /// The light cache is built.
    pub cache_ready: bool,
    /// The dataset is built and shares for this seed are verified in fast mode.
    pub fast_ready: bool,
    /// Dataset build progress, 0.0..=1.0.
    pub dataset_progress: f64,
}

/// Engine figures for metrics and the status page.
#[derive(Debug, Clone)]
pub struct EngineStatus {
    /// Live seeds, most recently announced first.
    pub seeds: Vec<SeedStatus>,
    /// Requests waiting for a verifier thread.
    pub queue_depth: usize,
    /// Verifier threads.
    pub threads: usize,
}

/// Process-unique ids for seeds, so thread-local VMs never confuse two engines' seeds.
static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

struct SeedState {
    seed: [u8; 32],
    epoch: u64,
    /// Built on first need under the lock, so concurrent requests wait for one build.
    cache: Mutex<Option<Arc<Cache>>>,
    cache_ready: AtomicBool,
    /// Published only when every item is initialised: the atomic light → fast switch. Taken
    /// away again when the seed stops being current or next (fast → light).
    dataset: ArcSwapOption<Dataset>,
    dataset_items_done: AtomicU64,
    /// Kept only for late shares (the previous current seed): never holds a dataset.
    light_only: AtomicBool,
    /// Evicted: stop building, let VMs go.
    retired: AtomicBool,
}

impl SeedState {
    fn new(seed: [u8; 32]) -> SeedState {
        SeedState {
            seed,
            epoch: NEXT_EPOCH.fetch_add(1, Ordering::Relaxed),
            cache: Mutex::new(None),
            cache_ready: AtomicBool::new(false),
            dataset: ArcSwapOption::empty(),
            dataset_items_done: AtomicU64::new(0),
            light_only: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        }
    }

    fn cache(&self, flags: u32, huge_pages: bool) -> Result<Arc<Cache>, AllocError> {
        let mut slot = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cache) = slot.as_ref() {
            return Ok(cache.clone());
        }
        let started = Instant::now();
        let cache = Arc::new(Cache::new(flags, &self.seed, huge_pages)?);
        tracing::info!(seed = %hex::encode(self.seed), ms = started.elapsed().as_millis() as u64, "RandomX light cache ready");
        *slot = Some(cache.clone());
        self.cache_ready.store(true, Ordering::Release);
        Ok(cache)
    }

    fn status(&self) -> SeedStatus {
        let total = Dataset::item_count() as f64;
        let fast_ready = self.dataset.load().is_some();
        SeedStatus {
            seed: self.seed,
            cache_ready: self.cache_ready.load(Ordering::Acquire),
            fast_ready,
            dataset_progress: if fast_ready {
                1.0
            } else {
                self.dataset_items_done.load(Ordering::Relaxed) as f64 / total
            },
        }
    }
}

struct Task {
    seed: [u8; 32],
    input: Vec<u8>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Verified, PowError>>,
    cancelled: Option<CancelCheck>,
}

struct Shared {
    flags: u32,
    config: PowConfig,
    threads: usize,
    /// Live seeds, most recently announced first (at most [`MAX_LIVE_SEEDS`]).
    seeds: Mutex<Vec<Arc<SeedState>>>,
    urgent: SegQueue<Task>,
    normal: SegQueue<Task>,
    queued: AtomicUsize,
    /// Seeds waiting for a background build, in order.
    builds: crossbeam::channel::Sender<Arc<SeedState>>,
    /// Requests still to fail with [`PowError::Injected`] (fault injection, normally 0).
    injected_failures: AtomicUsize,
}

/// Current, next and previous seed.
const MAX_LIVE_SEEDS: usize = 3;

/// What a live seed is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The current template's seed: cache, and in fast mode the dataset.
    Current,
    /// The next epoch's seed, announced before the switch: built ahead (dataset in fast mode),
    /// so the switch costs nothing.
    Next,
    /// The seed that was current until this announcement, for verifications still in flight:
    /// light only, dropped at the next announcement.
    Previous,
}

/// The seeds to keep after `announced` (current first, then the next epoch's seed if known),
/// given `live` (current first), with their roles; every other live seed is retired. Only
/// `Current` and `Next` may hold a dataset, so fast mode holds at most two datasets, and two only
/// between the next seed's announcement and the switch.
fn plan(live: &[[u8; 32]], announced: &[[u8; 32]]) -> Vec<([u8; 32], Role)> {
    let mut out: Vec<([u8; 32], Role)> = Vec::new();
    for seed in announced {
        if !out.iter().any(|(s, _)| s == seed) {
            out.push((*seed, if out.is_empty() { Role::Current } else { Role::Next }));
        }
    }
    out.truncate(2);
    if let Some(previous) = live.first().filter(|p| !out.iter().any(|(s, _)| s == *p)) {
        out.push((*previous, Role::Previous));
    }
    out
}

thread_local! {
    /// This verifier thread's VMs: (seed epoch, VM).
    static VMS: RefCell<Vec<(u64, Vm)>> = const { RefCell::new(Vec::new()) };
}

/// The RandomX verifier pool. Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct PowEngine {
    shared: Arc<Shared>,
    pool: Arc<rayon::ThreadPool>,
}

impl PowEngine {
    /// Starts the verifier threads and the background seed builder. No seed is built until
    /// [`PowEngine::prepare`] or the first request names one.
    pub fn new(config: PowConfig) -> Result<PowEngine, PowError> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = if config.threads == 0 { cores } else { config.threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rx-verify-{i}"))
            .build()
            .map_err(|e| PowError::Threads(e.to_string()))?;
        let (builds, build_queue) = crossbeam::channel::unbounded::<Arc<SeedState>>();
        let shared = Arc::new(Shared {
            flags: ffi::recommended_flags(),
            config,
            threads,
            seeds: Mutex::new(Vec::new()),
            urgent: SegQueue::new(),
            normal: SegQueue::new(),
            queued: AtomicUsize::new(0),
            builds,
            injected_failures: AtomicUsize::new(0),
        });
        let builder = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("rx-seed".into())
            .spawn(move || {
                // Ends when the engine (the only sender) is dropped.
                for state in build_queue {
                    match builder.upgrade() {
                        Some(shared) => shared.build_seed(&state),
                        None => break,
                    }
                }
            })
            .map_err(|e| PowError::Threads(e.to_string()))?;
        Ok(PowEngine { shared, pool: Arc::new(pool) })
    }

    /// Announces the seeds in use, most important first (the current template's seed, then the
    /// next epoch's seed when known). New seeds are built in the background (cache, then in
    /// fast mode the dataset); the seed that was current until now is kept, light only, for
    /// verifications in flight; every other seed is dropped with its memory (see [`plan`]).
    pub fn prepare(&self, seeds: &[[u8; 32]]) {
        let mut retired = Vec::new();
        let mut demoted = Vec::new();
        {
            let mut live = self.shared.seeds.lock().unwrap_or_else(|e| e.into_inner());
            let live_seeds: Vec<[u8; 32]> = live.iter().map(|s| s.seed).collect();
            let mut kept = Vec::with_capacity(MAX_LIVE_SEEDS);
            for (seed, role) in plan(&live_seeds, seeds) {
                let state = match live.iter().position(|s| s.seed == seed) {
                    Some(i) => live.remove(i),
                    None => {
                        let state = Arc::new(SeedState::new(seed));
                        // Receiver lives as long as the builder thread; a send error means the
                        // builder is gone, and requests will build the cache on demand.
                        let _ = self.shared.builds.send(state.clone());
                        state
                    }
                };
                let light_only = role == Role::Previous;
                if state.light_only.swap(light_only, Ordering::AcqRel) != light_only {
                    if light_only {
                        // Its dataset goes now (VMs drop theirs below); late shares use the cache.
                        state.dataset.store(None);
                        demoted.push(state.epoch);
                    }
                    // Rebuild what the new role needs: the cache (gone once a dataset was
                    // built), or the dataset of a seed announced again.
                    let _ = self.shared.builds.send(state.clone());
                }
                kept.push(state);
            }
            for old in live.drain(..) {
                old.retired.store(true, Ordering::Release);
                old.dataset.store(None);
                retired.push(old.epoch);
            }
            *live = kept;
        }
        if !retired.is_empty() || !demoted.is_empty() {
            // Let every verifier thread drop its VMs of retired seeds and its fast VMs of demoted
            // ones (frees the caches and datasets).
            self.pool.spawn_broadcast(move |_| {
                VMS.with(|vms| {
                    vms.borrow_mut()
                        .retain(|(epoch, vm)| !(retired.contains(epoch) || (demoted.contains(epoch) && vm.is_fast())))
                });
            });
        }
    }

    /// `(caches, datasets)` of RandomX memory allocated in this process right now (256 MiB and
    /// about 2 GiB each): what [`prepare`](Self::prepare) keeps bounded.
    pub fn memory_held(&self) -> (usize, usize) {
        ffi::allocated()
    }

    /// Computes the RandomX hash of `input` keyed by `seed` on a verifier thread.
    pub fn verify(
        &self,
        seed: [u8; 32],
        input: Vec<u8>,
        priority: Priority,
    ) -> impl std::future::Future<Output = Result<Verified, PowError>> + Send + 'static {
        self.verify_unless(seed, input, priority, None)
    }

    /// Like [`PowEngine::verify`], but the verifier thread first asks `cancelled` and answers
    /// [`PowError::Cancelled`] without hashing if it says so (work of a closed or banned
    /// session is dropped, not hashed).
    pub fn verify_unless(
        &self,
        seed: [u8; 32],
        input: Vec<u8>,
        priority: Priority,
        cancelled: Option<CancelCheck>,
    ) -> impl std::future::Future<Output = Result<Verified, PowError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let task = Task { seed, input, enqueued: Instant::now(), reply, cancelled };
        match priority {
            Priority::Block => self.shared.urgent.push(task),
            Priority::Normal => self.shared.normal.push(task),
        }
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        self.pool.spawn(move || shared.run_one());
        async move { answer.await.unwrap_or(Err(PowError::Stopped)) }
    }

    /// Fault injection: the next `n` requests fail with [`PowError::Injected`] instead of being
    /// hashed, the way an allocation failure would fail them. Lets tests drive the pool's
    /// verifier-error path; never called by the pool itself.
    pub fn fail_next(&self, n: usize) {
        self.shared.injected_failures.store(n, Ordering::Release);
    }

    /// Requests waiting for a verifier thread.
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Verifier thread count.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Seeds, their readiness and the queue depth.
    pub fn status(&self) -> EngineStatus {
        let live = self.shared.seeds.lock().unwrap_or_else(|e| e.into_inner());
        EngineStatus {
            seeds: live.iter().map(|s| s.status()).collect(),
            queue_depth: self.queue_depth(),
            threads: self.shared.threads,
        }
    }
}

impl Shared {
    fn seed_state(&self, seed: &[u8; 32]) -> Arc<SeedState> {
        let mut live = self.seeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = live.iter().find(|s| &s.seed == seed) {
            return state.clone();
        }
        // A seed nobody announced (e.g. a request before the first template): keep it as the
        // least important live seed; its cache is built by this request.
        let state = Arc::new(SeedState::new(*seed));
        live.push(state.clone());
        state
    }

    fn run_one(&self) {
        let Some(task) = self.urgent.pop().or_else(|| self.normal.pop()) else {
            return;
        };
        self.queued.fetch_sub(1, Ordering::Relaxed);
        let waited = task.enqueued.elapsed();
        if task.reply.is_closed() {
            return;
        }
        let injected =
            self.injected_failures.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
        if injected {
            let _ = task.reply.send(Err(PowError::Injected));
            return;
        }
        if task.cancelled.as_ref().is_some_and(|cancelled| cancelled()) {
            crate::metrics::verification_cancelled();
            let _ = task.reply.send(Err(PowError::Cancelled));
            return;
        }
        let started = Instant::now();
        let result = self.hash_on_this_thread(&task.seed, &task.input).map(|(hash, fast)| Verified {
            hash,
            fast,
            waited,
            hashing: started.elapsed(),
        });
        let _ = task.reply.send(result);
    }

    fn hash_on_this_thread(&self, seed: &[u8; 32], input: &[u8]) -> Result<([u8; 32], bool), PowError> {
        let state = self.seed_state(seed);
        VMS.with(|vms| {
            let mut vms = vms.borrow_mut();
            let dataset = state.dataset.load_full();
            let index = vms.iter().position(|(epoch, _)| *epoch == state.epoch);
            let index = match index {
                Some(i) if vms[i].1.is_fast() == dataset.is_some() => i,
                found => {
                    // No VM yet, a light VM whose seed just got its dataset, or a fast VM whose
                    // seed lost it (no longer current): switch.
                    let vm = match dataset {
                        Some(ds) => Vm::fast(self.flags, ds)?,
                        None => Vm::light(self.flags, state.cache(self.flags, self.config.huge_pages)?)?,
                    };
                    match found {
                        Some(i) => {
                            vms[i].1 = vm;
                            i
                        }
                        None => {
                            if vms.len() > MAX_LIVE_SEEDS {
                                vms.remove(0);
                            }
                            vms.push((state.epoch, vm));
                            vms.len() - 1
                        }
                    }
                }
            };
            let vm = &mut vms[index].1;
            Ok((vm.hash(input), vm.is_fast()))
        })
    }

    /// Background build of one seed: cache, then (fast mode) the dataset.
    fn build_seed(&self, state: &SeedState) {
        if state.retired.load(Ordering::Acquire) {
            return;
        }
        let cache = match state.cache(self.flags, self.config.huge_pages) {
            Ok(cache) => cache,
            Err(e) => {
                tracing::error!(seed = %hex::encode(state.seed), "RandomX cache: {e}");
                return;
            }
        };
        if self.config.mode != Mode::Fast || state.light_only.load(Ordering::Acquire) || state.dataset.load().is_some()
        {
            return;
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = if self.config.dataset_threads == 0 { cores } else { self.config.dataset_threads };
        let seed_hex = hex::encode(state.seed);
        tracing::info!(seed = %seed_hex, threads, "building RandomX dataset (2 GiB) in the background; verifying in light mode meanwhile");
        let started = Instant::now();
        let total = Dataset::item_count();
        let mut last_logged = 0u64;
        let mut progress = |done: u64| {
            state.dataset_items_done.store(done, Ordering::Relaxed);
            let decile = done * 10 / total;
            if decile > last_logged && decile < 10 {
                last_logged = decile;
                tracing::info!(seed = %seed_hex, percent = decile * 10, "RandomX dataset build");
            }
        };
        let retired = || state.retired.load(Ordering::Acquire) || state.light_only.load(Ordering::Acquire);
        match build_dataset(&cache, self.flags, self.config.huge_pages, threads, &retired, &mut progress) {
            Ok(dataset) if !retired() => {
                state.dataset.store(Some(Arc::new(dataset)));
                if state.light_only.load(Ordering::Acquire) {
                    // Demoted while being published: no dataset for a previous seed.
                    state.dataset.store(None);
                    return;
                }
                // Fast VMs do not need the cache; light VMs still holding it keep it alive.
                *state.cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(
                    seed = %seed_hex,
                    seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                    "RandomX dataset ready: verifying in fast mode"
                );
            }
            Ok(_) => {
                tracing::info!(seed = %seed_hex, "RandomX dataset build abandoned: seed no longer current or next")
            }
            Err(e) => tracing::error!(seed = %seed_hex, "RandomX dataset: {e}; staying in light mode"),
        }
    }
}

/// Builds a full dataset from `cache` on `threads` threads, in chunks, calling `progress` with
/// the number of items done and stopping early when `cancelled` says so.
///
/// Builder threads run at a lower CPU priority (nice 10) so that share verification stays
/// responsive while a dataset is built on a busy pool; on an idle machine it changes nothing.
pub fn build_dataset(
    cache: &Cache,
    flags: u32,
    huge_pages: bool,
    threads: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
    progress: &mut dyn FnMut(u64),
) -> Result<Dataset, AllocError> {
    const CHUNK: u64 = 1 << 16;
    let dataset = Dataset::alloc(flags, huge_pages)?;
    let total = Dataset::item_count();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let workers_left = AtomicUsize::new(threads);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                lower_thread_priority(10);
                loop {
                    let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                    if start >= total || cancelled() {
                        break;
                    }
                    let count = CHUNK.min(total - start);
                    dataset.init_items(cache, start, count);
                    done.fetch_add(count, Ordering::Relaxed);
                }
                workers_left.fetch_sub(1, Ordering::Release);
            });
        }
        while workers_left.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_millis(200));
            progress(done.load(Ordering::Relaxed));
        }
    });
    progress(done.load(Ordering::Relaxed));
    Ok(dataset)
}

/// Lowers the calling thread's scheduling priority (Linux: per-thread nice). Best effort.
fn lower_thread_priority(nice: i32) {
    // SAFETY: gettid and setpriority have no memory-safety preconditions.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn light_engine(threads: usize) -> PowEngine {
        PowEngine::new(PowConfig { mode: Mode::Light, threads, dataset_threads: 1, huge_pages: true }).unwrap()
    }

    fn key(text: &str) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..text.len()].copy_from_slice(text.as_bytes());
        k
    }

    #[tokio::test]
    async fn verifies_in_light_mode_and_reports_status() {
        let engine = light_engine(2);
        let seed = key("seed one");
        engine.prepare(&[seed]);
        let a = engine.verify(seed, b"This is a test".to_vec(), Priority::Normal).await.unwrap();
        let b = engine.verify(seed, b"This is a test".to_vec(), Priority::Block).await.unwrap();
        assert_eq!(a.hash, b.hash);
        assert!(!a.fast);
        let mut direct = crate::pow::Hasher::light(&seed).unwrap();
        assert_eq!(direct.hash(b"This is a test"), a.hash);
        let status = engine.status();
        assert_eq!(status.seeds.len(), 1);
        assert!(status.seeds[0].cache_ready);
        assert!(!status.seeds[0].fast_ready);
        assert_eq!(status.queue_depth, 0);
    }

    #[tokio::test]
    async fn known_answer_through_the_pool_with_an_unannounced_seed() {
        let engine = light_engine(1);
        // The official vector's key is 12 bytes, not a 32-byte seed: use the Hasher for it and
        // check the pool agrees with the Hasher on a 32-byte seed nobody announced.
        let mut hasher = crate::pow::Hasher::light(b"test key 000").unwrap();
        assert_eq!(
            hex::encode(hasher.hash(b"This is a test")),
            "639183aae1bf4c9a35884cb46b09cad9175f04efd7684e7262a0ac1c2f0b4e3f"
        );
        let seed = key("never announced");
        let got = engine.verify(seed, vec![1, 2, 3], Priority::Normal).await.unwrap();
        assert_eq!(got.hash, crate::pow::Hasher::light(&seed).unwrap().hash(&[1, 2, 3]));
    }

    #[tokio::test]
    async fn block_candidates_jump_the_queue() {
        let engine = light_engine(1);
        let seed = key("queue");
        // Warm the only thread's VM so queue order, not VM creation, decides.
        engine.verify(seed, vec![0], Priority::Normal).await.unwrap();
        let order = Arc::new(AtomicUsize::new(0));
        let mut normal = Vec::new();
        for i in 0..8u8 {
            let fut = engine.verify(seed, vec![i], Priority::Normal);
            let order = order.clone();
            normal.push(tokio::spawn(async move {
                fut.await.unwrap();
                order.fetch_add(1, Ordering::SeqCst)
            }));
        }
        let urgent = engine.verify(seed, vec![99], Priority::Block);
        let order2 = order.clone();
        let urgent = tokio::spawn(async move {
            urgent.await.unwrap();
            order2.fetch_add(1, Ordering::SeqCst)
        });
        let urgent_rank = urgent.await.unwrap();
        for n in normal {
            n.await.unwrap();
        }
        // At most one ordinary share (already taken by the thread) finishes before the block.
        assert!(urgent_rank <= 1, "block candidate finished {urgent_rank}th");
    }

    #[tokio::test]
    async fn cancelled_requests_are_answered_without_hashing() {
        let engine = light_engine(1);
        let seed = key("cancel");
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let check: CancelCheck = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            true
        });
        let withdrawn = engine.verify_unless(seed, vec![2], Priority::Normal, Some(check));
        assert_eq!(withdrawn.await.unwrap_err(), PowError::Cancelled);
        assert_eq!(asked.load(Ordering::SeqCst), 1, "asked once, just before hashing");
        // Nothing was hashed for that seed: no thread built a VM (the cache was never needed).
        assert!(!engine.status().seeds.iter().any(|s| s.seed == seed && s.cache_ready));
        let kept = engine.verify_unless(seed, vec![3], Priority::Normal, Some(Box::new(|| false)));
        assert!(kept.await.is_ok());
    }

    #[tokio::test]
    async fn prepare_keeps_current_next_and_previous_only() {
        let engine = light_engine(1);
        let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"));
        engine.prepare(&[a, a]);
        engine.prepare(&[b, c]);
        engine.prepare(&[c, d]);
        let seeds: Vec<[u8; 32]> = engine.status().seeds.iter().map(|s| s.seed).collect();
        assert_eq!(seeds, vec![c, d, b]);
    }

    #[test]
    fn plan_holds_at_most_two_datasets_and_two_only_around_an_epoch_change() {
        let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"));
        // What the job distributor announces template after template across three epoch
        // changes: [current, next] with next == current except just before a switch.
        let announcements =
            [[a, a], [a, a], [a, b], [b, b], [b, b], [b, b], [b, c], [c, c], [c, c], [c, d], [d, d], [d, d]];
        let mut live: Vec<[u8; 32]> = Vec::new();
        for announced in announcements {
            let kept = plan(&live, &announced);
            let datasets = kept.iter().filter(|(_, r)| *r != Role::Previous).count();
            let switching = announced[0] != announced[1];
            assert_eq!(datasets, if switching { 2 } else { 1 }, "{announced:?}");
            assert!(kept.len() <= MAX_LIVE_SEEDS);
            assert_eq!(kept[0], (announced[0], Role::Current));
            live = kept.iter().map(|(s, _)| *s).collect();
        }
        // The old current seed stays (light only) for one announcement, then goes.
        let kept = plan(&[b, c], &[c, c]);
        assert_eq!(kept, vec![(c, Role::Current), (b, Role::Previous)]);
        let kept = plan(&[c, b], &[c, c]);
        assert_eq!(kept, vec![(c, Role::Current)]);
        // A reorg back to the previous seed makes it current again.
        assert_eq!(plan(&[c, b], &[b, b]), vec![(b, Role::Current), (c, Role::Previous)]);
    }

    #[tokio::test]
    async fn a_previous_seed_still_verifies_in_light_mode() {
        let engine = light_engine(1);
        let (a, b) = (key("previous"), key("b"));
        engine.prepare(&[a, b]);
        engine.prepare(&[b, b]);
        let seeds: Vec<[u8; 32]> = engine.status().seeds.iter().map(|s| s.seed).collect();
        assert_eq!(seeds, vec![b, a], "the previous seed is kept for late shares");
        let v = engine.verify(a, vec![1, 2, 3], Priority::Normal).await.unwrap();
        assert_eq!(v.hash, crate::pow::Hasher::light(&a).unwrap().hash(&[1, 2, 3]));
        engine.prepare(&[b, b]);
        let seeds: Vec<[u8; 32]> = engine.status().seeds.iter().map(|s| s.seed).collect();
        assert_eq!(seeds, vec![b], "and dropped at the next announcement");
    }
}

//! Thin owners of RandomX's C objects (cache, dataset, VM).
//!
//! randomx-rs builds and links the RandomX library, but its safe API initialises a dataset on one
//! thread only (50-90 s) and its objects are neither `Send` nor `Sync`. We declare the C functions
//! it links and wrap them here; this file is the only `unsafe` in the pool.
//!
//! Soundness: a cache and a dataset are written only while they are being initialised (before any
//! VM uses them) and are read-only afterwards, and RandomX allows any number of VMs to read one
//! cache or dataset concurrently, so sharing them across threads after initialisation is sound.
//! Dataset initialisation of *disjoint* item ranges from several threads is what RandomX's own
//! miners do. A VM has mutable scratchpad state: it is `Send` but never shared (`!Sync`).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use libc::{c_uint, c_ulong, c_void};

/// Size of the RandomX cache in bytes (`RANDOMX_ARGON_MEMORY` KiB).
pub const CACHE_BYTES: usize = 262_144 * 1024;
/// Size of one dataset item in bytes.
pub const DATASET_ITEM_BYTES: usize = 64;

/// RandomX flag: use the full dataset (fast mode).
pub const FLAG_FULL_MEM: u32 = 4;

#[repr(C)]
struct RawCache {
    _opaque: [u8; 0],
}
#[repr(C)]
struct RawDataset {
    _opaque: [u8; 0],
}
#[repr(C)]
struct RawVm {
    _opaque: [u8; 0],
}

extern "C" {
    fn randomx_alloc_cache(flags: c_uint) -> *mut RawCache;
    fn randomx_init_cache(cache: *mut RawCache, key: *const c_void, key_size: usize);
    fn randomx_release_cache(cache: *mut RawCache);
    fn randomx_alloc_dataset(flags: c_uint) -> *mut RawDataset;
    fn randomx_dataset_item_count() -> c_ulong;
    fn randomx_init_dataset(dataset: *mut RawDataset, cache: *mut RawCache, start: c_ulong, count: c_ulong);
    fn randomx_get_dataset_memory(dataset: *mut RawDataset) -> *mut c_void;
    fn randomx_release_dataset(dataset: *mut RawDataset);
    fn randomx_create_vm(flags: c_uint, cache: *mut RawCache, dataset: *mut RawDataset) -> *mut RawVm;
    fn randomx_destroy_vm(vm: *mut RawVm);
    fn randomx_calculate_hash(vm: *mut RawVm, input: *const c_void, size: usize, output: *mut c_void);
}

/// Why RandomX could not give us an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// `randomx_alloc_*` or `randomx_create_vm` returned NULL (usually out of memory).
    #[error("RandomX could not allocate the {0} (out of memory?)")]
    Failed(&'static str),
}

/// The flags RandomX recommends for this CPU (JIT, hardware AES, Argon2 variant). Never
/// includes large pages: with none configured RandomX "succeeds" and the first hash segfaults.
pub fn recommended_flags() -> u32 {
    randomx_rs::RandomXFlag::get_recommended_flags().bits()
}

/// Asks the kernel for transparent huge pages on `[ptr, ptr + len)` (rounded inwards to 2 MiB).
/// Must be called before the memory is first touched to have an effect; failure is harmless.
fn advise_huge_pages(ptr: *mut c_void, len: usize) {
    const HUGE: usize = 2 * 1024 * 1024;
    let start = (ptr as usize).div_ceil(HUGE) * HUGE;
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: madvise only changes paging hints for memory this process owns.
        unsafe {
            libc::madvise(start as *mut c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// Caches allocated in this process and not yet released.
static CACHES: AtomicUsize = AtomicUsize::new(0);
/// Datasets allocated in this process (built or being built) and not yet released.
static DATASETS: AtomicUsize = AtomicUsize::new(0);

/// `(caches, datasets)` allocated in this process right now: the RandomX memory held, 256 MiB
/// per cache and about 2 GiB per dataset.
pub fn allocated() -> (usize, usize) {
    (CACHES.load(Ordering::Relaxed), DATASETS.load(Ordering::Relaxed))
}

/// An initialised RandomX cache (256 MiB), keyed by one seed. Read-only once built.
pub struct Cache {
    ptr: NonNull<RawCache>,
}

// SAFETY: see the module docs; the cache is immutable after `Cache::new` returns.
unsafe impl Send for Cache {}
// SAFETY: as above.
unsafe impl Sync for Cache {}

impl Cache {
    /// Allocates and initialises a cache for `key` on the calling thread (about one second).
    pub fn new(flags: u32, key: &[u8], huge_pages: bool) -> Result<Cache, AllocError> {
        // SAFETY: plain allocation; checked for NULL below.
        let raw = unsafe { randomx_alloc_cache(flags) };
        let ptr = NonNull::new(raw).ok_or(AllocError::Failed("cache"))?;
        CACHES.fetch_add(1, Ordering::Relaxed);
        if huge_pages {
            // `randomx_cache` is a standard-layout struct whose first member is its memory
            // pointer (RandomX dataset.hpp); we read it only to advise the kernel.
            // SAFETY: the struct was just allocated and is at least pointer-sized.
            let memory = unsafe { *(ptr.as_ptr() as *const *mut c_void) };
            if !memory.is_null() {
                advise_huge_pages(memory, CACHE_BYTES);
            }
        }
        // SAFETY: valid cache, key slice valid for its length.
        unsafe { randomx_init_cache(ptr.as_ptr(), key.as_ptr() as *const c_void, key.len()) };
        Ok(Cache { ptr })
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: every VM using this cache holds an `Arc<Cache>`, so none is left.
        unsafe { randomx_release_cache(self.ptr.as_ptr()) }
        CACHES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A RandomX dataset (about 2 GiB). Initialised in ranges, then read-only.
pub struct Dataset {
    ptr: NonNull<RawDataset>,
}

// SAFETY: see the module docs.
unsafe impl Send for Dataset {}
// SAFETY: concurrent `init_items` calls write disjoint ranges; afterwards it is read-only.
unsafe impl Sync for Dataset {}

impl Dataset {
    /// Number of 64-byte items in a dataset.
    pub fn item_count() -> u64 {
        // SAFETY: pure function of compile-time constants.
        unsafe { randomx_dataset_item_count() as u64 }
    }

    /// Allocates an uninitialised dataset.
    pub fn alloc(flags: u32, huge_pages: bool) -> Result<Dataset, AllocError> {
        // SAFETY: plain allocation; checked for NULL below.
        let raw = unsafe { randomx_alloc_dataset(flags) };
        let ptr = NonNull::new(raw).ok_or(AllocError::Failed("dataset"))?;
        DATASETS.fetch_add(1, Ordering::Relaxed);
        if huge_pages {
            // SAFETY: valid dataset.
            let memory = unsafe { randomx_get_dataset_memory(ptr.as_ptr()) };
            advise_huge_pages(memory, Self::item_count() as usize * DATASET_ITEM_BYTES);
        }
        Ok(Dataset { ptr })
    }

    /// Initialises items `start..start + count` from `cache`.
    ///
    /// Callers must give concurrent calls disjoint ranges and create no VM on this dataset until
    /// every item is initialised (the engine publishes the dataset only then).
    pub fn init_items(&self, cache: &Cache, start: u64, count: u64) {
        // SAFETY: valid objects; range within item_count is the caller's contract, and RandomX
        // writes only the items of the range.
        unsafe { randomx_init_dataset(self.ptr.as_ptr(), cache.ptr.as_ptr(), start as c_ulong, count as c_ulong) }
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        // SAFETY: every VM using this dataset holds an `Arc<Dataset>`, so none is left.
        unsafe { randomx_release_dataset(self.ptr.as_ptr()) }
        DATASETS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a VM reads from, held only to keep that memory alive as long as the VM.
enum Backing {
    Light { _cache: Arc<Cache> },
    Fast { _dataset: Arc<Dataset> },
}

/// One RandomX virtual machine (2 MiB scratchpad). Owned by one thread at a time.
pub struct Vm {
    ptr: NonNull<RawVm>,
    backing: Backing,
}

// SAFETY: a VM may move between threads; it is never shared (no Sync).
unsafe impl Send for Vm {}

impl Vm {
    /// A light-mode VM on `cache`.
    pub fn light(flags: u32, cache: Arc<Cache>) -> Result<Vm, AllocError> {
        let flags = flags & !FLAG_FULL_MEM;
        // SAFETY: valid initialised cache, kept alive by `backing`.
        let raw = unsafe { randomx_create_vm(flags, cache.ptr.as_ptr(), std::ptr::null_mut()) };
        let ptr = NonNull::new(raw).ok_or(AllocError::Failed("light VM"))?;
        Ok(Vm { ptr, backing: Backing::Light { _cache: cache } })
    }

    /// A fast-mode VM on a fully initialised `dataset`.
    pub fn fast(flags: u32, dataset: Arc<Dataset>) -> Result<Vm, AllocError> {
        let flags = flags | FLAG_FULL_MEM;
        // SAFETY: valid, fully initialised dataset (the engine's contract), kept alive by `backing`.
        let raw = unsafe { randomx_create_vm(flags, std::ptr::null_mut(), dataset.ptr.as_ptr()) };
        let ptr = NonNull::new(raw).ok_or(AllocError::Failed("fast VM"))?;
        Ok(Vm { ptr, backing: Backing::Fast { _dataset: dataset } })
    }

    /// True if this VM hashes from the full dataset.
    pub fn is_fast(&self) -> bool {
        matches!(self.backing, Backing::Fast { .. })
    }

    /// The RandomX hash of `input` (any length, including empty).
    pub fn hash(&mut self, input: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        // SAFETY: valid VM used by one thread (&mut self); input/output valid for their lengths.
        unsafe {
            randomx_calculate_hash(
                self.ptr.as_ptr(),
                input.as_ptr() as *const c_void,
                input.len(),
                out.as_mut_ptr() as *mut c_void,
            )
        };
        out
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // SAFETY: valid VM, dropped once; its backing outlives this call.
        unsafe { randomx_destroy_vm(self.ptr.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_light_mode() {
        let flags = recommended_flags();
        let cache = Arc::new(Cache::new(flags, b"test key 000", true).unwrap());
        let mut vm = Vm::light(flags, cache).unwrap();
        assert!(!vm.is_fast());
        assert_eq!(
            hex::encode(vm.hash(b"This is a test")),
            "639183aae1bf4c9a35884cb46b09cad9175f04efd7684e7262a0ac1c2f0b4e3f"
        );
    }
}

//! RandomX proof of work: seed lifecycle (light cache, fast dataset) and the verifier pool.
//!
//! - [`ffi`]: owners of RandomX's C objects; the only `unsafe` code in the pool.
//! - [`engine`]: [`PowEngine`], a rayon pool of verifier threads (one VM per thread and seed)
//!   with a priority lane for block candidates; seeds start in light mode at once and switch
//!   to fast mode atomically when their dataset, built in the background on all cores, is ready.
//! - [`Hasher`]: one VM for one seed on the caller's thread, for miners and tests.
//!
//! This module depends on nothing else in the crate: seeds and hashes are plain `[u8; 32]`.

pub mod engine;
pub mod ffi;

use std::sync::Arc;

pub use engine::{
    build_dataset, CancelCheck, EngineStatus, Mode, PowConfig, PowEngine, PowError, Priority, SeedStatus, Verified,
};

/// A single RandomX VM for one seed, hashing on the calling thread. Used by test miners, the
/// load generator and benchmarks; the pool itself verifies through [`PowEngine`].
pub struct Hasher {
    vm: ffi::Vm,
}

impl Hasher {
    /// A light-mode hasher for `seed` (builds a 256 MiB cache, about a second).
    pub fn light(seed: &[u8]) -> Result<Hasher, PowError> {
        let flags = ffi::recommended_flags();
        let cache = Arc::new(ffi::Cache::new(flags, seed, true)?);
        Ok(Hasher { vm: ffi::Vm::light(flags, cache)? })
    }

    /// A fast-mode hasher for `seed`: builds the 2 GiB dataset on `threads` threads first.
    pub fn fast(seed: &[u8], threads: usize) -> Result<Hasher, PowError> {
        let flags = ffi::recommended_flags();
        let cache = ffi::Cache::new(flags, seed, true)?;
        let dataset = Arc::new(engine::build_dataset(&cache, flags, true, threads.max(1), &|| false, &mut |_| {})?);
        Ok(Hasher { vm: ffi::Vm::fast(flags, dataset)? })
    }

    /// The RandomX hash of `input`.
    pub fn hash(&mut self, input: &[u8]) -> [u8; 32] {
        self.vm.hash(input)
    }
}

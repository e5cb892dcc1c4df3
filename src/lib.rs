//! # pastella-pool
//!
//! A mining pool server for Pastella (PAS), a RandomX proof-of-work coin.
//!
//! The crate map (dependencies point downwards only):
//!
//! - [`chain`]: Pastella knowledge as pure functions: varints, keccak, addresses, block blobs,
//!   templates, difficulty and targets, the seed rule. No I/O.
//! - [`config`]: the typed `config.json` (seed and old-pool formats); every error names its JSON path.
pub mod chain;
pub mod config;
pub mod pow;

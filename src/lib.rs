//! # pastella-pool
//!
//! A mining pool server for Pastella (PAS), a RandomX proof-of-work coin.
//!
//! The crate map (dependencies point downwards only):
//!
//! - [`chain`]: Pastella knowledge as pure functions: varints, keccak, addresses, block blobs,
//!   templates, difficulty and targets, the seed rule. No I/O.
//! - [`config`]: the typed `config.json` (seed and old-pool formats); every error names its JSON path.
//! - [`node`]: HTTP clients for Pastellad (JSON-RPC) and the wallet API; the only code speaking HTTP to them.
//! - [`devnet`]: a simulated Pastellad and wallet API on loopback, real wire formats, for tests and trials.
pub mod accounting;
pub mod api;
pub mod app;
pub mod chain;
pub mod config;
pub mod devnet;
pub mod jobs;
pub mod metrics;
pub mod node;
pub mod pow;
pub mod store;
pub mod stratum;

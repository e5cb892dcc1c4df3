//! # pastella-pool
//!
//! A mining pool server for Pastella (PAS), a RandomX proof-of-work coin: stratum for xmrig
//! and compatible miners, RandomX share verification, PPLNS accounting, crash-safe payouts,
//! the old Node.js pool's stats API and Redis keys, Prometheus metrics, and a devnet.
//!
//! The crate map (dependencies point downwards only):
//!
//! - [`chain`]: Pastella knowledge as pure functions: varints, keccak, addresses, block blobs,
//!   templates, difficulty and targets, the seed rule. No I/O.
//! - [`pow`]: RandomX: seed lifecycle (light cache, fast dataset) and the verifier pool.
//! - [`config`]: the typed `config.json` (seed and old-pool formats); every error names its JSON path.
//! - [`node`]: HTTP clients for Pastellad (JSON-RPC) and the wallet API; the only code speaking HTTP to them.
//! - [`store`]: Redis; the only code that knows key names, value formats and Lua scripts.
//! - [`jobs`]: the job distributor (template polling, fan-out) and block submission (written to
//!   Redis first, resubmitted until resolved, one block per template height).
//! - [`stratum`]: port supervisors and miner sessions; protocol, login, vardiff, trust, bans.
//! - [`accounting`]: the share ledger, the reward split, the leader lease, the block unlocker,
//!   the payment processor, and the check of a block's stored payout (`verify-block`).
//! - [`api`]: the stats API, admin routes, status page, `/metrics`, `/health`.
//! - [`metrics`]: every metric name, in one place.
//! - [`app`]: wiring; builds every actor from the config.
//! - [`reload`]: SIGHUP reload: re-reads the config, applies what can change live, names the rest.
//! - [`upgrade`]: zero-downtime upgrade: the listening sockets handed to a new process (fd
//!   passing over a unix socket), the old one drained.
//! - [`log_format`]: the log line format (ban lines that fail2ban can read).
//! - [`fuzz`]: fuzz harnesses (stable toolchain) for every parser fed by the network.
//! - [`devnet`]: a simulated Pastellad and wallet API on loopback, real wire formats, for tests and trials.

pub mod accounting;
pub mod api;
pub mod app;
pub mod chain;
pub mod config;
pub mod devnet;
pub mod fuzz;
pub mod jobs;
pub mod log_format;
pub mod metrics;
pub mod node;
pub mod pow;
pub mod reload;
pub mod store;
pub mod stratum;
pub mod upgrade;

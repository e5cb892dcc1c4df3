//! Pastella chain knowledge: pure functions and types, no I/O, no async.
//!
//! Everything here is pinned by the byte-exact vectors of the spec (§12) in the unit tests
//! beside each file and in `tests/chain_vectors.rs`.
//!
//! - [`varint`]: CryptoNote varints (7 bits per byte, little-endian groups).
//! - [`keccak`]: original Keccak-256 (`cn_fast_hash`), not SHA3.
//! - [`tree`]: the CryptoNote transaction tree hash and the coinbase merkle branch.
//! - [`base58`], [`address`]: block Base58 and the `PAS1…` address codec with the daemon's rules.
//! - [`block`]: block blob parse/serialize, hashing blob, block id.
//! - [`template`]: an immutable, pre-split block template for building miner jobs fast.
//! - [`difficulty`]: hash → difficulty with exact 256-bit math, share targets.
//! - [`seed`]: the RandomX seed-height rule.
//! - [`params`]: network constants and the emission schedule.

pub mod address;
pub mod base58;
pub mod block;
pub mod difficulty;
pub mod keccak;
pub mod lwma;
pub mod params;
pub mod seed;
pub mod template;
pub mod tree;
pub mod varint;

mod hash;

pub use address::{Address, AddressError};
pub use block::{Block, BlockHeader, BlockLayout, Coinbase, ParseError, TxOut};
pub use hash::{Hash, HexError};
pub use template::{HashingBlob, Template, TemplateError};

//! Network constants and the emission schedule (spec §5, CORE `PastellaConfig.h`).

use super::block::{Block, BlockHeader, Coinbase};
use super::Hash;

/// Atomic units per PAS (8 decimals).
pub const COIN: u64 = 100_000_000;
/// Target block time in seconds.
pub const DIFFICULTY_TARGET: u64 = 30;
/// Coinbase outputs unlock this many blocks after their block (`unlock_time = height + 10`).
pub const MINED_MONEY_UNLOCK_WINDOW: u64 = 10;
/// Base block reward before any halving, atomic units.
pub const BLOCK_REWARD: u64 = 4 * COIN;
/// Blocks between halvings.
pub const HALVING_INTERVAL: u64 = 1_051_200;
/// Number of halvings defined; the reward stays at the tail value after the last one.
pub const HALVINGS: u64 = 10;
/// Minimum transaction fee, atomic units.
pub const MINIMUM_FEE: u64 = 1000;
/// Maximum outputs in one transaction, change included.
pub const MAX_TX_OUTPUTS: usize = 90;
/// Difficulty used until the LWMA window has enough blocks.
pub const STARTING_DIFFICULTY: u64 = 1000;
/// A block timestamp may be at most this far in the future.
pub const FUTURE_TIME_LIMIT: u64 = 6 * DIFFICULTY_TARGET;
/// Timestamps must not be below the median of this many previous blocks.
pub const TIMESTAMP_CHECK_WINDOW: usize = 11;

/// `GENESIS_COINBASE_TX_HEX`.
pub const GENESIS_COINBASE_HEX: &str = "010001ff00018080d49ca7981202004a339087cd0d26f4923abe48fac9a50f948b5e4b96d4c05ebfb4d18adb0a232101c18acd318998cdff799152afa2fd8a17c9b77cc4cc0eaed27e7dfe58e4143f09";
/// `GENESIS_BLOCK_TIMESTAMP`.
pub const GENESIS_TIMESTAMP: u64 = 1_772_132_400;
/// Nonce of the genesis block.
pub const GENESIS_NONCE: u32 = 70;
/// Id of the genesis block, also the RandomX seed for heights 0..=2112.
pub const GENESIS_ID_HEX: &str = "c5b9f61b36604388205be8d6a9d1c0f9fde7f90f70fefce3e69e9353a652b7c7";

/// The genesis block id.
pub fn genesis_id() -> Hash {
    // The constant is valid hex; covered by tests.
    Hash::from_hex(GENESIS_ID_HEX).unwrap_or_default()
}

/// The genesis block, built from the constants above.
pub fn genesis_block() -> Block {
    let mut blob = vec![1u8, 0];
    super::varint::write(&mut blob, GENESIS_TIMESTAMP);
    blob.extend_from_slice(&[0u8; 32]);
    blob.extend_from_slice(&GENESIS_NONCE.to_le_bytes());
    blob.extend_from_slice(&hex::decode(GENESIS_COINBASE_HEX).unwrap_or_default());
    blob.push(0);
    match Block::parse(&blob) {
        Ok((block, _)) => block,
        // Unreachable with the constants above (pinned by tests); keep a well-formed value.
        Err(_) => Block {
            header: BlockHeader {
                major_version: 1,
                minor_version: 0,
                timestamp: GENESIS_TIMESTAMP,
                prev_id: Hash::ZERO,
                nonce: GENESIS_NONCE,
            },
            coinbase: Coinbase { unlock_time: 0, height: 0, outputs: Vec::new(), extra: Vec::new() },
            tx_hashes: Vec::new(),
        },
    }
}

/// Base reward of the block at `height` (fees excluded): 4 PAS halved once per
/// [`HALVING_INTERVAL`] passed, at most [`HALVINGS`] times (tail 0.00390625 PAS).
pub fn base_reward(height: u64) -> u64 {
    let level = (1..=HALVINGS).filter(|i| HALVING_INTERVAL * i < height).count() as u32;
    BLOCK_REWARD >> level
}

/// Block major version for a block index (`UPGRADE_HEIGHT_V2 = 1`: index 0-1 are v1).
pub fn major_version(height: u64) -> u8 {
    if height >= 2 {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_id_constant_matches_block() {
        assert_eq!(genesis_block().id(), genesis_id());
        assert_eq!(genesis_id().to_hex(), GENESIS_ID_HEX);
    }

    #[test]
    fn emission_schedule() {
        assert_eq!(base_reward(1), 400_000_000);
        assert_eq!(base_reward(HALVING_INTERVAL), 400_000_000);
        assert_eq!(base_reward(HALVING_INTERVAL + 1), 200_000_000);
        assert_eq!(base_reward(10 * HALVING_INTERVAL + 1), 390_625);
        assert_eq!(base_reward(u64::MAX / 2), 390_625);
        assert_eq!(major_version(1), 1);
        assert_eq!(major_version(2), 2);
    }
}

//! The RandomX seed-height rule (spec §3.2, CORE `rx-slow-hash.c`).

/// Blocks per seed epoch (`SEEDHASH_EPOCH_BLOCKS`).
pub const SEEDHASH_EPOCH_BLOCKS: u64 = 2048;
/// Lag before a new epoch's seed is used (`SEEDHASH_EPOCH_LAG`).
pub const SEEDHASH_EPOCH_LAG: u64 = 64;

/// Index of the block whose id keys RandomX for the block at `height`.
pub fn seed_height(height: u64) -> u64 {
    if height <= SEEDHASH_EPOCH_BLOCKS + SEEDHASH_EPOCH_LAG {
        0
    } else {
        (height - SEEDHASH_EPOCH_LAG - 1) & !(SEEDHASH_EPOCH_BLOCKS - 1)
    }
}

/// Seed height announced as `next_seed_hash` for a template at `height` (one block ahead).
pub fn next_seed_height(height: u64) -> u64 {
    seed_height(height + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_seed_heights() {
        for (h, s) in [(0, 0), (2112, 0), (2113, 2048), (4160, 2048), (4161, 4096), (6209, 6144)] {
            assert_eq!(seed_height(h), s, "height {h}");
        }
        assert_eq!(next_seed_height(2112), 2048);
        assert_eq!(next_seed_height(2111), 0);
    }
}

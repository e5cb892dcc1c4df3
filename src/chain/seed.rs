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

/// For a template at `height`: the seed height of the next epoch when its block already exists
/// and the switch to it is still ahead (the last 64 templates before a switch). The pool builds
/// that seed's dataset ahead, so the switch costs nothing; the daemon's `next_seed_hash`
/// announces it only one block ahead.
pub fn upcoming_seed_height(height: u64) -> Option<u64> {
    let upcoming = seed_height(height + SEEDHASH_EPOCH_LAG);
    (upcoming != seed_height(height)).then_some(upcoming)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_epoch_seed_is_known_64_blocks_before_the_switch() {
        assert_eq!(upcoming_seed_height(2048), None, "block 2048 does not exist yet");
        assert_eq!(upcoming_seed_height(2049), Some(2048));
        assert_eq!(upcoming_seed_height(2112), Some(2048));
        assert_eq!(upcoming_seed_height(2113), None, "switched");
        assert_eq!(upcoming_seed_height(4160), Some(4096));
        for h in 4097..=4160 {
            let s = upcoming_seed_height(h).unwrap();
            assert!(s < h, "block {s} exists at template height {h}");
            assert_eq!(s, seed_height(4161));
        }
    }

    #[test]
    fn spec_seed_heights() {
        for (h, s) in [(0, 0), (2112, 0), (2113, 2048), (4160, 2048), (4161, 4096), (6209, 6144)] {
            assert_eq!(seed_height(h), s, "height {h}");
        }
        assert_eq!(next_seed_height(2112), 2048);
        assert_eq!(next_seed_height(2111), 0);
    }
}

//! Hash → difficulty and difficulty → share target (spec §3.3, §3.4), with exact 256-bit math.

use ethnum::U256;

use super::Hash;

fn hash_value(hash: &Hash) -> U256 {
    U256::from_le_bytes(hash.0)
}

/// `floor((2^256 - 1) / H)` with `H` the hash read as a little-endian 256-bit integer, saturated
/// to `u64::MAX` (also for `H = 0`).
pub fn hash_difficulty(hash: &Hash) -> u64 {
    let h = hash_value(hash);
    if h == U256::ZERO {
        return u64::MAX;
    }
    let q = U256::MAX / h;
    if q > U256::from(u64::MAX) {
        u64::MAX
    } else {
        q.as_u64()
    }
}

/// The daemon's `check_hash`: `H × difficulty < 2^256`. Equivalent to
/// `hash_difficulty(hash) >= difficulty` for every hash and difficulty.
pub fn meets_difficulty(hash: &Hash, difficulty: u64) -> bool {
    hash_value(hash).checked_mul(U256::from(difficulty)).is_some()
}

/// The 4-byte share target the old pool sends: the top 32 bits of `floor((2^256-1)/diff)`,
/// little-endian, as 8 hex characters.
pub fn target_hex4(difficulty: u64) -> String {
    let q = U256::MAX / U256::from(difficulty.max(1));
    let top = (q >> 224u32).as_u32();
    hex::encode(top.to_le_bytes())
}

/// The 8-byte share target: little-endian `floor((2^64-1)/diff)` as 16 hex characters.
pub fn target_hex8(difficulty: u64) -> String {
    hex::encode((u64::MAX / difficulty.max(1)).to_le_bytes())
}

/// The difficulty xmrig perceives from a 4-byte target (`0xFFFFFFFFFFFFFFFF / target64`).
pub fn difficulty_of_target4(target: u32) -> u64 {
    if target == 0 {
        return u64::MAX;
    }
    let target64 = u64::MAX / (u64::from(u32::MAX) / u64::from(target));
    u64::MAX / target64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_targets() {
        for (diff, want, perceived) in [
            (100, "285c8f02", 100),
            (1000, "37894100", 1000),
            (5000, "711b0d00", 5000),
            (15000, "7b5e0400", 15000),
            (25000, "169f0200", 25000),
            (500000, "8d210000", 500054),
            (100000000, "2a000000", 102261126),
        ] {
            let t = target_hex4(diff);
            assert_eq!(t, want, "diff {diff}");
            let raw = u32::from_le_bytes(hex::decode(&t).unwrap().try_into().unwrap());
            assert_eq!(difficulty_of_target4(raw), perceived, "diff {diff}");
        }
        assert_eq!(target_hex8(5000), "96218e75711b0d00");
        assert_eq!(target_hex8(100000000), "61c41df32a000000");
    }

    #[test]
    fn spec_boundary_hash_1775() {
        let h = Hash::from_hex("916b1a96560dd5e9c54eb20c6dcfa4702e0b1f4cc68f611beb454cb934e72400").unwrap();
        assert_eq!(hash_difficulty(&h), 1775);
        assert!(meets_difficulty(&h, 1775));
        assert!(!meets_difficulty(&h, 1776));
        let h1 = Hash::from_hex("8c5ec6874e1a4de16de5f749173f0605380a359804ba9e6d558de8b112c75f93").unwrap();
        assert_eq!(hash_difficulty(&h1), 1);
        assert_eq!(hash_difficulty(&Hash::ZERO), u64::MAX);
        assert!(meets_difficulty(&Hash([0xff; 32]), 1));
        assert!(!meets_difficulty(&Hash([0xff; 32]), 2));
    }

    proptest! {
        #[test]
        fn check_hash_equals_hash_difficulty_rule(bytes in any::<[u8; 32]>(), shift in 0u32..256, diff in 1u64..u64::MAX) {
            // Shift the hash down to get small values (high difficulties) too.
            let h = U256::from_le_bytes(bytes) >> shift;
            let hash = Hash(h.to_le_bytes());
            let hd = hash_difficulty(&hash);
            prop_assert_eq!(meets_difficulty(&hash, diff), hd >= diff);
            prop_assert_eq!(meets_difficulty(&hash, hd), true);
            if hd < u64::MAX {
                prop_assert!(!meets_difficulty(&hash, hd + 1));
            }
        }
    }
}

//! Who each simulated miner is: a valid, distinct Pastella address (a real ed25519 point, so it
//! passes the pool's full address check) and a worker name.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::scalar::Scalar;
use pastella_pool::chain::keccak::keccak;
use pastella_pool::chain::Address;

/// The address of miner-address number `n`: the public key `keccak(salt, n) * G`, the same
/// for every run with the same salt (so a pool's Redis sees the same miners again).
pub fn address(salt: u64, n: u64) -> String {
    let mut input = [0u8; 16];
    input[..8].copy_from_slice(&salt.to_le_bytes());
    input[8..].copy_from_slice(&n.to_le_bytes());
    let scalar = Scalar::from_bytes_mod_order(keccak(&input).0);
    let point = ED25519_BASEPOINT_POINT * scalar;
    Address::from_key(point.compress().to_bytes()).encode()
}

/// The worker name of miner `index` (the `pass` field, as xmrig sends it).
pub fn worker(prefix: &str, index: u64) -> String {
    format!("{prefix}{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_valid_distinct_and_reproducible() {
        let a: Vec<String> = (0..50).map(|n| address(7, n)).collect();
        for text in &a {
            assert!(Address::parse(text).is_ok(), "{text}");
            assert!(text.starts_with("PAS1"));
        }
        let mut unique = a.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), a.len());
        assert_eq!(address(7, 3), a[3]);
        assert_ne!(address(8, 3), a[3]);
        assert_eq!(worker("lt", 12), "lt12");
    }
}

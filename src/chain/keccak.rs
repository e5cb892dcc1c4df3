//! Original Keccak-256 (pad byte 0x01, rate 136), the daemon's `cn_fast_hash`. Not SHA3-256.

use sha3::{Digest, Keccak256};

use super::Hash;

/// Keccak-256 of `data`.
pub fn keccak(data: &[u8]) -> Hash {
    Hash(Keccak256::digest(data).into())
}

/// Keccak-256 of the concatenation of two 32-byte hashes (one tree-hash node).
pub fn keccak_pair(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Keccak256::new();
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// Keccak-256 of several slices hashed as one message, without concatenating them.
pub fn keccak_parts(parts: &[&[u8]]) -> Hash {
    let mut hasher = Keccak256::new();
    for part in parts {
        hasher.update(part);
    }
    Hash(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_is_keccak_not_sha3() {
        assert_eq!(keccak(b"").to_hex(), "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
    }

    #[test]
    fn parts_equal_concatenation() {
        let a = keccak(b"a");
        let b = keccak(b"b");
        let mut joined = a.0.to_vec();
        joined.extend_from_slice(&b.0);
        assert_eq!(keccak_pair(&a, &b), keccak(&joined));
        assert_eq!(keccak_parts(&[&a.0, &b.0[..5], &b.0[5..]]), keccak(&joined));
    }
}

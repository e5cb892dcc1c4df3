//! The CryptoNote transaction tree hash (`tree_hash` in the daemon's `tree-hash.c`) and the
//! merkle branch of leaf 0, which lets a pool recompute the root for a new coinbase hash with
//! log2(n) hashes instead of the whole tree.

use super::keccak::{keccak_pair, keccak_parts};
use super::Hash;

/// The largest power of two strictly below `count` (`count > 2`).
fn tree_hash_cnt(count: usize) -> usize {
    debug_assert!(count > 2);
    let mut pow = 2;
    while pow * 2 < count {
        pow *= 2;
    }
    pow
}

/// The root over `leaves` (at least one).
///
/// # Panics
/// If `leaves` is empty: a block always has its coinbase.
pub fn tree_hash(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => panic!("tree_hash of zero leaves"),
        1 => leaves[0],
        2 => keccak_pair(&leaves[0], &leaves[1]),
        count => {
            let mut cnt = tree_hash_cnt(count);
            let copied = 2 * cnt - count;
            let mut nodes: Vec<Hash> = leaves[..copied].to_vec();
            nodes.extend(leaves[copied..].chunks_exact(2).map(|p| keccak_pair(&p[0], &p[1])));
            debug_assert_eq!(nodes.len(), cnt);
            while cnt > 2 {
                cnt /= 2;
                for j in 0..cnt {
                    nodes[j] = keccak_pair(&nodes[2 * j], &nodes[2 * j + 1]);
                }
            }
            keccak_pair(&nodes[0], &nodes[1])
        }
    }
}

/// The siblings of leaf 0 on its path to the root, given the other leaves (`leaves[1..]`).
///
/// Leaf 0 is always the left child, so the root for a coinbase hash `h` is
/// `branch.fold(h, |h, s| keccak(h || s))`: see [`root_from_branch`].
pub fn coinbase_branch(other_leaves: &[Hash]) -> Vec<Hash> {
    let count = other_leaves.len() + 1;
    match count {
        1 => Vec::new(),
        2 => vec![other_leaves[0]],
        _ => {
            let mut cnt = tree_hash_cnt(count);
            let copied = 2 * cnt - count;
            // Level 1 without leaf 0's node (index 0), which depends on the coinbase.
            let mut branch = Vec::new();
            let mut level: Vec<Hash> = Vec::with_capacity(cnt);
            // Placeholder for node 0; never read.
            level.push(Hash::ZERO);
            if copied > 0 {
                // Leaf 0 is copied up unchanged; leaves 1..copied are copied too.
                level.extend_from_slice(&other_leaves[..copied - 1]);
                let rest = &other_leaves[copied - 1..];
                level.extend(rest.chunks_exact(2).map(|p| keccak_pair(&p[0], &p[1])));
            } else {
                // Leaf 0 is hashed with leaf 1.
                branch.push(other_leaves[0]);
                let rest = &other_leaves[1..];
                level.extend(rest.chunks_exact(2).map(|p| keccak_pair(&p[0], &p[1])));
            }
            debug_assert_eq!(level.len(), cnt);
            while cnt > 2 {
                branch.push(level[1]);
                cnt /= 2;
                for j in 1..cnt {
                    level[j] = keccak_pair(&level[2 * j], &level[2 * j + 1]);
                }
            }
            branch.push(level[1]);
            branch
        }
    }
}

/// The tree root for coinbase hash `leaf0` and the branch from [`coinbase_branch`].
pub fn root_from_branch(leaf0: Hash, branch: &[Hash]) -> Hash {
    branch.iter().fold(leaf0, |node, sibling| keccak_parts(&[&node.0, &sibling.0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::keccak::keccak;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| keccak(&[i as u8])).collect()
    }

    /// Spec §12.4, verified against the daemon's tree-hash.c.
    const ROOTS: [&str; 9] = [
        "bc36789e7a1e281436464229828f817d6612f7b477d66591ff96a9e064bcc98a",
        "57d772147cdf27f5f67d679f0f3a513f8b87622ce598a3cf0b048ab178ddfc6e",
        "31ea648480acca9d46c5cfd2fd5ecf576ce7a797bdd582869c38deeacf6d17d4",
        "dd5115b5dcca3db0bffa31064a0d21f21362cd02e1263e47d69e38bbeec1d359",
        "3b85b9b4e7171846e3dd41d242f99cdc136467ff276a272d5d8f960b2c447d67",
        "339caf14b48992a6c4f2f7fcdb491952fb108febcab38667df0828be8f3651a7",
        "6db3924fa166ddef0003d700474beb10c7cd9cc90b882af3b1bbb98aeb557a5f",
        "791521f02a712f28265f5200914f9772b133bc2692260f8c8f426e176b1713ed",
        "6a31a9bc64f694b411012bf9293fbf312a418c49565fcee0b0125c5c768c77be",
    ];

    #[test]
    fn spec_vectors_one_to_nine_leaves() {
        for (i, want) in ROOTS.iter().enumerate() {
            let l = leaves(i + 1);
            assert_eq!(tree_hash(&l).to_hex(), *want, "{} leaves", i + 1);
            let branch = coinbase_branch(&l[1..]);
            assert_eq!(root_from_branch(l[0], &branch).to_hex(), *want, "branch, {} leaves", i + 1);
        }
    }

    proptest! {
        #[test]
        fn branch_matches_full_tree(n in 1usize..300, seed in any::<u64>()) {
            let l: Vec<Hash> = (0..n).map(|i| keccak(&(seed.wrapping_add(i as u64)).to_le_bytes())).collect();
            let branch = coinbase_branch(&l[1..]);
            prop_assert!(branch.len() <= 10);
            prop_assert_eq!(root_from_branch(l[0], &branch), tree_hash(&l));
        }
    }
}

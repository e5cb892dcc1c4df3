//! The reward split of one block (pure, integer atomic units only).
//!
//! PPLNS: the pool fee stays with the pool, the finder reward goes to the finder, and the rest
//! goes to the miners of the block's window in proportion to their difficulty in it, each
//! share rounded down. Solo: the finder gets the reward minus the solo fee. Whatever rounding
//! leaves over (the dust) stays with the pool, so the credits of a block never exceed its
//! reward. Fees are in basis points (1 % = 100) and rounded down.

use std::collections::BTreeMap;

/// What one block pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Address → atomic units credited (the finder reward is included in the finder's entry).
    pub credits: BTreeMap<String, u64>,
    /// Kept by the pool as its fee.
    pub pool_fee: u64,
    /// Paid to the finder on top of its window share (PPLNS only).
    pub finder_reward: u64,
    /// Rounding remainder, kept by the pool.
    pub dust: u64,
}

impl Split {
    /// Σ credits.
    pub fn credited(&self) -> u64 {
        self.credits.values().sum()
    }
}

fn bps_of(amount: u64, bps: u32) -> u64 {
    (u128::from(amount) * u128::from(bps) / 10_000) as u64
}

/// Splits a pooled (PPLNS) block's `reward`. `window` is address → difficulty units in the
/// block's window; an empty window pays the miners' part to the finder (it found the block
/// with the only share the pool knows of).
pub fn pplns(reward: u64, window: &BTreeMap<String, u64>, finder: &str, fee_bps: u32, finder_bps: u32) -> Split {
    let pool_fee = bps_of(reward, fee_bps);
    let finder_reward = bps_of(reward, finder_bps).min(reward - pool_fee);
    let miners = reward - pool_fee - finder_reward;
    let total: u128 = window.values().map(|&v| u128::from(v)).sum();
    let mut credits = BTreeMap::new();
    for (address, &score) in window {
        let share = (u128::from(miners) * u128::from(score)).checked_div(total).unwrap_or(0) as u64;
        if share > 0 {
            credits.insert(address.clone(), share);
        }
    }
    if total == 0 {
        credits.insert(finder.to_string(), miners);
    }
    if finder_reward > 0 {
        *credits.entry(finder.to_string()).or_default() += finder_reward;
    }
    let credited: u64 = credits.values().sum();
    let dust = reward - pool_fee - credited;
    Split { credits, pool_fee, finder_reward, dust }
}

/// Splits a solo block: the finder gets everything but the fee.
pub fn solo(reward: u64, finder: &str, fee_bps: u32) -> Split {
    let pool_fee = bps_of(reward, fee_bps);
    let mut credits = BTreeMap::new();
    if reward > pool_fee {
        credits.insert(finder.to_string(), reward - pool_fee);
    }
    Split { credits, pool_fee, finder_reward: 0, dust: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn window(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
        entries.iter().map(|(a, s)| (a.to_string(), *s)).collect()
    }

    /// The worked example of docs/PAYOUTS.md.
    #[test]
    fn worked_example() {
        let w = window(&[("alice", 600_000), ("bob", 300_000), ("carol", 100_001)]);
        let s = pplns(400_000_000, &w, "bob", 100, 100);
        assert_eq!(s.pool_fee, 4_000_000);
        assert_eq!(s.finder_reward, 4_000_000);
        // miners' part: 392_000_000 over 1_000_001 units
        assert_eq!(s.credits["alice"], 235_199_764);
        assert_eq!(s.credits["bob"], 117_599_882 + 4_000_000);
        assert_eq!(s.credits["carol"], 39_200_352);
        assert_eq!(s.dust, 2);
        assert_eq!(s.credited() + s.pool_fee + s.dust, 400_000_000);
    }

    #[test]
    fn solo_and_empty_window() {
        let s = solo(400_000_000, "alice", 150);
        assert_eq!(s.credits["alice"], 394_000_000);
        assert_eq!(s.pool_fee, 6_000_000);
        let s = pplns(400_000_000, &BTreeMap::new(), "alice", 100, 100);
        assert_eq!(s.credits["alice"], 396_000_000);
        assert_eq!(s.dust, 0);
    }

    proptest! {
        #[test]
        fn credits_never_exceed_the_reward_and_the_pool_keeps_fee_plus_dust(
            reward in 0u64..=u64::MAX / 2,
            scores in proptest::collection::vec(0u64..=u64::MAX / 1024, 0..40),
            fee_bps in 0u32..=10_000,
            finder_bps in 0u32..=10_000,
            finder_index in any::<usize>(),
        ) {
            let finder_bps = finder_bps.min(10_000 - fee_bps);
            let w: BTreeMap<String, u64> = scores.iter().enumerate().map(|(i, s)| (format!("m{i}"), *s)).collect();
            let finder = if scores.is_empty() { "m0".to_string() } else { format!("m{}", finder_index % scores.len()) };
            let s = pplns(reward, &w, &finder, fee_bps, finder_bps);
            prop_assert!(s.credited() <= reward);
            prop_assert_eq!(s.credited() + s.pool_fee + s.dust, reward);
            prop_assert_eq!(s.pool_fee, (reward as u128 * fee_bps as u128 / 10_000) as u64);
            prop_assert_eq!(s.finder_reward, (reward as u128 * finder_bps as u128 / 10_000) as u64);
            // Dust is below one unit per miner.
            prop_assert!(s.dust <= w.len() as u64);
            // Each miner gets exactly floor(miners * score / total).
            let miners = reward - s.pool_fee - s.finder_reward;
            let total: u128 = w.values().map(|&v| v as u128).sum();
            for (address, score) in &w {
                let want = (miners as u128 * *score as u128).checked_div(total).unwrap_or(0) as u64;
                let extra = if *address == finder { s.finder_reward } else { 0 };
                let got = s.credits.get(address).copied().unwrap_or(0);
                if total == 0 && *address == finder {
                    prop_assert_eq!(got, miners + extra);
                } else {
                    prop_assert_eq!(got, want + extra);
                }
            }
        }

        #[test]
        fn solo_pays_all_but_the_fee(reward in any::<u64>(), fee_bps in 0u32..=10_000) {
            let s = solo(reward, "f", fee_bps);
            prop_assert_eq!(s.credited() + s.pool_fee, reward);
        }
    }
}

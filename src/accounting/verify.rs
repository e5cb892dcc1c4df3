//! Checking a credited block: its split recomputed from the stored window and the stored
//! terms, through the production [`split`] functions, compared with what was credited, to the
//! atomic unit. Backs `pastella-pool verify-block`.

use std::collections::BTreeSet;

use super::split::{self, Split};
use crate::store::BlockPayout;

/// Why a block cannot be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverifiable {
    /// Only confirmed blocks are credited.
    #[error("block {hash} is {status}: nothing was credited, nothing to verify")]
    NotConfirmed {
        /// Block id.
        hash: String,
        /// Its status.
        status: String,
    },
    /// Its window and credits expired (`blockUnlocker.payoutRecordDays`).
    #[error("block {0}: its payout record (window and credits) has expired; raise blockUnlocker.payoutRecordDays to keep them longer")]
    Expired(String),
    /// Credited before the split terms were stored with the block.
    #[error("block {0} was credited before the pool stored the fee and finder reward with each block; it cannot be recomputed")]
    NoTerms(String),
    /// Recorded by the old pool, without the pool's coinbase output.
    #[error("block {0} has no recorded reward (recorded by the old pool)")]
    NoReward(String),
}

/// The split the stored window and terms give.
pub fn recompute(payout: &BlockPayout) -> Result<Split, Unverifiable> {
    if payout.status != "confirmed" {
        return Err(Unverifiable::NotConfirmed { hash: payout.hash.clone(), status: payout.status.clone() });
    }
    if payout.expired() {
        return Err(Unverifiable::Expired(payout.hash.clone()));
    }
    let (Some(fee_bps), Some(finder_bps)) = (payout.fee_bps, payout.finder_bps) else {
        return Err(Unverifiable::NoTerms(payout.hash.clone()));
    };
    let Some(reward) = payout.reward else {
        return Err(Unverifiable::NoReward(payout.hash.clone()));
    };
    Ok(if payout.solo {
        split::solo(reward, &payout.finder, fee_bps)
    } else {
        split::pplns(reward, &payout.window, &payout.finder, fee_bps, finder_bps)
    })
}

/// Every difference between the recomputed split and the stored record, in words; empty when
/// they agree to the atomic unit.
pub fn differences(payout: &BlockPayout) -> Result<Vec<String>, Unverifiable> {
    let want = recompute(payout)?;
    let mut out = Vec::new();
    let addresses: BTreeSet<&String> = want.credits.keys().chain(payout.credits.keys()).collect();
    for address in addresses {
        let (w, got) = (want.credits.get(address).copied(), payout.credits.get(address).copied());
        if w != got {
            let show = |v: Option<u64>| v.map_or_else(|| "nothing".to_string(), |v| v.to_string());
            out.push(format!("credit of {address}: recomputed {}, credited {}", show(w), show(got)));
        }
    }
    let credited: u64 = payout.credits.values().sum();
    for (what, w, got) in [
        ("pool fee", want.pool_fee, payout.pool_fee),
        ("finder reward", want.finder_reward, payout.finder_reward),
        ("dust", want.dust, payout.dust),
        ("total credited (record)", want.credited(), payout.credited),
        ("total credited (sum of credits)", want.credited(), credited),
    ] {
        if w != got {
            out.push(format!("{what}: recomputed {w}, stored {got}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn confirmed() -> BlockPayout {
        let window: BTreeMap<String, u64> = [("alice", 600_000), ("bob", 300_000), ("carol", 100_001)]
            .iter()
            .map(|(a, v)| (a.to_string(), *v))
            .collect();
        let s = split::pplns(400_000_000, &window, "bob", 100, 100);
        BlockPayout {
            height: 7,
            hash: "aa".into(),
            solo: false,
            finder: "bob".into(),
            status: "confirmed".into(),
            reward: Some(400_000_000),
            window_size: 1_000_001,
            window_total: 1_000_001,
            window,
            partial: None,
            credited: s.credited(),
            credits: s.credits,
            pool_fee: s.pool_fee,
            finder_reward: s.finder_reward,
            dust: s.dust,
            fee_bps: Some(100),
            finder_bps: Some(100),
            expires_at: Some(1),
        }
    }

    #[test]
    fn a_faithful_record_has_no_differences() {
        assert_eq!(differences(&confirmed()), Ok(vec![]));
    }

    #[test]
    fn every_difference_is_named() {
        let mut p = confirmed();
        *p.credits.get_mut("alice").unwrap() += 1;
        p.credits.insert("mallory".into(), 5);
        p.dust = 0;
        let d = differences(&p).unwrap();
        assert_eq!(
            d,
            vec![
                "credit of alice: recomputed 235199764, credited 235199765".to_string(),
                "credit of mallory: recomputed nothing, credited 5".to_string(),
                "dust: recomputed 2, stored 0".to_string(),
                format!("total credited (sum of credits): recomputed {}, stored {}", p.credited, p.credited + 6),
            ]
        );
    }

    #[test]
    fn the_stored_terms_are_used_not_todays() {
        let mut p = confirmed();
        p.fee_bps = Some(200);
        let d = differences(&p).unwrap();
        assert!(d.iter().any(|l| l == "pool fee: recomputed 8000000, stored 4000000"), "{d:?}");
    }

    #[test]
    fn solo_orphaned_expired_and_old_blocks() {
        let mut p = confirmed();
        p.solo = true;
        p.fee_bps = Some(150);
        p.finder_bps = Some(0);
        p.credits = [("bob".to_string(), 394_000_000)].into();
        p.credited = 394_000_000;
        p.pool_fee = 6_000_000;
        p.finder_reward = 0;
        p.dust = 0;
        assert_eq!(differences(&p), Ok(vec![]));
        let mut orphan = confirmed();
        orphan.status = "orphaned".into();
        assert!(matches!(differences(&orphan), Err(Unverifiable::NotConfirmed { .. })));
        let mut expired = confirmed();
        expired.credits.clear();
        expired.window.clear();
        assert_eq!(differences(&expired), Err(Unverifiable::Expired("aa".into())));
        let mut old = confirmed();
        old.fee_bps = None;
        assert_eq!(differences(&old), Err(Unverifiable::NoTerms("aa".into())));
    }
}

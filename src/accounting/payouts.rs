//! Which balances are paid, and how they are grouped into transactions (pure).
//!
//! Fees, precisely (`payments.transferFee` = the network fee of one transaction, sent as
//! `fee` to the wallet):
//! - `minerPayFee: false`: the pool pays each transaction's fee; a miner receives its whole
//!   payout.
//! - `minerPayFee: true`, `dynamicTransferFee: false`: each paid miner is charged the whole
//!   `transferFee` (deducted from what it receives).
//! - `minerPayFee: true`, `dynamicTransferFee: true`: each paid miner is charged its share of
//!   the transaction's fee, `ceil(transferFee / destinations)`.
//!
//! Whatever is charged leaves the miner's balance with the payout (recorded as `fees`); what
//! is charged beyond the real fee stays with the pool.

use std::collections::HashSet;

use crate::store::{BalanceRow, BatchDestination};

/// The `payments` settings that shape payouts.
#[derive(Debug, Clone)]
pub struct PayoutPolicy {
    /// Smallest payout threshold (`minPayment`).
    pub min_payment: u64,
    /// Largest per-miner threshold a miner may set (`maxPayment`).
    pub max_payment: Option<u64>,
    /// Payouts are multiples of this (`denomination`).
    pub denomination: u64,
    /// Network fee per transaction (`transferFee`).
    pub transfer_fee: u64,
    /// Split the fee among a transaction's miners (`dynamicTransferFee`).
    pub dynamic_transfer_fee: bool,
    /// Miners pay the fee (`minerPayFee`).
    pub miner_pay_fee: bool,
    /// Destinations per transaction (`maxAddresses`, ≤ 89: the 90-output cap includes change).
    pub max_addresses: usize,
    /// Largest total of one transaction (`maxTransactionAmount`).
    pub max_transaction_amount: u64,
}

impl PayoutPolicy {
    /// The threshold for a miner's optional own payout level.
    pub fn threshold(&self, level: Option<u64>) -> u64 {
        let max = self.max_payment.unwrap_or(u64::MAX).max(self.min_payment);
        level.unwrap_or(self.min_payment).clamp(self.min_payment, max)
    }
}

/// Plans the batches for this run: eligible balances (not blocked, at or over their
/// threshold), largest first, each rounded down to the denomination and capped at
/// `max_transaction_amount`, grouped into transactions of at most `max_addresses`
/// destinations and `max_transaction_amount` in total.
pub fn plan(rows: &[BalanceRow], blocked: &HashSet<String>, policy: &PayoutPolicy) -> Vec<Vec<BatchDestination>> {
    let denomination = policy.denomination.max(1);
    let cap = policy.max_transaction_amount - policy.max_transaction_amount % denomination;
    let mut payees: Vec<(String, u64)> = rows
        .iter()
        .filter(|r| !blocked.contains(&r.address))
        .filter(|r| r.balance >= policy.threshold(r.min_payout_level))
        .map(|r| (r.address.clone(), (r.balance - r.balance % denomination).min(cap)))
        // A miner who pays the fee must get something after it.
        .filter(|(_, gross)| *gross > 0 && (!policy.miner_pay_fee || *gross > policy.transfer_fee))
        .collect();
    payees.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let mut batches: Vec<Vec<(String, u64)>> = Vec::new();
    let mut current: Vec<(String, u64)> = Vec::new();
    let mut total = 0u64;
    for (address, gross) in payees {
        if !current.is_empty()
            && (current.len() >= policy.max_addresses || total + gross > policy.max_transaction_amount)
        {
            batches.push(std::mem::take(&mut current));
            total = 0;
        }
        total += gross;
        current.push((address, gross));
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches.into_iter().map(|batch| charge(batch, policy)).collect()
}

/// The fee charged to each miner of a transaction with `destinations` destinations.
fn charged(policy: &PayoutPolicy, destinations: usize) -> u64 {
    match (policy.miner_pay_fee, policy.dynamic_transfer_fee) {
        (false, _) => 0,
        (true, false) => policy.transfer_fee,
        (true, true) => policy.transfer_fee.div_ceil(destinations.max(1) as u64),
    }
}

fn charge(batch: Vec<(String, u64)>, policy: &PayoutPolicy) -> Vec<BatchDestination> {
    let fee = charged(policy, batch.len());
    batch
        .into_iter()
        .map(|(address, gross)| BatchDestination { address, amount: gross - fee, fee, reserved: gross })
        .collect()
}

/// Pays what fits: of a planned batch, the destinations, **largest payout first**, whose
/// amounts plus the transaction fee fit in `budget` (the wallet's unlocked balance); a payout
/// too large for what is left is skipped and smaller ones still go. Each miner's fee share is
/// recomputed for the destinations kept. `None` if not one fits; the rest waits for a later
/// run with its balance untouched.
pub fn fit(batch: &[BatchDestination], budget: u64, policy: &PayoutPolicy) -> Option<Vec<BatchDestination>> {
    let mut order: Vec<&BatchDestination> = batch.iter().collect();
    order.sort_by(|a, b| b.reserved.cmp(&a.reserved).then_with(|| a.address.cmp(&b.address)));
    let mut kept: Vec<(String, u64)> = Vec::new();
    let mut gross = 0u64;
    for d in order {
        let n = kept.len() + 1;
        let fee = charged(policy, n);
        if d.reserved <= fee {
            continue;
        }
        let sending = (gross + d.reserved).saturating_sub(fee * n as u64);
        if sending.saturating_add(policy.transfer_fee) <= budget {
            gross += d.reserved;
            kept.push((d.address.clone(), d.reserved));
        }
    }
    (!kept.is_empty()).then(|| charge(kept, policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> PayoutPolicy {
        PayoutPolicy {
            min_payment: 100_000,
            max_payment: None,
            denomination: 1,
            transfer_fee: 1000,
            dynamic_transfer_fee: true,
            miner_pay_fee: true,
            max_addresses: 2,
            max_transaction_amount: 10_000_000,
        }
    }

    fn row(address: &str, balance: u64) -> BalanceRow {
        BalanceRow { address: address.into(), balance, min_payout_level: None }
    }

    #[test]
    fn thresholds_blocking_batching_and_fee_modes() {
        let rows = vec![
            row("a", 5_000_000),
            row("b", 99_999),
            row("c", 6_000_000),
            row("d", 200_000),
            row("e", 300_000),
            BalanceRow { address: "f".into(), balance: 400_000, min_payout_level: Some(500_000) },
        ];
        let blocked: HashSet<String> = ["e".to_string()].into();
        let batches = plan(&rows, &blocked, &policy());
        // c (6.0M) alone: a (5.0M) would exceed 10M; then a + d.
        let shape: Vec<Vec<(&str, u64, u64)>> =
            batches.iter().map(|b| b.iter().map(|d| (d.address.as_str(), d.amount, d.fee)).collect()).collect();
        assert_eq!(shape, vec![vec![("c", 5_999_000, 1000)], vec![("a", 4_999_500, 500), ("d", 199_500, 500)]]);
        let fixed = PayoutPolicy { dynamic_transfer_fee: false, ..policy() };
        assert_eq!(plan(&rows, &blocked, &fixed)[1][1].fee, 1000);
        let pool_pays = PayoutPolicy { miner_pay_fee: false, ..policy() };
        let b = plan(&rows, &blocked, &pool_pays);
        assert_eq!((b[1][1].amount, b[1][1].fee, b[1][1].reserved), (200_000, 0, 200_000));
    }

    #[test]
    fn denomination_and_per_transaction_cap() {
        let p = PayoutPolicy { denomination: 100_000, max_transaction_amount: 1_050_000, ..policy() };
        let b = plan(&[row("a", 5_432_100)], &HashSet::new(), &p);
        // Rounded down to the denomination and capped at the largest multiple under the cap.
        assert_eq!(b[0][0].reserved, 1_000_000);
        assert_eq!(b[0][0].amount, 999_000);
    }

    proptest! {
        #[test]
        fn plans_respect_every_limit(
            balances in proptest::collection::vec(0u64..50_000_000, 0..200),
            max_addresses in 1usize..=89,
            dynamic in any::<bool>(),
            miner_pays in any::<bool>(),
        ) {
            let rows: Vec<BalanceRow> = balances.iter().enumerate().map(|(i, b)| row(&format!("m{i}"), *b)).collect();
            let p = PayoutPolicy { max_addresses, dynamic_transfer_fee: dynamic, miner_pay_fee: miner_pays, ..policy() };
            let mut seen = HashSet::new();
            for batch in plan(&rows, &HashSet::new(), &p) {
                prop_assert!(!batch.is_empty() && batch.len() <= max_addresses);
                let reserved: u64 = batch.iter().map(|d| d.reserved).sum();
                prop_assert!(reserved <= p.max_transaction_amount || batch.len() == 1);
                for d in &batch {
                    prop_assert!(seen.insert(d.address.clone()), "paid twice in one run");
                    prop_assert!(d.amount > 0);
                    prop_assert_eq!(d.amount + d.fee, d.reserved);
                    let balance = balances[d.address[1..].parse::<usize>().unwrap()];
                    prop_assert!(d.reserved <= balance && balance >= p.min_payment);
                }
                let charged: u64 = batch.iter().map(|d| d.fee).sum();
                if miner_pays {
                    prop_assert!(charged >= p.transfer_fee, "miners cover the fee");
                } else {
                    prop_assert_eq!(charged, 0);
                }
            }
        }
    }

    #[test]
    fn what_fits_is_paid_largest_first() {
        let mut p = policy();
        p.max_addresses = 10;
        let rows = [row("PAS1a", 500_000), row("PAS1b", 300_000), row("PAS1c", 200_000), row("PAS1d", 150_000)];
        let batch = plan(&rows, &HashSet::new(), &p).remove(0);
        let sending: u64 = batch.iter().map(|d| d.amount).sum();
        // Everything fits exactly: all four, unchanged.
        assert_eq!(fit(&batch, sending + 1000, &p), Some(batch.clone()));
        // One unit short: the smallest payout waits, the other three are paid (fee shared by 3).
        let kept = fit(&batch, sending + 1000 - 1, &p).unwrap();
        assert_eq!(kept.iter().map(|d| d.address.as_str()).collect::<Vec<_>>(), ["PAS1a", "PAS1b", "PAS1c"]);
        assert!(kept.iter().all(|d| d.fee == 334 && d.amount + d.fee == d.reserved));
        assert!(kept.iter().map(|d| d.amount).sum::<u64>() + 1000 <= sending + 999);
        // Room for less than the largest: the largest waits, smaller ones that fit go.
        let kept = fit(&batch, 400_000, &p).unwrap();
        assert_eq!(kept.iter().map(|d| d.address.as_str()).collect::<Vec<_>>(), ["PAS1b"]);
        assert_eq!(kept[0].amount, 299_000, "alone it pays the whole fee");
        assert_eq!(fit(&batch, 100_000, &p), None);
    }
}

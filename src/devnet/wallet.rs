//! The simulated wallet: one address, its balance computed from the ledger, the transactions
//! it relayed, prepared transactions held until sent, and injected send failures.
//!
//! Balance model (simpler than the real wallet's inputs and change, same totals): incoming =
//! coinbase outputs of main-chain blocks paying the wallet key, locked until
//! `unlock_time <= block count + 1` (`Utilities::isInputUnlocked` with the network block count),
//! plus confirmed transfers to the wallet address; outgoing = amount + fee of every relayed
//! transaction, taken from the unlocked balance when it is sent.
//!
//! Like the real wallet (its Transfer code locks a transaction's inputs when it is prepared), a
//! prepared transaction holds its amount + fee out of the unlocked balance until it is sent. A
//! restart (or `DELETE /transactions/prepared/<hash>`) forgets the prepared transaction but not
//! the lock: its amount stays locked until `PUT /reset` rescans the wallet. The rescan drops a
//! prepared transaction still held too (the devnet's choice: the real wallet's behaviour there
//! is not documented, and operators restart the wallet before the rescan anyway).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ledger::{Ledger, PoolTx};
use crate::chain::{Address, Hash};

/// How an injected send failure behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// HTTP 400 with the given error code; nothing is sent.
    Error,
    /// Hold the request for a while, send nothing, then answer error 30 (daemon offline).
    Timeout,
    /// Relay the transaction, then close the connection without a complete answer.
    DropAfterSuccess,
    /// Relay the transaction, then answer HTTP 400 with the given error code (a daemon error
    /// after the relay happened).
    RelayThenError,
    /// For a prepare (`/transactions/prepare/*`): prepare the transaction and lock its inputs,
    /// then close the connection without a complete answer (the client never learns the hash).
    PrepareThenDrop,
    /// For a prepare: prepare the transaction and lock its inputs, then hold the answer for a
    /// while (set it past the client's timeout) before sending it.
    PrepareThenHold,
}

impl FailureKind {
    /// Whether this failure hits a prepare (else a send).
    pub fn on_prepare(self) -> bool {
        matches!(self, FailureKind::PrepareThenDrop | FailureKind::PrepareThenHold)
    }
}

/// One injected failure, consumed by the next send that would otherwise be relayed (or, for
/// the prepare kinds, by the next prepare that would otherwise succeed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What happens.
    pub kind: FailureKind,
    /// The error code for [`FailureKind::Error`] (default 31, DAEMON_ERROR).
    pub code: i64,
    /// How long [`FailureKind::Timeout`] holds the request (`"seconds"` in JSON).
    #[serde(rename = "seconds", with = "seconds")]
    pub hold: Duration,
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Ok(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO))
    }
}

/// A transaction built by `/transactions/prepare/*` and not yet sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// The transaction.
    pub tx: PoolTx,
}

/// A wallet transaction as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxView {
    pub hash: Hash,
    pub block_height: u64,
    pub fee: u64,
    pub is_coinbase: bool,
    pub timestamp: u64,
    /// (address, signed amount)
    pub transfers: Vec<(String, i64)>,
    pub unlock_time: u64,
}

/// The wallet.
#[derive(Debug)]
pub(crate) struct Wallet {
    /// The wallet's only address.
    pub address: Address,
    /// Whether a wallet is open in the API.
    pub open: bool,
    /// Wallet files the API knows: filename → password.
    pub files: BTreeMap<String, String>,
    /// Hashes of relayed transactions, in sending order.
    pub sent: Vec<Hash>,
    /// Prepared, unsent transactions, in preparing order.
    pub prepared: Vec<Prepared>,
    /// Failures for the next sends.
    pub failures: VecDeque<Failure>,
    /// Amounts of prepared transactions the wallet forgot (restart, delete) whose inputs stay
    /// locked until `PUT /reset`.
    pub stale_locks: Vec<(Hash, u64)>,
    /// Addresses this wallet rejects as destinations (injected): the error code, and whether
    /// `/addresses/validate` rejects them too (else only transactions do).
    pub rejected: BTreeMap<String, (i64, bool)>,
    /// Transaction lookups (`/transactions/hash/*`, `/transactions/unconfirmed`) after whose
    /// answer the simulated network mines a block (injected).
    pub mine_after_lookups: u32,
}

impl Wallet {
    /// A wallet for `address`, stored as `filename` with `password`.
    pub fn new(address: Address, filename: &str, password: &str, open: bool) -> Wallet {
        Wallet {
            address,
            open,
            files: BTreeMap::from([(filename.to_string(), password.to_string())]),
            sent: Vec::new(),
            prepared: Vec::new(),
            failures: VecDeque::new(),
            stale_locks: Vec::new(),
            rejected: BTreeMap::new(),
            mine_after_lookups: 0,
        }
    }

    /// What prepared and forgotten transactions hold out of the unlocked balance.
    fn held(&self) -> u64 {
        let prepared = self.prepared.iter().map(|p| p.tx.amount().saturating_add(p.tx.fee));
        prepared.chain(self.stale_locks.iter().map(|(_, v)| *v)).fold(0, u64::saturating_add)
    }

    /// Forgets a prepared transaction; its inputs stay locked until [`Wallet::reset`]. False if
    /// the hash was not prepared.
    pub fn forget_prepared(&mut self, hash: &Hash) -> bool {
        let Some(index) = self.prepared.iter().position(|p| p.tx.hash == *hash) else { return false };
        let tx = self.prepared.remove(index).tx;
        self.stale_locks.push((tx.hash, tx.amount().saturating_add(tx.fee)));
        true
    }

    /// A wallet restart: every prepared transaction is forgotten, its inputs stay locked.
    pub fn restart(&mut self) {
        let hashes: Vec<Hash> = self.prepared.iter().map(|p| p.tx.hash).collect();
        for hash in hashes {
            self.forget_prepared(&hash);
        }
    }

    /// The first queued failure for a prepare (`prepare`) or a send (else); the others stay
    /// queued in order.
    pub fn take_failure(&mut self, prepare: bool) -> Option<Failure> {
        let index = self.failures.iter().position(|f| f.kind.on_prepare() == prepare)?;
        self.failures.remove(index)
    }

    /// `PUT /reset`: the rescan rebuilds the wallet from the chain: the inputs of forgotten
    /// prepared transactions are free again, and a prepared transaction still held (it is not on
    /// the chain) is dropped, so it can never be sent after its inputs were freed.
    pub fn reset(&mut self) {
        self.stale_locks.clear();
        self.prepared.clear();
    }

    fn text(&self) -> String {
        self.address.encode()
    }

    /// `(unlocked, locked)` at the ledger's current height.
    pub fn balance(&self, ledger: &Ledger) -> (u64, u64) {
        let key = self.address.key();
        let count = ledger.count();
        let mut unlocked: u64 = 0;
        let mut locked: u64 = 0;
        for id in ledger.main_ids() {
            let Some(b) = ledger.block(id) else { continue };
            let cb = &b.block.coinbase;
            for out in cb.outputs.iter().filter(|o| &o.key == key) {
                if cb.unlock_time <= count + 1 {
                    unlocked = unlocked.saturating_add(out.amount);
                } else {
                    locked = locked.saturating_add(out.amount);
                }
            }
        }
        let me = self.text();
        for tx in ledger.txs() {
            let incoming =
                tx.destinations.iter().filter(|(a, _)| *a == me).map(|(_, v)| *v).fold(0, u64::saturating_add);
            if incoming == 0 {
                continue;
            }
            match ledger.tx(&tx.hash) {
                Some((_, Some(_))) => unlocked = unlocked.saturating_add(incoming),
                // Our own unconfirmed incoming change: locked until it is in a block.
                _ if self.sent.contains(&tx.hash) => locked = locked.saturating_add(incoming),
                _ => {}
            }
        }
        let mut spent: u64 = 0;
        for hash in &self.sent {
            if let Some((tx, _)) = ledger.tx(hash) {
                spent = spent.saturating_add(tx.amount()).saturating_add(tx.fee);
            }
        }
        let from_unlocked = spent.min(unlocked);
        let (unlocked, locked) = (unlocked - from_unlocked, locked.saturating_sub(spent - from_unlocked));
        let held = self.held().min(unlocked);
        (unlocked - held, locked.saturating_add(held))
    }

    /// The transactions the wallet has seen confirmed, in block order (what
    /// `SubWallets::getTransactions` holds).
    pub fn confirmed(&self, ledger: &Ledger) -> Vec<TxView> {
        let key = self.address.key();
        let me = self.text();
        let mut out = Vec::new();
        for id in ledger.main_ids() {
            let Some(b) = ledger.block(id) else { continue };
            let cb = &b.block.coinbase;
            let mine: u64 = cb.outputs.iter().filter(|o| &o.key == key).map(|o| o.amount).fold(0, u64::saturating_add);
            if mine > 0 {
                out.push(TxView {
                    hash: b.block.coinbase_hash(),
                    block_height: b.height,
                    fee: 0,
                    is_coinbase: true,
                    timestamp: b.block.header.timestamp,
                    transfers: vec![(me.clone(), clamp_i64(mine))],
                    unlock_time: cb.unlock_time,
                });
            }
            for hash in &b.block.tx_hashes {
                let Some((tx, _)) = ledger.tx(hash) else { continue };
                if let Some(transfer) = self.transfer(tx) {
                    out.push(TxView {
                        hash: *hash,
                        block_height: b.height,
                        fee: tx.fee,
                        is_coinbase: false,
                        timestamp: b.block.header.timestamp,
                        transfers: vec![(me.clone(), transfer)],
                        unlock_time: 0,
                    });
                }
            }
        }
        out
    }

    /// Sent transactions not yet in a main-chain block (`getUnconfirmedTransactions`).
    pub fn unconfirmed(&self, ledger: &Ledger) -> Vec<TxView> {
        let me = self.text();
        self.sent
            .iter()
            .filter_map(|hash| ledger.tx(hash))
            .filter(|(_, block)| block.is_none())
            .map(|(tx, _)| TxView {
                hash: tx.hash,
                block_height: 0,
                fee: tx.fee,
                is_coinbase: false,
                timestamp: 0,
                transfers: vec![(me.clone(), self.transfer(tx).unwrap_or(0))],
                unlock_time: 0,
            })
            .collect()
    }

    /// The wallet's net balance change from a transaction, if it concerns the wallet.
    fn transfer(&self, tx: &PoolTx) -> Option<i64> {
        let me = self.text();
        let incoming: i128 = tx.destinations.iter().filter(|(a, _)| *a == me).map(|(_, v)| *v as i128).sum();
        let ours = self.sent.contains(&tx.hash);
        if !ours && incoming == 0 {
            return None;
        }
        let outgoing: i128 = if ours { tx.amount() as i128 + tx.fee as i128 } else { 0 };
        Some((incoming - outgoing).clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    }

    /// State for persistence.
    pub fn snapshot(&self) -> WalletSnapshot {
        WalletSnapshot {
            files: self.files.clone(),
            sent: self.sent.clone(),
            prepared: self
                .prepared
                .iter()
                .map(|p| super::ledger::StoredTx {
                    blob: hex::encode(&p.tx.blob),
                    fee: p.tx.fee,
                    destinations: p.tx.destinations.clone(),
                })
                .collect(),
            failures: self.failures.iter().cloned().collect(),
            stale_locks: self.stale_locks.clone(),
        }
    }

    /// Restores the persisted parts. A restarted wallet has forgotten its prepared
    /// transactions, but their inputs stay locked until `PUT /reset`.
    pub fn restore(&mut self, snapshot: &WalletSnapshot) -> Result<(), String> {
        self.files.extend(snapshot.files.clone());
        self.sent = snapshot.sent.clone();
        self.stale_locks = snapshot.stale_locks.clone();
        self.prepared.clear();
        for p in &snapshot.prepared {
            let blob = hex::decode(&p.blob).map_err(|e| format!("prepared transaction: {e}"))?;
            let hash = crate::chain::keccak::keccak(&blob);
            self.prepared
                .push(Prepared { tx: PoolTx { hash, blob, fee: p.fee, destinations: p.destinations.clone() } });
        }
        self.failures = snapshot.failures.iter().cloned().collect();
        self.restart();
        Ok(())
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The persisted wallet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WalletSnapshot {
    pub files: BTreeMap<String, String>,
    pub sent: Vec<Hash>,
    pub prepared: Vec<super::ledger::StoredTx>,
    pub failures: Vec<Failure>,
    #[serde(default)]
    pub stale_locks: Vec<(Hash, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::keccak::keccak;

    #[test]
    fn coinbase_locks_then_unlocks_and_sends_are_deducted() {
        let address = Address::from_key(super::super::ledger::derived_point("pool"));
        let mut wallet = Wallet::new(address, "pool.wallet", "pw", true);
        let mut ledger = Ledger::new(Some(1));
        let mut rng = rand::thread_rng();
        ledger.mine_other(*address.key(), 1_800_000_000, &mut rng);
        assert_eq!(wallet.balance(&ledger), (0, 400_000_000));
        let other = super::super::ledger::derived_point("other");
        // Block 1 unlocks (unlock_time 11) once the count reaches 10: 8 more blocks.
        for _ in 0..7 {
            ledger.mine_other(other, 1_800_000_000, &mut rng);
        }
        assert_eq!(wallet.balance(&ledger), (0, 400_000_000));
        ledger.mine_other(other, 1_800_000_000, &mut rng);
        assert_eq!(wallet.balance(&ledger), (400_000_000, 0));
        let blob = vec![1, 2, 3];
        let tx = PoolTx { hash: keccak(&blob), blob, fee: 1000, destinations: vec![("PAS1x".into(), 1_000_000)] };
        let hash = tx.hash;
        ledger.relay(tx);
        wallet.sent.push(hash);
        assert_eq!(wallet.balance(&ledger), (398_999_000, 0));
        assert_eq!(wallet.unconfirmed(&ledger).len(), 1);
        assert_eq!(wallet.unconfirmed(&ledger)[0].transfers[0].1, -1_001_000);
        ledger.mine_other(other, 1_800_000_000, &mut rng);
        assert!(wallet.unconfirmed(&ledger).is_empty());
        let confirmed = wallet.confirmed(&ledger);
        assert_eq!(confirmed.len(), 2);
        assert!(confirmed[0].is_coinbase);
        assert_eq!(confirmed[1].hash, hash);
        assert_eq!(confirmed[1].block_height, 10);
    }

    #[test]
    fn sends_and_prepares_take_only_their_own_failures_in_order() {
        let address = Address::from_key(super::super::ledger::derived_point("pool"));
        let mut wallet = Wallet::new(address, "pool.wallet", "pw", true);
        let failure = |kind| Failure { kind, code: 31, hold: Duration::ZERO };
        wallet.failures.push_back(failure(FailureKind::PrepareThenDrop));
        wallet.failures.push_back(failure(FailureKind::Error));
        wallet.failures.push_back(failure(FailureKind::PrepareThenHold));
        wallet.failures.push_back(failure(FailureKind::Timeout));
        assert_eq!(wallet.take_failure(false).map(|f| f.kind), Some(FailureKind::Error));
        assert_eq!(wallet.take_failure(true).map(|f| f.kind), Some(FailureKind::PrepareThenDrop));
        assert_eq!(wallet.take_failure(true).map(|f| f.kind), Some(FailureKind::PrepareThenHold));
        assert_eq!(wallet.take_failure(true), None);
        assert_eq!(wallet.take_failure(false).map(|f| f.kind), Some(FailureKind::Timeout));
    }

    #[test]
    fn prepared_transactions_lock_their_amount_until_sent_or_reset() {
        let address = Address::from_key(super::super::ledger::derived_point("pool"));
        let mut wallet = Wallet::new(address, "pool.wallet", "pw", true);
        let mut ledger = Ledger::new(Some(1));
        let mut rng = rand::thread_rng();
        ledger.mine_other(*address.key(), 1_800_000_000, &mut rng);
        let other = super::super::ledger::derived_point("other");
        for _ in 0..8 {
            ledger.mine_other(other, 1_800_000_000, &mut rng);
        }
        assert_eq!(wallet.balance(&ledger), (400_000_000, 0));
        let blob = vec![7, 7];
        let tx = PoolTx { hash: keccak(&blob), blob, fee: 1000, destinations: vec![("PAS1x".into(), 1_000_000)] };
        let hash = tx.hash;
        wallet.prepared.push(Prepared { tx });
        assert_eq!(wallet.balance(&ledger), (398_999_000, 1_001_000), "prepare locks amount + fee");
        wallet.restart();
        assert!(wallet.prepared.is_empty(), "a restart forgets prepared transactions");
        assert_eq!(wallet.balance(&ledger), (398_999_000, 1_001_000), "... but not their locks");
        assert!(!wallet.forget_prepared(&hash));
        let restored = {
            let mut w = Wallet::new(address, "pool.wallet", "pw", true);
            w.restore(&wallet.snapshot()).unwrap();
            w
        };
        assert_eq!(restored.balance(&ledger), (398_999_000, 1_001_000), "the lock survives a reload");
        wallet.reset();
        assert_eq!(wallet.balance(&ledger), (400_000_000, 0), "a rescan frees the inputs");
        let blob = vec![8, 8];
        let tx = PoolTx { hash: keccak(&blob), blob, fee: 1000, destinations: vec![("PAS1x".into(), 1_000_000)] };
        wallet.prepared.push(Prepared { tx });
        assert_eq!(wallet.balance(&ledger), (398_999_000, 1_001_000));
        wallet.reset();
        assert!(wallet.prepared.is_empty(), "a rescan drops a prepared transaction still held");
        assert_eq!(wallet.balance(&ledger), (400_000_000, 0));
    }
}

//! The PaymentProcessor actor: balances → transactions, through the wallet API, crash-safe.
//!
//! Each batch follows the journal: reserve (balance → pending, batch recorded), record the
//! intent to prepare (`preparing`), prepare the transaction (`/transactions/prepare/advanced`),
//! record its hash, relay it (`/transactions/send/prepared`), then finalize (pending → paid,
//! payment records). At every step Redis says what may have happened, so a crash or a wallet
//! failure is resolved by asking the wallet about the recorded hash. A batch is released only
//! when it provably was not sent; an ambiguous send leaves it `unknown` (reserved) until the
//! wallet says, then `held` for the operator. A batch whose prepare got no answer (`preparing`)
//! may have a prepared transaction holding the wallet's inputs: it is released only once the
//! wallet's locked balance shows those inputs free. Finalized batches are checked later for
//! confirmation. Addresses the wallet cannot pay are quarantined, and a run pays what fits in
//! the wallet's unlocked balance. Batches are paid one after another, never concurrently.
//! docs/PAYOUTS.md describes the states.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::leader::Lease;
use super::payouts::{self, PayoutPolicy};
use crate::chain::{Address, Hash};
use crate::node::wallet::{Destination, WalletClient, WalletError};
use crate::store::{BalanceRow, BatchDestination, Confirmation, JournalEntry, Store, StoreError};
use crate::stratum::unix_ms;

/// Payment settings.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// Between runs.
    pub interval: Duration,
    /// Payout rules.
    pub policy: PayoutPolicy,
    /// `payment_blocked.json`: addresses never paid (their balances are kept).
    pub blocked_file: PathBuf,
    /// The wallet file and password for `/wallet/open`.
    pub wallet_file: String,
    /// Password of the wallet file.
    pub wallet_password: String,
    /// The daemon the wallet should use.
    pub daemon_host: String,
    /// Its port.
    pub daemon_port: u16,
    /// The pool address (the wallet's primary address should be it).
    pub pool_address: String,
    /// A journaled batch is resolved only once it is this old: the lease TTL plus the wallet
    /// timeout, so a process that just lost the lease cannot still be talking to the wallet.
    pub settle_after: Duration,
    /// Rounds in a row a transaction must be absent from the wallet before its batch counts as
    /// not sent (or a finalized one as dropped): `payments.lookupRounds`.
    pub lookup_rounds: u64,
    /// An unresolved batch older than this is held for the operator: `payments.holdAfter`.
    pub hold_after: Duration,
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PaymentReport {
    /// Transactions relayed and finalized.
    pub sent: Vec<String>,
    /// Batches released back to balances.
    pub released: usize,
    /// Batches left journaled for a later run (outcome unknown yet).
    pub uncertain: usize,
    /// Payouts not attempted this run (the wallet's unlocked balance does not cover them).
    pub deferred: usize,
    /// Batches waiting for the operator.
    pub held: usize,
    /// Addresses quarantined during this run.
    pub quarantined: Vec<String>,
    /// Finalized batches flagged as dropped during this run.
    pub dropped: usize,
    /// Batches whose prepare had no answer, kept while the wallet's inputs may be locked by a
    /// transaction prepared for them (not yet held).
    pub waiting: usize,
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// Redis failed, or this process lost the lease (FENCED).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wallet failed in a way that stops this run.
    #[error("wallet: {0}")]
    Wallet(#[from] WalletError),
    /// `payment_blocked.json` exists but cannot be read: no payment until it is fixed.
    #[error("{0}")]
    BlockedList(String),
    /// The lease moved to another process during the run.
    #[error("leader lease lost during the run")]
    LostLease,
}

/// Reads `{"blockedAddresses":[...]}`; a missing file blocks nobody.
pub fn load_blocked(path: &PathBuf) -> Result<HashSet<String>, PaymentError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Blocked {
        blocked_addresses: Vec<String>,
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str::<Blocked>(&text).map(|b| b.blocked_addresses.into_iter().collect()).map_err(|e| {
                PaymentError::BlockedList(format!("{}: {e}; payments paused until it is fixed", path.display()))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(PaymentError::BlockedList(format!("{}: {e}; payments paused until it is fixed", path.display()))),
    }
}

fn wallet_error_kind(e: &WalletError) -> String {
    match e {
        WalletError::Unreachable(_) => "unreachable".into(),
        WalletError::Uncertain(_) => "uncertain".into(),
        WalletError::Unauthorized => "unauthorized".into(),
        WalletError::NoWalletOpen => "no_wallet_open".into(),
        WalletError::WalletAlreadyOpen => "already_open".into(),
        WalletError::Api { code, .. } => format!("code_{code}"),
        WalletError::Http { status, .. } => format!("http_{status}"),
        WalletError::Decode(_) => "decode".into(),
    }
}

async fn timed_wallet<T>(
    call: &'static str,
    fut: impl std::future::Future<Output = Result<T, WalletError>>,
) -> Result<T, WalletError> {
    let started = Instant::now();
    let result = fut.await;
    crate::metrics::wallet_rpc(call, started.elapsed(), result.as_ref().err().map(wallet_error_kind));
    result
}

/// Resolves the journal: what is known sent is finalized, what is known not sent is released,
/// and what is not known either way stays reserved (`unknown`) until the wallet says, or goes
/// to `held` for the operator once it is older than `hold_after`.
async fn resolve_journal(
    store: &Store,
    wallet: &WalletClient,
    token: &str,
    settings: &PaymentSettings,
    report: &mut PaymentReport,
) -> Result<(), PaymentError> {
    for entry in store.journal().await? {
        let age = Duration::from_millis(unix_ms().saturating_sub(entry.updated_ms));
        let hash = entry.tx_hash.as_deref().and_then(|h| Hash::from_hex(h).ok());
        match (entry.state.as_str(), hash) {
            ("sent", _) => {
                store.finalize_batch(token, &entry.id, unix_ms(), "relayed").await?;
                finalized(&entry, report);
            }
            // A process that just lost the lease may still be preparing or sending it.
            ("reserved" | "preparing" | "prepared", _) if age < settings.settle_after => report.uncertain += 1,
            // Reserved by this version, which records `preparing` before asking the wallet: the
            // wallet was never asked, so no transaction of it can exist.
            ("reserved", _) if entry.intent => {
                store
                    .release_batch(token, &entry.id, unix_ms(), "interrupted before the wallet was asked to prepare")
                    .await?;
                report.released += 1;
                crate::metrics::payment_batch("released", 0);
            }
            // Reserved by an earlier version, which asked the wallet without recording it first:
            // it may have prepared a transaction. Settled like a lost prepare answer.
            ("reserved", _) => {
                let note = "journaled by an earlier version without a prepare intent: the wallet may have prepared it";
                if store.batch_preparing(token, &entry.id, unix_ms(), note).await? {
                    let entry = JournalEntry { state: "preparing".into(), ..entry };
                    settle_preparing(store, wallet, token, settings, &entry, report).await?;
                }
            }
            ("preparing", _) | ("held", None) => {
                settle_preparing(store, wallet, token, settings, &entry, report).await?
            }
            // Prepared or unknown always carry a hash; without one nothing can be relayed.
            ("prepared" | "unknown", None) => {
                store
                    .release_batch(token, &entry.id, unix_ms(), "interrupted before a transaction was prepared")
                    .await?;
                report.released += 1;
                crate::metrics::payment_batch("released", 0);
            }
            ("prepared" | "unknown", Some(hash)) => {
                settle_unknown(store, wallet, token, settings, &entry, &hash, report).await?
            }
            ("held", Some(hash)) => {
                // Left to the operator, but what the wallet shows as sent is sent.
                if let Ok(Some(_)) = timed_wallet("transaction", wallet.transaction(&hash)).await {
                    store
                        .finalize_batch(token, &entry.id, unix_ms(), "the wallet lists the transaction (was held)")
                        .await?;
                    tracing::info!(batch = %entry.id, tx = %hash, "held payment found in the wallet: finalized");
                    finalized(&entry, report);
                } else {
                    report.held += 1;
                }
            }
            _ => report.held += 1,
        }
    }
    Ok(())
}

/// What the wallet says about a prepared hash whose send had no definitive answer:
/// listed (unconfirmed first, then confirmed) → sent; not listed → send the same prepared
/// transaction again (the wallet may still hold it); the wallet does not know the hash (58) or
/// cancelled it (57) and it is still not listed → one more absent round; `lookup_rounds` absent
/// rounds in a row → not sent, released. Anything else (the wallet or its daemon down) proves
/// nothing and keeps the batch reserved.
async fn settle_unknown(
    store: &Store,
    wallet: &WalletClient,
    token: &str,
    settings: &PaymentSettings,
    entry: &JournalEntry,
    hash: &Hash,
    report: &mut PaymentReport,
) -> Result<(), PaymentError> {
    let absent = match timed_wallet("transaction", wallet.transaction(hash)).await {
        Ok(Some(_)) => {
            store.finalize_batch(token, &entry.id, unix_ms(), "the wallet lists the transaction").await?;
            tracing::info!(batch = %entry.id, tx = %hash, "payment of unknown outcome was sent: finalized");
            finalized(entry, report);
            return Ok(());
        }
        Ok(None) => match timed_wallet("send_prepared", wallet.send_prepared(hash)).await {
            Ok(()) => {
                store.finalize_batch(token, &entry.id, unix_ms(), "relayed on retry").await?;
                tracing::info!(batch = %entry.id, tx = %hash, "prepared payment relayed on retry: finalized");
                finalized(entry, report);
                return Ok(());
            }
            Err(WalletError::Api { code: code @ (57 | 58), message }) => {
                // Sent meanwhile, forgotten by a wallet restart, or cancelled: look once more,
                // in case it moved into a block between the calls.
                match timed_wallet("transaction", wallet.transaction(hash)).await {
                    Ok(Some(_)) => {
                        store.finalize_batch(token, &entry.id, unix_ms(), "the wallet lists the transaction").await?;
                        finalized(entry, report);
                        return Ok(());
                    }
                    Ok(None) => Some(format!("the wallet does not list it and cannot send it ({code}: {message})")),
                    Err(e) => {
                        tracing::debug!(batch = %entry.id, "lookup failed: {e}");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(batch = %entry.id, tx = %hash, "payment still unresolved, retrying the send failed: {e}");
                None
            }
        },
        // A restarted wallet API: the run stops so the wallet is opened again first.
        Err(WalletError::NoWalletOpen) => return Err(WalletError::NoWalletOpen.into()),
        Err(e) => {
            tracing::warn!(batch = %entry.id, tx = %hash, "payment still unresolved, the wallet did not answer: {e}");
            None
        }
    };
    let what = absent.clone().unwrap_or_else(|| "the wallet could not be asked".into());
    let rounds = store.batch_unknown(token, &entry.id, unix_ms(), &what, absent.is_some()).await?;
    if rounds.is_some_and(|r| r >= settings.lookup_rounds) && inputs_free(store, wallet, entry).await? {
        let reason = format!("not sent: {what}, {} rounds in a row", settings.lookup_rounds);
        store.release_batch(token, &entry.id, unix_ms(), &reason).await?;
        tracing::warn!(batch = %entry.id, tx = %hash, "{reason}; amounts back to balances");
        report.released += 1;
        crate::metrics::payment_batch("released", 0);
        return Ok(());
    }
    let age = Duration::from_millis(unix_ms().saturating_sub(entry.created_ms));
    if age >= settings.hold_after {
        let why = format!("unresolved after {} s: {what}", age.as_secs());
        if store.hold_batch(token, &entry.id, unix_ms(), &why).await? {
            tracing::error!(batch = %entry.id, tx = %hash, "payment held for the operator ({why}): see `pastella-pool payments list`");
            crate::metrics::payment_batch("held", 0);
        }
        report.held += 1;
        return Ok(());
    }
    report.uncertain += 1;
    Ok(())
}

/// A batch whose prepare got no answer (`preparing`, or `held` from it): the wallet may hold a
/// transaction prepared for it, its inputs locked, whose hash the pool never learnt (it can
/// never relay it, but the wallet's own copy could still be sent until the wallet restarts).
/// Released once the wallet's locked balance shows no such inputs (the prepare never happened,
/// or the operator rescanned the wallet); until then kept reserved, logged with the operator's
/// remedy each run, and held past `hold_after`.
async fn settle_preparing(
    store: &Store,
    wallet: &WalletClient,
    token: &str,
    settings: &PaymentSettings,
    entry: &JournalEntry,
    report: &mut PaymentReport,
) -> Result<(), PaymentError> {
    let held = entry.state == "held";
    let why = match batch_inputs(store, wallet, entry).await? {
        Inputs::Free { locked, explained } => {
            let reason = format!(
                "no transaction prepared for it holds the wallet's inputs: {locked} locked, explained by the wallet's young block rewards and batches with a transaction ({explained})"
            );
            if store.release_batch(token, &entry.id, unix_ms(), &reason).await? {
                tracing::warn!(batch = %entry.id, state = %entry.state, "prepare had no answer, but {reason}; amounts back to balances");
                report.released += 1;
                crate::metrics::payment_batch("released", 0);
            }
            return Ok(());
        }
        Inputs::Locked(why) => {
            store.batch_waiting(token, &entry.id, &why).await?;
            tracing::warn!(
                batch = %entry.id,
                state = %entry.state,
                total = entry.total(),
                "payment kept reserved: {why}"
            );
            why
        }
        Inputs::ChangePending(why) => {
            tracing::info!(batch = %entry.id, "payment whose prepare had no answer kept reserved: {why}");
            why
        }
        Inputs::Unknown(e) => {
            tracing::warn!(batch = %entry.id, "payment whose prepare had no answer kept reserved: cannot read the wallet's balance ({e})");
            format!("the wallet's balance could not be read: {e}")
        }
    };
    if held {
        report.held += 1;
        return Ok(());
    }
    let age = Duration::from_millis(unix_ms().saturating_sub(entry.created_ms));
    if age >= settings.hold_after {
        let reason = format!("unresolved after {} s: {why}", age.as_secs());
        if store.hold_batch(token, &entry.id, unix_ms(), &reason).await? {
            tracing::error!(batch = %entry.id, "payment held for the operator ({reason}): see `pastella-pool payments list`");
            crate::metrics::payment_batch("held", 0);
        }
        report.held += 1;
        return Ok(());
    }
    report.waiting += 1;
    Ok(())
}

fn finalized(entry: &JournalEntry, report: &mut PaymentReport) {
    crate::metrics::payment_batch("sent", entry.total());
    report.sent.push(entry.tx_hash.clone().unwrap_or_default());
}

/// At most this many finalized batches are checked for confirmation per run.
const CONFIRMATION_CHECKS: usize = 50;

/// The later check of finalized batches: confirmed in a block → done; in the mempool → wait;
/// in neither for `lookup_rounds` runs in a row → flagged dropped (never paid again by itself).
async fn check_confirmations(
    store: &Store,
    wallet: &WalletClient,
    token: &str,
    settings: &PaymentSettings,
    report: &mut PaymentReport,
) -> Result<(), PaymentError> {
    for entry in store.confirming().await?.into_iter().take(CONFIRMATION_CHECKS) {
        let Some(hash) = entry.tx_hash.as_deref().and_then(|h| Hash::from_hex(h).ok()) else { continue };
        let outcome = match timed_wallet("transaction", wallet.transaction(&hash)).await {
            Ok(Some(tx)) if tx.block_height > 0 => Confirmation::Confirmed(tx.block_height),
            Ok(Some(_)) => Confirmation::Pending,
            Ok(None) => Confirmation::Missing,
            Err(_) => return Ok(()),
        };
        let decided = store.batch_confirmation(token, &entry.id, unix_ms(), outcome, settings.lookup_rounds).await?;
        if decided && outcome == Confirmation::Missing {
            report.dropped += 1;
            crate::metrics::payment_batch("dropped", 0);
            tracing::error!(
                batch = %entry.id,
                tx = %hash,
                total = entry.total(),
                "a finalized payment never confirmed (dropped from the mempool): its miners were NOT paid again; check the wallet and pay by hand if needed"
            );
        }
    }
    Ok(())
}

/// Quarantines every payable address that is not a valid Pastella address (full checksum);
/// returns the quarantined set.
async fn quarantine_invalid(
    store: &Store,
    token: &str,
    balances: &[BalanceRow],
    report: &mut PaymentReport,
) -> Result<HashSet<String>, PaymentError> {
    let mut quarantined: HashSet<String> = store.quarantined().await?.into_keys().collect();
    for row in balances.iter().filter(|r| r.balance > 0) {
        if quarantined.contains(&row.address) {
            continue;
        }
        if let Err(e) = Address::parse(&row.address) {
            quarantine(store, token, &row.address, &format!("invalid address: {e}"), report).await?;
            quarantined.insert(row.address.clone());
        }
    }
    Ok(quarantined)
}

async fn quarantine(
    store: &Store,
    token: &str,
    address: &str,
    reason: &str,
    report: &mut PaymentReport,
) -> Result<(), PaymentError> {
    if store.quarantine(token, address, reason, unix_ms()).await? {
        tracing::error!(miner = %address, "address quarantined, its balance is kept and never paid: {reason}");
        report.quarantined.push(address.to_string());
    }
    Ok(())
}

/// A new run re-plans after a destination was quarantined; this bounds the re-plans.
const MAX_REPLANS: usize = 8;

/// One payment run: resolve the journal, check finalized payments, plan, and pay batch after
/// batch, what fits in the wallet's unlocked balance.
pub async fn pay_once(
    store: &Store,
    wallet: &WalletClient,
    lease: &Lease,
    token: &str,
    settings: &PaymentSettings,
) -> Result<PaymentReport, PaymentError> {
    let mut report = PaymentReport::default();
    resolve_journal(store, wallet, token, settings, &mut report).await?;
    check_confirmations(store, wallet, token, settings, &mut report).await?;
    if report.uncertain > 0 {
        // Earlier batches are still undecided: their amounts are pending, not payable anyway,
        // but wait so the wallet's view settles before spending more.
        return Ok(report);
    }
    let blocked = load_blocked(&settings.blocked_file)?;
    let mut unlocked: Option<u64> = None;
    for _ in 0..MAX_REPLANS {
        let balances = store.balances().await?;
        crate::metrics::owed(balances.iter().map(|b| b.balance).sum());
        let mut excluded = quarantine_invalid(store, token, &balances, &mut report).await?;
        excluded.extend(blocked.iter().cloned());
        let batches = payouts::plan(&balances, &excluded, &settings.policy);
        if batches.is_empty() {
            break;
        }
        let mut budget = match unlocked {
            Some(b) => b,
            None => timed_wallet("balance", wallet.balance()).await?.unlocked,
        };
        report.deferred = 0;
        let mut replan = false;
        let mut queue: std::collections::VecDeque<Vec<BatchDestination>> = batches.into();
        while let Some(planned) = queue.pop_front() {
            let Some(batch) = payouts::fit(&planned, budget, &settings.policy) else {
                report.deferred += planned.len();
                crate::metrics::payment_batch("deferred", 0);
                continue;
            };
            report.deferred += planned.len() - batch.len();
            if !lease.holds(token) {
                return Err(PaymentError::LostLease);
            }
            let fee = settings.policy.transfer_fee;
            match pay_batch(store, wallet, lease, token, &batch, fee, &mut report).await? {
                BatchOutcome::Sent(tx) => {
                    budget = budget.saturating_sub(batch.iter().map(|d| d.amount).sum::<u64>() + fee);
                    report.sent.push(tx);
                }
                BatchOutcome::Released => report.released += 1,
                BatchOutcome::Skipped => {}
                BatchOutcome::Uncertain => {
                    report.uncertain += 1;
                    return Ok(report);
                }
                BatchOutcome::Quarantined => {
                    report.released += 1;
                    replan = true;
                    break;
                }
                BatchOutcome::Refused(reason) => {
                    // No destination was refused on its own: split the batch and pay the
                    // halves (each prepared half is sent at once, nothing is left prepared);
                    // a single destination refused is the one at fault.
                    report.released += 1;
                    if let [only] = batch.as_slice() {
                        quarantine(store, token, &only.address, &reason, &mut report).await?;
                    } else {
                        let (first, second) = batch.split_at(batch.len() / 2);
                        for half in [second, first] {
                            if let Some(half) = payouts::fit(half, u64::MAX, &settings.policy) {
                                queue.push_front(half);
                            }
                        }
                    }
                }
            }
        }
        unlocked = Some(budget);
        if !replan {
            break;
        }
    }
    if report.deferred > 0 {
        tracing::warn!(
            deferred = report.deferred,
            unlocked = unlocked.unwrap_or(0),
            "wallet's unlocked balance does not cover every payout; the largest that fit were paid, the rest waits"
        );
    }
    Ok(report)
}

enum BatchOutcome {
    Sent(String),
    Released,
    Skipped,
    Uncertain,
    /// Released because the wallet refused destinations, which are quarantined: plan again.
    Quarantined,
    /// Released: the wallet refused the batch for a reason that may concern one destination,
    /// but none was refused on its own (the reason given).
    Refused(String),
}

/// Whether a failed prepare definitely prepared nothing: the wallet answered with a refusal
/// (an error code, a 4xx), or was never reached. A lost or broken answer, a timeout or a 5xx
/// may follow a transaction the wallet prepared and whose inputs it locked.
fn prepare_refused(e: &WalletError) -> bool {
    match e {
        WalletError::Api { .. }
        | WalletError::Unreachable(_)
        | WalletError::Unauthorized
        | WalletError::NoWalletOpen
        | WalletError::WalletAlreadyOpen => true,
        WalletError::Http { status, .. } => *status < 500,
        WalletError::Uncertain(_) | WalletError::Decode(_) => false,
    }
}

/// Wallet error codes that never concern one destination: no point looking for a bad one.
const NOT_A_DESTINATION: [i64; 8] = [9, 11, 17, 30, 31, 56, 57, 58];

/// The destinations the wallet refuses, with its reason: checked one by one with the local
/// validation and the wallet's `/addresses/validate`, which (unlike preparing halves of the
/// batch) locks no inputs.
async fn find_rejected(wallet: &WalletClient, batch: &[BatchDestination]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in batch {
        if let Err(e) = Address::parse(&d.address) {
            out.push((d.address.clone(), format!("invalid address: {e}")));
            continue;
        }
        match timed_wallet("validate_address", wallet.validate_address(&d.address)).await {
            Ok(()) => {}
            Err(WalletError::Api { code, message }) => {
                out.push((d.address.clone(), format!("the wallet refuses it (error {code}): {message}")))
            }
            Err(_) => break,
        }
    }
    out
}

async fn pay_batch(
    store: &Store,
    wallet: &WalletClient,
    lease: &Lease,
    token: &str,
    batch: &[BatchDestination],
    tx_fee: u64,
    report: &mut PaymentReport,
) -> Result<BatchOutcome, PaymentError> {
    let id = format!("{}-{:08x}", unix_ms(), rand::random::<u32>());
    if !store.reserve_batch(token, &id, unix_ms(), batch, tx_fee).await? {
        tracing::debug!(batch = %id, "balances changed since planning; batch skipped");
        return Ok(BatchOutcome::Skipped);
    }
    // The intent first: from the moment the wallet is asked, it may hold a prepared transaction
    // (its inputs locked) whose hash only its answer would tell.
    store.batch_preparing(token, &id, unix_ms(), "the wallet was asked to prepare it; no answer recorded").await?;
    if !lease.holds(token) {
        return Err(PaymentError::LostLease);
    }
    let destinations: Vec<Destination> =
        batch.iter().map(|d| Destination { address: d.address.clone(), amount: d.amount }).collect();
    let prepared = match timed_wallet("prepare", wallet.prepare_advanced(&destinations, Some(tx_fee))).await {
        Ok(prepared) => prepared,
        Err(e) if !prepare_refused(&e) => {
            // The wallet may have prepared it and locked its inputs: kept `preparing` until its
            // locked balance shows those inputs free (settle_preparing).
            tracing::warn!(batch = %id, destinations = batch.len(), "the wallet gave no definitive answer to prepare ({e}); kept reserved until its inputs are known to be free");
            crate::metrics::payment_batch("prepare_unknown", 0);
            return Ok(BatchOutcome::Uncertain);
        }
        Err(e) => {
            // The wallet answered and prepared nothing: no transaction of it can exist.
            tracing::error!(batch = %id, destinations = batch.len(), "wallet refused to prepare the payment: {e}; amounts back to balances");
            store.release_batch(token, &id, unix_ms(), &format!("prepare failed: {e}")).await?;
            crate::metrics::payment_batch("released", 0);
            let code = match &e {
                WalletError::Api { code, .. } => *code,
                other => return Err(other.clone().into()),
            };
            if NOT_A_DESTINATION.contains(&code) {
                return Ok(BatchOutcome::Released);
            }
            let rejected = find_rejected(wallet, batch).await;
            if rejected.is_empty() {
                let message = match &e {
                    WalletError::Api { message, .. } => message.clone(),
                    _ => String::new(),
                };
                return Ok(BatchOutcome::Refused(format!("the wallet refuses it (error {code}): {message}")));
            }
            for (address, reason) in rejected {
                quarantine(store, token, &address, &reason, report).await?;
            }
            return Ok(BatchOutcome::Quarantined);
        }
    };
    let hash = prepared.transaction_hash;
    store.batch_prepared(token, &id, &hash.to_hex(), prepared.fee, unix_ms()).await?;
    if !lease.holds(token) {
        // Left journaled as prepared; whoever leads next settles it by hash.
        return Err(PaymentError::LostLease);
    }
    let total: u64 = batch.iter().map(|d| d.amount).sum();
    if let Err(e) = timed_wallet("send_prepared", wallet.send_prepared(&hash)).await {
        // No error of send/prepared proves "not sent": it may have been relayed before the
        // error (codes 30/31 follow a relay too), and the prepared transaction can still be
        // sent until the wallet restarts. Keep it reserved; later rounds look it up and
        // re-send the same hash.
        tracing::warn!(batch = %id, tx = %hash, "payment outcome unknown ({e}); kept reserved, the wallet is asked again next run");
        store.batch_unknown(token, &id, unix_ms(), &format!("send failed: {e}"), false).await?;
        crate::metrics::payment_batch("unknown", 0);
        return Ok(BatchOutcome::Uncertain);
    }
    store.batch_sent(token, &id, unix_ms()).await?;
    store.finalize_batch(token, &id, unix_ms(), "relayed").await?;
    crate::metrics::payment_batch("sent", total);
    tracing::info!(batch = %id, tx = %hash, destinations = batch.len(), total, fee = prepared.fee, "Payment sent");
    Ok(BatchOutcome::Sent(hash.to_hex()))
}

/// The wallet's balance against what the books say it should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalletBooks {
    /// The wallet's unlocked balance.
    pub unlocked: u64,
    /// The wallet's locked balance.
    pub locked: u64,
    /// What the books owe miners: Σ balance + Σ pending.
    pub owed: u64,
    /// Rewards of the pool's blocks not yet credited (candidates): what may still be locked
    /// as young coinbase outputs.
    pub immature: u64,
    /// Payment batches journaled (reserved, preparing, prepared, unknown, held, sent).
    pub batches_in_flight: usize,
    /// Of those, the batches without a recorded transaction (reserved, preparing, or held
    /// from preparing): a transaction prepared for one locks at most its amount + fee.
    pub batches_without_tx: usize,
    /// Amounts + fees of the batches without a recorded transaction: inputs they may hold
    /// explain that much locked balance (never counted as having left the wallet: the pool
    /// cannot send a transaction whose hash it does not know).
    pub in_flight_without_tx: u64,
    /// Finalized payments not yet seen in a block (their change is locked until then).
    pub payments_unconfirmed: usize,
    /// Amounts + fees of journaled batches with a prepared transaction: they may already have
    /// left the wallet (sent, the pool killed before it recorded so) while the books still
    /// count them as pending.
    pub in_flight_prepared: u64,
}

impl WalletBooks {
    /// True when nothing is locked beyond young block rewards and `in_flight` (amounts + fees
    /// of prepared transactions), and no payment's change is waiting for a block.
    pub fn explains_locked(&self, in_flight: u64) -> bool {
        self.payments_unconfirmed == 0 && self.locked <= self.immature.saturating_add(in_flight)
    }

    /// Every gap, in words; empty when the wallet holds what the books say.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let holds = self.unlocked.saturating_add(self.locked);
        if holds.saturating_add(self.in_flight_prepared) < self.owed {
            out.push(format!(
                "the wallet holds {holds} ({} unlocked + {} locked), less than the {} the books owe miners (less {} of prepared payments that may have left it)",
                self.unlocked, self.locked, self.owed, self.in_flight_prepared
            ));
        }
        // With no transaction in flight, only young block rewards and what batches without a
        // transaction may have prepared can be locked (a sent transaction's change is locked
        // until its block, so then this part is not judged).
        let explained = self.immature.saturating_add(self.in_flight_without_tx);
        let judged = self.batches_in_flight == self.batches_without_tx && self.payments_unconfirmed == 0;
        if judged && self.locked > explained {
            out.push(format!(
                "the wallet has {} locked but the books explain at most {explained} (young block rewards and batches being prepared): inputs of a prepared transaction the wallet forgot stay locked until the wallet rescans (PUT /reset)",
                self.locked
            ));
        }
        out
    }
}

/// What the wallet's locked balance says about the inputs a batch's transaction may hold.
enum Inputs {
    /// Everything locked is explained by young block rewards and the other batches that have a
    /// transaction, with no payment's change waiting for a block.
    Free {
        /// The wallet's locked balance.
        locked: u64,
        /// What explains it.
        explained: u64,
    },
    /// Finalized payments wait for a block: their change is locked, so the locked balance
    /// proves nothing until they are in one (why).
    ChangePending(String),
    /// More is locked than that explains: the batch's own transaction may hold inputs (why).
    Locked(String),
    /// The wallet's balance could not be read.
    Unknown(WalletError),
}

/// Block rewards the wallet itself holds locked: its coinbase transactions whose unlock height
/// the network has not reached (`unlock_time > block count + 1`, the devnet's and the real
/// wallet's `isInputUnlocked`). Exact where the pool's candidates are not: a candidate may
/// already be unlocked, still waiting for its submission, or orphaned. `None` when a block
/// arrived while the wallet was read (the figures may not match: ask again next run).
async fn young_coinbase(wallet: &WalletClient, count_before: u64) -> Result<Option<u64>, WalletError> {
    let txs = timed_wallet("transactions", wallet.transactions()).await?;
    let count = timed_wallet("status", wallet.status()).await?.network_block_count;
    if count != count_before {
        return Ok(None);
    }
    let locked = txs
        .iter()
        .filter(|t| t.is_coinbase_transaction && t.unlock_time > count.saturating_add(1))
        .flat_map(|t| t.transfers.iter())
        .filter_map(|t| u64::try_from(t.amount).ok())
        .fold(0u64, u64::saturating_add);
    Ok(Some(locked))
}

/// Whether the inputs a transaction of `entry` may have locked are free: the wallet's locked
/// balance is at most its own young block rewards plus the amounts + fees of the *other*
/// batches that have a recorded transaction, and no finalized payment waits for a block (its
/// change would be locked). Batches without a transaction (another `preparing` one) explain
/// nothing here: if they did, two lost prepares could each be explained by the other's locked
/// inputs. The young rewards are the wallet's own (its coinbase transactions still locked), not
/// the pool's candidates, which may count a reward the wallet does not hold locked and so hide
/// a prepared transaction of that size.
async fn batch_inputs(store: &Store, wallet: &WalletClient, entry: &JournalEntry) -> Result<Inputs, StoreError> {
    let count = match timed_wallet("status", wallet.status()).await {
        Ok(status) => status.network_block_count,
        Err(e) => return Ok(Inputs::Unknown(e)),
    };
    let books = match wallet_books(store, wallet).await {
        Ok(books) => books,
        Err(PaymentError::Wallet(e)) => return Ok(Inputs::Unknown(e)),
        Err(PaymentError::Store(e)) => return Err(e),
        Err(e) => return Ok(Inputs::Unknown(WalletError::Decode(e.to_string()))),
    };
    let young = match young_coinbase(wallet, count).await {
        Ok(Some(young)) => young,
        Ok(None) => {
            return Ok(Inputs::ChangePending(
                "a block arrived while the wallet was read; its inputs are checked again next run".into(),
            ))
        }
        Err(e) => return Ok(Inputs::Unknown(e)),
    };
    let others: u64 = store
        .journal()
        .await?
        .iter()
        .filter(|e| e.id != entry.id && e.tx_hash.is_some())
        .map(|e| e.total() + e.tx_fee)
        .sum();
    let explained = young.saturating_add(others);
    let books = WalletBooks { immature: young, ..books };
    if books.explains_locked(others) {
        return Ok(Inputs::Free { locked: books.locked, explained });
    }
    if books.payments_unconfirmed > 0 {
        return Ok(Inputs::ChangePending(format!(
            "{} finalized payment(s) not yet in a block lock their change; the wallet's inputs are checked again next run",
            books.payments_unconfirmed
        )));
    }
    Ok(Inputs::Locked(format!(
        "the wallet has {} locked, its young block rewards and batches with a transaction explain {explained}: a transaction prepared for this batch may hold the rest; rescan the wallet (PUT /reset, or restart it and let it rescan; a restart first makes sure it forgot that transaction) and the pool releases the batch by itself",
        books.locked
    )))
}

/// Whether the wallet's inputs that `entry`'s prepared transaction locked are free again (see
/// [`batch_inputs`]). A wallet that forgot a prepared transaction keeps its inputs locked until
/// it rescans (`PUT /reset`).
async fn inputs_free(store: &Store, wallet: &WalletClient, entry: &JournalEntry) -> Result<bool, PaymentError> {
    match batch_inputs(store, wallet, entry).await? {
        Inputs::Free { .. } => Ok(true),
        Inputs::Locked(why) | Inputs::ChangePending(why) => {
            tracing::warn!(
                batch = %entry.id,
                "the wallet no longer knows this payment, but funds it may hold are still locked: kept reserved ({why})"
            );
            Ok(false)
        }
        Inputs::Unknown(e) => {
            tracing::debug!(batch = %entry.id, "wallet balance: {e}");
            Ok(false)
        }
    }
}

/// Reads the wallet's balance and the books it should match.
pub async fn wallet_books(store: &Store, wallet: &WalletClient) -> Result<WalletBooks, PaymentError> {
    let balance = timed_wallet("balance", wallet.balance()).await?;
    let owed = store.balances_and_pending().await?;
    let immature = store.candidates().await?.iter().filter_map(|c| c.reward).sum();
    let journal = store.journal().await?;
    let in_flight_prepared = journal.iter().filter(|e| e.tx_hash.is_some()).map(|e| e.total() + e.tx_fee).sum();
    let without_tx: Vec<&JournalEntry> = journal.iter().filter(|e| e.tx_hash.is_none()).collect();
    Ok(WalletBooks {
        unlocked: balance.unlocked,
        locked: balance.locked,
        owed,
        immature,
        batches_in_flight: journal.len(),
        batches_without_tx: without_tx.len(),
        in_flight_without_tx: without_tx.iter().map(|e| e.total() + e.tx_fee).sum(),
        payments_unconfirmed: store.confirming().await?.len(),
        in_flight_prepared,
    })
}

/// What `pastella-pool payments resolve` did with a held batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Recorded as sent: pending → paid.
    Sent,
    /// Recorded as not sent: pending → balance (its prepared transaction deleted first).
    NotSent,
}

/// Why the operator's resolution was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No such batch.
    #[error("no payment batch {0}; `pastella-pool payments list` shows the held ones")]
    NoBatch(String),
    /// Only held batches are the operator's; the pool settles the others itself.
    #[error("batch {id} is {state}, not held: the pool settles it itself")]
    NotHeld {
        /// Batch id.
        id: String,
        /// Its state.
        state: String,
    },
    /// The wallet contradicts the operator.
    #[error("{0}")]
    Contradicted(String),
    /// The wallet could not be asked: nothing is decided without it.
    #[error("cannot check the wallet ({0}); nothing changed")]
    Wallet(#[from] WalletError),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Settles a held batch as the operator says, unless the wallet shows otherwise: `sent` needs
/// the wallet to list the transaction; "not sent" first deletes the prepared transaction from
/// the wallet (so it can never be sent later) and then needs the wallet not to list it.
pub async fn resolve_held(
    store: &Store,
    wallet: &WalletClient,
    id: &str,
    outcome: Resolution,
) -> Result<Resolution, ResolveError> {
    let entry = store.batch(id).await?.ok_or_else(|| ResolveError::NoBatch(id.to_string()))?;
    let journaled = ["reserved", "preparing", "held"].contains(&entry.state.as_str());
    if journaled && entry.tx_hash.is_none() {
        return resolve_without_tx(store, wallet, &entry, outcome).await;
    }
    if entry.state != "held" {
        return Err(ResolveError::NotHeld { id: id.to_string(), state: entry.state });
    }
    let hash = entry.tx_hash.as_deref().and_then(|h| Hash::from_hex(h).ok());
    let listed = match &hash {
        Some(hash) => {
            if outcome == Resolution::NotSent && wallet.delete_prepared(hash).await? {
                tracing::info!(batch = %id, tx = %hash, "deleted the prepared transaction from the wallet");
            }
            wallet.transaction(hash).await?
        }
        None => None,
    };
    let now = unix_ms();
    match (outcome, listed) {
        (Resolution::Sent, Some(tx)) => {
            store
                .finalize_batch(
                    "",
                    id,
                    now,
                    &format!("operator: sent (the wallet lists it at height {})", tx.block_height),
                )
                .await?;
        }
        (Resolution::Sent, None) => {
            return Err(ResolveError::Contradicted(format!(
                "the wallet does not list transaction {}: it was not sent; use --not-sent",
                entry.tx_hash.unwrap_or_default()
            )))
        }
        (Resolution::NotSent, Some(tx)) => {
            return Err(ResolveError::Contradicted(format!(
                "the wallet lists transaction {} (height {}, 0 = in the mempool): it was sent; use --sent",
                tx.hash, tx.block_height
            )))
        }
        (Resolution::NotSent, None) => {
            store.release_batch("", id, now, "operator: not sent (the wallet does not list it)").await?;
        }
    }
    Ok(outcome)
}

/// The operator's resolution of a batch whose prepare had no answer: no hash was recorded, so
/// nothing shows it sent (`--sent` is refused); "not sent" is accepted for a held batch only
/// once the wallet's inputs are free, since until then a transaction prepared for it may still
/// exist (and could be sent from the wallet by hand).
async fn resolve_without_tx(
    store: &Store,
    wallet: &WalletClient,
    entry: &JournalEntry,
    outcome: Resolution,
) -> Result<Resolution, ResolveError> {
    let id = &entry.id;
    if outcome == Resolution::Sent {
        return Err(ResolveError::Contradicted(format!(
            "batch {id} has no transaction hash (the wallet's answer to prepare was lost): nothing can show it was sent, and the pool never sent it; use --not-sent once the wallet's inputs are free"
        )));
    }
    match batch_inputs(store, wallet, entry).await? {
        Inputs::Free { .. } if entry.state == "held" => {
            store
                .release_batch("", id, unix_ms(), "operator: not sent (no hash recorded, the wallet's inputs are free)")
                .await?;
            Ok(Resolution::NotSent)
        }
        Inputs::Free { .. } => Err(ResolveError::NotHeld { id: id.clone(), state: entry.state.clone() }),
        Inputs::Locked(why) | Inputs::ChangePending(why) => Err(ResolveError::Contradicted(format!(
            "batch {id}: a transaction prepared for it may still exist in the wallet and could be sent: {why}"
        ))),
        Inputs::Unknown(e) => Err(ResolveError::Wallet(e)),
    }
}

/// The gauges of the states that need attention.
async fn report_states(store: &Store) -> Result<(), StoreError> {
    let journal = store.journal().await?;
    let count = |state: &str| journal.iter().filter(|e| e.state == state).count();
    let dropped = store.dropped().await?.len();
    let quarantined = store.quarantined().await?.len();
    crate::metrics::payment_states(count("unknown"), count("held"), dropped, quarantined);
    crate::metrics::payment_batches_preparing(count("preparing"), journal.iter().filter(|e| e.waiting_inputs).count());
    Ok(())
}

/// Runs [`pay_once`] every interval while this process holds the lease.
pub struct PaymentProcessor {
    store: Store,
    wallet: WalletClient,
    lease: Lease,
    settings: PaymentSettings,
    running: bool,
    wallet_ready: bool,
    /// The run timer, re-armed when a reload changes `payments.interval`.
    timer: Option<SpawnHandle>,
}

impl PaymentProcessor {
    /// A processor paying while `lease` is held.
    pub fn new(store: Store, wallet: WalletClient, lease: Lease, settings: PaymentSettings) -> PaymentProcessor {
        PaymentProcessor { store, wallet, lease, settings, running: false, wallet_ready: false, timer: None }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let Some(token) = self.lease.token() else { return };
        if self.running {
            return;
        }
        self.running = true;
        let (store, wallet, lease, settings) =
            (self.store.clone(), self.wallet.clone(), self.lease.clone(), self.settings.clone());
        let wallet_ready = self.wallet_ready;
        let fut = async move {
            if !wallet_ready {
                open_wallet(&wallet, &settings).await?;
            }
            let report = pay_once(&store, &wallet, &lease, &token, &settings).await;
            if let Err(e) = report_states(&store).await {
                tracing::debug!("payment state gauges: {e}");
            }
            report
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.running = false;
            match result {
                Ok(report) => {
                    act.wallet_ready = true;
                    if !report.sent.is_empty() || report.released > 0 || !report.quarantined.is_empty() {
                        tracing::info!(
                            sent = report.sent.len(),
                            released = report.released,
                            uncertain = report.uncertain,
                            held = report.held,
                            waiting = report.waiting,
                            deferred = report.deferred,
                            quarantined = report.quarantined.len(),
                            "payment run done"
                        );
                    }
                }
                Err(e) => {
                    // A restarted wallet API has no wallet open: open it again next run.
                    if matches!(e, PaymentError::Wallet(WalletError::NoWalletOpen)) {
                        act.wallet_ready = false;
                    }
                    tracing::error!("payments: {e}; balances are unchanged and retried next run")
                }
            }
        }));
    }
}

/// Opens the pool wallet (403 = already open) and checks its address.
async fn open_wallet(wallet: &WalletClient, s: &PaymentSettings) -> Result<(), PaymentError> {
    match timed_wallet("open", wallet.open(&s.wallet_file, &s.wallet_password, &s.daemon_host, s.daemon_port)).await {
        Ok(()) | Err(WalletError::WalletAlreadyOpen) => {}
        Err(e) => return Err(e.into()),
    }
    let address = timed_wallet("primary_address", wallet.primary_address()).await?;
    if address != s.pool_address {
        tracing::error!(
            wallet = %address,
            pool = %s.pool_address,
            "the wallet's primary address is not poolAddress: block rewards go to poolAddress, payments come from this wallet"
        );
    }
    Ok(())
}

impl Actor for PaymentProcessor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(Duration::from_secs(1), |act, ctx| act.tick(ctx));
        self.timer = Some(ctx.run_interval(self.settings.interval, |act, ctx| act.tick(ctx)));
    }
}

/// New settings from a config reload: the next run uses them (a run in progress finishes with
/// the ones it started with).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdatePaymentSettings(pub PaymentSettings);

impl Handler<UpdatePaymentSettings> for PaymentProcessor {
    type Result = ();
    fn handle(&mut self, msg: UpdatePaymentSettings, ctx: &mut Context<Self>) {
        let rearm = msg.0.interval != self.settings.interval;
        self.settings = msg.0;
        if rearm {
            super::rearm(ctx, &mut self.timer, self.settings.interval, Self::tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn books() -> WalletBooks {
        WalletBooks { unlocked: 900, locked: 100, owed: 1000, immature: 100, ..WalletBooks::default() }
    }

    #[test]
    fn a_wallet_that_holds_what_the_books_say_has_no_problem() {
        assert_eq!(books().problems(), Vec::<String>::new());
    }

    #[test]
    fn a_wallet_short_of_what_is_owed_is_a_problem() {
        let b = WalletBooks { unlocked: 899, ..books() };
        // A prepared payment of 1 may have left the wallet already: no gap then.
        assert!(WalletBooks { in_flight_prepared: 1, ..b.clone() }.problems().is_empty());
        assert_eq!(b.problems().len(), 1, "{:?}", b.problems());
        assert!(b.problems()[0].contains("less than the 1000 the books owe"));
    }

    #[test]
    fn locked_funds_nothing_explains_are_a_problem_when_nothing_is_in_flight() {
        let b = WalletBooks { locked: 300, ..books() };
        assert!(b.problems()[0].contains("300 locked"), "{:?}", b.problems());
        // While payments are in flight their change is locked too: not judged.
        assert!(WalletBooks { batches_in_flight: 1, ..b.clone() }.problems().is_empty());
        assert!(WalletBooks { payments_unconfirmed: 2, ..b.clone() }.problems().is_empty());
    }

    #[test]
    fn a_batch_being_prepared_explains_its_amount_of_locked_balance_but_never_left_the_wallet() {
        // A lost prepare of 200 (amount + fee): its inputs are locked in the wallet.
        let b = WalletBooks {
            locked: 300,
            unlocked: 700,
            batches_in_flight: 1,
            batches_without_tx: 1,
            in_flight_without_tx: 200,
            ..books()
        };
        assert_eq!(b.problems(), Vec::<String>::new(), "young rewards 100 + the batch's 200");
        let more = WalletBooks { locked: 301, unlocked: 699, ..b.clone() };
        assert!(more.problems()[0].contains("301 locked"), "{:?}", more.problems());
        // Not counted as possibly sent: the wallet must still hold everything owed.
        let short = WalletBooks { unlocked: 699, ..b.clone() };
        assert!(short.problems()[0].contains("less than the 1000"), "{:?}", short.problems());
        // With a batch that has a transaction in flight, its change may be locked: not judged.
        let with_tx = WalletBooks { batches_in_flight: 2, in_flight_prepared: 50, ..more.clone() };
        assert!(with_tx.problems().is_empty(), "{:?}", with_tx.problems());
    }

    #[test]
    fn only_an_answered_refusal_or_no_connection_proves_nothing_was_prepared() {
        let api = WalletError::Api { code: 11, message: "not enough".into() };
        assert!(prepare_refused(&api));
        assert!(prepare_refused(&WalletError::Unreachable("connection refused".into())));
        assert!(prepare_refused(&WalletError::Http { status: 400, body: String::new() }));
        assert!(!prepare_refused(&WalletError::Http { status: 502, body: String::new() }));
        assert!(!prepare_refused(&WalletError::Uncertain("timed out".into())));
        assert!(!prepare_refused(&WalletError::Decode("201 without a hash".into())));
    }

    #[test]
    fn inputs_count_as_free_only_when_the_locked_balance_is_explained() {
        let b = WalletBooks { locked: 300, ..books() };
        assert!(!b.explains_locked(0), "200 more locked than young rewards");
        assert!(b.explains_locked(200), "another prepared batch holds it");
        assert!(!WalletBooks { payments_unconfirmed: 1, ..b.clone() }.explains_locked(200), "change pending");
        assert!(books().explains_locked(0));
    }
}

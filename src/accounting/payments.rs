//! The PaymentProcessor actor: balances → transactions, through the wallet API, crash-safe.
//!
//! Each batch follows the journal: reserve (balance → pending, batch recorded), prepare the
//! transaction (`/transactions/prepare/advanced`), record its hash, relay it
//! (`/transactions/send/prepared`), then finalize (pending → paid, payment records). At every
//! step Redis says what may have happened, so a crash or a wallet failure is resolved by asking
//! the wallet whether the recorded hash exists: sent → finalize, not sent → release. Batches
//! are paid one after another, never concurrently.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::leader::Lease;
use super::payouts::{self, PayoutPolicy};
use crate::chain::Hash;
use crate::node::wallet::{Destination, WalletClient, WalletError};
use crate::store::{BatchDestination, JournalEntry, Store, StoreError};
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
    /// Batches not attempted (wallet balance too low).
    pub deferred: usize,
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

/// Resolves journaled batches old enough to be nobody else's business any more.
async fn resolve_journal(
    store: &Store,
    wallet: &WalletClient,
    token: &str,
    settle_after: Duration,
    report: &mut PaymentReport,
) -> Result<(), PaymentError> {
    for entry in store.journal().await? {
        let age = Duration::from_millis(unix_ms().saturating_sub(entry.updated_ms));
        if entry.state != "sent" && age < settle_after {
            report.uncertain += 1;
            continue;
        }
        resolve_entry(store, wallet, token, &entry, report).await?;
    }
    Ok(())
}

async fn resolve_entry(
    store: &Store,
    wallet: &WalletClient,
    token: &str,
    entry: &JournalEntry,
    report: &mut PaymentReport,
) -> Result<(), PaymentError> {
    let now = unix_ms();
    match (entry.state.as_str(), entry.tx_hash.as_deref().and_then(|h| Hash::from_hex(h).ok())) {
        ("sent", _) => {
            store.finalize_batch(token, &entry.id, now).await?;
            finalized(entry, report);
        }
        ("prepared", Some(hash)) => match timed_wallet("transaction", wallet.transaction(&hash)).await? {
            Some(_) => {
                store.finalize_batch(token, &entry.id, now).await?;
                tracing::info!(batch = %entry.id, tx = %hash, "journaled payment was sent before the interruption: finalized");
                finalized(entry, report);
            }
            None => {
                store.release_batch(token, &entry.id, now, "not sent (wallet does not know the transaction)").await?;
                tracing::info!(batch = %entry.id, tx = %hash, "journaled payment was never sent: amounts back to balances");
                report.released += 1;
                crate::metrics::payment_batch("released", 0);
            }
        },
        // Reserved but no transaction recorded: nothing this pool prepared can be relayed.
        _ => {
            store.release_batch(token, &entry.id, now, "interrupted before a transaction was prepared").await?;
            report.released += 1;
            crate::metrics::payment_batch("released", 0);
        }
    }
    Ok(())
}

fn finalized(entry: &JournalEntry, report: &mut PaymentReport) {
    let sent: u64 = entry.destinations.iter().map(|d| d.amount).sum();
    crate::metrics::payment_batch("sent", sent);
    report.sent.push(entry.tx_hash.clone().unwrap_or_default());
}

/// One payment run: resolve the journal, plan, and pay batch after batch.
pub async fn pay_once(
    store: &Store,
    wallet: &WalletClient,
    lease: &Lease,
    token: &str,
    settings: &PaymentSettings,
) -> Result<PaymentReport, PaymentError> {
    let mut report = PaymentReport::default();
    resolve_journal(store, wallet, token, settings.settle_after, &mut report).await?;
    if report.uncertain > 0 {
        // Earlier batches are still undecided: their amounts are pending, not payable anyway,
        // but wait so the wallet's view settles before spending more.
        return Ok(report);
    }
    let blocked = load_blocked(&settings.blocked_file)?;
    let balances = store.balances().await?;
    let owed: u64 = balances.iter().map(|b| b.balance).sum();
    crate::metrics::owed(owed);
    let batches = payouts::plan(&balances, &blocked, &settings.policy);
    if batches.is_empty() {
        return Ok(report);
    }
    let mut unlocked = timed_wallet("balance", wallet.balance()).await?.unlocked;
    let fee = settings.policy.transfer_fee;
    for batch in batches {
        let sending: u64 = batch.iter().map(|d| d.amount).sum();
        if sending + fee > unlocked {
            report.deferred += 1;
            crate::metrics::payment_batch("deferred", 0);
            continue;
        }
        if !lease.holds(token) {
            return Err(PaymentError::LostLease);
        }
        match pay_batch(store, wallet, lease, token, &batch, fee).await? {
            BatchOutcome::Sent(tx) => {
                unlocked -= sending + fee;
                report.sent.push(tx);
            }
            BatchOutcome::Released => report.released += 1,
            BatchOutcome::Skipped => {}
            BatchOutcome::Uncertain => {
                report.uncertain += 1;
                break;
            }
        }
    }
    if report.deferred > 0 {
        tracing::warn!(
            deferred = report.deferred,
            unlocked,
            "wallet's unlocked balance does not cover every payout; the rest waits for the next run"
        );
    }
    Ok(report)
}

enum BatchOutcome {
    Sent(String),
    Released,
    Skipped,
    Uncertain,
}

async fn pay_batch(
    store: &Store,
    wallet: &WalletClient,
    lease: &Lease,
    token: &str,
    batch: &[BatchDestination],
    tx_fee: u64,
) -> Result<BatchOutcome, PaymentError> {
    let id = format!("{}-{:08x}", unix_ms(), rand::random::<u32>());
    if !store.reserve_batch(token, &id, unix_ms(), batch, tx_fee).await? {
        tracing::debug!(batch = %id, "balances changed since planning; batch skipped");
        return Ok(BatchOutcome::Skipped);
    }
    let destinations: Vec<Destination> =
        batch.iter().map(|d| Destination { address: d.address.clone(), amount: d.amount }).collect();
    let prepared = match timed_wallet("prepare", wallet.prepare_advanced(&destinations, Some(tx_fee))).await {
        Ok(prepared) => prepared,
        Err(e) => {
            // Nothing was relayed: a prepared transaction is only relayed by send_prepared.
            tracing::error!(batch = %id, destinations = batch.len(), "wallet refused to prepare the payment: {e}; amounts back to balances");
            store.release_batch(token, &id, unix_ms(), &format!("prepare failed: {e}")).await?;
            crate::metrics::payment_batch("released", 0);
            return match e {
                WalletError::Api { .. } => Ok(BatchOutcome::Released),
                other => Err(other.into()),
            };
        }
    };
    let hash = prepared.transaction_hash;
    store.batch_prepared(token, &id, &hash.to_hex(), prepared.fee, unix_ms()).await?;
    if !lease.holds(token) {
        // Leave it journaled; whoever leads next releases it (never relayed).
        return Err(PaymentError::LostLease);
    }
    let sent = timed_wallet("send_prepared", wallet.send_prepared(&hash)).await;
    let total: u64 = batch.iter().map(|d| d.amount).sum();
    let relayed = match sent {
        Ok(()) => true,
        Err(e @ (WalletError::Api { .. } | WalletError::Unreachable(_))) => {
            tracing::error!(batch = %id, tx = %hash, "wallet did not relay the payment: {e}; amounts back to balances");
            store.release_batch(token, &id, unix_ms(), &format!("send failed: {e}")).await?;
            crate::metrics::payment_batch("released", 0);
            return Ok(BatchOutcome::Released);
        }
        Err(e) => {
            // The request reached the wallet but no complete answer came back: ask it.
            tracing::warn!(batch = %id, tx = %hash, "payment outcome unknown ({e}); asking the wallet");
            let mut known = None;
            for attempt in 0..3u64 {
                tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
                if let Ok(answer) = timed_wallet("transaction", wallet.transaction(&hash)).await {
                    known = Some(answer.is_some());
                    if answer.is_some() {
                        break;
                    }
                }
            }
            match known {
                Some(true) => true,
                _ => {
                    // Not seen (yet): keep it journaled as prepared; a later run decides.
                    tracing::warn!(batch = %id, tx = %hash, "payment not confirmed by the wallet yet; left in the journal");
                    crate::metrics::payment_batch("uncertain", 0);
                    return Ok(BatchOutcome::Uncertain);
                }
            }
        }
    };
    debug_assert!(relayed);
    store.batch_sent(token, &id, unix_ms()).await?;
    store.finalize_batch(token, &id, unix_ms()).await?;
    crate::metrics::payment_batch("sent", total);
    tracing::info!(batch = %id, tx = %hash, destinations = batch.len(), total, fee = prepared.fee, "Payment sent");
    Ok(BatchOutcome::Sent(hash.to_hex()))
}

/// Runs [`pay_once`] every interval while this process holds the lease.
pub struct PaymentProcessor {
    store: Store,
    wallet: WalletClient,
    lease: Lease,
    settings: PaymentSettings,
    running: bool,
    wallet_ready: bool,
}

impl PaymentProcessor {
    /// A processor paying while `lease` is held.
    pub fn new(store: Store, wallet: WalletClient, lease: Lease, settings: PaymentSettings) -> PaymentProcessor {
        PaymentProcessor { store, wallet, lease, settings, running: false, wallet_ready: false }
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
            pay_once(&store, &wallet, &lease, &token, &settings).await
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.running = false;
            match result {
                Ok(report) => {
                    act.wallet_ready = true;
                    if !report.sent.is_empty() || report.released > 0 {
                        tracing::info!(
                            sent = report.sent.len(),
                            released = report.released,
                            uncertain = report.uncertain,
                            "payment run done"
                        );
                    }
                }
                Err(e) => tracing::error!("payments: {e}; balances are unchanged and retried next run"),
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
        ctx.run_interval(self.settings.interval, |act, ctx| act.tick(ctx));
    }
}

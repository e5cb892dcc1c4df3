//! Money: the leader lease, block crediting and orphaning, balances, and the payment journal.
//! Every write is one Lua script: atomic, guarded by the state it expects (so a retry or a
//! second process is a no-op) and fenced by the leader token (so a process that lost the
//! lease cannot write). Each keeps `credited = balance + pending + paid + fees` per address.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use super::{timed, Store, StoreError};

macro_rules! script {
    ($name:ident, $file:literal) => {
        fn $name() -> &'static Script {
            static SCRIPT: OnceLock<Script> = OnceLock::new();
            SCRIPT.get_or_init(|| Script::new(include_str!($file)))
        }
    };
}

script!(lease_acquire, "lua/lease_acquire.lua");
script!(lease_renew, "lua/lease_renew.lua");
script!(lease_release, "lua/lease_release.lua");
script!(credit_block_script, "lua/credit_block.lua");
script!(orphan_block_script, "lua/orphan_block.lua");
script!(reserve_batch_script, "lua/reserve_batch.lua");
script!(batch_state_script, "lua/batch_state.lua");
script!(finalize_batch_script, "lua/finalize_batch.lua");
script!(release_batch_script, "lua/release_batch.lua");
script!(import_old_balance_script, "lua/import_old_balance.lua");
script!(batch_unknown_script, "lua/batch_unknown.lua");
script!(hold_batch_script, "lua/hold_batch.lua");
script!(quarantine_script, "lua/quarantine_address.lua");
script!(batch_confirmation_script, "lua/batch_confirmation.lua");
script!(batch_waiting_script, "lua/batch_waiting.lua");

/// A block candidate waiting for maturity (from `blocks:candidates` + `blocks:info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Height.
    pub height: u64,
    /// Block id (hex).
    pub hash: String,
    /// Finder address.
    pub login: String,
    /// Solo block.
    pub solo: bool,
    /// The pool's coinbase output recorded at submission; `None` for a candidate the old pool
    /// recorded (it kept no template data).
    pub reward: Option<u64>,
    /// The `blocks:candidates` member.
    pub member: String,
}

/// One address's payable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceRow {
    /// Address.
    pub address: String,
    /// Unpaid credited balance.
    pub balance: u64,
    /// Per-miner payout threshold, if set.
    pub min_payout_level: Option<u64>,
}

/// One destination of a payment batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchDestination {
    /// Address paid.
    pub address: String,
    /// Atomic units sent (decimal string in Redis, see the scripts).
    #[serde(with = "decimal")]
    pub amount: u64,
    /// Transfer fee charged to the miner.
    #[serde(with = "decimal")]
    pub fee: u64,
    /// Taken from the balance: `amount + fee`.
    #[serde(with = "decimal")]
    pub reserved: u64,
}

/// A journaled payment batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Batch id.
    pub id: String,
    /// `reserved`, `preparing`, `prepared`, `unknown`, `held` or `sent` while journaled;
    /// `finalized` or `released` after.
    pub state: String,
    /// Transaction hash once prepared.
    pub tx_hash: Option<String>,
    /// When the batch was reserved, unix ms.
    pub created_ms: u64,
    /// Last state change, unix ms.
    pub updated_ms: u64,
    /// Rounds in a row the wallet knew neither the transaction nor its prepared hash.
    pub absent_rounds: u64,
    /// The transaction's network fee.
    pub tx_fee: u64,
    /// The last wallet error or the reason it is held.
    pub error: Option<String>,
    /// Destinations.
    pub destinations: Vec<BatchDestination>,
    /// Reserved by a version that records `preparing` before asking the wallet to prepare: a
    /// `reserved` batch with it never reached the wallet. Without it (an earlier version's
    /// journal), a `reserved` batch may have a prepared transaction.
    pub intent: bool,
    /// Kept because the wallet's locked balance may hold the inputs of a transaction prepared
    /// for it whose hash was never recorded (see `batch_waiting`).
    pub waiting_inputs: bool,
}

impl JournalEntry {
    /// Σ amounts sent to the destinations.
    pub fn total(&self) -> u64 {
        self.destinations.iter().map(|d| d.amount).sum()
    }
}

/// How a finalized batch's later confirmation check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// In a block at this height.
    Confirmed(u64),
    /// Still in the mempool.
    Pending,
    /// Neither in the mempool nor in a block.
    Missing,
}

/// Amounts as JSON strings: Redis' Lua turns large numbers into exponent notation.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Pool-wide sums from `totals` plus per-address sums, for audits and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoneyAudit {
    /// Σ credited over all addresses.
    pub credited: u64,
    /// Σ balance.
    pub balance: u64,
    /// Σ pending.
    pub pending: u64,
    /// Σ paid.
    pub paid: u64,
    /// Σ fees charged to miners.
    pub fees: u64,
    /// Addresses whose own `credited` differs from `balance + pending + paid + fees`.
    pub broken: Vec<String>,
    /// `totals` hash.
    pub totals: HashMap<String, i64>,
    /// Confirmed blocks in `blocks:matured`.
    pub blocks_confirmed: u64,
    /// Orphaned blocks in `blocks:matured`.
    pub blocks_orphaned: u64,
    /// Σ of the confirmed blocks' `credited` records.
    pub credited_by_blocks: u64,
    /// Block hashes resolved (confirmed or orphaned) more than once.
    pub resolved_twice: Vec<String>,
    /// Confirmed blocks whose per-address credits do not add up to their `credited` record.
    pub block_mismatch: Vec<String>,
    /// Payment batches journaled but not yet finalized or released.
    pub in_flight_batches: usize,
    /// Journaled batches whose send had no definitive outcome yet (`unknown`), by id.
    pub unknown_batches: Vec<String>,
    /// Batches waiting for the operator (`held`), by id.
    pub held_batches: Vec<String>,
    /// Batches whose prepare had no answer (`preparing`, or held from it), kept while the
    /// wallet's inputs may be locked by a transaction prepared for them: (id, why).
    pub waiting_inputs: Vec<(String, String)>,
    /// Quarantined addresses (never paid, balance kept) with the reason.
    pub quarantined: Vec<(String, String)>,
    /// Finalized batches whose transaction never confirmed (dropped from the mempool), by id.
    pub dropped_batches: Vec<String>,
}

impl MoneyAudit {
    /// Every broken rule, in words; empty when the books balance.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.broken.iter().map(|a| format!("{a}: credited != balance + pending + paid + fees")).collect();
        // Balances imported from the old pool were credited there, not by a block here.
        let imported = self.totals.get("imported").copied().unwrap_or(0);
        let totals_credited = self.totals.get("credited").copied().unwrap_or(0);
        if totals_credited + imported != self.credited as i64 {
            out.push(format!(
                "totals.credited {totals_credited} + imported {imported} != {} credited to the balances",
                self.credited
            ));
        }
        if self.credited_by_blocks as i64 + imported != self.credited as i64 {
            out.push(format!(
                "the confirmed blocks credited {} (+ imported {imported}), the balances were credited {}",
                self.credited_by_blocks, self.credited
            ));
        }
        out.extend(self.resolved_twice.iter().map(|h| format!("block {h} resolved more than once")));
        out.extend(self.block_mismatch.iter().map(|h| format!("block {h}: its credits do not add up to its record")));
        out.extend(self.held_batches.iter().map(|id| {
            format!("payment batch {id} is held: its outcome is unknown; see `pastella-pool payments list`")
        }));
        out.extend(self.dropped_batches.iter().map(|id| {
            format!("payment batch {id} was finalized but its transaction never confirmed (dropped); not re-paid, check the wallet")
        }));
        out
    }
}

fn field_u64(map: &HashMap<String, String>, key: &str) -> u64 {
    map.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl Store {
    // ---- leader lease ----

    /// Takes the unlocker/payments lease if free; returns the fencing token.
    pub async fn acquire_lease(&self, instance: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        let mut invocation = lease_acquire().prepare_invoke();
        invocation.arg(&self.prefix).arg(instance).arg(ttl.as_millis() as u64);
        self.acked("lease_acquire", &invocation).await
    }

    /// Extends the lease; false if `token` no longer holds it.
    pub async fn renew_lease(&self, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut invocation = lease_renew().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(ttl.as_millis() as u64);
        let renewed: i64 = self.acked("lease_renew", &invocation).await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up (clean shutdown).
    pub async fn release_lease(&self, token: &str) -> Result<(), StoreError> {
        let mut invocation = lease_release().prepare_invoke();
        invocation.arg(&self.prefix).arg(token);
        let _: i64 = self.acked("lease_release", &invocation).await?;
        Ok(())
    }

    // ---- blocks ----

    /// Every block candidate, lowest height first.
    pub async fn candidates(&self) -> Result<Vec<Candidate>, StoreError> {
        let key = self.key("blocks:candidates");
        let members: Vec<(String, f64)> =
            timed("candidates", async { self.conn().zrange_withscores(&key, 0, -1).await }).await?;
        let mut out = Vec::with_capacity(members.len());
        for (member, score) in members {
            let fields: Vec<&str> = member.split(':').collect();
            if fields.len() < 3 {
                tracing::warn!(member, "ignoring a malformed block candidate");
                continue;
            }
            let hash = fields[2].to_string();
            let info: HashMap<String, String> =
                timed("block_info", async { self.conn().hgetall(self.key(&format!("blocks:info:{hash}"))).await })
                    .await?;
            out.push(Candidate {
                height: score as u64,
                login: fields[1].to_string(),
                solo: fields[0] == "solo",
                reward: info.get("reward").and_then(|r| r.parse().ok()),
                hash,
                member,
            });
        }
        Ok(out)
    }

    /// The PPLNS window snapshot of a block.
    pub async fn block_window(&self, hash: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        let key = self.key(&format!("blocks:window:{hash}"));
        let raw: HashMap<String, String> = timed("block_window", async { self.conn().hgetall(&key).await }).await?;
        Ok(raw.into_iter().filter_map(|(k, v)| v.parse().ok().map(|v| (k, v))).collect())
    }

    /// Credits a confirmed block: `credits` to balances, exactly once per block, with the
    /// `terms` of its split (its window and credits expire after `terms.keep`). Returns false
    /// if it was no longer pending.
    #[allow(clippy::too_many_arguments)]
    pub async fn credit_block(
        &self,
        token: &str,
        hash: &str,
        height: u64,
        credits: &BTreeMap<String, u64>,
        pool_fee: u64,
        finder_reward: u64,
        dust: u64,
        now: u64,
        terms: &super::PayoutTerms,
    ) -> Result<bool, StoreError> {
        let total: u64 = credits.values().sum();
        let mut invocation = credit_block_script().prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(token)
            .arg(hash)
            .arg(height)
            .arg(now)
            .arg(pool_fee)
            .arg(finder_reward)
            .arg(dust)
            .arg(total.to_string())
            .arg(credits.len());
        for (address, amount) in credits {
            invocation.arg(address).arg(amount.to_string());
        }
        invocation.arg(terms.fee_bps).arg(terms.finder_bps).arg(terms.keep.as_secs().max(1));
        let done: i64 = self.acked("credit_block", &invocation).await?;
        Ok(done == 1)
    }

    /// Marks a pending block orphaned. Returns false if it was no longer pending.
    /// Its window snapshot is kept for `keep`.
    pub async fn orphan_block(
        &self,
        token: &str,
        hash: &str,
        height: u64,
        now: u64,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let mut invocation = orphan_block_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(hash).arg(height).arg(now).arg(keep.as_secs().max(1));
        let done: i64 = self.acked("orphan_block", &invocation).await?;
        Ok(done == 1)
    }

    // ---- balances ----

    /// Every address with a balance record.
    pub async fn balances(&self) -> Result<Vec<BalanceRow>, StoreError> {
        let addresses: Vec<String> =
            timed("balances_index", async { self.conn().smembers(self.key("balances:index")).await }).await?;
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for address in &addresses {
            pipe.cmd("HMGET").arg(self.key(&format!("balances:{address}"))).arg("balance").arg("minPayoutLevel");
        }
        let rows: Vec<(Option<u64>, Option<u64>)> = timed("balances", pipe.query_async(&mut self.conn())).await?;
        Ok(addresses
            .into_iter()
            .zip(rows)
            .map(|(address, (balance, level))| BalanceRow {
                address,
                balance: balance.unwrap_or(0),
                min_payout_level: level,
            })
            .collect())
    }

    /// Σ balance + Σ pending over every address: what the books owe miners.
    pub async fn balances_and_pending(&self) -> Result<u64, StoreError> {
        let addresses: Vec<String> =
            timed("balances_index", async { self.conn().smembers(self.key("balances:index")).await }).await?;
        if addresses.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for address in &addresses {
            pipe.cmd("HMGET").arg(self.key(&format!("balances:{address}"))).arg("balance").arg("pending");
        }
        let rows: Vec<(Option<u64>, Option<u64>)> = timed("balances", pipe.query_async(&mut self.conn())).await?;
        Ok(rows.into_iter().map(|(b, p)| b.unwrap_or(0) + p.unwrap_or(0)).sum())
    }

    /// Imports the old pool's `balance`/`paid`/`minPayoutLevel` fields from `workers:<address>`
    /// hashes, once per address (the fields are moved, not copied). Returns addresses imported.
    pub async fn import_old_balances(&self) -> Result<usize, StoreError> {
        let done: bool =
            timed("migrations", async { self.conn().sismember(self.key("migrations"), "workers-balances").await })
                .await?;
        if done {
            return Ok(0);
        }
        let pattern = self.key("workers:*");
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = timed("scan_workers", async {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut self.conn())
                    .await
            })
            .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let prefix = self.key("workers:");
        let mut imported = 0;
        for key in keys {
            let Some(address) = key.strip_prefix(&prefix) else { continue };
            let mut invocation = import_old_balance_script().prepare_invoke();
            invocation.arg(&self.prefix).arg(address);
            // The old pool checked only length and prefix: a bad address is kept, never paid.
            let invalid = crate::chain::Address::parse(address).err().map(|e| e.to_string()).unwrap_or_default();
            invocation.arg(invalid);
            let moved: redis::Value = self.acked("import_balance", &invocation).await?;
            if !matches!(moved, redis::Value::Int(0)) {
                imported += 1;
            }
        }
        timed("migrations", async {
            let _: i64 = self.conn().sadd(self.key("migrations"), "workers-balances").await?;
            Ok(())
        })
        .await?;
        Ok(imported)
    }

    // ---- payment journal ----

    /// Journals a batch and moves its amounts from balance to pending. Returns false (and
    /// changes nothing) if a balance no longer covers its payout.
    pub async fn reserve_batch(
        &self,
        token: &str,
        id: &str,
        now_ms: u64,
        destinations: &[BatchDestination],
        tx_fee: u64,
    ) -> Result<bool, StoreError> {
        let total: u64 = destinations.iter().map(|d| d.amount).sum();
        let fees: u64 = destinations.iter().map(|d| d.fee).sum();
        let json = serde_json::to_string(destinations).unwrap_or_default();
        let mut invocation = reserve_batch_script().prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(token)
            .arg(id)
            .arg(now_ms)
            .arg(json)
            .arg(total.to_string())
            .arg(tx_fee.to_string())
            .arg(destinations.len());
        for d in destinations {
            invocation.arg(&d.address).arg(d.reserved.to_string());
        }
        invocation.arg(fees.to_string());
        let done: i64 = self.acked("reserve_batch", &invocation).await?;
        Ok(done == 1)
    }

    /// Records the prepared transaction of a batch being prepared.
    pub async fn batch_prepared(
        &self,
        token: &str,
        id: &str,
        tx_hash: &str,
        tx_fee: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.batch_state(
            token,
            id,
            "preparing",
            "prepared",
            now_ms,
            &[("txHash", tx_hash), ("txFee", &tx_fee.to_string())],
        )
        .await
    }

    /// Records the intent to prepare, before the wallet is asked: `reserved` → `preparing`. From
    /// then on the wallet may hold a prepared transaction for the batch whose hash the journal
    /// does not know. `note` says why (recorded as the batch's `error`).
    pub async fn batch_preparing(&self, token: &str, id: &str, now_ms: u64, note: &str) -> Result<bool, StoreError> {
        self.batch_state(token, id, "reserved", "preparing", now_ms, &[("error", note)]).await
    }

    /// A batch without a transaction hash kept because the wallet's inputs may be locked by a
    /// transaction prepared for it: records `why` (no amount, no `updated` change). False if
    /// it is not `preparing` or `held` without a hash.
    pub async fn batch_waiting(&self, token: &str, id: &str, why: &str) -> Result<bool, StoreError> {
        let mut invocation = batch_waiting_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(id).arg(why);
        let done: i64 = self.acked("batch_waiting", &invocation).await?;
        Ok(done == 1)
    }

    /// Records that a prepared batch was relayed.
    pub async fn batch_sent(&self, token: &str, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.batch_state(token, id, "prepared", "sent", now_ms, &[]).await
    }

    async fn batch_state(
        &self,
        token: &str,
        id: &str,
        from: &str,
        to: &str,
        now_ms: u64,
        fields: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        let mut invocation = batch_state_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(id).arg(from).arg(to).arg(now_ms);
        for (k, v) in fields {
            invocation.arg(*k).arg(*v);
        }
        let done: i64 = self.acked("batch_state", &invocation).await?;
        Ok(done == 1)
    }

    /// Pending → paid for a sent batch (payment records written). Idempotent. `token` empty:
    /// the operator, for a held batch only. `decided`: how it is known to be sent.
    pub async fn finalize_batch(&self, token: &str, id: &str, now_ms: u64, decided: &str) -> Result<bool, StoreError> {
        let mut invocation = finalize_batch_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(id).arg(now_ms / 1000).arg(now_ms).arg(decided);
        let done: i64 = self.acked("finalize_batch", &invocation).await?;
        Ok(done == 1)
    }

    /// Pending → balance for a batch that was not sent. Idempotent. `token` empty: the
    /// operator, for a held batch only.
    pub async fn release_batch(&self, token: &str, id: &str, now_ms: u64, reason: &str) -> Result<bool, StoreError> {
        let mut invocation = release_batch_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(id).arg(now_ms).arg(reason);
        let done: i64 = self.acked("release_batch", &invocation).await?;
        Ok(done == 1)
    }

    /// Batches neither finalized nor released, oldest first.
    pub async fn journal(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.batches_in("payments:journal").await
    }

    /// Finalized batches whose transaction was not yet seen in a block, oldest first.
    pub async fn confirming(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.batches_in("payments:confirming").await
    }

    /// Finalized batches flagged as dropped (never confirmed), oldest first.
    pub async fn dropped(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.batches_in("payments:dropped").await
    }

    async fn batches_in(&self, index: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let ids: Vec<String> = timed("journal", async { self.conn().zrange(self.key(index), 0, -1).await }).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(entry) = self.batch(&id).await? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// One batch by id, whatever its state.
    pub async fn batch(&self, id: &str) -> Result<Option<JournalEntry>, StoreError> {
        let raw: HashMap<String, String> =
            timed("journal_batch", async { self.conn().hgetall(self.key(&format!("payments:batch:{id}"))).await })
                .await?;
        if raw.is_empty() {
            return Ok(None);
        }
        let destinations = raw.get("destinations").and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
        Ok(Some(JournalEntry {
            state: raw.get("state").cloned().unwrap_or_default(),
            tx_hash: raw.get("txHash").cloned(),
            created_ms: field_u64(&raw, "created"),
            updated_ms: field_u64(&raw, "updated"),
            absent_rounds: field_u64(&raw, "absentRounds"),
            tx_fee: field_u64(&raw, "txFee"),
            error: raw.get("held").or(raw.get("error")).cloned(),
            destinations,
            intent: raw.get("intent").is_some_and(|v| v == "1"),
            waiting_inputs: raw.get("waiting").is_some_and(|v| v == "inputs"),
            id: id.to_string(),
        }))
    }

    /// A send without a definitive outcome: the batch becomes (or stays) `unknown`, its amounts
    /// reserved. `absent`: this round the wallet had neither the transaction nor the prepared
    /// hash. Returns the absent rounds in a row, or `None` if the batch was not `prepared` or
    /// `unknown`.
    pub async fn batch_unknown(
        &self,
        token: &str,
        id: &str,
        now_ms: u64,
        what: &str,
        absent: bool,
    ) -> Result<Option<u64>, StoreError> {
        let mut invocation = batch_unknown_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(id).arg(now_ms).arg(what).arg(if absent { "1" } else { "0" });
        let rounds: i64 = self.acked("batch_unknown", &invocation).await?;
        Ok(u64::try_from(rounds).ok())
    }

    /// `unknown`, `prepared` or `preparing` → `held`: left to the operator, amounts still
    /// reserved.
    pub async fn hold_batch(&self, token: &str, id: &str, now_ms: u64, why: &str) -> Result<bool, StoreError> {
        let mut invocation = hold_batch_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(id).arg(now_ms).arg(why);
        let done: i64 = self.acked("hold_batch", &invocation).await?;
        Ok(done == 1)
    }

    /// Records the later confirmation check of a finalized batch; true when this call
    /// confirmed it or flagged it dropped (after `limit` missing rounds in a row).
    pub async fn batch_confirmation(
        &self,
        token: &str,
        id: &str,
        now_ms: u64,
        outcome: Confirmation,
        limit: u64,
    ) -> Result<bool, StoreError> {
        let (name, height) = match outcome {
            Confirmation::Confirmed(h) => ("confirmed", h),
            Confirmation::Pending => ("pending", 0),
            Confirmation::Missing => ("missing", 0),
        };
        let mut invocation = batch_confirmation_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(id).arg(now_ms).arg(name).arg(limit).arg(height);
        let done: i64 = self.acked("batch_confirmation", &invocation).await?;
        Ok(done == 1)
    }

    /// Quarantines an address: kept with its balance, never batched. False if it already was.
    pub async fn quarantine(&self, token: &str, address: &str, reason: &str, now_ms: u64) -> Result<bool, StoreError> {
        let mut invocation = quarantine_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(token).arg(address).arg(reason).arg(now_ms);
        let done: i64 = self.acked("quarantine", &invocation).await?;
        Ok(done == 1)
    }

    /// Quarantined addresses and why, sorted by address.
    pub async fn quarantined(&self) -> Result<BTreeMap<String, String>, StoreError> {
        timed("quarantined", async { self.conn().hgetall(self.key("payments:quarantine")).await }).await
    }

    /// Sums every balance record and checks each address's own invariant.
    pub async fn audit(&self) -> Result<MoneyAudit, StoreError> {
        let addresses: Vec<String> =
            timed("balances_index", async { self.conn().smembers(self.key("balances:index")).await }).await?;
        let mut audit = MoneyAudit::default();
        let mut pipe = redis::pipe();
        for address in &addresses {
            pipe.cmd("HGETALL").arg(self.key(&format!("balances:{address}")));
        }
        let rows: Vec<HashMap<String, String>> =
            if addresses.is_empty() { Vec::new() } else { timed("audit", pipe.query_async(&mut self.conn())).await? };
        for (address, row) in addresses.into_iter().zip(rows) {
            let (credited, balance, pending, paid, fees) = (
                field_u64(&row, "credited"),
                field_u64(&row, "balance"),
                field_u64(&row, "pending"),
                field_u64(&row, "paid"),
                field_u64(&row, "fees"),
            );
            if credited != balance + pending + paid + fees {
                audit.broken.push(address);
            }
            audit.credited += credited;
            audit.balance += balance;
            audit.pending += pending;
            audit.paid += paid;
            audit.fees += fees;
        }
        audit.totals = timed("totals", async { self.conn().hgetall(self.key("totals")).await }).await?;
        self.audit_blocks(&mut audit).await?;
        let journal = self.journal().await?;
        audit.in_flight_batches = journal.len();
        for entry in journal {
            if entry.waiting_inputs {
                let why = entry.error.clone().unwrap_or_default();
                audit.waiting_inputs.push((entry.id.clone(), why));
            }
            match entry.state.as_str() {
                "unknown" => audit.unknown_batches.push(entry.id),
                "held" => audit.held_batches.push(entry.id),
                _ => {}
            }
        }
        audit.quarantined = self.quarantined().await?.into_iter().collect();
        audit.dropped_batches = self.dropped().await?.into_iter().map(|e| e.id).collect();
        Ok(audit)
    }

    /// Checks `blocks:matured`: every hash resolved once, and each confirmed block's credits
    /// (`blocks:credits:<hash>`, until they expire) adding up to its own `credited` record.
    async fn audit_blocks(&self, audit: &mut MoneyAudit) -> Result<(), StoreError> {
        let matured: Vec<String> =
            timed("audit_matured", async { self.conn().zrange(self.key("blocks:matured"), 0, -1).await }).await?;
        let mut seen = std::collections::HashSet::new();
        let mut confirmed = Vec::new();
        for member in &matured {
            // The 8 candidate fields, then `:0:<reward>` (confirmed) or `:1` (orphaned).
            let fields: Vec<&str> = member.split(':').collect();
            let Some(hash) = fields.get(2) else { continue };
            if !seen.insert(hash.to_string()) {
                audit.resolved_twice.push(hash.to_string());
            }
            if fields.len() == 10 && fields[8] == "0" {
                confirmed.push(hash.to_string());
            } else if fields.len() == 9 && fields[8] == "1" {
                audit.blocks_orphaned += 1;
            }
        }
        audit.blocks_confirmed = confirmed.len() as u64;
        if confirmed.is_empty() {
            return Ok(());
        }
        let recorded = self.block_info_field(&confirmed, "credited").await?;
        let expires = self.block_info_field(&confirmed, "payoutExpiresAt").await?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut pipe = redis::pipe();
        for hash in &confirmed {
            pipe.cmd("HGETALL").arg(self.key(&format!("blocks:credits:{hash}")));
        }
        let credits: Vec<HashMap<String, String>> = timed("audit_credits", pipe.query_async(&mut self.conn())).await?;
        for (((hash, recorded), credits), expires) in confirmed.into_iter().zip(recorded).zip(credits).zip(expires) {
            let recorded: u64 = recorded.and_then(|v| v.parse().ok()).unwrap_or(0);
            let sum: u64 = credits.values().filter_map(|v| v.parse::<u64>().ok()).sum();
            // The per-block credits expire with the payout record (blockUnlocker.payoutRecordDays).
            let expired = credits.is_empty() && expires.and_then(|e| e.parse::<u64>().ok()).is_some_and(|e| e <= now);
            if sum != recorded && !expired {
                audit.block_mismatch.push(hash);
            }
            audit.credited_by_blocks += recorded;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balanced() -> MoneyAudit {
        MoneyAudit {
            credited: 1_000,
            balance: 600,
            paid: 300,
            fees: 100,
            credited_by_blocks: 1_000,
            totals: HashMap::from([("credited".to_string(), 1_000)]),
            blocks_confirmed: 2,
            ..MoneyAudit::default()
        }
    }

    #[test]
    fn balanced_books_have_no_problems() {
        assert_eq!(balanced().problems(), Vec::<String>::new());
    }

    #[test]
    fn imported_balances_count_as_credited_without_a_block() {
        let mut audit = balanced();
        audit.credited += 250;
        audit.balance += 250;
        assert_eq!(audit.problems().len(), 2, "{:?}", audit.problems());
        audit.totals.insert("imported".to_string(), 250);
        assert_eq!(audit.problems(), Vec::<String>::new());
    }

    #[test]
    fn every_broken_rule_is_named() {
        let mut audit = balanced();
        audit.broken.push("PAS1x".to_string());
        audit.credited_by_blocks = 999;
        audit.resolved_twice.push("aa".to_string());
        audit.block_mismatch.push("bb".to_string());
        let problems = audit.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("PAS1x: credited"));
        assert!(problems[1].contains("confirmed blocks credited 999"));
        assert_eq!(problems[2], "block aa resolved more than once");
        assert_eq!(problems[3], "block bb: its credits do not add up to its record");
    }
}

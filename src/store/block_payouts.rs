//! Per-block payout records, for miners to check their credit: the window snapshot taken when
//! the candidate was recorded, the credits and the split terms written when it was credited
//! (all in `blocks:info:<hash>`, `blocks:window:<hash>`, `blocks:credits:<hash>`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redis::AsyncCommands;

use super::{timed, Store, StoreError};

/// The terms a block was split with, stored with its credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayoutTerms {
    /// Fee in basis points (the solo fee for a solo block).
    pub fee_bps: u32,
    /// Finder reward in basis points (0 for a solo block).
    pub finder_bps: u32,
    /// How long the block's window and credits are kept after it is resolved.
    pub keep: Duration,
}

/// The oldest window record, when only part of it was counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialRecord {
    /// Whose record it is.
    pub address: String,
    /// The record's whole difficulty.
    pub record: u64,
    /// The part inside the window.
    pub counted: u64,
}

/// What the pool stored about one block's payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPayout {
    /// Height.
    pub height: u64,
    /// Block id (hex).
    pub hash: String,
    /// Solo block.
    pub solo: bool,
    /// Finder address.
    pub finder: String,
    /// `pending`, `confirmed` or `orphaned`.
    pub status: String,
    /// The pool's coinbase output; `None` for a block recorded by the old pool.
    pub reward: Option<u64>,
    /// N: the window size in difficulty units.
    pub window_size: u64,
    /// Σ window (N, or less when the pool had fewer shares).
    pub window_total: u64,
    /// Address → difficulty units counted (empty once expired).
    pub window: BTreeMap<String, u64>,
    /// The oldest record, counted in part.
    pub partial: Option<PartialRecord>,
    /// Address → atomic units credited (empty unless confirmed, or once expired).
    pub credits: BTreeMap<String, u64>,
    /// Σ credits as recorded when credited.
    pub credited: u64,
    /// Kept by the pool as its fee.
    pub pool_fee: u64,
    /// Paid to the finder on top of its window share.
    pub finder_reward: u64,
    /// Rounding remainder kept by the pool.
    pub dust: u64,
    /// Fee (bps) the split used; `None` for blocks credited before the terms were stored.
    pub fee_bps: Option<u32>,
    /// Finder reward (bps) the split used.
    pub finder_bps: Option<u32>,
    /// When the window and credits expire (unix s), once resolved.
    pub expires_at: Option<u64>,
}

impl BlockPayout {
    /// A confirmed block whose window and credits have expired.
    pub fn expired(&self) -> bool {
        self.status == "confirmed" && self.credits.is_empty() && self.credited > 0
    }
}

fn parsed<T: std::str::FromStr>(map: &HashMap<String, String>, key: &str) -> Option<T> {
    map.get(key).and_then(|v| v.parse().ok())
}

fn amounts(raw: HashMap<String, String>) -> BTreeMap<String, u64> {
    raw.into_iter().filter_map(|(k, v)| v.parse().ok().map(|v| (k, v))).collect()
}

impl Store {
    /// The stored payout record of a block, `None` if the pool has no `blocks:info` for it.
    pub async fn block_payout(&self, hash: &str) -> Result<Option<BlockPayout>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.key(&format!("blocks:info:{hash}")));
        pipe.cmd("HGETALL").arg(self.key(&format!("blocks:window:{hash}")));
        pipe.cmd("HGETALL").arg(self.key(&format!("blocks:credits:{hash}")));
        let (info, window, credits): (HashMap<String, String>, HashMap<String, String>, HashMap<String, String>) =
            timed("block_payout", pipe.query_async(&mut self.conn())).await?;
        if info.is_empty() {
            return Ok(None);
        }
        let partial =
            match (info.get("partialAddress"), parsed(&info, "partialRecord"), parsed(&info, "partialCounted")) {
                (Some(address), Some(record), Some(counted)) => {
                    Some(PartialRecord { address: address.clone(), record, counted })
                }
                _ => None,
            };
        Ok(Some(BlockPayout {
            height: parsed(&info, "height").unwrap_or(0),
            hash: hash.to_string(),
            solo: info.get("type").map(String::as_str) == Some("solo"),
            finder: info.get("login").cloned().unwrap_or_default(),
            status: info.get("status").cloned().unwrap_or_default(),
            reward: parsed(&info, "reward"),
            window_size: parsed(&info, "windowSize").unwrap_or(0),
            window_total: parsed(&info, "windowTotal").unwrap_or(0),
            window: amounts(window),
            partial,
            credits: amounts(credits),
            credited: parsed(&info, "credited").unwrap_or(0),
            pool_fee: parsed(&info, "poolFee").unwrap_or(0),
            finder_reward: parsed(&info, "finderReward").unwrap_or(0),
            dust: parsed(&info, "dust").unwrap_or(0),
            fee_bps: parsed(&info, "feeBps"),
            finder_bps: parsed(&info, "finderBps"),
            expires_at: parsed(&info, "payoutExpiresAt"),
        }))
    }

    /// Hashes of the pool's blocks at `height` (candidates and resolved), confirmed ones first.
    pub async fn block_hashes_at(&self, height: u64) -> Result<Vec<String>, StoreError> {
        let candidates: Vec<String> = timed("blocks_at", async {
            self.conn().zrangebyscore(self.key("blocks:candidates"), height, height).await
        })
        .await?;
        let matured: Vec<String> =
            timed("blocks_at", async { self.conn().zrangebyscore(self.key("blocks:matured"), height, height).await })
                .await?;
        let hash = |m: &String| m.split(':').nth(2).map(str::to_string);
        // Confirmed members end in `:0:<reward>` (10 fields), orphaned in `:1` (9 fields).
        let (confirmed, orphaned): (Vec<&String>, Vec<&String>) =
            matured.iter().partition(|m| m.split(':').nth(8) == Some("0"));
        Ok(confirmed.into_iter().chain(candidates.iter()).chain(orphaned).filter_map(hash).collect())
    }
}

//! Share records and block candidates: the ledger's writes (spec §9 formats + PPLNS window).

use std::net::IpAddr;
use std::sync::OnceLock;

use redis::Script;

use super::{timed, Store, StoreError};

/// Accepted shares of one worker within one flush, summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    /// Miner address (the login without `solo:` and fixed-difficulty suffix).
    pub login: String,
    /// Worker name.
    pub worker: String,
    /// Solo (`solo`) or pooled (`prop`) shares.
    pub solo: bool,
    /// Sum of the job difficulties.
    pub difficulty: u64,
}

/// A block candidate, recorded after the flush that holds its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateRecord {
    /// Finder address.
    pub login: String,
    /// Finder worker.
    pub worker: String,
    /// Found by a solo miner.
    pub solo: bool,
    /// Block id.
    pub hash: String,
    /// Block height (index).
    pub height: u64,
    /// Network difficulty of the template.
    pub network_difficulty: u64,
    /// The pool's own coinbase output amount (never the header's reward).
    pub reward: u64,
    /// PPLNS window size N in difficulty units.
    pub window: u64,
    /// Job difficulty of the block's share.
    pub share_difficulty: u64,
    /// Unix milliseconds when found.
    pub found_ms: u64,
}

/// What recording a candidate produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateResult {
    /// Recorded now: the window snapshot's total and the closed round's totals.
    Recorded {
        /// Difficulty units in the PPLNS window snapshot.
        window_total: u64,
        /// Σ job difficulty of the closed round.
        round_shares: u64,
    },
    /// Already recorded by an earlier attempt.
    AlreadyRecorded,
}

fn flush_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("lua/flush_shares.lua")))
}

fn candidate_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("lua/record_candidate.lua")))
}

/// What a node's current template may need of the PPLNS list (reported with each flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PplnsNeed {
    /// The template's height.
    pub height: u64,
    /// Difficulty units to keep for it (twice its window, so a rise before the next block
    /// still finds a full window); 0 when the node has no template yet.
    pub units: u64,
}

/// How many heights a reported [`PplnsNeed`] counts: the list keeps the largest need of the
/// last this many heights (about 6 h at the 30 s target), so a difficulty drop then rise, or
/// a node whose daemon lags, never trims what a window at the recent high needs.
pub const PPLNS_NEED_HEIGHTS: u64 = 720;

/// Worker statistics expire after this long without shares (money never expires).
pub const WORKER_STATS_TTL_SECS: u64 = 15 * 86_400;

impl Store {
    /// Writes one flush of share records, at most once per `flush_id` (a retry after a lost
    /// reply is a no-op). `need` is what this node's template may need of the PPLNS list; the
    /// list is trimmed from the oldest end while the rest still covers the largest need any
    /// node reported within [`PPLNS_NEED_HEIGHTS`] heights. Returns false if the flush had
    /// already been written.
    pub async fn flush_shares(
        &self,
        flush_id: &str,
        instance: &str,
        now_ms: u64,
        need: PplnsNeed,
        records: &[ShareRecord],
    ) -> Result<bool, StoreError> {
        let mut invocation = flush_script().prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(flush_id)
            .arg(now_ms / 1000)
            .arg(now_ms)
            .arg(instance)
            .arg(WORKER_STATS_TTL_SECS)
            .arg(need.height)
            .arg(need.units)
            .arg(PPLNS_NEED_HEIGHTS)
            .arg(records.len());
        for r in records {
            invocation.arg(&r.login).arg(&r.worker).arg(reward_type(r.solo)).arg(r.difficulty);
        }
        let written: i64 = self.acked("flush_shares", &invocation).await?;
        Ok(written == 1)
    }

    /// Records a block candidate (old `blocks:candidates` format, round close, PPLNS window
    /// snapshot, block info), at most once per block hash.
    pub async fn record_candidate(&self, c: &CandidateRecord) -> Result<CandidateResult, StoreError> {
        let mut invocation = candidate_script().prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(reward_type(c.solo))
            .arg(&c.login)
            .arg(&c.worker)
            .arg(&c.hash)
            .arg(c.height)
            .arg(c.found_ms / 1000)
            .arg(c.found_ms)
            .arg(c.network_difficulty)
            .arg(c.reward)
            .arg(c.window)
            .arg(c.share_difficulty);
        let value: redis::Value = self.acked("record_candidate", &invocation).await?;
        Ok(match value {
            redis::Value::Array(items) if items.len() == 3 => {
                let num = |v: &redis::Value| match v {
                    redis::Value::Int(i) => *i as u64,
                    _ => 0,
                };
                CandidateResult::Recorded { window_total: num(&items[0]), round_shares: num(&items[1]) }
            }
            _ => CandidateResult::AlreadyRecorded,
        })
    }

    /// Adds `ip` to the IPs seen for `login` (the old `workers_ip:<login>` set, spec §10) and
    /// records when (`workers_ip_seen:<login>`, unix s): payout-level changes are accepted only
    /// from an IP seen recently.
    pub async fn record_login_ip(&self, login: &str, ip: IpAddr, seen_s: u64) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SADD").arg(self.key(&format!("workers_ip:{login}"))).arg(ip_form(ip)).ignore();
        pipe.cmd("HSET").arg(self.key(&format!("workers_ip_seen:{login}"))).arg(ip_form(ip)).arg(seen_s).ignore();
        timed("record_login_ip", pipe.query_async::<()>(&mut self.conn())).await
    }

    /// Replaces the connection counts of `active_connections[:solo]` and `ports:<port>` with a
    /// fresh snapshot from this node.
    pub async fn write_connection_snapshot(
        &self,
        prop: &[(String, u64)],
        solo: &[(String, u64)],
        ports: &[(u16, u64)],
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, entries) in [("active_connections", prop), ("active_connections:solo", solo)] {
            let key = self.key(key);
            pipe.del(&key).ignore();
            for (worker, count) in entries {
                pipe.hset(&key, worker, *count).ignore();
            }
        }
        for (port, users) in ports {
            pipe.hset_multiple(
                self.key(&format!("ports:{port}")),
                &[("port", port.to_string()), ("users", users.to_string())],
            )
            .ignore();
        }
        timed("connection_snapshot", pipe.query_async::<()>(&mut self.conn())).await
    }
}

/// How `workers_ip:<address>` holds an IP: as the old pool stored Node's `remoteAddress`, IPv4
/// as `::ffff:a.b.c.d`. Text that is not an IP is kept as given.
pub(crate) fn stored_ip(ip: &str) -> String {
    ip.parse().map(ip_form).unwrap_or_else(|_| ip.to_string())
}

fn ip_form(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("::ffff:{v4}"),
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// The old pool's reward type names.
pub fn reward_type(solo: bool) -> &'static str {
    if solo {
        "solo"
    } else {
        "prop"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn login_ips_are_stored_in_the_old_pools_form() {
        assert_eq!(super::stored_ip("1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(super::stored_ip("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(super::stored_ip("::1"), "::1");
    }
}

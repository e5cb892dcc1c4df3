//! What the stats API and its collector read and write: the old pool's statistics keys (spec §9),
//! the money keys of `docs/REDIS.md` (read only), the chart series, the monitoring status and
//! two small indexes the collector keeps so no request ever scans the keyspace.
//!
//! Reads are pipelined: one round trip per question the API asks.

use std::collections::HashMap;

use redis::aio::ConnectionManager;

use super::{timed, Store, StoreError};

/// A Redis hash as strings.
pub type StringMap = HashMap<String, String>;

/// A sorted-set member with its score (height or unix seconds).
pub type Scored = (String, u64);

/// Per-worker statistics keys expire after this long (`unique_workers:*`); the worker index
/// forgets workers silent for as long.
const WORKER_INDEX_TTL_SECS: u64 = 15 * 86_400;

/// Everything the collector reads from Redis for one run of the pool figures.
#[derive(Debug, Default, Clone)]
pub struct PoolRead {
    /// `stats` hash (`lastBlockFoundprop`, `lastBlockFoundsolo`).
    pub stats: StringMap,
    /// All `blocks:candidates` members, highest first.
    pub candidates: Vec<Scored>,
    /// The newest `blocks:matured` members, highest first.
    pub matured_recent: Vec<Scored>,
    /// `ZCARD blocks:matured`.
    pub matured_count: u64,
    /// `scores:prop:roundCurrent`.
    pub prop_scores: StringMap,
    /// `shares_actual:prop:roundCurrent`.
    pub prop_shares: StringMap,
    /// `scores:solo:roundCurrent`.
    pub solo_scores: StringMap,
    /// The newest `payments:all` members, newest first.
    pub payments_recent: Vec<Scored>,
    /// `ZCARD payments:all`.
    pub payments_count: u64,
    /// `status:daemon` `lastStatus`.
    pub daemon_status: Option<String>,
    /// `status:wallet` `lastStatus`.
    pub wallet_status: Option<String>,
}

/// What `/stats_address` needs about one address.
#[derive(Debug, Default, Clone)]
pub struct MinerRead {
    /// `workers:<address>` (old statistics hash: `hashes`, `lastShare`, ...).
    pub worker_stats: StringMap,
    /// `balances:<address>` (`balance`, `paid`, `pending`, `minPayoutLevel`, ...).
    pub balances: StringMap,
    /// Its newest payments, newest first.
    pub payments: Vec<Scored>,
    /// `charts:hashrate:<address>`.
    pub chart: Option<String>,
    /// Worker names from the worker index, with their last share time.
    pub workers: Vec<Scored>,
}

/// One worker's statistics hash and hashrate chart.
#[derive(Debug, Default, Clone)]
pub struct WorkerRead {
    /// `unique_workers:<address>~<worker>`.
    pub stats: StringMap,
    /// `charts:worker_hashrate:<address>~<worker>`.
    pub chart: Option<String>,
}

/// The money fields of one `balances:<address>` hash, atomic units.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BalanceSums {
    /// Credited, not yet paid.
    pub balance: u64,
    /// Reserved by a payment batch in flight.
    pub pending: u64,
    /// Total sent.
    pub paid: u64,
}

/// The payment journal's state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JournalRead {
    /// Batches not yet finalized or released.
    pub open: u64,
    /// Creation time (unix ms) of the oldest open batch.
    pub oldest_ms: Option<u64>,
}

fn scored(raw: Vec<(String, f64)>) -> Vec<Scored> {
    raw.into_iter().map(|(m, s)| (m, if s.is_finite() && s > 0.0 { s as u64 } else { 0 })).collect()
}

fn number(map: &StringMap, field: &str) -> u64 {
    map.get(field).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite() && *v > 0.0).map_or(0, |v| v as u64)
}

impl Store {
    fn c(&self) -> ConnectionManager {
        self.conn()
    }

    /// Drops `hashrate` entries older than `window_start`, then reads the members with a score
    /// (unix s) from `from` on, with their scores, and how many members have a score from
    /// `check_from` on, atomically (`MULTI`): the count tells the collector whether its copy of
    /// the window is still whole.
    pub async fn read_hashrate_window(
        &self,
        window_start: u64,
        from: u64,
        check_from: u64,
    ) -> Result<(Vec<(String, u64)>, u64), StoreError> {
        let key = self.key("hashrate");
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("ZREMRANGEBYSCORE").arg(&key).arg("-inf").arg(format!("({window_start}")).ignore();
        pipe.cmd("ZRANGEBYSCORE").arg(&key).arg(from).arg("+inf").arg("WITHSCORES");
        pipe.cmd("ZCOUNT").arg(&key).arg(check_from).arg("+inf");
        let (members, len): (Vec<(String, f64)>, u64) =
            timed("stats_read_hashrate_window", pipe.query_async(&mut self.c())).await?;
        Ok((scored(members), len))
    }

    /// `hashrate` members with a score in `[from, to)`, with their scores (one slice of a full
    /// read of the window).
    pub async fn hashrate_slice(&self, from: u64, to: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let raw: Vec<(String, f64)> = timed(
            "stats_hashrate_slice",
            redis::cmd("ZRANGEBYSCORE")
                .arg(self.key("hashrate"))
                .arg(from)
                .arg(format!("({to}"))
                .arg("WITHSCORES")
                .query_async(&mut self.c()),
        )
        .await?;
        Ok(scored(raw))
    }

    /// Reads everything else the pool-wide figures need, in one round trip.
    pub async fn read_pool(&self, blocks: usize, payments: usize) -> Result<PoolRead, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.key("stats"));
        pipe.cmd("ZREVRANGE").arg(self.key("blocks:candidates")).arg(0).arg(-1).arg("WITHSCORES");
        pipe.cmd("ZREVRANGE").arg(self.key("blocks:matured")).arg(0).arg(blocks as i64 - 1).arg("WITHSCORES");
        pipe.cmd("ZCARD").arg(self.key("blocks:matured"));
        pipe.cmd("HGETALL").arg(self.key("scores:prop:roundCurrent"));
        pipe.cmd("HGETALL").arg(self.key("shares_actual:prop:roundCurrent"));
        pipe.cmd("HGETALL").arg(self.key("scores:solo:roundCurrent"));
        pipe.cmd("ZREVRANGE").arg(self.key("payments:all")).arg(0).arg(payments as i64 - 1).arg("WITHSCORES");
        pipe.cmd("ZCARD").arg(self.key("payments:all"));
        pipe.cmd("HGET").arg(self.key("status:daemon")).arg("lastStatus");
        pipe.cmd("HGET").arg(self.key("status:wallet")).arg("lastStatus");
        #[allow(clippy::type_complexity)]
        let (
            stats,
            candidates,
            matured,
            matured_count,
            prop_scores,
            prop_shares,
            solo_scores,
            payments_raw,
            payments_count,
            daemon_status,
            wallet_status,
        ): (
            StringMap,
            Vec<(String, f64)>,
            Vec<(String, f64)>,
            u64,
            StringMap,
            StringMap,
            StringMap,
            Vec<(String, f64)>,
            u64,
            Option<String>,
            Option<String>,
        ) = timed("stats_read_pool", pipe.query_async(&mut self.c())).await?;
        Ok(PoolRead {
            stats,
            candidates: scored(candidates),
            matured_recent: if blocks == 0 { Vec::new() } else { scored(matured) },
            matured_count,
            prop_scores,
            prop_shares,
            solo_scores,
            payments_recent: if payments == 0 { Vec::new() } else { scored(payments_raw) },
            payments_count,
            daemon_status,
            wallet_status,
        })
    }

    /// Every `blocks:matured` member, highest first (for pool-wide totals; the collector reads
    /// it again only when the count changes).
    pub async fn matured_all(&self) -> Result<Vec<Scored>, StoreError> {
        let raw: Vec<(String, f64)> = timed(
            "stats_matured_all",
            redis::cmd("ZREVRANGE")
                .arg(self.key("blocks:matured"))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut self.c()),
        )
        .await?;
        Ok(scored(raw))
    }

    /// `field` of `blocks:info:<hash>` for each hash.
    pub async fn block_info_field(&self, hashes: &[String], field: &str) -> Result<Vec<Option<String>>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for hash in hashes {
            pipe.cmd("HGET").arg(self.key(&format!("blocks:info:{hash}"))).arg(field);
        }
        timed("stats_block_info", pipe.query_async(&mut self.c())).await
    }

    /// `blocks:participants` entries for these heights.
    pub async fn participants(&self, heights: &[u64]) -> Result<Vec<Option<String>>, StoreError> {
        if heights.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.key("blocks:participants"));
        for h in heights {
            cmd.arg(*h);
        }
        timed("stats_participants", cmd.query_async(&mut self.c())).await
    }

    /// What `address` was credited for each block (`blocks:credits:<hash>`), if anything yet.
    pub async fn block_credits(&self, hashes: &[String], address: &str) -> Result<Vec<Option<String>>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for hash in hashes {
            pipe.cmd("HGET").arg(self.key(&format!("blocks:credits:{hash}"))).arg(address);
        }
        timed("stats_block_credits", pipe.query_async(&mut self.c())).await
    }

    /// `charts:<name>` for each name (`hashrate`, `hashrate:<address>`, ...).
    pub async fn read_charts(&self, names: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for name in names {
            cmd.arg(self.key(&format!("charts:{name}")));
        }
        timed("stats_read_charts", cmd.query_async(&mut self.c())).await
    }

    /// Writes chart series: `(name, JSON, TTL seconds)`.
    pub async fn write_charts(&self, series: &[(String, String, Option<u64>)]) -> Result<(), StoreError> {
        if series.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (name, json, ttl) in series {
            let key = self.key(&format!("charts:{name}"));
            match ttl {
                Some(ttl) => pipe.cmd("SET").arg(key).arg(json).arg("EX").arg(*ttl).ignore(),
                None => pipe.cmd("SET").arg(key).arg(json).ignore(),
            };
        }
        timed("stats_write_charts", pipe.query_async::<()>(&mut self.c())).await
    }

    /// Records a monitoring check in `status:<module>` (old format: `lastCheck`, `lastStatus`,
    /// `lastResponse`, and on failure `lastFail`, `lastFailResponse`).
    pub async fn write_status(&self, module: &str, now: u64, ok: bool, response: &str) -> Result<(), StoreError> {
        let mut fields = vec![
            ("lastCheck", now.to_string()),
            ("lastStatus", if ok { "ok" } else { "fail" }.to_string()),
            ("lastResponse", response.to_string()),
        ];
        if !ok {
            fields.push(("lastFail", now.to_string()));
            fields.push(("lastFailResponse", response.to_string()));
        }
        let key = self.key(&format!("status:{module}"));
        timed("stats_write_status", async {
            redis::cmd("HSET").arg(key).arg(&fields).query_async::<()>(&mut self.c()).await
        })
        .await
    }

    /// `status:<module>` as written by [`Store::write_status`].
    pub async fn read_status(&self, modules: &[&str]) -> Result<Vec<StringMap>, StoreError> {
        let mut pipe = redis::pipe();
        for module in modules {
            pipe.cmd("HGETALL").arg(self.key(&format!("status:{module}")));
        }
        timed("stats_read_status", pipe.query_async(&mut self.c())).await
    }

    /// Updates the collector's indexes from the addresses and workers seen in the hashrate
    /// window: `stats:miners` (zset address → last share, unix s) and
    /// `stats:workers:<address>` (zset worker → last share), forgetting workers silent for
    /// longer than their statistics live.
    pub async fn index_active(
        &self,
        now: u64,
        miners: &[(String, u64)],
        workers: &[(String, String, u64)],
    ) -> Result<(), StoreError> {
        if miners.is_empty() && workers.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (address, last) in miners {
            pipe.cmd("ZADD").arg(self.key("stats:miners")).arg("GT").arg(*last).arg(address).ignore();
        }
        let mut touched = std::collections::HashSet::new();
        for (address, worker, last) in workers {
            let key = self.key(&format!("stats:workers:{address}"));
            pipe.cmd("ZADD").arg(&key).arg("GT").arg(*last).arg(worker).ignore();
            if touched.insert(address.as_str()) {
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(format!("({}", now.saturating_sub(WORKER_INDEX_TTL_SECS)))
                    .ignore();
                pipe.cmd("EXPIRE").arg(&key).arg(WORKER_INDEX_TTL_SECS).ignore();
            }
        }
        timed("stats_index_active", pipe.query_async::<()>(&mut self.c())).await
    }

    /// Every address the pool knows: the collector's miner index (with last share times)
    /// plus every address holding a balance (`balances:index`), without duplicates.
    pub async fn known_miners(&self) -> Result<Vec<Scored>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE").arg(self.key("stats:miners")).arg(0).arg(-1).arg("WITHSCORES");
        pipe.cmd("SMEMBERS").arg(self.key("balances:index"));
        let (indexed, balances): (Vec<(String, f64)>, Vec<String>) =
            timed("stats_known_miners", pipe.query_async(&mut self.c())).await?;
        let mut out = scored(indexed);
        let seen: std::collections::HashSet<String> = out.iter().map(|(a, _)| a.clone()).collect();
        out.extend(balances.into_iter().filter(|a| !seen.contains(a)).map(|a| (a, 0)));
        Ok(out)
    }

    /// `hashes` and `lastShare` of `workers:<address>` for each address (missing = None).
    pub async fn miner_totals(
        &self,
        addresses: &[String],
    ) -> Result<Vec<(Option<String>, Option<String>)>, StoreError> {
        let mut out = Vec::with_capacity(addresses.len());
        for chunk in addresses.chunks(1000) {
            let mut pipe = redis::pipe();
            for address in chunk {
                pipe.cmd("HMGET").arg(self.key(&format!("workers:{address}"))).arg("hashes").arg("lastShare");
            }
            let rows: Vec<(Option<String>, Option<String>)> =
                timed("stats_miner_totals", pipe.query_async(&mut self.c())).await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// `balances:<address>` hashes for each address.
    pub async fn balance_maps(&self, addresses: &[String]) -> Result<Vec<StringMap>, StoreError> {
        let mut out = Vec::with_capacity(addresses.len());
        for chunk in addresses.chunks(1000) {
            let mut pipe = redis::pipe();
            for address in chunk {
                pipe.cmd("HGETALL").arg(self.key(&format!("balances:{address}")));
            }
            let rows: Vec<StringMap> = timed("stats_balances", pipe.query_async(&mut self.c())).await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The money of every address in `balances:index`.
    pub async fn all_balances(&self) -> Result<Vec<(String, BalanceSums)>, StoreError> {
        let addresses: Vec<String> = timed(
            "stats_balance_index",
            redis::cmd("SMEMBERS").arg(self.key("balances:index")).query_async(&mut self.c()),
        )
        .await?;
        let maps = self.balance_maps(&addresses).await?;
        Ok(addresses
            .into_iter()
            .zip(maps)
            .map(|(a, m)| {
                let row = BalanceSums {
                    balance: number(&m, "balance"),
                    pending: number(&m, "pending"),
                    paid: number(&m, "paid"),
                };
                (a, row)
            })
            .collect())
    }

    /// The payment journal: open batches and the oldest one's age.
    pub async fn payment_journal(&self) -> Result<JournalRead, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD").arg(self.key("payments:journal"));
        pipe.cmd("ZRANGE").arg(self.key("payments:journal")).arg(0).arg(0).arg("WITHSCORES");
        let (open, oldest): (u64, Vec<(String, f64)>) =
            timed("stats_payment_journal", pipe.query_async(&mut self.c())).await?;
        Ok(JournalRead { open, oldest_ms: oldest.first().map(|(_, s)| *s as u64) })
    }

    /// Everything `/stats_address` reads about `address` (one round trip): its newest
    /// `payments` payments and `workers` workers.
    pub async fn read_miner(&self, address: &str, payments: usize, workers: usize) -> Result<MinerRead, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.key(&format!("workers:{address}")));
        pipe.cmd("HGETALL").arg(self.key(&format!("balances:{address}")));
        pipe.cmd("ZREVRANGE")
            .arg(self.key(&format!("payments:{address}")))
            .arg(0)
            .arg(payments as i64 - 1)
            .arg("WITHSCORES");
        pipe.cmd("GET").arg(self.key(&format!("charts:hashrate:{address}")));
        pipe.cmd("ZREVRANGE")
            .arg(self.key(&format!("stats:workers:{address}")))
            .arg(0)
            .arg(workers as i64 - 1)
            .arg("WITHSCORES");
        #[allow(clippy::type_complexity)]
        let (worker_stats, balances, payments_raw, chart, worker_index): (
            StringMap,
            StringMap,
            Vec<(String, f64)>,
            Option<String>,
            Vec<(String, f64)>,
        ) = timed("stats_read_miner", pipe.query_async(&mut self.c())).await?;
        Ok(MinerRead {
            worker_stats,
            balances,
            payments: if payments == 0 { Vec::new() } else { scored(payments_raw) },
            chart,
            workers: if workers == 0 { Vec::new() } else { scored(worker_index) },
        })
    }

    /// One page of `address`'s workers from the worker index, newest share first, and how many
    /// it has.
    pub async fn worker_page(&self, address: &str, offset: u64, limit: u64) -> Result<(u64, Vec<Scored>), StoreError> {
        let key = self.key(&format!("stats:workers:{address}"));
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD").arg(&key);
        pipe.cmd("ZREVRANGE").arg(&key).arg(offset).arg(offset + limit.max(1) - 1).arg("WITHSCORES");
        let (total, raw): (u64, Vec<(String, f64)>) =
            timed("stats_worker_page", pipe.query_async(&mut self.c())).await?;
        Ok((total, if limit == 0 { Vec::new() } else { scored(raw) }))
    }

    /// True if the pool has statistics or money for `address`.
    pub async fn miner_exists(&self, address: &str) -> Result<bool, StoreError> {
        let n: u64 = timed(
            "stats_miner_exists",
            redis::cmd("EXISTS")
                .arg(self.key(&format!("workers:{address}")))
                .arg(self.key(&format!("balances:{address}")))
                .query_async(&mut self.c()),
        )
        .await?;
        Ok(n > 0)
    }

    /// Statistics hash and hashrate chart of each named worker of `address`.
    pub async fn read_workers(&self, address: &str, names: &[String]) -> Result<Vec<WorkerRead>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.cmd("HGETALL").arg(self.key(&format!("unique_workers:{address}~{name}")));
            pipe.cmd("GET").arg(self.key(&format!("charts:worker_hashrate:{address}~{name}")));
        }
        let raw: Vec<redis::Value> = timed("stats_read_workers", pipe.query_async(&mut self.c())).await?;
        let mut out = Vec::with_capacity(names.len());
        let mut it = raw.into_iter();
        while let (Some(stats), Some(chart)) = (it.next(), it.next()) {
            out.push(WorkerRead {
                stats: redis::from_redis_value(stats).unwrap_or_default(),
                chart: redis::from_redis_value(chart).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// One page of `payments:all` (or `payments:<address>`), newest first, and the total count.
    pub async fn payments_page(
        &self,
        address: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Scored>), StoreError> {
        let key = self.key(&format!("payments:{}", address.unwrap_or("all")));
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD").arg(&key);
        pipe.cmd("ZREVRANGE").arg(&key).arg(offset).arg(offset + limit.max(1) - 1).arg("WITHSCORES");
        let (total, raw): (u64, Vec<(String, f64)>) =
            timed("stats_payments_page", pipe.query_async(&mut self.c())).await?;
        Ok((total, if limit == 0 { Vec::new() } else { scored(raw) }))
    }

    /// Counts of `blocks:candidates` and `blocks:matured`.
    pub async fn block_counts(&self) -> Result<(u64, u64), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD").arg(self.key("blocks:candidates"));
        pipe.cmd("ZCARD").arg(self.key("blocks:matured"));
        timed("stats_block_counts", pipe.query_async(&mut self.c())).await
    }

    /// Members `start..=stop` (by rank, highest height first) of `blocks:candidates` or, with
    /// `matured`, of `blocks:matured`.
    pub async fn blocks_range(&self, matured: bool, start: u64, stop: u64) -> Result<Vec<Scored>, StoreError> {
        let key = self.key(if matured { "blocks:matured" } else { "blocks:candidates" });
        let raw: Vec<(String, f64)> = timed(
            "stats_blocks_range",
            redis::cmd("ZREVRANGE").arg(key).arg(start).arg(stop).arg("WITHSCORES").query_async(&mut self.c()),
        )
        .await?;
        Ok(scored(raw))
    }

    /// A miner's own payout threshold (atomic units as stored), from `balances:<address>`, or
    /// from the old pool's `workers:<address>` if never set here.
    pub async fn payout_level(&self, address: &str) -> Result<Option<String>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(self.key(&format!("balances:{address}"))).arg("minPayoutLevel");
        pipe.cmd("HGET").arg(self.key(&format!("workers:{address}"))).arg("minPayoutLevel");
        let (new, old): (Option<String>, Option<String>) =
            timed("stats_payout_level", pipe.query_async(&mut self.c())).await?;
        Ok(new.or(old))
    }

    /// Sets a miner's payout threshold (atomic units) in `balances:<address>` and indexes it.
    pub async fn set_payout_level(&self, address: &str, atomic: u64) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HSET").arg(self.key(&format!("balances:{address}"))).arg("minPayoutLevel").arg(atomic).ignore();
        pipe.cmd("SADD").arg(self.key("balances:index")).arg(address).ignore();
        timed("stats_set_payout_level", pipe.query_async::<()>(&mut self.c())).await
    }

    /// True if `address` logged in from `ip` at or after `since_s` (unix s). IPs of the old
    /// `workers_ip:<address>` set carry no time and never count as recent.
    pub async fn login_ip_seen_since(&self, address: &str, ip: &str, since_s: u64) -> Result<bool, StoreError> {
        let seen: Option<u64> = timed(
            "stats_login_ip_seen",
            redis::cmd("HGET")
                .arg(self.key(&format!("workers_ip_seen:{address}")))
                .arg(super::shares::stored_ip(ip))
                .query_async(&mut self.c()),
        )
        .await?;
        Ok(seen.is_some_and(|s| s >= since_s))
    }

    /// Counts one `/set_miner_payout_level` request from `client` in the current hour
    /// (`ratelimit:payout_level:<ip>`, shared by every API node); answers the count so far.
    pub async fn count_payout_level_request(&self, client: &str) -> Result<u64, StoreError> {
        let key = self.key(&format!("ratelimit:payout_level:{client}"));
        let mut pipe = redis::pipe();
        pipe.atomic();
        // The first request of the hour starts the window (works on Redis before 7, no EXPIRE NX).
        pipe.cmd("SET").arg(&key).arg(0).arg("EX").arg(3600).arg("NX").ignore();
        pipe.cmd("INCR").arg(&key);
        let (count,): (u64,) = timed("stats_payout_level_rate", pipe.query_async(&mut self.c())).await?;
        Ok(count)
    }

    /// `users` of `ports:<port>` for each port.
    pub async fn port_users(&self, ports: &[u16]) -> Result<Vec<Option<String>>, StoreError> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for port in ports {
            pipe.cmd("HGET").arg(self.key(&format!("ports:{port}"))).arg("users");
        }
        timed("stats_port_users", pipe.query_async(&mut self.c())).await
    }

    /// Round scores and shares of both types, for the admin user list.
    pub async fn round_maps(&self) -> Result<(StringMap, StringMap), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.key("scores:prop:roundCurrent"));
        pipe.cmd("HGETALL").arg(self.key("shares_actual:prop:roundCurrent"));
        timed("stats_round_maps", pipe.query_async(&mut self.c())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_hash_fields() {
        let mut m = StringMap::new();
        m.insert("a".into(), "123".into());
        m.insert("b".into(), "-5".into());
        m.insert("c".into(), "x".into());
        m.insert("d".into(), "12.9".into());
        assert_eq!(number(&m, "a"), 123);
        assert_eq!(number(&m, "b"), 0);
        assert_eq!(number(&m, "c"), 0);
        assert_eq!(number(&m, "d"), 12);
        assert_eq!(number(&m, "missing"), 0);
    }
}

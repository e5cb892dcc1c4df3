//! The StatsCollector actor: computes the pool's figures every `api.updateInterval` seconds
//! and publishes them as a [`Snapshot`], so no API request ever scans Redis (spec §8.10).
//!
//! One run: a pipelined read of the hashrate window, rounds, blocks and payments; the daemon's
//! last block header; the figures; the `/stats` JSON rendered once; the snapshot swapped in
//! and long polls woken. Besides: chart series sampled at their own intervals (old JSON format
//! in `charts:*`), daemon and wallet checks into `status:*` every `monitoring.checkInterval`,
//! and the miner/worker indexes the per-miner routes list from.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::{json, Map, Value};

use super::shapes::{self, num, BlockRecord, BlockTotals, Merge};
use super::top::{TopRow, TopTable};
use super::window::HashrateWindow;
use super::Shared;
use crate::config::{ChartSeries, Config, TlsMode};
use crate::node::{DaemonClient, WalletClient};
use crate::store::{Store, StoreError};

/// How far behind its clock each read of the hashrate window starts: a flush may reach Redis
/// after its own timestamp (its round trip, a retry) and stratum nodes' clocks differ a little.
/// A write later than this is caught by the size check and costs one full read.
const WINDOW_OVERLAP_SECS: u64 = 15;

/// Every known miner's totals are re-read this often; in between, only the addresses in the
/// hashrate window (the only ones whose totals change).
const ROSTER_REFRESH: Duration = Duration::from_secs(60);

/// A miner or worker already in the indexes is rewritten when its last share moved on by this.
const INDEX_REFRESH_SECS: u64 = 60;

/// A full read of the hashrate window asks for this many seconds of records at a time.
const FULL_READ_SLICE_SECS: u64 = 10;

/// Chart series expire after this long without a sample (the old pool's `cleanupInterval`).
const CHART_TTL_SECS: u64 = 15 * 86_400;

/// Pool-wide figures of one address (the `miner` object of `/stats?address=`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct MinerFigures {
    /// H/s over the hashrate window.
    pub hashrate: u64,
    /// Its score in the current prop round.
    pub round_score: f64,
    /// Its share difficulty in the current prop round.
    pub round_hashes: u64,
}

impl MinerFigures {
    /// `{"hashrate", "roundScore", "roundHashes"}`.
    pub fn json(&self) -> Value {
        json!({"hashrate": self.hashrate, "roundScore": num(self.round_score), "roundHashes": self.round_hashes})
    }
}

/// What one collector run produced; requests only read this.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every run (0 before the first).
    pub generation: u64,
    /// Unix seconds of the run.
    pub updated: u64,
    /// The `/stats` object rendered without its final `,"miner":…}`.
    pub stats_prefix: String,
    /// Address → figures.
    pub miners: HashMap<String, MinerFigures>,
    /// `address~worker` → H/s.
    pub workers: HashMap<String, u64>,
    /// Σ of the current prop and solo round scores (for `roundSharePercent`).
    pub round_total: f64,
    /// Totals over every block found (candidates included).
    pub totals: BlockTotals,
    /// Candidates and the newest `api.blocks` matured blocks, highest first.
    pub recent_blocks: Vec<BlockRecord>,
    /// `{"minersHashrate": …}` rendered.
    pub miners_hashrate_json: String,
    /// `{"workersHashrate": …}` rendered.
    pub workers_hashrate_json: String,
    /// Every known miner's totals for `/get_top10miners`.
    pub top: Arc<TopTable>,
}

impl Snapshot {
    /// The snapshot served before the first run: every figure zero.
    pub fn empty(config: &Config) -> Snapshot {
        let stats = stats_object(config, &Inputs::default());
        Snapshot {
            stats_prefix: prefix_of(&stats),
            miners_hashrate_json: r#"{"minersHashrate":{}}"#.into(),
            workers_hashrate_json: r#"{"workersHashrate":{}}"#.into(),
            ..Snapshot::default()
        }
    }

    /// The `/stats` body with `miner` filled for `address` (or `{}`).
    pub fn stats_body(&self, address: Option<&str>) -> String {
        let miner = address.and_then(|a| self.miners.get(a)).map_or_else(|| "{}".to_string(), |m| m.json().to_string());
        let mut body = String::with_capacity(self.stats_prefix.len() + miner.len() + 12);
        body.push_str(&self.stats_prefix);
        body.push_str(",\"miner\":");
        body.push_str(&miner);
        body.push('}');
        body
    }
}

fn prefix_of(stats: &Value) -> String {
    let mut text = stats.to_string();
    text.pop();
    text
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Everything `stats_object` renders.
#[derive(Debug, Default, Clone)]
struct Inputs {
    health: (Option<String>, Option<String>),
    stats: HashMap<String, String>,
    blocks: Vec<Value>,
    totals: BlockTotals,
    payments: Vec<Value>,
    total_payments: u64,
    miners_paid: u64,
    miners: (u64, u64),
    workers: (u64, u64),
    hashrate: (u64, u64),
    round_score: f64,
    round_hashes: u64,
    lastblock: Option<Value>,
    network: Option<Value>,
    charts: Map<String, Value>,
}

/// The old pool's public config object (`/stats` `config`).
fn config_object(config: &Config) -> Value {
    let bps = |b: u32| num(b as f64 / 100.0);
    let unlocker = &config.block_unlocker;
    let payments = &config.payments;
    json!({
        "poolHost": config.pool_host,
        "ports": config.ports.iter().map(|p| {
            // `ssl` is the old pool's flag (true when TLS is offered); `tls` adds auto-detect.
            json!({"port": p.port, "difficulty": p.diff, "desc": p.desc, "ssl": p.tls != TlsMode::Off, "tls": p.tls.as_str()})
        }).collect::<Vec<_>>(),
        "cnAlgorithm": config.cn_algorithm,
        "cnVariant": config.cn_variant,
        "cnBlobType": config.cn_blob_type,
        "hashrateWindow": config.api.hashrate_window.as_secs(),
        "fee": bps(unlocker.pool_fee_bps),
        "soloFee": bps(unlocker.solo_fee_bps.unwrap_or(unlocker.pool_fee_bps)),
        "networkFee": 0,
        "coin": config.coin,
        "coinUnits": config.coin_units,
        "coinDecimalPlaces": config.coin_decimal_places,
        "coinDifficultyTarget": config.coin_difficulty_target,
        "symbol": config.symbol,
        "depth": unlocker.depth,
        "finderReward": bps(unlocker.finder_reward_bps),
        "donation": {},
        "version": format!("v{}", env!("CARGO_PKG_VERSION")),
        "paymentsInterval": payments.interval.as_secs(),
        "minPaymentThreshold": payments.min_payment,
        "maxPaymentThreshold": payments.max_payment,
        "transferFee": payments.transfer_fee,
        "denominationUnit": payments.denomination,
        "slushMiningEnabled": false,
        "weight": 300,
        "priceSource": "tradeogre",
        "priceCurrency": "USD",
        "paymentIdSeparator": ".",
        "fixedDiffEnabled": config.fixed_diff.enabled,
        "fixedDiffSeparator": config.fixed_diff.address_separator.to_string(),
        "blocksChartEnabled": config.charts.blocks.enabled,
        "blocksChartDays": config.charts.blocks.days,
    })
}

/// The `/stats` object of spec §10 without `miner`.
fn stats_object(config: &Config, i: &Inputs) -> Value {
    let mut pool = json!({
        "stats": i.stats,
        "blocks": i.blocks,
        "totalBlocks": i.totals.blocks.0,
        "totalBlocksSolo": i.totals.blocks.1,
        "totalDiff": i.totals.diff.0,
        "totalDiffSolo": i.totals.diff.1,
        "totalShares": i.totals.shares.0,
        "totalSharesSolo": i.totals.shares.1,
        "payments": i.payments,
        "totalPayments": i.total_payments,
        "totalMinersPaid": i.miners_paid,
        "miners": i.miners.0,
        "minersSolo": i.miners.1,
        "workers": i.workers.0,
        "workersSolo": i.workers.1,
        "hashrate": i.hashrate.0,
        "hashrateSolo": i.hashrate.1,
        "roundScore": num(i.round_score),
        "roundHashes": i.round_hashes,
    });
    // As the old pool: present only once a block of that type was found (unix ms, string).
    if let Some(prop) = i.stats.get("lastBlockFoundprop") {
        pool["lastBlockFound"] = json!(prop);
    }
    if let Some(solo) = i.stats.get("lastBlockFoundsolo") {
        pool["lastBlockFoundSolo"] = json!(solo);
    }
    let mut charts = i.charts.clone();
    for name in ["hashrate", "miners", "workers", "difficulty", "hashrateSolo", "minersSolo", "workersSolo"] {
        charts.entry(name.to_string()).or_insert_with(|| json!([]));
    }
    for name in ["blocks", "blocksSolo"] {
        charts.entry(name.to_string()).or_insert_with(|| json!({}));
    }
    json!({
        "health": {config.coin.clone(): {"daemon": i.health.0, "wallet": i.health.1, "price": null}},
        "pool": pool,
        "lastblock": i.lastblock.clone().unwrap_or_else(|| json!({"difficulty": 0, "height": 0, "timestamp": 0, "reward": 0, "hash": ""})),
        "network": i.network.clone().unwrap_or_else(|| json!({"difficulty": 0, "height": 0})),
        "config": config_object(config),
        "charts": charts,
    })
}

/// Runs a health check of Redis, the daemon and (when payments are on) the wallet API.
#[derive(Message)]
#[rtype(result = "HealthReport")]
pub struct CheckHealth;

/// One dependency's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// Reachable and answering.
    pub ok: bool,
    /// Whether the pool needs it (a failure of a required one makes `/health` 503).
    pub required: bool,
    /// What it answered or why it failed.
    pub detail: String,
}

/// `/health`.
#[derive(Debug, Clone, MessageResponse)]
pub struct HealthReport {
    /// Redis.
    pub redis: Reachability,
    /// Pastellad.
    pub daemon: Reachability,
    /// The wallet API.
    pub wallet: Reachability,
    /// Redis's eviction policy and persistence (never required: the start-up check refuses
    /// an evicting policy unless the operator overrode it; this reports what is true now).
    pub redis_config: Reachability,
}

impl HealthReport {
    /// True when every required dependency answered.
    pub fn healthy(&self) -> bool {
        [&self.redis, &self.daemon, &self.wallet, &self.redis_config].iter().all(|r| r.ok || !r.required)
    }

    /// The JSON body of `/health`.
    pub fn json(&self) -> Value {
        let one = |r: &Reachability| json!({"ok": r.ok, "required": r.required, "detail": r.detail});
        json!({
            "status": if self.healthy() { "ok" } else { "fail" },
            "redis": one(&self.redis),
            "daemon": one(&self.daemon),
            "wallet": one(&self.wallet),
            "redisConfig": one(&self.redis_config),
        })
    }
}

/// State carried from run to run.
#[derive(Default)]
struct Carry {
    generation: u64,
    matured_count: Option<u64>,
    matured: Vec<BlockRecord>,
    matured_totals: BlockTotals,
    lastblock: Option<Value>,
    network: Option<Value>,
    pool_charts_at: HashMap<&'static str, u64>,
    user_chart_at: u64,
    worker_chart_at: u64,
    monitored_at: u64,
    balances_at: u64,
    payments_seen: Option<u64>,
    miners_paid: u64,
    window: Option<HashrateWindow>,
    /// Known address → (`hashes`, last share unix s), for `/get_top10miners`.
    roster: HashMap<String, (u64, u64)>,
    roster_at: u64,
    /// The collector's own Redis connection, once open.
    store: Option<Store>,
    /// What the miner and worker indexes were last given (unix s), by address / worker.
    indexed_miners: HashMap<String, u64>,
    indexed_workers: HashMap<(String, String), u64>,
}

/// The actor.
pub struct StatsCollector {
    shared: Arc<Shared>,
    daemon: DaemonClient,
    wallet: WalletClient,
    carry: Arc<tokio::sync::Mutex<Carry>>,
    running: Arc<AtomicBool>,
}

impl StatsCollector {
    /// A collector publishing into `shared`; start it on the API's arbiter.
    pub fn new(shared: Arc<Shared>) -> StatsCollector {
        let c = shared.config();
        let daemon = DaemonClient::new(&c.daemon.host, c.daemon.port, c.daemon.timeout);
        let wallet = WalletClient::new(
            &c.wallet_api.host,
            c.wallet_api.port,
            &c.wallet_api.api_key,
            c.wallet_api.timeout.min(Duration::from_secs(10)),
        );
        StatsCollector {
            shared,
            daemon,
            wallet,
            carry: Arc::new(tokio::sync::Mutex::new(Carry::default())),
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    fn tick(&mut self) {
        if self.running.swap(true, Ordering::AcqRel) {
            return; // the previous run is still going
        }
        let shared = self.shared.clone();
        let (daemon, wallet) = (self.daemon.clone(), self.wallet.clone());
        let carry = self.carry.clone();
        let running = self.running.clone();
        actix::spawn(async move {
            let started = Instant::now();
            let mut carry = carry.lock().await;
            let store = own_connection(&shared, &mut carry).await;
            let run = Run { shared, store, daemon, wallet };
            if let Err(e) = run.once(&mut carry).await {
                crate::metrics::collector_error("redis");
                tracing::warn!("stats collector: {e}");
            }
            crate::metrics::collector_run(started.elapsed());
            running.store(false, Ordering::Release);
        });
    }
}

impl Actor for StatsCollector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::metrics::register_collector_window();
        self.tick();
        ctx.run_interval(self.shared.config().api.update_interval, |act, _| act.tick());
    }
}

impl Handler<CheckHealth> for StatsCollector {
    type Result = ResponseFuture<HealthReport>;

    fn handle(&mut self, _: CheckHealth, _: &mut Context<Self>) -> Self::Result {
        let store = self.shared.store.clone();
        let daemon = self.daemon.clone();
        let wallet = self.wallet.clone();
        let wallet_required = self.shared.config().payments.enabled;
        Box::pin(async move {
            let limit = Duration::from_secs(3);
            let timeout = |what: &str| format!("no answer from {what} within {} s", limit.as_secs());
            let (redis, daemon, wallet, safety) = tokio::join!(
                tokio::time::timeout(limit, store.ping()),
                tokio::time::timeout(limit, daemon.get_last_block_header()),
                tokio::time::timeout(limit, wallet.status()),
                tokio::time::timeout(limit, store.redis_safety()),
            );
            let redis = match redis {
                Ok(Ok(())) => Reachability { ok: true, required: true, detail: "PONG".into() },
                Ok(Err(e)) => Reachability { ok: false, required: true, detail: e.to_string() },
                Err(_) => Reachability { ok: false, required: true, detail: timeout("Redis") },
            };
            let daemon = match daemon {
                Ok(Ok(h)) => Reachability { ok: true, required: true, detail: format!("height {}", h.height) },
                Ok(Err(e)) => Reachability { ok: false, required: true, detail: e.to_string() },
                Err(_) => Reachability { ok: false, required: true, detail: timeout("the daemon") },
            };
            let wallet = match wallet {
                Ok(Ok(s)) => Reachability {
                    ok: true,
                    required: wallet_required,
                    detail: format!("wallet at block {}", s.wallet_block_count),
                },
                Ok(Err(e)) => Reachability { ok: false, required: wallet_required, detail: e.to_string() },
                Err(_) => Reachability { ok: false, required: wallet_required, detail: timeout("the wallet API") },
            };
            let redis_config = match safety {
                Ok(Ok(s)) => {
                    crate::metrics::redis_safety(s.evicting(), s.persisted());
                    Reachability { ok: !s.evicting() && s.persisted(), required: false, detail: s.detail() }
                }
                Ok(Err(e)) => Reachability { ok: false, required: false, detail: format!("unknown: {e}") },
                Err(_) => Reachability { ok: false, required: false, detail: timeout("Redis") },
            };
            HealthReport { redis, daemon, wallet, redis_config }
        })
    }
}

/// The handles one run needs.
struct Run {
    shared: Arc<Shared>,
    /// The collector's own connection (see [`own_connection`]).
    store: Store,
    daemon: DaemonClient,
    wallet: WalletClient,
}

/// The collector's own Redis connection, opened at its first run: its reads and index writes
/// are large at farm scale, and on the requests' connection every request would queue behind
/// them. Until it connects, the requests' connection.
async fn own_connection(shared: &Shared, carry: &mut Carry) -> Store {
    if let Some(store) = &carry.store {
        return store.clone();
    }
    let config = shared.config();
    match Store::connect_to(&config.redis.target(), config.redis_prefix(), Duration::from_secs(3)).await {
        Ok(store) => {
            carry.store = Some(store.clone());
            store
        }
        Err(e) => {
            tracing::debug!("stats collector: no connection of its own yet ({e}); sharing the API's");
            shared.store.clone()
        }
    }
}

fn due(last: u64, now: u64, every: Duration) -> bool {
    last == 0 || now.saturating_sub(last) >= every.as_secs().max(1)
}

fn merge_for(name: &str) -> Merge {
    if name.starts_with("workers") {
        Merge::Max
    } else {
        Merge::AvgRound
    }
}

impl Run {
    fn store(&self) -> &Store {
        &self.store
    }

    /// Brings the in-memory hashrate window up to date (reading only what is new, or all of it
    /// when it is new or Redis says it changed under it) and answers its figures.
    async fn window_figures(&self, carry: &mut Carry, now: u64) -> Result<shapes::WindowFigures, StoreError> {
        let length = self.shared.config().api.hashrate_window.as_secs().max(1);
        let window = carry.window.get_or_insert_with(|| HashrateWindow::new(length, WINDOW_OVERLAP_SECS));
        if window.window() != length {
            *window = HashrateWindow::new(length, WINDOW_OVERLAP_SECS);
        }
        let start = now.saturating_sub(length);
        let started = Instant::now();
        let mut read = 0;
        if window.needs_full_read() {
            read += self.full_window_read(window, start, now).await?;
        }
        let (members, len) =
            self.store().read_hashrate_window(start, window.read_from(start), window.check_from(start)).await?;
        let mut applied = window.apply(start, now, members, len);
        read += applied.read;
        if !applied.consistent {
            crate::metrics::collector_window_resync();
            tracing::debug!(members = len, "hashrate window changed under the collector: reading it whole");
            read += self.full_window_read(window, start, now).await?;
            let (members, len) =
                self.store().read_hashrate_window(start, window.read_from(start), window.check_from(start)).await?;
            applied = window.apply(start, now, members, len);
            read += applied.read;
        }
        crate::metrics::collector_window(read, applied.expired, window.len(), started.elapsed());
        Ok(window.figures())
    }

    /// Loads the window from `start` up to where the ordinary read begins, a few seconds of
    /// records per request; answers the members read.
    async fn full_window_read(&self, window: &mut HashrateWindow, start: u64, now: u64) -> Result<u64, StoreError> {
        let end = window.slices_end(now);
        let mut read = 0;
        let mut from = start;
        while from < end {
            let to = (from + FULL_READ_SLICE_SECS).min(end);
            read += window.load_slice(to, self.store().hashrate_slice(from, to).await?);
            from = to;
        }
        Ok(read)
    }

    async fn once(&self, carry: &mut Carry) -> Result<(), StoreError> {
        let config = self.shared.config();
        let api = &config.api;
        let now = unix_now();
        let figures = self.window_figures(carry, now).await?;
        let read = self.store().read_pool(api.blocks, api.payments).await?;

        // Blocks: candidates (pending, reward from blocks:info) and matured.
        let mut candidates = shapes::parse_blocks(&read.candidates, false);
        let _ = fill_rewards(self.store(), &mut candidates).await;
        if carry.matured_count != Some(read.matured_count) {
            carry.matured = shapes::parse_blocks(&self.store().matured_all().await?, true);
            let mut totals = BlockTotals::default();
            totals.add(&carry.matured);
            carry.matured_totals = totals;
            carry.matured_count = Some(read.matured_count);
        }
        let mut totals = carry.matured_totals.clone();
        totals.add(&candidates);
        let mut recent = shapes::parse_blocks(&read.matured_recent, true);
        let _ = fill_rewards(self.store(), &mut recent).await;
        let mut blocks: Vec<&BlockRecord> = candidates.iter().chain(recent.iter()).collect();
        blocks.sort_by_key(|b| std::cmp::Reverse(b.height));

        // Rounds and per-miner figures.
        let round_score = shapes::sum_values(&read.prop_scores);
        let round_hashes = shapes::sum_values(&read.prop_shares) as u64;
        let solo_score = shapes::sum_values(&read.solo_scores);
        let mut miners: HashMap<String, MinerFigures> = HashMap::new();
        for (address, h) in &figures.miners {
            miners.entry(address.clone()).or_default().hashrate = *h;
        }
        for (address, v) in &read.prop_scores {
            miners.entry(address.clone()).or_default().round_score = shapes::parse_float(v).unwrap_or(0.0);
        }
        for (address, v) in &read.prop_shares {
            miners.entry(address.clone()).or_default().round_hashes = shapes::parse_int(v).unwrap_or(0).max(0) as u64;
        }

        // Money summary: every 30 s, and at once after a payment.
        if due(carry.balances_at, now, Duration::from_secs(30)) || carry.payments_seen != Some(read.payments_count) {
            carry.payments_seen = Some(read.payments_count);
            match self.store().all_balances().await {
                Ok(rows) => {
                    carry.miners_paid = rows.iter().filter(|(_, r)| r.paid > 0).count() as u64;
                    carry.balances_at = now;
                }
                Err(e) => {
                    crate::metrics::collector_error("balances");
                    tracing::debug!("balances not read: {e}");
                }
            }
            match self.store().payment_journal().await {
                Ok(j) => {
                    let age = j.oldest_ms.map_or(0, |ms| (now * 1000).saturating_sub(ms) / 1000);
                    crate::metrics::payment_journal(j.open, Duration::from_secs(age));
                }
                Err(_) => crate::metrics::collector_error("journal"),
            }
        }

        // The daemon's last block; the network figures of the template being mined.
        match self.daemon.get_last_block_header().await {
            Ok(h) => {
                carry.lastblock = Some(json!({
                    "difficulty": h.difficulty, "height": h.height, "timestamp": h.timestamp,
                    "reward": h.reward, "hash": h.hash.to_hex(),
                }));
                carry.network = Some(json!({"difficulty": h.difficulty, "height": h.height + 1}));
            }
            Err(e) => {
                crate::metrics::collector_error("daemon");
                tracing::debug!("last block header: {e}");
            }
        }
        if let Some(t) = self.shared.current.load_full() {
            carry.network = Some(json!({"difficulty": t.template.difficulty, "height": t.template.height}));
        }
        let network_difficulty = carry.network.as_ref().and_then(|n| n["difficulty"].as_u64()).unwrap_or(0);
        if network_difficulty > 0 {
            crate::metrics::round_effort(round_hashes as f64 / network_difficulty as f64);
        }

        // Charts: each pool series is sampled every `updateInterval` of its group.
        let groups = [
            ("hashrate", &config.charts.pool.hashrate),
            ("miners", &config.charts.pool.miners),
            ("workers", &config.charts.pool.workers),
            ("difficulty", &config.charts.pool.difficulty),
        ];
        let mut sample: HashMap<&'static str, &ChartSeries> = HashMap::new();
        for (group, series) in groups {
            let skip = group == "difficulty" && network_difficulty == 0;
            if series.enabled
                && !skip
                && due(carry.pool_charts_at.get(group).copied().unwrap_or(0), now, series.update_interval)
            {
                carry.pool_charts_at.insert(group, now);
                sample.insert(group, series);
            }
        }
        let chart_values = [
            ("hashrate", "hashrate", figures.hashrate.0),
            ("hashrateSolo", "hashrate", figures.hashrate.1),
            ("miners", "miners", figures.miner_count.0),
            ("minersSolo", "miners", figures.miner_count.1),
            ("workers", "workers", figures.worker_count.0),
            ("workersSolo", "workers", figures.worker_count.1),
            ("difficulty", "difficulty", network_difficulty),
        ];
        let names: Vec<String> = chart_values.iter().map(|(n, _, _)| n.to_string()).collect();
        let stored = self.store().read_charts(&names).await.unwrap_or_else(|_| vec![None; names.len()]);
        let mut charts = Map::new();
        let mut writes = Vec::new();
        for ((name, group, value), json) in chart_values.iter().zip(stored) {
            let mut points = shapes::parse_series(json.as_deref());
            if let Some(series) = sample.get(group) {
                let (step, max) = (series.step_interval.as_secs(), series.maximum_period.as_secs());
                shapes::add_sample(&mut points, now, *value as f64, step, max, merge_for(name));
                let ttl = name.starts_with("hashrate").then_some(CHART_TTL_SECS);
                writes.push((name.to_string(), shapes::series_json(&points).to_string(), ttl));
            }
            charts.insert(name.to_string(), shapes::series_json(&points));
        }
        if let Err(e) = self.store().write_charts(&writes).await {
            crate::metrics::collector_error("charts");
            tracing::debug!("charts not written: {e}");
        }
        if config.charts.blocks.enabled {
            let (prop, solo) = shapes::blocks_per_day(&carry.matured, now, config.charts.blocks.days);
            charts.insert("blocks".into(), Value::Object(prop));
            charts.insert("blocksSolo".into(), Value::Object(solo));
        }
        self.user_charts(carry, now, &figures).await;

        // Render and publish.
        let inputs = Inputs {
            health: (read.daemon_status.clone(), read.wallet_status.clone()),
            stats: read.stats.clone(),
            blocks: blocks.iter().map(|b| b.api_json()).collect(),
            totals: totals.clone(),
            payments: read.payments_recent.iter().map(|(m, t)| shapes::payment_json(m, *t, true)).collect(),
            total_payments: read.payments_count,
            miners_paid: carry.miners_paid,
            miners: figures.miner_count,
            workers: figures.worker_count,
            hashrate: figures.hashrate,
            round_score,
            round_hashes,
            lastblock: carry.lastblock.clone(),
            network: carry.network.clone(),
            charts,
        };
        let stats = stats_object(&config, &inputs);
        carry.generation += 1;
        let top = self.top_table(carry, now, &figures).await;
        let snapshot = Snapshot {
            top,
            generation: carry.generation,
            updated: now,
            stats_prefix: prefix_of(&stats),
            miners_hashrate_json: json!({"minersHashrate": figures.miners}).to_string(),
            workers_hashrate_json: json!({"workersHashrate": figures.workers}).to_string(),
            miners,
            workers: figures.workers.clone(),
            round_total: round_score + solo_score,
            totals,
            recent_blocks: blocks.iter().map(|b| (*b).clone()).collect(),
        };
        self.shared.snapshot.store(Arc::new(snapshot));
        self.shared.updates.send_replace(carry.generation);
        crate::metrics::pool_figures(figures.hashrate, figures.miner_count, figures.worker_count);

        // Indexes for the per-miner routes: new entries at once, known ones once their time
        // moved on by INDEX_REFRESH_SECS (a farm's 100k workers are not rewritten every run;
        // the exact last share is in each worker's own statistics hash).
        let stale = |written: Option<&u64>, t: u64| written.map_or(true, |w| t >= w + INDEX_REFRESH_SECS);
        let active: Vec<(String, u64)> = figures
            .last_seen
            .iter()
            .filter(|(a, t)| stale(carry.indexed_miners.get(*a), **t))
            .map(|(a, t)| (a.clone(), *t))
            .collect();
        let workers: Vec<(String, String, u64)> = figures
            .worker_last_seen
            .iter()
            .filter(|(k, t)| stale(carry.indexed_workers.get(*k), **t))
            .map(|((a, w), t)| (a.clone(), w.clone(), *t))
            .collect();
        match self.store().index_active(now, &active, &workers).await {
            Ok(()) => {
                carry.indexed_miners.retain(|a, _| figures.last_seen.contains_key(a));
                carry.indexed_workers.retain(|k, _| figures.worker_last_seen.contains_key(k));
                carry.indexed_miners.extend(active);
                carry.indexed_workers.extend(workers.into_iter().map(|(a, w, t)| ((a, w), t)));
            }
            Err(e) => {
                crate::metrics::collector_error("index");
                tracing::debug!("miner index not updated: {e}");
            }
        }

        if due(carry.monitored_at, now, config.monitoring.check_interval) {
            carry.monitored_at = now;
            self.monitor(now).await;
        }
        Ok(())
    }

    /// Known miners' totals (`workers:<address>` `hashes`, `lastShare`) with the window's
    /// hashrates, for `/get_top10miners`. All of them every [`ROSTER_REFRESH`], otherwise only the
    /// addresses in the window; on a Redis error the previous totals stay.
    async fn top_table(&self, carry: &mut Carry, now: u64, figures: &shapes::WindowFigures) -> Arc<TopTable> {
        let full = due(carry.roster_at, now, ROSTER_REFRESH);
        let seen: Vec<(String, u64)> = if full {
            match self.store().known_miners().await {
                Ok(known) => known,
                Err(_) => {
                    crate::metrics::collector_error("top_miners");
                    Vec::new()
                }
            }
        } else {
            figures.last_seen.iter().map(|(a, t)| (a.clone(), *t)).collect()
        };
        let addresses: Vec<String> = seen.iter().map(|(a, _)| a.clone()).collect();
        match self.store().miner_totals(&addresses).await {
            Ok(totals) => {
                if full {
                    carry.roster.clear();
                    carry.roster_at = now;
                }
                for ((address, seen), (hashes, last)) in seen.into_iter().zip(totals) {
                    let last = last.as_deref().and_then(shapes::parse_int).unwrap_or(0).max(seen as i64).max(0) as u64;
                    let hashes = hashes.as_deref().and_then(shapes::parse_int).unwrap_or(0).max(0) as u64;
                    carry.roster.insert(address, (hashes, last));
                }
            }
            Err(_) => crate::metrics::collector_error("top_miners"),
        }
        for (address, at) in &figures.last_seen {
            let entry = carry.roster.entry(address.clone()).or_default();
            entry.1 = entry.1.max(*at);
        }
        let rows = carry
            .roster
            .iter()
            .map(|(address, (hashes, last))| TopRow {
                miner: address.clone(),
                hashrate: figures.miners.get(address).copied().unwrap_or(0),
                last_share: *last,
                hashes: *hashes,
            })
            .collect();
        Arc::new(TopTable::new(rows))
    }

    /// Per-miner and per-worker hashrate series (spec §8.10: only miners with a hashrate).
    async fn user_charts(&self, carry: &mut Carry, now: u64, figures: &shapes::WindowFigures) {
        let config = &self.shared.config().charts.user;
        let mut jobs: Vec<(String, f64, &ChartSeries)> = Vec::new();
        if config.hashrate.enabled && due(carry.user_chart_at, now, config.hashrate.update_interval) {
            carry.user_chart_at = now;
            jobs.extend(
                figures
                    .miners
                    .iter()
                    .filter(|(_, h)| **h > 0)
                    .map(|(a, h)| (format!("hashrate:{a}"), *h as f64, &config.hashrate)),
            );
        }
        if config.worker_hashrate.enabled && due(carry.worker_chart_at, now, config.worker_hashrate.update_interval) {
            carry.worker_chart_at = now;
            jobs.extend(
                figures
                    .workers
                    .iter()
                    .filter(|(_, h)| **h > 0)
                    .map(|(w, h)| (format!("worker_hashrate:{w}"), *h as f64, &config.worker_hashrate)),
            );
        }
        for chunk in jobs.chunks(1000) {
            let names: Vec<String> = chunk.iter().map(|(n, _, _)| n.clone()).collect();
            let stored = match self.store().read_charts(&names).await {
                Ok(s) => s,
                Err(_) => {
                    crate::metrics::collector_error("charts");
                    return;
                }
            };
            let writes: Vec<(String, String, Option<u64>)> = chunk
                .iter()
                .zip(stored)
                .map(|((name, value, series), json)| {
                    let mut points = shapes::parse_series(json.as_deref());
                    shapes::add_sample(
                        &mut points,
                        now,
                        *value,
                        series.step_interval.as_secs(),
                        series.maximum_period.as_secs(),
                        Merge::AvgRound,
                    );
                    (name.clone(), shapes::series_json(&points).to_string(), Some(CHART_TTL_SECS))
                })
                .collect();
            if self.store().write_charts(&writes).await.is_err() {
                crate::metrics::collector_error("charts");
                return;
            }
        }
    }

    /// Daemon and wallet checks into `status:*` (old format) and the up/height metrics.
    async fn monitor(&self, now: u64) {
        let (ok, response) = match self.daemon.get_block_count().await {
            Ok(count) => (true, json!({"count": count, "status": "OK"}).to_string()),
            Err(e) => (false, e.to_string()),
        };
        crate::metrics::daemon_up(ok);
        if !ok {
            crate::metrics::collector_error("daemon");
        }
        if self.store().write_status("daemon", now, ok, &response).await.is_err() {
            crate::metrics::collector_error("status");
        }
        if let Ok(info) = self.daemon.info().await {
            crate::metrics::daemon_heights(info.height, info.network_height.max(info.height));
        }
        if !self.shared.config().payments.enabled {
            return;
        }
        let (ok, response) = match self.wallet.balance().await {
            Ok(b) => (true, json!({"unlocked": b.unlocked, "locked": b.locked}).to_string()),
            Err(e) => (false, e.to_string()),
        };
        crate::metrics::wallet_up(ok);
        if !ok {
            crate::metrics::collector_error("wallet");
        }
        if self.store().write_status("wallet", now, ok, &response).await.is_err() {
            crate::metrics::collector_error("status");
        }
    }
}

/// Fills in what was at stake for blocks whose zset member carries no reward (pending and
/// orphaned ones) from their `blocks:info`; confirmed blocks keep the credited reward.
pub(crate) async fn fill_rewards(store: &Store, blocks: &mut [BlockRecord]) -> Result<(), StoreError> {
    let mut missing: Vec<&mut BlockRecord> =
        blocks.iter_mut().filter(|b| b.status != shapes::BlockStatus::Confirmed).collect();
    let hashes: Vec<String> = missing.iter().map(|b| b.hash.clone()).collect();
    for (b, r) in missing.iter_mut().zip(store.block_info_field(&hashes, "reward").await?) {
        b.reward = r.and_then(|r| r.parse().ok()).unwrap_or(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.json")).unwrap();
        Config::from_json_str(&text, "config.json").unwrap().0
    }

    #[test]
    fn stats_body_has_every_section_in_the_old_order() {
        let config = config();
        let s = Snapshot::empty(&config);
        let body: Value = serde_json::from_str(&s.stats_body(None)).unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["health", "pool", "lastblock", "network", "config", "charts", "miner"]);
        assert_eq!(body["miner"], json!({}));
        assert_eq!(body["health"]["pastella"]["price"], Value::Null);
        assert_eq!(body["config"]["fee"], json!(1));
        assert_eq!(
            body["config"]["ports"][0],
            json!({"port": 3333, "difficulty": 5000, "desc": "Low end hardware", "ssl": false, "tls": "off"})
        );
        assert_eq!(body["config"]["maxPaymentThreshold"], Value::Null);
        assert!(body["pool"].get("lastBlockFound").is_none());
        assert_eq!(body["charts"]["hashrate"], json!([]));
    }

    #[test]
    fn miner_figures_fill_the_miner_object() {
        let config = config();
        let mut s = Snapshot::empty(&config);
        s.miners.insert("A".into(), MinerFigures { hashrate: 5, round_score: 10.0, round_hashes: 10 });
        let body: Value = serde_json::from_str(&s.stats_body(Some("A"))).unwrap();
        assert_eq!(body["miner"], json!({"hashrate": 5, "roundScore": 10, "roundHashes": 10}));
        let body: Value = serde_json::from_str(&s.stats_body(Some("B"))).unwrap();
        assert_eq!(body["miner"], json!({}));
    }

    #[test]
    fn health_is_503_only_for_required_failures() {
        let up = Reachability { ok: true, required: true, detail: String::new() };
        let wallet_down = Reachability { ok: false, required: false, detail: "refused".into() };
        let evicting = Reachability { ok: false, required: false, detail: "maxmemory-policy allkeys-lru".into() };
        let r = HealthReport {
            redis: up.clone(),
            daemon: up.clone(),
            wallet: wallet_down.clone(),
            redis_config: evicting.clone(),
        };
        assert!(r.healthy(), "an unsafe Redis config is reported, not a 503");
        assert_eq!(r.json()["redisConfig"]["ok"], false);
        let wallet = Reachability { required: true, ..wallet_down };
        let r = HealthReport { redis: up.clone(), daemon: up, wallet, redis_config: evicting };
        assert!(!r.healthy());
        assert_eq!(r.json()["status"], "fail");
        assert_eq!(r.json()["wallet"]["ok"], false);
    }
}

//! The public routes of spec §10 plus `/workers` and `/health`. The hot ones (`/stats`,
//! `/live_stats`, top miners) are answered from the collector's snapshot; the per-miner and
//! paged ones read a few keys with one pipelined round trip.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::collector::{fill_rewards, unix_now, CheckHealth};
use super::shapes::{self, num, BlockRecord, BlockStatus};
use super::top::TopQuery;
use super::{admin, ApiState, MAX_LONGPOLLS};
use crate::config::Config;
use crate::store::StoreError;

/// Largest `limit` the paged routes accept.
const MAX_PAGE: u64 = 1000;

/// Workers `/stats_address` lists (the newest by last share): a farm's address may have
/// tens of thousands, each costing a hash and a chart read. `/workers` pages through all.
pub const STATS_ADDRESS_WORKERS: usize = 1000;

/// Registers every route of the API (mounted at `/` and under `/api`).
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.route("/stats", web::route().to(stats))
        .route("/live_stats", web::route().to(live_stats))
        .route("/stats_address", web::route().to(stats_address))
        .route("/workers", web::route().to(workers))
        .route("/get_payments", web::route().to(get_payments))
        .route("/get_blocks", web::route().to(get_blocks))
        .route("/get_market", web::route().to(get_market))
        .route("/get_top10miners", web::route().to(top_miners))
        .route("/get_miner_payout_level", web::route().to(get_payout_level))
        .route("/set_miner_payout_level", web::route().to(set_payout_level))
        .route("/block_explorers", web::route().to(block_explorers))
        .route("/get_apis", web::route().to(get_apis))
        .route("/get_block_payouts", web::route().to(super::block_payouts::get_block_payouts))
        .route("/health", web::route().to(health));
    admin::register(cfg);
}

/// The query string as name → value (the first occurrence wins).
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses the request's query string; an unreadable one is empty.
    pub fn of(req: &HttpRequest) -> Params {
        Params::parse(req.query_string())
    }

    /// Parses a query string (without `?`); an unreadable one is empty.
    pub fn parse(query: &str) -> Params {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query).map(|q| q.into_inner()).unwrap_or_default();
        let mut map = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_insert(v);
        }
        Params(map)
    }

    /// One parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A JSON response from a rendered body.
pub fn json_text(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(body)
}

/// A JSON response.
pub fn json_value(value: &Value) -> HttpResponse {
    json_text(value.to_string())
}

/// The old API's answer when Redis failed.
fn query_failed(e: StoreError) -> HttpResponse {
    tracing::warn!("API: {e}");
    json_value(&json!({"error": "Query failed"}))
}

async fn stats(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    json_text(state.snapshot.load().stats_body(params.get("address")))
}

/// Decrements the long-poll count when the request ends, answered or dropped.
struct Held<'a>(&'a ApiState);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let left = self.0.longpolls.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        crate::metrics::api_longpolls(left);
    }
}

/// Waits for the next collector run (bounded, so a stalled collector never holds a client
/// forever); answers at once when too many requests are already waiting.
async fn wait_for_update(state: &ApiState) {
    let held = state.longpolls.fetch_add(1, Ordering::AcqRel) + 1;
    let _guard = Held(state);
    if held > MAX_LONGPOLLS {
        return;
    }
    crate::metrics::api_longpolls(held);
    let mut updates = state.updates.subscribe();
    let limit = state.config().api.update_interval * 3 + Duration::from_secs(5);
    let _ = tokio::time::timeout(limit, updates.changed()).await;
}

async fn live_stats(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    wait_for_update(&state).await;
    json_text(state.snapshot.load().stats_body(params.get("address")))
}

async fn stats_address(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    let address = params.get("address").unwrap_or_default().to_string();
    if params.get("longpoll") == Some("true") {
        match state.store.miner_exists(&address).await {
            Ok(true) => wait_for_update(&state).await,
            Ok(false) => return json_value(&json!({"error": "Not found"})),
            Err(e) => return query_failed(e),
        }
    }
    match miner_object(&state, &address).await {
        Ok(Some(v)) => json_value(&v),
        Ok(None) => json_value(&json!({"error": "Not found"})),
        Err(e) => query_failed(e),
    }
}

fn parse_u64(v: Option<&String>) -> u64 {
    v.and_then(|v| shapes::parse_int(v)).filter(|v| *v > 0).unwrap_or(0) as u64
}

/// The worker objects of one address, newest first.
async fn worker_list(state: &ApiState, address: &str, index: &[(String, u64)]) -> Result<Vec<Value>, StoreError> {
    let names: Vec<String> = index.iter().map(|(n, _)| n.clone()).collect();
    let details = state.store.read_workers(address, &names).await?;
    let snapshot = state.snapshot.load();
    let now = unix_now();
    Ok(index
        .iter()
        .zip(details)
        .map(|((name, seen), d)| {
            let avg = shapes::averages(&shapes::parse_series(d.chart.as_deref()), now);
            let last_share = parse_u64(d.stats.get("lastShare")).max(*seen);
            json!({
                "name": name,
                "hashrate": snapshot.workers.get(&format!("{address}~{name}")).copied().unwrap_or(0),
                "lastShare": last_share,
                "hashes": parse_u64(d.stats.get("hashes")),
                "type": d.stats.get("rewardType").map_or("prop", String::as_str),
                "hashrate_1h": avg[0],
                "hashrate_6h": avg[1],
                "hashrate_24h": avg[2],
            })
        })
        .collect())
}

/// The `/stats_address` object, `None` when the pool knows nothing of `address`.
async fn miner_object(state: &ApiState, address: &str) -> Result<Option<Value>, StoreError> {
    let config = state.config();
    let read = state.store.read_miner(address, config.api.payments, STATS_ADDRESS_WORKERS).await?;
    if address.is_empty() || (read.worker_stats.is_empty() && read.balances.is_empty()) {
        return Ok(None);
    }
    let snapshot = state.snapshot.load_full();
    let now = unix_now();
    let figures = snapshot.miners.get(address).copied().unwrap_or_default();

    let mut stats: Map<String, Value> = read.worker_stats.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    // Money comes from balances:<address>, never the old workers: hash (docs/REDIS.md).
    for field in ["balance", "paid"] {
        stats.insert(field.into(), json!(read.balances.get(field).cloned().unwrap_or_else(|| "0".into())));
    }
    match read.balances.get("minPayoutLevel") {
        Some(level) => stats.insert("minPayoutLevel".into(), json!(level)),
        None => stats.remove("minPayoutLevel"),
    };
    stats.insert("hashrate".into(), json!(figures.hashrate));
    stats.insert("roundScore".into(), num(figures.round_score));
    stats.insert("roundHashes".into(), json!(figures.round_hashes));
    let percent = if snapshot.round_total > 0.0 { figures.round_score / snapshot.round_total * 100.0 } else { 0.0 };
    stats.insert("roundSharePercent".into(), num(percent));
    let chart = shapes::parse_series(read.chart.as_deref());
    let avg = shapes::averages(&chart, now);
    stats.insert("hashrate_1h".into(), avg[0].into());
    stats.insert("hashrate_6h".into(), avg[1].into());
    stats.insert("hashrate_24h".into(), avg[2].into());

    let payments: Vec<Value> = read.payments.iter().map(|(m, t)| shapes::payment_json(m, *t, false)).collect();
    let mut payment_points: Vec<Value> =
        payments.iter().map(|p| json!([p["timestamp"].clone(), p["amount"].clone()])).collect();
    payment_points.reverse();

    let blocks = miner_blocks(state, address, &snapshot.recent_blocks).await?;
    let workers = worker_list(state, address, &read.workers).await?;
    Ok(Some(json!({
        "stats": stats,
        "payments": payments,
        "blocks": blocks,
        "charts": {"hashrate": shapes::series_json(&chart), "payments": payment_points},
        "workers": workers,
    })))
}

/// The recent blocks `address` took part in, with its share and reward (exact once credited).
async fn miner_blocks(state: &ApiState, address: &str, recent: &[BlockRecord]) -> Result<Vec<Value>, StoreError> {
    let heights: Vec<u64> = recent.iter().map(|b| b.height).collect();
    let participants = state.store.participants(&heights).await?;
    let mut mine: Vec<(&BlockRecord, f64, f64)> = Vec::new();
    for (block, entry) in recent.iter().zip(participants) {
        let map = entry.as_deref().map(shapes::parse_participants).unwrap_or_default();
        let window: f64 = map.values().sum();
        if block.solo {
            if block.miner == address {
                mine.push((block, map.get(address).copied().unwrap_or(block.finder_score), window.max(1.0)));
            }
        } else if let Some(score) = map.get(address) {
            mine.push((block, *score, window));
        }
    }
    let hashes: Vec<String> = mine.iter().map(|(b, _, _)| b.hash.clone()).collect();
    let credits = state.store.block_credits(&hashes, address).await?;
    let unlocker = &state.config().block_unlocker;
    let fee = |bps: u32| bps as f64 / 10_000.0;
    Ok(mine
        .iter()
        .zip(credits)
        .map(|((b, score, window), credit)| {
            let share = if b.solo {
                100.0
            } else if *window > 0.0 {
                score / window * 100.0
            } else {
                0.0
            };
            let estimate = if b.status == BlockStatus::Orphaned {
                0.0
            } else if b.solo {
                b.reward as f64 * (1.0 - fee(unlocker.solo_fee_bps.unwrap_or(unlocker.pool_fee_bps)))
            } else {
                let mut r =
                    b.reward as f64 * (1.0 - fee(unlocker.pool_fee_bps + unlocker.finder_reward_bps)) * share / 100.0;
                if b.miner == address {
                    r += b.reward as f64 * fee(unlocker.finder_reward_bps);
                }
                r.floor()
            };
            let reward = credit.and_then(|c| c.parse::<f64>().ok()).unwrap_or(estimate);
            json!({
                "height": b.height,
                "type": if b.solo { "solo" } else { "prop" },
                "miner": b.miner,
                "hash": b.hash,
                "timestamp": b.timestamp,
                "difficulty": b.difficulty,
                "totalShares": b.shares,
                "totalScore": num(if b.solo { *score } else { *window }),
                "minerScore": num(*score),
                "reward": b.reward,
                "status": b.status.name(),
                "sharePercent": num((share * 100.0).round() / 100.0),
                "minerReward": num(reward.floor()),
            })
        })
        .collect())
}

/// `/workers?address=&page=&limit=`: one page of an address's workers, newest share first
/// (`limit` 1000 by default and at most).
async fn workers(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    let Some(address) = params.get("address").filter(|a| !a.is_empty()) else {
        return json_value(&json!({"error": "Parameters are incomplete"}));
    };
    let page = shapes::page_param(params.get("page"), 1, u32::MAX as u64);
    let limit = shapes::page_param(params.get("limit"), MAX_PAGE, MAX_PAGE);
    let (exists, (total, index)) = match tokio::try_join!(
        state.store.miner_exists(address),
        state.store.worker_page(address, (page - 1) * limit, limit)
    ) {
        Ok(read) => read,
        Err(e) => return query_failed(e),
    };
    if !exists && total == 0 {
        return json_value(&json!({"error": "Not found"}));
    }
    match worker_list(&state, address, &index).await {
        Ok(list) => json_value(&json!({
            "address": address,
            "workers": list,
            "total": total,
            "page": page,
            "limit": limit,
            "totalPages": total.div_ceil(limit),
        })),
        Err(e) => query_failed(e),
    }
}

async fn get_payments(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    let page = shapes::page_param(params.get("page"), 1, u32::MAX as u64);
    let limit = shapes::page_param(params.get("limit"), 20, MAX_PAGE);
    let address = params.get("address").filter(|a| !a.is_empty());
    match state.store.payments_page(address, (page - 1) * limit, limit).await {
        Ok((total, rows)) => json_value(&json!({
            "payments": rows.iter().map(|(m, t)| shapes::payment_json(m, *t, true)).collect::<Vec<_>>(),
            "total": total,
            "page": page,
            "limit": limit,
            "totalPages": total.div_ceil(limit),
        })),
        Err(e) => query_failed(e),
    }
}

/// One page of the combined list: candidates (newest first), then matured blocks.
async fn blocks_page(state: &ApiState, offset: u64, limit: u64) -> Result<(u64, Vec<BlockRecord>), StoreError> {
    let (candidates, matured) = state.store.block_counts().await?;
    let end = offset + limit;
    let mut blocks = Vec::new();
    if offset < candidates {
        let rows = state.store.blocks_range(false, offset, end.min(candidates) - 1).await?;
        blocks.extend(shapes::parse_blocks(&rows, false));
    }
    if end > candidates {
        let start = offset.saturating_sub(candidates);
        let stop = end - candidates - 1;
        if start < matured {
            blocks.extend(shapes::parse_blocks(&state.store.blocks_range(true, start, stop).await?, true));
        }
    }
    fill_rewards(&state.store, &mut blocks).await?;
    blocks.sort_by_key(|b| std::cmp::Reverse(b.height));
    Ok((candidates + matured, blocks))
}

async fn get_blocks(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    let page = shapes::page_param(params.get("page"), 1, u32::MAX as u64);
    let limit = shapes::page_param(params.get("limit"), 20, MAX_PAGE);
    match blocks_page(&state, (page - 1) * limit, limit).await {
        Ok((total, blocks)) => json_value(&json!({
            "blocks": blocks.iter().map(BlockRecord::api_json).collect::<Vec<_>>(),
            "total": total,
            "page": page,
            "limit": limit,
            "totalPages": total.div_ceil(limit),
        })),
        Err(e) => query_failed(e),
    }
}

/// A body starting with a newline, as the old API wrote these routes.
fn newline_json(value: &Value) -> HttpResponse {
    json_text(format!("\n{value}"))
}

async fn get_market(req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    let tickers = params.get("tickers[]").or(params.get("tickers")).unwrap_or_default();
    if tickers.is_empty() {
        return newline_json(&json!({"error": "No tickers specified."}));
    }
    // The pool fetches no prices (it makes no outbound requests besides the daemon and wallet).
    newline_json(&json!([]))
}

/// Cached `/get_top10miners` answers of one snapshot generation.
#[derive(Default)]
pub struct TopCache {
    generation: u64,
    answers: HashMap<String, String>,
}

/// `/get_top10miners`, from the collector's table of known miners: no Redis, whatever the
/// parameters. The 64 most recent distinct queries of a generation are kept rendered.
async fn top_miners(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    let by_hashrate = params.get("sortBy") == Some("hashrate");
    let limit =
        params.get("limit").and_then(shapes::parse_int).filter(|v| *v > 0).unwrap_or(10).min(MAX_PAGE as i64) as usize;
    let exclude_inactive = params.get("excludeInactive") == Some("true");
    let hours = params.get("inactiveHours").and_then(shapes::parse_float).filter(|h| *h != 0.0).unwrap_or(24.0);
    let inactive_secs = (hours * 3600.0).round() as i64;
    let query = TopQuery { by_hashrate, limit, exclude_inactive, inactive_secs };
    let key = format!("{by_hashrate}:{limit}:{exclude_inactive}:{inactive_secs}");
    let snapshot = state.snapshot.load();
    {
        let cache = state.top_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generation == snapshot.generation {
            if let Some(body) = cache.answers.get(&key) {
                return json_text(body.clone());
            }
        }
    }
    let body = snapshot.top.answer(query, unix_now() as i64).to_string();
    let mut cache = state.top_cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.generation != snapshot.generation {
        cache.generation = snapshot.generation;
        cache.answers.clear();
    }
    if cache.answers.len() < 64 {
        cache.answers.insert(key, body.clone());
    }
    json_text(body)
}

/// `[minPayment, min(maxPayment, api.maxPayoutLevel)]` in PAS.
fn level_bounds(config: &Config) -> (f64, Option<f64>) {
    let units = config.coin_units as f64;
    let payments = &config.payments;
    let min = (payments.min_payment as f64 / units).max(0.0);
    let max = payments.max_payment.unwrap_or(u64::MAX).min(config.api.max_payout_level);
    (min, Some(max as f64 / units))
}

async fn get_payout_level(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    let Some(address) = params.get("address") else {
        return newline_json(&json!({"status": "Parameters are incomplete"}));
    };
    let value = match state.store.payout_level(address).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("API: {e}");
            return newline_json(&json!({"status": "Unable to get the current minimum payout level from database"}));
        }
    };
    let config = state.config();
    let (min, max) = level_bounds(&config);
    let mut level = value.as_deref().and_then(shapes::parse_float).unwrap_or(0.0) / config.coin_units as f64;
    if level < min {
        level = min;
    }
    if let Some(max) = max.filter(|m| level > *m) {
        level = max;
    }
    newline_json(&json!({"status": "done", "level": num(level)}))
}

/// Sets a miner's payout level. Only from an IP that mined for the address recently: the
/// request's own client IP (`ip` is still required by the old frontend, and must be that IP),
/// at most `api.payoutLevelPerHour` requests per client IP per hour.
async fn set_payout_level(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let params = Params::of(&req);
    let (Some(address), Some(ip), Some(level)) = (params.get("address"), params.get("ip"), params.get("level")) else {
        return newline_json(&json!({"status": "Parameters are incomplete"}));
    };
    let config = state.config();
    let api = &config.api;
    let Some(client) = admin::client_ip(&req, api.trust_proxy_ip) else {
        return newline_json(&json!({"status": "We haven't seen that IP for that wallet address in our record"}));
    };
    match state.store.count_payout_level_request(&client.to_string()).await {
        Ok(n) if n <= api.payout_level_per_hour => {}
        Ok(_) => {
            crate::metrics::payout_level_refused("rate_limited");
            return newline_json(&json!({"status": "Too many payout level changes from your IP, try again later"}));
        }
        Err(e) => {
            tracing::warn!("API: {e}");
            return newline_json(&json!({"status": "An error occurred when updating the value in our database"}));
        }
    }
    if ip.contains('*') || address.contains('*') {
        return newline_json(&json!({"status": "Remove the wildcard from your miner address"}));
    }
    let Some(level) = shapes::parse_float(level) else {
        return newline_json(&json!({"status": "Your minimum payout level doesn't look like a number"}));
    };
    let (min, max) = level_bounds(&config);
    if level < min {
        return newline_json(&json!({"status": format!("The minimum payout level is {}", num(min))}));
    }
    if let Some(max) = max.filter(|m| level > *m) {
        return newline_json(&json!({"status": format!("The maximum payout level is {}", num(max))}));
    }
    // The claimed IP must be the requester's own, and one it mined from recently.
    let claimed_is_client = ip.parse::<std::net::IpAddr>().is_ok_and(|claimed| same_ip(claimed, client));
    let since = unix_now().saturating_sub(api.payout_level_ip_age.as_secs());
    match state.store.login_ip_seen_since(address, &client.to_string(), since).await {
        Ok(true) if claimed_is_client => {}
        _ => {
            crate::metrics::payout_level_refused("ip_not_seen");
            return newline_json(&json!({"status": "We haven't seen that IP for that wallet address in our record"}));
        }
    }
    let atomic = (level * config.coin_units as f64).round() as u64;
    if let Err(e) = state.store.set_payout_level(address, atomic).await {
        tracing::warn!("API: {e}");
        return newline_json(&json!({"status": "An error occurred when updating the value in our database"}));
    }
    tracing::info!(miner = address, level = atomic, "minimum payout level updated");
    newline_json(&json!({"status": "done"}))
}

/// Equal IPs, an IPv4 address and its IPv4-mapped IPv6 form counting as one.
fn same_ip(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

async fn block_explorers(state: web::Data<ApiState>) -> HttpResponse {
    json_value(&json!({state.config().coin.clone(): {
        "blockchainExplorer": "https://explorer.pastella.org/block/{id}",
        "transactionExplorer": "https://explorer.pastella.org/transaction/{id}",
    }}))
}

async fn get_apis() -> HttpResponse {
    json_value(&json!({}))
}

/// The wallet's balance against the books (`ok: false` with every gap named). Reported, not a
/// reason for a 503: the API itself still works.
async fn wallet_books_json(state: &ApiState) -> Value {
    let c = &state.config().wallet_api;
    let wallet =
        crate::node::WalletClient::new(&c.host, c.port, &c.api_key, c.timeout.min(std::time::Duration::from_secs(10)));
    match crate::accounting::payments::wallet_books(&state.store, &wallet).await {
        Ok(books) => {
            let problems = books.problems();
            json!({"ok": problems.is_empty(), "wallet": books, "problems": problems})
        }
        Err(e) => {
            json!({"ok": false, "problems": [format!("cannot check the wallet's balance against the books: {e}")]})
        }
    }
}

async fn health(state: web::Data<ApiState>) -> HttpResponse {
    let Some(collector) = state.collector.get() else {
        return HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(json!({"status": "fail", "detail": "the stats collector is not running"}).to_string());
    };
    match collector.send(CheckHealth).await {
        Ok(report) => {
            let mut response = if report.healthy() { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
            let mut body = report.json();
            if state.config().payments.enabled {
                body["books"] = wallet_books_json(&state).await;
            }
            if let Some(sessions) = state.sessions_json() {
                body["sessions"] = sessions;
            }
            response.content_type("application/json").body(body.to_string())
        }
        Err(_) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(json!({"status": "fail", "detail": "the stats collector stopped"}).to_string()),
    }
}

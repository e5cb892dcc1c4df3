//! The stats API end to end: a pool with every module mining on the devnet (several miners
//! and workers, prop and solo, blocks pending, confirmed and orphaned, real payments through
//! the devnet wallet), and every route of spec §10 checked for the exact shape the old
//! frontend reads. Plus the HTTP rules: both prefixes, CORS, OPTIONS, 404, admin auth.

mod api_shapes;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use api_shapes::*;
use common::*;
use pastella_pool::chain::Address;
use pastella_pool::config::Module;
use pastella_pool::devnet::{DaemonMode, DevnetHandle};
use redis::Commands;
use serde_json::{json, Value};

const MINER_B: &str = "PAS1WPrszX47No6fAtDt56aTj9Vjr9dZq58qaiz9dvZB5dmiXkFbD1";
const DEVNET_DIFFICULTY: u64 = 12;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A third valid address (a real curve point), for the solo miner.
fn miner_c() -> String {
    let point = curve25519_dalek::constants::ED25519_BASEPOINT_POINT * curve25519_dalek::Scalar::from(977u64);
    Address::from_key(point.compress().to_bytes()).encode()
}

struct Http {
    base: String,
    client: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(self.body.trim_start()).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Answer { status, headers, body: response.text().await.unwrap() }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, &[]).await
    }

    /// GETs `path` at `/` and at `/api`, checks both answer 200 JSON with the CORS and cache
    /// headers, and returns the value.
    async fn json(&self, path: &str) -> Value {
        let a = self.get(path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(a.headers["access-control-allow-origin"], "*", "{path}");
        assert_eq!(a.headers["cache-control"], "no-cache", "{path}");
        assert!(a.headers["content-type"].to_str().unwrap().starts_with("application/json"), "{path}");
        let b = self.get(&format!("/api{path}")).await;
        assert_eq!(b.status, 200, "/api{path}: {}", b.body);
        a.json()
    }
}

fn money_patch(api_port: u16) -> Value {
    json!({
        "blockUnlocker": {"enabled": true, "interval": 1, "depth": 10, "leaseTtl": 2, "poolFee": 1, "finderReward": 1},
        "payments": {"enabled": true, "interval": 1, "minPayment": 100000, "transferFee": 1000, "maxAddresses": 5,
                     "blockedAddressesFile": "/nonexistent/payment_blocked.json"},
        "walletApi": {"timeoutMs": 2000},
        "api": {"port": api_port, "updateInterval": 1, "password": "s3cret-admin"},
        "monitoring": {"checkInterval": 1},
        "charts": {"pool": {"hashrate": {"updateInterval": 1, "stepInterval": 2, "maximumPeriod": 86400},
                            "workers": {"updateInterval": 1, "stepInterval": 2, "maximumPeriod": 86400},
                            "miners": {"updateInterval": 1, "stepInterval": 2, "maximumPeriod": 86400}},
                   "user": {"hashrate": {"updateInterval": 1, "stepInterval": 2, "maximumPeriod": 86400},
                            "workerHashrate": {"updateInterval": 1, "stepInterval": 2, "maximumPeriod": 86400}}}
    })
}

/// Reads the job pushes waiting on the socket, so the miner works on the newest job.
async fn refresh(miner: &mut TestMiner) {
    let session = miner.session.clone();
    miner.call("keepalived", json!({"id": session})).await;
}

/// Waits until the miner's job is for the block the devnet is at (the pool pushes it a few
/// milliseconds after a block), so the next block is not mined on a template already replaced.
async fn sync_job(miner: &mut TestMiner, devnet: &DevnetHandle) {
    for _ in 0..50 {
        refresh(miner).await;
        if miner.job.as_ref().map(|j| j.height) == Some(devnet.block_count()) {
            return;
        }
        miner.next_push(Duration::from_millis(200)).await;
    }
    panic!("the pool did not push a job for height {}", devnet.block_count());
}

/// Mines one share that meets the devnet's difficulty (a block) on the current template and
/// returns the reply; a share for a template that another block just replaced is mined again.
async fn find_block(miner: &mut TestMiner, devnet: &DevnetHandle, hasher: &SharedHasher, nonce: &mut u32) -> Value {
    let mut reply = Value::Null;
    for _ in 0..4 {
        sync_job(miner, devnet).await;
        let before = devnet.block_count();
        let (r, n, _) = miner.mine_and_submit(hasher, DEVNET_DIFFICULTY, *nonce).await;
        *nonce = u32::from_le_bytes(n).wrapping_add(1);
        reply = r;
        if !reply["error"]["message"].as_str().is_some_and(|m| m.starts_with("Stale")) {
            // The daemon takes the block a moment after the miner's OK.
            eventually(Duration::from_secs(10), || (devnet.block_count() > before).then_some(())).await;
            break;
        }
        miner.next_push(Duration::from_secs(5)).await;
    }
    reply
}

async fn shares(miner: &mut TestMiner, hasher: &SharedHasher, count: usize, nonce: &mut u32) {
    refresh(miner).await;
    for _ in 0..count {
        let (_, n, _) = miner.mine_and_submit(hasher, 0, *nonce).await;
        *nonce = u32::from_le_bytes(n).wrapping_add(1);
    }
}

fn statuses(stats: &Value) -> (usize, usize, usize) {
    let blocks = stats["pool"]["blocks"].as_array().cloned().unwrap_or_default();
    let n = |s: &str| blocks.iter().filter(|b| b["status"] == s).count();
    (n("pending"), n("confirmed"), n("orphaned"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_in_the_old_shape_after_real_mining() {
    let redis = RedisServer::start();
    let devnet = devnet(DEVNET_DIFFICULTY).await;
    let port = free_port();
    let config = pool_config(&redis, &devnet, &[(port, 2)], money_patch(free_port()));
    let pool = PoolProcess::start(config, &Module::all());
    let http = Http::new(pool.http_addr.expect("the API listens"));
    let hasher = SharedHasher::new();
    let c_address = miner_c();
    let mut a1 = TestMiner::connect(addr(port)).await;
    a1.login(MINER_A, "rig1").await;
    let mut a2 = TestMiner::connect(addr(port)).await;
    a2.login(MINER_A, "rig2").await;
    let mut b = TestMiner::connect(addr(port)).await;
    b.login(MINER_B, "bigrig").await;
    let mut c = TestMiner::connect(addr(port)).await;
    c.login(&format!("solo:{c_address}"), "solorig").await;
    let mut nonce = rand::random::<u32>() >> 4;

    // Shares from everyone, a prop block by A and a solo block by C, matured.
    for m in [&mut a1, &mut a2, &mut b, &mut c] {
        shares(m, &hasher, 3, &mut nonce).await;
    }
    let reply = find_block(&mut a1, &devnet, &hasher, &mut nonce).await;
    assert!(reply["error"].is_null(), "{reply}");
    shares(&mut b, &hasher, 2, &mut nonce).await;
    let reply = find_block(&mut c, &devnet, &hasher, &mut nonce).await;
    assert!(reply["error"].is_null(), "{reply}");
    // A block orphaned by a reorg.
    shares(&mut a2, &hasher, 2, &mut nonce).await;
    let reply = find_block(&mut a2, &devnet, &hasher, &mut nonce).await;
    assert!(reply["error"].is_null(), "{reply}");
    let mut con = redis.conn();
    let candidates = eventually(Duration::from_secs(20), || {
        let n: u64 = con.zcard("pastella:blocks:candidates").ok()?;
        (n >= 3).then_some(n)
    })
    .await;
    assert!(candidates.is_some(), "three candidates recorded");
    devnet.reorg(1).expect("reorg");
    devnet.mine(11);
    let resolved = eventually(Duration::from_secs(60), || {
        let confirmed: u64 = con.hget("pastella:totals", "blocksConfirmed").ok()?;
        let orphaned: u64 = con.hget("pastella:totals", "blocksOrphaned").ok()?;
        (confirmed >= 2 && orphaned >= 1).then_some(())
    })
    .await;
    assert!(resolved.is_some(), "the unlocker confirmed two blocks and orphaned one");

    // Payments go out through the devnet wallet and get mined.
    let paid = eventually(Duration::from_secs(60), || {
        let n: u64 = con.zcard("pastella:payments:all").ok()?;
        (n >= 1).then_some(n)
    })
    .await;
    assert!(paid.is_some(), "a payment was sent");
    devnet.mine(1);

    // A block still pending, and fresh shares for the hashrate window.
    for m in [&mut a1, &mut a2, &mut b, &mut c] {
        shares(m, &hasher, 2, &mut nonce).await;
    }
    let reply = find_block(&mut b, &devnet, &hasher, &mut nonce).await;
    assert!(reply["error"].is_null(), "{reply}");
    shares(&mut a1, &hasher, 2, &mut nonce).await;

    // The collector publishes all of it.
    let mut stats = Value::Null;
    for _ in 0..60 {
        stats = http.json("/stats").await;
        let (pending, confirmed, orphaned) = statuses(&stats);
        if pending >= 1
            && confirmed >= 2
            && orphaned >= 1
            && stats["pool"]["payments"].as_array().is_some_and(|p| !p.is_empty())
            && stats["pool"]["workers"].as_u64() >= Some(3)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_shape(&stats, &api_shapes::stats("pastella"), "/stats");
    let (pending, confirmed, orphaned) = statuses(&stats);
    assert!(
        pending >= 1 && confirmed >= 2 && orphaned >= 1,
        "statuses {pending}/{confirmed}/{orphaned}: {:#}",
        stats["pool"]["blocks"]
    );
    let pool_stats = &stats["pool"];
    assert_eq!(pool_stats["miners"], 2, "A and B mine prop");
    assert_eq!(pool_stats["minersSolo"], 1);
    assert_eq!(pool_stats["workers"], 3, "rig1, rig2, bigrig");
    assert_eq!(pool_stats["workersSolo"], 1);
    // Difficulty-2 shares over a 600 s window round to a hashrate of 0 or 1 H/s: only the
    // counts above say who is mining.
    assert!(pool_stats["lastBlockFound"].is_string() && pool_stats["lastBlockFoundSolo"].is_string());
    // Difficulty-2 shares meet the devnet's difficulty 12 now and then: more blocks than the
    // ones forced here may exist.
    assert!(pool_stats["totalBlocks"].as_u64().unwrap() >= 3 && pool_stats["totalBlocksSolo"].as_u64().unwrap() >= 1);
    assert!(pool_stats["totalMinersPaid"].as_u64().unwrap() >= 1);
    assert_eq!(stats["health"]["pastella"]["daemon"], "ok");
    assert_eq!(stats["health"]["pastella"]["wallet"], "ok");
    assert!(stats["network"]["height"].as_u64().unwrap() > stats["lastblock"]["height"].as_u64().unwrap());
    assert_eq!(stats["miner"], json!({}));
    let solo_block = pool_stats["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "solo" && b["status"] == "confirmed")
        .unwrap()
        .clone();
    assert_eq!(solo_block["miner"], c_address.as_str());
    assert!(solo_block["reward"].as_u64().unwrap() > 0);
    assert!(!stats["charts"]["hashrate"].as_array().unwrap().is_empty(), "pool hashrate chart sampled");

    let with_miner = http.json(&format!("/stats?address={MINER_A}")).await;
    assert_shape(&with_miner, &api_shapes::stats("pastella"), "/stats?address");
    assert!(with_miner["miner"]["hashrate"].is_u64());
    assert!(with_miner["miner"]["roundScore"].as_f64().is_some());

    // Long polls answer at the next collector run with the same shapes.
    let started = std::time::Instant::now();
    let live = http.json(&format!("/live_stats?address={MINER_A}")).await;
    assert_shape(&live, &api_shapes::stats("pastella"), "/live_stats");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The miner page.
    let miner = http.json(&format!("/stats_address?address={MINER_A}")).await;
    assert_shape(&miner, &stats_address(), "/stats_address");
    let s = &miner["stats"];
    let balance: u64 = s["balance"].as_str().unwrap().parse().unwrap();
    let paid_a: u64 = s["paid"].as_str().unwrap().parse().unwrap();
    let redis_balance: u64 = con.hget(format!("pastella:balances:{MINER_A}"), "balance").unwrap();
    assert_eq!(balance, redis_balance, "balance comes from balances:<address>");
    assert!(balance + paid_a > 0, "A was credited");
    let names: Vec<&str> = miner["workers"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"rig1") && names.contains(&"rig2"), "{names:?}");
    let statuses_a: Vec<&str> =
        miner["blocks"].as_array().unwrap().iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert!(statuses_a.contains(&"confirmed"), "A shared a confirmed block: {statuses_a:?}");
    let confirmed_a =
        miner["blocks"].as_array().unwrap().iter().find(|b| b["status"] == "confirmed" && b["type"] == "prop").unwrap();
    let credit: u64 =
        con.hget(format!("pastella:blocks:credits:{}", confirmed_a["hash"].as_str().unwrap()), MINER_A).unwrap();
    assert_eq!(confirmed_a["minerReward"].as_u64(), Some(credit), "exact credit once confirmed");
    let solo_page = http.json(&format!("/stats_address?address={c_address}")).await;
    assert_shape(&solo_page, &stats_address(), "/stats_address solo");
    assert_eq!(solo_page["workers"][0]["type"], "solo");
    assert!(solo_page["blocks"].as_array().unwrap().iter().any(|b| b["type"] == "solo"));
    let longpoll = http.json(&format!("/stats_address?address={MINER_B}&longpoll=true")).await;
    assert_shape(&longpoll, &stats_address(), "/stats_address longpoll");
    let unknown = http.json("/stats_address?address=PAS1nobody").await;
    assert_eq!(unknown, json!({"error": "Not found"}));
    assert_eq!(http.json("/stats_address?address=PAS1nobody&longpoll=true").await, json!({"error": "Not found"}));
    let workers = http.json(&format!("/workers?address={MINER_A}")).await;
    assert_shape(&workers, &workers_page(), "/workers");
    assert_eq!(workers["workers"].as_array().unwrap().len(), 2);

    // Paged lists.
    let payments = http.json("/get_payments").await;
    assert_shape(&payments, &paged(payment_with_address(), "payments"), "/get_payments");
    assert!(payments["total"].as_u64().unwrap() >= 1);
    assert!(payments["payments"][0]["address"].is_string());
    let payee = payments["payments"][0]["address"].as_str().unwrap().to_string();
    let mine = http.json(&format!("/get_payments?address={payee}&page=1&limit=5")).await;
    assert_shape(&mine, &paged(payment_with_address(), "payments"), "/get_payments?address");
    assert_eq!(mine["limit"], 5);
    let blocks = http.json("/get_blocks?page=1&limit=2").await;
    assert_shape(&blocks, &paged(api_block(), "blocks"), "/get_blocks");
    let total = blocks["total"].as_u64().unwrap();
    assert!(total >= 4);
    assert_eq!(blocks["totalPages"], total.div_ceil(2));
    assert_eq!(blocks["blocks"][0]["status"], "pending", "candidates first");
    let mut seen = Vec::new();
    for page in 1..=total.div_ceil(2) {
        let p = http.json(&format!("/get_blocks?page={page}&limit=2")).await;
        assert_shape(&p, &paged(api_block(), "blocks"), "/get_blocks page");
        seen.extend(p["blocks"].as_array().unwrap().iter().map(|b| b["hash"].as_str().unwrap().to_string()));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len() as u64, total, "pages cover every block once");

    // Top miners, payout level, static answers.
    for query in ["", "?sortBy=hashrate&limit=1", "?excludeInactive=true&inactiveHours=0.5"] {
        let top = http.json(&format!("/get_top10miners{query}")).await;
        assert_shape(&top, &top_miners(), "/get_top10miners");
        assert!(top["total"].as_u64().unwrap() >= 1, "{query}: {top}");
    }
    let top = http.json("/get_top10miners?sortBy=hashrate&limit=1").await;
    assert_eq!(top["sortBy"], "hashrate");
    assert_eq!(top["miners"].as_array().unwrap().len(), 1);
    let level = http.get(&format!("/get_miner_payout_level?address={MINER_A}")).await;
    assert!(level.body.starts_with('\n'), "old API prefixes a newline");
    assert_eq!(level.json(), json!({"status": "done", "level": 0.001}));
    let set = http.get(&format!("/set_miner_payout_level?address={MINER_A}&ip=127.0.0.1&level=0.5")).await;
    assert_eq!(set.json(), json!({"status": "done"}));
    assert_eq!(http.get(&format!("/get_miner_payout_level?address={MINER_A}")).await.json()["level"], json!(0.5));
    let level_atomic: u64 = con.hget(format!("pastella:balances:{MINER_A}"), "minPayoutLevel").unwrap();
    assert_eq!(level_atomic, 50_000_000);
    let wrong_ip = http.get(&format!("/set_miner_payout_level?address={MINER_A}&ip=10.9.9.9&level=0.5")).await.json();
    assert_eq!(wrong_ip["status"], "We haven't seen that IP for that wallet address in our record");
    let too_low =
        http.get(&format!("/set_miner_payout_level?address={MINER_A}&ip=127.0.0.1&level=0.0000001")).await.json();
    assert_eq!(too_low["status"], "The minimum payout level is 0.001");
    assert_eq!(http.get("/get_miner_payout_level").await.json(), json!({"status": "Parameters are incomplete"}));
    let explorers = http.json("/block_explorers").await;
    assert_shape(
        &explorers,
        &json!({"pastella": {"blockchainExplorer": "str", "transactionExplorer": "str"}}),
        "/block_explorers",
    );
    assert_eq!(http.json("/get_apis").await, json!({}));
    assert_eq!(http.get("/get_market").await.json(), json!({"error": "No tickers specified."}));

    // Admin routes need the password, from loopback too (the old pool's passwordless loopback
    // is opt-in, api.passwordlessLoopbackAdmin: tests/ops.rs), and through /api.
    for route in
        ["/miners_hashrate", "/workers_hashrate", "/admin_stats", "/admin_users", "/admin_monitoring", "/admin_ports"]
    {
        assert_eq!(http.get(route).await.status, 401, "{route} from loopback without password");
        assert_eq!(http.get(&format!("/api{route}")).await.status, 401, "/api{route} without password");
    }
    let miners_hr = http.json("/miners_hashrate?password=s3cret-admin").await;
    assert_shape(&miners_hr, &json!({"minersHashrate": {"*": "u64"}}), "/miners_hashrate");
    assert!(miners_hr["minersHashrate"][MINER_A].is_u64(), "{miners_hr}");
    let workers_hr = http.json("/workers_hashrate?password=s3cret-admin").await;
    assert_shape(&workers_hr, &json!({"workersHashrate": {"*": "u64"}}), "/workers_hashrate");
    assert!(workers_hr["workersHashrate"][format!("{MINER_A}~rig1")].is_u64());
    let admin = http.json("/admin_stats?password=s3cret-admin").await;
    assert_shape(&admin, &admin_stats(), "/admin_stats");
    assert!(admin["blocksUnlocked"].as_u64().unwrap() >= 1 && admin["blocksUnlockedSolo"].as_u64().unwrap() >= 1);
    assert!(admin["blocksOrphaned"].as_u64().unwrap() >= 1, "orphans counted");
    let confirmed_rewards: u64 = {
        let matured: Vec<String> = con.zrange("pastella:blocks:matured", 0, -1).unwrap();
        matured
            .iter()
            .filter(|m| m.split(':').count() == 10 && m.starts_with("prop:"))
            .map(|m| m.split(':').nth(9).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(admin["totalRevenue"].as_u64(), Some(confirmed_rewards), "revenue = rewards of confirmed prop blocks");
    assert!(admin["totalPaid"].as_u64().unwrap() > 0);
    let users = http.json("/admin_users?password=s3cret-admin").await;
    assert_shape(&users, &admin_users(), "/admin_users");
    assert!(users.get(MINER_A).is_some() && users.get(c_address.as_str()).is_some());
    let monitoring = http.json("/admin_monitoring?password=s3cret-admin").await;
    assert_shape(&monitoring, &admin_monitoring(), "/admin_monitoring");
    assert_eq!(monitoring["monitoring"]["daemon"]["lastStatus"], "ok");
    let ports = http.json("/admin_ports?password=s3cret-admin").await;
    assert_shape(&ports, &json!({"ports": {"*": "u64"}}), "/admin_ports");
    assert_eq!(ports["ports"][port.to_string()], 4, "four sessions on the port");
    assert_eq!(http.get("/admin_log?password=s3cret-admin&file=../../etc/passwd").await.status, 400);
    let health = http.json("/health").await;
    assert_shape(&health, &api_shapes::health(), "/health");
    assert_eq!(health["status"], "ok");

    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rules_cors_admin_auth_and_health() {
    let redis = RedisServer::start();
    let devnet = devnet(1_000_000).await;
    let metrics_port = free_port();
    let patch = json!({"api": {"updateInterval": 1, "password": "letmein"}, "metrics": {"port": metrics_port}});
    let pool = PoolProcess::start(pool_config(&redis, &devnet, &[(free_port(), 5)], patch), &[Module::Api]);
    let http = Http::new(pool.http_addr.unwrap());

    let options = http.send(reqwest::Method::OPTIONS, "/stats", &[]).await;
    assert_eq!(options.status, 204);
    assert_eq!(options.headers["access-control-allow-origin"], "*");
    assert!(options.headers.contains_key("access-control-allow-methods"));
    let missing = http.get("/no_such_route").await;
    assert_eq!((missing.status, missing.body.as_str()), (404, "Invalid API call"));
    assert_eq!(missing.headers["access-control-allow-origin"], "*");
    assert_eq!(http.get("/api/no_such_route").await.status, 404);
    let stats = http.json("/stats").await;
    assert_shape(&stats, &api_shapes::stats("pastella"), "/stats (empty pool)");

    // Admin: a password is needed, from loopback too (unless api.passwordlessLoopbackAdmin:
    // tests/ops.rs); a password login sets a session cookie that then suffices.
    assert_eq!(http.get("/admin_stats").await.status, 401);
    assert_eq!(http.get("/api/admin_stats").await.status, 401);
    let forwarded = http.send(reqwest::Method::GET, "/admin_stats", &[("X-Forwarded-For", "203.0.113.9")]).await;
    assert_eq!((forwarded.status, forwarded.body.as_str()), (401, "Invalid password"));
    assert_eq!(http.get("/api/admin_stats?password=wrong").await.status, 401);
    let login = http.get("/api/admin_stats?password=letmein").await;
    assert_eq!(login.status, 200);
    let cookie = login.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("sid=") && cookie.contains("Max-Age=86400") && cookie.contains("HttpOnly"), "{cookie}");
    let sid = cookie.split(';').next().unwrap();
    assert_eq!(http.send(reqwest::Method::GET, "/api/admin_users", &[("Cookie", sid)]).await.status, 200);
    assert_eq!(http.send(reqwest::Method::GET, "/api/admin_users", &[("Cookie", "sid=forged")]).await.status, 401);

    // /metrics lives on its own port when metrics.port is set.
    assert_eq!(http.get("/metrics").await.status, 404);
    let metrics = Http::new(addr(metrics_port)).get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("pastella_pool_api_requests_total"), "{}", metrics.body);
    assert_eq!(Http::new(addr(metrics_port)).get("/stats").await.status, 404);

    // /health: 200 while everything answers, 503 naming the daemon when it does not.
    let health = http.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_shape(&health.json(), &api_shapes::health(), "/health");
    devnet.set_daemon_mode(DaemonMode::Refuse, None);
    let down = http.get("/health").await;
    assert_eq!(down.status, 503, "{}", down.body);
    let body = down.json();
    assert_eq!(body["status"], "fail");
    assert_eq!(body["daemon"]["ok"], false);
    assert_eq!(body["redis"]["ok"], true);
    devnet.set_daemon_mode(DaemonMode::Normal, None);
    pool.stop();
}

/// An HTTP client whose requests come from `source` (any 127.0.0.0/8 address on Linux).
fn http_from(source: &str, api: SocketAddr) -> Http {
    Http {
        base: format!("http://{api}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .local_address(Some(source.parse().unwrap()))
            .build()
            .unwrap(),
    }
}

async fn set_level(http: &Http, address: &str, ip: &str, level: &str) -> String {
    let answer = http.get(&format!("/set_miner_payout_level?address={address}&ip={ip}&level={level}")).await;
    answer.json()["status"].as_str().unwrap().to_string()
}

/// `/set_miner_payout_level` believes no claimed IP: the request must come from an IP that
/// logged in to mine for the address within `api.payoutLevelIpAge`; the level is bounded by
/// `api.maxPayoutLevel` (default 1000 x minPayment) even with `maxPayment: null`; and each
/// client IP gets `api.payoutLevelPerHour` requests an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_miner_payout_level_checks_the_requesters_ip_bounds_the_level_and_is_rate_limited() {
    let port = free_port();
    let api_port = free_port();
    let patch = json!({
        "api": {"port": api_port, "updateInterval": 1, "payoutLevelPerHour": 4, "payoutLevelIpAge": 7200},
        "payments": {"minPayment": 100000, "maxPayment": null}
    });
    let stack = Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum, Module::Api]).await;
    let api = addr(api_port);
    let mut miner = TestMiner::connect_from("127.0.0.2".parse().unwrap(), addr(port)).await;
    miner.login(MINER_A, "rig").await;
    let mut con = stack.redis.conn();
    let seen = eventually(Duration::from_secs(30), || {
        con.hget::<_, _, Option<u64>>(format!("pastella:workers_ip_seen:{MINER_A}"), "::ffff:127.0.0.2").ok().flatten()
    })
    .await;
    assert!(seen.is_some(), "the login's IP is recorded with its time");
    let not_seen = "We haven't seen that IP for that wallet address in our record";

    // Someone else claims the miner's IP: refused.
    let stranger = http_from("127.0.0.1", api);
    assert_eq!(set_level(&stranger, MINER_A, "127.0.0.2", "0.5").await, not_seen);
    // From the miner's own IP: accepted, within the bound.
    let owner = http_from("127.0.0.2", api);
    assert_eq!(set_level(&owner, MINER_A, "127.0.0.2", "0.5").await, "done");
    let level: u64 = con.hget(format!("pastella:balances:{MINER_A}"), "minPayoutLevel").unwrap();
    assert_eq!(level, 50_000_000);
    // maxPayment is null, yet the level is bounded: 1000 x 0.001 PAS = 1 PAS.
    assert_eq!(set_level(&owner, MINER_A, "127.0.0.2", "2").await, "The maximum payout level is 1");
    // The owner's IP, but claimed to be another one: refused.
    assert_eq!(set_level(&owner, MINER_A, "127.0.0.9", "0.5").await, not_seen);

    // An IP the address mined from three hours ago (older than payoutLevelIpAge) and an IP only
    // in the old pool's workers_ip set (no time): both refused.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let _: () = con.hset(format!("pastella:workers_ip_seen:{MINER_A}"), "::ffff:127.0.0.3", now - 10_800).unwrap();
    let _: () = con.sadd(format!("pastella:workers_ip:{MINER_A}"), "::ffff:127.0.0.4").unwrap();
    assert_eq!(set_level(&http_from("127.0.0.3", api), MINER_A, "127.0.0.3", "0.5").await, not_seen);
    assert_eq!(set_level(&http_from("127.0.0.4", api), MINER_A, "127.0.0.4", "0.5").await, not_seen);

    // Rate limit: the owner's IP made 3 requests; the 4th passes, the 5th does not.
    assert_eq!(set_level(&owner, MINER_A, "127.0.0.2", "0.25").await, "done");
    assert_eq!(
        set_level(&owner, MINER_A, "127.0.0.2", "0.3").await,
        "Too many payout level changes from your IP, try again later"
    );
    let level: u64 = con.hget(format!("pastella:balances:{MINER_A}"), "minPayoutLevel").unwrap();
    assert_eq!(level, 25_000_000, "the refused change was not applied");
    // Another IP is not affected by the owner's limit.
    assert_eq!(set_level(&stranger, MINER_A, "127.0.0.1", "0.5").await, not_seen);
    drop(stack);
}

/// An orphaned block shows the reward that was at stake (from `blocks:info`), and worker
/// hashrate averages are whole H/s like every other hashrate of the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_blocks_show_their_reward_and_hashrate_averages_are_whole_numbers() {
    let api_port = free_port();
    let patch = json!({"api": {"port": api_port, "updateInterval": 1}});
    let stack = Stack::start(12, &[(free_port(), 2)], patch, &[Module::Api]).await;
    let http = Http::new(addr(api_port));
    let mut con = stack.redis.conn();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let hash = "ab".repeat(32);
    // What the unlocker leaves for an orphan: a 9-field matured member and its blocks:info.
    let _: () = con.zadd("pastella:blocks:matured", format!("prop:{MINER_A}:{hash}:{now}:12:30:30:10:1"), 5).unwrap();
    let _: () = con
        .hset_multiple(
            format!("pastella:blocks:info:{hash}"),
            &[("reward", "400000000"), ("status", "orphaned"), ("height", "5")],
        )
        .unwrap();
    // A worker whose chart points average 31.67 H/s.
    let chart = format!("[[{},31,1],[{},31,1],[{},33,1]]", now - 300, now - 200, now - 100);
    let _: () = con.set(format!("pastella:charts:worker_hashrate:{MINER_A}~rig"), &chart).unwrap();
    let _: () = con.set(format!("pastella:charts:hashrate:{MINER_A}"), &chart).unwrap();
    let _: () = con.zadd(format!("pastella:stats:workers:{MINER_A}"), "rig", now - 100).unwrap();
    let _: () = con
        .hset_multiple(
            format!("pastella:unique_workers:{MINER_A}~rig"),
            &[("hashes", "1000"), ("lastShare", &(now - 100).to_string()), ("rewardType", "prop")],
        )
        .unwrap();
    let _: () = con
        .hset_multiple(
            format!("pastella:workers:{MINER_A}"),
            &[("hashes", "1000".to_string()), ("lastShare", (now - 100).to_string())],
        )
        .unwrap();

    let page = http.json("/get_blocks").await;
    assert_shape(&page, &paged(api_block(), "blocks"), "/get_blocks");
    assert_eq!(page["blocks"][0]["status"], "orphaned");
    assert_eq!(page["blocks"][0]["reward"], 400_000_000, "what was at stake");
    let stats = eventually_json(&http, "/stats", |s| Some(!s["pool"]["blocks"].as_array()?.is_empty())).await;
    assert_eq!(stats["pool"]["blocks"][0]["status"], "orphaned");
    assert_eq!(stats["pool"]["blocks"][0]["reward"], 400_000_000);

    let workers = http.json(&format!("/workers?address={MINER_A}")).await;
    assert_shape(&workers, &workers_page(), "/workers");
    assert_eq!(workers["workers"][0]["hashrate_1h"], 32, "31.67 H/s shown as 32, not a float");
    let miner = http.json(&format!("/stats_address?address={MINER_A}")).await;
    assert_shape(&miner, &stats_address(), "/stats_address");
    assert_eq!(miner["stats"]["hashrate_24h"], 32);
    drop(stack);
}

/// Polls `path` until `ready` holds (the collector publishes every `api.updateInterval`).
async fn eventually_json(http: &Http, path: &str, ready: impl Fn(&Value) -> Option<bool>) -> Value {
    for _ in 0..100 {
        let v = http.json(path).await;
        if ready(&v) == Some(true) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{path} never became ready");
}

/// The hashrate window's members in Redis now, and the figures a full read computes from them.
fn full_recomputation(con: &mut redis::Connection) -> pastella_pool::api::shapes::WindowFigures {
    let members: Vec<String> = con.zrangebyscore("pastella:hashrate", "-inf", "+inf").unwrap();
    pastella_pool::api::shapes::window_figures(&members, 600)
}

/// The collector's figures as the API serves them equal `f` (hashrates, counts, per address
/// and per worker).
fn api_matches(stats: &Value, miners: &Value, workers: &Value, f: &pastella_pool::api::shapes::WindowFigures) -> bool {
    let pool = &stats["pool"];
    let as_map = |m: &std::collections::HashMap<String, u64>| json!(m);
    pool["hashrate"] == f.hashrate.0
        && pool["hashrateSolo"] == f.hashrate.1
        && pool["miners"] == f.miner_count.0
        && pool["minersSolo"] == f.miner_count.1
        && pool["workers"] == f.worker_count.0
        && pool["workersSolo"] == f.worker_count.1
        && miners["minersHashrate"] == as_map(&f.miners)
        && workers["workersHashrate"] == as_map(&f.workers)
}

/// Waits until the API's figures equal a full recomputation over what Redis holds (the state
/// each step leaves is stable, so a collector that got it wrong never gets there).
async fn wait_for_full_figures(http: &Http, con: &mut redis::Connection, step: &str) {
    for _ in 0..200 {
        let (stats, miners, workers) = (
            http.json("/stats").await,
            http.json("/miners_hashrate?password=pw").await,
            http.json("/workers_hashrate?password=pw").await,
        );
        if api_matches(&stats, &miners, &workers, &full_recomputation(con)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let f = full_recomputation(con);
    panic!(
        "{step}: the API never showed the full recomputation {f:?}: {}",
        http.json("/miners_hashrate?password=pw").await
    );
}

fn unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Many collector runs over a window several stratum nodes write (some flushes late, old and
/// new member formats, solo and prop), then entries leaving by age, a write older than the
/// collector's cursor and a member removed by someone else: after each, the API's figures are
/// those a full read of the window computes, and the collector read the window incrementally.
#[actix_web::test]
async fn collector_window_follows_redis_incrementally_and_equals_a_full_recomputation() {
    let api_port = free_port();
    let patch = json!({"api": {"port": api_port, "updateInterval": 1, "password": "pw"}});
    let stack = Stack::start(12, &[(free_port(), 2)], patch, &[Module::Api]).await;
    let http = Http::new(addr(api_port));
    let mut con = stack.redis.conn();
    let miners = [MINER_A.to_string(), MINER_B.to_string(), miner_c()];
    let mut n = 0u64;
    let mut write = |con: &mut redis::Connection, lag: u64, ahead: u64| {
        n += 1;
        let at = unix_s() - lag + ahead;
        let address = &miners[(n % 3) as usize];
        let typ = if n % 5 == 0 { "solo" } else { "prop" };
        let node = n % 3;
        let diff = 1000 + n * 37;
        let ms = at * 1000 + n % 1000;
        let worker = format!("{diff}:{address}~rig{}:{ms}:{typ}:{node:08x}", n % 4);
        let login = if n % 7 == 0 {
            format!("{diff}:{address}:{ms}:{typ}") // the old pool's member
        } else {
            format!("{diff}:{address}:{ms}:{typ}:{node:08x}")
        };
        let _: () = con.zadd("pastella:hashrate", worker, at).unwrap();
        let _: () = con.zadd("pastella:hashrate", login, at).unwrap();
    };
    for round in 0..12 {
        for i in 0..20 {
            write(&mut con, i % 10, 0); // late flushes, within the collector's overlap
        }
        wait_for_full_figures(&http, &mut con, &format!("round {round}")).await;
    }
    // Entries about to leave the window: the figures follow them out.
    for _ in 0..10 {
        write(&mut con, 598, 0);
    }
    for _ in 0..4 {
        write(&mut con, 0, 100_000); // a node whose clock runs ahead stays in the window
    }
    wait_for_full_figures(&http, &mut con, "entries near the window's start").await;
    for _ in 0..200 {
        let old: u64 = con.zcount("pastella:hashrate", "-inf", unix_s() - 590).unwrap();
        if old == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_full_figures(&http, &mut con, "after expiry").await;

    let metrics = || async { http.get("/metrics").await.body };
    let counter = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
            .round() as u64
    };
    let before = metrics().await;
    let resyncs = counter(&before, "pastella_pool_collector_window_resyncs_total");
    // A flush stamped five minutes ago (a node's clock behind): older than the read cursor.
    write(&mut con, 300, 0);
    wait_for_full_figures(&http, &mut con, "a write older than the cursor").await;
    // Someone else removes a member.
    let member: Vec<String> = con.zrangebyscore_limit("pastella:hashrate", "-inf", "+inf", 0, 1).unwrap();
    let _: () = con.zrem("pastella:hashrate", &member[0]).unwrap();
    wait_for_full_figures(&http, &mut con, "a member removed").await;
    let after = metrics().await;
    assert!(counter(&after, "pastella_pool_collector_window_resyncs_total") >= resyncs + 2, "{after}");

    // Runs with nothing new read only the overlap at the window's head, not the whole window.
    for _ in 0..300 {
        write(&mut con, 200, 0);
    }
    wait_for_full_figures(&http, &mut con, "a bulk of older entries").await;
    let recent: u64 = con.zcount("pastella:hashrate", unix_s() - 40, "+inf").unwrap();
    let total: u64 = con.zcard("pastella:hashrate").unwrap();
    assert!(total > 2 * recent, "{total} members, {recent} of them recent");
    let scrape = metrics().await;
    let (read_before, runs_before) = (
        counter(&scrape, "pastella_pool_collector_window_members_read_total"),
        counter(&scrape, "pastella_pool_collector_run_seconds_count"),
    );
    let (read, runs) = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let scrape = metrics().await;
        let runs = counter(&scrape, "pastella_pool_collector_run_seconds_count") - runs_before;
        if runs >= 5 {
            break (counter(&scrape, "pastella_pool_collector_window_members_read_total") - read_before, runs);
        }
    };
    // A run under way at either scrape may have counted its read and not yet its run.
    assert!(read <= (runs + 1) * recent, "{read} members read in {runs} runs; {recent} recent of {total}");
    drop(stack);
}

/// `/get_top10miners` with a different `inactiveHours` each time costs no Redis reads per
/// request (it used to read every known miner's totals for each uncached variant).
#[actix_web::test]
async fn top_miners_for_any_parameters_read_no_redis_per_request() {
    let api_port = free_port();
    let patch = json!({"api": {"port": api_port, "updateInterval": 1}});
    let stack = Stack::start(12, &[(free_port(), 2)], patch, &[Module::Api]).await;
    let http = Http::new(addr(api_port));
    let mut con = stack.redis.conn();
    let now = unix_s();
    let known = 300u64;
    // Miner k's last share was k hours ago, give or take half an hour.
    for k in 0..known {
        let address = format!("PAS1known{k:04}");
        let _: () = con.sadd("pastella:balances:index", &address).unwrap();
        let _: () = con
            .hset_multiple(
                format!("pastella:workers:{address}"),
                &[("hashes", (1000 + k).to_string()), ("lastShare", (now + 1800 - k * 3600).to_string())],
            )
            .unwrap();
    }
    let _: () = con.zadd("pastella:hashrate", format!("600000:{MINER_A}:{}:prop:00000001", now * 1000), now).unwrap();
    let top = eventually_json(&http, "/get_top10miners?sortBy=hashes&limit=3", |t| {
        Some(t["miners"].as_array()?.len() == 3 && t["miners"][0]["hashes"] == 1000 + known - 1)
    })
    .await;
    assert_eq!(top["miners"][0]["miner"], format!("PAS1known{:04}", known - 1));
    let by_rate = eventually_json(&http, "/get_top10miners?sortBy=hashrate&limit=1", |t| {
        Some(t["miners"][0]["miner"] == MINER_A)
    })
    .await;
    assert_eq!(by_rate["miners"][0]["hashrate"], 1000, "600000 over 600 s");

    let hmget = |con: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_hmget:calls="))
            .and_then(|l| l.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = hmget(&mut con);
    let requests = 60u64;
    for hours in 1..=requests {
        let top = http.json(&format!("/get_top10miners?excludeInactive=true&inactiveHours={hours}&limit=1000")).await;
        // Miners 0..=hours (their last share within the period) and MINER_A.
        assert_eq!(top["total"], hours + 2, "inactiveHours={hours}: {top}");
    }
    let spent = hmget(&mut con) - before;
    // The collector's own reads (the active miners each run, every known one each minute) at most.
    assert!(spent < 2 * known + 100, "{spent} HMGET for {requests} requests");
    drop(stack);
}

/// `/workers`: one page of an address's workers.
fn workers_page() -> Value {
    json!({"address": "str", "workers": [worker()], "total": "u64", "page": "u64", "limit": "u64", "totalPages": "u64"})
}

//! The Grafana dashboards and Prometheus alert rules reference only metrics a running pool
//! exports; the rules pass `promtool check rules`; docs/METRICS.md lists every metric.
//!
//! The pool runs every module on the devnet and goes through what makes each metric appear:
//! shares, blocks found, confirmed and paid, a wallet send failure, a daemon outage, a Redis
//! outage, an IP ban, API requests and a long poll. Then `/metrics` is scraped.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use pastella_pool::chain::difficulty::hash_difficulty;
use pastella_pool::config::Module;
use pastella_pool::devnet::{DaemonMode, Failure, FailureKind};
use redis::Commands;
use serde_json::{json, Value};

/// Network difficulty of the devnet in the running-pool test.
const DEVNET_DIFFICULTY: u64 = 12;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Every `pastella_pool_*` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("pastella_pool_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Names of the samples in a Prometheus text exposition (histograms as `_bucket/_sum/_count`).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

/// Every PromQL expression of the dashboards and the alert rules, with where it is.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let place = format!("{} / {}", path.file_name().unwrap().to_string_lossy(), panel["title"]);
                out.push((place, target["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    let rules = std::fs::read_to_string(root().join("grafana/prometheus/alerts.yml")).unwrap();
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            out.push(("alerts.yml".to_string(), expr.trim().to_string()));
        }
    }
    out
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    for name in ["pool-overview", "stratum-verification", "money"] {
        let path = root().join(format!("grafana/dashboards/{name}.json"));
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(uids.insert(d["uid"].as_str().unwrap().to_string()), "unique uid");
        let panels = d["panels"].as_array().unwrap();
        assert!(!panels.is_empty());
        for p in panels {
            assert_eq!(p["datasource"]["uid"], "pastella-prometheus", "{name}: {}", p["title"]);
            assert!(p["gridPos"]["w"].as_u64().unwrap() <= 24);
            assert!(!p["targets"].as_array().unwrap().is_empty());
        }
    }
    let datasource = std::fs::read_to_string(root().join("grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(datasource.contains("uid: pastella-prometheus"), "the dashboards' datasource uid is provisioned");
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = root().join("grafana/prometheus/alerts.yml");
    let found = |cmd: &str| std::process::Command::new(cmd).arg("--version").output().is_ok();
    if !found("promtool") {
        // Debian's `prometheus` package ships promtool; the README's test command installs it.
        let _ = std::process::Command::new("apt-get").args(["install", "-y", "-qq", "prometheus"]).status();
    }
    if !found("promtool") {
        eprintln!("\n!!!!!!!! SKIPPED: promtool is not installed and could not be installed (apt-get install prometheus): alert rules NOT checked !!!!!!!!\n");
        return;
    }
    let out = std::process::Command::new("promtool").arg("check").arg("rules").arg(&rules).output().unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = root().join("grafana/prometheus/prometheus.yml");
    let out = std::process::Command::new("promtool").arg("check").arg("config").arg(&config).output().unwrap();
    assert!(
        out.status.success(),
        "promtool check config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_doc_lists_every_metric() {
    let source = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    let doc = std::fs::read_to_string(root().join("docs/METRICS.md")).unwrap();
    let defined = metric_names(&source);
    assert!(defined.len() > 30, "{defined:?}");
    let documented = metric_names(&doc);
    let missing: Vec<_> = defined.difference(&documented).collect();
    assert!(missing.is_empty(), "docs/METRICS.md lacks {missing:?}");
    let stale: Vec<_> = documented
        .difference(&defined)
        .filter(|n| !n.ends_with("_bucket") && !n.ends_with("_sum") && !n.ends_with("_count"))
        .collect();
    assert!(stale.is_empty(), "docs/METRICS.md names metrics that do not exist: {stale:?}");
}

async fn scrape(api: SocketAddr) -> String {
    reqwest::get(format!("http://{api}/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_dashboards_and_alerts_is_exported_by_a_running_pool() {
    let mut redis = RedisServer::start();
    let devnet = devnet(DEVNET_DIFFICULTY).await;
    let port = free_port();
    let patch = json!({
        "blockUnlocker": {"enabled": true, "interval": 1, "depth": 10, "leaseTtl": 2},
        "payments": {"enabled": true, "interval": 1, "minPayment": 100000, "blockedAddressesFile": "/nonexistent/blocked.json"},
        "walletApi": {"timeoutMs": 2000},
        "banning": {"enabled": true, "time": 30, "invalidPercent": 50, "checkThreshold": 2},
        "poolServer": {"maxConnectionsPerIp": 2},
        "api": {"updateInterval": 1},
        "monitoring": {"checkInterval": 1}
    });
    let pool = PoolProcess::start(pool_config(&redis, &devnet, &[(port, 2)], patch), &Module::all());
    let api = pool.http_addr.unwrap();
    let hasher = SharedHasher::new();
    let mut a = TestMiner::connect(addr(port)).await;
    a.login(MINER_A, "rig").await;
    let mut miners = [a];
    devnet.fail_wallet_sends(1, Failure { kind: FailureKind::Error, code: 31, hold: Duration::ZERO });
    let found = mine_blocks(&devnet, &mut miners, &hasher, 2, Duration::from_secs(120)).await;
    assert!(found >= 2);
    devnet.mine(11);
    let mut con = redis.conn();
    let paid = eventually(Duration::from_secs(90), || {
        let n: u64 = con.zcard("pastella:payments:all").ok()?;
        (n >= 1).then_some(())
    })
    .await;
    assert!(paid.is_some(), "a payment went out after the failed one");
    drop(con);

    // A daemon outage, a Redis outage, a ban, a long poll.
    devnet.set_daemon_mode(DaemonMode::Error500, None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    devnet.set_daemon_mode(DaemonMode::Normal, None);
    redis.kill();
    let (_, _, _) = miners[0].mine_and_submit(&hasher, 0, 77_000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    // The share mined during the Redis outage may have been a block: wait until the pool's job is
    // for the block after the devnet's top, so the duplicate below cannot turn into a stale share
    // (which would not count against the IP).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut bad = loop {
        let mut miner = TestMiner::connect_from(IpAddr::from([127, 0, 0, 2]), addr(port)).await;
        miner.login(MINER_A, "bad").await;
        if miner.job.as_ref().map(|j| j.height) == Some(devnet.block_count()) {
            break miner;
        }
        assert!(Instant::now() < deadline, "the pool's job never caught up with the devnet's top");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A share that is not also a block (a block would make the duplicate stale).
    let job = bad.job.clone().unwrap();
    let mut start = 99_000;
    let (nonce, hash) = loop {
        let (nonce, hash) = hasher.search(job.seed, &job.blob, job.difficulty, start);
        if hash_difficulty(&hash) < DEVNET_DIFFICULTY {
            break (nonce, hash);
        }
        start = u32::from_le_bytes(nonce) + 1;
    };
    let reply = bad.submit(&job, nonce, &hash).await;
    assert!(reply["error"].is_null(), "{reply}");
    let reply = bad.submit(&job, nonce, &hash).await; // duplicate: instant ban
    assert_eq!(reply["error"]["message"], "Duplicate share", "{reply}");
    // A new connection from the banned IP is told so on its first request, then closed (spec:
    // "Banned IPs get `Your IP is banned` on any request"); waiting for a silent close instead
    // only passed when the next housekeeping tick happened to fall within the wait.
    let mut again = TestMiner::connect_from(IpAddr::from([127, 0, 0, 2]), addr(port)).await;
    let reply = again.call("login", json!({"login": MINER_A, "pass": "again"})).await;
    assert_eq!(reply["error"]["message"], "Your IP is banned", "{reply}");
    assert!(again.closed(Duration::from_secs(5)).await, "a banned IP is refused");
    // Over the per-IP connection cap: refused at accept.
    let _first = TestMiner::connect_from(IpAddr::from([127, 0, 0, 3]), addr(port)).await;
    let _second = TestMiner::connect_from(IpAddr::from([127, 0, 0, 3]), addr(port)).await;
    let mut third = TestMiner::connect_from(IpAddr::from([127, 0, 0, 3]), addr(port)).await;
    assert!(third.closed(Duration::from_secs(5)).await, "the third connection from one IP is refused");
    let _ = reqwest::get(format!("http://{api}/live_stats")).await.unwrap().text().await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let text = scrape(api).await;
    let have = exported(&text);
    let mut missing = Vec::new();
    for (place, expr) in expressions() {
        for name in metric_names(&expr) {
            if !have.contains(&name) {
                missing.push(format!("{name} ({place})"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "used but not exported:\n{}\n\nexported: {have:?}", missing.join("\n"));
    pool.stop();
}

//! Operating the pool (issue 12): the deploy/ files, admin routes behind nginx, Redis safety at
//! start-up, metrics from the first scrape, the alert rules' unit tests and fail2ban against
//! ban lines the pool binary really wrote.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when `cmd` can be run; otherwise says loudly that a check is skipped.
fn have(cmd: &str, what: &str) -> bool {
    let found = Command::new(cmd).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        eprintln!("\n!!!!!!!! SKIPPED: `{cmd}` is not installed (scripts/deps.sh --test): {what} NOT checked !!!!!!!!\n");
    }
    found
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

/// The pool binary running `config` (written to a file), its log (stdout and stderr) in a file.
struct PoolBinary {
    child: Child,
    log: PathBuf,
}

impl PoolBinary {
    fn start(name: &str, config: &Value, args: &[&str]) -> PoolBinary {
        let config_path = temp_path(&format!("{name}.json"));
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = temp_path(&format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
            .args(["run", "--config"])
            .arg(&config_path)
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        PoolBinary { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself; its exit status.
    async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        eventually(timeout, || child.try_wait().ok().flatten()).await
    }
}

impl Drop for PoolBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `url` until it answers; the body.
async fn get_when_up(url: &str) -> String {
    for _ in 0..600 {
        if let Ok(response) = reqwest::get(url).await {
            return response.text().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

#[test]
fn alert_rules_fire_and_resolve_under_promtool() {
    if !have("promtool", "the alert rules' unit tests") {
        return;
    }
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(root().join("grafana/prometheus/alerts.test.yml"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool test rules:\n{text}");
    // Every alert of the rules file has a test.
    let rules = std::fs::read_to_string(root().join("grafana/prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(root().join("grafana/prometheus/alerts.test.yml")).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            assert!(tests.contains(&format!("alertname: {}", name.trim())), "{} has no promtool test", name.trim());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_pool_exports_every_series_the_dashboards_and_alerts_use() {
    let redis = RedisServer::start();
    let devnet = devnet(1000).await;
    let port = free_port();
    let patch = json!({
        "blockUnlocker": {"enabled": true},
        "payments": {"enabled": true},
        "logging": {"level": "info"}
    });
    let config = pool_config_json(&redis, &devnet, &[(port, 1000)], patch);
    let api = config["api"]["port"].as_u64().unwrap();
    let _pool = PoolBinary::start("fresh-metrics", &config, &[]);
    // The first scrape: no miner connected, no share, no block, no payment, no error.
    let scrape = get_when_up(&format!("http://127.0.0.1:{api}/metrics")).await;
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut used = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("grafana/dashboards")).unwrap() {
        used.extend(metric_names(&std::fs::read_to_string(entry.unwrap().path()).unwrap()));
    }
    used.extend(metric_names(&std::fs::read_to_string(root().join("grafana/prometheus/alerts.yml")).unwrap()));
    let missing: Vec<_> = used.iter().filter(|n| !exported.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "a fresh pool lacks {missing:?}\n\n{scrape}");
    // The label sets the selectors use exist too, at zero.
    for series in [
        "pastella_pool_blocks_total{status=\"orphaned\"} 0",
        "pastella_pool_payment_batches_total{outcome=\"released\"} 0",
        "pastella_pool_payment_batches_total{outcome=\"uncertain\"} 0",
        "pastella_pool_bans_total 0",
        &format!("pastella_pool_stratum_connections{{port=\"{port}\"}} 0"),
    ] {
        assert!(scrape.lines().any(|l| l == series), "no `{series}` in\n{scrape}");
    }
}

//! The built-in status page in a real browser: Debian's chromium, headless, loads `/` from a
//! pool that mined on the devnet (a confirmed block, several workers) and must render the pool
//! figures, the blocks, the ports with their xmrig command line, and a miner lookup driven by
//! `#miner=ADDRESS`. A screenshot is kept at `target/status-page.png`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use pastella_pool::config::Module;
use redis::Commands;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn chromium_available() -> bool {
    if std::path::Path::new(CHROMIUM).exists() {
        return true;
    }
    // The README's test command installs it; try once here too.
    let _ = Command::new("apt-get").args(["install", "-y", "-qq", "chromium"]).status();
    std::path::Path::new(CHROMIUM).exists()
}

/// Runs headless chromium with a fresh profile; returns stdout.
fn chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a dumped DOM (tags stripped).
fn element_text(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let Some(start) = dom.find(&marker) else { return String::new() };
    let after = &dom[start..];
    let open_end = after.find('>').map_or(after.len(), |i| i + 1);
    let body = &after[open_end..];
    let mut text = String::new();
    let mut in_tag = false;
    let mut depth = 0i32;
    for (i, c) in body.char_indices() {
        match c {
            '<' => {
                in_tag = true;
                if body[i..].starts_with("</") {
                    depth -= 1;
                    if depth < 0 {
                        break;
                    }
                } else {
                    depth += 1;
                }
            }
            '>' => {
                in_tag = false;
                if body[..i].ends_with('/') {
                    depth -= 1;
                }
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_pool_figures_and_a_miner_lookup() {
    if !chromium_available() {
        eprintln!("\n!!!!!!!! SKIPPED: {CHROMIUM} is not installed and could not be installed (apt-get install chromium): the status page was NOT tested in a browser !!!!!!!!\n");
        return;
    }
    let redis = RedisServer::start();
    let devnet = devnet(12).await;
    let port = free_port();
    let patch = json!({
        "blockUnlocker": {"enabled": true, "interval": 1, "depth": 10, "leaseTtl": 2},
        "api": {"updateInterval": 1},
        "poolHost": "pool.example.org",
        "charts": {"pool": {"hashrate": {"updateInterval": 1, "stepInterval": 2, "maximumPeriod": 86400}}}
    });
    let pool = PoolProcess::start(
        pool_config(&redis, &devnet, &[(port, 2)], patch),
        &[Module::Stratum, Module::Unlocker, Module::Api],
    );
    let api = pool.http_addr.unwrap();
    let hasher = SharedHasher::new();
    let mut a = TestMiner::connect(addr(port)).await;
    a.login(MINER_A, "rig1").await;
    let mut b = TestMiner::connect(addr(port)).await;
    b.login(MINER_A, "rig2").await;
    let mut miners = [a, b];
    assert!(mine_blocks(&devnet, &mut miners, &hasher, 1, Duration::from_secs(120)).await >= 1);
    devnet.mine(11);
    let mut con = redis.conn();
    let confirmed = eventually(Duration::from_secs(60), || {
        let n: u64 = con.hget("pastella:totals", "blocksConfirmed").ok()?;
        (n >= 1).then_some(())
    })
    .await;
    assert!(confirmed.is_some(), "a block confirmed");
    for miner in miners.iter_mut() {
        let session = miner.session.clone();
        miner.call("keepalived", json!({"id": session})).await;
        miner.mine_and_submit(&hasher, 0, 5_000).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let url = format!("http://{api}/#miner={MINER_A}");
    let dom = chromium(&["--virtual-time-budget=15000".into(), "--dump-dom".into(), url.clone()]);
    assert!(dom.contains("data-ready=\"1\""), "the page rendered /stats:\n{dom}");
    assert!(dom.contains("data-miner=\"loaded\""), "the miner lookup rendered:\n{dom}");
    let hashrate = element_text(&dom, "pool-hashrate");
    assert!(hashrate.ends_with("H/s"), "pool hashrate shown: {hashrate:?}");
    assert_eq!(element_text(&dom, "miners"), "1");
    assert_eq!(element_text(&dom, "workers"), "2");
    let height: u64 = element_text(&dom, "height").replace(',', "").parse().expect("network height shown");
    assert!(height > 10);
    assert!(dom.contains("data-status=\"confirmed\""), "the confirmed block is listed");
    let ports = element_text(&dom, "ports");
    assert!(ports.contains(&format!("xmrig -a rx/0 -o pool.example.org:{port} -u ADDRESS -p WORKER")), "{ports}");
    assert!(element_text(&dom, "miner-balance").ends_with("PAS"));
    let balance: f64 = element_text(&dom, "miner-balance").trim_end_matches(" PAS").parse().unwrap();
    assert!(balance > 0.0, "the credited balance is shown");
    let workers = element_text(&dom, "miner-workers");
    assert!(workers.contains("rig1") && workers.contains("rig2"), "{workers}");

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[
        "--virtual-time-budget=15000".into(),
        "--window-size=1280,2200".into(),
        format!("--screenshot={}", shot.display()),
        url,
    ]);
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "screenshot written");
    println!("status page screenshot: {}", shot.display());
    pool.stop();
}

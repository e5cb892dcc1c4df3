//! Crash safety of the money path: the pool binary running the unlocker and payments is killed
//! with SIGKILL (every third time stopped with SIGTERM) at random moments, again and again,
//! while a stratum node keeps finding blocks through daemon outages and the devnet wallet fails
//! sends and prepares in every way it can. After every stop, and exactly at the end: credited = balance +
//! pending + paid + fees, `pastella-pool audit` says OK, no block is credited twice, and the
//! wallet never sent a payout twice. The devnet mines only between pool blocks, so no pool
//! block is orphaned however slow the machine is.
//!
//! `PASTELLA_CRASH_KILLS=N` sets the number of kills (default 24, about 80 s); a long run, e.g.
//! `PASTELLA_CRASH_KILLS=300 cargo test --test crash -- --nocapture` (~15 minutes), is
//! the soak documented in docs/PAYOUTS.md.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pastella_pool::config::Module;
use pastella_pool::devnet::{DaemonMode, Failure, FailureKind};
use pastella_pool::store::Store;
use rand::Rng;
use redis::Commands;
use serde_json::json;

const MINER_B: &str = "PAS1WPrszX47No6fAtDt56aTj9Vjr9dZq58qaiz9dvZB5dmiXkFbD1";
/// Kills when `PASTELLA_CRASH_KILLS` is not set.
const DEFAULT_KILLS: usize = 24;

fn kills() -> usize {
    match std::env::var("PASTELLA_CRASH_KILLS") {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("PASTELLA_CRASH_KILLS must be a number, got {v:?}")),
        Err(_) => DEFAULT_KILLS,
    }
}

fn money_patch() -> serde_json::Value {
    json!({
        "blockUnlocker": {"enabled": true, "interval": 1, "depth": 10, "leaseTtl": 2},
        "payments": {"enabled": true, "interval": 1, "minPayment": 100000, "transferFee": 1000, "maxAddresses": 1,
                     "blockedAddressesFile": "/nonexistent/payment_blocked.json"},
        "walletApi": {"timeoutMs": 1500},
        "logging": {"level": "info"}
    })
}

/// What the devnet wallet has sent to `address` (confirmed or in the mempool).
fn wallet_sent(devnet: &pastella_pool::devnet::DevnetHandle, address: &str) -> u64 {
    let r = devnet.received(address);
    r.received + r.pending
}

async fn check(redis: &RedisServer, devnet: &pastella_pool::devnet::DevnetHandle, exact: bool, round: usize) {
    let store = Store::connect(&format!("redis://127.0.0.1:{}/0", redis.port), "pastella", Duration::from_secs(5))
        .await
        .unwrap();
    let audit = store.audit().await.unwrap();
    assert!(audit.broken.is_empty(), "round {round}: invariant broken for {:?}", audit.broken);
    assert_eq!(audit.totals.get("credited").copied().unwrap_or(0) as u64, audit.credited, "round {round}");
    let mut con = redis.conn();
    // No block credited twice: each confirmed hash once, its credits equal to its own record.
    let matured: Vec<String> = con.zrange("pastella:blocks:matured", 0, -1).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut credited_by_blocks = 0u64;
    for member in &matured {
        let f: Vec<&str> = member.split(':').collect();
        assert!(seen.insert(f[2].to_string()), "round {round}: block {} resolved twice", f[2]);
        if f.len() == 10 {
            let credits: HashMap<String, u64> = con.hgetall(format!("pastella:blocks:credits:{}", f[2])).unwrap();
            let credited: u64 = con.hget(format!("pastella:blocks:info:{}", f[2]), "credited").unwrap();
            assert_eq!(credits.values().sum::<u64>(), credited);
            credited_by_blocks += credited;
        }
    }
    assert_eq!(credited_by_blocks, audit.credited, "round {round}: Σ block credits == Σ credited");
    let confirmed: u64 = con.hget("pastella:totals", "blocksConfirmed").unwrap_or(0);
    assert_eq!(confirmed as usize, matured.iter().filter(|m| m.split(':').count() == 10).count());
    for address in [MINER_A, MINER_B] {
        let row: HashMap<String, u64> = con.hgetall(format!("pastella:balances:{address}")).unwrap();
        let paid = row.get("paid").copied().unwrap_or(0);
        let pending = row.get("pending").copied().unwrap_or(0);
        let sent = wallet_sent(devnet, address);
        if exact {
            assert_eq!(sent, paid, "{address}: the wallet sent exactly what Redis recorded as paid");
            assert_eq!(pending, 0);
        } else {
            assert!(sent >= paid, "round {round}: {address}: Redis says paid {paid} but the wallet sent only {sent}");
            assert!(
                sent <= paid + pending,
                "round {round}: {address}: the wallet sent {sent}, more than paid {paid} + in flight {pending}: a double payment"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_unlocking_and_payments_never_loses_or_doubles_money() {
    let redis = RedisServer::start();
    let devnet = Arc::new(devnet(12).await);
    let port = free_port();
    let stratum = PoolProcess::start(pool_config(&redis, &devnet, &[(port, 2)], money_patch()), &[Module::Stratum]);
    let logs = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("crash-test");
    std::fs::create_dir_all(&logs).unwrap();
    let config_path = logs.join("money-node.json");
    let mut money_config = pool_config_json(&redis, &devnet, &[(port, 2)], money_patch());
    merge(&mut money_config, &json!({"api": {"enabled": false}}));
    std::fs::write(&config_path, money_config.to_string()).unwrap();

    // Keep finding blocks with two miners, and let the network mature them. Deterministic: the
    // devnet mines only between pool blocks, and the miners go on only once they have the job
    // on the new tip, so no pool block is ever found on a stale parent (and orphaned).
    let stop = Arc::new(AtomicBool::new(false));
    let found = Arc::new(AtomicU64::new(0));
    let miners = {
        let (stop, devnet, found) = (stop.clone(), devnet.clone(), found.clone());
        tokio::spawn(async move {
            let hasher = SharedHasher::new();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut a = TestMiner::connect(addr).await;
            a.login(MINER_A, "a").await;
            let mut b = TestMiner::connect(addr).await;
            b.login(MINER_B, "b").await;
            let mut miners = [a, b];
            while !stop.load(Ordering::Relaxed) {
                let landed = mine_blocks(&devnet, &mut miners, &hasher, 1, Duration::from_secs(5)).await;
                if landed > 0 {
                    found.fetch_add(landed, Ordering::Relaxed);
                    devnet.mine(3);
                }
                let tip = devnet.block_count();
                for miner in miners.iter_mut() {
                    while miner.job.as_ref().map(|j| j.height) != Some(tip) {
                        if let Some(job) = miner.pushed.pop_back() {
                            miner.pushed.clear();
                            miner.job = Some(job);
                        } else if miner.next_push(Duration::from_secs(30)).await.is_none() {
                            break; // the daemon is away: go on with the job in hand
                        }
                    }
                }
            }
        })
    };
    let binary = env!("CARGO_BIN_EXE_pastella-pool");
    let spawn = |round: usize| {
        let log = std::fs::File::create(logs.join(format!("run-{round:02}.log"))).unwrap();
        Command::new(binary)
            .args(["run", "--config"])
            .arg(&config_path)
            .args(["--module", "unlocker", "--module", "payments"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let mut rng = rand::thread_rng();
    let kills = kills();
    let mut rescanned = std::collections::HashSet::new();
    for round in 0..kills {
        match round % 4 {
            1 => devnet.fail_wallet_sends(1, Failure { kind: FailureKind::Error, code: 31, hold: Duration::ZERO }),
            2 => devnet
                .fail_wallet_sends(1, Failure { kind: FailureKind::DropAfterSuccess, code: 0, hold: Duration::ZERO }),
            3 => devnet
                .fail_wallet_sends(1, Failure { kind: FailureKind::Timeout, code: 30, hold: Duration::from_secs(3) }),
            _ => {}
        }
        // Lost answers to `prepare`: the wallet prepares and locks the inputs, the pool never
        // learns the hash (as when it is killed between the call and recording it).
        match round % 8 {
            4 => devnet
                .fail_wallet_sends(1, Failure { kind: FailureKind::PrepareThenDrop, code: 0, hold: Duration::ZERO }),
            7 => devnet.fail_wallet_sends(
                1,
                Failure { kind: FailureKind::PrepareThenHold, code: 0, hold: Duration::from_secs(3) },
            ),
            _ => {}
        }
        // Daemon outages: refused connections, then a daemon that is not synced (blocks found
        // meanwhile are resubmitted when it is back).
        match round % 6 {
            2 => devnet.set_daemon_mode(DaemonMode::Refuse, Some(Duration::from_secs(3))),
            5 => devnet.set_daemon_mode(DaemonMode::NotSynced, Some(Duration::from_secs(3))),
            _ => {}
        }
        let mut child = spawn(round);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..4500))).await;
        if round % 3 == 2 {
            // SIGTERM: a clean shutdown, at any moment of the work.
            unsafe_free_sigterm(child.id());
            let status = child.wait().unwrap();
            assert!(status.success(), "round {round}: clean exit after SIGTERM: {status}");
        } else {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        check(&redis, &devnet, false, round).await;
        audit_ok(binary, &config_path, round);
        rescan_if_waiting(&mut redis.conn(), &devnet, &mut rescanned).await;
    }
    // However slow the machine, the pool finds a few blocks before the miners stop.
    let enough = eventually(Duration::from_secs(600), || (found.load(Ordering::Relaxed) >= 3).then_some(())).await;
    assert!(enough.is_some(), "the pool found {} blocks", found.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    miners.await.unwrap();
    devnet.set_daemon_mode(DaemonMode::Normal, None);

    // Let one process run to the end: every journaled batch resolved, every matured block done.
    devnet.mine(12);
    let mut child = spawn(kills);
    let mut con = redis.conn();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let journal: u64 = con.zcard("pastella:payments:journal").unwrap();
        let candidates: u64 = con.zcard("pastella:blocks:candidates").unwrap();
        let owed: u64 = [MINER_A, MINER_B]
            .iter()
            .map(|a| con.hget::<_, _, Option<u64>>(format!("pastella:balances:{a}"), "balance").unwrap().unwrap_or(0))
            .filter(|b| *b >= 100_000)
            .count() as u64;
        if journal == 0 && candidates == 0 && owed == 0 {
            break;
        }
        rescan_if_waiting(&mut con, &devnet, &mut rescanned).await;
        assert!(Instant::now() < deadline, "not settled: journal {journal}, candidates {candidates}, payable {owed}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        devnet.mine(1);
    }
    // SIGTERM: a clean shutdown.
    unsafe_free_sigterm(child.id());
    child.wait().unwrap();
    check(&redis, &devnet, true, kills).await;

    // The operator's audit command agrees, and names a balance changed behind its back.
    let audit = Command::new(binary).args(["audit", "--config"]).arg(&config_path).output().unwrap();
    let report = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "audit failed: {report}{}", String::from_utf8_lossy(&audit.stderr));
    assert!(report.contains("OK: the books balance to the atomic unit"), "{report}");
    let _: i64 = con.hincr(format!("pastella:balances:{MINER_B}"), "balance", 1).unwrap();
    let audit = Command::new(binary).args(["audit", "--config"]).arg(&config_path).output().unwrap();
    let report = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.status.code(), Some(1), "{report}");
    assert!(report.contains(&format!("PROBLEM: {MINER_B}: credited != balance + pending + paid + fees")), "{report}");
    let confirmed: u64 = con.hget("pastella:totals", "blocksConfirmed").unwrap();
    let orphaned: u64 = con.hget::<_, _, Option<u64>>("pastella:totals", "blocksOrphaned").unwrap().unwrap_or(0);
    let paid_batches: u64 = con.zcard("pastella:payments:all").unwrap();
    eprintln!(
        "crash test: {kills} stops (SIGKILL, every third SIGTERM), {confirmed} blocks credited, {orphaned} orphaned, {paid_batches} payments, {} wallet rescan(s) for a lost prepare; logs in {}",
        rescanned.len(),
        logs.display()
    );
    assert_eq!(orphaned, 0, "the devnet mines only between pool blocks: no pool block may be orphaned");
    assert!(confirmed >= 3, "the test did real work: {confirmed} blocks credited");
    assert!(paid_batches >= 2, "the test did real work: {paid_batches} payments");
    stratum.stop();
}

/// The operator's action, keyed on what the pool reports: a journaled batch waiting for the
/// wallet's inputs (a kill or a lost answer between `prepare` and recording its hash left a
/// transaction the pool never learnt, its inputs locked; `payments list`, `/admin_payments` and
/// `audit` say so) gets the remedy docs/PAYOUTS.md names, a wallet rescan (`PUT /reset`), once
/// per batch. Only between pool runs or while the last one runs to the end.
async fn rescan_if_waiting(
    con: &mut redis::Connection,
    devnet: &pastella_pool::devnet::DevnetHandle,
    rescanned: &mut std::collections::HashSet<String>,
) {
    let ids: Vec<String> = con.zrange("pastella:payments:journal", 0, -1).unwrap();
    let waiting = ids.into_iter().find(|id| {
        let waiting: Option<String> = con.hget(format!("pastella:payments:batch:{id}"), "waiting").unwrap();
        waiting.as_deref() == Some("inputs") && !rescanned.contains(id)
    });
    let Some(id) = waiting else { return };
    let url = format!("http://{}/reset", devnet.wallet_addr);
    let answer = reqwest::Client::new().put(url).header("X-API-KEY", "devnet-api-key").send().await;
    eprintln!(
        "crash test: batch {id} waits for the wallet's inputs; wallet rescanned ({:?})",
        answer.map(|r| r.status())
    );
    rescanned.insert(id);
}

/// `pastella-pool audit` says the books balance.
fn audit_ok(binary: &str, config: &std::path::Path, round: usize) {
    let audit = Command::new(binary).args(["audit", "--config"]).arg(config).output().unwrap();
    let report = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success() && report.contains("OK: the books balance to the atomic unit"),
        "round {round}: audit: {report}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}

fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

//! A found block is never lost: it is written to Redis before it is submitted, resubmitted
//! through a daemon outage, resumed after a restart (SIGTERM or SIGKILL), and only the first
//! block per template height is submitted. Shutdown books every share answered OK.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pastella_pool::config::Module;
use pastella_pool::devnet::{DaemonMode, DevnetHandle};
use pastella_pool::node::DaemonClient;
use redis::Commands;
use serde_json::{json, Value};

const MINER_B: &str = "PAS1WPrszX47No6fAtDt56aTj9Vjr9dZq58qaiz9dvZB5dmiXkFbD1";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ok(reply: &Value) -> bool {
    reply["error"].is_null() && reply["result"]["status"] == "OK"
}

fn unlocker_patch() -> Value {
    json!({
        "blockUnlocker": {"enabled": true, "interval": 1, "depth": 10, "leaseTtl": 2},
        "logging": {"level": "info"}
    })
}

/// Mines one devnet block at a time until `done` holds (the unlocker needs depth).
async fn mine_until(devnet: &DevnetHandle, what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        devnet.mine(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

fn credited(con: &mut redis::Connection, address: &str) -> u64 {
    con.hget::<_, _, Option<u64>>(format!("pastella:balances:{address}"), "credited").unwrap().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_found_while_the_daemon_refuses_is_submitted_when_it_is_back_and_credited() {
    let port = free_port();
    let stack = Stack::start(20, &[(port, 20)], unlocker_patch(), &[Module::Stratum, Module::Unlocker]).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    let start = stack.devnet.block_count();

    // The daemon goes away; the session keeps mining its last job, and the share is a block.
    stack.devnet.set_daemon_mode(DaemonMode::Refuse, None);
    let (reply, _, _) = miner.mine_and_submit(&stack.hasher, 20, 0).await;
    assert!(ok(&reply), "{reply}");
    // Stay away far longer than the old retry window (four retries over about 1.5 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(stack.devnet.block_count(), start, "the daemon was refusing");
    stack.devnet.set_daemon_mode(DaemonMode::Normal, None);

    let landed = eventually(Duration::from_secs(60), || (stack.devnet.block_count() > start).then_some(())).await;
    assert!(landed.is_some(), "the block found during the outage never reached the chain");
    let mut con = stack.redis.conn();
    let daemon = DaemonClient::new("127.0.0.1", stack.devnet.daemon_addr.port(), Duration::from_secs(5));
    let hash = daemon.get_block_header_by_height(start).await.unwrap().hash.to_hex();
    let status = eventually(Duration::from_secs(30), || {
        con.hget::<_, _, Option<String>>(format!("pastella:blocks:submit:{hash}"), "status")
            .unwrap()
            .filter(|s| s == "accepted")
    })
    .await;
    assert_eq!(status.as_deref(), Some("accepted"), "the submission record is resolved");
    let submitting: u64 = con.zcard("pastella:blocks:submitting").unwrap();
    assert_eq!(submitting, 0);
    mine_until(&stack.devnet, "the block is credited", || {
        con.hget::<_, _, Option<String>>(format!("pastella:blocks:info:{hash}"), "status").unwrap().as_deref()
            == Some("confirmed")
    })
    .await;
    let reward: u64 = con.hget(format!("pastella:blocks:info:{hash}"), "credited").unwrap();
    assert!(reward > 0);
    assert_eq!(credited(&mut con, MINER_A), reward, "the finder's window is the only miner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_first_block_per_template_height_is_submitted() {
    let port = free_port();
    let stack = Stack::start(20, &[(port, 20)], json!({}), &[Module::Stratum]).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    let start = stack.devnet.block_count();
    // While the daemon is not synced the tip cannot move, so both shares are on one template
    // and neither is stale: the situation of two blocks found 0.19 s apart.
    stack.devnet.set_daemon_mode(DaemonMode::NotSynced, None);
    let job = miner.job.clone().unwrap();
    let h = stack.hasher.clone();
    let (seed, blob) = (job.seed, job.blob.clone());
    let (first, second) = tokio::task::spawn_blocking(move || {
        let (n1, r1) = h.search(seed, &blob, 20, 0);
        let (n2, r2) = h.search(seed, &blob, 20, u32::from_le_bytes(n1).wrapping_add(1));
        ((n1, r1), (n2, r2))
    })
    .await
    .unwrap();
    let r1 = miner.submit(&job, first.0, &first.1).await;
    let r2 = miner.submit(&job, second.0, &second.1).await;
    assert!(ok(&r1) && ok(&r2), "both are good shares: {r1} {r2}");
    stack.devnet.set_daemon_mode(DaemonMode::Normal, None);

    let mut con = stack.redis.conn();
    let resolved = eventually(Duration::from_secs(60), || {
        let submitting: u64 = con.zcard("pastella:blocks:submitting").ok()?;
        (stack.devnet.block_count() > start && submitting == 0).then_some(())
    })
    .await;
    assert!(resolved.is_some(), "the first block reaches the chain");
    let state = stack.devnet.state();
    assert_eq!(state.block_count, start + 1);
    assert!(state.alt_blocks.is_empty(), "no alternative block was made: {:?}", state.alt_blocks);
    let candidates: Vec<String> = con.zrange("pastella:blocks:candidates", 0, -1).unwrap();
    assert_eq!(candidates.len(), 1, "one candidate booked: {candidates:?}");
    // The second block's share is an ordinary share of the next round.
    let score = eventually(Duration::from_secs(10), || {
        con.hget::<_, _, Option<u64>>("pastella:scores:prop:roundCurrent", MINER_A).ok().flatten()
    })
    .await;
    assert_eq!(score, Some(job.difficulty));
}

/// Σ of every `scores:prop:*` entry of `address` (the current round and every closed one).
fn booked(con: &mut redis::Connection, address: &str) -> u64 {
    let keys: Vec<String> = con.keys("pastella:scores:prop:*").unwrap();
    keys.iter().map(|k| con.hget::<_, _, Option<u64>>(k, address).unwrap().unwrap_or(0)).sum()
}

/// What one miner saw until the pool went away.
#[derive(Default, Debug)]
struct Submitted {
    /// Σ job difficulty of shares answered OK.
    ok: u64,
    /// Σ job difficulty of every share sent.
    sent: u64,
}

/// Mines and submits until the pool closes the connection or stops answering.
async fn mine_until_closed(
    port: u16,
    address: &'static str,
    hasher: SharedHasher,
    oks: Arc<std::sync::atomic::AtomicU64>,
) -> Submitted {
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(address, "rig").await;
    let mut seen = Submitted::default();
    let mut nonce = rand::random::<u32>() >> 4;
    loop {
        if let Some(newest) = miner.pushed.pop_back() {
            miner.pushed.clear();
            miner.job = Some(newest);
        }
        let job = miner.job.clone().unwrap();
        let h = hasher.clone();
        let (seed, blob, diff) = (job.seed, job.blob.clone(), job.difficulty);
        let (n, result) = tokio::task::spawn_blocking(move || h.search(seed, &blob, diff, nonce)).await.unwrap();
        nonce = u32::from_le_bytes(n).wrapping_add(1);
        seen.sent += job.difficulty;
        let params = json!({"id": miner.session, "job_id": job.id, "nonce": hex::encode(n), "result": result.to_hex()});
        match miner.try_call("submit", params, Duration::from_secs(20)).await {
            Some(reply) if ok(&reply) => {
                seen.ok += job.difficulty;
                oks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Some(reply) if reply["error"]["message"] == "Pool is shutting down, reconnect shortly" => return seen,
            Some(_) => {}
            None => return seen,
        }
    }
}

/// A directory under the test target dir and the pool's config file in it (API off).
fn pool_files(
    name: &str,
    redis: &RedisServer,
    devnet: &DevnetHandle,
    port: (u16, u64),
    patch: Value,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pool.json");
    let mut json = pool_config_json(redis, devnet, &[port], patch);
    merge(&mut json, &json!({"api": {"enabled": false}}));
    std::fs::write(&config, json.to_string()).unwrap();
    (dir, config)
}

/// SIGTERM, and the pool exits cleanly.
fn stop_cleanly(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());
}

fn spawn_pool(config: &std::path::Path, log: &std::path::Path, modules: &[&str]) -> Child {
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pastella-pool"));
    cmd.args(["run", "--config"]).arg(config);
    for m in modules {
        cmd.args(["--module", m]);
    }
    cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap()
}

async fn wait_for_port(port: u16) {
    let up = eventually(Duration::from_secs(60), || std::net::TcpStream::connect(addr(port)).ok().map(|_| ())).await;
    assert!(up.is_some(), "the pool listens on {port}");
}

/// Every block the chain holds in `heights` has its `blocks:info`.
async fn every_block_booked(
    con: &mut redis::Connection,
    devnet: &DevnetHandle,
    heights: std::ops::Range<u64>,
) -> Vec<String> {
    let daemon = DaemonClient::new("127.0.0.1", devnet.daemon_addr.port(), Duration::from_secs(5));
    let mut hashes = Vec::new();
    for height in heights {
        let hash = daemon.get_block_header_by_height(height).await.unwrap().hash.to_hex();
        let info: bool = con.exists(format!("pastella:blocks:info:{hash}")).unwrap();
        assert!(info, "block {hash} at height {height} is on the chain but not in the books");
        hashes.push(hash);
    }
    hashes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_books_every_ok_share_and_no_accepted_block_is_lost_to_sigterm_or_sigkill() {
    let redis = RedisServer::start();
    let devnet = devnet(20).await;
    let port = free_port();
    let (dir, config) = pool_files("blocks-test", &redis, &devnet, (port, 5), unlocker_patch());
    let hasher = SharedHasher::new();
    let mut con = redis.conn();
    let first_height = devnet.block_count();

    for (round, signal) in ["TERM", "KILL", "TERM", "KILL"].into_iter().enumerate() {
        let mut child = spawn_pool(&config, &dir.join(format!("run-{round}.log")), &["stratum"]);
        wait_for_port(port).await;
        // Started: whatever an earlier run left is booked before the ports open.
        every_block_booked(&mut con, &devnet, first_height..devnet.block_count()).await;
        let before = [booked(&mut con, MINER_A), booked(&mut con, MINER_B)];
        let start = devnet.block_count();
        let oks = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let miners: Vec<_> = [MINER_A, MINER_B]
            .into_iter()
            .map(|a| tokio::spawn(mine_until_closed(port, a, hasher.clone(), oks.clone())))
            .collect();
        // Stop the pool once it took a few shares and found a block, miners still submitting.
        let busy = eventually(Duration::from_secs(120), || {
            (oks.load(std::sync::atomic::Ordering::SeqCst) >= 6 && devnet.block_count() > start).then_some(())
        })
        .await;
        assert!(busy.is_some(), "round {round}: the pool took shares and found a block");
        // A burst of shares (difficulty 1, some of them blocks) still being verified when the
        // signal arrives.
        let mut burst = TestMiner::connect(addr(port)).await;
        burst.login(&format!("{MINER_A}.1"), "burst").await;
        let job = burst.job.clone().unwrap();
        let h = hasher.clone();
        let (seed, blob) = (job.seed, job.blob.clone());
        let results = tokio::task::spawn_blocking(move || {
            (0..8u32).map(|n| (n.to_le_bytes(), h.hash(seed, &blob, n.to_le_bytes()))).collect::<Vec<_>>()
        })
        .await
        .unwrap();
        for (nonce, result) in &results {
            let params =
                json!({"id": burst.session, "job_id": job.id, "nonce": hex::encode(nonce), "result": result.to_hex()});
            burst
                .send_line(&json!({"id": 1, "jsonrpc": "2.0", "method": "submit", "params": params}).to_string())
                .await;
        }
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
        let mut burst_seen = Submitted { ok: 0, sent: results.len() as u64 * job.difficulty };
        while let Some(line) = burst.read_line(Duration::from_secs(30)).await {
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == 1 && ok(&v) {
                burst_seen.ok += job.difficulty;
            }
        }
        let status = child.wait().unwrap();
        let mut seen = Vec::new();
        for miner in miners {
            seen.push(miner.await.unwrap());
        }
        seen[0].ok += burst_seen.ok;
        seen[0].sent += burst_seen.sent;
        let after = [booked(&mut con, MINER_A), booked(&mut con, MINER_B)];
        for (i, s) in seen.iter().enumerate() {
            let added = after[i] - before[i];
            assert!(added <= s.sent, "round {round}: booked {added}, more than the {} sent", s.sent);
            if signal == "TERM" {
                assert!(status.success(), "round {round}: clean exit after SIGTERM: {status}");
                assert!(added >= s.ok, "round {round} ({signal}): {} answered OK but only {added} booked", s.ok);
            }
        }
        eprintln!("round {round} ({signal}): {seen:?}, blocks {}", devnet.block_count() - start);
    }

    // A last run with the unlocker: every pool block booked, confirmed and credited.
    let mut child = spawn_pool(&config, &dir.join("final.log"), &["stratum", "unlocker"]);
    wait_for_port(port).await;
    // A block a SIGKILLed run left pending is resubmitted by this run, after its ports open:
    // on the chain before the devnet mines, or a devnet block takes its height and orphans it.
    let resubmitted = eventually(Duration::from_secs(300), || {
        (con.zcard::<_, u64>("pastella:blocks:submitting").ok()? == 0).then_some(())
    })
    .await;
    assert!(
        resubmitted.is_some(),
        "pending submissions left: {:?}",
        con.zrange::<_, Vec<String>>("pastella:blocks:submitting", 0, -1)
    );
    let hashes = every_block_booked(&mut con, &devnet, first_height..devnet.block_count()).await;
    let ours: HashSet<String> = hashes.into_iter().collect();
    mine_until(&devnet, "every pool block confirmed", || {
        ours.iter().all(|h| {
            con.hget::<_, _, Option<String>>(format!("pastella:blocks:info:{h}"), "status").unwrap().as_deref()
                == Some("confirmed")
        })
    })
    .await;
    let orphaned: u64 = con.hget::<_, _, Option<u64>>("pastella:totals", "blocksOrphaned").unwrap().unwrap_or(0);
    assert_eq!(orphaned, 0, "no block of this run was orphaned");
    stop_cleanly(&mut child);
    let audit =
        Command::new(env!("CARGO_BIN_EXE_pastella-pool")).args(["audit", "--config"]).arg(&config).output().unwrap();
    let report = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "audit: {report}{}", String::from_utf8_lossy(&audit.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_is_in_redis_before_the_daemon_sees_it_so_sigkill_never_loses_one() {
    let redis = RedisServer::start();
    let devnet = devnet(20).await;
    let port = free_port();
    let (dir, config) =
        pool_files("blocks-stall-test", &redis, &devnet, (port, 20), json!({"logging": {"level": "info"}}));
    let hasher = SharedHasher::new();
    let start = devnet.block_count();

    let mut child = spawn_pool(&config, &dir.join("run-0.log"), &["stratum"]);
    wait_for_port(port).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    // Redis stalls: nothing the pool writes now is stored. A block found now must not reach the
    // daemon, or a SIGKILL leaves it on the chain and out of the books.
    redis.pause();
    let (reply, _, _) = miner.mine_and_submit(&hasher, 20, 0).await;
    assert!(ok(&reply), "{reply}");
    // Give the pool ample time to submit (old code: milliseconds), then kill it.
    let _ = eventually(Duration::from_secs(5), || (devnet.block_count() > start).then_some(())).await;
    child.kill().unwrap();
    child.wait().unwrap();
    redis.resume();

    let mut child = spawn_pool(&config, &dir.join("run-1.log"), &["stratum"]);
    wait_for_port(port).await;
    let mut con = redis.conn();
    every_block_booked(&mut con, &devnet, start..devnet.block_count()).await;
    stop_cleanly(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_still_pending_at_shutdown_is_submitted_by_the_next_run() {
    let redis = RedisServer::start();
    let devnet = devnet(20).await;
    let port = free_port();
    let (dir, config) =
        pool_files("blocks-restart-test", &redis, &devnet, (port, 20), json!({"logging": {"level": "info"}}));
    let hasher = SharedHasher::new();
    let start = devnet.block_count();

    let mut child = spawn_pool(&config, &dir.join("run-0.log"), &["stratum"]);
    wait_for_port(port).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    devnet.set_daemon_mode(DaemonMode::Refuse, None);
    let (reply, _, _) = miner.mine_and_submit(&hasher, 20, 0).await;
    assert!(ok(&reply), "{reply}");
    let mut con = redis.conn();
    let pending = eventually(Duration::from_secs(30), || {
        let hashes: Vec<String> = con.zrange("pastella:blocks:submitting", 0, -1).ok()?;
        hashes.into_iter().next()
    })
    .await
    .expect("the candidate is written to Redis while the daemon refuses");
    // The pool stops while the daemon is still away.
    stop_cleanly(&mut child);
    let info: bool = con.exists(format!("pastella:blocks:info:{pending}")).unwrap();
    assert!(info, "the candidate was booked before the exit");
    devnet.set_daemon_mode(DaemonMode::Normal, None);
    assert_eq!(devnet.block_count(), start);

    let mut child = spawn_pool(&config, &dir.join("run-1.log"), &["stratum"]);
    let landed = eventually(Duration::from_secs(60), || (devnet.block_count() > start).then_some(())).await;
    assert!(landed.is_some(), "the next run submits the pending block");
    let hashes = every_block_booked(&mut con, &devnet, start..devnet.block_count()).await;
    assert_eq!(hashes, vec![pending.clone()]);
    let status = eventually(Duration::from_secs(30), || {
        con.hget::<_, _, Option<String>>(format!("pastella:blocks:submit:{pending}"), "status")
            .unwrap()
            .filter(|s| s == "accepted")
    })
    .await;
    assert_eq!(status.as_deref(), Some("accepted"));
    stop_cleanly(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_block_whose_height_another_block_took_is_not_submitted_any_more() {
    let port = free_port();
    let stack = Stack::start(20, &[(port, 20)], json!({}), &[Module::Stratum]).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    let start = stack.devnet.block_count();
    stack.devnet.set_daemon_mode(DaemonMode::Refuse, None);
    let (reply, _, _) = miner.mine_and_submit(&stack.hasher, 20, 0).await;
    assert!(ok(&reply), "{reply}");
    let mut con = stack.redis.conn();
    let pending = eventually(Duration::from_secs(30), || {
        let hashes: Vec<String> = con.zrange("pastella:blocks:submitting", 0, -1).ok()?;
        hashes.into_iter().next()
    })
    .await
    .expect("the candidate is kept while the daemon refuses");
    // Its first submit (made at once, without a chain check) has failed: from now on every
    // attempt looks at the chain first.
    eventually(Duration::from_secs(60), || {
        con.hget::<_, _, Option<u32>>(format!("pastella:blocks:submit:{pending}"), "attempts")
            .unwrap()
            .filter(|&n| n >= 1)
    })
    .await
    .expect("a failed attempt is noted");
    // Meanwhile the network found the block at that height, and the next one.
    stack.devnet.mine(2);
    stack.devnet.set_daemon_mode(DaemonMode::Normal, None);

    let status = eventually(Duration::from_secs(60), || {
        con.hget::<_, _, Option<String>>(format!("pastella:blocks:submit:{pending}"), "status")
            .unwrap()
            .filter(|s| s != "pending")
    })
    .await;
    assert_eq!(status.as_deref(), Some("superseded"));
    let state = stack.devnet.state();
    assert_eq!(state.block_count, start + 2);
    assert!(state.alt_blocks.is_empty(), "a block that could only be an orphan was not submitted");
    let submitting: u64 = con.zcard("pastella:blocks:submitting").unwrap();
    assert_eq!(submitting, 0);
}

/// A fresh Redis has no pending submission: the start-up resume reads an empty list, not an
/// error (an empty Redis pipeline is refused by the client, "empty command").
#[tokio::test]
async fn no_pending_submissions_on_a_fresh_redis() {
    let redis = RedisServer::start();
    let store = pastella_pool::store::Store::connect(
        &format!("redis://127.0.0.1:{}/0", redis.port),
        "pastella",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let pending = store.pending_submissions().await.expect("pending submissions of an empty Redis");
    assert!(pending.is_empty(), "{} pending on a fresh Redis", pending.len());
}

/// The pool answers a block's share before the block reaches the daemon (here the daemon
/// refuses, elsewhere the candidate's `WAIT` is slow), so a test whose devnet mines "only
/// between pool blocks" must wait for it with [`BlocksInFlight`]: mining at once makes the
/// pool's block an orphan, as tests/sentinel.rs once saw after its miners stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_answered_ok_is_on_the_chain_before_the_devnet_mines() {
    let port = free_port();
    let stack = Stack::start(20, &[(port, 20)], json!({}), &[Module::Stratum]).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    let start = stack.devnet.block_count();
    stack.devnet.set_daemon_mode(DaemonMode::Refuse, None);
    let (reply, _, result) = miner.mine_and_submit(&stack.hasher, 20, 0).await;
    assert!(ok(&reply), "{reply}");
    let mut in_flight = BlocksInFlight::default();
    in_flight.note(&stack.devnet, miner.job.as_ref().unwrap(), &reply, &result);
    assert_eq!(stack.devnet.block_count(), start, "answered OK, not on the chain yet");
    assert!(!in_flight.landed(&stack.devnet, Duration::ZERO).await, "noted as in flight");

    stack.devnet.set_daemon_mode(DaemonMode::Normal, None);
    assert!(in_flight.landed(&stack.devnet, Duration::from_secs(300)).await, "resubmitted once the daemon is back");
    stack.devnet.mine(3);
    let state = stack.devnet.state();
    assert!(state.alt_blocks.is_empty(), "the pool's block is not an orphan: {:?}", state.alt_blocks);
    let mut con = stack.redis.conn();
    every_block_booked(&mut con, &stack.devnet, start..start + 1).await;
}

//! The stratum server end to end: real Redis, the devnet, real TCP miners that really mine
//! (RandomX light mode, low difficulty).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use pastella_pool::config::Module;
use pastella_pool::devnet::DaemonMode;
use redis::Commands;
use serde_json::json;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn error_message(reply: &serde_json::Value) -> String {
    reply["error"]["message"].as_str().unwrap_or_default().to_string()
}

fn ok(reply: &serde_json::Value) -> bool {
    reply["error"].is_null() && reply["result"]["status"] == "OK"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_mine_on_every_port_and_shares_land_in_redis_in_the_old_format() {
    let redis = RedisServer::start();
    let devnet = devnet(1_000_000_000).await;
    let ports: Vec<(u16, u64)> = (0..4).map(|i| (free_port(), 2 + i)).collect();
    // No vardiff: on a slow machine a retarget would change the difficulties summed below.
    let patch = json!({"varDiff": {"enabled": false}});
    let pool = PoolProcess::start(pool_config(&redis, &devnet, &ports, patch), &[Module::Stratum]);
    let hasher = SharedHasher::new();

    let mut expected_hashes = 0u64;
    let mut miners = Vec::new();
    for (i, (port, diff)) in ports.iter().enumerate() {
        let mut miner = TestMiner::connect(addr(*port)).await;
        let reply = miner.login(MINER_A, &format!("rig{i}")).await;
        let result = &reply["result"];
        assert_eq!(result["status"], "OK");
        assert_eq!(result["extensions"], json!(["algo", "keepalive"]));
        let job = &result["job"];
        assert_eq!(job["algo"], "rx/0");
        assert_eq!(job["blob"].as_str().unwrap().len(), 152, "76-byte hashing blob");
        assert_eq!(&job["blob"].as_str().unwrap()[78..86], "00000000", "nonce bytes are zero");
        assert_eq!(job["target"], pastella_pool::chain::difficulty::target_hex4(*diff));
        assert_eq!(job["height"], 1);
        assert_eq!(job["seed_hash"], pastella_pool::chain::params::GENESIS_ID_HEX);
        assert_eq!(job["next_seed_hash"], pastella_pool::chain::params::GENESIS_ID_HEX);
        assert_eq!(job["id"], result["id"]);
        for n in 0..2 {
            let (reply, _, _) = miner.mine_and_submit(&hasher, 0, n * 1000).await;
            assert!(ok(&reply), "share on port {port}: {reply}");
            expected_hashes += diff;
        }
        let keep = miner.call("keepalived", json!({"id": miner.session})).await;
        assert_eq!(keep["result"]["status"], "KEEPALIVED");
        let job = miner.call("getjob", json!({"id": miner.session})).await;
        // Same template: the newest job again (a template refresh may have pushed a newer one).
        let newest = miner.pushed.back().or(miner.job.as_ref()).unwrap();
        assert_eq!(job["result"]["job_id"], newest.id, "same template: same job");
        miners.push(miner);
    }
    let mut solo = TestMiner::connect(addr(ports[0].0)).await;
    solo.login(&format!("solo:{MINER_A}"), "solorig").await;
    let (reply, _, _) = solo.mine_and_submit(&hasher, 0, 50_000).await;
    assert!(ok(&reply), "{reply}");

    let mut con = redis.conn();
    let score: Option<u64> = eventually(Duration::from_secs(60), || {
        let v: Option<u64> = con.hget("pastella:scores:prop:roundCurrent", MINER_A).ok()?;
        v.filter(|v| *v == expected_hashes)
    })
    .await;
    assert_eq!(score, Some(expected_hashes), "prop round score = Σ job difficulty");
    let actual: u64 = con.hget("pastella:shares_actual:prop:roundCurrent", MINER_A).unwrap();
    assert_eq!(actual, expected_hashes);
    let solo_score: Option<u64> = eventually(Duration::from_secs(60), || {
        con.hget::<_, _, Option<u64>>("pastella:scores:solo:roundCurrent", MINER_A).ok().flatten()
    })
    .await;
    assert_eq!(solo_score, Some(2), "solo shares are recorded as solo");
    let hashes: u64 = con.hget(format!("pastella:workers:{MINER_A}"), "hashes").unwrap();
    assert_eq!(hashes, expected_hashes + 2);
    let last_share: u64 = con.hget(format!("pastella:workers:{MINER_A}"), "lastShare").unwrap();
    assert!(last_share > 1_700_000_000);
    let worker: std::collections::HashMap<String, String> =
        con.hgetall(format!("pastella:unique_workers:{MINER_A}~rig0")).unwrap();
    assert_eq!(worker["hashes"], "4");
    assert_eq!(worker["rewardType"], "prop");
    let solo_worker: String = con.hget(format!("pastella:unique_workers:{MINER_A}~solorig"), "rewardType").unwrap();
    assert_eq!(solo_worker, "solo");
    let members: Vec<String> = con.zrange("pastella:hashrate", 0, -1).unwrap();
    let rig0: Vec<&String> = members.iter().filter(|m| m.contains("~rig0:")).collect();
    assert!(!rig0.is_empty(), "{members:?}");
    let parts: Vec<&str> = rig0[0].split(':').collect();
    assert_eq!(parts[1], format!("{MINER_A}~rig0"));
    assert_eq!(parts[3], "prop");
    assert!(members.iter().any(|m| m.split(':').nth(1) == Some(MINER_A)), "per-address entries too");
    assert!(members.iter().any(|m| m.contains("~solorig:") && m.split(':').nth(3) == Some("solo")));
    let window: Vec<String> = con.lrange("pastella:pplns:window", 0, -1).unwrap();
    let window_total: u64 = window.iter().map(|r| r.split(':').next().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(window_total, expected_hashes, "PPLNS window holds the prop shares only");
    let ips: Vec<String> = con.smembers(format!("pastella:workers_ip:{MINER_A}")).unwrap();
    assert_eq!(ips, vec!["::ffff:127.0.0.1".to_string()]);
    // The snapshot is written every 10 s: one taken before the solo miner connected says 1.
    let users: Option<String> = eventually(Duration::from_secs(60), || {
        con.hget::<_, _, Option<String>>(format!("pastella:ports:{}", ports[0].0), "users")
            .ok()
            .flatten()
            .filter(|u| u == "2")
    })
    .await;
    assert_eq!(users.as_deref(), Some("2"), "two sessions on the first port");
    let active: u64 = con.hget("pastella:active_connections", format!("{MINER_A}~rig1")).unwrap();
    assert_eq!(active, 1);
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_has_its_own_message() {
    let port = free_port();
    let Stack { pool, devnet, redis: _redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], json!({}), &[Module::Stratum]).await;
    let mut miner = TestMiner::connect(addr(port)).await;

    let reply = miner.call("submit", json!({"id": "1", "job_id": "1", "nonce": "00000000", "result": "00"})).await;
    assert_eq!(error_message(&reply), "Unauthenticated");
    let reply = miner.call("login", json!({"login": format!("{}X", &MINER_A[..53]), "pass": "x"})).await;
    assert!(
        error_message(&reply).starts_with("Invalid address used for login: The address given is not valid"),
        "{reply}"
    );
    let reply = miner.call("login", json!({"pass": "x"})).await;
    assert_eq!(error_message(&reply), "Missing login");
    let reply = miner.call("mining.subscribe", json!({})).await;
    assert_eq!(error_message(&reply), "Invalid method");

    miner.login(MINER_A, "rig").await;
    let (reply, nonce, hash) = miner.mine_and_submit(&hasher, 0, 0).await;
    assert!(ok(&reply), "{reply}");
    // The job the share was mined on (a push may have replaced the login's job meanwhile).
    let job = miner.job.clone().unwrap();
    let reply = miner.submit(&job, nonce, &hash).await;
    assert_eq!(error_message(&reply), "Duplicate share");
    // The right hash for another nonce: recomputation disagrees.
    let other = [nonce[0].wrapping_add(1), nonce[1], nonce[2], 0xee];
    let reply = miner.submit(&job, other, &hash).await;
    assert_eq!(error_message(&reply), "Rejected share: invalid result");
    let params = json!({"id": miner.session, "job_id": job.id, "nonce": "zz000000", "result": hash.to_hex()});
    assert_eq!(error_message(&miner.call("submit", params).await), "Malformed nonce: expected 8 hex characters");
    let params = json!({"id": miner.session, "job_id": job.id, "nonce": "01020304", "result": "abc"});
    assert_eq!(error_message(&miner.call("submit", params).await), "Malformed result: expected 64 hex characters");
    let params = json!({"id": miner.session, "job_id": "12345", "nonce": "01020304", "result": hash.to_hex()});
    assert_eq!(error_message(&miner.call("submit", params).await), "Invalid job id");
    let params = json!({"id": "999", "job_id": job.id, "nonce": "01020304", "result": hash.to_hex()});
    assert_eq!(error_message(&miner.call("submit", params).await), "Unauthenticated");

    // Low difficulty: a real hash below the job's difficulty.
    let mut hard = TestMiner::connect(addr(port)).await;
    hard.login(&format!("{MINER_A}.100000"), "hard").await;
    let hard_job = hard.job.clone().unwrap();
    assert_eq!(hard_job.target, pastella_pool::chain::difficulty::target_hex4(100_000), "fixed difficulty login");
    let weak_nonce = [9, 9, 9, 9];
    let weak = hasher.hash(hard_job.seed, &hard_job.blob, weak_nonce);
    assert!(pastella_pool::chain::difficulty::hash_difficulty(&weak) < 100_000);
    assert_eq!(error_message(&hard.submit(&hard_job, weak_nonce, &weak).await), "Low difficulty share");

    // Stale: a share for a job whose block the network already found.
    let old = miner.job.clone().unwrap();
    devnet.mine(1);
    let fresh =
        miner.job_at_height(old.height + 1, Duration::from_secs(30)).await.expect("new job after a network block");
    assert_eq!(fresh.height, old.height + 1);
    let (nonce, hash) = {
        let h = hasher.clone();
        let (seed, blob) = (old.seed, old.blob.clone());
        tokio::task::spawn_blocking(move || h.search(seed, &blob, 2, 7000)).await.unwrap()
    };
    let reply = miner.submit(&old, nonce, &hash).await;
    assert!(error_message(&reply).starts_with("Stale share"), "{reply}");
    // The fresh job still works.
    let (reply, _, _) = miner.mine_and_submit(&hasher, 0, 90_000).await;
    assert!(ok(&reply), "{reply}");
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_found_block_is_accepted_by_the_devnet_and_every_session_gets_the_next_job() {
    let redis = RedisServer::start();
    let devnet = devnet(12).await;
    let ports = [(free_port(), 2), (free_port(), 3)];
    let pool = PoolProcess::start(pool_config(&redis, &devnet, &ports, json!({})), &[Module::Stratum]);
    let hasher = SharedHasher::new();
    let mut finder = TestMiner::connect(addr(ports[0].0)).await;
    finder.login(MINER_A, "finder").await;
    let mut watchers = Vec::new();
    for (i, (port, _)) in ports.iter().enumerate() {
        let mut w = TestMiner::connect(addr(*port)).await;
        w.login(MINER_A, &format!("watcher{i}")).await;
        watchers.push(w);
    }
    let start_height = finder.job.as_ref().unwrap().height;
    // Search straight for a hash meeting the network difficulty (12): a block.
    let job = finder.job.clone().unwrap();
    let h = hasher.clone();
    let (seed, blob) = (job.seed, job.blob.clone());
    let (nonce, hash) = tokio::task::spawn_blocking(move || h.search(seed, &blob, 12, 0)).await.unwrap();
    let reply = finder.submit(&job, nonce, &hash).await;
    assert!(ok(&reply), "block share accepted: {reply}");
    let mut hashing = job.blob.clone();
    hashing[39..43].copy_from_slice(&nonce);
    let block_hash = pastella_pool::chain::block::block_id(&hashing);
    let tip = eventually(Duration::from_secs(10), || {
        let state = devnet.state();
        (state.height >= start_height).then_some(state)
    })
    .await
    .expect("the devnet accepted the block");
    assert_eq!(tip.tip, block_hash, "our block is the new tip");
    for w in watchers.iter_mut().chain(std::iter::once(&mut finder)) {
        // A vardiff push for a silent watcher may come first on a slow machine: skip it.
        let job = w.job_at_height(start_height + 1, Duration::from_secs(30)).await;
        assert!(job.is_some(), "every session gets the next job");
    }
    let mut con = redis.conn();
    let candidates: Vec<String> = eventually(Duration::from_secs(10), || {
        con.zrange::<_, Vec<String>>("pastella:blocks:candidates", 0, -1).ok().filter(|c| !c.is_empty())
    })
    .await
    .expect("candidate recorded");
    let fields: Vec<&str> = candidates[0].split(':').collect();
    assert_eq!(fields.len(), 8, "old 8-field candidate format");
    assert_eq!(&fields[..3], &["prop", MINER_A, &block_hash.to_hex()]);
    assert_eq!(fields[4], "12", "network difficulty");
    let info: std::collections::HashMap<String, String> =
        con.hgetall(format!("pastella:blocks:info:{}", block_hash.to_hex())).unwrap();
    assert_eq!(info["reward"], "400000000", "the pool's coinbase output");
    assert_eq!(info["height"], start_height.to_string());
    assert_eq!(info["status"], "pending");
    let window: std::collections::HashMap<String, u64> =
        con.hgetall(format!("pastella:blocks:window:{}", block_hash.to_hex())).unwrap();
    assert_eq!(window.get(MINER_A), Some(&2), "the block's own share ends the window");
    let current: Option<u64> = con.hget("pastella:scores:prop:roundCurrent", MINER_A).unwrap();
    assert_eq!(current, None, "the round closed with the block");
    let closed: u64 = con.hget(format!("pastella:scores:prop:round{start_height}"), MINER_A).unwrap();
    assert_eq!(closed, 2);
    pool.stop();
}

/// Vardiff wiring, independent of machine speed: the rule itself is unit-tested with explicit
/// timestamps in `stratum::vardiff`. Here the target time is an hour, so every miner that finds
/// shares at all is "fast" (however busy the machine), and one retarget step is bounded by
/// `maxJump`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vardiff_raises_fast_miners_and_keeps_fixed_difficulty() {
    let patch = json!({"varDiff": {"minDiff": 1, "maxDiff": 1000, "targetTime": 3600, "retargetTime": 1, "variancePercent": 30, "maxJump": 50}});
    let port = free_port();
    let Stack { pool, devnet: _devnet, redis: _redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;

    let mut fast = TestMiner::connect(addr(port)).await;
    fast.login(MINER_A, "fast").await;
    let mut fixed = TestMiner::connect(addr(port)).await;
    fixed.login(&format!("{MINER_A}.2"), "fixed").await;
    let mut nonce = 0;
    let mut raised = None;
    // The first share after the retarget time passed raises the difficulty.
    for _ in 0..40 {
        // Pushes read while waiting for the previous reply (template refreshes keep difficulty 2).
        if let Some(job) = fast.pushed.iter().find(|j| j.difficulty != 2) {
            raised = Some(job.difficulty);
            break;
        }
        let (reply, n, _) = fast.mine_and_submit(&hasher, 0, nonce).await;
        nonce = u32::from_le_bytes(n) + 1;
        assert!(ok(&reply), "{reply}");
    }
    let raised = raised.expect("a fast miner gets a harder job");
    assert_eq!(raised, 3, "one step up is at most +50 %");

    let mut fixed_nonce = 1 << 20;
    for _ in 0..8 {
        let (reply, n, _) = fixed.mine_and_submit(&hasher, 0, fixed_nonce).await;
        fixed_nonce = u32::from_le_bytes(n) + 1;
        assert!(ok(&reply), "{reply}");
    }
    assert!(fixed.pushed.is_empty(), "a fixed-difficulty miner is never retargeted");
    assert_eq!(fixed.job.as_ref().unwrap().target, pastella_pool::chain::difficulty::target_hex4(2));
    pool.stop();
}

/// A miner that never finds a share is lowered once its silence exceeds the target band. A
/// busy machine only makes the silence longer, so this holds at any speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vardiff_lowers_a_silent_miner() {
    let patch = json!({"varDiff": {"minDiff": 1, "maxDiff": 1000, "targetTime": 2, "retargetTime": 1, "variancePercent": 30, "maxJump": 50}});
    let port = free_port();
    let Stack { pool, devnet: _devnet, redis: _redis, hasher: _hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;
    let mut slow = TestMiner::connect(addr(port)).await;
    slow.login(MINER_A, "slow").await;
    let lowered = slow.next_push(Duration::from_secs(60)).await.expect("a silent miner gets an easier job");
    assert_eq!(lowered.difficulty, 1, "difficulty went down from 2 to the minimum");
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_bad_json_and_banned_ips_are_contained_while_others_keep_mining() {
    let patch = json!({"banning": {"enabled": true, "time": 60, "invalidPercent": 50, "checkThreshold": 4}});
    let port = free_port();
    let Stack { pool, devnet: _devnet, redis: _redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;
    let mut good = TestMiner::connect(addr(port)).await;
    good.login(MINER_A, "good").await;

    let mut flooder = TestMiner::connect(addr(port)).await;
    let long = "x".repeat(11_000);
    flooder.send_line(&long).await;
    assert!(flooder.closed(Duration::from_secs(5)).await, "over-long line closes the connection");

    let mut garbage = TestMiner::connect(addr(port)).await;
    garbage.send_line("{not json").await;
    assert!(garbage.closed(Duration::from_secs(5)).await, "invalid JSON closes the connection");

    let mut browser = TestMiner::connect(addr(port)).await;
    browser.send_line("GET / HTTP/1.1").await;
    let status = browser.read_line(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(browser.closed(Duration::from_secs(5)).await);

    let bad_ip = "127.0.0.2".parse().unwrap();
    let mut cheat = TestMiner::connect_from(bad_ip, addr(port)).await;
    cheat.login(MINER_A, "cheat").await;
    let job = cheat.job.clone().unwrap();
    for i in 0..4u8 {
        let params = json!({"id": cheat.session, "job_id": job.id, "nonce": format!("zz{i:06}"), "result": "00"});
        let reply = cheat.call("submit", params).await;
        assert!(error_message(&reply).starts_with("Malformed nonce"), "{reply}");
    }
    assert!(cheat.closed(Duration::from_secs(5)).await, "banned miner disconnected");
    let mut again = TestMiner::connect_from(bad_ip, addr(port)).await;
    let reply = again.call("login", json!({"login": MINER_A, "pass": "x"})).await;
    assert_eq!(error_message(&reply), "Your IP is banned");

    let (reply, _, _) = good.mine_and_submit(&hasher, 0, 0).await;
    assert!(ok(&reply), "other miners keep mining: {reply}");
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_outage_keeps_sessions_connected_and_jobs_resume_after() {
    let port = free_port();
    let Stack { pool, devnet, redis: _redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], json!({}), &[Module::Stratum]).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    let height = miner.job.as_ref().unwrap().height;

    devnet.set_daemon_mode(DaemonMode::Refuse, Some(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (reply, _, _) = miner.mine_and_submit(&hasher, 0, 0).await;
    assert!(ok(&reply), "shares on the current job are still accepted during the outage: {reply}");
    tokio::time::sleep(Duration::from_secs(9)).await;
    let keep = miner.call("keepalived", json!({"id": miner.session})).await;
    assert_eq!(keep["result"]["status"], "KEEPALIVED", "session survived the outage");

    devnet.mine(1);
    // Wait for the new block's job itself: a vardiff retarget may be pushed before it.
    let job = miner.job_at_height(height + 1, Duration::from_secs(30)).await.expect("jobs resume after the outage");
    assert_eq!(job.height, height + 1);
    let (reply, _, _) = miner.mine_and_submit(&hasher, 0, 5000).await;
    assert!(ok(&reply), "{reply}");
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_no_accepted_share() {
    let port = free_port();
    // No vardiff: every share counts 2, however slow the machine.
    let patch = json!({"varDiff": {"enabled": false}});
    let Stack { pool, devnet: _devnet, mut redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    let mut nonce = 0;
    for _ in 0..3 {
        let (reply, n, _) = miner.mine_and_submit(&hasher, 0, nonce).await;
        nonce = u32::from_le_bytes(n) + 1;
        assert!(ok(&reply), "{reply}");
    }
    // The shares before the outage are in Redis (a slow machine may take more than a flush
    // interval to write them; they must not be mixed up with the outage's).
    let mut con = redis.conn();
    let before = eventually(Duration::from_secs(60), || {
        con.hget::<_, _, Option<u64>>("pastella:scores:prop:roundCurrent", MINER_A).ok().flatten().filter(|v| *v == 6)
    })
    .await;
    assert_eq!(before, Some(6), "the shares before the outage were written");
    drop(con);
    // Redis goes away (its data was in memory only: start over from an empty one, the worst case
    // for the shares of the outage) while the miner keeps mining.
    redis.kill();
    let mut during = 0u64;
    for _ in 0..4 {
        let (reply, n, _) = miner.mine_and_submit(&hasher, 0, nonce).await;
        nonce = u32::from_le_bytes(n) + 1;
        assert!(ok(&reply), "shares are still accepted while Redis is down: {reply}");
        during += 2;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    let mut con = redis.conn();
    let recorded = eventually(Duration::from_secs(60), || {
        let v: Option<u64> = con.hget("pastella:scores:prop:roundCurrent", MINER_A).ok()?;
        v.filter(|v| *v == during)
    })
    .await;
    assert_eq!(recorded, Some(during), "every share accepted during the outage was written once Redis was back");
    pool.stop();
}

/// After a verifier error the pool answers "retry": the same nonce must then be verified and
/// accepted, not refused as a duplicate (which would also count toward a ban).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_the_verifier_could_not_check_can_be_submitted_again() {
    let patch = json!({"banning": {"enabled": true, "time": 60, "invalidPercent": 50, "checkThreshold": 4}});
    let port = free_port();
    let Stack { pool, devnet: _devnet, redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    let job = miner.job.clone().unwrap();
    let h = hasher.clone();
    let (seed, blob) = (job.seed, job.blob.clone());
    let (nonce, hash) = tokio::task::spawn_blocking(move || h.search(seed, &blob, 2, 0)).await.unwrap();

    pool.engine.as_ref().expect("the stratum module runs an engine").fail_next(1);
    let reply = miner.submit(&job, nonce, &hash).await;
    assert_eq!(error_message(&reply), "Share could not be verified, retry");
    for attempt in 0..2 {
        let reply = miner.submit(&job, nonce, &hash).await;
        if attempt == 0 {
            assert!(ok(&reply), "the retry is verified and accepted: {reply}");
        } else {
            assert_eq!(error_message(&reply), "Duplicate share", "once accepted, it is a duplicate");
        }
    }
    let keep = miner.call("keepalived", json!({"id": miner.session})).await;
    assert_eq!(keep["result"]["status"], "KEEPALIVED", "not banned");
    pool.stop();
    let mut con = redis.conn();
    let score: u64 = con.hget("pastella:scores:prop:roundCurrent", MINER_A).unwrap();
    assert_eq!(score, 2, "the share counted once");
}

/// A job's difficulty never exceeds its template's network difficulty: a port at 5000 on a
/// chain at 12 hands out difficulty-12 jobs, and a hash between 12 and 5000 is a block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_difficulty_is_capped_at_the_network_difficulty() {
    let port = free_port();
    let Stack { pool, devnet, redis: _redis, hasher } =
        Stack::start(12, &[(port, 5000)], json!({}), &[Module::Stratum]).await;
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "rig").await;
    let mut fixed = TestMiner::connect(addr(port)).await;
    fixed.login(&format!("{MINER_A}.500000"), "fixed").await;
    let job = miner.job.clone().unwrap();
    assert_eq!(job.difficulty, 12, "port difficulty 5000 capped at the network's 12");
    assert_eq!(fixed.job.as_ref().unwrap().difficulty, 12, "fixed difficulty capped too");
    let got = miner.call("getjob", json!({"id": miner.session})).await;
    assert_eq!(got["result"]["target"], job.target, "getjob answers the same capped target");

    let h = hasher.clone();
    let (seed, blob) = (job.seed, job.blob.clone());
    let (nonce, hash) = tokio::task::spawn_blocking(move || h.search(seed, &blob, 12, 0)).await.unwrap();
    let reply = miner.submit(&job, nonce, &hash).await;
    assert!(ok(&reply), "a block-meeting share is accepted: {reply}");
    let tip = eventually(Duration::from_secs(30), || {
        let state = devnet.state();
        (state.height >= job.height).then_some(state)
    })
    .await
    .expect("the devnet accepted the block");
    let mut hashing = job.blob.clone();
    hashing[39..43].copy_from_slice(&nonce);
    assert_eq!(tip.tip, pastella_pool::chain::block::block_id(&hashing), "our block is the tip");
    pool.stop();
}

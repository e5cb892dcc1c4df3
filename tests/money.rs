//! Money end to end on the devnet: PPLNS crediting of mined blocks, payments through the
//! devnet wallet, orphans, and wallet failures — with the accounting invariant checked.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use pastella_pool::config::Module;
use pastella_pool::devnet::{Failure, FailureKind};
use pastella_pool::store::Store;
use redis::Commands;
use serde_json::json;

const MINER_B: &str = "PAS1WPrszX47No6fAtDt56aTj9Vjr9dZq58qaiz9dvZB5dmiXkFbD1";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn money_patch() -> serde_json::Value {
    json!({
        "blockUnlocker": {"enabled": true, "interval": 1, "depth": 10, "leaseTtl": 2, "poolFee": 1, "finderReward": 1},
        "payments": {"enabled": true, "interval": 1, "minPayment": 100000, "transferFee": 1000, "maxAddresses": 2,
                     "minerPayFee": true, "dynamicTransferFee": true, "blockedAddressesFile": "/nonexistent/payment_blocked.json"},
        "walletApi": {"timeoutMs": 2000},
        "pplns": {"windowFactor": 2}
    })
}

async fn store(redis: &RedisServer) -> Store {
    Store::connect(&format!("redis://127.0.0.1:{}/0", redis.port), "pastella", Duration::from_secs(5)).await.unwrap()
}

/// The accounting invariant, per address and pool-wide, and block-level checks.
async fn check_invariants(redis: &RedisServer) {
    let audit = store(redis).await.audit().await.unwrap();
    assert!(audit.broken.is_empty(), "credited != balance + pending + paid + fees for {:?}", audit.broken);
    assert_eq!(audit.credited, audit.balance + audit.pending + audit.paid + audit.fees, "{audit:?}");
    assert_eq!(audit.totals.get("credited").copied().unwrap_or(0) as u64, audit.credited, "totals.credited");
    let mut con = redis.conn();
    let matured: Vec<String> = con.zrange("pastella:blocks:matured", 0, -1).unwrap();
    let mut credited_by_blocks = 0u64;
    for member in matured {
        let f: Vec<&str> = member.split(':').collect();
        let info: HashMap<String, String> = con.hgetall(format!("pastella:blocks:info:{}", f[2])).unwrap();
        let credits: HashMap<String, u64> = con.hgetall(format!("pastella:blocks:credits:{}", f[2])).unwrap();
        match f.len() {
            10 => {
                assert_eq!(info["status"], "confirmed");
                let sum: u64 = credits.values().sum();
                let reward: u64 = info["reward"].parse().unwrap();
                let fee: u64 = info["poolFee"].parse().unwrap();
                let dust: u64 = info["dust"].parse().unwrap();
                assert_eq!(sum + fee + dust, reward, "block {} pays exactly its reward", f[2]);
                assert_eq!(f[9], info["reward"], "matured member carries the pool output");
                credited_by_blocks += sum;
            }
            9 => {
                assert_eq!(f[8], "1");
                assert_eq!(info["status"], "orphaned");
                assert!(credits.is_empty(), "an orphaned block is never credited");
            }
            n => panic!("matured member with {n} fields: {member}"),
        }
    }
    assert_eq!(credited_by_blocks, audit.credited, "Σ block credits == Σ credited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mined_blocks_are_credited_pplns_and_paid_through_the_wallet_even_when_it_fails() {
    let redis = RedisServer::start();
    let devnet = devnet(12).await;
    let port = free_port();
    let config = pool_config(&redis, &devnet, &[(port, 2)], money_patch());
    let pool = PoolProcess::start(config, &[Module::Stratum, Module::Unlocker, Module::Payments]);
    let hasher = SharedHasher::new();
    let mut a = TestMiner::connect(addr(port)).await;
    a.login(MINER_A, "a1").await;
    let mut b = TestMiner::connect(addr(port)).await;
    b.login(MINER_B, "b1").await;
    let mut miners = [a, b];
    // The first payment attempts fail in each way the wallet can fail.
    devnet.fail_wallet_sends(1, Failure { kind: FailureKind::Error, code: 31, hold: Duration::ZERO });
    devnet.fail_wallet_sends(1, Failure { kind: FailureKind::DropAfterSuccess, code: 0, hold: Duration::ZERO });
    devnet.fail_wallet_sends(1, Failure { kind: FailureKind::Timeout, code: 30, hold: Duration::from_secs(4) });

    let found = mine_blocks(&devnet, &mut miners, &hasher, 3, Duration::from_secs(120)).await;
    assert!(found >= 3, "found {found} blocks");
    devnet.mine(11);
    let mut con = redis.conn();
    let confirmed = eventually(Duration::from_secs(30), || {
        let n: u64 = con.hget("pastella:totals", "blocksConfirmed").ok()?;
        (n >= 3).then_some(n)
    })
    .await;
    assert!(confirmed.is_some(), "the unlocker credits matured blocks");
    check_invariants(&redis).await;

    // Payments go out (after the injected failures) and get mined.
    let paid = eventually(Duration::from_secs(60), || {
        let a: u64 = con.hget(format!("pastella:balances:{MINER_A}"), "paid").ok()?;
        let b: u64 = con.hget(format!("pastella:balances:{MINER_B}"), "paid").ok()?;
        (a > 0 && b > 0).then_some((a, b))
    })
    .await
    .expect("both miners paid");
    devnet.mine(1);
    let journal_empty = eventually(Duration::from_secs(30), || {
        let n: u64 = con.zcard("pastella:payments:journal").ok()?;
        (n == 0).then_some(())
    })
    .await;
    assert!(journal_empty.is_some(), "every batch resolved");
    check_invariants(&redis).await;
    pool.stop();
    devnet.mine(1);

    // What the wallet sent equals what Redis says was paid: nothing lost, nothing twice.
    for (address, _) in [(MINER_A, paid.0), (MINER_B, paid.1)] {
        let paid: u64 = con.hget(format!("pastella:balances:{address}"), "paid").unwrap();
        let received = devnet.received(address);
        assert_eq!(received.received + received.pending, paid, "{address}: wallet sent vs Redis paid");
        let records: Vec<String> = con.zrange(format!("pastella:payments:{address}"), 0, -1).unwrap();
        let recorded: u64 = records.iter().map(|r| r.split(':').nth(1).unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(recorded, paid, "payment records add up");
        assert!(records.iter().all(|r| r.split(':').count() == 4 && r.ends_with(":0")), "{records:?}");
    }
    let all: Vec<String> = con.zrange("pastella:payments:all", 0, -1).unwrap();
    assert!(!all.is_empty());
    for member in &all {
        let f: Vec<&str> = member.split(':').collect();
        assert_eq!(f.len(), 6, "old payments:all format: {member}");
        assert_eq!(f[2], "1000", "transaction fee");
    }
    let fees: u64 = con.hget(format!("pastella:balances:{MINER_A}"), "fees").unwrap();
    assert!(fees > 0, "miners pay the transfer fee (minerPayFee)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_block_is_never_credited() {
    let redis = RedisServer::start();
    let devnet = devnet(12).await;
    let port = free_port();
    let config = pool_config(&redis, &devnet, &[(port, 2)], money_patch());
    let pool = PoolProcess::start(config, &[Module::Stratum, Module::Unlocker]);
    let hasher = SharedHasher::new();
    let mut a = TestMiner::connect(addr(port)).await;
    a.login(MINER_A, "a1").await;
    let mut miners = [a];
    assert_eq!(mine_blocks(&devnet, &mut miners, &hasher, 1, Duration::from_secs(120)).await, 1);
    let ours = devnet.state().tip;
    let mut con = redis.conn();
    eventually(Duration::from_secs(10), || {
        let n: u64 = con.zcard("pastella:blocks:candidates").ok()?;
        (n == 1).then_some(())
    })
    .await
    .expect("candidate recorded");
    let reorg = devnet.reorg(1).unwrap();
    assert_eq!(reorg.orphaned, vec![ours]);
    devnet.mine(10);
    let status = eventually(Duration::from_secs(30), || {
        let s: Option<String> = con.hget(format!("pastella:blocks:info:{}", ours.to_hex()), "status").ok()?;
        s.filter(|s| s != "pending")
    })
    .await;
    assert_eq!(status.as_deref(), Some("orphaned"));
    let matured: Vec<String> = con.zrange("pastella:blocks:matured", 0, -1).unwrap();
    assert_eq!(matured.len(), 1);
    assert!(matured[0].ends_with(":1") && matured[0].split(':').count() == 9, "{matured:?}");
    let credited: Option<u64> = con.hget(format!("pastella:balances:{MINER_A}"), "credited").unwrap();
    assert_eq!(credited, None, "nothing credited");
    check_invariants(&redis).await;
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staking_output_in_the_coinbase_is_never_credited() {
    let redis = RedisServer::start();
    let devnet = devnet(12).await;
    let port = free_port();
    let mut patch = money_patch();
    merge(&mut patch, &json!({"poolServer": {"templateRefreshInterval": 1}}));
    let config = pool_config(&redis, &devnet, &[(port, 2)], patch);
    let pool = PoolProcess::start(config, &[Module::Stratum, Module::Unlocker]);
    let hasher = SharedHasher::new();
    let mut a = TestMiner::connect(addr(port)).await;
    a.login(MINER_A, "a1").await;
    // The block at `height` must carry a staking payout to another key; the pool picks the new
    // template up at its next refresh (1 s here) and pushes its job. (A block found on the old
    // job is rejected by the daemon and does not hold the height: the next one is submitted.)
    let height = devnet.attach_staking(123_456_789);
    a.next_push(Duration::from_secs(60)).await.expect("the refreshed template's job");
    let mut miners = [a];
    assert_eq!(mine_blocks(&devnet, &mut miners, &hasher, 1, Duration::from_secs(120)).await, 1);
    devnet.mine(10);
    let mut con = redis.conn();
    let credited = eventually(Duration::from_secs(30), || {
        let n: u64 = con.hget(format!("pastella:balances:{MINER_A}"), "credited").ok()?;
        Some(n)
    })
    .await
    .expect("credited");
    let matured: Vec<String> = con.zrange("pastella:blocks:matured", 0, -1).unwrap();
    let confirmed: Vec<&String> = matured.iter().filter(|m| m.split(':').count() == 10).collect();
    assert_eq!(confirmed.len(), 1, "{matured:?}");
    let f: Vec<&str> = confirmed[0].split(':').collect();
    assert_eq!(f[9], "400000000", "the pool output, not header reward (which adds the staking payout)");
    let header_reward =
        pastella_pool::node::DaemonClient::new("127.0.0.1", devnet.daemon_addr.port(), Duration::from_secs(5))
            .get_block_header_by_height(height)
            .await
            .unwrap()
            .reward;
    assert_eq!(header_reward, 400_000_000 + 123_456_789, "the header counts the staking payout");
    assert_eq!(credited, 400_000_000 - 4_000_000, "98 % + finder 1 % to the only miner");
    check_invariants(&redis).await;
    pool.stop();
}

/// The old pool's balances (`workers:<address>` hashes with a 15-day TTL) move once into this
/// pool's books, the audit counts them as imported, and a second start imports nothing.
#[tokio::test]
async fn old_pool_balances_are_imported_once_and_the_books_balance() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    let old = format!("pastella:workers:{MINER_A}");
    let _: () = redis::cmd("HSET")
        .arg(&old)
        .arg("balance")
        .arg("123456789")
        .arg("paid")
        .arg("1000000000")
        .arg("minPayoutLevel")
        .arg("500000000")
        .arg("hashes")
        .arg("42")
        .query(&mut con)
        .unwrap();
    let _: () = con.expire(&old, 1_296_000).unwrap();
    let store = store(&redis).await;

    assert_eq!(store.import_old_balances().await.unwrap(), 1);
    let row: HashMap<String, String> = con.hgetall(format!("pastella:balances:{MINER_A}")).unwrap();
    assert_eq!(row["balance"], "123456789");
    assert_eq!(row["paid"], "1000000000");
    assert_eq!(row["credited"], "1123456789");
    assert_eq!(row["minPayoutLevel"], "500000000");
    let left: HashMap<String, String> = con.hgetall(&old).unwrap();
    assert_eq!(left, HashMap::from([("hashes".to_string(), "42".to_string())]), "only the moved fields go");
    let ttl: i64 = con.ttl(&old).unwrap();
    assert_eq!(ttl, -1, "the old 15-day expiry is gone");

    let audit = store.audit().await.unwrap();
    assert_eq!(audit.totals.get("imported"), Some(&1_123_456_789));
    assert_eq!(audit.problems(), Vec::<String>::new());

    assert_eq!(store.import_old_balances().await.unwrap(), 0, "imported once");
    let row: HashMap<String, String> = con.hgetall(format!("pastella:balances:{MINER_A}")).unwrap();
    assert_eq!(row["balance"], "123456789");
}

/// The daemon rejects the first block the pool finds at a height (it was built on a template
/// the daemon has since replaced: here the coinbase lacks a staking payout attached after the
/// job went out); the next block found at that height is still submitted and lands. Before the
/// fix the one-block-per-height rule kept the rejected block's claim on the height, and every
/// later block there was dropped as "second at height" until the chain moved on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_the_daemon_rejected_does_not_hold_its_height() {
    let redis = RedisServer::start();
    let devnet = devnet(12).await;
    let port = free_port();
    let mut patch = money_patch();
    merge(&mut patch, &json!({"poolServer": {"templateRefreshInterval": 1}}));
    let config = pool_config(&redis, &devnet, &[(port, 2)], patch);
    let pool = PoolProcess::start(config, &[Module::Stratum]);
    let hasher = SharedHasher::new();
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(MINER_A, "a1").await;
    let old = miner.job.clone().expect("a job");
    // A staking payout at the job's height: the daemon now wants it in that block's coinbase.
    assert_eq!(devnet.attach_staking(123_456_789), old.height);
    let mut con = redis.conn();
    let rejected = |con: &mut redis::Connection| -> usize {
        let keys: Vec<String> = con.keys("pastella:blocks:submit:*").unwrap();
        keys.iter()
            .filter(|k| con.hget::<_, _, Option<String>>(*k, "status").unwrap().as_deref() == Some("rejected"))
            .count()
    };

    // A block on the old job: the pool answers OK and submits it, the daemon rejects it.
    let (nonce, hash) = hasher.search(old.seed, &old.blob, 12, 0);
    let reply = miner.submit(&old, nonce, &hash).await;
    assert_eq!(reply["result"]["status"], "OK", "{reply}");
    let first = eventually(Duration::from_secs(120), || (rejected(&mut con) == 1).then_some(())).await;
    assert!(first.is_some(), "the daemon rejected the block of the old template");
    assert_eq!(devnet.block_count(), old.height, "nothing landed");

    // Blocks on the newest job at the same height: each one is submitted (accepted, or rejected
    // again while the pool still serves the old template) until one lands.
    let mut start = u32::from_le_bytes(nonce).wrapping_add(1);
    for _ in 0..10 {
        let before = rejected(&mut con);
        let (reply, nonce, _) = miner.mine_and_submit(&hasher, 12, start).await;
        start = u32::from_le_bytes(nonce).wrapping_add(1);
        assert_eq!(reply["result"]["status"], "OK", "{reply}");
        let job = miner.job.clone().expect("the job mined");
        assert_eq!(job.height, old.height, "the chain did not move: same height");
        let outcome = eventually(Duration::from_secs(120), || {
            if devnet.block_count() > old.height {
                Some(true)
            } else {
                (rejected(&mut con) > before).then_some(false)
            }
        })
        .await;
        match outcome {
            Some(true) => break,
            Some(false) => continue,
            None => panic!("a block found at the height of a rejected one was never submitted"),
        }
    }
    assert!(devnet.block_count() > old.height, "a later block at the height landed");
    pool.stop();
}

//! Redis high availability: a master, one replica and three real `redis-sentinel`s on loopback;
//! the pool (stratum, unlocker, payments) finds the master through the sentinels and writes
//! money and shares with `redis.waitReplicas: 1`. Two miners submit shares and find devnet
//! blocks while the master is killed with SIGKILL. The sentinels promote the replica, the old
//! master comes back empty (as a crashed machine without persistence would) and is turned into
//! the new master's replica. Then: every share answered OK is in Redis (Σ job difficulty ==
//! `workers:<login>.hashes`), every block the pool found is credited exactly once, the books
//! balance (`pastella-pool audit`), and the wallet sent exactly what Redis records as paid.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pastella_pool::config::{Config, Module};
use redis::Commands;
use serde_json::json;

const MINER_B: &str = "PAS1WPrszX47No6fAtDt56aTj9Vjr9dZq58qaiz9dvZB5dmiXkFbD1";
/// The master's name in the sentinels' configuration.
const MASTER: &str = "pastella";
/// The fixed share difficulty of both miners (`<address>.2` logins).
const SHARE_DIFF: u64 = 2;

/// A child process (replica or sentinel), killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(port: u16) -> redis::Connection {
    let started = Instant::now();
    loop {
        match redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap().get_connection() {
            Ok(con) => return con,
            Err(e) if started.elapsed() > Duration::from_secs(30) => panic!("127.0.0.1:{port} unreachable: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A `redis-server` without persistence, replicating `master` if given.
fn redis_node(dir: &Path, port: u16, master: Option<u16>) -> Daemon {
    let mut command = Command::new("redis-server");
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    if let Some(master) = master {
        command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
    }
    let child =
        command.arg("--dir").arg(dir).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("redis-server");
    Daemon(child)
}

fn sentinel(dir: &Path, port: u16, master: u16) -> Daemon {
    // Sentinel rewrites its own config file: one writable file each.
    let conf = dir.join(format!("sentinel-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {MASTER} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 5000\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("redis-sentinel")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-sentinel not installed (scripts/deps.sh --test installs it)");
    Daemon(child)
}

/// What sentinel `port` says about the master: its port, its replicas, the other sentinels.
fn sentinel_view(port: u16) -> Option<(u16, u64, u64)> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?.get_connection().ok()?;
    let addr: Option<(String, u16)> =
        redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(MASTER).query(&mut con).ok()?;
    let info: HashMap<String, String> = redis::cmd("SENTINEL").arg("master").arg(MASTER).query(&mut con).ok()?;
    let num = |k: &str| info.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some((addr?.1, num("num-slaves"), num("num-other-sentinels")))
}

/// What the devnet wallet has sent to `address` (confirmed or in the mempool).
fn wallet_sent(devnet: &pastella_pool::devnet::DevnetHandle, address: &str) -> u64 {
    let r = devnet.received(address);
    r.received + r.pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_under_load_loses_no_share_and_doubles_no_money() {
    failover_under_load(Fault::MasterKilled).await;
}

/// The replica is frozen (SIGSTOP) while the pool keeps writing, then the master is killed and
/// the replica thawed and promoted: it lacks what the master took meanwhile. With
/// `waitReplicas: 1` none of it was acknowledged, so the pool writes it again on the new master.
/// (With `waitReplicas: 0` the same run loses shares: see docs/REDIS-HA.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_to_a_lagging_replica_loses_no_acknowledged_write() {
    failover_under_load(Fault::ReplicaLagging).await;
}

/// How the master is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL, the replica up to date.
    MasterKilled,
    /// SIGKILL after the replica missed the master's last writes (it was frozen).
    ReplicaLagging,
}

/// `redis.waitReplicas` in these tests.
const WAIT_REPLICAS: u32 = 1;

async fn failover_under_load(fault: Fault) {
    let mut master = RedisServer::start();
    let old_master = master.port;
    let dir = tempfile::tempdir().unwrap();
    let replica_port = free_port();
    let replica = redis_node(dir.path(), replica_port, Some(old_master));
    let sentinel_ports = [free_port(), free_port(), free_port()];
    let _sentinels: Vec<Daemon> = sentinel_ports.iter().map(|p| sentinel(dir.path(), *p, old_master)).collect();
    // Ready: every sentinel knows the replica and the two other sentinels (quorum 2).
    for port in sentinel_ports {
        // Sentinels find each other by hello messages every 2 s; a loaded machine can take long.
        let ready = eventually(Duration::from_secs(300), || {
            sentinel_view(port).filter(|&(m, replicas, others)| m == old_master && replicas == 1 && others == 2)
        })
        .await;
        assert!(ready.is_some(), "sentinel {port}: {:?}", sentinel_view(port));
    }

    let devnet = Arc::new(devnet(12).await);
    let port = free_port();
    let sentinels: Vec<String> = sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let patch = json!({
        "redis": {"sentinels": sentinels, "masterName": MASTER, "waitReplicas": WAIT_REPLICAS, "waitTimeoutMs": 1000},
        "blockUnlocker": {"enabled": true, "interval": 1, "depth": 10, "leaseTtl": 2},
        "payments": {"enabled": true, "interval": 1, "minPayment": 100000, "transferFee": 1000, "maxAddresses": 1,
                     "blockedAddressesFile": "/nonexistent/payment_blocked.json"},
        "api": {"enabled": false},
        "logging": {"level": "info"}
    });
    let config_json = pool_config_json(&master, &devnet, &[(port, SHARE_DIFF)], patch);
    let config_path = dir.path().join("pool.json");
    std::fs::write(&config_path, config_json.to_string()).unwrap();
    let (config, _) = Config::from_json_str(&config_json.to_string(), "sentinel test").unwrap();
    let pool = PoolProcess::start(config, &[Module::Stratum, Module::Unlocker, Module::Payments]);

    // Two miners find blocks; the devnet mines only between pool blocks and the miners go on
    // only with the job on the new tip, so no pool block is found on a stale parent.
    let stop = Arc::new(AtomicBool::new(false));
    let found = Arc::new(AtomicU64::new(0));
    let miners = {
        let (stop, devnet, found) = (stop.clone(), devnet.clone(), found.clone());
        tokio::spawn(async move {
            let hasher = SharedHasher::new();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut miners = Vec::new();
            for login in [MINER_A, MINER_B] {
                let mut miner = TestMiner::connect(addr).await;
                miner.login(&format!("{login}.{SHARE_DIFF}"), "rig").await;
                miners.push(miner);
            }
            let mut accepted = [0u64; 2];
            let mut nonce = rand::random::<u32>() >> 4;
            let mut tip = devnet.block_count();
            let mut in_flight = BlocksInFlight::default();
            while !stop.load(Ordering::Relaxed) {
                for (i, miner) in miners.iter_mut().enumerate() {
                    let (reply, n, result) = miner.mine_and_submit(&hasher, 0, nonce).await;
                    nonce = u32::from_le_bytes(n).wrapping_add(1);
                    let job = miner.job.as_ref().unwrap();
                    if reply["result"]["status"] == "OK" {
                        accepted[i] += job.difficulty;
                    }
                    in_flight.note(&devnet, job, &reply, &result);
                }
                // A block answered OK may still be on its way to the daemon (its candidate is
                // written with WAIT first): on the chain before the devnet mines or the miners
                // stop, or the devnet's blocks (or the final `mine(12)`) orphan it.
                let landed = in_flight.landed(&devnet, Duration::from_secs(300)).await;
                assert!(landed, "a block the pool answered OK never reached the daemon: {in_flight:?}");
                if devnet.block_count() != tip {
                    found.fetch_add(devnet.block_count() - tip, Ordering::Relaxed);
                    devnet.mine(3);
                    tip = devnet.block_count();
                    for miner in miners.iter_mut() {
                        while miner.job.as_ref().map(|j| j.height) != Some(tip) {
                            if let Some(job) = miner.pushed.pop_back() {
                                miner.pushed.clear();
                                miner.job = Some(job);
                            } else {
                                miner.next_push(Duration::from_secs(30)).await.expect("a job on the new tip");
                            }
                        }
                    }
                }
            }
            accepted
        })
    };

    // Under load, with blocks found and shares written: SIGKILL the master.
    let mut con = client(old_master);
    let before = eventually(Duration::from_secs(300), || {
        let hashes: u64 = con.hget(format!("pastella:workers:{MINER_A}"), "hashes").unwrap_or(0);
        (found.load(Ordering::Relaxed) >= 2 && hashes > 0).then_some(())
    })
    .await;
    assert!(before.is_some(), "the pool found {} blocks before the kill", found.load(Ordering::Relaxed));
    let signal = |name: &str| {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(replica.0.id().to_string()).status();
    };
    let mut unreplicated = 0;
    if fault == Fault::ReplicaLagging {
        // Shares reach the master that the frozen replica never sees.
        signal("STOP");
        let written = |con: &mut redis::Connection| -> u64 {
            [MINER_A, MINER_B].iter().map(|a| con.hget(format!("pastella:workers:{a}"), "hashes").unwrap_or(0u64)).sum()
        };
        let at_freeze = written(&mut con);
        let grew = eventually(Duration::from_secs(120), || (written(&mut con) > at_freeze).then_some(())).await;
        assert!(grew.is_some(), "no shares written while the replica was frozen");
        unreplicated = written(&mut con) - at_freeze;
    }
    let found_at_kill = found.load(Ordering::Relaxed);
    let killed = Instant::now();
    master.kill();
    if fault == Fault::ReplicaLagging {
        signal("CONT");
    }

    // The sentinels promote the replica.
    let promoted = eventually(Duration::from_secs(120), || {
        (sentinel_ports.iter().filter_map(|p| sentinel_view(*p)).filter(|(m, _, _)| *m == replica_port).count() >= 2)
            .then_some(())
    })
    .await;
    assert!(promoted.is_some(), "no failover: {:?}", sentinel_ports.map(sentinel_view));
    let failover_took = killed.elapsed();
    // The old master comes back empty; the sentinels make it the new master's replica, so
    // `WAIT 1` can be acknowledged again.
    let _old_master_back = redis_node(dir.path(), old_master, None);
    let mut new_master = client(replica_port);
    let rejoined = eventually(Duration::from_secs(120), || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut new_master).ok()?;
        info.contains(&format!("port={old_master},state=online")).then_some(())
    })
    .await;
    assert!(rejoined.is_some(), "the old master did not rejoin as a replica");

    // The pool carries on: two more blocks found and recorded on the new master.
    let carried_on = eventually(Duration::from_secs(300), || {
        let recorded: u64 = new_master.zcard("pastella:blocks:candidates").unwrap_or(0);
        let matured: u64 = new_master.zcard("pastella:blocks:matured").unwrap_or(0);
        (found.load(Ordering::Relaxed) >= found_at_kill + 2 && recorded + matured >= found_at_kill + 2).then_some(())
    })
    .await;
    assert!(carried_on.is_some(), "after the failover the pool found {} blocks", found.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let accepted = miners.await.unwrap();
    let found = found.load(Ordering::Relaxed);

    // Mature every block and let payments settle.
    devnet.mine(12);
    let mut polls = 0u64;
    let settled = eventually(Duration::from_secs(120), || {
        let journal: u64 = new_master.zcard("pastella:payments:journal").unwrap_or(1);
        let candidates: u64 = new_master.zcard("pastella:blocks:candidates").unwrap_or(1);
        // Read after the journal: a batch reserved meanwhile moved `balance` to `pending`
        // (one script), so it shows here.
        let payable = [MINER_A, MINER_B].iter().any(|a| {
            let balance: Option<u64> = new_master.hget(format!("pastella:balances:{a}"), "balance").unwrap_or(None);
            let pending: Option<u64> = new_master.hget(format!("pastella:balances:{a}"), "pending").unwrap_or(None);
            balance.unwrap_or(0) >= 100_000 || pending.unwrap_or(0) > 0
        });
        polls += 1;
        if polls % 5 == 0 {
            devnet.mine(1);
        }
        (journal == 0 && candidates == 0 && !payable).then_some(())
    })
    .await;
    assert!(settled.is_some(), "payments did not settle");
    pool.stop();

    // Shares: every one answered OK is counted once.
    let hashes: Vec<u64> = [MINER_A, MINER_B]
        .iter()
        .map(|login| new_master.hget(format!("pastella:workers:{login}"), "hashes").unwrap())
        .collect();
    let lost: i64 = accepted.iter().zip(&hashes).map(|(a, h)| *a as i64 - *h as i64).sum();
    eprintln!(
        "sentinel failover ({fault:?}, waitReplicas {WAIT_REPLICAS}): shares answered OK (Σ difficulty) {} + {}, in \
         Redis {} + {}, lost {lost}; {unreplicated} written to the master while the replica lagged",
        accepted[0], accepted[1], hashes[0], hashes[1]
    );
    assert_eq!(hashes, accepted, "Σ difficulty of shares answered OK == hashes in Redis, per miner");
    // Blocks: each found block credited exactly once.
    let matured: Vec<String> = new_master.zrange("pastella:blocks:matured", 0, -1).unwrap();
    let mut seen = HashSet::new();
    let mut credited_by_blocks = 0u64;
    for member in &matured {
        let f: Vec<&str> = member.split(':').collect();
        assert!(seen.insert(f[2].to_string()), "block {} resolved twice", f[2]);
        assert_eq!(f.len(), 10, "block {} orphaned: {member}", f[2]);
        let credits: HashMap<String, u64> = new_master.hgetall(format!("pastella:blocks:credits:{}", f[2])).unwrap();
        let credited: u64 = new_master.hget(format!("pastella:blocks:info:{}", f[2]), "credited").unwrap();
        assert_eq!(credits.values().sum::<u64>(), credited);
        credited_by_blocks += credited;
    }
    assert_eq!(matured.len() as u64, found, "every block the pool found is credited once");
    let confirmed: u64 = new_master.hget("pastella:totals", "blocksConfirmed").unwrap();
    assert_eq!(confirmed, found);
    let credited_total: u64 = new_master.hget("pastella:totals", "credited").unwrap();
    assert_eq!(credited_by_blocks, credited_total, "Σ block credits == totals.credited");
    // Payments: the wallet sent exactly what Redis records as paid.
    let mut paid_total = 0;
    for address in [MINER_A, MINER_B] {
        let row: HashMap<String, u64> = new_master.hgetall(format!("pastella:balances:{address}")).unwrap();
        let paid = row.get("paid").copied().unwrap_or(0);
        assert_eq!(wallet_sent(&devnet, address), paid, "{address}: wallet sent == Redis paid");
        assert_eq!(row.get("pending").copied().unwrap_or(0), 0);
        paid_total += paid;
    }
    // The operator's audit, through the sentinels.
    let audit = Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
        .args(["audit", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success() && report.contains("OK: the books balance to the atomic unit"),
        "audit: {report}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    eprintln!(
        "sentinel failover ({fault:?}): blocks found {found} ({found_at_kill} before the kill), credited {}, double \
         credits 0; paid {paid_total} atomic units, double payments 0; failover seen by the sentinels {} ms after SIGKILL",
        matured.len(),
        failover_took.as_millis()
    );
}

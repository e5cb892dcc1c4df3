//! xmr-node-proxy block-template jobs (spec §7.2): a proxy gets the full block blob with the
//! pool's extra nonce written and the offsets of its own nonces, mines several workers through
//! one connection, and every accepted share is verified and credited to its login at the job
//! difficulty; duplicates are per (nonce, poolNonce, workerNonce); a proxy worker's block lands
//! on the chain and is credited after unlock.
//!
//! The proxy here does what xmr-node-proxy does: it writes its pool nonce (big-endian) at
//! `client_pool_offset`, each worker's nonce at `client_nonce_offset`, and builds the worker's
//! hashing blob from that block blob (`Block::parse` + `hashing_blob`, its `convert_blob`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use pastella_pool::chain::difficulty::{hash_difficulty, target_hex4};
use pastella_pool::chain::{Block, Hash};
use pastella_pool::config::Module;
use pastella_pool::node::DaemonClient;
use redis::Commands;
use serde_json::{json, Value};

const PROXY_AGENT: &str = "xmr-node-proxy/0.28.1";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A block-template job as the proxy reads it.
#[derive(Debug, Clone)]
struct ProxyJob {
    id: String,
    blob: Vec<u8>,
    reserved_offset: usize,
    pool_offset: usize,
    worker_offset: usize,
    network_difficulty: u64,
    target_diff: u64,
    height: u64,
    seed: Hash,
    raw: Value,
}

impl ProxyJob {
    fn from_json(v: &Value) -> ProxyJob {
        let offset = |key: &str| v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}")) as usize;
        ProxyJob {
            id: v["job_id"].as_str().unwrap().to_string(),
            blob: hex::decode(v["blocktemplate_blob"].as_str().unwrap()).unwrap(),
            reserved_offset: offset("reserved_offset"),
            pool_offset: offset("client_pool_offset"),
            worker_offset: offset("client_nonce_offset"),
            network_difficulty: v["difficulty"].as_u64().unwrap(),
            target_diff: v["target_diff"].as_u64().unwrap(),
            height: v["height"].as_u64().unwrap(),
            seed: Hash::from_hex(v["seed_hash"].as_str().unwrap()).unwrap(),
            raw: v.clone(),
        }
    }

    /// The block a worker mines: the proxy's pool nonce and the worker's nonce written
    /// big-endian at their offsets.
    fn worker_block(&self, pool_nonce: u32, worker_nonce: u32) -> Vec<u8> {
        let mut blob = self.blob.clone();
        blob[self.pool_offset..self.pool_offset + 4].copy_from_slice(&pool_nonce.to_be_bytes());
        blob[self.worker_offset..self.worker_offset + 4].copy_from_slice(&worker_nonce.to_be_bytes());
        blob
    }

    /// The worker's hashing blob, computed from the block blob as the proxy does.
    fn worker_blob(&self, pool_nonce: u32, worker_nonce: u32) -> Vec<u8> {
        let (block, _) = Block::parse(&self.worker_block(pool_nonce, worker_nonce)).expect("the job's block parses");
        block.hashing_blob()
    }
}

/// One proxy connection: a stratum client that reads block-template jobs.
struct Proxy {
    conn: TestMiner,
    next_id: u64,
    session: String,
    job: ProxyJob,
}

impl Proxy {
    async fn login(port: u16, login: &str) -> Proxy {
        let mut conn = TestMiner::connect(addr(port)).await;
        let line = json!({"id": 1, "jsonrpc": "2.0", "method": "login",
            "params": {"login": login, "pass": "farm1", "agent": PROXY_AGENT}});
        conn.send_line(&line.to_string()).await;
        let reply = read_reply(&mut conn, 1, &mut None).await;
        assert!(reply["error"].is_null(), "login failed: {reply}");
        let session = reply["result"]["id"].as_str().unwrap().to_string();
        let job = ProxyJob::from_json(&reply["result"]["job"]);
        Proxy { conn, next_id: 2, session, job }
    }

    /// Sends a submit with the given proxy fields; returns the reply.
    async fn submit_raw(&mut self, job: &ProxyJob, nonce: [u8; 4], result: &Hash, proxy_fields: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut params =
            json!({"id": self.session, "job_id": job.id, "nonce": hex::encode(nonce), "result": result.to_hex()});
        merge(&mut params, &proxy_fields);
        self.conn
            .send_line(&json!({"id": id, "jsonrpc": "2.0", "method": "submit", "params": params}).to_string())
            .await;
        let mut pushed = None;
        let reply = read_reply(&mut self.conn, id, &mut pushed).await;
        if let Some(job) = pushed {
            self.job = job;
        }
        reply
    }

    async fn submit(&mut self, job: &ProxyJob, pool: u32, worker: u32, nonce: [u8; 4], result: &Hash) -> Value {
        self.submit_raw(job, nonce, result, json!({"poolNonce": pool, "workerNonce": worker})).await
    }
}

/// Reads lines until the reply to `id`; the newest job push read meanwhile goes to `pushed`.
async fn read_reply(conn: &mut TestMiner, id: u64, pushed: &mut Option<ProxyJob>) -> Value {
    loop {
        let line = conn.read_line(Duration::from_secs(60)).await.expect("a reply");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["method"] == "job" {
            *pushed = Some(ProxyJob::from_json(&v["params"]));
            continue;
        }
        assert_eq!(v["id"], id, "reply id");
        return v;
    }
}

fn ok(reply: &Value) -> bool {
    reply["error"].is_null() && reply["result"]["status"] == "OK"
}

fn error(reply: &Value) -> &str {
    reply["error"]["message"].as_str().unwrap_or("")
}

/// Σ of every `scores:prop:*` entry of `address` (the current round and every closed one).
fn booked(con: &mut redis::Connection, address: &str) -> u64 {
    let keys: Vec<String> = con.keys("pastella:scores:prop:*").unwrap();
    keys.iter().map(|k| con.hget::<_, _, Option<u64>>(k, address).unwrap().unwrap_or(0)).sum()
}

/// Searches from `start` for a nonce whose hash meets `min` on every blob of `blobs` and stays
/// below `below` on each (so a share is not also a block and the tip does not move). Blocking.
fn search_all(hasher: &SharedHasher, seed: Hash, blobs: &[Vec<u8>], min: u64, below: u64, start: u32) -> [u8; 4] {
    'nonces: for nonce in start.. {
        let bytes = nonce.to_le_bytes();
        for blob in blobs {
            let d = hash_difficulty(&hasher.hash(seed, blob, bytes));
            if d < min || d >= below {
                continue 'nonces;
            }
        }
        return bytes;
    }
    unreachable!()
}

fn base_patch() -> Value {
    json!({"varDiff": {"enabled": false}, "shareTrust": {"enabled": false}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_mines_several_workers_through_one_connection_and_each_share_is_credited_once() {
    let port = free_port();
    let port_diff = 5;
    let network = 1_000_000;
    let stack = Stack::start(network, &[(port, port_diff)], base_patch(), &[Module::Stratum]).await;
    let mut proxy = Proxy::login(port, MINER_A).await;
    let job = proxy.job.clone();

    // The job: the block blob with the pool's extra nonce written, the proxy's room after it.
    assert!(job.raw.get("blob").is_none(), "a proxy gets the block blob, not a hashing blob: {}", job.raw);
    assert_eq!(job.pool_offset, job.reserved_offset + 8, "{}", job.raw);
    assert_eq!(job.worker_offset, job.reserved_offset + 12, "{}", job.raw);
    assert_eq!((job.network_difficulty, job.target_diff), (network, port_diff));
    assert_eq!(job.raw["target_diff_hex"], target_hex4(port_diff));
    assert_eq!(job.height, stack.devnet.block_count());
    let (block, layout) = Block::parse(&job.blob).expect("blocktemplate_blob is a block");
    assert_eq!(block.coinbase.height, job.height);
    assert_eq!(job.blob[layout.nonce_offset..layout.nonce_offset + 4], [0; 4], "nonce bytes zero");
    let reserved = &job.blob[job.reserved_offset..job.reserved_offset + 16];
    assert_ne!(reserved[..8], [0; 8], "the pool's extra nonce is written: {}", hex::encode(reserved));
    assert_eq!(reserved[8..], [0; 8], "the proxy's nonces are left to it: {}", hex::encode(reserved));

    // Workers 1 and 2 of pool nonce 1 both find the same miner nonce: two distinct shares.
    let (seed, hasher) = (job.seed, stack.hasher.clone());
    let (w1, w2) = (job.worker_blob(1, 1), job.worker_blob(1, 2));
    let blobs = vec![w1.clone(), w2.clone()];
    let nonce =
        tokio::task::spawn_blocking(move || search_all(&hasher, seed, &blobs, port_diff, network, 0)).await.unwrap();
    let r1 = stack.hasher.hash(seed, &w1, nonce);
    let r2 = stack.hasher.hash(seed, &w2, nonce);
    assert_ne!(r1, r2, "different workers hash different blocks");
    let mut expected = 0;
    let reply = proxy.submit(&job, 1, 1, nonce, &r1).await;
    assert!(ok(&reply), "{reply}");
    expected += job.target_diff;
    let reply = proxy.submit(&job, 1, 2, nonce, &r2).await;
    assert!(ok(&reply), "the same nonce from another worker is another share: {reply}");
    expected += job.target_diff;

    // The same (nonce, poolNonce, workerNonce) again: the spec's proxy duplicate.
    let reply = proxy.submit(&job, 1, 1, nonce, &r1).await;
    assert_eq!(error(&reply), "Duplicate share4", "{reply}");

    // More workers, and a second pool nonce (another proxy job), one share each.
    let mut start = u32::from_le_bytes(nonce).wrapping_add(1);
    for (pool, worker) in [(1, 3), (1, 4), (2, 1)] {
        let blob = job.worker_blob(pool, worker);
        let hasher = stack.hasher.clone();
        let search = blob.clone();
        let n = tokio::task::spawn_blocking(move || search_all(&hasher, seed, &[search], port_diff, network, start))
            .await
            .unwrap();
        start = u32::from_le_bytes(n).wrapping_add(1);
        let result = stack.hasher.hash(seed, &blob, n);
        let reply = proxy.submit(&job, pool, worker, n, &result).await;
        assert!(ok(&reply), "pool nonce {pool}, worker {worker}: {reply}");
        expected += job.target_diff;
    }

    // A hash claimed for the wrong worker nonce fails RandomX verification like any bad share.
    let reply = proxy.submit(&job, 1, 9, nonce, &r1).await;
    assert_eq!(error(&reply), "Rejected share: invalid result", "{reply}");

    // Missing or non-integer nonces: the spec's malformed proxy submit.
    for fields in [
        json!({}),
        json!({"poolNonce": 1}),
        json!({"poolNonce": "1", "workerNonce": 5}),
        json!({"poolNonce": 1, "workerNonce": 5.5}),
        json!({"poolNonce": -1, "workerNonce": 5}),
        json!({"poolNonce": 1, "workerNonce": 4294967296u64}),
    ] {
        let reply = proxy.submit_raw(&job, [7, 0, 0, 0], &r1, fields.clone()).await;
        assert_eq!(error(&reply), "Duplicate share3", "{fields}: {reply}");
    }

    // Exactly the job difficulty per accepted share, on the proxy's login.
    let mut con = stack.redis.conn();
    let credited = eventually(Duration::from_secs(60), || {
        let b = booked(&mut con, MINER_A);
        (b >= expected).then_some(b)
    })
    .await;
    assert_eq!(credited, Some(expected), "five accepted shares at difficulty {port_diff}");
    assert_eq!(booked(&mut con, MINER_A), expected, "nothing booked twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_from_a_proxy_worker_lands_on_the_chain_and_is_credited_after_unlock() {
    let port = free_port();
    let network = 40;
    let patch = json!({
        "varDiff": {"enabled": false},
        "shareTrust": {"enabled": false},
        "blockUnlocker": {"enabled": true, "interval": 1, "depth": 10, "leaseTtl": 2}
    });
    let stack = Stack::start(network, &[(port, 5)], patch, &[Module::Stratum, Module::Unlocker]).await;
    let mut proxy = Proxy::login(port, MINER_A).await;
    let job = proxy.job.clone();
    let start = stack.devnet.block_count();
    assert_eq!(job.height, start);

    // Worker 7 of pool nonce 3 finds a block.
    let (pool, worker) = (3, 7);
    let blob = job.worker_blob(pool, worker);
    let (hasher, seed, search) = (stack.hasher.clone(), job.seed, blob.clone());
    let (nonce, result) = tokio::task::spawn_blocking(move || hasher.search(seed, &search, network, 0)).await.unwrap();
    let reply = proxy.submit(&job, pool, worker, nonce, &result).await;
    assert!(ok(&reply), "{reply}");

    // The block on the chain is the one the worker hashed.
    let landed = eventually(Duration::from_secs(120), || (stack.devnet.block_count() > start).then_some(())).await;
    assert!(landed.is_some(), "the proxy worker's block never reached the chain");
    let mut hashed = blob.clone();
    hashed[39..43].copy_from_slice(&nonce);
    let expected_id = pastella_pool::chain::block::block_id(&hashed);
    let daemon = DaemonClient::new("127.0.0.1", stack.devnet.daemon_addr.port(), Duration::from_secs(5));
    let header = daemon.get_block_header_by_height(start).await.unwrap();
    assert_eq!(header.hash, expected_id, "the chain holds the proxy worker's block");
    let mut submitted = job.worker_block(pool, worker);
    submitted[39..43].copy_from_slice(&nonce);
    let (block, _) = Block::parse(&submitted).unwrap();
    assert_eq!(block.id(), expected_id);

    // Credited to the proxy's login once the block is deep enough.
    let mut con = stack.redis.conn();
    let hash = expected_id.to_hex();
    let mut confirmed = false;
    for _ in 0..600 {
        let status: Option<String> = con.hget(format!("pastella:blocks:info:{hash}"), "status").unwrap();
        if status.as_deref() == Some("confirmed") {
            confirmed = true;
            break;
        }
        stack.devnet.mine(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(confirmed, "the proxy's block was never confirmed");
    let reward: u64 = con.hget(format!("pastella:blocks:info:{hash}"), "credited").unwrap();
    assert!(reward > 0);
    let credited: u64 =
        con.hget::<_, _, Option<u64>>(format!("pastella:balances:{MINER_A}"), "credited").unwrap().unwrap_or(0);
    assert_eq!(credited, reward, "the proxy's login is the only miner of the window");
}

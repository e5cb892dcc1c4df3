//! Payouts a miner can check (issue 13 §4), end to end: a pool with every module mines on the
//! devnet with several miners and workers (prop and solo), the unlocker confirms two blocks and
//! finds one orphaned, then
//! - `/get_block_payouts` answers each block from what was stored at credit time: the window
//!   per address (with the oldest record counted in part), N, the reward, fee, finder reward,
//!   each credit and the dust, adding up to the reward exactly;
//! - `pastella-pool verify-block` recomputes the split from the stored window and terms and
//!   exits 0, then 1 naming every difference once a credit record is tampered with;
//! - the window and credits carry the retention TTL, and an expired record is said so;
//! - the status page's block detail view renders the same numbers in headless chromium.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use pastella_pool::chain::difficulty::hash_difficulty;
use pastella_pool::chain::Address;
use pastella_pool::config::Module;
use pastella_pool::devnet::DevnetHandle;
use pastella_pool::store::Store;
use redis::Commands;
use serde_json::{json, Value};

const MINER_B: &str = "PAS1WPrszX47No6fAtDt56aTj9Vjr9dZq58qaiz9dvZB5dmiXkFbD1";
/// Network difficulty; with `windowFactor` 0.5 the window is N = 31 units, odd, so the
/// difficulty-2 share records never fill it exactly: the oldest one counted is always partial.
const DEVNET_DIFFICULTY: u64 = 62;
const N: u64 = 31;
const RETENTION_DAYS: u64 = 30;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A third valid address (a real curve point), for the solo miner.
fn miner_c() -> String {
    let point = curve25519_dalek::constants::ED25519_BASEPOINT_POINT * curve25519_dalek::Scalar::from(977u64);
    Address::from_key(point.compress().to_bytes()).encode()
}

fn patch(api_port: u16) -> Value {
    json!({
        "blockUnlocker": {"enabled": true, "interval": 1, "depth": 10, "leaseTtl": 2, "poolFee": 1,
                          "finderReward": 1, "soloFee": 1.5, "payoutRecordDays": RETENTION_DAYS},
        "pplns": {"windowFactor": 0.5},
        "varDiff": {"minDiff": 2, "maxDiff": 2},
        "api": {"port": api_port, "updateInterval": 1},
    })
}

async fn get(client: &reqwest::Client, base: &str, path: &str) -> Value {
    let response = client.get(format!("{base}{path}")).send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.json().await.unwrap()
}

/// Reads the job pushes waiting on the socket, so the miner works on the newest job.
async fn refresh(miner: &mut TestMiner) {
    let session = miner.session.clone();
    miner.call("keepalived", json!({"id": session})).await;
}

/// Waits until the miner's job is for the height the devnet is at.
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

/// `count` shares that meet the job's difficulty but not the network's (never a block), so the
/// blocks of this test are exactly the ones it finds on purpose.
async fn shares(miner: &mut TestMiner, devnet: &DevnetHandle, hasher: &SharedHasher, count: usize, nonce: &mut u32) {
    sync_job(miner, devnet).await;
    for _ in 0..count {
        let job = miner.job.clone().expect("a job");
        let (h, blob, start) = (hasher.clone(), job.blob.clone(), *nonce);
        let (found, hash) = tokio::task::spawn_blocking(move || {
            let mut n = start;
            loop {
                let bytes = n.to_le_bytes();
                let hash = h.hash(job.seed, &blob, bytes);
                let d = hash_difficulty(&hash);
                if d >= job.difficulty && d < DEVNET_DIFFICULTY {
                    return (bytes, hash);
                }
                n = n.wrapping_add(1);
            }
        })
        .await
        .unwrap();
        *nonce = u32::from_le_bytes(found).wrapping_add(1);
        let reply = miner.submit(&miner.job.clone().unwrap(), found, &hash).await;
        assert_eq!(reply["result"]["status"], "OK", "{reply}");
    }
}

/// Mines a block on the current template; returns once the daemon has it.
async fn find_block(miner: &mut TestMiner, devnet: &DevnetHandle, hasher: &SharedHasher, nonce: &mut u32) {
    for _ in 0..4 {
        sync_job(miner, devnet).await;
        let before = devnet.block_count();
        let (reply, n, _) = miner.mine_and_submit(hasher, DEVNET_DIFFICULTY, *nonce).await;
        *nonce = u32::from_le_bytes(n).wrapping_add(1);
        if reply["error"].is_null() {
            let grown = eventually(Duration::from_secs(30), || (devnet.block_count() > before).then_some(())).await;
            assert!(grown.is_some(), "the daemon took the block");
            return;
        }
        assert!(reply["error"]["message"].as_str().is_some_and(|m| m.starts_with("Stale")), "{reply}");
        miner.next_push(Duration::from_secs(5)).await;
    }
    panic!("no block found in 4 tries");
}

/// Waits for the `count`-th candidate and returns the newest one's hash.
async fn newest_candidate(con: &mut redis::Connection, count: u64) -> String {
    let member = eventually(Duration::from_secs(30), || {
        let members: Vec<String> = con.zrange("pastella:blocks:candidates", -1, -1).ok()?;
        let n: u64 = con.zcard("pastella:blocks:candidates").ok()?;
        (n >= count).then(|| members.into_iter().next()).flatten()
    })
    .await
    .expect("the candidate is recorded");
    member.split(':').nth(2).unwrap().to_string()
}

/// The oldest record counted in part: address, its difficulty, the part counted.
type Partial = (String, u64, u64);

/// The window computed here from the raw `pplns:window` list (newest first, `<difficulty>:<address>`):
/// the newest N units per address, and the oldest record counted (address, record, counted)
/// when only part of it fits.
fn window_of(list: &[String]) -> (BTreeMap<String, u64>, Option<Partial>) {
    let mut window = BTreeMap::new();
    let mut left = N;
    let mut partial = None;
    for record in list {
        if left == 0 {
            break;
        }
        let (difficulty, address) = record.split_once(':').unwrap();
        let difficulty: u64 = difficulty.parse().unwrap();
        let take = difficulty.min(left);
        if take < difficulty {
            partial = Some((address.to_string(), difficulty, take));
        }
        *window.entry(address.to_string()).or_insert(0) += take;
        left -= take;
    }
    (window, partial)
}

fn verify_block(config: &std::path::Path, block: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
        .args(["verify-block", block, "--config"])
        .arg(config)
        .output()
        .expect("the pool binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn amounts(list: &Value, field: &str) -> BTreeMap<String, u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["address"].as_str().unwrap().to_string(), e[field].as_u64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_block_can_be_opened_and_recomputed_to_the_atomic_unit() {
    let redis = RedisServer::start();
    let devnet = devnet(DEVNET_DIFFICULTY).await;
    let port = free_port();
    let config_json = pool_config_json(&redis, &devnet, &[(port, 2)], patch(free_port()));
    let config_path = temp_path("transparency-config.json");
    std::fs::write(&config_path, config_json.to_string()).unwrap();
    let config = pastella_pool::config::Config::from_json_str(&config_json.to_string(), "test config").unwrap().0;
    let pool = PoolProcess::start(config, &Module::all());
    let base = format!("http://{}", pool.http_addr.expect("the API listens"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
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
    let mut con = redis.conn();
    let mut nonce = rand::random::<u32>() >> 4;

    // 34 prop units (B 12, A 20 over two workers) + the block share: more than N = 31.
    shares(&mut b, &devnet, &hasher, 6, &mut nonce).await;
    shares(&mut a1, &devnet, &hasher, 5, &mut nonce).await;
    shares(&mut a2, &devnet, &hasher, 5, &mut nonce).await;
    shares(&mut c, &devnet, &hasher, 3, &mut nonce).await;
    let flushed = eventually(Duration::from_secs(30), || {
        let total: u64 = con.get("pastella:pplns:total").ok()?;
        (total >= 32).then_some(total)
    })
    .await;
    assert_eq!(flushed, Some(32), "the prop shares are in the PPLNS window list");
    find_block(&mut a1, &devnet, &hasher, &mut nonce).await;
    let prop_hash = newest_candidate(&mut con, 1).await;
    // Nothing is mined until it is read: this is the list the snapshot was taken from.
    let list: Vec<String> = con.lrange("pastella:pplns:window", 0, -1).unwrap();
    let (expected_window, expected_partial) = window_of(&list);
    let (partial_address, record, counted) = expected_partial.expect("the oldest record counted is partial");
    assert_eq!(expected_window.values().sum::<u64>(), N);
    assert_eq!(expected_window.len(), 2, "A and B in the window: {list:?}");

    find_block(&mut c, &devnet, &hasher, &mut nonce).await;
    let solo_hash = newest_candidate(&mut con, 2).await;
    shares(&mut b, &devnet, &hasher, 2, &mut nonce).await;
    find_block(&mut b, &devnet, &hasher, &mut nonce).await;
    let orphan_hash = newest_candidate(&mut con, 3).await;
    devnet.reorg(1).expect("reorg");
    devnet.mine(11);
    let resolved = eventually(Duration::from_secs(90), || {
        let confirmed: u64 = con.hget("pastella:totals", "blocksConfirmed").ok()?;
        let orphaned: u64 = con.hget("pastella:totals", "blocksOrphaned").ok()?;
        (confirmed == 2 && orphaned == 1).then_some(())
    })
    .await;
    assert!(resolved.is_some(), "the unlocker confirmed two blocks and orphaned one");

    // The prop block, by height and by hash: the same answer, from the stored records.
    let by_hash = get(&client, &base, &format!("/get_block_payouts?hash={prop_hash}")).await;
    let height = by_hash["height"].as_u64().unwrap();
    assert_eq!(get(&client, &base, &format!("/api/get_block_payouts?height={height}")).await, by_hash);
    let p = &by_hash;
    assert_eq!((p["status"].as_str(), p["type"].as_str()), (Some("confirmed"), Some("prop")), "{p:#}");
    assert_eq!(p["finder"], MINER_A);
    assert_eq!((p["windowSize"].as_u64(), p["windowTotal"].as_u64()), (Some(N), Some(N)));
    assert_eq!(amounts(&p["window"], "difficulty"), expected_window, "{p:#}");
    assert_eq!(p["partial"], json!({"address": partial_address, "recordDifficulty": record, "counted": counted}));
    let marked: Vec<&Value> = p["window"].as_array().unwrap().iter().filter(|w| !w["partial"].is_null()).collect();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0]["address"], partial_address.as_str());
    let reward = p["reward"].as_u64().unwrap();
    let info: BTreeMap<String, String> = con.hgetall(format!("pastella:blocks:info:{prop_hash}")).unwrap();
    assert_eq!(reward, info["reward"].parse::<u64>().unwrap(), "the pool's own coinbase output");
    assert_eq!((p["feeBps"].as_u64(), p["finderRewardBps"].as_u64()), (Some(100), Some(100)));
    assert_eq!(p["poolFee"].as_u64(), Some(reward / 100));
    assert_eq!(p["finderReward"].as_u64(), Some(reward / 100));
    let credits = amounts(&p["credits"], "amount");
    let stored: BTreeMap<String, u64> = con.hgetall(format!("pastella:blocks:credits:{prop_hash}")).unwrap();
    assert_eq!(credits, stored, "each credit as credited");
    assert_eq!(credits.len(), 2);
    let (fee, finder, dust) =
        (p["poolFee"].as_u64().unwrap(), p["finderReward"].as_u64().unwrap(), p["dust"].as_u64().unwrap());
    let window_shares: u64 = amounts(&p["credits"], "windowShare").values().sum();
    assert_eq!(window_shares + finder + fee + dust, reward, "credits + fee + finder + dust = reward");
    assert_eq!(credits.values().sum::<u64>() + fee + dust, reward);
    assert_eq!(p["credited"].as_u64(), Some(credits.values().sum::<u64>()));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expires_at = p["expiresAt"].as_u64().expect("expiresAt, unix s");
    assert!(expires_at > now && expires_at <= now + RETENTION_DAYS * 86_400, "{expires_at}");
    // The split by hand: floor(miners' part × units / N), the finder reward on top of A's.
    let miners = reward - fee - finder;
    for (address, units) in &expected_window {
        let extra = if address == MINER_A { finder } else { 0 };
        assert_eq!(credits[address], miners * units / N + extra, "{address}");
    }

    // Solo: the finder's credit alone, the solo fee kept.
    let solo = get(&client, &base, &format!("/get_block_payouts?hash={solo_hash}")).await;
    assert_eq!((solo["status"].as_str(), solo["type"].as_str()), (Some("confirmed"), Some("solo")), "{solo:#}");
    let solo_reward = solo["reward"].as_u64().unwrap();
    assert_eq!(solo["feeBps"].as_u64(), Some(150));
    assert_eq!(solo["poolFee"].as_u64(), Some(solo_reward * 150 / 10_000));
    assert_eq!(
        amounts(&solo["credits"], "amount"),
        BTreeMap::from([(c_address.clone(), solo_reward - solo_reward * 150 / 10_000)])
    );
    assert_eq!(solo["dust"], 0);

    // Orphaned: nothing credited, and it says so.
    let orphan = get(&client, &base, &format!("/get_block_payouts?hash={orphan_hash}")).await;
    assert_eq!(orphan["status"], "orphaned");
    assert_eq!(orphan["credits"], json!([]));
    assert_eq!(orphan["credited"], 0);
    assert!(orphan["note"].as_str().unwrap().contains("nothing was credited"), "{orphan:#}");
    assert_eq!(get(&client, &base, "/get_block_payouts?height=999999").await, json!({"error": "Not found"}));
    assert!(get(&client, &base, "/get_block_payouts").await["error"].as_str().unwrap().starts_with("Parameters"));

    // The miner page: my credit in each block.
    let miner = get(&client, &base, &format!("/stats_address?address={MINER_B}")).await;
    let mine = miner["blocks"].as_array().unwrap().iter().find(|b| b["hash"] == prop_hash.as_str()).expect("B's block");
    assert_eq!(mine["minerReward"].as_u64(), Some(credits[MINER_B]));

    // Bounded: the window and credits expire after payoutRecordDays.
    for key in [format!("pastella:blocks:window:{prop_hash}"), format!("pastella:blocks:credits:{prop_hash}")] {
        let ttl: i64 = con.ttl(&key).unwrap();
        assert!(ttl > 0 && ttl as u64 <= RETENTION_DAYS * 86_400, "{key}: TTL {ttl}");
    }
    let ttl: i64 = con.ttl(format!("pastella:blocks:window:{orphan_hash}")).unwrap();
    assert!(ttl > 0 && ttl as u64 <= RETENTION_DAYS * 86_400, "orphan window TTL {ttl}");

    // The CLI recomputes every confirmed block exactly, by height or by hash.
    let (code, out) = verify_block(&config_path, &height.to_string());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: the split recomputed"), "{out}");
    let (code, out) = verify_block(&config_path, &solo_hash);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify_block(&config_path, &orphan_hash);
    assert_eq!(code, 2, "an orphaned block has nothing to verify: {out}");
    assert!(out.contains("orphaned"), "{out}");

    // Tampered: one credit record raised by one atomic unit, the dust zeroed.
    let _: i64 = con.hincr(format!("pastella:blocks:credits:{prop_hash}"), MINER_B, 1).unwrap();
    let _: () = con.hset(format!("pastella:blocks:info:{prop_hash}"), "dust", 0).unwrap();
    let (code, out) = verify_block(&config_path, &prop_hash);
    assert_eq!(code, 1, "{out}");
    let want_b = credits[MINER_B];
    assert!(out.contains(&format!("credit of {MINER_B}: recomputed {want_b}, credited {}", want_b + 1)), "{out}");
    assert!(out.contains(&format!("dust: recomputed {dust}, stored 0")) || dust == 0, "{out}");
    assert!(out.contains("total credited (sum of credits)"), "{out}");
    let _: i64 = con.hincr(format!("pastella:blocks:credits:{prop_hash}"), MINER_B, -1).unwrap();
    let _: () = con.hset(format!("pastella:blocks:info:{prop_hash}"), "dust", dust).unwrap();
    assert_eq!(verify_block(&config_path, &prop_hash).0, 0);

    // The browser: the block detail view renders the stored numbers.
    if std::path::Path::new("/usr/bin/chromium").exists() {
        let dom = chromium_dom(&format!("{base}/#block={prop_hash}"));
        assert!(dom.contains(&format!("data-block=\"{prop_hash}\"")), "the detail view loaded: {dom}");
        for address in expected_window.keys() {
            assert!(dom.contains(&format!("data-address=\"{address}\"")), "{address} listed");
        }
        assert!(dom.contains(&format!("(partial: {counted} of {record})")), "partial record shown");
        assert!(dom.contains("pastella-pool verify-block"), "how to recompute it");
        // The miner page: my credit in each block.
        let dom = chromium_dom(&format!("{base}/#miner={MINER_B}"));
        assert!(dom.contains("data-miner=\"loaded\""), "the miner page loaded: {dom}");
        let credit = credits[MINER_B];
        let shown = format!("{}.{:08} PAS", credit / 100_000_000, credit % 100_000_000);
        let table = &dom[dom.find("id=\"miner-blocks\"").expect("the miner's blocks table")..];
        let table = &table[..table.find("</table>").unwrap()];
        let row = &table[table.find(&format!("data-hash=\"{prop_hash}\"")).expect("the block in the miner's list")..];
        let row = &row[..row.find("</tr>").unwrap()];
        assert!(row.contains(&shown), "B's credit {shown} shown: {row}");
    } else {
        eprintln!("\n!!!!!!!! SKIPPED: /usr/bin/chromium is not installed: the block detail view was NOT rendered in a browser !!!!!!!!\n");
    }

    // Expiry (the clock driven here: what Redis does when the TTL runs out): the answer says
    // so, the CLI cannot check it, and the books still balance.
    let past = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 1;
    let _: () = con.hset(format!("pastella:blocks:info:{prop_hash}"), "payoutExpiresAt", past).unwrap();
    let _: () = con
        .del(&[format!("pastella:blocks:window:{prop_hash}"), format!("pastella:blocks:credits:{prop_hash}")])
        .unwrap();
    let expired = get(&client, &base, &format!("/get_block_payouts?hash={prop_hash}")).await;
    assert_eq!(expired["expired"], true, "{expired:#}");
    assert!(expired["note"].as_str().unwrap().contains("expired"));
    let (code, out) = verify_block(&config_path, &prop_hash);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("expired"), "{out}");
    let store = Store::connect(&format!("redis://127.0.0.1:{}/0", redis.port), "pastella", Duration::from_secs(5))
        .await
        .unwrap();
    let audit = store.audit().await.unwrap();
    assert_eq!(audit.problems(), Vec::<String>::new(), "an expired payout record is not a broken book");

    pool.stop();
    let _ = std::fs::remove_file(&config_path);
}

/// Loads `url` in headless chromium and returns the DOM once the page's scripts settled.
fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

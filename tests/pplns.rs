//! The PPLNS window proven on the real money path: shares go through the real ShareLedger
//! actor into a real Redis, block candidates are recorded by the ledger, and the real unlocker
//! credits them against the devnet's chain. Every per-address credit is checked against an
//! independent computation written here: a plain loop over the raw shares the test sent,
//! newest first, taking N difficulty units, then the split of docs/PAYOUTS.md.
//!
//! Each share is drained into Redis on its own (one ledger flush, one window record), so the
//! order of the raw shares is the order of the window records.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwapOption;
use common::*;
use pastella_pool::accounting::ledger::{CandidateShare, Drain, LedgerConfig, RecordShare, ShareLedger};
use pastella_pool::accounting::unlocker::{unlock_once, UnlockerSettings};
use pastella_pool::chain::{Hash, Template};
use pastella_pool::devnet::DevnetHandle;
use pastella_pool::jobs::JobTemplate;
use pastella_pool::node::DaemonClient;
use pastella_pool::store::{PartialRecord, Store};
use redis::Commands;

const MINER_B: &str = "PAS1WPrszX47No6fAtDt56aTj9Vjr9dZq58qaiz9dvZB5dmiXkFbD1";
/// A third valid address (a real curve point).
fn miner_c() -> &'static str {
    static ADDRESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ADDRESS.get_or_init(|| {
        let point = curve25519_dalek::constants::ED25519_BASEPOINT_POINT * curve25519_dalek::Scalar::from(977u64);
        pastella_pool::chain::Address::from_key(point.compress().to_bytes()).encode()
    })
}

const WINDOW_FACTOR: f64 = 2.0;
const REWARD: u64 = 400_000_000;
const POOL_FEE_BPS: u32 = 100;
const FINDER_BPS: u32 = 100;
const SOLO_FEE_BPS: u32 = 150;
const DEPTH: u64 = 2;

/// One share exactly as the test sent it.
#[derive(Clone)]
struct RawShare {
    login: &'static str,
    solo: bool,
    difficulty: u64,
}

/// A stratum node's share ledger with a network view the test sets.
struct Node {
    ledger: Addr<ShareLedger>,
    current: Arc<ArcSwapOption<JobTemplate>>,
}

/// Redis, the devnet and the unlocker's tools, plus the log of every share sent.
struct Bench {
    redis: RedisServer,
    devnet: DevnetHandle,
    store: Store,
    daemon: DaemonClient,
    base: Template,
    token: String,
    shares: Vec<RawShare>,
}

impl Bench {
    async fn start() -> Bench {
        let redis = RedisServer::start();
        let devnet = devnet(12).await;
        let store = Store::connect(&format!("redis://127.0.0.1:{}/0", redis.port), "pastella", Duration::from_secs(5))
            .await
            .unwrap();
        let addr = devnet.daemon_addr;
        let daemon = DaemonClient::new(&addr.ip().to_string(), addr.port(), Duration::from_secs(10));
        let base = daemon.get_block_template(8, POOL_ADDRESS).await.unwrap().parse(8).unwrap();
        let token = store.acquire_lease("pplns-test", Duration::from_secs(600)).await.unwrap().expect("the lease");
        Bench { redis, devnet, store, daemon, base, token, shares: Vec::new() }
    }

    fn node(&self, instance: &str) -> Node {
        let current = Arc::new(ArcSwapOption::empty());
        let config = LedgerConfig {
            instance: instance.to_string(),
            window_factor: WINDOW_FACTOR,
            // Only the test's drains write: one flush per drain.
            flush_every: Duration::from_secs(3600),
        };
        let ledger = ShareLedger::new(self.store.clone(), config, current.clone()).start();
        Node { ledger, current }
    }

    /// What `node`'s daemon says: its template's height and network difficulty.
    fn network(&self, node: &Node, height: u64, difficulty: u64) {
        let mut t = self.base.clone();
        t.height = height;
        t.difficulty = difficulty;
        node.current.store(Some(Arc::new(JobTemplate::new(t, height, REWARD, [0; 4]))));
    }

    /// Sends shares of one login (one per worker) and drains them: one window record.
    async fn shares(&mut self, node: &Node, login: &'static str, solo: bool, workers: &[(&str, u64)]) {
        for (worker, difficulty) in workers {
            node.ledger.do_send(RecordShare::share(login.into(), (*worker).into(), solo, *difficulty, None));
            self.shares.push(RawShare { login, solo, difficulty: *difficulty });
        }
        assert!(node.ledger.send(Drain(Duration::from_secs(30))).await.unwrap(), "shares written");
    }

    /// Mines a devnet block and has `finder` find it with a share of `share_difficulty` at
    /// `network_difficulty`; `orphan` records another hash than the chain's at that height.
    /// Returns the recorded hash.
    async fn block(
        &mut self,
        node: &Node,
        finder: &'static str,
        solo: bool,
        share_difficulty: u64,
        network_difficulty: u64,
        orphan: bool,
    ) -> String {
        let mined = self.devnet.mine(1);
        let height = self.devnet.block_count() - 1;
        let hash = if orphan { Hash([0x5a; 32]) } else { mined[0] };
        self.network(node, height, network_difficulty);
        let candidate = CandidateShare { hash, height, network_difficulty, reward: REWARD, found_ms: 1 };
        node.ledger.do_send(RecordShare::share(
            finder.into(),
            "finder".into(),
            solo,
            share_difficulty,
            Some(Box::new(candidate)),
        ));
        self.shares.push(RawShare { login: finder, solo, difficulty: share_difficulty });
        assert!(node.ledger.send(Drain(Duration::from_secs(30))).await.unwrap(), "block recorded");
        hash.to_hex()
    }

    /// Buries every candidate `DEPTH` deep and runs the unlocker once.
    async fn unlock(&self) {
        self.devnet.mine(DEPTH + 1);
        let settings = UnlockerSettings {
            interval: Duration::from_secs(1),
            depth: DEPTH,
            pool_fee_bps: POOL_FEE_BPS,
            finder_reward_bps: FINDER_BPS,
            solo_fee_bps: SOLO_FEE_BPS,
            payout_keep: Duration::from_secs(90 * 86_400),
        };
        let report = unlock_once(&self.store, &self.daemon, &self.token, &settings).await.unwrap();
        assert_eq!(report.pending, 0, "every candidate resolved: {report:?}");
        let audit = self.store.audit().await.unwrap();
        assert!(audit.broken.is_empty(), "money invariant: {audit:?}");
    }

    fn credits(&self, hash: &str) -> BTreeMap<String, u64> {
        let mut con = self.redis.conn();
        con.hgetall(format!("pastella:blocks:credits:{hash}")).unwrap()
    }

    fn status(&self, hash: &str) -> String {
        let mut con = self.redis.conn();
        con.hget(format!("pastella:blocks:info:{hash}"), "status").unwrap()
    }

    fn window_total(&self, hash: &str) -> u64 {
        let mut con = self.redis.conn();
        con.hget(format!("pastella:blocks:info:{hash}"), "windowTotal").unwrap()
    }
}

/// The newest `n` difficulty units of pooled shares among the first `sent` raw shares, per
/// address; the oldest share counted partially so the window is exactly `n` when possible.
fn expected_window(shares: &[RawShare], sent: usize, n: u64) -> BTreeMap<String, u64> {
    let mut window = BTreeMap::new();
    let mut left = n;
    for share in shares[..sent].iter().rev() {
        if left == 0 {
            break;
        }
        if share.solo {
            continue;
        }
        let take = share.difficulty.min(left);
        *window.entry(share.login.to_string()).or_insert(0) += take;
        left -= take;
    }
    window
}

/// docs/PAYOUTS.md: fee and finder reward in basis points, rounded down; the rest split by
/// window units, each credit rounded down; the finder reward added to the finder.
fn expected_pplns(window: &BTreeMap<String, u64>, finder: &str) -> BTreeMap<String, u64> {
    let fee = REWARD * POOL_FEE_BPS as u64 / 10_000;
    let finder_reward = REWARD * FINDER_BPS as u64 / 10_000;
    let miners = REWARD - fee - finder_reward;
    let total: u64 = window.values().sum();
    let mut credits = BTreeMap::new();
    for (address, units) in window {
        let credit = (miners as u128 * *units as u128 / total as u128) as u64;
        if credit > 0 {
            credits.insert(address.clone(), credit);
        }
    }
    *credits.entry(finder.to_string()).or_insert(0) += finder_reward;
    credits
}

fn window_size(network_difficulty: u64) -> u64 {
    (WINDOW_FACTOR * network_difficulty as f64) as u64
}

#[actix_rt::test]
async fn several_miners_with_several_workers_and_the_oldest_record_counted_partially() {
    let mut bench = Bench::start().await;
    let node = bench.node("aa000001");
    let height = bench.devnet.block_count();
    bench.network(&node, height, 50);
    bench.shares(&node, MINER_A, false, &[("rig1", 30), ("rig2", 7)]).await;
    bench.shares(&node, MINER_B, false, &[("x", 25)]).await;
    bench.shares(&node, MINER_A, false, &[("rig2", 20)]).await;
    bench.shares(&node, miner_c(), false, &[("y", 22), ("z", 18)]).await;
    bench.shares(&node, MINER_B, false, &[("w", 15)]).await;
    let hash = bench.block(&node, MINER_B, false, 10, 50, false).await;
    let sent = bench.shares.len();
    bench.unlock().await;

    let n = window_size(50);
    let window = expected_window(&bench.shares, sent, n);
    assert_eq!(window.values().sum::<u64>(), n, "enough shares: the window is exactly N");
    assert!(window[MINER_B] < 25 + 15 + 10, "B's oldest share counts partially: {window:?}");
    assert_eq!(bench.window_total(&hash), n);
    assert_eq!(bench.status(&hash), "confirmed");
    assert_eq!(bench.credits(&hash), expected_pplns(&window, MINER_B));
    // The stored record says which record was cut: newest first B 10, B 15, C 40, A 20 make
    // 85 units, so 15 of B's 25 fit; and the split recomputed from it matches the credits.
    let payout = bench.store.block_payout(&hash).await.unwrap().expect("the payout record");
    let partial = PartialRecord { address: MINER_B.to_string(), record: 25, counted: 15 };
    assert_eq!(payout.partial, Some(partial));
    assert_eq!(payout.window, window);
    assert_eq!(pastella_pool::accounting::verify::differences(&payout), Ok(vec![]));
}

#[actix_rt::test]
async fn a_window_longer_than_the_shares_available_pays_every_share() {
    let mut bench = Bench::start().await;
    let node = bench.node("aa000001");
    let height = bench.devnet.block_count();
    bench.network(&node, height, 1000);
    bench.shares(&node, MINER_A, false, &[("rig1", 40)]).await;
    bench.shares(&node, MINER_B, false, &[("x", 35)]).await;
    let hash = bench.block(&node, miner_c(), false, 25, 1000, false).await;
    let sent = bench.shares.len();
    bench.unlock().await;

    let window = expected_window(&bench.shares, sent, window_size(1000));
    assert_eq!(window.values().sum::<u64>(), 100, "every share the pool has");
    assert_eq!(bench.window_total(&hash), 100);
    assert_eq!(bench.credits(&hash), expected_pplns(&window, miner_c()));
}

#[actix_rt::test]
async fn an_orphaned_blocks_shares_count_in_the_next_blocks_window() {
    let mut bench = Bench::start().await;
    let node = bench.node("aa000001");
    let height = bench.devnet.block_count();
    bench.network(&node, height, 40);
    bench.shares(&node, MINER_A, false, &[("rig1", 30)]).await;
    bench.shares(&node, MINER_B, false, &[("x", 20)]).await;
    let orphan = bench.block(&node, MINER_A, false, 5, 40, true).await;
    bench.shares(&node, miner_c(), false, &[("y", 10)]).await;
    let hash = bench.block(&node, miner_c(), false, 5, 40, false).await;
    let sent = bench.shares.len();
    bench.unlock().await;

    assert_eq!(bench.status(&orphan), "orphaned");
    assert!(bench.credits(&orphan).is_empty(), "an orphan credits nobody");
    let window = expected_window(&bench.shares, sent, window_size(40));
    assert!(window.contains_key(MINER_B), "shares before the orphan still count: {window:?}");
    assert_eq!(bench.window_total(&hash), window.values().sum::<u64>());
    assert_eq!(bench.credits(&hash), expected_pplns(&window, miner_c()));
}

#[actix_rt::test]
async fn solo_and_prop_blocks_interleaved_keep_their_own_shares() {
    let mut bench = Bench::start().await;
    let node = bench.node("aa000001");
    let height = bench.devnet.block_count();
    bench.network(&node, height, 30);
    bench.shares(&node, MINER_A, false, &[("rig1", 20)]).await;
    bench.shares(&node, miner_c(), true, &[("solo", 500)]).await;
    bench.shares(&node, MINER_B, false, &[("x", 25)]).await;
    let prop1 = bench.block(&node, MINER_A, false, 5, 30, false).await;
    let prop1_sent = bench.shares.len();
    bench.shares(&node, miner_c(), true, &[("solo", 300)]).await;
    let solo = bench.block(&node, miner_c(), true, 40, 30, false).await;
    bench.shares(&node, MINER_B, false, &[("x", 10)]).await;
    let prop2 = bench.block(&node, MINER_B, false, 5, 30, false).await;
    let prop2_sent = bench.shares.len();
    bench.unlock().await;

    let n = window_size(30);
    let w1 = expected_window(&bench.shares, prop1_sent, n);
    assert!(!w1.contains_key(miner_c()), "solo shares never enter the PPLNS window");
    assert_eq!(bench.credits(&prop1), expected_pplns(&w1, MINER_A));
    let w2 = expected_window(&bench.shares, prop2_sent, n);
    assert!(!w2.contains_key(miner_c()), "a solo block between two prop blocks changes nothing");
    assert_eq!(bench.credits(&prop2), expected_pplns(&w2, MINER_B));
    let solo_credit = REWARD - REWARD * SOLO_FEE_BPS as u64 / 10_000;
    assert_eq!(bench.credits(&solo), BTreeMap::from([(miner_c().to_string(), solo_credit)]), "solo pays the finder");
}

/// The network difficulty drops (the list would be trimmed to twice the low window) and rises
/// again before the next block: its window must still be full.
#[actix_rt::test]
async fn a_difficulty_drop_and_rise_across_a_window_keeps_it_full() {
    let mut bench = Bench::start().await;
    let node = bench.node("aa000001");
    let height = bench.devnet.block_count();
    bench.network(&node, height, 100);
    bench.shares(&node, MINER_A, false, &[("rig1", 150)]).await;
    bench.shares(&node, MINER_B, false, &[("x", 150)]).await;
    // Difficulty 10: twice its window is 40 units.
    bench.network(&node, height + 1, 10);
    bench.shares(&node, miner_c(), false, &[("y", 20)]).await;
    bench.shares(&node, miner_c(), false, &[("y", 5)]).await;
    // Back up to 100 before the block.
    bench.network(&node, height + 2, 100);
    let hash = bench.block(&node, miner_c(), false, 10, 100, false).await;
    let sent = bench.shares.len();
    bench.unlock().await;

    let n = window_size(100);
    let window = expected_window(&bench.shares, sent, n);
    assert_eq!(window.values().sum::<u64>(), n);
    assert_eq!(bench.window_total(&hash), n, "the window after a difficulty drop and rise is exactly N");
    assert_eq!(bench.credits(&hash), expected_pplns(&window, miner_c()));
}

/// Two stratum nodes write one window; the second one's daemon lags at a lower difficulty. Its
/// flushes must not trim the shared list below what the leading node's next block needs.
#[actix_rt::test]
async fn two_stratum_nodes_write_one_window_and_a_lagging_node_trims_nothing_needed() {
    let mut bench = Bench::start().await;
    let leading = bench.node("aa000001");
    let lagging = bench.node("bb000002");
    let height = bench.devnet.block_count();
    bench.network(&leading, height, 100);
    bench.network(&lagging, height.saturating_sub(3), 10);
    bench.shares(&leading, MINER_A, false, &[("rig1", 120)]).await;
    bench.shares(&lagging, MINER_B, false, &[("x", 60)]).await;
    bench.shares(&leading, MINER_A, false, &[("rig2", 30)]).await;
    bench.shares(&lagging, miner_c(), false, &[("y", 15)]).await;
    bench.shares(&lagging, MINER_B, false, &[("x", 5)]).await;
    let hash = bench.block(&leading, MINER_A, false, 10, 100, false).await;
    let sent = bench.shares.len();
    bench.unlock().await;

    let n = window_size(100);
    let window = expected_window(&bench.shares, sent, n);
    assert_eq!(window.values().sum::<u64>(), n);
    assert_eq!(bench.window_total(&hash), n, "the lagging node trimmed nothing the window needs");
    assert_eq!(bench.credits(&hash), expected_pplns(&window, MINER_A));
}

/// The list stays bounded: once the heights that needed a large window are more than
/// `PPLNS_NEED_HEIGHTS` behind, it is trimmed to twice the current window again.
#[actix_rt::test]
async fn the_list_is_trimmed_again_once_old_needs_expire() {
    let mut bench = Bench::start().await;
    let node = bench.node("aa000001");
    let height = bench.devnet.block_count();
    bench.network(&node, height, 100);
    for login in [MINER_A, MINER_B, miner_c()] {
        bench.shares(&node, login, false, &[("rig", 150)]).await;
    }
    let mut con = bench.redis.conn();
    let total: u64 = con.get("pastella:pplns:total").unwrap();
    assert_eq!(total, 450, "twice the window at difficulty 100 (400) keeps all three records");
    bench.network(&node, height + pastella_pool::store::PPLNS_NEED_HEIGHTS + 1, 10);
    bench.shares(&node, MINER_A, false, &[("rig", 20)]).await;
    let total: u64 = con.get("pastella:pplns:total").unwrap();
    let records: Vec<String> = con.lrange("pastella:pplns:window", 0, -1).unwrap();
    assert_eq!(records, vec![format!("20:{MINER_A}"), format!("150:{}", miner_c())], "trimmed to cover 40 units");
    assert_eq!(total, 170);
}

//! The stratum side against hostile clients, end to end: real Redis, the devnet, real TCP
//! miners from distinct loopback addresses (127.0.x.y are all local on Linux). Every test waits
//! for the exact event (a reply, a close) rather than for a time.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use pastella_pool::config::Module;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn error_message(reply: &Value) -> String {
    reply["error"]["message"].as_str().unwrap_or_default().to_string()
}

fn ok(reply: &Value) -> bool {
    reply["error"].is_null() && reply["result"]["status"] == "OK"
}

/// A claimed result with difficulty about 256: above the port's, far below the network's.
fn plausible_result() -> String {
    format!("{}00", "ff".repeat(31))
}

/// Pipelines `count` submits of distinct nonces for the flooder's job without waiting, ignoring
/// write errors (the pool closes the socket mid-flood), then reads every reply until the pool
/// closes the connection. Returns the error messages in order.
async fn flood(source: IpAddr, port: u16, count: u32) -> Vec<String> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr(port)).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let login = json!({"id": 1, "jsonrpc": "2.0", "method": "login",
                       "params": {"login": MINER_A, "pass": "flood", "agent": "flood/1.0"}});
    write.write_all(format!("{login}\n").as_bytes()).await.unwrap();
    let reply: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    let session = reply["result"]["id"].as_str().unwrap().to_string();
    let job_id = reply["result"]["job"]["job_id"].as_str().unwrap().to_string();
    let mut batch = String::new();
    for n in 0..count {
        let submit = json!({"id": 10 + n, "jsonrpc": "2.0", "method": "submit",
            "params": {"id": session, "job_id": job_id, "nonce": hex::encode(n.to_le_bytes()), "result": plausible_result()}});
        batch.push_str(&submit.to_string());
        batch.push('\n');
    }
    let _ = write.write_all(batch.as_bytes()).await;
    let mut errors = Vec::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["method"] != "job" {
            errors.push(error_message(&v));
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_session_is_capped_and_banned_and_a_fake_block_bans_at_once_while_honest_miners_mine() {
    // Count-based bans need 10 results; the in-flight cap is 8 per session; one verifier thread,
    // so most of the flood's 8 shares are still queued when the ban comes.
    let patch = json!({
        "banning": {"enabled": true, "time": 600, "invalidPercent": 50, "checkThreshold": 10},
        "poolServer": {"sharesInFlight": {"perSession": 8, "perIp": 100}},
        "randomx": {"threads": 1}
    });
    let port = free_port();
    let Stack { pool, devnet: _devnet, redis: _redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum, Module::Api]).await;
    let api = pool.http_addr.expect("the API serves /metrics");
    let mut honest = TestMiner::connect(addr(port)).await;
    honest.login(MINER_A, "honest").await;

    // 200 pipelined bogus shares: past the 2 in flight each is refused at once, counts toward
    // the ban, and the ban closes the connection long before 200 are read.
    let errors = flood(ip("127.0.0.2"), port, 200).await;
    let capped = errors.iter().filter(|e| e.starts_with("Too many shares in flight")).count();
    assert!(capped >= 1, "the cap answered at once: {errors:?}");
    assert!(errors.len() < 200, "closed by the ban before the flood was read: {} replies", errors.len());
    let mut again = TestMiner::connect_from(ip("127.0.0.2"), addr(port)).await;
    let reply = again.call("login", json!({"login": MINER_A, "pass": "x"})).await;
    assert_eq!(error_message(&reply), "Your IP is banned");

    // One fake block claim: closed and banned on the spot, with no sample of 10.
    let mut faker = TestMiner::connect_from(ip("127.0.0.3"), addr(port)).await;
    faker.login(MINER_A, "faker").await;
    let job = faker.job.clone().unwrap();
    let params = json!({"id": faker.session, "job_id": job.id, "nonce": "01000000", "result": "00".repeat(32)});
    let reply = faker.call("submit", params).await;
    assert_eq!(error_message(&reply), "Rejected share: invalid block candidate", "{reply}");
    assert!(faker.closed(Duration::from_secs(30)).await, "fake block claim closes the session");
    let mut again = TestMiner::connect_from(ip("127.0.0.3"), addr(port)).await;
    let reply = again.call("login", json!({"login": MINER_A, "pass": "x"})).await;
    assert_eq!(error_message(&reply), "Your IP is banned");

    for start in [0, 100_000] {
        let (reply, _, _) = honest.mine_and_submit(&hasher, 0, start).await;
        assert!(ok(&reply), "the honest miner keeps mining: {reply}");
    }
    // Every refusal has its metric, and the banned session's queued shares were never hashed.
    let metrics = reqwest::get(format!("http://{api}/metrics")).await.unwrap().text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("pastella_pool_stratum_requests_refused_total{method=\"submit\",reason=\"in_flight_session\"}") >= 1.0,
        "{metrics}"
    );
    assert!(value("pastella_pool_verify_cancelled_total") >= 1.0, "queued flood shares dropped unhashed");
    assert!(value("pastella_pool_stratum_disconnects_total{reason=\"fake_block\"}") >= 1.0);
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_subnet_caps_refuse_while_allowed_addresses_are_exempt() {
    let patch = json!({"poolServer": {
        "rateLimits": {"login": {"perSecond": 0.001, "burst": 2}, "getjob": {"perSecond": 0.001, "burst": 1}},
        "maxConnectionsPerSubnet": 3,
        "allow": ["127.0.5.0/24"]
    }});
    let port = free_port();
    let Stack { pool, devnet: _devnet, redis: _redis, hasher: _hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;

    // Login: a burst of 2 per IP, then refused (one token per 1000 s).
    let mut miner = TestMiner::connect_from(ip("127.0.1.1"), addr(port)).await;
    miner.login(MINER_A, "a").await;
    miner.login(MINER_A, "b").await;
    let reply = miner.call("login", json!({"login": MINER_A, "pass": "c"})).await;
    assert!(error_message(&reply).starts_with("Too many requests"), "{reply}");
    // getjob has its own bucket.
    let reply = miner.call("getjob", json!({"id": miner.session})).await;
    assert!(reply["error"].is_null(), "{reply}");
    let reply = miner.call("getjob", json!({"id": miner.session})).await;
    assert!(error_message(&reply).starts_with("Too many requests"), "{reply}");
    // Another IP has its own buckets.
    let mut other = TestMiner::connect_from(ip("127.0.2.1"), addr(port)).await;
    other.login(MINER_A, "other").await;

    // 127.0.1.0/24 holds at most 3 connections: the 4th is closed at accept without a word.
    let mut subnet = vec![miner];
    for host in ["127.0.1.2", "127.0.1.3"] {
        let mut m = TestMiner::connect_from(ip(host), addr(port)).await;
        m.login(MINER_A, host).await;
        subnet.push(m);
    }
    let mut fourth = TestMiner::connect_from(ip("127.0.1.4"), addr(port)).await;
    assert!(fourth.closed(Duration::from_secs(30)).await, "4th connection of the /24 refused");
    // Once one is closed (bad JSON), the subnet has room again.
    let mut leaving = subnet.pop().unwrap();
    leaving.send_line("{not json").await;
    assert!(leaving.closed(Duration::from_secs(30)).await);
    let mut fifth = TestMiner::connect_from(ip("127.0.1.5"), addr(port)).await;
    fifth.login(MINER_A, "fifth").await;

    // An allowed /24: no subnet cap and no login rate limit.
    let mut farm = Vec::new();
    for i in 1..=5 {
        let mut m = TestMiner::connect_from(ip(&format!("127.0.5.{i}")), addr(port)).await;
        m.login(MINER_A, &format!("farm{i}")).await;
        m.login(MINER_A, &format!("farm{i}")).await;
        m.login(MINER_A, &format!("farm{i}")).await;
        farm.push(m);
    }
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_login_or_with_an_unfinished_line_are_closed() {
    let patch = json!({"poolServer": {"loginTimeout": 1, "lineTimeout": 1}});
    let port = free_port();
    let Stack { pool, devnet: _devnet, redis: _redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;
    let mut honest = TestMiner::connect(addr(port)).await;
    honest.login(MINER_A, "honest").await;

    // Silent after connecting: closed by the login timeout.
    let mut silent = TestMiner::connect(addr(port)).await;
    assert!(silent.closed(Duration::from_secs(60)).await, "no login: closed");
    // A refused login is no login.
    let mut refused = TestMiner::connect(addr(port)).await;
    let reply = refused.call("login", json!({"login": "not-an-address", "pass": "x"})).await;
    assert!(error_message(&reply).starts_with("Invalid address used for login"), "{reply}");
    assert!(refused.closed(Duration::from_secs(60)).await, "invalid login: closed");
    // Slowloris: logged in, then a request line that never ends.
    let mut slow = TestMiner::connect(addr(port)).await;
    slow.login(MINER_A, "slow").await;
    slow.send_partial("{\"id\":7,\"jsonrpc\":\"2.0\",\"method\":\"keepalived\",").await;
    assert!(slow.closed(Duration::from_secs(60)).await, "unfinished line: closed");

    // The honest miner, logged in and idle between requests all along, is still served.
    let (reply, _, _) = honest.mine_and_submit(&hasher, 0, 0).await;
    assert!(ok(&reply), "{reply}");
    pool.stop();
}

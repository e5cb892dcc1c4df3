//! Live reload (issue 12 §2): the pool binary, sent SIGHUP after its config file changed,
//! applies the new settings without dropping a miner, and keeps its running settings when the
//! new file is invalid.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pastella_pool::devnet::{DEFAULT_WALLET_ADDRESS, OTHER_MINERS_ADDRESS};
use serde_json::{json, Value};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, crypto, ClientConfig};
use tokio_rustls::TlsConnector;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A second loopback address, denied by the reloaded config.
const DENIED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The pool binary on a config file the test rewrites; its log in a file.
struct Pool {
    child: Child,
    config: PathBuf,
    log: PathBuf,
}

impl Pool {
    fn start(name: &str, config: &Value) -> Pool {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (config_path, log) = (dir.join("pool.json"), dir.join("pool.log"));
        std::fs::write(&config_path, config.to_string()).unwrap();
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
            .args(["run", "--config"])
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Pool { child, config: config_path, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes `config` and sends SIGHUP; waits for the `n`-th line containing `outcome`.
    async fn reload(&self, config: &str, outcome: &str, n: usize) -> String {
        std::fs::write(&self.config, config).unwrap();
        let status = Command::new("kill").arg("-HUP").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        let seen =
            eventually(Duration::from_secs(120), || (self.log().matches(outcome).count() >= n).then_some(())).await;
        assert!(seen.is_some(), "no {outcome:?} in the log:\n{}", self.log());
        self.log()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

async fn wait_for_port(port: u16) {
    let up = eventually(Duration::from_secs(120), || std::net::TcpStream::connect(addr(port)).ok().map(|_| ())).await;
    assert!(up.is_some(), "the pool listens on {port}");
}

/// The job a fresh login on `port` gets.
async fn login_job(port: u16) -> Job {
    let mut miner = TestMiner::connect(addr(port)).await;
    miner.login(OTHER_MINERS_ADDRESS, "probe").await;
    miner.job.unwrap()
}

/// The difficulty of the job a fresh login on `port` gets.
async fn login_difficulty(port: u16) -> u64 {
    login_job(port).await.difficulty
}

/// Mines and submits until `stop`; Err if the pool dropped the connection or stopped answering.
async fn keep_mining(
    mut miner: TestMiner,
    hasher: SharedHasher,
    stop: Arc<AtomicBool>,
    oks: Arc<AtomicU64>,
) -> Result<TestMiner, String> {
    let mut nonce = rand::random::<u32>() >> 4;
    while !stop.load(Ordering::SeqCst) {
        if let Some(newest) = miner.pushed.pop_back() {
            miner.pushed.clear();
            miner.job = Some(newest);
        }
        let job = miner.job.clone().unwrap();
        let h = hasher.clone();
        let (seed, blob, diff) = (job.seed, job.blob.clone(), job.difficulty);
        let (n, result) = tokio::task::spawn_blocking(move || h.search(seed, &blob, diff, nonce)).await.unwrap();
        nonce = u32::from_le_bytes(n).wrapping_add(1);
        let params = json!({"id": miner.session, "job_id": job.id, "nonce": hex::encode(n), "result": result.to_hex()});
        match miner.try_call("submit", params, Duration::from_secs(120)).await {
            Some(reply) if reply["result"]["status"] == "OK" => {
                oks.fetch_add(1, Ordering::SeqCst);
            }
            Some(_) => {}
            None => return Err(format!("session {} dropped or silent", miner.session)),
        }
    }
    Ok(miner)
}

async fn scrape(api: u64) -> String {
    reqwest::get(format!("http://127.0.0.1:{api}/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_without_dropping_a_session_and_keeps_it_when_the_new_one_is_invalid() {
    let redis = RedisServer::start();
    let devnet = devnet(1_000_000).await;
    let hasher = SharedHasher::new();
    let (changed, removed, added) = (free_port(), free_port(), free_port());
    let patch = json!({"logging": {"level": "info"}, "varDiff": {"maxDiff": 50}});
    let mut config = pool_config_json(&redis, &devnet, &[(changed, 10), (removed, 10)], patch);
    let api = config["api"]["port"].as_u64().unwrap();
    let pool = Pool::start("reload-sighup", &config);
    wait_for_port(changed).await;

    // Miners on both ports, one of them from the address the new config denies.
    let mut miners = Vec::new();
    for (port, source) in [(changed, None), (changed, None), (changed, Some(DENIED)), (removed, None)] {
        let mut miner = match source {
            Some(ip) => TestMiner::connect_from(ip, addr(port)).await,
            None => TestMiner::connect(addr(port)).await,
        };
        miner.login(DEFAULT_WALLET_ADDRESS, &format!("rig{}", miners.len())).await;
        assert_eq!(miner.job.as_ref().unwrap().difficulty, 10);
        miners.push(miner);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Shares answered OK, per miner.
    let oks: Vec<Arc<AtomicU64>> = (0..miners.len()).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let counts = |oks: &[Arc<AtomicU64>]| oks.iter().map(|n| n.load(Ordering::SeqCst)).collect::<Vec<_>>();
    let tasks: Vec<_> = miners
        .into_iter()
        .zip(&oks)
        .map(|(m, n)| tokio::spawn(keep_mining(m, hasher.clone(), stop.clone(), n.clone())))
        .collect();
    let some_before = eventually(Duration::from_secs(300), || counts(&oks).iter().all(|&n| n >= 1).then_some(())).await;
    assert!(some_before.is_some(), "shares accepted before the reload");

    // The new config: another difficulty on one port, a new port, one port gone, a denied CIDR.
    merge(
        &mut config,
        &json!({
            "ports": {changed.to_string(): {"diff": 20}, added.to_string(): {"diff": 30, "desc": "added"}},
            "poolServer": {"deny": ["127.0.0.2/32"]},
            "varDiff": {"maxDiff": 40},
            "coin": "renamed"
        }),
    );
    config["ports"].as_object_mut().unwrap().remove(&removed.to_string());
    let log = pool.reload(&config.to_string(), "reload applied", 1).await;
    assert!(log.contains(&format!("ports.{changed}.diff 10 -> 20")), "{log}");
    assert!(log.contains("needs a restart: coin"), "{log}");
    let at_reload = counts(&oks);

    // New logins get the new difficulty; the new port accepts; the removed one does not.
    assert_eq!(login_difficulty(changed).await, 20);
    wait_for_port(added).await;
    assert_eq!(login_difficulty(added).await, 30);
    let closed = eventually(Duration::from_secs(60), || std::net::TcpStream::connect(addr(removed)).err()).await;
    assert!(closed.is_some(), "the removed port stopped accepting");
    // The API describes what runs now (at the collector's next run): the new port list and
    // difficulties; `coin` needs a restart and keeps its running value.
    let mut expected = vec![(changed, 20), (added, 30)];
    expected.sort();
    let ports = |body: &str| -> Option<Vec<(u16, u64)>> {
        let stats: Value = serde_json::from_str(body).ok()?;
        let mut seen: Vec<(u16, u64)> = (stats["config"]["ports"].as_array()?.iter())
            .filter_map(|p| Some((p["port"].as_u64()? as u16, p["difficulty"].as_u64()?)))
            .collect();
        seen.sort();
        Some(seen)
    };
    let url = format!("http://127.0.0.1:{api}/stats");
    let body = get_until(&url, "/stats shows the reloaded ports", |b| ports(b).as_ref() == Some(&expected)).await;
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["config"]["coin"], "pastella", "{stats}");
    // The denied address is refused at accept (the one already connected stays).
    let mut denied = TestMiner::connect_from(DENIED, addr(changed)).await;
    assert!(denied.closed(Duration::from_secs(60)).await, "a new connection from a denied address is closed");
    let refused =
        eventually(Duration::from_secs(60), || pool.log().contains("connection refused (deny)").then_some(())).await;
    assert!(refused.is_some(), "{}", pool.log());

    // Every session, the removed port's and the denied address's included, goes on mining: a
    // new block reaches all of them and their shares are accepted.
    devnet.mine(1);
    let after = eventually(Duration::from_secs(300), || {
        counts(&oks).iter().zip(&at_reload).all(|(now, then)| now >= &(then + 2)).then_some(())
    })
    .await;
    assert!(after.is_some(), "every miner's shares accepted after the reload: {:?} -> {:?}", at_reload, counts(&oks));
    stop.store(true, Ordering::SeqCst);
    let mut survivors = Vec::new();
    for task in tasks {
        survivors.push(task.await.unwrap().expect("no session dropped by the reload"));
    }
    let height = login_job(changed).await.height;
    for miner in &mut survivors {
        let reply = miner.try_call("getjob", json!({"id": miner.session}), Duration::from_secs(60)).await;
        let reply = reply.unwrap_or_else(|| panic!("session {} still answers", miner.session));
        assert_eq!(reply["result"]["height"], height, "session {} mines the current block: {reply}", miner.session);
    }
    let metrics = scrape(api).await;
    assert!(metrics.contains("pastella_pool_config_reloads_total{result=\"applied\"} 1"), "{metrics}");

    // An invalid file: rejected whole, every error named, the running settings kept.
    let mut invalid = config.clone();
    merge(
        &mut invalid,
        &json!({"ports": {changed.to_string(): {"diff": 0}}, "poolServer": {"blockRefreshInterval": 5, "deny": []}}),
    );
    let log = pool.reload(&invalid.to_string(), "reload rejected", 1).await;
    let rejected_at = log.rfind("SIGHUP: reloading").unwrap();
    let tail = &log[rejected_at..];
    assert!(tail.contains(&format!("ports.{changed}.diff")), "{tail}");
    assert!(tail.contains("poolServer.blockRefreshInterval"), "{tail}");
    assert!(!tail.contains("reload applied"), "{tail}");
    assert_eq!(login_difficulty(changed).await, 20, "the running difficulty stays");
    let mut denied = TestMiner::connect_from(DENIED, addr(changed)).await;
    assert!(denied.closed(Duration::from_secs(60)).await, "the running deny list stays");
    for miner in &mut survivors {
        let reply = miner.try_call("getjob", json!({"id": miner.session}), Duration::from_secs(60)).await;
        assert!(reply.is_some_and(|r| r["error"].is_null()), "session {} still answers", miner.session);
    }
    let metrics = scrape(api).await;
    assert!(metrics.contains("pastella_pool_config_reloads_total{result=\"rejected\"} 1"), "{metrics}");
}

/// A TLS client trusting `cert` as its root (the pool's self-signed certificate).
fn trusting(cert: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_added_by_a_reload_speaks_its_tls_mode_and_the_log_level_changes_live() {
    let redis = RedisServer::start();
    let devnet = devnet(1_000_000).await;
    let (plain, tls) = (free_port(), free_port());
    let cert_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reload-tls").join("tls");
    let _ = std::fs::remove_dir_all(&cert_dir);
    let patch = json!({"logging": {"level": "info"}, "poolServer": {"tlsSelfSignedDir": cert_dir}});
    let mut config = pool_config_json(&redis, &devnet, &[(plain, 10)], patch);
    let pool = Pool::start("reload-tls", &config);
    wait_for_port(plain).await;
    let mut miner = TestMiner::connect(addr(plain)).await;
    miner.login(DEFAULT_WALLET_ADDRESS, "plain").await;
    assert!(!pool.log().contains("miner logged in"), "a debug line at level info");
    assert!(!cert_dir.join("cert.pem").exists(), "no TLS port, no certificate yet");

    merge(
        &mut config,
        &json!({
            "ports": {tls.to_string(): {"diff": 15, "tls": "on"}},
            "logging": {"level": "info,pastella_pool::stratum=debug"}
        }),
    );
    let log = pool.reload(&config.to_string(), "reload applied", 1).await;
    assert!(log.contains(&format!("ports.{tls} added (diff 15, TLS on)")), "{log}");
    assert!(log.contains("logging.level"), "{log}");

    // The new port speaks TLS with the certificate the reload generated.
    wait_for_port(tls).await;
    let cert = CertificateDer::from_pem_file(cert_dir.join("cert.pem")).expect("a generated certificate");
    let tcp = tokio::net::TcpStream::connect(addr(tls)).await.unwrap();
    let stream = trusting(cert).connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("TLS handshake");
    let mut tls_miner = TestMiner::from_io(stream);
    tls_miner.login(DEFAULT_WALLET_ADDRESS, "tls").await;
    assert_eq!(tls_miner.job.as_ref().unwrap().difficulty, 15);
    // The level changed: a login now writes its debug line.
    let debug = eventually(Duration::from_secs(60), || pool.log().contains("miner logged in").then_some(())).await;
    assert!(debug.is_some(), "{}", pool.log());
    // The plain session from before the reload still answers.
    let reply = miner.try_call("getjob", json!({"id": miner.session}), Duration::from_secs(60)).await;
    assert!(reply.is_some_and(|r| r["error"].is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_payment_threshold_takes_effect_at_the_next_payment_run() {
    const COIN: u64 = 100_000_000;
    let redis = RedisServer::start();
    let devnet = devnet(12).await;
    // The pool wallet holds unlocked coinbases; one miner is owed 1 PAS.
    devnet.mine_to(2, &pastella_pool::chain::Address::parse(POOL_ADDRESS).unwrap());
    devnet.mine(10);
    let mut con = redis.conn();
    let _: () =
        redis::Commands::hset(&mut con, format!("pastella:workers:{OTHER_MINERS_ADDRESS}"), "balance", COIN).unwrap();
    let patch = json!({
        "logging": {"level": "info"},
        "payments": {"enabled": true, "interval": 1, "minPayment": 2 * COIN, "transferFee": 1000,
                     "minerPayFee": false, "blockedAddressesFile": "/nonexistent/payment_blocked.json"},
        "blockUnlocker": {"leaseTtl": 2},
        "walletApi": {"timeoutMs": 5000},
    });
    let mut config = pool_config_json(&redis, &devnet, &[(free_port(), 1000)], patch);
    let api = config["api"]["port"].as_u64().unwrap();
    let pool = Pool::start("reload-payments", &config);
    let paid = |con: &mut redis::Connection| -> u64 {
        redis::Commands::hget::<_, _, Option<u64>>(con, format!("pastella:balances:{OTHER_MINERS_ADDRESS}"), "paid")
            .unwrap()
            .unwrap_or(0)
    };

    // Payment runs see the 1 PAS owed (the gauge each run sets) and pay nothing below 2 PAS.
    let mut owed_seen = false;
    for _ in 0..600 {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{api}/metrics")).await {
            let text = response.text().await.unwrap();
            if text.lines().any(|l| l == format!("pastella_pool_owed_atomic_units {COIN}")) {
                owed_seen = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(owed_seen, "a payment run saw the balance:\n{}", pool.log());
    assert_eq!(paid(&mut con), 0, "below minPayment: not paid");

    merge(&mut config, &json!({"payments": {"minPayment": 100_000}}));
    let log = pool.reload(&config.to_string(), "reload applied", 1).await;
    assert!(log.contains("reload applied: payments"), "{log}");
    let settled = eventually(Duration::from_secs(120), || (paid(&mut con) == COIN).then_some(())).await;
    assert!(settled.is_some(), "paid once the threshold was lowered:\n{}", pool.log());
    let received = devnet.received(OTHER_MINERS_ADDRESS);
    assert_eq!(received.received + received.pending, COIN, "{received:?}");
}

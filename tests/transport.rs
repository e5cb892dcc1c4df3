//! The transport below the session, end to end: TLS stratum with a real rustls client speaking
//! xmrig's wire lines (TLS-only port, auto-detect port with TLS and plain), the self-signed
//! certificate and its xmrig fingerprint, PROXY v1/v2 from a real HAProxy, and the
//! allow/deny policy at accept.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pastella_pool::config::Module;
use pastella_pool::stratum::transport::{client_connector, ClientTrust};
use redis::Commands;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::crypto;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig};
use tokio_rustls::TlsConnector;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ok(reply: &Value) -> bool {
    reply["error"].is_null() && reply["result"]["status"] == "OK"
}

/// xmrig 6's login line, byte for byte as it sends it (agent and algo list included).
fn xmrig_login_line(login: &str, rig: &str) -> String {
    format!(
        r#"{{"id":1,"jsonrpc":"2.0","method":"login","params":{{"login":"{login}","pass":"x","agent":"XMRig/6.22.2 (Linux x86_64) libuv/1.48.0 gcc/13.2.0","rigid":"{rig}","algo":["rx/0","rx/wow","rx/arq","rx/graft","rx/sfx","rx/yada","cn/0","cn/r"]}}}}"#
    )
}

/// Logs in with xmrig's exact line and keeps the session id and job like `TestMiner::login`.
async fn xmrig_login(miner: &mut TestMiner, rig: &str) {
    miner.send_line(&xmrig_login_line(MINER_A, rig)).await;
    let line = miner.read_line(Duration::from_secs(30)).await.expect("a login reply");
    let reply: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply["id"], 1);
    assert!(reply["error"].is_null(), "login refused: {reply}");
    assert_eq!(reply["result"]["status"], "OK");
    miner.session = reply["result"]["id"].as_str().unwrap().to_string();
    miner.job = Some(Job::from_json(&reply["result"]["job"]));
}

/// Logs in, mines one share and submits it: the reply must be `OK`.
async fn login_job_submit(miner: &mut TestMiner, hasher: &SharedHasher, rig: &str) {
    xmrig_login(miner, rig).await;
    let (reply, _, _) = miner.mine_and_submit(hasher, 0, rand::random::<u32>() >> 4).await;
    assert!(ok(&reply), "submit over {rig}: {reply}");
    let reply = miner.call("keepalived", json!({"id": miner.session})).await;
    assert_eq!(reply["result"]["status"], "KEEPALIVED", "{reply}");
}

/// Sends xmrig's login on `stream` and reads until the pool closes it: true when it closed
/// without a stratum reply (a TLS alert may come first), false on a reply or no close.
async fn refused<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> bool {
    let mut line = xmrig_login_line(MINER_A, "refused");
    line.push('\n');
    // The pool may have closed already: a failed write is part of being refused.
    let _ = stream.write_all(line.as_bytes()).await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return !seen.windows(9).any(|w| w == b"\"jsonrpc\""),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Accepts the server certificate whose DER has this SHA-256, as `xmrig --tls-fingerprint`.
fn pinned_connector(sha256: &str) -> TlsConnector {
    client_connector(ClientTrust::Fingerprint(sha256.to_string())).unwrap()
}

/// Trusts the certificate as a root and checks the name, like a client without pinning.
fn trusting_connector(cert: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_miner(connector: &TlsConnector, port: u16) -> TestMiner {
    let tcp = TcpStream::connect(addr(port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    TestMiner::from_io(tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_and_auto_detect_ports_serve_xmrig_over_tls_and_plain() {
    let (tls_port, auto_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("tls");
    let patch = json!({
        "ports": {tls_port.to_string(): {"tls": "on"}, auto_port.to_string(): {"tls": "auto"}},
        "poolServer": {"tlsSelfSignedDir": cert_dir},
    });
    let Stack { pool, devnet: _devnet, redis: _redis, hasher } =
        Stack::start(1_000_000_000, &[(tls_port, 2), (auto_port, 2)], patch, &[Module::Stratum, Module::Api]).await;

    // The certificate was generated on this first start and kept where configured.
    let cert = CertificateDer::from_pem_file(cert_dir.join("cert.pem")).expect("a generated certificate");
    assert!(cert_dir.join("key.pem").exists());
    let fingerprint = hex::encode(Sha256::digest(cert.as_ref()));
    let pinned = pinned_connector(&fingerprint);

    let mut miner = tls_miner(&pinned, tls_port).await;
    login_job_submit(&mut miner, &hasher, "tls-only").await;
    let mut miner = tls_miner(&pinned, auto_port).await;
    login_job_submit(&mut miner, &hasher, "auto-tls").await;
    let mut miner = TestMiner::connect(addr(auto_port)).await;
    login_job_submit(&mut miner, &hasher, "auto-plain").await;
    // A client checking the name against the certificate as a root (xmrig without a pin does
    // not check at all; stricter clients must pass too).
    let mut miner = tls_miner(&trusting_connector(cert.clone()), tls_port).await;
    xmrig_login(&mut miner, "trusting").await;

    // A pinned client refuses another certificate: the fingerprint is what it checks.
    let wrong = pinned_connector(&"0".repeat(64));
    let tcp = TcpStream::connect(addr(tls_port)).await.unwrap();
    assert!(wrong.connect(ServerName::try_from("localhost").unwrap(), tcp).await.is_err());

    // Plain stratum on the TLS-only port gets no answer: the connection is closed.
    let plain = TcpStream::connect(addr(tls_port)).await.unwrap();
    assert!(refused(plain).await, "plain login on a TLS-only port must be refused");

    // /stats tells the frontend which ports speak TLS (old shape: ports[].ssl).
    let http = pool.http_addr.expect("the API listens");
    let stats: Value = reqwest::get(format!("http://{http}/stats")).await.unwrap().json().await.unwrap();
    let ports = stats["config"]["ports"].as_array().unwrap();
    let port_of = |p: u16| ports.iter().find(|v| v["port"] == p).unwrap().clone();
    assert_eq!((port_of(tls_port)["ssl"].clone(), port_of(tls_port)["tls"].clone()), (json!(true), json!("on")));
    assert_eq!((port_of(auto_port)["ssl"].clone(), port_of(auto_port)["tls"].clone()), (json!(true), json!("auto")));
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_count_against_the_per_ip_cap() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("tls");
    let patch = json!({
        "ports": {port.to_string(): {"tls": "on"}},
        "poolServer": {"tlsSelfSignedDir": cert_dir, "maxConnectionsPerIp": 1},
    });
    let Stack { pool, devnet: _devnet, redis: _redis, hasher: _hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;
    let cert = CertificateDer::from_pem_file(cert_dir.join("cert.pem")).unwrap();
    let pinned = pinned_connector(&hex::encode(Sha256::digest(cert.as_ref())));
    let mut first = tls_miner(&pinned, port).await;
    xmrig_login(&mut first, "first").await;
    // The cap is taken before the handshake: a second connection gets no TLS session.
    let tcp = TcpStream::connect(addr(port)).await.unwrap();
    assert!(pinned.connect(ServerName::try_from("localhost").unwrap(), tcp).await.is_err());
    // Once the first session ends its slot is free again.
    drop(first);
    let mut handshakes = 0;
    let mut second = loop {
        let tcp = TcpStream::connect(addr(port)).await.unwrap();
        handshakes += 1;
        match pinned.connect(ServerName::try_from("localhost").unwrap(), tcp).await {
            Ok(tls) => break TestMiner::from_io(tls),
            Err(_) => assert!(handshakes < 300, "the slot never came back"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    xmrig_login(&mut second, "second").await;
    pool.stop();
}

/// HAProxy in the foreground on free loopback ports: `v1` and `v2` frontends forwarding to
/// the pool with `send-proxy` and `send-proxy-v2`.
struct HaProxy {
    child: Child,
    v1: u16,
    v2: u16,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// None when haproxy is not installed (scripts/deps.sh --test installs it).
    async fn start(pool_port: u16) -> Option<HaProxy> {
        if Command::new("haproxy").arg("-v").stdout(Stdio::null()).status().is_err() {
            eprintln!("haproxy not installed: skipping (scripts/deps.sh --test installs it)");
            return None;
        }
        let (v1, v2) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, haproxy_config(v1, v2, pool_port)).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let haproxy = HaProxy { child, v1, v2, _dir: dir };
        for port in [v1, v2] {
            let up = async {
                while TcpStream::connect(addr(port)).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(30), up).await.expect("haproxy listens");
        }
        Some(haproxy)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration docs/STRATUM.md documents, on test ports.
fn haproxy_config(v1: u16, v2: u16, pool: u16) -> String {
    format!(
        "global
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
frontend stratum_v1
    bind 127.0.0.1:{v1}
    default_backend pool_v1
frontend stratum_v2
    bind 127.0.0.1:{v2}
    default_backend pool_v2
backend pool_v1
    server pool1 127.0.0.1:{pool} send-proxy
backend pool_v2
    server pool1 127.0.0.1:{pool} send-proxy-v2
"
    )
}

async fn connect_from(source: IpAddr, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(addr(port)).await.unwrap()
}

/// The IPs the pool recorded for MINER_A's logins (`workers_ip:<address>`).
fn login_ips(redis: &RedisServer) -> Vec<String> {
    let mut ips: Vec<String> = redis.conn().smembers(format!("pastella:workers_ip:{MINER_A}")).unwrap();
    ips.sort();
    ips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_passes_real_client_addresses_with_proxy_v1_and_v2() {
    let port = free_port();
    let patch = json!({"poolServer": {
        "proxyProtocol": {"enabled": true, "trusted": ["127.0.0.1/32"], "required": true},
        "deny": ["127.0.0.66/32"],
    }});
    let Stack { pool, devnet: _devnet, redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;
    let Some(haproxy) = HaProxy::start(port).await else { return };

    // Through HAProxy from two client addresses: the pool sees those, not HAProxy's 127.0.0.1.
    let mut v1 = TestMiner::from_io(connect_from("127.0.0.11".parse().unwrap(), haproxy.v1).await);
    login_job_submit(&mut v1, &hasher, "via-v1").await;
    let mut v2 = TestMiner::from_io(connect_from("127.0.0.12".parse().unwrap(), haproxy.v2).await);
    login_job_submit(&mut v2, &hasher, "via-v2").await;
    let seen = eventually(Duration::from_secs(30), || {
        let ips = login_ips(&redis);
        (ips.len() >= 2).then_some(ips)
    })
    .await
    .expect("login IPs recorded");
    assert_eq!(seen, ["::ffff:127.0.0.11", "::ffff:127.0.0.12"], "workers_ip holds the real client addresses");

    // deny applies to the client address from the header, for both versions.
    for front in [haproxy.v1, haproxy.v2] {
        let denied = connect_from("127.0.0.66".parse().unwrap(), front).await;
        assert!(refused(denied).await, "a denied client behind HAProxy is refused");
    }

    // A header from an address that is not a trusted load balancer: refused.
    let mut forged = connect_from("127.0.0.2".parse().unwrap(), port).await;
    forged.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 3333\r\n").await.unwrap();
    assert!(refused(forged).await, "a header from an untrusted address is refused");

    // The trusted address without a header while `required` is set: refused.
    let bare = TcpStream::connect(addr(port)).await.unwrap();
    assert!(refused(bare).await, "a trusted connection without a header is refused");

    // Anyone else connecting directly without a header is served with its own address.
    let mut direct = TestMiner::from_io(connect_from("127.0.0.13".parse().unwrap(), port).await);
    login_job_submit(&mut direct, &hasher, "direct").await;
    let seen = eventually(Duration::from_secs(30), || {
        let ips = login_ips(&redis);
        (ips.len() >= 3).then_some(ips)
    })
    .await
    .expect("the direct login IP recorded");
    assert_eq!(seen, ["::ffff:127.0.0.11", "::ffff:127.0.0.12", "::ffff:127.0.0.13"]);
    drop(haproxy);
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_addresses_are_refused_at_accept_and_allowed_ones_served() {
    let port = free_port();
    let patch = json!({"poolServer": {"deny": ["127.0.0.0/8"], "allow": ["127.0.0.21/32"]}});
    let Stack { pool, devnet: _devnet, redis: _redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;
    let denied = connect_from("127.0.0.20".parse().unwrap(), port).await;
    assert!(refused(denied).await, "a denied address is refused");
    // The more specific allow entry wins over the /8 deny.
    let mut allowed = TestMiner::from_io(connect_from("127.0.0.21".parse().unwrap(), port).await);
    login_job_submit(&mut allowed, &hasher, "allowed").await;
    pool.stop();
}

/// Reads until the pool closes the connection: true on close, false if it stays open for 30 s
/// (the session's own login timeout is 60 s, so only the transport's timeouts close it sooner).
async fn closed_without_sending<S: AsyncRead + Unpin>(mut stream: S) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_headers_and_handshakes_are_closed_by_the_transport_timeouts() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let patch = json!({
        "ports": {port.to_string(): {"tls": "auto"}},
        "poolServer": {
            "tlsSelfSignedDir": dir.path().join("tls"),
            "tlsHandshakeTimeout": 1,
            "proxyProtocol": {"enabled": true, "trusted": ["127.0.0.1/32"], "timeout": 1},
        },
    });
    let Stack { pool, devnet: _devnet, redis: _redis, hasher } =
        Stack::start(1_000_000_000, &[(port, 2)], patch, &[Module::Stratum]).await;

    // A trusted balancer that starts a header and stalls.
    let mut partial = TcpStream::connect(addr(port)).await.unwrap();
    partial.write_all(b"PROXY TCP4 198.51").await.unwrap();
    assert!(closed_without_sending(partial).await, "a stalled PROXY header is closed");
    // A silent connection (no header, no first byte).
    let silent = connect_from("127.0.0.31".parse().unwrap(), port).await;
    assert!(closed_without_sending(silent).await, "a silent connection is closed");
    // A TLS client that sends the start of a ClientHello and stalls.
    let mut stalled = connect_from("127.0.0.32".parse().unwrap(), port).await;
    stalled.write_all(&[0x16, 0x03, 0x01, 0x00, 0xf4]).await.unwrap();
    assert!(closed_without_sending(stalled).await, "a stalled TLS handshake is closed");
    // A malformed header from the trusted balancer.
    let mut garbage = TcpStream::connect(addr(port)).await.unwrap();
    garbage.write_all(b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n").await.unwrap();
    assert!(closed_without_sending(garbage).await, "a malformed PROXY header is refused");

    // The port still serves a well-behaved miner with a PROXY header, plain after it.
    let mut good = TcpStream::connect(addr(port)).await.unwrap();
    good.write_all(b"PROXY TCP4 198.51.100.20 127.0.0.1 5000 3333\r\n").await.unwrap();
    let mut good = TestMiner::from_io(good);
    login_job_submit(&mut good, &hasher, "after-header").await;
    pool.stop();
}

/// Resident memory of a process, bytes (Linux).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The RSS once it stopped moving (two readings a second apart within 256 KiB): the pool
/// builds its RandomX cache and first jobs in the background after start.
async fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_bytes(pid);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_bytes(pid);
        if now.abs_diff(last) < 256 * 1024 {
            return now;
        }
        last = now;
    }
}

/// Opens `n` sessions with `open`, each logged in with xmrig's line; returns them (kept open).
async fn idle_sessions<F, Fut>(n: usize, open: F) -> Vec<TestMiner>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = TestMiner>,
{
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let mut miner = open().await;
        xmrig_login(&mut miner, &format!("idle{i}")).await;
        sessions.push(miner);
    }
    sessions
}

/// The per-session memory of idle plain and TLS sessions in a separate pool process (the
/// figure in docs/PERFORMANCE.md). Not part of the suite (it opens thousands of connections):
/// `TLS_IDLE_SESSIONS=5000 cargo test --test transport idle_session_memory -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn idle_session_memory_plain_and_tls() {
    let n: usize = std::env::var("TLS_IDLE_SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let (plain_port, tls_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let devnet = devnet(1_000_000_000).await;
    let patch = json!({
        "ports": {tls_port.to_string(): {"tls": "on"}},
        "poolServer": {"tlsSelfSignedDir": dir.path().join("tls")},
        "logging": {"level": "warn"},
    });
    let config = pool_config_json(&redis, &devnet, &[(plain_port, 1000), (tls_port, 1000)], patch);
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut pool = Command::new(env!("CARGO_BIN_EXE_pastella-pool"))
        .args(["run", "--module", "stratum", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = async {
        while TcpStream::connect(addr(tls_port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), up).await.expect("the pool listens");
    let cert = CertificateDer::from_pem_file(dir.path().join("tls/cert.pem")).unwrap();
    let connector = pinned_connector(&hex::encode(Sha256::digest(cert.as_ref())));
    // Warm up (first template, verifier, allocator arenas) before the baseline.
    let warm = idle_sessions(50, || TestMiner::connect(addr(plain_port))).await;
    drop(warm);

    let before = settled_rss(pool.id()).await;
    let plain = idle_sessions(n, || TestMiner::connect(addr(plain_port))).await;
    let with_plain = settled_rss(pool.id()).await;
    let tls = idle_sessions(n, || tls_miner(&connector, tls_port)).await;
    let with_tls = settled_rss(pool.id()).await;
    let per_plain = (with_plain - before) / n as u64;
    let per_tls = (with_tls - with_plain) / n as u64;
    println!("{n} idle sessions each: plain {per_plain} B/session, TLS {per_tls} B/session (pool RSS {before} -> {with_plain} -> {with_tls})");
    assert_eq!((plain.len(), tls.len()), (n, n), "every session logged in");
    let _ = pool.kill();
    let _ = pool.wait();
}

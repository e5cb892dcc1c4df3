//! TLS for the simulated miners (`--tls`): a rustls client on the ring provider, one
//! [`TlsConnector`] shared by every session of a shard. Like xmrig it either pins the SHA-256 of
//! the pool's certificate (`--tls-fingerprint`, what the pool logs at start) or, for load tests
//! only, accepts any certificate (`--tls-no-verify`). The handshake's signatures are always
//! checked, so the pool does its full handshake work either way.

use std::net::SocketAddr;

use pastella_pool::stratum::transport::client_connector;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tokio_rustls::TlsConnector;

/// Which server certificate a TLS session accepts (the pool crate's client verifier).
pub use pastella_pool::stratum::transport::ClientTrust as Trust;

/// Parses `--tls-fingerprint`: 64 hex digits, colons allowed (`openssl x509 -fingerprint` style).
pub fn parse_fingerprint(text: &str) -> Result<String, String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "--tls-fingerprint: expected the 64 hex digits of a SHA-256 (the pool logs it at start), got {text:?}"
        ))
    }
}

/// The shard's connector for `trust`.
pub fn connector(trust: &Trust) -> Result<TlsConnector, String> {
    client_connector(trust.clone()).map_err(|e| format!("TLS client set-up: {e}"))
}

/// Runs the handshake on a connected socket; the error is a short reason for the report.
pub async fn handshake(
    connector: &TlsConnector,
    pool: SocketAddr,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::IpAddress(pool.ip().into());
    connector.connect(name, tcp).await.map_err(|e| {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::General(why)) => format!("TLS: {why}"),
            Some(other) => format!("TLS: {other}"),
            None => format!("TLS: {}", crate::net::io_reason(&e)),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use clap::Parser;
    use pastella_pool::config::{Config, Module};
    use pastella_pool::devnet::DevnetConfig;
    use serde_json::json;
    use sha2::{Digest, Sha256};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;

    use super::*;
    use crate::cli::{Cli, Command as CliCommand};
    use crate::coordinator;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A `redis-server` child on a free loopback port, killed on drop.
    struct Redis(Child, u16);

    impl Redis {
        async fn start(dir: &std::path::Path) -> Redis {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/deps.sh --test)");
            let redis = Redis(child, port);
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            redis
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Starts the pool (stratum only) in its own thread and actix System; dropping the sender
    /// stops it.
    fn start_pool(config: Config) -> tokio::sync::oneshot::Sender<()> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            actix::System::new().block_on(async move {
                match pastella_pool::app::start(config, &[Module::Stratum]).await {
                    Ok(pool) => {
                        let _ = ready_tx.send(Ok(()));
                        let _ = stop_rx.await;
                        pool.shutdown().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                    }
                }
            });
        });
        ready_rx.recv().expect("the pool thread answers").expect("the pool starts");
        stop_tx
    }

    async fn run(flags: &[String]) -> anyhow::Result<crate::report::Report> {
        let cli = Cli::try_parse_from(
            ["pastella-loadtest", "run"].into_iter().map(String::from).chain(flags.iter().cloned()),
        )
        .expect("valid flags");
        let CliCommand::Run(args) = cli.command else { panic!("not run") };
        coordinator::run(*args).await
    }

    /// A few simulated miners against a real pool's TLS-only port: every one handshakes with the
    /// pinned self-signed certificate, logs in, idles and gets the next block's job over TLS;
    /// with a wrong pin none gets in, and the reason says why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_miners_log_in_idle_and_get_jobs_from_a_real_pool() {
        let dir = tempfile::tempdir().unwrap();
        let redis = Redis::start(dir.path()).await;
        let devnet = pastella_pool::devnet::start(DevnetConfig {
            difficulty: Some(1_000_000_000_000),
            ..DevnetConfig::ephemeral()
        })
        .await
        .expect("the devnet starts");
        let port = free_port();
        let config = json!({
            "coin": "pastella",
            "poolAddress": "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF",
            "coinUnits": 100000000,
            "cnAlgorithm": "randomx",
            "isRandomX": true,
            "daemon": {"host": "127.0.0.1", "port": devnet.daemon_addr.port()},
            "walletApi": {"host": "127.0.0.1", "port": devnet.wallet_addr.port(), "apiKey": "devnet-api-key",
                          "walletFile": "pool.wallet", "walletPassword": "devnet"},
            "redis": {"host": "127.0.0.1", "port": redis.1, "db": 0},
            "ports": {port.to_string(): {"diff": 1000, "tls": "on", "desc": "TLS only"}},
            "poolServer": {"blockRefreshInterval": 50, "bindIp": "127.0.0.1", "tlsSelfSignedDir": dir.path().join("tls")},
            "randomx": {"mode": "light", "threads": 1},
            "api": {"enabled": false},
            "payments": {"enabled": false},
            "blockUnlocker": {"enabled": false},
            "logging": {"level": "warn"}
        });
        let (config, _) = Config::from_json_str(&config.to_string(), "test config").unwrap();
        let _pool = start_pool(config);
        let cert =
            CertificateDer::from_pem_file(dir.path().join("tls/cert.pem")).expect("the pool generated its certificate");
        let pin = hex::encode(Sha256::digest(cert.as_ref()));

        let flags = |pin: &str| {
            [
                "--pool",
                &format!("127.0.0.1:{port}"),
                "--miners",
                "4",
                "--ramp-rate",
                "100",
                "--control",
                &format!("http://{}", devnet.control_addr),
                "--fanout-rounds",
                "1",
                "--fanout-gap",
                "0",
                "--settle",
                "0.2",
                "--raw-seconds",
                "0",
                "--progress-every",
                "60",
                "--tls",
                "--tls-fingerprint",
                pin,
            ]
            .map(String::from)
            .to_vec()
        };
        let report = run(&flags(&pin)).await.expect("the TLS run completes");
        assert_eq!(report.aborted, None);
        assert_eq!(report.setup.transport, "tls (pinned fingerprint)");
        let ramp = report.ramp.expect("a ramp");
        assert_eq!(
            (ramp.connected, ramp.logged_in),
            (4, 4),
            "connect {:?} login {:?}",
            ramp.connect_failures,
            ramp.login_failures
        );
        assert_eq!(report.idle.expect("an idle phase").sessions, 4);
        let round = &report.fanout[0];
        assert_eq!(
            (round.alive, round.got, round.missing),
            (4, 4, 0),
            "every session got the new block's job over TLS"
        );

        let wrong = "00".repeat(32);
        let refused = run(&flags(&wrong)).await.expect("the run reports");
        assert!(refused.aborted.is_some_and(|why| why.contains("no miner could log in")));
        let ramp = refused.ramp.expect("a ramp");
        assert_eq!(ramp.logged_in, 0);
        assert_eq!(ramp.connect_failures.get("TLS: certificate fingerprint mismatch"), Some(&4));
        drop(devnet);
    }

    #[test]
    fn parses_fingerprints_in_xmrig_and_openssl_form() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), hex);
        assert_eq!(parse_fingerprint(&vec!["AB"; 32].join(":")).unwrap(), hex);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}

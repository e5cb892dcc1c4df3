//! The transport below [`MinerSession`](super::MinerSession): it takes an accepted socket
//! through the allow/deny policy, the PROXY header (when a trusted load balancer sends one),
//! the TLS sniff and the TLS handshake, and hands the session a byte stream and the client's
//! real address. The session never knows which of these happened.
//!
//! A plain port without PROXY protocol does no I/O here: the accept path stays what it was.
//! Everything that waits on the peer (header, first byte, handshake) is bounded by a timeout.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::proxy_header::{self, Sniff, Source, V2_MAX};
use crate::config::{PoolServerConfig, ProxyProtocolConfig, TlsConfig, TlsMode};

/// Why a connection was refused before its session started (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address is in `poolServer.deny`.
    Denied,
    /// A PROXY header from an address not in `proxyProtocol.trusted`.
    ProxyUntrusted,
    /// A trusted connection without a header while `proxyProtocol.required` is set.
    ProxyMissing,
    /// A header that breaks the PROXY grammar.
    ProxyInvalid,
    /// No header or first byte within `proxyProtocol.timeout`.
    ProxyTimeout,
    /// The TLS handshake failed.
    TlsHandshake,
    /// The TLS handshake (or the first byte on an `auto` port) did not finish in time.
    TlsTimeout,
    /// The peer closed or the socket failed before the session could start.
    Closed,
}

impl Refusal {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Denied => "deny",
            Refusal::ProxyUntrusted => "proxy_untrusted",
            Refusal::ProxyMissing => "proxy_missing",
            Refusal::ProxyInvalid => "proxy_invalid",
            Refusal::ProxyTimeout => "proxy_timeout",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::TlsTimeout => "tls_timeout",
            Refusal::Closed => "closed",
        }
    }
}

/// What `allow`/`deny` say about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// In `allow` (more specifically than in `deny`): exempt from per-IP caps and limits.
    Allowed,
    /// In `deny` (at least as specifically as in `allow`): refused at accept.
    Denied,
    /// In neither list.
    Default,
}

/// The access rule: the longest matching prefix decides; on a tie `deny` wins.
pub fn access(allow: &[IpNet], deny: &[IpNet], ip: IpAddr) -> Access {
    let longest = |list: &[IpNet]| list.iter().filter(|n| n.contains(&ip)).map(|n| n.prefix_len()).max();
    match (longest(allow), longest(deny)) {
        (None, None) => Access::Default,
        (Some(_), None) => Access::Allowed,
        (Some(a), Some(d)) if a > d => Access::Allowed,
        _ => Access::Denied,
    }
}

/// IPv4-mapped IPv6 addresses as plain IPv4, so bans and caps see one address per host.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The accept policy and TLS setup shared by every port. Both can be replaced while the pool
/// runs (a config reload): connections already accepted keep what they were accepted with.
pub struct Transport {
    policy: ArcSwap<Policy>,
    tls: ArcSwapOption<TlsAcceptor>,
}

/// The parts of `poolServer` the transport applies.
struct Policy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    proxy: ProxyProtocolConfig,
    handshake_timeout: Duration,
}

impl Policy {
    fn of(server: &PoolServerConfig) -> Policy {
        Policy {
            allow: server.allow.clone(),
            deny: server.deny.clone(),
            proxy: server.proxy_protocol.clone(),
            handshake_timeout: server.tls.handshake_timeout,
        }
    }
}

impl Transport {
    /// The policy of `server`; `tls` serves the ports whose mode is `on` or `auto`.
    pub fn new(server: &PoolServerConfig, tls: Option<TlsAcceptor>) -> Transport {
        Transport { policy: ArcSwap::from_pointee(Policy::of(server)), tls: ArcSwapOption::from_pointee(tls) }
    }

    /// Applies a reloaded `poolServer` (allow/deny, PROXY protocol, handshake timeout) to the
    /// connections accepted from now on.
    pub fn set_policy(&self, server: &PoolServerConfig) {
        self.policy.store(Arc::new(Policy::of(server)));
    }

    /// Serves TLS with `acceptor` from now on (a reloaded certificate, or a first TLS port).
    pub fn set_tls(&self, acceptor: TlsAcceptor) {
        self.tls.store(Some(Arc::new(acceptor)));
    }

    /// True once a TLS acceptor is set.
    pub fn has_tls(&self) -> bool {
        self.tls.load().is_some()
    }

    /// What `poolServer.allow`/`deny` say about `ip`.
    pub fn access(&self, ip: IpAddr) -> Access {
        let policy = self.policy.load();
        access(&policy.allow, &policy.deny, ip)
    }

    /// True for addresses in `poolServer.allow` (trusted farm NATs and proxies), which per-IP
    /// caps and limits exempt.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.access(ip) == Access::Allowed
    }

    /// True when connections may start with a PROXY header (`proxyProtocol.enabled`).
    pub fn reads_proxy_header(&self) -> bool {
        self.policy.load().proxy.enabled
    }

    /// True when a connection on a port in `mode` needs [`Transport::identify`] or
    /// [`Transport::secure`] before its session starts; false is the plain fast path.
    pub fn needs_handshake(&self, mode: TlsMode) -> bool {
        self.policy.load().proxy.enabled || mode != TlsMode::Off
    }

    /// The client's address: the one in a PROXY header from a trusted load balancer, else the
    /// socket's. Consumes exactly the header's bytes. Refuses a header from an untrusted
    /// address, a missing one when required, and a malformed one.
    pub async fn identify(&self, stream: &mut TcpStream, peer: IpAddr) -> Result<IpAddr, Refusal> {
        let policy = self.policy.load_full();
        if !policy.proxy.enabled {
            return Ok(peer);
        }
        let trusted = policy.proxy.trusted.iter().any(|n| n.contains(&peer));
        let deadline = Instant::now() + policy.proxy.timeout;
        let mut buf = vec![0u8; V2_MAX];
        loop {
            let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
                Err(_) => return Err(Refusal::ProxyTimeout),
                Ok(Err(_)) | Ok(Ok(0)) => return Err(Refusal::Closed),
                Ok(Ok(n)) => n,
            };
            let seen = &buf[..n];
            match proxy_header::sniff(seen) {
                Sniff::Tls | Sniff::Plain if trusted && policy.proxy.required => return Err(Refusal::ProxyMissing),
                Sniff::Tls | Sniff::Plain => return Ok(peer),
                Sniff::ProxyV1 | Sniff::ProxyV2 if !trusted => return Err(Refusal::ProxyUntrusted),
                Sniff::NeedMore | Sniff::ProxyV1 | Sniff::ProxyV2 => {}
            }
            match proxy_header::parse(seen) {
                Ok(Some(header)) => {
                    stream.read_exact(&mut buf[..header.len]).await.map_err(|_| Refusal::Closed)?;
                    return Ok(match header.source {
                        Source::Client(addr) => canonical_ip(addr.ip()),
                        Source::Connection => peer,
                    });
                }
                Ok(None) if n == buf.len() => return Err(Refusal::ProxyInvalid),
                // The peek returns at once while the bytes seen are all there are: poll, and
                // give up at the deadline (a stalled header must not hold the slot forever).
                Ok(None) if Instant::now() >= deadline => return Err(Refusal::ProxyTimeout),
                Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(_) => return Err(Refusal::ProxyInvalid),
            }
        }
    }

    /// The session's stream on a port in `mode`: plain, or TLS after the handshake (`auto`
    /// decides by the first byte).
    pub async fn secure(&self, stream: TcpStream, mode: TlsMode) -> Result<MinerStream, Refusal> {
        let deadline = Instant::now() + self.policy.load().handshake_timeout;
        let tls = match mode {
            TlsMode::Off => false,
            TlsMode::On => true,
            TlsMode::Auto => {
                let mut first = [0u8; 1];
                match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
                    Err(_) => return Err(Refusal::TlsTimeout),
                    Ok(Err(_)) | Ok(Ok(0)) => return Err(Refusal::Closed),
                    Ok(Ok(_)) => proxy_header::sniff(&first) == Sniff::Tls,
                }
            }
        };
        if !tls {
            return Ok(MinerStream::Plain(stream));
        }
        // Config loading builds an acceptor whenever a port is not `off`.
        let Some(acceptor) = self.tls.load_full() else { return Err(Refusal::TlsHandshake) };
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Err(_) => Err(Refusal::TlsTimeout),
            Ok(Err(_)) => Err(Refusal::TlsHandshake),
            Ok(Ok(tls)) => Ok(MinerStream::Tls(Box::new(tls))),
        }
    }
}

/// A miner's byte stream: plain TCP or TLS over TCP.
pub enum MinerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS; boxed because the rustls state is large and only TLS sessions pay for it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl MinerStream {
    /// Separate read and write halves for the session's reader and writer.
    pub fn into_split(self) -> (StreamReader, StreamWriter) {
        match self {
            MinerStream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                (StreamReader::Plain(read), StreamWriter::Plain(write))
            }
            MinerStream::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                (StreamReader::Tls(read), StreamWriter::Tls(write))
            }
        }
    }
}

/// The read half of a [`MinerStream`].
pub enum StreamReader {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The write half of a [`MinerStream`].
pub enum StreamWriter {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl StreamWriter {
    /// Writes without waiting, as much as the socket takes now. A TLS stream reports
    /// `WouldBlock` so the caller goes through its (async) flush: records need the lock of
    /// the shared TLS state.
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            StreamWriter::Plain(write) => write.try_write(data),
            StreamWriter::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamReader::Plain(read) => Pin::new(read).poll_read(cx, buf),
            StreamReader::Tls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StreamWriter::Plain(write) => Pin::new(write).poll_write(cx, data),
            StreamWriter::Tls(write) => Pin::new(write).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWriter::Plain(write) => Pin::new(write).poll_flush(cx),
            StreamWriter::Tls(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWriter::Plain(write) => Pin::new(write).poll_shutdown(cx),
            StreamWriter::Tls(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}

/// Why the TLS certificate could not be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{path}: {what} (expected PEM)")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was missing or wrong.
        what: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("TLS certificate {path}: {source}")]
    Rustls {
        /// The certificate file.
        path: PathBuf,
        /// The error.
        source: rustls::Error,
    },
}

/// The TLS acceptor of the pool and the certificate it serves.
pub struct TlsSetup {
    /// The acceptor.
    pub acceptor: TlsAcceptor,
    /// The certificate file.
    pub cert_path: PathBuf,
    /// SHA-256 of the certificate's DER, 64 lowercase hex digits (`xmrig --tls-fingerprint`).
    pub fingerprint: String,
    /// True when it was generated by this start.
    pub generated: bool,
}

/// SHA-256 of a DER certificate as `xmrig --tls-fingerprint` expects it.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Loads `sslCert`/`sslKey` (with `sslCA` appended to the chain) or, when they are unset,
/// the self-signed certificate in `tlsSelfSignedDir`, generating it on first start for
/// `hosts` (DNS names or IPs miners connect to).
pub fn load_tls(config: &TlsConfig, hosts: &[String]) -> Result<TlsSetup, TlsSetupError> {
    let (cert_path, key_path, generated) = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), false),
        _ => {
            let cert = config.self_signed_dir.join("cert.pem");
            let key = config.self_signed_dir.join("key.pem");
            let generated = !cert.exists() || !key.exists();
            if generated {
                generate_self_signed(&config.self_signed_dir, &cert, &key, hosts)?;
            }
            (cert, key, generated)
        }
    };
    let mut chain = read_certs(&cert_path)?;
    if let Some(ca) = &config.ca {
        chain.extend(read_certs(ca)?);
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| TlsSetupError::Pem { path: key_path.clone(), what: format!("no private key: {e}") })?;
    let fingerprint = fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|source| TlsSetupError::Rustls { path: cert_path.clone(), source })?;
    Ok(TlsSetup { acceptor: TlsAcceptor::from(Arc::new(server)), cert_path, fingerprint, generated })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError::Pem { path: path.to_path_buf(), what: format!("unreadable certificate: {e}") })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Pem { path: path.to_path_buf(), what: "no certificate".into() });
    }
    Ok(certs)
}

fn generate_self_signed(dir: &Path, cert: &Path, key: &Path, hosts: &[String]) -> Result<(), TlsSetupError> {
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsSetupError::File { path, source }
    };
    let mut names = vec!["localhost".to_string()];
    names.extend(hosts.iter().filter(|h| !h.is_empty() && h.as_str() != "localhost").cloned());
    let generated = rcgen::generate_simple_self_signed(names)?;
    fs::create_dir_all(dir).map_err(file_error(dir))?;
    write_private(key, generated.key_pair.serialize_pem().as_bytes()).map_err(file_error(key))?;
    fs::write(cert, generated.cert.pem()).map_err(file_error(cert))?;
    Ok(())
}

/// Writes a file only its owner can read (a private key).
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn longest_prefix_decides_and_ties_deny() {
        let allow = nets(&["10.1.2.0/24", "192.0.2.7/32"]);
        let deny = nets(&["10.0.0.0/8", "192.0.2.7/32", "0.0.0.0/0"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(access(&allow, &deny, ip("10.1.2.3")), Access::Allowed);
        assert_eq!(access(&allow, &deny, ip("10.9.9.9")), Access::Denied);
        assert_eq!(access(&allow, &deny, ip("192.0.2.7")), Access::Denied);
        assert_eq!(access(&allow, &[], ip("192.0.2.7")), Access::Allowed);
        assert_eq!(access(&[], &[], ip("192.0.2.7")), Access::Default);
        assert_eq!(access(&allow, &deny, ip("::1")), Access::Default);
    }

    proptest::proptest! {
        /// For an address inside an `allow` and a `deny` network, the longer prefix decides and a
        /// tie denies; an address outside both gets the default.
        #[test]
        fn access_follows_the_longest_prefix(ip: [u8; 4], a in 0u8..=32, d in 0u8..=32, other: [u8; 4]) {
            let ip = IpAddr::from(ip);
            let allow = vec![IpNet::new(ip, a).unwrap().trunc()];
            let deny = vec![IpNet::new(ip, d).unwrap().trunc()];
            let expected = if a > d { Access::Allowed } else { Access::Denied };
            proptest::prop_assert_eq!(access(&allow, &deny, ip), expected);
            let other = IpAddr::from(other);
            if !allow[0].contains(&other) && !deny[0].contains(&other) {
                proptest::prop_assert_eq!(access(&allow, &deny, other), Access::Default);
            }
        }
    }

    #[test]
    fn canonical_ip_unmaps_ipv4() {
        assert_eq!(canonical_ip("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(canonical_ip("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn self_signed_is_generated_once_and_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let config = TlsConfig {
            cert: None,
            key: None,
            ca: None,
            self_signed_dir: dir.path().join("tls"),
            handshake_timeout: Duration::from_secs(10),
        };
        let first = load_tls(&config, &["pool.example".to_string()]).unwrap();
        assert!(first.generated);
        assert_eq!(first.fingerprint.len(), 64);
        assert!(first.fingerprint.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let der = CertificateDer::from_pem_file(&first.cert_path).unwrap();
        assert_eq!(first.fingerprint, fingerprint(&der));
        let second = load_tls(&config, &[]).unwrap();
        assert!(!second.generated);
        assert_eq!(second.fingerprint, first.fingerprint);
    }

    #[test]
    fn configured_certificate_and_ca_chain_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = rcgen::generate_simple_self_signed(vec!["pool.example".to_string()]).unwrap();
        let intermediate = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).unwrap();
        let (cert, key, ca) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
        fs::write(&cert, leaf.cert.pem()).unwrap();
        fs::write(&key, leaf.key_pair.serialize_pem()).unwrap();
        fs::write(&ca, intermediate.cert.pem()).unwrap();
        let config = TlsConfig {
            cert: Some(cert.clone()),
            key: Some(key),
            ca: Some(ca),
            self_signed_dir: dir.path().join("unused"),
            handshake_timeout: Duration::from_secs(10),
        };
        let setup = load_tls(&config, &[]).unwrap();
        assert!(!setup.generated);
        assert_eq!(setup.cert_path, cert);
        assert_eq!(setup.fingerprint, fingerprint(leaf.cert.der()));
        assert!(!dir.path().join("unused").exists(), "nothing generated when sslCert is set");
        // A key that does not belong to the certificate is refused at start.
        let other = rcgen::KeyPair::generate().unwrap();
        fs::write(dir.path().join("other.pem"), other.serialize_pem()).unwrap();
        let mismatched = TlsConfig { key: Some(dir.path().join("other.pem")), ca: None, ..config };
        assert!(load_tls(&mismatched, &[]).is_err());
    }

    #[test]
    fn missing_certificate_file_names_the_path() {
        let config = TlsConfig {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            ca: None,
            self_signed_dir: "tls".into(),
            handshake_timeout: Duration::from_secs(10),
        };
        let error = load_tls(&config, &[]).err().unwrap().to_string();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
    }
}

/// Which server certificate a stratum TLS client accepts (the load generator's simulated miners,
/// the tests): like xmrig, the certificate whose SHA-256 is pinned (`--tls-fingerprint`, what
/// the pool logs at start), or any certificate (load tests against a self-signed pool only).
/// Handshake signatures are always checked, so the server does its full work either way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClientTrust {
    /// The certificate whose DER has this SHA-256 (64 lowercase hex digits).
    Fingerprint(String),
    /// Any certificate.
    Any,
}

/// A TLS client connector (ring provider) accepting server certificates as `trust` says.
pub fn client_connector(trust: ClientTrust) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    use tokio_rustls::rustls::crypto;
    let provider = Arc::new(crypto::ring::default_provider());
    let verifier = PinnedServer { trust, provider: provider.clone() };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The certificate check of [`ClientTrust`]; signatures are verified with the provider's
/// algorithms.
#[derive(Debug)]
struct PinnedServer {
    trust: ClientTrust,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match &self.trust {
            ClientTrust::Fingerprint(pin) if fingerprint(end_entity.as_ref()) != *pin => {
                Err(rustls::Error::General("certificate fingerprint mismatch".into()))
            }
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

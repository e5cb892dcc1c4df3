//! TLS for the simulated miners (`--tls`): a rustls client on the ring provider, one
//! [`TlsConnector`] shared by every session of a shard. Like xmrig it either pins the SHA-256 of
//! the pool's certificate (`--tls-fingerprint`, what the pool logs at start) or, for load tests
//! only, accepts any certificate (`--tls-no-verify`). The handshake's signatures are always
//! checked, so the pool does its full handshake work either way.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// Which server certificate a TLS session accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trust {
    /// The certificate whose DER has this SHA-256 (64 lowercase hex digits).
    Fingerprint(String),
    /// Any certificate (load tests against a self-signed pool only).
    Any,
}

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
    let provider = Arc::new(crypto::ring::default_provider());
    let verifier = Accept { trust: trust.clone(), provider: provider.clone() };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
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

/// The certificate check of [`Trust`]; signatures are verified with the provider's algorithms.
#[derive(Debug)]
struct Accept {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Accept {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Any => Ok(ServerCertVerified::assertion()),
            Trust::Fingerprint(pin) if hex::encode(Sha256::digest(end_entity.as_ref())) == *pin => {
                Ok(ServerCertVerified::assertion())
            }
            Trust::Fingerprint(_) => Err(rustls::Error::General("certificate fingerprint mismatch".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fingerprints_in_xmrig_and_openssl_form() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), hex);
        assert_eq!(parse_fingerprint(&vec!["AB"; 32].join(":")).unwrap(), hex);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}

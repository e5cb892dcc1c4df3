//! HTTP clients for the two programs the pool talks to: Pastellad's RPC (spec §1) and
//! Pastella-Wallet-API (spec §6). This module is the only one in the pool that speaks HTTP to
//! them.
//!
//! - [`daemon`]: [`DaemonClient`], JSON-RPC and the plain `/info` and `/height` routes. Every
//!   answer goes through [`decode_rpc`] or [`decode_plain`], pure functions that also decode
//!   the real node's captured bodies in the tests.
//! - [`wallet`]: [`WalletClient`], the REST wallet API with `X-API-KEY`. A send that may have
//!   reached the wallet but got no complete answer is [`WalletError::Uncertain`], never
//!   [`WalletError::Unreachable`]: the payment code must then look the transaction up by hash.
//!
//! Both clients are cheap to clone (one connection pool inside) and apply one timeout to the
//! whole request, body included.

pub mod daemon;
pub mod wallet;

pub use daemon::{
    decode_plain, decode_rpc, BlockHeader, BlockTemplate, BlockTemplateError, DaemonClient, DaemonError, HeightInfo,
    Info,
};
pub use wallet::{
    decode_wallet, decode_wallet_empty, Balance, Destination, PreparedTransaction, SentTransaction, Transfer,
    WalletClient, WalletError, WalletStatus, WalletTransaction,
};

/// `http://host:port` for a host name, IPv4 or IPv6 address.
pub(crate) fn base_url(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

/// A reqwest error with its causes (reqwest's own text omits "Connection refused" and the like).
pub(crate) fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// At most `max` characters of a body, for error messages.
pub(crate) fn body_excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(base_url("127.0.0.1", 21001), "http://127.0.0.1:21001");
        assert_eq!(base_url("::1", 21002), "http://[::1]:21002");
        assert_eq!(base_url("[::1]", 21002), "http://[::1]:21002");
        assert_eq!(base_url("node.example", 1), "http://node.example:1");
    }
}

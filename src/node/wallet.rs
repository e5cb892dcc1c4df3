//! Pastella-Wallet-API (spec §6, CORE `src/walletapi/ApiDispatcher.cpp`): REST with an
//! `X-API-KEY` header, JSON bodies, errors as HTTP 400 `{"errorCode","errorMessage"}`.
//!
//! Sends and prepares are the places where a lost answer matters: [`WalletError::Unreachable`]
//! means the request never reached the wallet (the connection was refused or could not be
//! opened), so nothing was sent or prepared; [`WalletError::Uncertain`] means it may have been
//! processed (relayed, or prepared with its inputs locked), and the caller must not assume
//! otherwise.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chain::Hash;

/// The header carrying the API key (`--rpc-password`).
const API_KEY_HEADER: &str = "X-API-KEY";

/// A client for one wallet API. Clones share the HTTP client.
#[derive(Debug, Clone)]
pub struct WalletClient {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

/// Why a wallet call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// The wallet could not be reached (connection refused, connect timeout) or, for calls that
    /// change nothing, did not answer in time. A send that fails this way was not sent.
    #[error("wallet API unreachable: {0}")]
    Unreachable(String),
    /// A send or prepare request was written but no complete answer came back: it may have
    /// been relayed (look the transaction up by hash before sending again) or prepared (its
    /// inputs locked in the wallet).
    #[error("wallet API did not answer completely, the transaction may have been sent or prepared: {0}")]
    Uncertain(String),
    /// HTTP 401: missing or wrong `X-API-KEY` (the wallet's `--rpc-password`).
    #[error("wallet API refused the API key (HTTP 401): check walletApi password against the wallet's --rpc-password")]
    Unauthorized,
    /// HTTP 403 on a route that needs an open wallet.
    #[error("no wallet is open in the wallet API (HTTP 403): open it with /wallet/open")]
    NoWalletOpen,
    /// HTTP 403 on `/wallet/open` or `/wallet/create`.
    #[error("a wallet is already open in the wallet API (HTTP 403)")]
    WalletAlreadyOpen,
    /// HTTP 400 with the wallet's error code and message (`src/errors/Errors.h`).
    #[error("wallet API error {code}: {message}")]
    Api {
        /// `errorCode`, e.g. 11 NOT_ENOUGH_BALANCE.
        code: i64,
        /// `errorMessage`.
        message: String,
    },
    /// Any other answer, e.g. HTTP 400 with an empty body for a missing JSON key.
    #[error("wallet API answered HTTP {status}: {body:?}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A success answer that is not the expected JSON.
    #[error("cannot decode the wallet API's answer: {0}")]
    Decode(String),
}

impl WalletError {
    /// The wallet's error code, for [`WalletError::Api`].
    pub fn code(&self) -> Option<i64> {
        match self {
            WalletError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `GET /balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Balance {
    /// Spendable now, atomic units.
    pub unlocked: u64,
    /// Not yet spendable (young coinbase outputs, unconfirmed change), atomic units.
    pub locked: u64,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletStatus {
    /// Blocks the wallet has scanned.
    pub wallet_block_count: u64,
    /// The daemon's block count.
    pub local_daemon_block_count: u64,
    /// The network's block count.
    pub network_block_count: u64,
    /// The daemon's peers.
    pub peer_count: u64,
    /// Network hashrate estimate.
    pub hashrate: u64,
    /// Addresses in the wallet container.
    pub sub_wallet_count: u64,
}

/// One payment of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Recipient address.
    pub address: String,
    /// Atomic units, > 0.
    pub amount: u64,
}

/// The answer to `/transactions/prepare/advanced` (HTTP 201): built and held by the wallet,
/// not relayed until [`WalletClient::send_prepared`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparedTransaction {
    /// The transaction's hash, the key for `send_prepared` and for lookups.
    pub transaction_hash: Hash,
    /// The fee it pays.
    pub fee: u64,
    /// Always false for a prepared transaction.
    pub relayed_to_network: bool,
}

/// The answer to `/transactions/send/advanced` or `/send/basic` (HTTP 201).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentTransaction {
    /// The transaction's hash.
    pub transaction_hash: Hash,
    /// The fee paid.
    pub fee: u64,
    /// True: relayed to the daemon.
    pub relayed_to_network: bool,
}

/// A transaction as `/transactions` and `/transactions/hash/<hash>` list it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletTransaction {
    /// Transaction hash.
    pub hash: Hash,
    /// Index of the block that confirmed it; 0 while unconfirmed.
    pub block_height: u64,
    /// Fee paid.
    pub fee: u64,
    /// A block reward.
    pub is_coinbase_transaction: bool,
    /// Block timestamp; 0 while unconfirmed.
    pub timestamp: u64,
    /// Balance changes per wallet address (negative for money leaving the wallet).
    pub transfers: Vec<Transfer>,
    /// Unlock height (coinbase: block index + 10).
    pub unlock_time: u64,
}

/// A balance change of one wallet address inside a [`WalletTransaction`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transfer {
    /// The wallet address.
    pub address: String,
    /// Atomic units; negative when the address paid.
    pub amount: i64,
}

#[derive(Deserialize)]
struct AddressAnswer {
    address: String,
}

#[derive(Deserialize)]
struct TransactionAnswer {
    transaction: WalletTransaction,
}

#[derive(Deserialize)]
struct TransactionList {
    transactions: Vec<WalletTransaction>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HashAnswer {
    transaction_hash: Hash,
}

/// Maps a non-success status to its error; `gate_open_routes` picks the meaning of 403.
fn decode_failure(status: u16, body: &[u8], gate_open_routes: bool) -> WalletError {
    match status {
        401 => WalletError::Unauthorized,
        403 if gate_open_routes => WalletError::WalletAlreadyOpen,
        403 => WalletError::NoWalletOpen,
        _ => {
            if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
                if let (Some(code), Some(Value::String(message))) =
                    (map.get("errorCode").and_then(Value::as_i64), map.get("errorMessage"))
                {
                    return WalletError::Api { code, message: message.clone() };
                }
            }
            WalletError::Http { status, body: super::body_excerpt(body, 300) }
        }
    }
}

/// Decodes a wallet answer with a JSON body (HTTP 200 or 201) into `T`. A 403 decodes as
/// [`WalletError::NoWalletOpen`].
pub fn decode_wallet<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, WalletError> {
    if status == 200 || status == 201 {
        return serde_json::from_slice(body)
            .map_err(|e| WalletError::Decode(format!("{e}: {:?}", super::body_excerpt(body, 300))));
    }
    Err(decode_failure(status, body, false))
}

/// Decodes a wallet answer without a body (`/wallet/open`, `/save`, …): HTTP 200 is success.
pub fn decode_wallet_empty(status: u16, body: &[u8]) -> Result<(), WalletError> {
    if status == 200 {
        return Ok(());
    }
    Err(decode_failure(status, body, false))
}

/// Whether a request may have changed wallet state if its answer is lost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Reads, or writes that are harmless to repeat.
    Safe,
    /// Relays or prepares a transaction: a lost answer is [`WalletError::Uncertain`].
    Sends,
}

impl WalletClient {
    /// A client for the wallet API at `host:port` with its `--rpc-password`; `timeout` bounds
    /// every request as a whole.
    pub fn new(host: &str, port: u16, api_key: &str, timeout: Duration) -> WalletClient {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // Shorter than the whole-request timeout, so a connect that hangs surfaces as a
            // connect error (definitely not sent), never as a timeout after sending.
            .connect_timeout((timeout / 2).min(Duration::from_secs(5)))
            // A fresh connection per request: a send never rides a pooled connection the wallet
            // may be closing, which would blur "not sent" and "maybe sent".
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        WalletClient { http, base: super::base_url(host, port), api_key: api_key.to_string() }
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        effect: Effect,
    ) -> Result<(u16, bytes::Bytes), WalletError> {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).header(API_KEY_HEADER, &self.api_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let lost = |e: reqwest::Error| {
            let text = super::error_chain(&e);
            if effect == Effect::Sends && !e.is_connect() {
                WalletError::Uncertain(text)
            } else {
                WalletError::Unreachable(text)
            }
        };
        let response = request.send().await.map_err(lost)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(lost)?;
        Ok((status, bytes))
    }

    /// `POST /wallet/open`: opens `filename` and points it at the daemon.
    pub async fn open(
        &self,
        filename: &str,
        password: &str,
        daemon_host: &str,
        daemon_port: u16,
    ) -> Result<(), WalletError> {
        let body =
            json!({"filename": filename, "password": password, "daemonHost": daemon_host, "daemonPort": daemon_port});
        let (status, bytes) = self.call(reqwest::Method::POST, "/wallet/open", Some(&body), Effect::Safe).await?;
        if status == 200 {
            return Ok(());
        }
        Err(decode_failure(status, &bytes, true))
    }

    /// `POST /wallet/create`: creates and opens a new wallet file.
    pub async fn create(&self, filename: &str, password: &str) -> Result<(), WalletError> {
        let body = json!({"filename": filename, "password": password});
        let (status, bytes) = self.call(reqwest::Method::POST, "/wallet/create", Some(&body), Effect::Safe).await?;
        if status == 200 {
            return Ok(());
        }
        Err(decode_failure(status, &bytes, true))
    }

    /// `GET /addresses/primary`.
    pub async fn primary_address(&self) -> Result<String, WalletError> {
        let (status, bytes) = self.call(reqwest::Method::GET, "/addresses/primary", None, Effect::Safe).await?;
        decode_wallet::<AddressAnswer>(status, &bytes).map(|a| a.address)
    }

    /// `GET /balance`: the whole container's balance.
    pub async fn balance(&self) -> Result<Balance, WalletError> {
        let (status, bytes) = self.call(reqwest::Method::GET, "/balance", None, Effect::Safe).await?;
        decode_wallet(status, &bytes)
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<WalletStatus, WalletError> {
        let (status, bytes) = self.call(reqwest::Method::GET, "/status", None, Effect::Safe).await?;
        decode_wallet(status, &bytes)
    }

    fn advanced_body(destinations: &[Destination], fee: Option<u64>) -> Value {
        let mut body = json!({"destinations": destinations});
        if let (Some(fee), Value::Object(map)) = (fee, &mut body) {
            map.insert("fee".into(), json!(fee));
        }
        body
    }

    /// `POST /transactions/prepare/advanced`: builds a transaction and holds it unsent, its
    /// inputs locked. `fee: None` lets the wallet use the network minimum. A lost answer is
    /// [`WalletError::Uncertain`]: the wallet may hold a prepared transaction whose hash the
    /// caller never learnt.
    pub async fn prepare_advanced(
        &self,
        destinations: &[Destination],
        fee: Option<u64>,
    ) -> Result<PreparedTransaction, WalletError> {
        let body = Self::advanced_body(destinations, fee);
        let (status, bytes) =
            self.call(reqwest::Method::POST, "/transactions/prepare/advanced", Some(&body), Effect::Sends).await?;
        decode_wallet(status, &bytes)
    }

    /// `POST /transactions/send/prepared`: relays a prepared transaction.
    pub async fn send_prepared(&self, hash: &Hash) -> Result<(), WalletError> {
        let body = json!({"transactionHash": hash.to_hex()});
        let (status, bytes) =
            self.call(reqwest::Method::POST, "/transactions/send/prepared", Some(&body), Effect::Sends).await?;
        let answer: HashAnswer = decode_wallet(status, &bytes)?;
        if answer.transaction_hash != *hash {
            return Err(WalletError::Decode(format!(
                "sent {} but the wallet answered {}",
                hash, answer.transaction_hash
            )));
        }
        Ok(())
    }

    /// `POST /transactions/send/advanced`: builds and relays in one call. On
    /// [`WalletError::Uncertain`] the hash is unknown; prefer prepare + send_prepared.
    pub async fn send_advanced(
        &self,
        destinations: &[Destination],
        fee: Option<u64>,
    ) -> Result<SentTransaction, WalletError> {
        let body = Self::advanced_body(destinations, fee);
        let (status, bytes) =
            self.call(reqwest::Method::POST, "/transactions/send/advanced", Some(&body), Effect::Sends).await?;
        decode_wallet(status, &bytes)
    }

    /// The wallet's transaction with this hash, sent and not yet in a block
    /// (`block_height == 0`) or confirmed (`block_height > 0`); `None` when the wallet knows
    /// neither.
    ///
    /// The real `GET /transactions/hash/<hash>` only searches confirmed transactions, so this
    /// reads `GET /transactions/unconfirmed` **first** and the confirmed ones second: a
    /// transaction that moves from the mempool into a block between the two reads is still
    /// found by the second. (In the other order it would be missed by both.)
    pub async fn transaction(&self, hash: &Hash) -> Result<Option<WalletTransaction>, WalletError> {
        let unconfirmed = self.unconfirmed_transactions().await?;
        if let Some(found) = unconfirmed.into_iter().find(|t| t.hash == *hash) {
            return Ok(Some(found));
        }
        let path = format!("/transactions/hash/{hash}");
        let (status, bytes) = self.call(reqwest::Method::GET, &path, None, Effect::Safe).await?;
        if status == 404 {
            return Ok(None);
        }
        decode_wallet::<TransactionAnswer>(status, &bytes).map(|a| Some(a.transaction))
    }

    /// `POST /addresses/validate`: whether the wallet accepts `address` as a destination;
    /// [`WalletError::Api`] carries its reason when it does not.
    pub async fn validate_address(&self, address: &str) -> Result<(), WalletError> {
        let body = json!({"address": address});
        let (status, bytes) =
            self.call(reqwest::Method::POST, "/addresses/validate", Some(&body), Effect::Safe).await?;
        decode_wallet::<Value>(status, &bytes).map(|_| ())
    }

    /// `DELETE /transactions/prepared/<hash>`: true if the wallet still held it prepared (it
    /// can no longer be sent afterwards; the real wallet keeps its inputs locked until
    /// `PUT /reset`), false if the wallet does not know it (404).
    pub async fn delete_prepared(&self, hash: &Hash) -> Result<bool, WalletError> {
        let path = format!("/transactions/prepared/{hash}");
        let (status, bytes) = self.call(reqwest::Method::DELETE, &path, None, Effect::Safe).await?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(decode_failure(status, &bytes, false)),
        }
    }

    /// `GET /transactions`: every confirmed transaction of the wallet, block order.
    pub async fn transactions(&self) -> Result<Vec<WalletTransaction>, WalletError> {
        let (status, bytes) = self.call(reqwest::Method::GET, "/transactions", None, Effect::Safe).await?;
        decode_wallet::<TransactionList>(status, &bytes).map(|l| l.transactions)
    }

    /// `GET /transactions/unconfirmed`: sent transactions not yet in a block.
    pub async fn unconfirmed_transactions(&self) -> Result<Vec<WalletTransaction>, WalletError> {
        let (status, bytes) = self.call(reqwest::Method::GET, "/transactions/unconfirmed", None, Effect::Safe).await?;
        decode_wallet::<TransactionList>(status, &bytes).map(|l| l.transactions)
    }

    /// `PUT /reset`: rescans the wallet, which frees the inputs of prepared transactions it
    /// forgot (deleted, or lost in a restart).
    pub async fn reset(&self) -> Result<(), WalletError> {
        let (status, bytes) = self.call(reqwest::Method::PUT, "/reset", Some(&json!({})), Effect::Safe).await?;
        decode_wallet_empty(status, &bytes)
    }

    /// `PUT /save`: writes the wallet file.
    pub async fn save(&self) -> Result<(), WalletError> {
        let (status, bytes) = self.call(reqwest::Method::PUT, "/save", None, Effect::Safe).await?;
        decode_wallet_empty(status, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shapes() {
        let r: Result<Balance, _> = decode_wallet(401, b"");
        assert_eq!(r, Err(WalletError::Unauthorized));
        let r: Result<Balance, _> = decode_wallet(403, b"");
        assert_eq!(r, Err(WalletError::NoWalletOpen));
        assert_eq!(decode_failure(403, b"", true), WalletError::WalletAlreadyOpen);
        let body = b"{\n    \"errorCode\": 11,\n    \"errorMessage\": \"Not enough\"\n}\n";
        let err = decode_wallet::<Balance>(400, body).unwrap_err();
        assert_eq!(err.code(), Some(11));
        assert_eq!(decode_wallet_empty(400, b""), Err(WalletError::Http { status: 400, body: String::new() }));
        assert_eq!(decode_wallet_empty(200, b""), Ok(()));
        assert!(matches!(decode_wallet::<Balance>(200, b"{}"), Err(WalletError::Decode(_))));
        let b: Balance = decode_wallet(200, b"{\n    \"locked\": 1,\n    \"unlocked\": 2\n}\n").unwrap();
        assert_eq!(b, Balance { unlocked: 2, locked: 1 });
    }

    #[test]
    fn advanced_body_shape() {
        let d = [Destination { address: "PAS1x".into(), amount: 5 }];
        assert_eq!(
            WalletClient::advanced_body(&d, Some(1000)).to_string(),
            r#"{"destinations":[{"address":"PAS1x","amount":5}],"fee":1000}"#
        );
        assert_eq!(
            WalletClient::advanced_body(&d, None).to_string(),
            r#"{"destinations":[{"address":"PAS1x","amount":5}]}"#
        );
    }
}

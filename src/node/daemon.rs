//! Pastellad's RPC (spec §1): JSON-RPC on `POST /json_rpc`, plain JSON on `GET /info` and
//! `GET /height`.
//!
//! The daemon answers in five shapes (§1.1) and [`decode_rpc`] / [`decode_plain`] map each to
//! one [`DaemonError`] variant, so callers can tell "retry later" ([`DaemonError::is_transient`])
//! from "the daemon said no".

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::chain::{Hash, Template, TemplateError};

/// What the daemon answers to a `syncRequired` method before it is synced (HTTP 200).
const NOT_SYNCED_PREFIX: &str = "Daemon must be synced";

/// A JSON-RPC and REST client for one Pastellad. Clones share the connection pool.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    http: reqwest::Client,
    base: String,
    json_rpc: String,
}

/// Why a daemon call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaemonError {
    /// Connection refused, timed out or dropped: the daemon may be restarting.
    #[error("daemon unreachable: {0}")]
    Unreachable(String),
    /// HTTP 200 `{"status":"Failed","error":"Daemon must be synced …"}`.
    #[error("daemon is not synced yet (it refuses getblocktemplate and submitblock until it is)")]
    NotSynced,
    /// HTTP 200 JSON-RPC error object.
    #[error("daemon JSON-RPC error {code}: {message}")]
    Rpc {
        /// The JSON-RPC error code (`-1` … `-7`).
        code: i64,
        /// The daemon's message.
        message: String,
    },
    /// HTTP 400/500 `{"status":"Failed","error":…}`: a missing or ill-typed parameter, or an
    /// exception inside the daemon.
    #[error("daemon refused the request (HTTP {status}): {error}")]
    Failed {
        /// HTTP status.
        status: u16,
        /// The daemon's `error` text.
        error: String,
    },
    /// HTTP 400 `{"errorCode":…,"errorMessage":…}` from a REST handler.
    #[error("daemon error {code} (HTTP {status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `errorCode`.
        code: i64,
        /// `errorMessage`.
        message: String,
    },
    /// Any other answer, e.g. HTTP 404 with an empty body for an unknown JSON-RPC method.
    #[error("daemon answered HTTP {status}: {body:?}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// An HTTP 200 answer that is not the expected JSON.
    #[error("cannot decode the daemon's answer: {0}")]
    Decode(String),
}

impl DaemonError {
    /// True for failures that go away by themselves: unreachable, not synced, HTTP 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            DaemonError::Unreachable(_) | DaemonError::NotSynced => true,
            DaemonError::Failed { status, .. } | DaemonError::Api { status, .. } | DaemonError::Http { status, .. } => {
                *status >= 500
            }
            DaemonError::Rpc { .. } | DaemonError::Decode(_) => false,
        }
    }
}

/// The `getblocktemplate` result (§1.2), keys as the daemon sends them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockTemplate {
    /// Index of the block being built.
    pub height: u64,
    /// Network difficulty the block must meet.
    pub difficulty: u64,
    /// Offset of the first reserved byte in the blob (0 when none were reserved).
    pub reserved_offset: u64,
    /// The full block, hex.
    pub blocktemplate_blob: String,
    /// RandomX key for `height`.
    pub seed_hash: Hash,
    /// RandomX key for `height + 1`.
    pub next_seed_hash: Hash,
    /// `"OK"`.
    pub status: String,
}

/// Why a [`BlockTemplate`] cannot be turned into a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockTemplateError {
    /// `blocktemplate_blob` is not hex.
    #[error("blocktemplate_blob is not hex: {0}")]
    Hex(String),
    /// The blob is not a usable template.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl BlockTemplate {
    /// Decodes and parses the template; `reserve_size` is what the pool asked for.
    pub fn parse(&self, reserve_size: usize) -> Result<Template, BlockTemplateError> {
        let blob = hex::decode(&self.blocktemplate_blob).map_err(|e| BlockTemplateError::Hex(e.to_string()))?;
        Ok(Template::parse(
            blob,
            self.reserved_offset,
            reserve_size,
            self.height,
            self.difficulty,
            self.seed_hash,
            self.next_seed_hash,
        )?)
    }
}

/// A `block_header` object (§1.4); the devnet serializes the same struct.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct BlockHeader {
    /// 1 for index 0-1, 2 after.
    pub major_version: u8,
    /// 0.
    pub minor_version: u8,
    /// Header timestamp.
    pub timestamp: u64,
    /// Id of the parent.
    pub prev_hash: Hash,
    /// The header nonce (little-endian u32 of the 4 nonce bytes).
    pub nonce: u64,
    /// True for a block on an alternative chain (an orphan, from the pool's point of view).
    pub orphan_status: bool,
    /// Block index (genesis = 0).
    pub height: u64,
    /// Top index minus `height`.
    pub depth: u64,
    /// Block id.
    pub hash: Hash,
    /// The difficulty this block was mined at.
    pub difficulty: u64,
    /// Sum of all coinbase outputs, staking payouts included (§5.3).
    pub reward: u64,
    /// Transactions in the block; the real node counts the coinbase too.
    pub num_txes: u64,
    /// Block size in bytes.
    pub block_size: u64,
}

/// `GET /info` (§1.6): every key, in the daemon's order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Info {
    /// Block count (top index + 1).
    pub height: u64,
    /// Difficulty of the next block.
    pub difficulty: u64,
    /// Non-coinbase transactions in the main chain.
    pub tx_count: u64,
    /// Transactions in the mempool.
    pub tx_pool_size: u64,
    /// Blocks on alternative chains.
    pub alt_blocks_count: u64,
    /// Outgoing P2P connections.
    pub outgoing_connections_count: u64,
    /// Incoming P2P connections.
    pub incoming_connections_count: u64,
    /// White peer list size.
    pub white_peerlist_size: u64,
    /// Grey peer list size.
    pub grey_peerlist_size: u64,
    /// Highest block index seen from peers.
    pub last_known_block_index: u64,
    /// Block count of the network as the daemon sees it.
    pub network_height: u64,
    /// Fork heights (`[250, 500000]`).
    pub upgrade_heights: Vec<u64>,
    /// Highest fork height this build supports.
    pub supported_height: u64,
    /// `difficulty / 30`.
    pub hashrate: u64,
    /// `height == network_height`.
    pub synced: bool,
    /// Major version of the top block.
    pub major_version: u8,
    /// Minor version of the top block.
    pub minor_version: u8,
    /// Daemon version, e.g. `"1.0.3"`.
    pub version: String,
    /// `"OK"`.
    pub status: String,
    /// Unix time the daemon started.
    pub start_time: u64,
}

/// `GET /height`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HeightInfo {
    /// Block count.
    pub height: u64,
    /// Network block count.
    pub network_height: u64,
    /// `"OK"`.
    pub status: String,
}

#[derive(Deserialize)]
struct HeaderResult {
    block_header: BlockHeader,
}

#[derive(Deserialize)]
struct CountResult {
    count: u64,
}

#[derive(Deserialize)]
struct StatusResult {
    status: String,
}

/// Maps a non-success body of any route to its error: the daemon's `failRequest`
/// (`{"status":"Failed","error"}`), a REST `Error` (`{"errorCode","errorMessage"}`), or anything else.
fn decode_failure(status: u16, value: Option<&Value>, body: &[u8]) -> DaemonError {
    if let Some(Value::Object(map)) = value {
        if let (Some(Value::String(s)), Some(Value::String(error))) = (map.get("status"), map.get("error")) {
            if s == "Failed" {
                if status == 200 && error.starts_with(NOT_SYNCED_PREFIX) {
                    return DaemonError::NotSynced;
                }
                return DaemonError::Failed { status, error: error.clone() };
            }
        }
        if let (Some(code), Some(Value::String(message))) =
            (map.get("errorCode").and_then(Value::as_i64), map.get("errorMessage"))
        {
            return DaemonError::Api { status, code, message: message.clone() };
        }
    }
    DaemonError::Http { status, body: super::body_excerpt(body, 300) }
}

/// Decodes a JSON-RPC answer: HTTP status and body in, the `result` object out.
pub fn decode_rpc<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, DaemonError> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if status == 200 {
        if let Some(Value::Object(map)) = &value {
            if let Some(result) = map.get("result") {
                return T::deserialize(result).map_err(|e| DaemonError::Decode(format!("result: {e}")));
            }
            if let Some(error) = map.get("error").and_then(Value::as_object) {
                let code = error.get("code").and_then(Value::as_i64);
                let message = error.get("message").and_then(Value::as_str);
                if let (Some(code), Some(message)) = (code, message) {
                    return Err(DaemonError::Rpc { code, message: message.to_string() });
                }
            }
        }
        return match decode_failure(status, value.as_ref(), body) {
            DaemonError::Http { body, .. } => Err(DaemonError::Decode(format!("not a JSON-RPC answer: {body:?}"))),
            other => Err(other),
        };
    }
    Err(decode_failure(status, value.as_ref(), body))
}

/// Decodes a plain REST answer (`/info`, `/height`): the whole body is `T` on HTTP 200.
pub fn decode_plain<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, DaemonError> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if status == 200 {
        // A not-synced or failed answer is also HTTP 200; recognise it before decoding as T.
        let failure = decode_failure(status, value.as_ref(), body);
        if !matches!(failure, DaemonError::Http { .. }) {
            return Err(failure);
        }
        return match value {
            Some(v) => T::deserialize(v).map_err(|e| DaemonError::Decode(e.to_string())),
            None => Err(DaemonError::Decode(format!("not JSON: {:?}", super::body_excerpt(body, 300)))),
        };
    }
    Err(decode_failure(status, value.as_ref(), body))
}

impl DaemonClient {
    /// A client for the daemon at `host:port`; `timeout` bounds every request as a whole.
    pub fn new(host: &str, port: u16, timeout: Duration) -> DaemonClient {
        let base = super::base_url(host, port);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // Below cpp-httplib's 5 s keep-alive, so a pooled connection is never reused just
            // as the daemon closes it.
            .pool_idle_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        let json_rpc = format!("{base}/json_rpc");
        DaemonClient { http, base, json_rpc }
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn read(&self, request: reqwest::RequestBuilder) -> Result<(u16, bytes::Bytes), DaemonError> {
        let response = request.send().await.map_err(|e| DaemonError::Unreachable(super::error_chain(&e)))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| DaemonError::Unreachable(super::error_chain(&e)))?;
        Ok((status, body))
    }

    async fn rpc<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, DaemonError> {
        let body = json!({"jsonrpc": "2.0", "id": "0", "method": method, "params": params});
        let (status, bytes) = self.read(self.http.post(&self.json_rpc).json(&body)).await?;
        decode_rpc(status, &bytes)
    }

    async fn plain<T: DeserializeOwned>(&self, path: &str) -> Result<T, DaemonError> {
        let (status, bytes) = self.read(self.http.get(format!("{}{path}", self.base))).await?;
        decode_plain(status, &bytes)
    }

    /// `getblocktemplate` for `wallet_address` with `reserve_size` reserved extra-nonce bytes.
    pub async fn get_block_template(
        &self,
        reserve_size: usize,
        wallet_address: &str,
    ) -> Result<BlockTemplate, DaemonError> {
        self.rpc("getblocktemplate", json!({"reserve_size": reserve_size, "wallet_address": wallet_address})).await
    }

    /// `submitblock` with the full block blob. `Ok` also means "already known" or "added to an
    /// alternative chain" (§1.3): check the header by hash to learn where the block went.
    pub async fn submit_block(&self, blob_hex: &str) -> Result<(), DaemonError> {
        let result: StatusResult = self.rpc("submitblock", json!([blob_hex])).await?;
        if result.status == "OK" {
            Ok(())
        } else {
            Err(DaemonError::Decode(format!("submitblock status {:?}", result.status)))
        }
    }

    /// `getlastblockheader`: the top block.
    pub async fn get_last_block_header(&self) -> Result<BlockHeader, DaemonError> {
        let result: HeaderResult = self.rpc("getlastblockheader", json!({})).await?;
        Ok(result.block_header)
    }

    /// `getblockheaderbyheight`: the main-chain block at index `height`.
    pub async fn get_block_header_by_height(&self, height: u64) -> Result<BlockHeader, DaemonError> {
        let result: HeaderResult = self.rpc("getblockheaderbyheight", json!({"height": height})).await?;
        Ok(result.block_header)
    }

    /// `getblockheaderbyhash`: any known block, main chain or alternative (`orphan_status`).
    pub async fn get_block_header_by_hash(&self, hash: &Hash) -> Result<BlockHeader, DaemonError> {
        let result: HeaderResult = self.rpc("getblockheaderbyhash", json!({"hash": hash.to_hex()})).await?;
        Ok(result.block_header)
    }

    /// `getblockcount`: top index + 1.
    pub async fn get_block_count(&self) -> Result<u64, DaemonError> {
        let result: CountResult = self.rpc("getblockcount", json!({})).await?;
        Ok(result.count)
    }

    /// `GET /info`.
    pub async fn info(&self) -> Result<Info, DaemonError> {
        self.plain("/info").await
    }

    /// `GET /height`.
    pub async fn height(&self) -> Result<HeightInfo, DaemonError> {
        self.plain("/height").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_shape() {
        let r: Result<Value, _> =
            decode_rpc(200, br#"{"jsonrpc":"2.0","error":{"message":"Block not accepted","code":-7}}"#);
        assert_eq!(r, Err(DaemonError::Rpc { code: -7, message: "Block not accepted".into() }));
        let r: Result<Value, _> = decode_rpc(
            200,
            br#"{"status":"Failed","error":"Daemon must be synced to process this RPC method call, please retry when synced"}"#,
        );
        assert_eq!(r, Err(DaemonError::NotSynced));
        assert!(DaemonError::NotSynced.is_transient());
        let r: Result<Value, _> =
            decode_rpc(400, br#"{"status":"Failed","error":"Missing JSON parameter: 'reserve_size'"}"#);
        assert_eq!(r, Err(DaemonError::Failed { status: 400, error: "Missing JSON parameter: 'reserve_size'".into() }));
        assert!(!r.unwrap_err().is_transient());
        let r: Result<Value, _> = decode_rpc(500, br#"{"status":"Failed","error":"Internal server error: x"}"#);
        assert!(r.unwrap_err().is_transient());
        let r: Result<Value, _> = decode_rpc(400, br#"{"errorCode":7,"errorMessage":"bad"}"#);
        assert_eq!(r, Err(DaemonError::Api { status: 400, code: 7, message: "bad".into() }));
        let r: Result<Value, _> = decode_rpc(404, b"");
        assert_eq!(r, Err(DaemonError::Http { status: 404, body: String::new() }));
        let r: Result<Value, _> = decode_rpc(200, b"<html>");
        assert!(matches!(r, Err(DaemonError::Decode(_))));
        let r: Result<CountResult, _> = decode_rpc(200, br#"{"jsonrpc":"2.0","result":{"status":"OK"}}"#);
        assert!(matches!(r, Err(DaemonError::Decode(_))));
        let r: Result<HeightInfo, _> = decode_plain(200, br#"{"height":5,"network_height":5,"status":"OK"}"#);
        assert_eq!(r.unwrap().height, 5);
        let r: Result<HeightInfo, _> = decode_plain(503, b"busy");
        assert!(r.unwrap_err().is_transient());
    }
}

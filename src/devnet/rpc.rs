//! The simulated Pastellad RPC (spec §1; CORE `src/rpc/RpcServer.cpp`): `/json_rpc` with the
//! six pool methods, `/info`, `/height`, `/fee`, and the control endpoints under `/devnet/`.
//!
//! Request handling follows the real server step by step, so every bad input gets the real
//! answer: body not JSON → 400; no `method` → 400; unknown method → 404 with an empty body;
//! sync check for `getblocktemplate`/`submitblock`; a missing or ill-typed parameter → 400
//! `{"status":"Failed","error":…}` with `JsonHelper`'s text; handler errors as JSON-RPC error
//! objects with HTTP 200.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::http::{self, Request, Response};
use super::json::{self, as_str, get_array, get_object, get_str, get_u64};
use super::ledger::{Added, CheckOutcome, Reject};
use super::{control, now, wallet_api, DaemonMode, Shared};
use crate::chain::difficulty::meets_difficulty;
use crate::chain::params::DIFFICULTY_TARGET;
use crate::chain::Hash;
use crate::node::BlockHeader;
use crate::pow::Priority;

/// `failRequest` text of the not-synced middleware check.
pub(crate) const NOT_SYNCED: &str = "Daemon must be synced to process this RPC method call, please retry when synced";
/// The text of HTTP 500 answers in `error500` mode.
pub(crate) const INTERNAL_ERROR: &str = "Internal server error: simulated failure (devnet error500 mode)";
/// `PROJECT_VERSION` of the captured node.
const VERSION: &str = "1.0.3";

/// Serves the daemon port, giving it up while the mode is [`DaemonMode::Refuse`] and binding
/// it again afterwards.
pub(crate) async fn listen(shared: Arc<Shared>, first: TcpListener, addr: SocketAddr, handler: http::Handler) {
    let mut modes = shared.mode.subscribe();
    let mut listener = Some(first);
    loop {
        while *modes.borrow_and_update() == DaemonMode::Refuse {
            listener = None;
            tokio::select! {
                changed = modes.changed() => if changed.is_err() { return },
                _ = shared.stop.cancelled() => return,
            }
        }
        let current = match listener.take() {
            Some(l) => l,
            None => match http::bind(addr) {
                Ok(l) => l,
                Err(error) => {
                    tracing::warn!(%addr, %error, "devnet: cannot listen on the daemon port again, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => continue,
                        _ = shared.stop.cancelled() => return,
                    }
                }
            },
        };
        let epoch = shared.stop.child_token();
        let server = http::serve(current, handler.clone(), epoch.clone());
        tokio::pin!(server);
        loop {
            tokio::select! {
                _ = &mut server => return,
                changed = modes.changed() => {
                    if changed.is_err() {
                        epoch.cancel();
                        return;
                    }
                    if *modes.borrow() == DaemonMode::Refuse {
                        // Close the listener and every open connection.
                        epoch.cancel();
                        (&mut server).await;
                        break;
                    }
                }
            }
        }
    }
}

/// `failRequest`: `{"status":"Failed","error":…}`, compact.
pub(crate) fn fail_request(status: u16, error: &str) -> Response {
    Response::json(status, json::compact(&json!({"status": "Failed", "error": error})))
}

/// `failJsonRpcRequest`: HTTP 200 with a JSON-RPC error object, compact.
fn fail_rpc(code: i64, message: &str) -> Response {
    Response::json(200, json::compact(&json!({"jsonrpc": "2.0", "error": {"message": message, "code": code}})))
}

/// A JSON-RPC result, pretty-printed like the captures.
fn result(value: Value) -> Response {
    Response::json(200, json::pretty(&json!({"jsonrpc": "2.0", "result": value})))
}

/// Handles one request on the daemon port.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request) -> Response {
    if req.path == "/devnet" || req.path.starts_with("/devnet/") {
        return control::handle(shared, req).await;
    }
    let mode = shared.mode();
    if mode == DaemonMode::Refuse {
        // The listener is being closed; a request that slipped in gets no answer either.
        return Response::Broken(Vec::new());
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET" | "POST", "/json_rpc") => json_rpc(&shared, &req, mode).await,
        ("GET", "/info" | "/height" | "/fee") if mode == DaemonMode::Error500 => fail_request(500, INTERNAL_ERROR),
        ("GET", "/info") => Response::json(200, json::pretty(&info(&shared, mode))),
        ("GET", "/height") => {
            let count = shared.lock().ledger.count();
            let network = network_height(count, mode);
            Response::json(200, json::pretty(&json!({"height": count, "network_height": network, "status": "OK"})))
        }
        ("GET", "/fee") => Response::json(200, json::pretty(&json!({"address": "", "amount": 0, "status": "OK"}))),
        _ => Response::empty(404),
    }
}

/// While "not synced", the node sees peers one block ahead.
fn network_height(count: u64, mode: DaemonMode) -> u64 {
    if mode == DaemonMode::NotSynced {
        count + 1
    } else {
        count
    }
}

fn info(shared: &Shared, mode: DaemonMode) -> Value {
    let state = shared.lock();
    let ledger = &state.ledger;
    let top = ledger.top();
    let count = ledger.count();
    let difficulty = ledger.difficulty_after(&top.id);
    let network = network_height(count, mode);
    json!({
        "height": count,
        "difficulty": difficulty,
        "tx_count": ledger.confirmed_tx_count(),
        "tx_pool_size": ledger.mempool().len(),
        "alt_blocks_count": ledger.alternative_blocks().len(),
        "outgoing_connections_count": 1,
        "incoming_connections_count": 1,
        "white_peerlist_size": 0,
        "grey_peerlist_size": 0,
        "last_known_block_index": network - 1,
        "network_height": network,
        "upgrade_heights": [250, 500000],
        "supported_height": 500000,
        "hashrate": difficulty / DIFFICULTY_TARGET,
        "synced": count == network,
        "major_version": top.block.header.major_version,
        "minor_version": top.block.header.minor_version,
        "version": VERSION,
        "status": "OK",
        "start_time": shared.start_time,
    })
}

/// `getJsonBody`'s error text: cpp-httplib's stream keeps the logged warning, so a non-empty
/// body is echoed before the message.
fn body_not_json(body: &[u8]) -> String {
    if body.is_empty() {
        "Failed to parse request body as JSON".into()
    } else {
        format!(
            "Warning: received body is not JSON encoded!\nKey/value parameters are NOT supported.\nBody:\n{}Failed to parse request body as JSON",
            String::from_utf8_lossy(body)
        )
    }
}

/// The `RpcServer` constructor's `jsonRpc` lambda plus the middleware.
async fn json_rpc(shared: &Arc<Shared>, req: &Request, mode: DaemonMode) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return fail_request(400, &body_not_json(&req.body)),
    };
    let method = match body.get("method") {
        None => return fail_request(400, "Missing JSON parameter: 'method'"),
        Some(m) => match as_str(m) {
            Ok(m) => m,
            Err(e) => return fail_request(400, &e),
        },
    };
    let sync_required = match method {
        "getblocktemplate" | "submitblock" => true,
        "getblockcount" | "getlastblockheader" | "getblockheaderbyhash" | "getblockheaderbyheight" => false,
        _ => return Response::empty(404),
    };
    if mode == DaemonMode::Error500 {
        return fail_request(500, INTERNAL_ERROR);
    }
    if sync_required && mode == DaemonMode::NotSynced {
        return fail_request(200, NOT_SYNCED);
    }
    let answer = match method {
        "getblocktemplate" => get_block_template(shared, &body),
        "submitblock" => return submit_block(shared, &body).await.unwrap_or_else(|e| fail_request(400, &e)),
        "getblockcount" => Ok(result(json!({"status": "OK", "count": shared.lock().ledger.count()}))),
        "getlastblockheader" => {
            let state = shared.lock();
            let top = state.ledger.top().id;
            Ok(header_result(state.ledger.header(&top)))
        }
        "getblockheaderbyhash" => get_block_header_by_hash(shared, &body),
        _ => get_block_header_by_height(shared, &body),
    };
    answer.unwrap_or_else(|e| fail_request(400, &e))
}

fn get_block_template(shared: &Shared, body: &Value) -> Result<Response, String> {
    let params = get_object(body, "params")?;
    let reserve_size = get_u64(params, "reserve_size")?;
    if reserve_size > 255 {
        return Ok(fail_rpc(-3, "Too big reserved size, maximum allowed is 255"));
    }
    let address = get_str(params, "wallet_address")?;
    let address = match wallet_api::validate_address(address) {
        Ok(a) => a,
        Err((_, message)) => return Ok(fail_rpc(-4, &message)),
    };
    let template = {
        let state = shared.lock();
        state.ledger.template(*address.key(), reserve_size as usize, now(), &mut rand::thread_rng())
    };
    Ok(result(json!({
        "height": template.height,
        "difficulty": template.difficulty,
        "reserved_offset": template.reserved_offset,
        "blocktemplate_blob": hex::encode(&template.blob),
        "seed_hash": template.seed_hash,
        "next_seed_hash": template.next_seed_hash,
        "status": "OK",
    })))
}

fn not_accepted() -> Response {
    fail_rpc(-7, "Block not accepted")
}

async fn submit_block(shared: &Arc<Shared>, body: &Value) -> Result<Response, String> {
    let params = get_array(body, "params")?;
    if params.len() != 1 {
        return Ok(fail_rpc(-1, &format!("You must submit one and only one block blob! (Found {})", params.len())));
    }
    let blob_hex = as_str(&params[0])?;
    let Ok(blob) = hex::decode(blob_hex) else {
        return Ok(fail_rpc(-6, "Submitted block blob is not hex!"));
    };
    let checked = shared.lock().ledger.check(&blob, now());
    let (block, checked) = match checked {
        Ok(ok) => ok,
        Err(CheckOutcome::AlreadyExists) => return Ok(result(json!({"status": "OK"}))),
        Err(CheckOutcome::Reject(reason)) => {
            tracing::info!(%reason, "devnet: submitblock rejected");
            return Ok(not_accepted());
        }
    };
    // RandomX without the lock: about one light-mode hash.
    let verified = shared.engine.verify(checked.seed.0, checked.hashing_blob.clone(), Priority::Block).await;
    let hash = match verified {
        Ok(v) => Hash(v.hash),
        Err(error) => {
            tracing::warn!(%error, "devnet: cannot verify a submitted block");
            return Ok(not_accepted());
        }
    };
    if !meets_difficulty(&hash, checked.difficulty) {
        tracing::info!(reason = %Reject::LowDifficulty(checked.difficulty), block = %checked.id, "devnet: submitblock rejected");
        return Ok(not_accepted());
    }
    let added = shared.lock().ledger.add(block, &checked);
    match added {
        Ok(added) => {
            if added != Added::AlreadyExists {
                tracing::info!(height = checked.height, block = %checked.id, ?added, "devnet: block accepted");
                shared.changed();
            }
            Ok(result(json!({"status": "OK"})))
        }
        Err(reason) => {
            tracing::info!(%reason, "devnet: submitblock rejected");
            Ok(not_accepted())
        }
    }
}

fn header_result(header: Option<BlockHeader>) -> Response {
    let Some(header) = header else {
        return fail_request(500, "Internal server error: block not found");
    };
    result(json!({"status": "OK", "block_header": header}))
}

fn get_block_header_by_height(shared: &Shared, body: &Value) -> Result<Response, String> {
    let params = get_object(body, "params")?;
    let height = get_u64(params, "height")?;
    let state = shared.lock();
    let top = state.ledger.top().height;
    if height > top {
        return Ok(fail_rpc(
            -2,
            &format!("Requested block header for a height that is higher than the current blockchain height! Current height: {top}"),
        ));
    }
    let id = state.ledger.main_block(height).map(|b| b.id).unwrap_or_default();
    Ok(header_result(state.ledger.header(&id)))
}

fn get_block_header_by_hash(shared: &Shared, body: &Value) -> Result<Response, String> {
    let params = get_object(body, "params")?;
    let text = get_str(params, "hash")?;
    let Ok(hash) = Hash::from_hex(text) else {
        return Ok(fail_rpc(-1, "Block hash specified is not a valid hex!"));
    };
    let state = shared.lock();
    match state.ledger.header(&hash) {
        Some(h) => Ok(header_result(Some(h))),
        None => Ok(fail_rpc(-5, "Block hash specified does not exist!")),
    }
}

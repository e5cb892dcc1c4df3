//! The control endpoints (`/devnet/...`), served on the daemon port and on the control port,
//! which stays up while the daemon refuses connections. Loopback peers only; JSON in and out.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::http::{Request, Response};
use super::json;
use super::wallet::{Failure, FailureKind};
use super::{DaemonMode, Shared};

/// Upper bound for `POST /devnet/mine`.
const MAX_MINE: u64 = 10_000;

fn answer(status: u16, value: Value) -> Response {
    Response::json(status, json::pretty(&value))
}

fn bad(message: impl Into<String>) -> Response {
    answer(400, json!({"error": message.into()}))
}

/// An optional unsigned field.
fn field_u64(body: &Value, name: &str) -> Result<Option<u64>, Response> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| bad(format!("\"{name}\" must be a non-negative integer"))),
    }
}

/// An optional number of seconds (fractions allowed).
fn field_seconds(body: &Value, name: &str) -> Result<Option<Duration>, Response> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(Some)
            .ok_or_else(|| bad(format!("\"{name}\" must be a non-negative number of seconds"))),
    }
}

/// Handles one control request.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request) -> Response {
    if !req.peer.ip().to_canonical().is_loopback() {
        return answer(403, json!({"error": "the devnet control endpoints only answer loopback clients"}));
    }
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return bad("the body must be a JSON object"),
        }
    };
    let result = match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/devnet/mine") => mine(&shared, &body),
        ("POST", "/devnet/reorg") => reorg(&shared, &body),
        ("POST", "/devnet/daemon") => daemon(&shared, &body),
        ("POST", "/devnet/wallet/fail") => fail(&shared, &body),
        ("POST", "/devnet/wallet/restart") => {
            shared.restart_wallet();
            Ok(answer(200, json!({"prepared": shared.state().wallet.prepared})))
        }
        ("POST", "/devnet/wallet/reject") => reject(&shared, &body),
        ("POST", "/devnet/mempool/drop") => drop_mempool(&shared, &body),
        ("POST", "/devnet/wallet/mine_after_lookup") => mine_after_lookup(&shared, &body),
        ("POST", "/devnet/staking") => staking(&shared, &body),
        ("GET", "/devnet/state") => Ok(answer(200, serde_json::to_value(shared.state()).unwrap_or_default())),
        ("GET", path) if path.starts_with("/devnet/received/") => {
            let address = &path["/devnet/received/".len()..];
            Ok(answer(200, serde_json::to_value(shared.received(address)).unwrap_or_default()))
        }
        _ => Err(answer(
            404,
            json!({"error": format!("no devnet endpoint {} {}; see docs/DEVNET.md", req.method, req.path)}),
        )),
    };
    result.unwrap_or_else(|r| r)
}

fn mine(shared: &Shared, body: &Value) -> Result<Response, Response> {
    let count = field_u64(body, "count")?.unwrap_or(1);
    if count == 0 || count > MAX_MINE {
        return Err(bad(format!("\"count\" must be between 1 and {MAX_MINE}")));
    }
    let key = match body.get("address") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let text = v.as_str().ok_or_else(|| bad("\"address\" must be a string"))?;
            let address = crate::chain::Address::parse(text).map_err(|e| bad(format!("\"address\": {e}")))?;
            Some(*address.key())
        }
    };
    let mined = shared.mine(count, key);
    let state = shared.lock();
    let top = state.ledger.top();
    Ok(answer(200, json!({"mined": mined, "height": top.height, "tip": top.id})))
}

fn reorg(shared: &Shared, body: &Value) -> Result<Response, Response> {
    let depth = field_u64(body, "depth")?.ok_or_else(|| bad("\"depth\" is required"))?;
    let reorg = shared.reorg(depth).map_err(bad)?;
    Ok(answer(200, serde_json::to_value(reorg).unwrap_or_default()))
}

fn daemon(shared: &Arc<Shared>, body: &Value) -> Result<Response, Response> {
    let mode: DaemonMode = match body.get("mode") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| bad("\"mode\" must be one of \"normal\", \"refuse\", \"error500\", \"not_synced\""))?,
        None => return Err(bad("\"mode\" is required")),
    };
    let seconds = field_seconds(body, "seconds")?;
    shared.set_mode(mode, seconds);
    Ok(answer(200, json!({"mode": mode, "resume_in_seconds": seconds.map(|s| s.as_secs_f64())})))
}

fn fail(shared: &Shared, body: &Value) -> Result<Response, Response> {
    let count = field_u64(body, "count")?.unwrap_or(1);
    if count > 1000 {
        return Err(bad("\"count\" must be at most 1000"));
    }
    let kind: FailureKind = match body.get("kind") {
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            bad("\"kind\" must be one of \"error\", \"timeout\", \"drop_after_success\", \"relay_then_error\", \"prepare_then_drop\", \"prepare_then_hold\"")
        })?,
        None => FailureKind::Error,
    };
    let code = match body.get("code") {
        None => 31,
        Some(v) => v.as_i64().ok_or_else(|| bad("\"code\" must be an integer"))?,
    };
    let hold = field_seconds(body, "seconds")?.unwrap_or(Duration::from_secs(60));
    shared.fail_sends(count as usize, Failure { kind, code, hold });
    let pending = shared.state().wallet.pending_failures;
    Ok(answer(200, json!({"pending_failures": pending})))
}

fn mine_after_lookup(shared: &Shared, body: &Value) -> Result<Response, Response> {
    let count = field_u64(body, "count")?.unwrap_or(1).min(1000) as u32;
    shared.mine_after_lookups(count);
    Ok(answer(200, json!({"mine_after_lookups": count})))
}

fn drop_mempool(shared: &Shared, body: &Value) -> Result<Response, Response> {
    let hash = match body.get("hash") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|h| crate::chain::Hash::from_hex(h).ok())
                .ok_or_else(|| bad("\"hash\" must be a transaction hash (64 hex digits)"))?,
        ),
    };
    Ok(answer(200, json!({"dropped": shared.drop_mempool(hash)})))
}

fn reject(shared: &Shared, body: &Value) -> Result<Response, Response> {
    let address = body.get("address").and_then(Value::as_str).ok_or_else(|| bad("\"address\" is required"))?;
    let code = match body.get("code") {
        None => 15,
        Some(v) => v.as_i64().ok_or_else(|| bad("\"code\" must be an integer"))?,
    };
    let validate = match body.get("validate") {
        None => true,
        Some(v) => v.as_bool().ok_or_else(|| bad("\"validate\" must be true or false"))?,
    };
    shared.reject_address(address, code, validate);
    Ok(answer(200, json!({"address": address, "code": code, "validate": validate})))
}

fn staking(shared: &Shared, body: &Value) -> Result<Response, Response> {
    let amount = field_u64(body, "amount")?.ok_or_else(|| bad("\"amount\" is required"))?;
    if amount == 0 {
        return Err(bad("\"amount\" must be above 0 (coinbase outputs cannot be 0)"));
    }
    let height = shared.attach_staking(amount);
    let address = crate::chain::Address::from_key(shared.staker_key).encode();
    Ok(answer(200, json!({"height": height, "amount": amount, "address": address})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet::{start, DevnetConfig};

    fn request(peer: &str, method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: peer.parse().unwrap(),
            http10: false,
        }
    }

    #[tokio::test]
    async fn only_loopback_peers_are_served() {
        let handle = start(DevnetConfig::ephemeral()).await.unwrap();
        let shared = handle.shared.clone();
        for (peer, status) in [
            ("10.1.2.3:4000", 403),
            ("[2001:db8::1]:4000", 403),
            ("127.0.0.1:4000", 200),
            ("[::1]:4000", 200),
            ("[::ffff:127.0.0.1]:4000", 200),
        ] {
            match handle_request(&shared, request(peer, "GET", "/devnet/state")).await {
                Response::Complete { status: got, .. } => assert_eq!(got, status, "{peer}"),
                other => panic!("{other:?}"),
            }
        }
        handle.stop().await;
    }

    async fn handle_request(shared: &Arc<Shared>, req: Request) -> Response {
        handle(shared.clone(), req).await
    }
}

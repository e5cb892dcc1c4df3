//! The simulated Pastella-Wallet-API (spec §6; CORE `src/walletapi/ApiDispatcher.cpp`,
//! `src/walletbackend/Transfer.cpp`, `src/errors/*`).
//!
//! Every route goes through the real middleware's steps: unknown route → 404 (before any
//! auth); `X-API-KEY` missing or wrong → 401 with an empty body; wallet state gate → 403 with
//! an empty body; a missing or ill-typed JSON key → 400 with an empty body; handler errors →
//! 400 `{"errorCode","errorMessage"}`. Bodies are nlohmann's `dump(4) + "\n"`: keys sorted.
//!
//! Decisions where the spec is silent, from the real code:
//! - `/transactions/send/prepared` answers 201 `{"transactionHash"}`; an unknown hash is error
//!   58 PREPARED_TRANSACTION_NOT_FOUND; a prepared transaction the balance no longer covers is
//!   57 PREPARED_TRANSACTION_EXPIRED (and is dropped).
//! - `/transactions/prepare/*` answers 201 like a send with `"relayedToNetwork": false`; the
//!   transaction's inputs are locked from then on (`Transfer.cpp` locks them at preparation).
//!   `DELETE /transactions/prepared/<hash>` and a restart forget it but keep its inputs
//!   locked; only `PUT /reset` (a rescan) frees them.
//! - More than 90 outputs (destinations plus the change output) is error 56
//!   OUTPUT_DECOMPOSITION (`makeTransaction` checks `NORMAL_TX_MAX_OUTPUT_COUNT_V1`).
//! - `/transactions/hash/<hash>` only knows confirmed transactions (`SubWallets::getTransactions`
//!   is `m_transactions`): 200 `{"transaction":{…}}`, else 404 with an empty body. Unconfirmed
//!   sends are listed by `/transactions/unconfirmed`.
//! - `/transactions` answers `{"transactions":[…]}` (the capture
//!   `walletapi_transactions_noncoinbase.json` is a filtered excerpt: its element shape is the
//!   real one, its top-level key and 1-space indent are the capture tool's).
//! - Address validation is `validateAddresses`: length (12, with the custom text), prefix (13),
//!   then `parseAccountAddressString`, whose failure (bad Base58, checksum, key) is always 15;
//!   the real code never returns 14 from there.
//! - Order of checks in a send, as `sendTransactionAdvanced`: destinations (18, 19, address),
//!   balance including a fixed fee (9 overflow, 11), fee below the minimum (17), outputs (56),
//!   then the relay to the daemon (30 offline, 31 daemon error), where injected send failures
//!   hit. Injected prepare failures hit a prepare that succeeded: its inputs are locked, the
//!   answer is lost.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::http::{self, Request, Response};
use super::json;
use super::ledger::{synthetic_tx, PoolTx};
use super::wallet::{FailureKind, Prepared, TxView};
use super::{rpc, DaemonMode, Shared};
use crate::chain::keccak::keccak;
use crate::chain::params::{DIFFICULTY_TARGET, MAX_TX_OUTPUTS, MINIMUM_FEE};
use crate::chain::{Address, Hash};

/// `MINIMUM_FEE_PER_BYTE_V1` (TurtleCoin's 500 atomic units per 256 bytes).
const MINIMUM_FEE_PER_BYTE: f64 = 500.0 / 256.0;

/// `Error::getErrorMessage` for the codes the simulator can produce or inject.
pub(crate) fn error_message(code: i64) -> &'static str {
    match code {
        1 => "The filename you are attempting to open does not exist, or the wallet does not have permission to open it.",
        2 => "We could not open/save to the filename given. Possibly invalid characters, or permission issues.",
        3 => "This file is not a wallet file, or is not a wallet file type supported by this wallet version.",
        4 => "This wallet file appears to have gotten corrupted.",
        5 => "The password given for this wallet is incorrect.",
        8 => "The wallet file you are attempting to create already exists. Please delete it first.",
        9 => "This operation will cause integer overflow. Please decrease the amounts you are sending.",
        10 => "The address given does not exist in the wallet container, but is required to exist for this operation.",
        11 => "Not enough unlocked funds were found to cover this transaction in the subwallets specified (or all wallets, if not specified). (Sum of amounts + fee + node fee)",
        12 => "The address given is too short or too long.",
        13 => "The address does not have the correct prefix corresponding to this coin - it appears to be an address for another cryptocurrency.",
        14 => "The address contains invalid characters, that are not in the base58 set.",
        15 => "The address given is not valid. Possibly invalid checksum. Most likely a typo.",
        17 => "The fee given for this transaction is below the minimum allowed network fee.",
        18 => "The destinations array (amounts/addresses) is empty.",
        19 => "One of the destination parameters has an amount given of zero.",
        30 => "We were not able to submit our request to the daemon. Ensure it is online and not frozen.",
        31 => "An error occured whilst the daemon processed the request. Possibly our software is outdated, the daemon is faulty, or there is a programmer error. Check your daemon logs for more info. (set_log 4)",
        32 => "The transaction is too large (in BYTES, not AMOUNT) to fit in a block. Either decrease the amount you are sending.",
        45 => "The fee of the created transaction is not the same as that which was specified. Almost certainly a programmer error. Cancelling transaction.",
        53 => "The extra data given for the transaction could not be decoded.",
        54 => "An unknown error occurred.",
        55 => "The transaction was sent to the daemon, but the connection timed out before we could determine if the transaction succeeded. Wait a few minutes before retrying the transaction, as it may still succeed.",
        56 => "The transaction contains more outputs than what is permitted by the number of inputs that have been supplied for the transaction. Please try to send your transaction again. If the problem persists, please reduce the number of destinations that you are trying to send to.",
        57 => "The prepared transaction contains inputs that have since been spent or are no longer available, probably due to sending another transaction in between preparing this transaction and sending it. The prepared transaction has been cancelled.",
        58 => "The prepared transaction hash given does not exist, either because it never existed or because the wallet process was restarted and the previously prepared transactions were lost. Please re-prepare and re-send the transaction, ensuring you specify the correct transaction hash.",
        _ => "An unknown error occurred.",
    }
}

/// A handler error: 400 with a code and message.
struct ApiError {
    code: i64,
    message: String,
}

impl ApiError {
    fn code(code: i64) -> ApiError {
        ApiError { code, message: error_message(code).into() }
    }
}

/// What a route answers when the handler fails.
enum Failed {
    /// 400 `{"errorCode","errorMessage"}`.
    Api(ApiError),
    /// 400 with an empty body: nlohmann threw on a missing or ill-typed key.
    JsonKey,
}

impl From<ApiError> for Failed {
    fn from(e: ApiError) -> Self {
        Failed::Api(e)
    }
}

fn wallet_json(status: u16, value: Value) -> Response {
    Response::json(status, json::pretty(&json::sorted(value)))
}

fn api_error(e: ApiError) -> Response {
    wallet_json(400, json!({"errorCode": e.code, "errorMessage": e.message}))
}

fn finish(result: Result<Response, Failed>) -> Response {
    match result {
        Ok(r) => r,
        Err(Failed::Api(e)) => api_error(e),
        Err(Failed::JsonKey) => Response::empty(400),
    }
}

/// `validateAddresses`: the wallet and the daemon's `getblocktemplate` share it.
pub(crate) fn validate_address(text: &str) -> Result<Address, (i64, String)> {
    Address::parse(text).map_err(|e| (e.code(), e.to_string()))
}

fn validate(text: &str) -> Result<Address, ApiError> {
    validate_address(text).map_err(|(code, message)| ApiError { code, message })
}

/// An address the wallet was told to reject (`POST /devnet/wallet/reject`).
fn check_rejected(wallet: &super::wallet::Wallet, address: &str, validating: bool) -> Result<(), ApiError> {
    match wallet.rejected.get(address) {
        Some((code, in_validate)) if *in_validate || !validating => Err(ApiError::code(*code)),
        _ => Ok(()),
    }
}

/// Which wallet state a route needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    Closed,
    Any,
}

#[derive(Clone, Copy)]
enum Route {
    Open,
    Create,
    Close,
    Validate,
    Primary,
    Addresses,
    Balance,
    BalanceOf,
    Balances,
    Status,
    Save,
    Node,
    Send { basic: bool, relay: bool },
    SendPrepared,
    DeletePrepared,
    Transactions,
    Unconfirmed,
    ByHash,
    Reset,
}

fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `ApiConstants::addressRegex`: `PAS[a-zA-Z0-9]{51}`.
fn is_address_path(text: &str) -> bool {
    text.len() == 54 && text.starts_with("PAS") && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn route(method: &str, path: &str) -> Option<(Route, Gate)> {
    let r = match (method, path) {
        ("POST", "/wallet/open") => (Route::Open, Gate::Closed),
        ("POST", "/wallet/create") => (Route::Create, Gate::Closed),
        ("DELETE", "/wallet") => (Route::Close, Gate::Open),
        ("POST", "/addresses/validate") => (Route::Validate, Gate::Any),
        ("GET", "/addresses/primary") => (Route::Primary, Gate::Open),
        ("GET", "/addresses") => (Route::Addresses, Gate::Open),
        ("GET", "/balance") => (Route::Balance, Gate::Open),
        ("GET", "/balances") => (Route::Balances, Gate::Open),
        ("GET", "/status") => (Route::Status, Gate::Open),
        ("PUT", "/save") => (Route::Save, Gate::Open),
        ("GET", "/node") => (Route::Node, Gate::Open),
        ("POST", "/transactions/send/basic") => (Route::Send { basic: true, relay: true }, Gate::Open),
        ("POST", "/transactions/prepare/basic") => (Route::Send { basic: true, relay: false }, Gate::Open),
        ("POST", "/transactions/send/advanced") => (Route::Send { basic: false, relay: true }, Gate::Open),
        ("POST", "/transactions/prepare/advanced") => (Route::Send { basic: false, relay: false }, Gate::Open),
        ("POST", "/transactions/send/prepared") => (Route::SendPrepared, Gate::Open),
        ("GET", "/transactions") => (Route::Transactions, Gate::Open),
        ("PUT", "/reset") => (Route::Reset, Gate::Open),
        ("GET", "/transactions/unconfirmed") => (Route::Unconfirmed, Gate::Open),
        ("GET", p) if p.strip_prefix("/transactions/hash/").is_some_and(is_hash) => (Route::ByHash, Gate::Open),
        ("GET", p) if p.strip_prefix("/balance/").is_some_and(is_address_path) => (Route::BalanceOf, Gate::Open),
        ("DELETE", p) if p.strip_prefix("/transactions/prepared/").is_some_and(is_hash) => {
            (Route::DeletePrepared, Gate::Open)
        }
        _ => return None,
    };
    Some(r)
}

/// Handles one request on the wallet port.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request) -> Response {
    let Some((route, gate)) = route(&req.method, &req.path) else {
        return Response::empty(404);
    };
    match req.header("x-api-key") {
        Some(key) if key == shared.config.api_key => {}
        _ => return Response::empty(401),
    }
    let open = shared.lock().wallet.open;
    if (gate == Gate::Open && !open) || (gate == Gate::Closed && open) {
        return Response::empty(403);
    }
    // A body that is not JSON is not an error by itself; reading a key from it is.
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    finish(dispatch(&shared, route, &req, &body).await)
}

fn key<'a>(body: &'a Value, name: &str) -> Result<&'a Value, Failed> {
    body.get(name).ok_or(Failed::JsonKey)
}

fn key_str<'a>(body: &'a Value, name: &str) -> Result<&'a str, Failed> {
    key(body, name)?.as_str().ok_or(Failed::JsonKey)
}

fn key_u64(body: &Value, name: &str) -> Result<u64, Failed> {
    key(body, name)?.as_u64().ok_or(Failed::JsonKey)
}

fn opt<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get(name)
}

async fn dispatch(shared: &Arc<Shared>, route: Route, req: &Request, body: &Value) -> Result<Response, Failed> {
    match route {
        Route::Open => open_wallet(shared, body, false),
        Route::Create => open_wallet(shared, body, true),
        Route::Close => {
            shared.lock().wallet.open = false;
            Ok(Response::empty(200))
        }
        Route::Validate => {
            let address = key_str(body, "address")?;
            let parsed = validate(address)?;
            check_rejected(&shared.lock().wallet, address, true)?;
            Ok(wallet_json(
                200,
                json!({
                    // The real API reports a standard address as integrated (it tests
                    // `length == standardAddressLength`).
                    "isIntegrated": address.len() == crate::chain::address::ADDRESS_LENGTH,
                    "actualAddress": address,
                    "publicKey": hex::encode(parsed.key()),
                }),
            ))
        }
        Route::Primary => Ok(wallet_json(200, json!({"address": shared.lock().wallet.address.encode()}))),
        Route::Addresses => Ok(wallet_json(200, json!({"addresses": [shared.lock().wallet.address.encode()]}))),
        Route::Balance => {
            let state = shared.lock();
            let (unlocked, locked) = state.wallet.balance(&state.ledger);
            Ok(wallet_json(200, json!({"unlocked": unlocked, "locked": locked})))
        }
        Route::BalanceOf => {
            let address = req.path.trim_start_matches("/balance/");
            let state = shared.lock();
            if address != state.wallet.address.encode() {
                validate(address)?;
                return Err(ApiError::code(10).into());
            }
            let (unlocked, locked) = state.wallet.balance(&state.ledger);
            Ok(wallet_json(200, json!({"unlocked": unlocked, "locked": locked})))
        }
        Route::Balances => {
            let state = shared.lock();
            let (unlocked, locked) = state.wallet.balance(&state.ledger);
            let address = state.wallet.address.encode();
            Ok(wallet_json(200, json!([{"address": address, "unlocked": unlocked, "locked": locked}])))
        }
        Route::Status => {
            let state = shared.lock();
            let count = state.ledger.count();
            let difficulty = state.ledger.difficulty_after(&state.ledger.top().id);
            Ok(wallet_json(
                200,
                json!({
                    "walletBlockCount": count,
                    "localDaemonBlockCount": count,
                    "networkBlockCount": count,
                    "peerCount": 1,
                    "hashrate": difficulty / DIFFICULTY_TARGET,
                    "subWalletCount": 1,
                }),
            ))
        }
        Route::Save => {
            if let Err(error) = shared.save().await {
                tracing::warn!(%error, "devnet: /save");
            }
            Ok(Response::empty(200))
        }
        Route::Node => Ok(wallet_json(
            200,
            json!({
                "daemonHost": shared.config.bind.to_string(),
                "daemonPort": shared.config.daemon_port,
                "daemonSSL": false,
                "nodeFee": 0,
                "nodeAddress": "",
            }),
        )),
        Route::Send { basic, relay } => make_transaction(shared, body, basic, relay).await,
        Route::SendPrepared => send_prepared(shared, body).await,
        Route::DeletePrepared => {
            let hash = Hash::from_hex(req.path.trim_start_matches("/transactions/prepared/")).unwrap_or_default();
            // Like the real wallet: forgotten, but its inputs stay locked until `PUT /reset`.
            let forgotten = shared.lock().wallet.forget_prepared(&hash);
            shared.changed();
            Ok(Response::empty(if forgotten { 200 } else { 404 }))
        }
        Route::Reset => {
            shared.lock().wallet.reset();
            shared.changed();
            Ok(Response::empty(200))
        }
        Route::Transactions => {
            let state = shared.lock();
            let txs: Vec<Value> = state.wallet.confirmed(&state.ledger).iter().map(tx_json).collect();
            Ok(wallet_json(200, json!({"transactions": txs})))
        }
        Route::Unconfirmed => {
            let answer = {
                let state = shared.lock();
                let txs: Vec<Value> = state.wallet.unconfirmed(&state.ledger).iter().map(tx_json).collect();
                wallet_json(200, json!({"transactions": txs}))
            };
            mine_after_lookup(shared);
            Ok(answer)
        }
        Route::ByHash => {
            let hash = Hash::from_hex(req.path.trim_start_matches("/transactions/hash/")).unwrap_or_default();
            let found = {
                let state = shared.lock();
                state.wallet.confirmed(&state.ledger).into_iter().find(|t| t.hash == hash)
            };
            mine_after_lookup(shared);
            Ok(match found {
                Some(tx) => wallet_json(200, json!({"transaction": tx_json(&tx)})),
                None => Response::empty(404),
            })
        }
    }
}

/// An injected race: the network mines a block right after a transaction lookup was answered,
/// so a client that looks in the wrong order misses a transaction moving to a block.
fn mine_after_lookup(shared: &Shared) {
    let due = {
        let mut state = shared.lock();
        let due = state.wallet.mine_after_lookups > 0;
        state.wallet.mine_after_lookups = state.wallet.mine_after_lookups.saturating_sub(1);
        due
    };
    if due {
        let mined = shared.mine(1, None);
        tracing::info!(block = ?mined.first(), "devnet: mined a block right after a wallet lookup (injected)");
    }
}

fn tx_json(tx: &TxView) -> Value {
    json!({
        "blockHeight": tx.block_height,
        "fee": tx.fee,
        "hash": tx.hash,
        "isCoinbaseTransaction": tx.is_coinbase,
        "timestamp": tx.timestamp,
        "transfers": tx.transfers.iter().map(|(a, v)| json!({"address": a, "amount": v})).collect::<Vec<_>>(),
        "unlockTime": tx.unlock_time,
    })
}

/// `/wallet/open` and `/wallet/create` (`getDefaultWalletParams` reads the same keys).
fn open_wallet(shared: &Shared, body: &Value, create: bool) -> Result<Response, Failed> {
    let filename = key_str(body, "filename")?;
    let password = key_str(body, "password")?;
    if opt(body, "daemonHost").is_some_and(|v| !v.is_string())
        || opt(body, "daemonPort").is_some_and(|v| !matches!(v.as_u64(), Some(p) if p <= u64::from(u16::MAX)))
        || opt(body, "daemonSSL").is_some_and(|v| !v.is_boolean())
    {
        return Err(Failed::JsonKey);
    }
    let mut state = shared.lock();
    let wallet = &mut state.wallet;
    if create {
        if wallet.files.contains_key(filename) {
            return Err(ApiError::code(8).into());
        }
        // The devnet has one set of keys: a "new" wallet file is the same wallet under
        // another name and password.
        wallet.files.insert(filename.to_string(), password.to_string());
    } else {
        match wallet.files.get(filename) {
            None => return Err(ApiError::code(1).into()),
            Some(p) if p != password => return Err(ApiError::code(5).into()),
            Some(_) => {}
        }
    }
    wallet.open = true;
    drop(state);
    shared.changed();
    Ok(Response::empty(200))
}

/// The fee a send asked for (`WalletTypes::FeeType`).
enum Fee {
    Minimum,
    Fixed(u64),
    PerByte(f64),
}

/// `makeBasicTransaction` / `makeAdvancedTransaction` and `sendTransactionAdvanced`.
async fn make_transaction(shared: &Arc<Shared>, body: &Value, basic: bool, relay: bool) -> Result<Response, Failed> {
    let mut destinations: Vec<(String, u64)> = Vec::new();
    let mut fee = Fee::Minimum;
    let mut sources: Vec<String> = Vec::new();
    let mut change: Option<String> = None;
    if basic {
        destinations.push((key_str(body, "destination")?.to_string(), key_u64(body, "amount")?));
    } else {
        let list = key(body, "destinations")?.as_array().ok_or(Failed::JsonKey)?;
        for d in list {
            destinations.push((key_str(d, "address")?.to_string(), key_u64(d, "amount")?));
        }
        if let Some(f) = opt(body, "fee") {
            fee = Fee::Fixed(f.as_u64().ok_or(Failed::JsonKey)?);
        } else if let Some(f) = opt(body, "feePerByte") {
            fee = Fee::PerByte(f.as_f64().ok_or(Failed::JsonKey)?);
        }
        if let Some(s) = opt(body, "sourceAddresses") {
            for a in s.as_array().ok_or(Failed::JsonKey)? {
                sources.push(a.as_str().ok_or(Failed::JsonKey)?.to_string());
            }
        }
        if let Some(c) = opt(body, "changeAddress") {
            change = Some(c.as_str().ok_or(Failed::JsonKey)?.to_string());
        }
        if let Some(u) = opt(body, "unlockTime") {
            u.as_u64().ok_or(Failed::JsonKey)?;
        }
        if let Some(extra) = opt(body, "extra") {
            let text = extra.as_str().ok_or(Failed::JsonKey)?;
            if hex::decode(text).is_err() {
                return Err(ApiError::code(53).into());
            }
        }
    }

    let tx = {
        let state = shared.lock();
        let me = state.wallet.address.encode();
        // validateDestinations
        if destinations.is_empty() {
            return Err(ApiError::code(18).into());
        }
        if destinations.iter().any(|(_, amount)| *amount == 0) {
            return Err(ApiError::code(19).into());
        }
        let mut keys = Vec::with_capacity(destinations.len());
        for (address, amount) in &destinations {
            keys.push((*validate(address)?.key(), *amount));
            check_rejected(&state.wallet, address, false)?;
        }
        // validateOurAddresses
        for address in sources.iter().chain(change.iter()) {
            validate(address)?;
            if *address != me {
                return Err(ApiError {
                    code: 10,
                    message: format!(
                        "The address given ({address}) does not exist in the wallet container, but it is required to exist for this operation."
                    ),
                }
                .into());
            }
        }
        // validateAmount
        if let Fee::PerByte(per_byte) = fee {
            if per_byte < MINIMUM_FEE_PER_BYTE {
                return Err(ApiError::code(17).into());
            }
        }
        // Prepared (and forgotten prepared) transactions hold their inputs: not available.
        let (available, _) = state.wallet.balance(&state.ledger);
        let mut total: u64 = 0;
        for (_, amount) in &destinations {
            total = total.checked_add(*amount).ok_or(ApiError::code(9))?;
        }
        if let Fee::Fixed(f) = fee {
            if total.checked_add(f).is_none() {
                return Err(ApiError::code(9).into());
            }
            if total + f > available {
                return Err(ApiError::code(11).into());
            }
        } else if total > available {
            return Err(ApiError::code(11).into());
        }
        let fee = match fee {
            Fee::Fixed(f) if f < MINIMUM_FEE => return Err(ApiError::code(17).into()),
            Fee::Fixed(f) => f,
            // Below height 10 000 000 the per-byte fee is raised to the flat minimum.
            Fee::Minimum | Fee::PerByte(_) => MINIMUM_FEE,
        };
        let needed = total.checked_add(fee).ok_or(ApiError::code(9))?;
        if needed > available {
            return Err(ApiError::code(11).into());
        }
        // Inputs rarely add up exactly, so the change output counts too.
        let outputs = destinations.len() + usize::from(needed < available);
        if outputs > MAX_TX_OUTPUTS {
            return Err(ApiError::code(56).into());
        }
        let blob = synthetic_tx(&keys, fee, &mut rand::thread_rng());
        PoolTx { hash: keccak(&blob), blob, fee, destinations }
    };
    if !relay {
        let answer = json!({"transactionHash": tx.hash, "fee": tx.fee, "relayedToNetwork": false});
        let hash = tx.hash;
        let failure = {
            let mut state = shared.lock();
            state.wallet.prepared.push(Prepared { tx });
            state.wallet.take_failure(true)
        };
        shared.changed();
        return Ok(match failure {
            None => wallet_json(201, answer),
            Some(failure) => lose_prepare_answer(shared, hash, failure, answer).await,
        });
    }
    let answer = json!({"transactionHash": tx.hash, "fee": tx.fee, "relayedToNetwork": true});
    relay_transaction(shared, tx, answer).await
}

/// An injected lost answer to a prepare that happened: its inputs are locked, the client
/// never learns the hash (the connection drops, or the answer comes after its timeout).
async fn lose_prepare_answer(shared: &Shared, hash: Hash, failure: super::wallet::Failure, answer: Value) -> Response {
    let body = json::pretty(&json::sorted(answer));
    if failure.kind == FailureKind::PrepareThenHold {
        tracing::info!(tx = %hash, hold = ?failure.hold, "devnet: prepared a transaction, holding the answer (injected)");
        tokio::select! {
            _ = tokio::time::sleep(failure.hold) => {}
            _ = shared.stop.cancelled() => {}
        }
        return Response::json(201, body);
    }
    tracing::info!(tx = %hash, "devnet: prepared a transaction, dropping the answer (injected)");
    let mut bytes = http::response_head(201, true, body.len(), false);
    bytes.extend_from_slice(&body[..body.len() / 2]);
    // Let the client see the partial answer before the close.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Response::Broken(bytes)
}

/// `sendPreparedTransaction`.
async fn send_prepared(shared: &Arc<Shared>, body: &Value) -> Result<Response, Failed> {
    let hash = Hash::from_hex(key_str(body, "transactionHash")?).map_err(|_| Failed::JsonKey)?;
    let tx = {
        let mut state = shared.lock();
        let Some(index) = state.wallet.prepared.iter().position(|p| p.tx.hash == hash) else {
            return Err(ApiError::code(58).into());
        };
        // Its own inputs are locked for it: 57 only if the wallet lost them since (a reorg).
        let prepared = state.wallet.prepared.remove(index);
        let (unlocked, _) = state.wallet.balance(&state.ledger);
        let tx = prepared.tx.clone();
        state.wallet.prepared.insert(index, prepared);
        if tx.amount().saturating_add(tx.fee) > unlocked {
            state.wallet.prepared.remove(index);
            return Err(ApiError::code(57).into());
        }
        tx
    };
    relay_transaction(shared, tx, json!({"transactionHash": hash})).await
}

/// `relayTransaction`: hands the transaction to the daemon, where the daemon's mode and the
/// injected failures apply; on success the wallet records it.
async fn relay_transaction(shared: &Arc<Shared>, tx: PoolTx, answer: Value) -> Result<Response, Failed> {
    match shared.mode() {
        DaemonMode::Refuse => return Err(ApiError::code(30).into()),
        DaemonMode::Error500 => return Err(ApiError { code: 31, message: rpc::INTERNAL_ERROR.into() }.into()),
        DaemonMode::NotSynced => return Err(ApiError { code: 31, message: rpc::NOT_SYNCED.into() }.into()),
        DaemonMode::Normal => {}
    }
    let failure = shared.lock().wallet.take_failure(false);
    let Some(failure) = failure else {
        commit(shared, tx);
        return Ok(wallet_json(201, answer));
    };
    shared.changed();
    match failure.kind {
        FailureKind::Error => Err(ApiError::code(failure.code).into()),
        FailureKind::Timeout => {
            tracing::info!(hold = ?failure.hold, "devnet: holding a wallet send (injected timeout), nothing is sent");
            tokio::select! {
                _ = tokio::time::sleep(failure.hold) => {}
                _ = shared.stop.cancelled() => {}
            }
            Err(ApiError::code(30).into())
        }
        FailureKind::RelayThenError => {
            tracing::info!(tx = %tx.hash, code = failure.code, "devnet: relayed a wallet send, answering an error (injected)");
            commit(shared, tx);
            Err(ApiError::code(failure.code).into())
        }
        // Never taken by a send (`take_failure`): a send they reached would simply succeed.
        FailureKind::PrepareThenDrop | FailureKind::PrepareThenHold => {
            commit(shared, tx);
            Ok(wallet_json(201, answer))
        }
        FailureKind::DropAfterSuccess => {
            tracing::info!(tx = %tx.hash, "devnet: relayed a wallet send, dropping the answer (injected)");
            commit(shared, tx);
            let body = json::pretty(&json::sorted(answer));
            let mut bytes = http::response_head(201, true, body.len(), false);
            bytes.extend_from_slice(&body[..body.len() / 2]);
            // Let the client see the partial answer before the close.
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(Response::Broken(bytes))
        }
    }
}

fn commit(shared: &Shared, tx: PoolTx) {
    {
        let mut state = shared.lock();
        let hash = tx.hash;
        state.wallet.prepared.retain(|p| p.tx.hash != hash);
        state.wallet.sent.push(hash);
        tracing::info!(tx = %hash, amount = tx.amount(), fee = tx.fee, "devnet: wallet relayed a transaction");
        state.ledger.relay(tx);
    }
    shared.changed();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_validation() {
        assert!(route("GET", "/transactions/hash/ab").is_none());
        assert!(route("GET", &format!("/transactions/hash/{}", "a".repeat(64))).is_some());
        assert!(route("POST", "/balance").is_none());
        assert!(route("GET", "/nothing").is_none());
        assert_eq!(validate_address("PAS1").unwrap_err().0, 12);
        let not_base58 = "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcn0";
        assert_eq!(validate_address(not_base58).unwrap_err().0, 15);
        let prefix = "XAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF";
        assert_eq!(validate_address(prefix).unwrap_err().0, 13);
    }
}

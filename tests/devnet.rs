//! The devnet against the pool's own node clients (`node::DaemonClient`, `node::WalletClient`)
//! and chain code, on loopback, in process; plus every real-node capture decoded by the same
//! client functions.
//!
//! Each test starts its own devnet on free ports (they share one RandomX light cache per
//! process); blocks are mined for real in light mode at difficulty 10.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pastella_pool::chain::difficulty::meets_difficulty;
use pastella_pool::chain::{params, Address, Block, Hash, Template};
use pastella_pool::devnet::{self, DaemonMode, DevnetConfig, DevnetHandle, Failure, FailureKind, OTHER_MINERS_ADDRESS};
use pastella_pool::node::{
    decode_plain, decode_rpc, decode_wallet, decode_wallet_empty, Balance, BlockHeader, BlockTemplate, DaemonClient,
    DaemonError, Destination, HeightInfo, Info, SentTransaction, WalletClient, WalletError, WalletStatus,
    WalletTransaction,
};
use pastella_pool::pow::Hasher;
use serde::Deserialize;
use serde_json::{json, Value};

const POOL: &str = devnet::DEFAULT_WALLET_ADDRESS;
/// A miner of the pool (an address from the captures, not the simulated network's).
const MINER_A: &str = "PAS1Ezerh7XgWhnGUoc12SEH2uYEnBjgs4uvg3E5McdV39tRQb8oB6";
const COIN: u64 = 100_000_000;

// ---------------------------------------------------------------------------------------------
// Helpers

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-node").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `.txt` capture: the body, then ` HTTP <status>`.
fn capture_with_status(name: &str) -> (String, u16) {
    let text = fixture(name);
    let at = text.rfind(" HTTP ").unwrap_or_else(|| panic!("{name}: no HTTP status"));
    (text[..at].to_string(), text[at + 6..].trim().parse().unwrap())
}

/// rapidjson's / nlohmann's pretty print: 4 spaces, then a newline.
fn pretty(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    serde::Serialize::serialize(value, &mut ser).unwrap();
    String::from_utf8(out).unwrap() + "\n"
}

/// The keys, their order and the value types of a JSON document.
fn skeleton(value: &Value) -> String {
    fn walk(v: &Value) -> Value {
        match v {
            Value::Null => json!("null"),
            Value::Bool(_) => json!("bool"),
            Value::Number(_) => json!("number"),
            Value::String(_) => json!("string"),
            Value::Array(items) => Value::Array(items.iter().take(1).map(walk).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), walk(v))).collect()),
        }
    }
    walk(value).to_string()
}

async fn start(difficulty: Option<u64>) -> DevnetHandle {
    devnet::start(DevnetConfig { difficulty, ..DevnetConfig::ephemeral() }).await.expect("devnet starts")
}

fn daemon_client(h: &DevnetHandle) -> DaemonClient {
    DaemonClient::new("127.0.0.1", h.daemon_addr.port(), Duration::from_secs(10))
}

fn wallet_client(h: &DevnetHandle, timeout: Duration) -> WalletClient {
    WalletClient::new("127.0.0.1", h.wallet_addr.port(), "devnet-api-key", timeout)
}

/// A raw HTTP exchange: status and body bytes as sent.
async fn raw(method: &str, url: String, body: Option<String>, api_key: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(body) = body {
        req = req.body(body);
    }
    if let Some(key) = api_key {
        req = req.header("X-API-KEY", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn rpc_raw(h: &DevnetHandle, body: Value) -> (u16, String) {
    raw("POST", format!("http://{}/json_rpc", h.daemon_addr), Some(body.to_string()), None).await
}

async fn control(h: &DevnetHandle, method: &str, path: &str, body: Value) -> Value {
    let (status, text) = raw(method, format!("http://{}{path}", h.control_addr), Some(body.to_string()), None).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// One light-mode hasher per test process, keyed by the genesis id (every devnet block here is
/// below the first seed change at 2113).
fn hasher() -> &'static Mutex<Hasher> {
    static HASHER: OnceLock<Mutex<Hasher>> = OnceLock::new();
    HASHER.get_or_init(|| Mutex::new(Hasher::light(&params::genesis_id().0).unwrap()))
}

/// The pool's job path: template → hashing blob with an extra nonce → nonce search → block blob.
fn solve(template: &Template) -> (Vec<u8>, Hash) {
    assert_eq!(template.seed_hash, params::genesis_id());
    let extra_nonce = rand::random::<[u8; 8]>();
    let mut blob = template.hashing_blob(&extra_nonce);
    for nonce in 0u32.. {
        blob.set_nonce(nonce.to_le_bytes());
        let hash = Hash(hasher().lock().unwrap().hash(blob.as_slice()));
        if meets_difficulty(&hash, template.difficulty) {
            return (template.block_blob(&extra_nonce, nonce.to_le_bytes()), blob.block_id());
        }
    }
    unreachable!()
}

async fn template(daemon: &DaemonClient) -> Template {
    daemon.get_block_template(8, POOL).await.unwrap().parse(8).unwrap()
}

/// Mines a pool block on the current template and submits it; returns its id.
async fn mine_pool_block(daemon: &DaemonClient) -> Hash {
    let t = template(daemon).await;
    let (blob, id) = tokio::task::spawn_blocking(move || solve(&t)).await.unwrap();
    daemon.submit_block(&hex::encode(blob)).await.unwrap();
    id
}

#[derive(Debug, Deserialize)]
struct HeaderResult {
    block_header: BlockHeader,
}

#[derive(Deserialize)]
struct AddressAnswer {
    address: String,
}

fn dest(address: &str, amount: u64) -> Destination {
    Destination { address: address.into(), amount }
}

// ---------------------------------------------------------------------------------------------
// Captures

#[test]
fn every_real_capture_decodes_through_the_client_functions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-node");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut decoded = 0;
    for name in &names {
        let (body, status) =
            if name.ends_with(".txt") && !name.ends_with("_help.txt") && name != "walletapi_wallet_create.txt" {
                capture_with_status(name)
            } else {
                (fixture(name), 200)
            };
        let body = body.as_bytes();
        match name.as_str() {
            "README.md" | "Pastellad_help.txt" | "Pastella-Wallet-API_help.txt" | "xmrig_stratum_wire.log" => continue,
            "getblocktemplate_height1.json"
            | "getblocktemplate_after_mining.json"
            | "getblocktemplate_height44_with_2_txs.json" => {
                let t: BlockTemplate = decode_rpc(status, body).unwrap();
                let parsed = t.parse(17).unwrap();
                assert_eq!(parsed.reserved_offset, 123);
                assert_eq!(t.status, "OK");
            }
            "getblockheaderbyhash_1.json" | "getblockheaderbyheight_1.json" => {
                let h: HeaderResult = decode_rpc(status, body).unwrap();
                assert_eq!(
                    (h.block_header.height, h.block_header.num_txes, h.block_header.orphan_status),
                    (1, 1, false)
                );
            }
            "getlastblockheader_genesis.json" => {
                let h: HeaderResult = decode_rpc(status, body).unwrap();
                assert_eq!(h.block_header.hash, params::genesis_id());
                assert_eq!(h.block_header.reward, 80_000_000_000_000);
            }
            "getlastblockheader_after_mining.json" => {
                let h: HeaderResult = decode_rpc(status, body).unwrap();
                assert_eq!((h.block_header.height, h.block_header.depth, h.block_header.difficulty), (66, 0, 7593));
            }
            "getblockheaderbyheight_error_too_high.json" => {
                let e = decode_rpc::<HeaderResult>(status, body).unwrap_err();
                assert!(
                    matches!(e, DaemonError::Rpc { code: -2, ref message } if message.ends_with("Current height: 41")),
                    "{e}"
                );
            }
            "getblocktemplate_error_bad_address.json" => {
                let e = decode_rpc::<BlockTemplate>(status, body).unwrap_err();
                assert!(matches!(e, DaemonError::Rpc { code: -4, .. }), "{e}");
            }
            "getblocktemplate_error_missing_reserve_size.txt" => {
                let e = decode_rpc::<BlockTemplate>(status, body).unwrap_err();
                assert_eq!(
                    e,
                    DaemonError::Failed { status: 400, error: "Missing JSON parameter: 'reserve_size'".into() }
                );
                assert!(!e.is_transient());
            }
            "getblocktemplate_error_single_node_not_synced.txt" => {
                let e = decode_rpc::<BlockTemplate>(status, body).unwrap_err();
                assert_eq!(e, DaemonError::NotSynced);
                assert!(e.is_transient());
            }
            "submitblock_error_garbage.txt" => {
                let e = decode_rpc::<Value>(status, body).unwrap_err();
                assert_eq!(e, DaemonError::Rpc { code: -7, message: "Block not accepted".into() });
            }
            "info_after_mining.json" | "info_fresh_nodeA.json" => {
                let info: Info = decode_plain(status, body).unwrap();
                assert_eq!(info.upgrade_heights, vec![250, 500000]);
                assert_eq!(info.hashrate, info.difficulty / 30);
                assert!(info.synced);
            }
            "walletapi_addresses_primary.json" => {
                let a: AddressAnswer = decode_wallet(status, body).unwrap();
                Address::parse(&a.address).unwrap();
            }
            "walletapi_addresses_create.json" | "walletapi_addresses_validate.json" => {
                let v: Value = decode_wallet(status, body).unwrap();
                assert!(v.is_object());
            }
            "walletapi_balance_after_mining.json" => {
                let b: Balance = decode_wallet(status, body).unwrap();
                assert_eq!(b, Balance { unlocked: 11_600_000_000, locked: 2_400_000_000 });
            }
            "walletapi_send_advanced.txt" | "walletapi_send_basic.txt" => {
                assert_eq!(status, 201);
                let s: SentTransaction = decode_wallet(status, body).unwrap();
                assert_eq!((s.fee, s.relayed_to_network), (1000, true));
            }
            "walletapi_status_fresh.json" => {
                let s: WalletStatus = decode_wallet(status, body).unwrap();
                assert_eq!((s.peer_count, s.sub_wallet_count, s.hashrate), (2, 1, 33));
            }
            "walletapi_transactions_noncoinbase.json" => {
                #[derive(Deserialize)]
                struct Capture {
                    non_coinbase_transactions: Vec<WalletTransaction>,
                }
                let c: Capture = decode_wallet(status, body).unwrap();
                assert_eq!(c.non_coinbase_transactions.len(), 2);
                assert!(c.non_coinbase_transactions.iter().all(|t| t.block_height == 44 && !t.is_coinbase_transaction));
            }
            "walletapi_wallet_create.txt" => {
                let text = std::str::from_utf8(body).unwrap();
                assert!(text.starts_with("HTTP/1.1 200 OK") && text.contains("Content-Length: 0"));
                decode_wallet_empty(200, b"").unwrap();
            }
            other => panic!("new capture {other}: add it to this test"),
        }
        decoded += 1;
    }
    assert_eq!(decoded, 23);
}

// ---------------------------------------------------------------------------------------------
// Daemon

#[tokio::test]
async fn daemon_answers_in_the_captured_shapes() {
    let h = start(Some(10)).await;
    // A template: same keys, order and formatting as the capture.
    let (status, body) =
        rpc_raw(&h, json!({"jsonrpc":"2.0","id":"secret-id","method":"getblocktemplate","params":{"reserve_size":17,"wallet_address":POOL}}))
            .await;
    assert_eq!(status, 200);
    assert!(!body.contains("secret-id"), "replies never echo the id");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, pretty(&v));
    let capture: Value = serde_json::from_str(&fixture("getblocktemplate_height1.json")).unwrap();
    assert_eq!(fixture("getblocktemplate_height1.json"), pretty(&capture));
    assert_eq!(skeleton(&v), skeleton(&capture));
    assert_eq!(v["result"]["reserved_offset"], 123);
    assert_eq!(v["result"]["seed_hash"], capture["result"]["seed_hash"]);
    assert_eq!(
        v["result"]["blocktemplate_blob"].as_str().unwrap().len(),
        capture["result"]["blocktemplate_blob"].as_str().unwrap().len()
    );

    for (method, params, capture) in [
        ("getlastblockheader", json!({}), "getlastblockheader_genesis.json"),
        ("getblockheaderbyheight", json!({"height": 0}), "getlastblockheader_genesis.json"),
    ] {
        let (_, body) = rpc_raw(&h, json!({"jsonrpc":"2.0","method":method,"params":params})).await;
        // Genesis is the same block on both sides: byte for byte.
        assert_eq!(body, fixture(capture), "{method}");
    }
    let (_, body) = raw("GET", format!("http://{}/info", h.daemon_addr), None, None).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, pretty(&v));
    assert_eq!(skeleton(&v), skeleton(&serde_json::from_str(&fixture("info_fresh_nodeA.json")).unwrap()));

    // Error bodies, byte for byte with the captures.
    let (body, code) = capture_with_status("getblocktemplate_error_missing_reserve_size.txt");
    assert_eq!(
        rpc_raw(&h, json!({"jsonrpc":"2.0","method":"getblocktemplate","params":{"wallet_address":POOL}})).await,
        (code, body)
    );
    let bad = rpc_raw(&h, json!({"jsonrpc":"2.0","method":"getblocktemplate","params":{"reserve_size":17,"wallet_address":"PAS1NotValid"}})).await;
    assert_eq!(bad, (200, fixture("getblocktemplate_error_bad_address.json")));
    let (body, code) = capture_with_status("submitblock_error_garbage.txt");
    assert_eq!(rpc_raw(&h, json!({"jsonrpc":"2.0","method":"submitblock","params":["00"]})).await, (code, body));
    let too_high = rpc_raw(&h, json!({"jsonrpc":"2.0","method":"getblockheaderbyheight","params":{"height":41}})).await;
    let expected =
        fixture("getblockheaderbyheight_error_too_high.json").replace("Current height: 41", "Current height: 0");
    assert_eq!(too_high, (200, expected));
    h.set_daemon_mode(DaemonMode::NotSynced, None);
    let (body, code) = capture_with_status("getblocktemplate_error_single_node_not_synced.txt");
    assert_eq!(
        rpc_raw(
            &h,
            json!({"jsonrpc":"2.0","method":"getblocktemplate","params":{"reserve_size":17,"wallet_address":POOL}})
        )
        .await,
        (code, body)
    );
    h.stop().await;
}

#[tokio::test]
async fn daemon_methods_and_every_error_shape() {
    let h = start(Some(10)).await;
    let d = daemon_client(&h);
    let t = d.get_block_template(17, POOL).await.unwrap();
    assert_eq!((t.height, t.difficulty, t.reserved_offset, t.status.as_str()), (1, 10, 123, "OK"));
    let parsed = t.parse(17).unwrap();
    assert_eq!(parsed.output_to(Address::parse(POOL).unwrap().key()).unwrap().amount, 4 * COIN);
    assert_eq!(parsed.block.coinbase.unlock_time, 11);
    assert_eq!(parsed.prev_id(), params::genesis_id());
    assert_eq!(t.next_seed_hash, params::genesis_id());
    assert_eq!(d.get_block_count().await.unwrap(), 1);
    let genesis = d.get_last_block_header().await.unwrap();
    assert_eq!((genesis.hash, genesis.height, genesis.depth, genesis.difficulty), (params::genesis_id(), 0, 0, 1));
    assert_eq!(d.get_block_header_by_hash(&params::genesis_id()).await.unwrap(), genesis);
    assert_eq!(d.get_block_header_by_height(0).await.unwrap(), genesis);
    let info = d.info().await.unwrap();
    assert_eq!((info.height, info.difficulty, info.hashrate, info.synced, info.major_version), (1, 10, 0, true, 1));
    assert_eq!(d.height().await.unwrap(), HeightInfo { height: 1, network_height: 1, status: "OK".into() });

    let rpc = |e: Result<BlockHeader, DaemonError>| match e {
        Err(DaemonError::Rpc { code, .. }) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(rpc(d.get_block_header_by_height(1).await), -2);
    assert_eq!(rpc(d.get_block_header_by_hash(&Hash([7; 32])).await), -5);
    assert!(matches!(d.get_block_template(256, POOL).await, Err(DaemonError::Rpc { code: -3, .. })));
    let e = d.get_block_template(17, "XAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF").await.unwrap_err();
    assert!(matches!(e, DaemonError::Rpc { code: -4, ref message } if message.contains("correct prefix")), "{e}");
    let typo = "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnG";
    let e = d.get_block_template(17, typo).await.unwrap_err();
    assert!(
        matches!(e, DaemonError::Rpc { code: -4, ref message } if message.contains("Possibly invalid checksum")),
        "{e}"
    );
    assert_eq!(
        d.submit_block("zz").await,
        Err(DaemonError::Rpc { code: -6, message: "Submitted block blob is not hex!".into() })
    );
    assert_eq!(d.submit_block("00").await, Err(DaemonError::Rpc { code: -7, message: "Block not accepted".into() }));

    // Shapes a client cannot produce through the typed methods.
    let decode = |(status, body): (u16, String)| decode_rpc::<Value>(status, body.as_bytes());
    let by_hash = decode(rpc_raw(&h, json!({"method":"getblockheaderbyhash","params":{"hash":"xyz"}})).await);
    assert_eq!(by_hash, Err(DaemonError::Rpc { code: -1, message: "Block hash specified is not a valid hex!".into() }));
    let two = decode(rpc_raw(&h, json!({"method":"submitblock","params":["00","00"]})).await);
    assert_eq!(
        two,
        Err(DaemonError::Rpc { code: -1, message: "You must submit one and only one block blob! (Found 2)".into() })
    );
    let docs_style = decode(rpc_raw(&h, json!({"method":"submitblock","params":{"block_blob":"00"}})).await);
    assert_eq!(
        docs_style,
        Err(DaemonError::Failed {
            status: 400,
            error: "JSON parameter is wrong type. Expected Array, got Object".into()
        })
    );
    let unknown = decode(rpc_raw(&h, json!({"method":"get_info"})).await);
    assert_eq!(unknown, Err(DaemonError::Http { status: 404, body: String::new() }));
    let no_method = decode(rpc_raw(&h, json!({"params":{}})).await);
    assert_eq!(no_method, Err(DaemonError::Failed { status: 400, error: "Missing JSON parameter: 'method'".into() }));
    let not_json = raw("POST", format!("http://{}/json_rpc", h.daemon_addr), Some(String::new()), None).await;
    assert_eq!(not_json, (400, r#"{"status":"Failed","error":"Failed to parse request body as JSON"}"#.into()));
    assert_eq!(raw("GET", format!("http://{}/getinfo", h.daemon_addr), None, None).await, (404, String::new()));
    // GET /json_rpc with a body works like POST.
    let get = raw(
        "GET",
        format!("http://{}/json_rpc", h.daemon_addr),
        Some(json!({"method":"getblockcount"}).to_string()),
        None,
    )
    .await;
    assert_eq!(decode_rpc::<Value>(get.0, get.1.as_bytes()).unwrap()["count"], 1);

    // Daemon failure modes.
    h.set_daemon_mode(DaemonMode::Error500, None);
    let e = d.get_last_block_header().await.unwrap_err();
    assert!(matches!(e, DaemonError::Failed { status: 500, .. }) && e.is_transient(), "{e}");
    assert!(d.info().await.unwrap_err().is_transient());
    h.set_daemon_mode(DaemonMode::NotSynced, None);
    assert_eq!(d.get_block_template(17, POOL).await.unwrap_err(), DaemonError::NotSynced);
    assert_eq!(d.submit_block("00").await.unwrap_err(), DaemonError::NotSynced);
    let info = d.info().await.unwrap();
    assert_eq!((info.synced, info.network_height), (false, 2));
    assert_eq!(d.get_block_count().await.unwrap(), 1);
    // Refuse: the port really stops listening; the control port stays up and resumes it.
    let state = control(&h, "POST", "/devnet/daemon", json!({"mode": "refuse", "seconds": 1.0})).await;
    assert_eq!(state["mode"], "refuse");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = d.get_block_count().await.unwrap_err();
    assert!(matches!(e, DaemonError::Unreachable(ref m) if m.contains("onnection refused")), "{e}");
    assert!(e.is_transient());
    assert_eq!(control(&h, "GET", "/devnet/state", json!({})).await["daemon_mode"], "refuse");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.get_block_count().await.unwrap(), 1);
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Blocks

#[tokio::test]
async fn pool_blocks_are_accepted_mature_orphan_and_reorganise() {
    let h = start(Some(10)).await;
    let d = daemon_client(&h);
    let w = wallet_client(&h, Duration::from_secs(10));

    // A block built by the pool's chain code with a real light-mode nonce search.
    let id = mine_pool_block(&d).await;
    let tip = d.get_last_block_header().await.unwrap();
    assert_eq!((tip.hash, tip.height, tip.orphan_status, tip.reward, tip.num_txes), (id, 1, false, 4 * COIN, 1));
    assert_eq!(tip.difficulty, 10);
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 0, locked: 4 * COIN });
    let coinbase = w.transactions().await.unwrap();
    assert_eq!(coinbase.len(), 1);
    assert!(coinbase[0].is_coinbase_transaction);
    assert_eq!(
        (coinbase[0].block_height, coinbase[0].unlock_time, coinbase[0].transfers[0].amount),
        (1, 11, 4 * COIN as i64)
    );
    assert_eq!(w.transaction(&coinbase[0].hash).await.unwrap().unwrap(), coinbase[0]);

    // isInputUnlocked: unlock_time (11) <= network block count + 1, so locked for 7 more
    // blocks and unlocked after the 8th (before the spec's "10 blocks" are over).
    h.mine(7);
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 0, locked: 4 * COIN });
    h.mine(1);
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 4 * COIN, locked: 0 });
    h.mine(2);
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 4 * COIN, locked: 0 });

    // A block on a stale parent: answered OK (twice: the second is ALREADY_EXISTS), the tip
    // does not move, and the block is reported as an orphan.
    let stale_template = template(&d).await;
    h.mine(1);
    let tip_before = d.get_last_block_header().await.unwrap();
    let (blob, stale_id) = tokio::task::spawn_blocking(move || solve(&stale_template)).await.unwrap();
    d.submit_block(&hex::encode(&blob)).await.unwrap();
    d.submit_block(&hex::encode(&blob)).await.unwrap();
    assert_eq!(d.get_last_block_header().await.unwrap(), tip_before);
    let stale = d.get_block_header_by_hash(&stale_id).await.unwrap();
    assert!(stale.orphan_status);
    assert_eq!(stale.height, tip_before.height);
    assert_eq!(d.info().await.unwrap().alt_blocks_count, 1);

    // A reorganisation orphans the pool's newest block and takes its reward away.
    let id2 = mine_pool_block(&d).await;
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 4 * COIN, locked: 4 * COIN });
    let reorg = control(&h, "POST", "/devnet/reorg", json!({"depth": 1})).await;
    assert_eq!(reorg["orphaned"], json!([id2]));
    assert_eq!(reorg["added"].as_array().unwrap().len(), 2);
    let orphan = d.get_block_header_by_hash(&id2).await.unwrap();
    assert!(orphan.orphan_status);
    let tip = d.get_last_block_header().await.unwrap();
    assert_eq!(tip.height, orphan.height + 1);
    assert_eq!(tip.hash.to_hex(), reorg["tip"].as_str().unwrap());
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 4 * COIN, locked: 0 });
    assert!(h.state().alt_blocks.iter().any(|b| b.hash == id2));

    // A staking payout rides in output 1; the header's reward includes it.
    let staked_at = control(&h, "POST", "/devnet/staking", json!({"amount": 5000})).await;
    let t = template(&d).await;
    assert_eq!(staked_at["height"], t.height);
    assert_eq!(t.block.coinbase.outputs.len(), 2);
    assert_eq!(t.block.coinbase.outputs[1].amount, 5000);
    let (blob, id3) = tokio::task::spawn_blocking(move || solve(&t)).await.unwrap();
    d.submit_block(&hex::encode(blob)).await.unwrap();
    let header = d.get_block_header_by_hash(&id3).await.unwrap();
    assert_eq!((header.reward, header.orphan_status), (4 * COIN + 5000, false));
    h.stop().await;
}

#[tokio::test]
async fn blocks_breaking_consensus_rules_are_refused() {
    let h = start(Some(10)).await;
    let d = daemon_client(&h);
    let t = template(&d).await;
    let (blob, _) = tokio::task::spawn_blocking({
        let t = t.clone();
        move || solve(&t)
    })
    .await
    .unwrap();
    let (good, _) = Block::parse(&blob).unwrap();
    let refused = |block: &Block| hex::encode(block.serialize());
    let mut more = good.clone();
    more.coinbase.outputs[0].amount += 1;
    let mut early = good.clone();
    early.coinbase.unlock_time -= 1;
    let mut future = good.clone();
    future.header.timestamp += 3600;
    let mut unknown_tx = good.clone();
    unknown_tx.tx_hashes.push(Hash([9; 32]));
    let mut orphan_parent = good.clone();
    orphan_parent.header.prev_id = Hash([1; 32]);
    for bad in [&more, &early, &future, &unknown_tx, &orphan_parent] {
        assert_eq!(
            d.submit_block(&refused(bad)).await,
            Err(DaemonError::Rpc { code: -7, message: "Block not accepted".into() })
        );
    }
    // Trailing garbage after a valid block.
    let mut padded = blob.clone();
    padded.push(0);
    assert!(matches!(d.submit_block(&hex::encode(&padded)).await, Err(DaemonError::Rpc { code: -7, .. })));
    // Proof of work: search a nonce that does NOT meet the difficulty.
    let extra = [0u8; 8];
    let mut hb = t.hashing_blob(&extra);
    let weak = (0u32..)
        .find(|n| {
            hb.set_nonce(n.to_le_bytes());
            !meets_difficulty(&Hash(hasher().lock().unwrap().hash(hb.as_slice())), t.difficulty)
        })
        .unwrap();
    let weak_blob = t.block_blob(&extra, weak.to_le_bytes());
    assert!(matches!(d.submit_block(&hex::encode(weak_blob)).await, Err(DaemonError::Rpc { code: -7, .. })));
    assert_eq!(d.get_block_count().await.unwrap(), 1);
    // The honest block still goes in.
    d.submit_block(&hex::encode(&blob)).await.unwrap();
    assert_eq!(d.get_block_count().await.unwrap(), 2);
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Wallet

#[tokio::test]
async fn wallet_gates_auth_and_open_close() {
    let h = start(Some(10)).await;
    let w = wallet_client(&h, Duration::from_secs(5));
    assert_eq!(w.primary_address().await.unwrap(), POOL);
    let status = w.status().await.unwrap();
    assert_eq!((status.network_block_count, status.sub_wallet_count), (1, 1));
    w.save().await.unwrap();
    let wrong = WalletClient::new("127.0.0.1", h.wallet_addr.port(), "nope", Duration::from_secs(5));
    assert_eq!(wrong.balance().await, Err(WalletError::Unauthorized));
    let url = format!("http://{}/balance", h.wallet_addr);
    assert_eq!(raw("GET", url.clone(), None, None).await, (401, String::new()));
    let (status, body) = raw("GET", url, None, Some("devnet-api-key")).await;
    assert_eq!((status, body.as_str()), (200, "{\n    \"locked\": 0,\n    \"unlocked\": 0\n}\n"));
    assert_eq!(w.open("pool.wallet", "devnet", "127.0.0.1", 21001).await, Err(WalletError::WalletAlreadyOpen));
    assert_eq!(w.create("other.wallet", "x").await, Err(WalletError::WalletAlreadyOpen));
    let (status, _) = raw("DELETE", format!("http://{}/wallet", h.wallet_addr), None, Some("devnet-api-key")).await;
    assert_eq!(status, 200);
    assert_eq!(w.balance().await, Err(WalletError::NoWalletOpen));
    assert_eq!(w.send_advanced(&[dest(MINER_A, 1)], None).await, Err(WalletError::NoWalletOpen));
    assert_eq!(w.open("missing.wallet", "devnet", "127.0.0.1", 21001).await.unwrap_err().code(), Some(1));
    assert_eq!(w.open("pool.wallet", "wrong", "127.0.0.1", 21001).await.unwrap_err().code(), Some(5));
    assert_eq!(w.create("pool.wallet", "x").await.unwrap_err().code(), Some(8));
    w.open("pool.wallet", "devnet", "127.0.0.1", h.daemon_addr.port()).await.unwrap();
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 0, locked: 0 });
    // A missing JSON key is HTTP 400 with an empty body.
    let (status, body) = raw(
        "POST",
        format!("http://{}/transactions/send/advanced", h.wallet_addr),
        Some("{}".into()),
        Some("devnet-api-key"),
    )
    .await;
    assert_eq!((status, body.as_str()), (400, ""));
    assert_eq!(raw("GET", format!("http://{}/nothing", h.wallet_addr), None, None).await, (404, String::new()));
    let unreachable = WalletClient::new("127.0.0.1", 1, "k", Duration::from_secs(2));
    assert!(matches!(unreachable.send_advanced(&[dest(MINER_A, 1)], None).await, Err(WalletError::Unreachable(_))));
    h.stop().await;
}

#[tokio::test]
async fn payments_flow_fail_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("devnet.json");
    let config = DevnetConfig { difficulty: Some(10), data: Some(data.clone()), ..DevnetConfig::ephemeral() };
    let h = devnet::start(config.clone()).await.unwrap();
    let d = daemon_client(&h);
    let w = wallet_client(&h, Duration::from_secs(10));
    mine_pool_block(&d).await;
    mine_pool_block(&d).await;
    h.mine(8);
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 8 * COIN, locked: 0 });

    // Validation errors, in the real order and with the real codes.
    let code = |r: Result<SentTransaction, WalletError>| r.unwrap_err().code();
    assert_eq!(code(w.send_advanced(&[], None).await), Some(18));
    assert_eq!(code(w.send_advanced(&[dest(MINER_A, 0)], None).await), Some(19));
    assert_eq!(code(w.send_advanced(&[dest("PAS1short", 5)], None).await), Some(12));
    assert_eq!(code(w.send_advanced(&[dest(&MINER_A.replace("PAS", "XAS"), 5)], None).await), Some(13));
    let typo = format!("{}b", &MINER_A[..53]);
    assert_eq!(code(w.send_advanced(&[dest(&typo, 5)], None).await), Some(15));
    assert_eq!(code(w.send_advanced(&[dest(MINER_A, 5)], Some(999)).await), Some(17));
    assert_eq!(code(w.send_advanced(&[dest(MINER_A, 8 * COIN)], None).await), Some(11));
    let e = w.send_advanced(&[dest(MINER_A, 8 * COIN - 999)], Some(1000)).await.unwrap_err();
    assert_eq!(e.code(), Some(11));
    let ninety: Vec<Destination> = (0..90).map(|_| dest(MINER_A, 1)).collect();
    assert_eq!(code(w.send_advanced(&ninety, None).await), Some(56));
    assert!(h.state().mempool.is_empty());

    // A payment: relayed, in the mempool, in the next template with its fee, then mined.
    let sent = w.send_advanced(&[dest(MINER_A, COIN), dest(OTHER_MINERS_ADDRESS, 2 * COIN)], None).await.unwrap();
    assert_eq!((sent.fee, sent.relayed_to_network), (1000, true));
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 5 * COIN - 1000, locked: 0 });
    let pending = w.transaction(&sent.transaction_hash).await.unwrap().unwrap();
    assert_eq!((pending.block_height, pending.fee, pending.transfers[0].amount), (0, 1000, -(3 * COIN as i64) - 1000));
    let t = template(&d).await;
    assert_eq!(t.block.tx_hashes, vec![sent.transaction_hash]);
    assert_eq!(t.output_to(Address::parse(POOL).unwrap().key()).unwrap().amount, 4 * COIN + 1000);
    let received = control(&h, "GET", &format!("/devnet/received/{MINER_A}"), json!({})).await;
    assert_eq!((received["received"].as_u64(), received["pending"].as_u64()), (Some(0), Some(COIN)));
    // The pool mines the block carrying it.
    let (blob, id) = tokio::task::spawn_blocking(move || solve(&t)).await.unwrap();
    d.submit_block(&hex::encode(blob)).await.unwrap();
    assert_eq!(d.get_block_header_by_hash(&id).await.unwrap().num_txes, 2);
    let confirmed = w.transaction(&sent.transaction_hash).await.unwrap().unwrap();
    assert_eq!(confirmed.block_height, 11);
    assert_eq!(h.received(MINER_A).received, COIN);
    assert_eq!(h.received(OTHER_MINERS_ADDRESS).received, 2 * COIN);
    assert_eq!(d.info().await.unwrap().tx_count, 1);

    // Prepared transactions: held (not in the mempool), their inputs locked from preparation
    // (as the real wallet's Transfer code does), sent once.
    let before = w.balance().await.unwrap();
    let prepared = w.prepare_advanced(&[dest(MINER_A, 3 * COIN)], Some(1000)).await.unwrap();
    assert!(!prepared.relayed_to_network);
    assert!(h.state().mempool.is_empty());
    assert_eq!(w.transaction(&prepared.transaction_hash).await.unwrap(), None);
    let unlocked = w.balance().await.unwrap().unlocked;
    assert_eq!(unlocked, before.unlocked - 3 * COIN - 1000, "locked by the prepared transaction");
    assert_eq!(code(w.send_advanced(&[dest(MINER_A, unlocked)], Some(1000)).await), Some(11));
    let everything = w.prepare_advanced(&[dest(MINER_A, unlocked - 1000)], Some(1000)).await.unwrap();
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 0, locked: before.locked + before.unlocked });
    w.send_prepared(&prepared.transaction_hash).await.unwrap();
    assert_eq!(h.state().mempool.len(), 1);
    assert_eq!(w.send_prepared(&prepared.transaction_hash).await.unwrap_err().code(), Some(58));
    // The other prepared transaction's inputs were locked for it: it is still covered.
    w.send_prepared(&everything.transaction_hash).await.unwrap();
    assert_eq!(w.send_prepared(&everything.transaction_hash).await.unwrap_err().code(), Some(58));
    assert_eq!(w.send_prepared(&Hash([3; 32])).await.unwrap_err().code(), Some(58));
    h.mine(1);
    // What it sent to MINER_A comes back to the wallet: fund the rest of the test again.
    mine_pool_block(&d).await;
    h.mine(10);

    // Injected failures. Error: HTTP 400 with the code, nothing sent.
    let p = w.prepare_advanced(&[dest(MINER_A, 1000)], None).await.unwrap();
    h.fail_wallet_sends(1, Failure { kind: FailureKind::Error, code: 31, hold: Duration::ZERO });
    assert_eq!(w.send_prepared(&p.transaction_hash).await.unwrap_err().code(), Some(31));
    assert_eq!(w.transaction(&p.transaction_hash).await.unwrap(), None);
    assert!(h.state().mempool.is_empty());
    // Timeout: the client gives up after sending: Uncertain; the wallet did not send it.
    let impatient = wallet_client(&h, Duration::from_millis(700));
    control(&h, "POST", "/devnet/wallet/fail", json!({"count": 1, "kind": "timeout", "seconds": 1.5})).await;
    assert!(matches!(impatient.send_prepared(&p.transaction_hash).await, Err(WalletError::Uncertain(_))));
    assert_eq!(w.transaction(&p.transaction_hash).await.unwrap(), None);
    // Drop after success: Uncertain, and the transaction WAS relayed.
    control(&h, "POST", "/devnet/wallet/fail", json!({"kind": "drop_after_success"})).await;
    assert!(matches!(w.send_prepared(&p.transaction_hash).await, Err(WalletError::Uncertain(_))));
    let found = w.transaction(&p.transaction_hash).await.unwrap().unwrap();
    assert_eq!(found.block_height, 0);
    assert_eq!(h.state().mempool[0].hash, p.transaction_hash);
    // The same through send_advanced (no hash known to the caller).
    h.fail_wallet_sends(1, Failure { kind: FailureKind::DropAfterSuccess, code: 0, hold: Duration::ZERO });
    assert!(matches!(w.send_advanced(&[dest(MINER_A, 2000)], None).await, Err(WalletError::Uncertain(_))));
    assert_eq!(h.state().mempool.len(), 2);
    // The daemon being down shows up as the wallet's daemon errors.
    h.set_daemon_mode(DaemonMode::Refuse, None);
    assert_eq!(code(w.send_advanced(&[dest(MINER_A, 1000)], None).await), Some(30));
    h.set_daemon_mode(DaemonMode::Normal, None);
    let kept = w.prepare_advanced(&[dest(MINER_A, 5000)], None).await.unwrap();

    // Persistence: a restarted devnet keeps chain, mempool and wallet; like a restarted real
    // wallet it has forgotten its prepared transactions but keeps their inputs locked.
    let before = h.state();
    h.stop().await;
    let h = devnet::start(config).await.unwrap();
    let after = h.state();
    assert_eq!((after.height, after.tip, after.mempool.len()), (before.height, before.tip, 2));
    assert_eq!(after.wallet.unlocked, before.wallet.unlocked);
    assert_eq!(after.alt_blocks.len(), before.alt_blocks.len());
    assert_eq!(after.wallet.locked, before.wallet.locked);
    assert!(after.wallet.prepared.is_empty());
    let w = wallet_client(&h, Duration::from_secs(10));
    assert_eq!(w.transaction(&sent.transaction_hash).await.unwrap().unwrap().block_height, 11);
    assert_eq!(w.send_prepared(&kept.transaction_hash).await.unwrap_err().code(), Some(58));
    assert!(!w.delete_prepared(&kept.transaction_hash).await.unwrap());
    let locked = w.balance().await.unwrap();
    w.reset().await.unwrap();
    let rescanned = w.balance().await.unwrap();
    assert_eq!(rescanned.unlocked, locked.unlocked + 5000 + 1000, "the rescan frees its inputs");
    h.mine(1);
    assert_eq!(h.received(MINER_A).pending, 0);
    assert_eq!(h.received(MINER_A).received, COIN + 3 * COIN + (2 * COIN - 3000) + 1000 + 2000);

    // A prepare whose answer is lost: the transaction is prepared and its inputs locked, but the
    // client never learns the hash (the connection drops, or the answer comes after its timeout).
    let before = w.balance().await.unwrap();
    control(&h, "POST", "/devnet/wallet/fail", json!({"kind": "prepare_then_drop"})).await;
    assert!(matches!(w.prepare_advanced(&[dest(MINER_A, 7000)], None).await, Err(WalletError::Uncertain(_))));
    let impatient = wallet_client(&h, Duration::from_millis(700));
    control(&h, "POST", "/devnet/wallet/fail", json!({"kind": "prepare_then_hold", "seconds": 1.5})).await;
    assert!(matches!(impatient.prepare_advanced(&[dest(MINER_A, 3000)], None).await, Err(WalletError::Uncertain(_))));
    assert_eq!(h.state().wallet.prepared.len(), 2);
    let locked = w.balance().await.unwrap();
    assert_eq!(locked.locked, before.locked + 7000 + 1000 + 3000 + 1000, "both prepared, inputs locked");
    assert!(h.state().mempool.is_empty(), "nothing sent");
    // Only a rescan frees them, and drops the prepared transactions with it.
    w.reset().await.unwrap();
    assert_eq!(w.balance().await.unwrap(), before);
    assert!(h.state().wallet.prepared.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let h = start(None).await;
    let mined = control(&h, "POST", "/devnet/mine", json!({"count": 3})).await;
    assert_eq!(mined["height"], 3);
    assert_eq!(mined["mined"].as_array().unwrap().len(), 3);
    let state = control(&h, "GET", "/devnet/state", json!({})).await;
    assert_eq!(
        (state["height"].as_u64(), state["block_count"].as_u64(), state["difficulty"].as_u64()),
        (Some(3), Some(4), Some(1000))
    );
    assert_eq!(state["wallet"]["address"], POOL);
    // The same endpoints on the daemon port.
    let (status, _) = raw("GET", format!("http://{}/devnet/state", h.daemon_addr), None, None).await;
    assert_eq!(status, 200);
    for (path, body) in [
        ("/devnet/mine", json!({"count": 0})),
        ("/devnet/reorg", json!({"depth": 99})),
        ("/devnet/daemon", json!({"mode": "asleep"})),
        ("/devnet/wallet/fail", json!({"kind": "sometimes"})),
        ("/devnet/staking", json!({"amount": 0})),
    ] {
        let (status, text) =
            raw("POST", format!("http://{}{path}", h.control_addr), Some(body.to_string()), None).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(serde_json::from_str::<Value>(&text).unwrap()["error"].is_string());
    }
    assert_eq!(raw("GET", format!("http://{}/devnet/nothing", h.control_addr), None, None).await.0, 404);
    // Simulated blocks can pay any address: a quick way to fund the wallet.
    let funded = control(&h, "POST", "/devnet/mine", json!({"count": 9, "address": POOL})).await;
    assert_eq!(funded["height"], 12);
    let w = wallet_client(&h, Duration::from_secs(5));
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 4 * COIN, locked: 8 * 4 * COIN });
    h.stop().await;
}

#[actix_rt::test]
async fn runs_inside_an_actix_system() {
    let h = start(Some(10)).await;
    let d = daemon_client(&h);
    let id = mine_pool_block(&d).await;
    assert_eq!(d.get_last_block_header().await.unwrap().hash, id);
    let w = wallet_client(&h, Duration::from_secs(5));
    assert_eq!(w.balance().await.unwrap(), Balance { unlocked: 0, locked: 4 * COIN });
    h.stop().await;
}

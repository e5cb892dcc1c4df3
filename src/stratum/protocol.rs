//! The stratum wire format (spec §7): newline-delimited JSON-RPC requests from miners, replies
//! and job pushes from the pool. Replies are written by hand into a reused `String`: the
//! shapes are fixed and this is the hot path.

use std::borrow::Cow;
use std::fmt::Write;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One request line, borrowed from the read buffer.
#[derive(Debug, Deserialize)]
pub struct Request<'a> {
    /// Echoed verbatim in the reply (xmrig only matches integer ids).
    #[serde(borrow)]
    pub id: Option<&'a RawValue>,
    /// `login`, `getjob`, `submit`, `keepalived`, ...
    #[serde(borrow)]
    pub method: Option<Cow<'a, str>>,
    /// Method parameters (an object).
    #[serde(borrow)]
    pub params: Option<&'a RawValue>,
}

/// `login` parameters (xmrig: login, pass, agent, rigid, algo).
#[derive(Debug, Default, Deserialize)]
pub struct LoginParams<'a> {
    /// `[solo:|prop:]ADDRESS[.DIFF]`.
    #[serde(borrow, default)]
    pub login: Option<Cow<'a, str>>,
    /// Worker name (xmrig default `x`).
    #[serde(borrow, default)]
    pub pass: Option<Cow<'a, str>>,
    /// Miner software.
    #[serde(borrow, default)]
    pub agent: Option<Cow<'a, str>>,
    /// xmrig `--rig-id`: preferred over `pass` as the worker name.
    #[serde(borrow, default)]
    pub rigid: Option<Cow<'a, str>>,
}

/// `submit` parameters.
#[derive(Debug, Default, Deserialize)]
pub struct SubmitParams<'a> {
    /// Session id from the login reply.
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    /// Job being answered.
    #[serde(borrow, default)]
    pub job_id: Option<Cow<'a, str>>,
    /// 8 hex characters, the nonce bytes as stored in the blob.
    #[serde(borrow, default)]
    pub nonce: Option<Cow<'a, str>>,
    /// 64 hex characters, the claimed RandomX hash.
    #[serde(borrow, default)]
    pub result: Option<Cow<'a, str>>,
    /// xmr-node-proxy: the integer it wrote at `client_pool_offset`.
    #[serde(borrow, default, rename = "poolNonce")]
    pub pool_nonce: Option<&'a RawValue>,
    /// xmr-node-proxy: the integer its worker's job had at `client_nonce_offset`.
    #[serde(borrow, default, rename = "workerNonce")]
    pub worker_nonce: Option<&'a RawValue>,
}

impl SubmitParams<'_> {
    /// A proxy submit's `(poolNonce, workerNonce)`: both present and JSON integers that fit the
    /// 4 bytes they are written to (no strings, fractions, exponents or negatives).
    pub fn proxy_nonces(&self) -> Option<(u32, u32)> {
        Some((parse_proxy_nonce(self.pool_nonce?)?, parse_proxy_nonce(self.worker_nonce?)?))
    }
}

/// One proxy nonce: a JSON integer in `0..=u32::MAX`.
pub fn parse_proxy_nonce(raw: &RawValue) -> Option<u32> {
    let text = raw.get().trim();
    // `u32::from_str` also takes a leading `+`, which JSON never has.
    text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse::<u32>().ok()).flatten()
}

/// `getjob` / `keepalived` parameters.
#[derive(Debug, Default, Deserialize)]
pub struct IdParams<'a> {
    /// Session id from the login reply.
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
}

/// What a line turned out to be.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A request to answer.
    Request {
        /// Raw id to echo.
        id: &'a RawValue,
        /// Method name.
        method: Cow<'a, str>,
        /// Raw params object.
        params: &'a RawValue,
    },
    /// Valid JSON without an id, method or params: dropped without a reply, like the old pool.
    Ignored,
    /// Not a JSON object.
    Invalid,
}

/// Parses one line (without its newline).
pub fn parse(line: &[u8]) -> Parsed<'_> {
    let Ok(req) = serde_json::from_slice::<Request<'_>>(line) else {
        return Parsed::Invalid;
    };
    match (req.id, req.method, req.params) {
        (Some(id), Some(method), Some(params)) if !is_falsy(id.get()) => Parsed::Request { id, method, params },
        _ => Parsed::Ignored,
    }
}

/// JavaScript falsiness of a JSON value (the old pool drops requests whose id is falsy).
fn is_falsy(raw: &str) -> bool {
    matches!(raw.trim(), "null" | "0" | "\"\"" | "false" | "0.0")
}

/// Appends a success reply: `{"id":..,"jsonrpc":"2.0","error":null,"result":<result>}\n`.
pub fn write_result(out: &mut String, id: &RawValue, result: &str) {
    out.push_str("{\"id\":");
    out.push_str(id.get());
    out.push_str(",\"jsonrpc\":\"2.0\",\"error\":null,\"result\":");
    out.push_str(result);
    out.push_str("}\n");
}

/// Appends an error reply: `{"id":..,"jsonrpc":"2.0","error":{"code":-1,"message":..},"result":null}\n`.
pub fn write_error(out: &mut String, id: &RawValue, message: &str) {
    out.push_str("{\"id\":");
    out.push_str(id.get());
    out.push_str(",\"jsonrpc\":\"2.0\",\"error\":{\"code\":-1,\"message\":");
    push_json_string(out, message);
    out.push_str("},\"result\":null}\n");
}

/// Appends a JSON string literal with escaping.
pub fn push_json_string(out: &mut String, text: &str) {
    // serde_json's escaping cannot fail for a str.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
}

/// The fields of one job, for [`write_job`].
pub struct JobFields<'a> {
    /// Hashing blob hex (nonce bytes zero).
    pub blob_hex: &'a str,
    /// Job id.
    pub job_id: u64,
    /// Share target hex (8 or 16 characters).
    pub target: &'a str,
    /// Session id.
    pub session_id: u64,
    /// Pre-serialized tail shared by every job of a template:
    /// `,"algo":"rx/0","height":N,"seed_hash":"..","next_seed_hash":".."}`.
    pub template_tail: &'a str,
    /// Set for an xmr-node-proxy: a block-template job, `blob_hex` being the full block blob.
    pub proxy: Option<ProxyJobFields>,
}

/// What a block-template job (xmr-node-proxy, spec §7.2) adds to a job.
#[derive(Debug, Clone, Copy)]
pub struct ProxyJobFields {
    /// First reserved byte in the block blob (the pool's extra nonce is written there).
    pub reserved_offset: usize,
    /// Where the proxy writes its pool nonce (`client_pool_offset`).
    pub pool_nonce_offset: usize,
    /// Where the proxy writes its worker nonce (`client_nonce_offset`).
    pub worker_nonce_offset: usize,
    /// Network difficulty of the template.
    pub network_difficulty: u64,
    /// The job's share difficulty (what each share is credited).
    pub difficulty: u64,
}

/// Appends a job object.
pub fn write_job(out: &mut String, job: &JobFields<'_>) {
    if let Some(proxy) = &job.proxy {
        write_proxy_job(out, job, proxy);
        return;
    }
    out.push_str("{\"blob\":\"");
    out.push_str(job.blob_hex);
    let _ = write!(out, "\",\"job_id\":\"{}\",\"target\":\"{}\",\"id\":\"{}\"", job.job_id, job.target, job.session_id);
    out.push_str(job.template_tail);
}

/// A block-template job: the proxy writes its pool nonce at `client_pool_offset` and each of its
/// workers' nonce at `client_nonce_offset`, then hashes the block's hashing blob;
/// `target_diff_hex` is the share target, as `target` in an ordinary job.
fn write_proxy_job(out: &mut String, job: &JobFields<'_>, proxy: &ProxyJobFields) {
    out.push_str("{\"blocktemplate_blob\":\"");
    out.push_str(job.blob_hex);
    let _ = write!(
        out,
        "\",\"difficulty\":{},\"reserved_offset\":{},\"client_pool_offset\":{},\"client_nonce_offset\":{},\"target_diff\":{},\"target_diff_hex\":\"{}\",\"job_id\":\"{}\",\"id\":\"{}\"",
        proxy.network_difficulty,
        proxy.reserved_offset,
        proxy.pool_nonce_offset,
        proxy.worker_nonce_offset,
        proxy.difficulty,
        job.target,
        job.job_id,
        job.session_id
    );
    out.push_str(job.template_tail);
}

/// The shared tail of every job object of one template.
pub fn template_tail(height: u64, seed_hash: &str, next_seed_hash: &str) -> String {
    format!(",\"algo\":\"rx/0\",\"height\":{height},\"seed_hash\":\"{seed_hash}\",\"next_seed_hash\":\"{next_seed_hash}\"}}")
}

/// Appends a job push: `{"jsonrpc":"2.0","method":"job","params":<job>}\n`.
pub fn write_job_push(out: &mut String, job: &JobFields<'_>) {
    out.push_str("{\"jsonrpc\":\"2.0\",\"method\":\"job\",\"params\":");
    write_job(out, job);
    out.push_str("}\n");
}

/// The login result: `{"id":"<session>","job":<job>,"extensions":["algo","keepalive"],"status":"OK"}`.
pub fn write_login_result(out: &mut String, id: &RawValue, job: &JobFields<'_>) {
    out.push_str("{\"id\":");
    out.push_str(id.get());
    let _ = write!(out, ",\"jsonrpc\":\"2.0\",\"error\":null,\"result\":{{\"id\":\"{}\",\"job\":", job.session_id);
    write_job(out, job);
    out.push_str(",\"extensions\":[\"algo\",\"keepalive\"],\"status\":\"OK\"}}\n");
}

/// The line a plain HTTP request to a stratum port gets (old pool behaviour).
pub const HTTP_ONLINE: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nMining server online";

/// Error messages sent to miners. xmrig treats messages starting with `Unauthenticated`,
/// `Invalid job id` and `Your IP is banned` as critical (it reconnects), so those keep the old
/// pool's exact text; the others say what happened.
pub mod msg {
    /// A request before login, or with another session's id.
    pub const UNAUTHENTICATED: &str = "Unauthenticated";
    /// The job is not among the session's recent jobs.
    pub const INVALID_JOB_ID: &str = "Invalid job id";
    /// The IP is banned.
    pub const BANNED: &str = "Your IP is banned";
    /// `login` without a login string.
    pub const MISSING_LOGIN: &str = "Missing login";
    /// Prefix of the invalid-address message (followed by the daemon's reason).
    pub const INVALID_ADDRESS: &str = "Invalid address used for login";
    /// Unknown method.
    pub const INVALID_METHOD: &str = "Invalid method";
    /// Params not an object of the expected shape.
    pub const INVALID_PARAMS: &str = "Invalid params";
    /// Nonce missing or not 8 hex characters.
    pub const MALFORMED_NONCE: &str = "Malformed nonce: expected 8 hex characters";
    /// Result missing or not 64 hex characters.
    pub const MALFORMED_RESULT: &str = "Malformed result: expected 64 hex characters";
    /// The same nonce was already submitted for this job.
    pub const DUPLICATE: &str = "Duplicate share";
    /// The job's block was superseded by a new block.
    pub const STALE: &str = "Stale share: the block of this job was already found";
    /// The claimed hash is below the job's difficulty.
    pub const LOW_DIFFICULTY: &str = "Low difficulty share";
    /// The recomputed hash differs from the claimed one.
    pub const INVALID_RESULT: &str = "Rejected share: invalid result";
    /// No template yet (daemon unreachable since start).
    pub const NOT_READY: &str = "Pool is not ready: no block template from the daemon yet, retry shortly";
    /// The verifier failed (out of memory).
    pub const VERIFY_FAILED: &str = "Share could not be verified, retry";
    /// A submit arriving while the pool shuts down (not booked; the miner reconnects).
    pub const SHUTTING_DOWN: &str = "Pool is shutting down, reconnect shortly";
    /// Past `poolServer.sharesInFlight`: the session or IP already has that many shares waiting.
    pub const TOO_MANY_IN_FLIGHT: &str = "Too many shares in flight: wait for their answers before submitting more";
    /// Past a `poolServer.rateLimits` bucket.
    pub const RATE_LIMITED: &str = "Too many requests from your IP: rate limit exceeded, slow down";
    /// A claimed block whose hash was not the claimed one (the IP is banned).
    pub const FAKE_BLOCK: &str = "Rejected share: invalid block candidate";
    /// A proxy submit without integer `poolNonce`/`workerNonce` (the old pool's text).
    pub const PROXY_MALFORMED_NONCES: &str = "Duplicate share3";
    /// A proxy submit whose (nonce, poolNonce, workerNonce) was already submitted for the job.
    pub const PROXY_DUPLICATE: &str = "Duplicate share4";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_drops_incomplete_ones() {
        let line = br#"{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"x","pass":"y"}}"#;
        match parse(line) {
            Parsed::Request { id, method, params } => {
                assert_eq!(id.get(), "1");
                assert_eq!(method, "login");
                let p: LoginParams = serde_json::from_str(params.get()).unwrap();
                assert_eq!(p.login.as_deref(), Some("x"));
            }
            other => panic!("{other:?}"),
        }
        for ignored in [
            &br#"{"id":0,"method":"login","params":{}}"#[..],
            br#"{"id":null,"method":"login","params":{}}"#,
            br#"{"id":"","method":"login","params":{}}"#,
            br#"{"id":1,"params":{}}"#,
            br#"{"id":1,"method":"login"}"#,
        ] {
            assert!(matches!(parse(ignored), Parsed::Ignored), "{}", String::from_utf8_lossy(ignored));
        }
        assert!(matches!(parse(b"not json"), Parsed::Invalid));
        assert!(matches!(parse(b"[1,2]"), Parsed::Invalid));
    }

    #[test]
    fn reply_shapes() {
        let id = RawValue::from_string("7".into()).unwrap();
        let mut out = String::new();
        write_result(&mut out, &id, "{\"status\":\"OK\"}");
        assert_eq!(out, "{\"id\":7,\"jsonrpc\":\"2.0\",\"error\":null,\"result\":{\"status\":\"OK\"}}\n");
        out.clear();
        write_error(&mut out, &id, "Bad \"thing\"");
        assert_eq!(
            out,
            "{\"id\":7,\"jsonrpc\":\"2.0\",\"error\":{\"code\":-1,\"message\":\"Bad \\\"thing\\\"\"},\"result\":null}\n"
        );
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["error"]["message"], "Bad \"thing\"");
    }

    #[test]
    fn job_and_login_shapes_are_valid_json() {
        let tail = template_tail(5, "aa", "bb");
        let job = JobFields {
            blob_hex: "00ff",
            job_id: 12,
            target: "711b0d00",
            session_id: 99,
            template_tail: &tail,
            proxy: None,
        };
        let mut out = String::new();
        write_job_push(&mut out, &job);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["method"], "job");
        assert_eq!(v["params"]["job_id"], "12");
        assert_eq!(v["params"]["id"], "99");
        assert_eq!(v["params"]["algo"], "rx/0");
        assert_eq!(v["params"]["height"], 5);
        assert_eq!(v["params"]["next_seed_hash"], "bb");
        out.clear();
        let id = RawValue::from_string("1".into()).unwrap();
        write_login_result(&mut out, &id, &job);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["id"], 1);
        assert!(v["error"].is_null());
        assert_eq!(v["result"]["id"], "99");
        assert_eq!(v["result"]["status"], "OK");
        assert_eq!(v["result"]["extensions"], serde_json::json!(["algo", "keepalive"]));
        assert_eq!(v["result"]["job"]["blob"], "00ff");
    }

    #[test]
    fn proxy_job_shape() {
        let tail = template_tail(5, "aa", "bb");
        let proxy = ProxyJobFields {
            reserved_offset: 125,
            pool_nonce_offset: 133,
            worker_nonce_offset: 137,
            network_difficulty: 900,
            difficulty: 50,
        };
        let job = JobFields {
            blob_hex: "0200",
            job_id: 12,
            target: "7b5e0400",
            session_id: 99,
            template_tail: &tail,
            proxy: Some(proxy),
        };
        let mut out = String::new();
        write_job_push(&mut out, &job);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        let p = &v["params"];
        assert_eq!(p["blocktemplate_blob"], "0200");
        assert_eq!(p["difficulty"], 900);
        assert_eq!(p["height"], 5);
        assert_eq!((p["reserved_offset"].as_u64(), p["client_pool_offset"].as_u64()), (Some(125), Some(133)));
        assert_eq!(p["client_nonce_offset"], 137);
        assert_eq!((p["target_diff"].as_u64(), p["target_diff_hex"].as_str()), (Some(50), Some("7b5e0400")));
        assert_eq!((p["job_id"].as_str(), p["id"].as_str()), (Some("12"), Some("99")));
        assert_eq!((p["seed_hash"].as_str(), p["next_seed_hash"].as_str()), (Some("aa"), Some("bb")));
        assert!(p.get("blob").is_none(), "a proxy hashes the block blob itself: {p}");
    }

    #[test]
    fn proxy_nonces_are_json_integers_that_fit_four_bytes() {
        let submit = |extra: &str| {
            let text = format!(r#"{{"id":"1","job_id":"2","nonce":"00000000","result":"00"{extra}}}"#);
            let p: SubmitParams = serde_json::from_str(&text).unwrap();
            p.proxy_nonces()
        };
        assert_eq!(submit(r#","poolNonce":7,"workerNonce":4294967295"#), Some((7, u32::MAX)));
        assert_eq!(submit(r#","poolNonce": 0 ,"workerNonce":12"#), Some((0, 12)));
        for bad in [
            "",
            r#","poolNonce":7"#,
            r#","poolNonce":7,"workerNonce":null"#,
            r#","poolNonce":"7","workerNonce":1"#,
            r#","poolNonce":7.5,"workerNonce":1"#,
            r#","poolNonce":7e2,"workerNonce":1"#,
            r#","poolNonce":-1,"workerNonce":1"#,
            r#","poolNonce":4294967296,"workerNonce":1"#,
            r#","poolNonce":[1],"workerNonce":1"#,
        ] {
            assert_eq!(submit(bad), None, "{bad}");
        }
    }
}

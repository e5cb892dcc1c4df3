//! Fuzz harnesses on the stable toolchain for every parser that reads bytes from miners, load
//! balancers, the daemon, the wallet or API clients.
//!
//! Each [`Target`] has seed inputs (real wire lines and fixtures), a dictionary of tokens the
//! grammar cares about, and a check that feeds one input to the parser and panics if it
//! panics or breaks an invariant (a header longer than its input, a nonce that does not
//! round-trip...). [`run`] mutates the seeds with a small deterministic mutator and counts
//! inputs and panics. `tests/fuzz.rs` runs every target briefly; `examples/fuzz.rs` runs
//! millions (docs/FUZZ.md).

use std::panic::{self, AssertUnwindSafe};

use futures_util::{FutureExt, StreamExt};

use crate::api::routes::Params;
use crate::chain::{Block, Hash};
use crate::config::{FixedDiffConfig, VarDiffConfig};
use crate::node::daemon::{decode_plain, decode_rpc, BlockHeader, BlockTemplate, Info};
use crate::node::wallet::{
    decode_wallet, decode_wallet_empty, Balance, PreparedTransaction, SentTransaction, WalletStatus, WalletTransaction,
};
use crate::stratum::line::LineReader;
use crate::stratum::protocol::{self, IdParams, LoginParams, Parsed, SubmitParams};
use crate::stratum::proxy_header::{self, Sniff, V1_PREFIX, V2_MAX, V2_SIGNATURE};
use crate::stratum::{login, session};

/// One parser under test.
pub struct Target {
    /// Its name (`cargo run --example fuzz -- <name>`).
    pub name: &'static str,
    /// Valid inputs the mutator starts from.
    pub seeds: Vec<Vec<u8>>,
    /// Tokens spliced into inputs.
    pub dictionary: &'static [&'static [u8]],
    /// Longest input generated.
    pub max_len: usize,
    /// Feeds one input; panics on a bug.
    pub check: fn(&[u8]),
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Inputs fed.
    pub cases: u64,
    /// Inputs that panicked.
    pub panics: u64,
    /// The first few panicking inputs, for regression tests.
    pub crashes: Vec<Vec<u8>>,
}

/// Feeds `cases` inputs derived from `seed` to `target`.
pub fn run(target: &Target, cases: u64, seed: u64) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut input = Vec::with_capacity(target.max_len);
    for _ in 0..cases {
        mutate(&mut rng, target, &mut input);
        report.cases += 1;
        if panic::catch_unwind(AssertUnwindSafe(|| (target.check)(&input))).is_err() {
            report.panics += 1;
            if report.crashes.len() < 8 {
                report.crashes.push(input.clone());
            }
        }
    }
    report
}

/// Every target.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "stratum_line",
            seeds: stratum_seeds(),
            dictionary: &[
                b"\"id\":",
                b"\"method\":",
                b"\"params\":",
                b"\"login\"",
                b"\"submit\"",
                b"\"getjob\"",
                b"\"keepalived\"",
                b"\"poolNonce\":",
                b"\"workerNonce\":",
                b"4294967295",
                b"4294967296",
                b"-1",
                b"1.5",
                b"null",
                b"true",
                b"0",
                b"\"\"",
                b"{}",
                b"[]",
                b"\\u0000",
                b"\\ud800",
                b"1e999",
                b"\n",
                b"\r\n",
            ],
            max_len: 4096,
            check: check_stratum_line,
        },
        Target {
            name: "login",
            seeds: vec![
                format!("{ADDRESS}\0x\0rig01").into_bytes(),
                format!("solo:{ADDRESS}.5000\0worker").into_bytes(),
                format!("PROP:{ADDRESS}+99999999999999999999\0\0").into_bytes(),
            ],
            dictionary: &[b"solo:", b"prop:", b".", b"+", b"PAS1", b"\0", b"~", b":", b"\xf0\x9f\x92\xa9"],
            max_len: 512,
            check: check_login,
        },
        Target {
            name: "nonce_result",
            seeds: vec![
                b"c2810000".to_vec(),
                b"ea15fadf6f6097917b74b857749da2b1282fe052bc099960d4c954e15c750a00".to_vec(),
            ],
            dictionary: &[b"0", b"f", b"F", b"g", b"\xc3\xa9"],
            max_len: 160,
            check: check_nonce_result,
        },
        Target {
            name: "proxy_header",
            seeds: proxy_seeds(),
            dictionary: &[
                b"PROXY ",
                b"TCP4 ",
                b"TCP6 ",
                b"UNKNOWN",
                b"\r\n",
                b" ",
                b"255.255.255.255",
                b"::ffff:1.2.3.4",
                b"65535",
                b"\r\n\r\n\0\r\nQUIT\n",
                b"\x21\x11",
                b"\x20\x00",
                b"\xff\xff",
            ],
            max_len: V2_MAX + 64,
            check: check_proxy_header,
        },
        Target {
            name: "tls_sniff",
            seeds: vec![
                vec![0x16, 0x03, 0x01, 0x00, 0xf4, 0x01],
                b"{\"id\":1".to_vec(),
                b"PROXY TCP4".to_vec(),
                V2_SIGNATURE.to_vec(),
            ],
            dictionary: &[b"\x16", b"P", b"\r\n", b"{"],
            max_len: 32,
            check: check_tls_sniff,
        },
        Target {
            name: "daemon_reply",
            seeds: vec![
                include_bytes!("../tests/fixtures/real-node/getblocktemplate_height1.json").to_vec(),
                include_bytes!("../tests/fixtures/real-node/getblocktemplate_height44_with_2_txs.json").to_vec(),
                include_bytes!("../tests/fixtures/real-node/getblockheaderbyheight_1.json").to_vec(),
                include_bytes!("../tests/fixtures/real-node/getblockheaderbyheight_error_too_high.json").to_vec(),
                include_bytes!("../tests/fixtures/real-node/info_after_mining.json").to_vec(),
                include_bytes!("../tests/fixtures/real-node/getblocktemplate_error_bad_address.json").to_vec(),
            ],
            dictionary: &[
                b"\"result\":",
                b"\"error\":",
                b"\"code\":",
                b"-1",
                b"null",
                b"18446744073709551616",
                b"\"\"",
            ],
            max_len: 8192,
            check: check_daemon_reply,
        },
        Target {
            name: "wallet_reply",
            seeds: vec![
                include_bytes!("../tests/fixtures/real-node/walletapi_balance_after_mining.json").to_vec(),
                include_bytes!("../tests/fixtures/real-node/walletapi_status_fresh.json").to_vec(),
                include_bytes!("../tests/fixtures/real-node/walletapi_addresses_primary.json").to_vec(),
                include_bytes!("../tests/fixtures/real-node/walletapi_transactions_noncoinbase.json").to_vec(),
                br#"{"errorMessage":"Wallet file is not open","errorCode":7}"#.to_vec(),
            ],
            dictionary: &[b"\"errorMessage\":", b"\"errorCode\":", b"\"transactionHash\":", b"-1", b"null", b"[]"],
            max_len: 8192,
            check: check_wallet_reply,
        },
        Target {
            name: "block_blob",
            seeds: block_seeds(),
            dictionary: &[
                b"\x00",
                b"\x01",
                b"\x02",
                b"\xff",
                b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
                b"\xff\xff\xff\xff\x0f",
            ],
            max_len: 4096,
            check: check_block_blob,
        },
        Target {
            name: "api_query",
            seeds: vec![
                format!("address={ADDRESS}&longpoll=true").into_bytes(),
                b"height=100&count=20".to_vec(),
                b"password=x&address=a%20b+c&time=1795462020".to_vec(),
            ],
            dictionary: &[b"&", b"=", b"%", b"%zz", b"+", b"%00", b"-", b"99999999999999999999"],
            max_len: 1024,
            check: check_api_query,
        },
    ]
}

const ADDRESS: &str = "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF";

fn stratum_seeds() -> Vec<Vec<u8>> {
    let wire = include_str!("../tests/fixtures/real-node/xmrig_stratum_wire.log");
    let mut seeds: Vec<Vec<u8>> =
        wire.lines().filter_map(|l| l.strip_prefix("C> ")).map(|l| l.as_bytes().to_vec()).collect();
    seeds.push(br#"{"id":3,"jsonrpc":"2.0","method":"keepalived","params":{"id":"1"}}"#.to_vec());
    seeds.push(br#"{"id":4,"jsonrpc":"2.0","method":"getjob","params":{"id":"1"}}"#.to_vec());
    // xmr-node-proxy's login and submit (spec §7.2).
    seeds.push(
        format!(r#"{{"id":5,"jsonrpc":"2.0","method":"login","params":{{"login":"{ADDRESS}","pass":"farm1","agent":"xmr-node-proxy/0.28.1"}}}}"#)
            .into_bytes(),
    );
    seeds.push(
        br#"{"id":6,"jsonrpc":"2.0","method":"submit","params":{"id":"1","job_id":"2","nonce":"c2810000","result":"ea15fadf6f6097917b74b857749da2b1282fe052bc099960d4c954e15c750a00","poolNonce":3,"workerNonce":4294967295}}"#
            .to_vec(),
    );
    seeds
}

fn proxy_seeds() -> Vec<Vec<u8>> {
    let mut v2 = V2_SIGNATURE.to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c, 198, 51, 100, 9, 10, 0, 0, 1, 0x9c, 0x40, 0x0d, 0x05]);
    let mut v2_6 = V2_SIGNATURE.to_vec();
    v2_6.extend_from_slice(&[0x21, 0x21, 0x00, 0x28]);
    v2_6.extend_from_slice(&[0x20; 36]);
    v2_6.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
    vec![
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 3333\r\n{\"id\":1}".to_vec(),
        b"PROXY TCP6 2001:db8::1 ::1 4000 3333\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2,
        v2_6,
    ]
}

fn block_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![crate::chain::params::genesis_block().serialize()];
    for fixture in [
        include_str!("../tests/fixtures/real-node/getblocktemplate_height1.json"),
        include_str!("../tests/fixtures/real-node/getblocktemplate_height44_with_2_txs.json"),
    ] {
        if let Ok(template) = decode_rpc::<BlockTemplate>(200, fixture.as_bytes()) {
            if let Ok(blob) = hex::decode(&template.blocktemplate_blob) {
                seeds.push(blob);
            }
        }
    }
    seeds
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

fn check_stratum_line(input: &[u8]) {
    // The line reader over the raw bytes: every line within the cap and without a newline.
    let lines: Vec<_> = LineReader::new(input, 1024).collect::<Vec<_>>().now_or_never().expect("in-memory input");
    for line in lines.iter().flatten() {
        assert!(line.len() <= 1024 && !line.contains(&b'\n'));
    }
    if let Parsed::Request { params, method, .. } = protocol::parse(input) {
        match method.as_ref() {
            "login" => drop(serde_json::from_str::<LoginParams<'_>>(params.get())),
            "submit" => {
                if let Ok(submit) = serde_json::from_str::<SubmitParams<'_>>(params.get()) {
                    check_proxy_nonces(&submit);
                }
            }
            _ => drop(serde_json::from_str::<IdParams<'_>>(params.get())),
        }
    }
}

/// A proxy nonce is accepted only as the plain decimal text of the `u32` it yields.
fn check_proxy_nonces(submit: &SubmitParams<'_>) {
    for raw in [submit.pool_nonce, submit.worker_nonce].into_iter().flatten() {
        if let Some(n) = protocol::parse_proxy_nonce(raw) {
            assert_eq!(n.to_string(), raw.get().trim());
        }
    }
    if let Some((pool, worker)) = submit.proxy_nonces() {
        assert_eq!(Some(pool), submit.pool_nonce.and_then(protocol::parse_proxy_nonce));
        assert_eq!(Some(worker), submit.worker_nonce.and_then(protocol::parse_proxy_nonce));
    }
}

fn check_login(input: &[u8]) {
    let text = text(input);
    let mut parts = text.splitn(3, '\0');
    let (login_text, pass, rigid) = (parts.next().unwrap_or(""), parts.next(), parts.next());
    let fixed = FixedDiffConfig { enabled: true, address_separator: if input.len() % 2 == 0 { '.' } else { '+' } };
    let vardiff = VarDiffConfig {
        enabled: true,
        min_diff: 100,
        max_diff: 1_000_000,
        target_time: 30,
        retarget_time: 15,
        variance_percent: 30.0,
        max_jump: 50.0,
    };
    if let Ok(login) = login::parse(login_text, pass, rigid, &fixed, &vardiff) {
        assert!(!login.worker.is_empty() && login.worker.len() <= login::MAX_WORKER_LEN);
        assert!(login.worker.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b)));
        if let Some(diff) = login.fixed_diff {
            assert!((100..=1_000_000).contains(&diff));
        }
    }
}

fn check_nonce_result(input: &[u8]) {
    let text = text(input);
    if let Some(nonce) = session::parse_nonce(&text) {
        assert_eq!(hex::encode(nonce), text.to_ascii_lowercase());
    }
    if let Ok(hash) = Hash::from_hex(&text) {
        assert_eq!(hash.to_hex(), text.to_ascii_lowercase());
    }
}

fn check_proxy_header(input: &[u8]) {
    match proxy_header::parse(input) {
        Ok(Some(header)) => {
            assert!(header.len <= input.len() && header.len <= V2_MAX);
            assert!(matches!(proxy_header::sniff(input), Sniff::ProxyV1 | Sniff::ProxyV2));
            // The header alone parses the same, and one byte less is incomplete.
            assert_eq!(proxy_header::parse(&input[..header.len]), Ok(Some(header)));
            assert_eq!(proxy_header::parse(&input[..header.len - 1]), Ok(None));
        }
        Ok(None) => assert!(input.len() < V2_MAX),
        Err(_) => {}
    }
}

fn check_tls_sniff(input: &[u8]) {
    let is_prefix = |sig: &[u8]| {
        let n = input.len().min(sig.len());
        input[..n] == sig[..n]
    };
    match proxy_header::sniff(input) {
        Sniff::NeedMore => {
            assert!(
                input.is_empty()
                    || (is_prefix(V1_PREFIX) && input.len() < 6)
                    || (is_prefix(&V2_SIGNATURE) && input.len() < 12)
            )
        }
        Sniff::ProxyV1 => assert!(input.starts_with(V1_PREFIX)),
        Sniff::ProxyV2 => assert!(input.starts_with(&V2_SIGNATURE)),
        Sniff::Tls => assert_eq!(input[0], 0x16),
        Sniff::Plain => assert!(input[0] != 0x16 && !is_prefix(V1_PREFIX) && !is_prefix(&V2_SIGNATURE)),
    }
}

fn check_daemon_reply(input: &[u8]) {
    let status = if input.first().is_some_and(|b| b % 4 == 0) { 500 } else { 200 };
    if let Ok(template) = decode_rpc::<BlockTemplate>(status, input) {
        let _ = template.parse(17);
    }
    let _ = decode_rpc::<BlockHeader>(status, input);
    let _ = decode_rpc::<serde_json::Value>(status, input);
    let _ = decode_plain::<Info>(status, input);
}

fn check_wallet_reply(input: &[u8]) {
    let status = match input.first().map(|b| b % 5) {
        Some(0) => 400,
        Some(1) => 401,
        Some(2) => 500,
        _ => 200,
    };
    let _ = decode_wallet::<Balance>(status, input);
    let _ = decode_wallet::<WalletStatus>(status, input);
    let _ = decode_wallet::<PreparedTransaction>(status, input);
    let _ = decode_wallet::<SentTransaction>(status, input);
    let _ = decode_wallet::<WalletTransaction>(status, input);
    let _ = decode_wallet_empty(status, input);
}

fn check_block_blob(input: &[u8]) {
    if let Ok((block, _layout)) = Block::parse(input) {
        // A parsed block serializes back to exactly its bytes.
        assert_eq!(block.serialize(), input);
        let _ = block.hashing_blob();
        let _ = block.coinbase_total();
    }
}

fn check_api_query(input: &[u8]) {
    let params = Params::parse(&text(input));
    for name in ["address", "height", "count", "time", "password"] {
        if let Some(value) = params.get(name) {
            let _ = crate::api::shapes::parse_int(value);
        }
    }
}

/// xorshift64*: fast, deterministic, good enough to drive a mutator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff\"\\{}[]:,0-9aAfF \r\n\x16";

/// Replaces `out` with a new input: a mutated seed, sometimes random bytes.
fn mutate(rng: &mut Rng, target: &Target, out: &mut Vec<u8>) {
    out.clear();
    match rng.below(16) {
        0 => out.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        1 => out.extend((0..rng.below(128)).map(|_| INTERESTING[rng.below(INTERESTING.len())])),
        _ => out.extend_from_slice(&target.seeds[rng.below(target.seeds.len())]),
    }
    for _ in 0..1 + rng.below(6) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                out[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                out[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                out.insert(at, rng.next() as u8);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                out.drain(at..at + n);
            }
            4 => out.truncate(rng.below(len + 1)),
            5 if !target.dictionary.is_empty() => {
                let token = target.dictionary[rng.below(target.dictionary.len())];
                let at = rng.below(len + 1);
                out.splice(at..at, token.iter().copied());
            }
            6 if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(64));
                let chunk = out[from..from + n].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, chunk);
            }
            7 => {
                let other = &target.seeds[rng.below(target.seeds.len())];
                let at = rng.below(len + 1);
                out.truncate(at);
                out.extend_from_slice(&other[rng.below(other.len() + 1)..]);
            }
            _ => {}
        }
    }
    out.truncate(target.max_len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutator_is_deterministic_and_bounded() {
        let target = &targets()[0];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut r1, mut r2) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            mutate(&mut r1, target, &mut a);
            mutate(&mut r2, target, &mut b);
            assert_eq!(a, b);
            assert!(a.len() <= target.max_len);
        }
    }

    #[test]
    fn every_seed_passes_its_check() {
        for target in targets() {
            assert!(!target.seeds.is_empty(), "{} has seeds", target.name);
            for seed in &target.seeds {
                (target.check)(seed);
            }
        }
    }
}

//! The miner's side of the stratum wire format (spec §7): request lines as xmrig writes them,
//! incoming lines parsed into replies and job pushes, and the pool's error messages sorted
//! into reasons.

use std::borrow::Cow;
use std::fmt::Write;

use pastella_pool::chain::difficulty::difficulty_of_target4;
use pastella_pool::chain::varint;
use pastella_pool::stratum::protocol::msg;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A `login` request line (with its newline).
pub fn login_line(id: u64, login: &str, pass: &str, agent: &str) -> String {
    let mut out = String::with_capacity(200);
    let _ = writeln!(
        out,
        "{{\"id\":{id},\"jsonrpc\":\"2.0\",\"method\":\"login\",\"params\":{{\"login\":\"{login}\",\"pass\":\"{pass}\",\
         \"agent\":\"{agent}\",\"algo\":[\"rx/0\"]}}}}"
    );
    out
}

/// A `keepalived` request line.
pub fn keepalived_line(id: u64, session: &str) -> String {
    format!("{{\"id\":{id},\"jsonrpc\":\"2.0\",\"method\":\"keepalived\",\"params\":{{\"id\":\"{session}\"}}}}\n")
}

/// A `submit` request line (xmrig adds `algo` when the pool lists the `algo` extension).
pub fn submit_line(id: u64, session: &str, job_id: &str, nonce: [u8; 4], result: &[u8; 32]) -> String {
    let mut out = String::with_capacity(240);
    let _ = writeln!(
        out,
        "{{\"id\":{id},\"jsonrpc\":\"2.0\",\"method\":\"submit\",\"params\":{{\"id\":\"{session}\",\"job_id\":\"{job_id}\",\
         \"nonce\":\"{}\",\"result\":\"{}\",\"algo\":\"rx/0\"}}}}",
        hex::encode(nonce),
        hex::encode(result)
    );
    out
}

/// A job as the harness keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The pool's job id, echoed in submits.
    pub id: Box<str>,
    /// The hashing blob.
    pub blob: Box<[u8]>,
    /// Where the 4 nonce bytes sit in the blob.
    pub nonce_offset: usize,
    /// Share difficulty as xmrig derives it from the target.
    pub difficulty: u64,
    /// Height of the block being mined.
    pub height: u64,
    /// RandomX seed.
    pub seed: [u8; 32],
}

/// Why a job object cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadJob(pub String);

#[derive(Deserialize)]
struct JobFields<'a> {
    #[serde(borrow)]
    job_id: Cow<'a, str>,
    #[serde(borrow)]
    blob: Cow<'a, str>,
    #[serde(borrow)]
    target: Cow<'a, str>,
    #[serde(default)]
    height: Option<u64>,
    #[serde(borrow)]
    seed_hash: Cow<'a, str>,
}

impl Job {
    fn from_fields(f: JobFields<'_>) -> Result<Job, BadJob> {
        let blob = hex::decode(f.blob.as_ref()).map_err(|_| BadJob("blob is not hex".into()))?;
        let nonce_offset = nonce_offset(&blob).ok_or_else(|| BadJob("blob too short for a block header".into()))?;
        let difficulty = target_difficulty(&f.target).ok_or_else(|| BadJob(format!("bad target {:?}", f.target)))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(f.seed_hash.as_ref(), &mut seed).map_err(|_| BadJob("seed_hash is not 64 hex".into()))?;
        Ok(Job {
            id: f.job_id.as_ref().into(),
            blob: blob.into_boxed_slice(),
            nonce_offset,
            difficulty,
            height: f.height.ok_or_else(|| BadJob("job without a height".into()))?,
            seed,
        })
    }
}

/// Offset of the nonce in a hashing blob: after three varints (major, minor, timestamp) and the
/// 32-byte previous block id (spec §2.1).
pub fn nonce_offset(blob: &[u8]) -> Option<usize> {
    let mut pos = 0;
    for _ in 0..3 {
        varint::read(blob, &mut pos).ok()?;
    }
    let at = pos + 32;
    (blob.len() >= at + 4).then_some(at)
}

/// The difficulty xmrig reads from a 4- or 8-byte hex target.
pub fn target_difficulty(target: &str) -> Option<u64> {
    let bytes = hex::decode(target).ok()?;
    match bytes.len() {
        4 => Some(difficulty_of_target4(u32::from_le_bytes(bytes.try_into().ok()?))),
        8 => {
            let t = u64::from_le_bytes(bytes.try_into().ok()?);
            Some(u64::MAX.checked_div(t).unwrap_or(u64::MAX))
        }
        _ => None,
    }
}

/// One line from the pool.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A reply to request `id`: `Ok(result)` or `Err(message)`.
    Reply {
        /// The request id.
        id: u64,
        /// The raw `result` JSON, or the error message.
        outcome: Result<String, String>,
    },
    /// A job push.
    Job(Job),
    /// Something a miner would not understand: counted, otherwise ignored.
    Unknown(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// Parses one line (without its newline).
pub fn parse_line(line: &[u8]) -> Incoming {
    let Ok(env) = serde_json::from_slice::<Envelope<'_>>(line) else {
        return Incoming::Unknown("not a JSON object".into());
    };
    if env.method.as_deref() == Some("job") {
        let Some(params) = env.params else { return Incoming::Unknown("job push without params".into()) };
        return match serde_json::from_str::<JobFields<'_>>(params.get()).map_err(|e| BadJob(e.to_string())) {
            Ok(fields) => match Job::from_fields(fields) {
                Ok(job) => Incoming::Job(job),
                Err(BadJob(why)) => Incoming::Unknown(format!("job push: {why}")),
            },
            Err(BadJob(why)) => Incoming::Unknown(format!("job push: {why}")),
        };
    }
    let Some(id) = env.id else { return Incoming::Unknown("neither a reply with an integer id nor a job".into()) };
    let error = env.error.filter(|e| e.get() != "null");
    let outcome = match error {
        Some(e) => Err(serde_json::from_str::<ErrorObject<'_>>(e.get())
            .ok()
            .and_then(|o| o.message.map(Cow::into_owned))
            .unwrap_or_else(|| e.get().to_string())),
        None => Ok(env.result.map(|r| r.get().to_string()).unwrap_or_else(|| "null".into())),
    };
    Incoming::Reply { id, outcome }
}

/// A login result: the session id and the first job.
pub fn parse_login_result(result: &str) -> Result<(Box<str>, Job), BadJob> {
    #[derive(Deserialize)]
    struct LoginResult<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        job: JobFields<'a>,
    }
    let r: LoginResult<'_> = serde_json::from_str(result).map_err(|e| BadJob(format!("login result: {e}")))?;
    Ok((r.id.as_ref().into(), Job::from_fields(r.job)?))
}

/// Why the pool refused a request, from its error message (spec §7.3 and
/// `pastella_pool::stratum::protocol::msg`; the old pool's texts map to the same reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `Rejected share: invalid result`.
    InvalidResult,
    /// `Low difficulty share`.
    LowDifficulty,
    /// `Duplicate share`.
    Duplicate,
    /// `Stale share ...` (old pool: `Block expired`).
    Stale,
    /// `Invalid job id`.
    InvalidJobId,
    /// `Unauthenticated`.
    Unauthenticated,
    /// `Your IP is banned`.
    Banned,
    /// Malformed nonce or result, bad params (old pool: `Attack detected`).
    Malformed,
    /// `Pool is not ready ...`.
    NotReady,
    /// `Share could not be verified ...`.
    VerifyFailed,
    /// `Invalid address used for login` / `Missing login`.
    BadLogin,
    /// `Invalid method`.
    InvalidMethod,
    /// Any other text.
    Other,
}

impl Reason {
    /// Classifies an error message.
    pub fn of(message: &str) -> Reason {
        let starts = |prefix: &str| message.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix));
        if starts(msg::INVALID_RESULT) {
            Reason::InvalidResult
        } else if starts(msg::LOW_DIFFICULTY) {
            Reason::LowDifficulty
        } else if starts("Duplicate share") {
            Reason::Duplicate
        } else if starts("Stale share") || starts("Block expired") {
            Reason::Stale
        } else if starts(msg::INVALID_JOB_ID) {
            Reason::InvalidJobId
        } else if starts(msg::UNAUTHENTICATED) {
            Reason::Unauthenticated
        } else if starts(msg::BANNED) || starts("IP Address currently banned") {
            Reason::Banned
        } else if starts("Malformed") || starts(msg::INVALID_PARAMS) || starts("Attack detected") {
            Reason::Malformed
        } else if starts("Pool is not ready") {
            Reason::NotReady
        } else if starts(msg::VERIFY_FAILED) {
            Reason::VerifyFailed
        } else if starts(msg::INVALID_ADDRESS) || starts(msg::MISSING_LOGIN) {
            Reason::BadLogin
        } else if starts(msg::INVALID_METHOD) {
            Reason::InvalidMethod
        } else {
            Reason::Other
        }
    }

    /// Report name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::InvalidResult => "invalid_result",
            Reason::LowDifficulty => "low_difficulty",
            Reason::Duplicate => "duplicate",
            Reason::Stale => "stale",
            Reason::InvalidJobId => "invalid_job_id",
            Reason::Unauthenticated => "unauthenticated",
            Reason::Banned => "banned",
            Reason::Malformed => "malformed",
            Reason::NotReady => "not_ready",
            Reason::VerifyFailed => "verify_failed",
            Reason::BadLogin => "bad_login",
            Reason::InvalidMethod => "invalid_method",
            Reason::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pastella_pool::chain::difficulty::target_hex4;

    const BLOB: &str = "0200c0c086cd06aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa00000000\
                        bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb01";

    fn job_json(height: u64) -> String {
        format!(
            r#"{{"blob":"{BLOB}","job_id":"917364502918374","target":"{}","id":"482913700512334","algo":"rx/0","height":{height},"seed_hash":"{}","next_seed_hash":"{}"}}"#,
            target_hex4(5000),
            "11".repeat(32),
            "22".repeat(32)
        )
    }

    #[test]
    fn request_lines_are_the_json_xmrig_sends() {
        let v: serde_json::Value =
            serde_json::from_str(login_line(1, "PAS1abc", "rig1", "pastella-loadtest/0.1").trim_end()).unwrap();
        assert_eq!(v["method"], "login");
        assert_eq!(v["params"]["login"], "PAS1abc");
        assert_eq!(v["params"]["pass"], "rig1");
        assert_eq!(v["params"]["algo"][0], "rx/0");
        let line = submit_line(7, "42", "99", [0x18, 0x07, 0, 0], &[0xab; 32]);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["params"]["nonce"], "18070000");
        assert_eq!(v["params"]["result"], "ab".repeat(32));
        assert_eq!(v["params"]["job_id"], "99");
        let v: serde_json::Value = serde_json::from_str(keepalived_line(3, "42").trim_end()).unwrap();
        assert_eq!(v["method"], "keepalived");
        assert_eq!(v["params"]["id"], "42");
    }

    #[test]
    fn parses_replies_pushes_and_login_results() {
        let push = format!(r#"{{"jsonrpc":"2.0","method":"job","params":{}}}"#, job_json(12));
        match parse_line(push.as_bytes()) {
            Incoming::Job(job) => {
                assert_eq!(&*job.id, "917364502918374");
                assert_eq!(job.height, 12);
                assert_eq!(job.difficulty, 5000);
                assert_eq!(job.nonce_offset, 39);
                assert_eq!(job.seed, [0x11; 32]);
            }
            other => panic!("{other:?}"),
        }
        let ok = br#"{"id":2,"jsonrpc":"2.0","error":null,"result":{"status":"OK"}}"#;
        assert_eq!(parse_line(ok), Incoming::Reply { id: 2, outcome: Ok(r#"{"status":"OK"}"#.into()) });
        let err = br#"{"id":3,"jsonrpc":"2.0","error":{"code":-1,"message":"Duplicate share"},"result":null}"#;
        assert_eq!(parse_line(err), Incoming::Reply { id: 3, outcome: Err("Duplicate share".into()) });
        assert!(matches!(parse_line(b"garbage"), Incoming::Unknown(_)));
        assert!(matches!(parse_line(br#"{"id":"x","result":1}"#), Incoming::Unknown(_)));
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","method":"job","params":{"blob":"zz"}}"#),
            Incoming::Unknown(_)
        ));
        let login = format!(
            r#"{{"id":"482913700512334","job":{},"extensions":["algo","keepalive"],"status":"OK"}}"#,
            job_json(5)
        );
        let (session, job) = parse_login_result(&login).unwrap();
        assert_eq!(&*session, "482913700512334");
        assert_eq!(job.height, 5);
        assert!(parse_login_result(r#"{"status":"OK"}"#).is_err());
    }

    #[test]
    fn nonce_offset_follows_the_header_varints() {
        let blob = hex::decode(BLOB).unwrap();
        assert_eq!(nonce_offset(&blob), Some(39));
        // A 4-byte timestamp moves the nonce one byte to the left.
        let mut short = vec![0x02, 0x00, 0x80, 0x80, 0x80, 0x01];
        short.extend_from_slice(&[0xaa; 32]);
        short.extend_from_slice(&[0; 4]);
        assert_eq!(nonce_offset(&short), Some(38));
        assert_eq!(nonce_offset(&short[..40]), None);
    }

    #[test]
    fn targets_of_both_widths() {
        assert_eq!(target_difficulty(&target_hex4(1)), Some(1));
        assert_eq!(target_difficulty("711b0d00"), Some(5000));
        assert_eq!(target_difficulty("96218e75711b0d00"), Some(5000));
        assert_eq!(target_difficulty("abc"), None);
    }

    #[test]
    fn classifies_every_pool_message() {
        use pastella_pool::stratum::protocol::msg;
        let cases = [
            (msg::INVALID_RESULT, Reason::InvalidResult),
            (msg::LOW_DIFFICULTY, Reason::LowDifficulty),
            (msg::DUPLICATE, Reason::Duplicate),
            ("Duplicate share2", Reason::Duplicate),
            (msg::STALE, Reason::Stale),
            ("Block expired", Reason::Stale),
            (msg::INVALID_JOB_ID, Reason::InvalidJobId),
            (msg::UNAUTHENTICATED, Reason::Unauthenticated),
            (msg::BANNED, Reason::Banned),
            (msg::MALFORMED_NONCE, Reason::Malformed),
            (msg::MALFORMED_RESULT, Reason::Malformed),
            (msg::INVALID_PARAMS, Reason::Malformed),
            ("Attack detected", Reason::Malformed),
            (msg::NOT_READY, Reason::NotReady),
            (msg::VERIFY_FAILED, Reason::VerifyFailed),
            ("Invalid address used for login: bad checksum", Reason::BadLogin),
            (msg::MISSING_LOGIN, Reason::BadLogin),
            (msg::INVALID_METHOD, Reason::InvalidMethod),
            ("something else", Reason::Other),
            ("", Reason::Other),
        ];
        for (text, want) in cases {
            assert_eq!(Reason::of(text), want, "{text:?}");
        }
    }
}

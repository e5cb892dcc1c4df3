//! Found blocks on their way to the daemon: recorded before the first `submitblock`, so a block
//! survives a daemon outage, a pool restart and SIGKILL, and is resubmitted until it is resolved.

use std::collections::HashMap;
use std::sync::OnceLock;

use redis::Script;

use super::{timed, CandidateRecord, Store, StoreError};

/// A resolved record is kept this long for the operator, then expires.
pub const RESOLVED_SUBMISSION_TTL_SECS: u64 = 30 * 86_400;

/// A block candidate with everything needed to submit it again and to book it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The candidate as the ledger books it (finder, height, reward, window size, ...).
    pub candidate: CandidateRecord,
    /// The full block blob, hex.
    pub blob_hex: String,
    /// The parent block id, hex.
    pub prev_hash: String,
    /// The stratum node that found it (hex instance id).
    pub instance: String,
}

/// How a submission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionStatus {
    /// The daemon took it (or the chain holds it at its height).
    Accepted,
    /// The daemon refused it for good.
    Rejected,
    /// The chain passed its height with another block before the daemon took it.
    Superseded,
}

impl SubmissionStatus {
    /// The `status` field value.
    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionStatus::Accepted => "accepted",
            SubmissionStatus::Rejected => "rejected",
            SubmissionStatus::Superseded => "superseded",
        }
    }
}

fn save_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("lua/save_submission.lua")))
}

fn resolve_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("lua/resolve_submission.lua")))
}

fn attempt_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("lua/note_submission_attempt.lua")))
}

impl Store {
    /// Notes the `attempts`-th failed attempt of a pending submission (`attempts`, `detail`,
    /// `updated` in `blocks:submit:<hash>`); false if it is not pending.
    pub async fn note_submission_attempt(
        &self,
        hash: &str,
        attempts: u32,
        now_ms: u64,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let mut invocation = attempt_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(hash).arg(attempts).arg(now_ms).arg(detail);
        let noted: i64 = timed("note_submission_attempt", invocation.invoke_async(&mut self.conn())).await?;
        Ok(noted == 1)
    }

    /// Records `s` as pending (`blocks:submit:<hash>` and `blocks:submitting`), at most once per
    /// hash. Returns false if it was already recorded.
    pub async fn save_submission(&self, s: &Submission, now_ms: u64) -> Result<bool, StoreError> {
        let c = &s.candidate;
        let mut invocation = save_script().prepare_invoke();
        invocation.arg(&self.prefix).arg(&c.hash).arg(c.height).arg(now_ms);
        let fields: [(&str, String); 13] = [
            ("hash", c.hash.clone()),
            ("height", c.height.to_string()),
            ("prevHash", s.prev_hash.clone()),
            ("blob", s.blob_hex.clone()),
            ("type", super::shares::reward_type(c.solo).to_string()),
            ("login", c.login.clone()),
            ("worker", c.worker.clone()),
            ("difficulty", c.network_difficulty.to_string()),
            ("reward", c.reward.to_string()),
            ("windowSize", c.window.to_string()),
            ("shareDifficulty", c.share_difficulty.to_string()),
            ("found", c.found_ms.to_string()),
            ("instance", s.instance.clone()),
        ];
        for (name, value) in &fields {
            invocation.arg(*name).arg(value);
        }
        let saved: i64 = self.acked("save_submission", &invocation).await?;
        Ok(saved == 1)
    }

    /// Every submission still pending, lowest height first. A record that cannot be read back
    /// (edited by hand) is skipped with an error log.
    pub async fn pending_submissions(&self) -> Result<Vec<Submission>, StoreError> {
        let hashes: Vec<String> = timed(
            "pending_submissions",
            redis::cmd("ZRANGE").arg(self.key("blocks:submitting")).arg(0).arg(-1).query_async(&mut self.conn()),
        )
        .await?;
        // The client refuses an empty pipeline ("empty command").
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for hash in &hashes {
            pipe.hgetall(self.key(&format!("blocks:submit:{hash}")));
        }
        let rows: Vec<HashMap<String, String>> =
            timed("pending_submissions", pipe.query_async(&mut self.conn())).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (hash, row) in hashes.iter().zip(rows) {
            match parse_submission(&row) {
                Some(s) if row.get("status").map(String::as_str) == Some("pending") => out.push(s),
                Some(_) => {}
                None => tracing::error!(hash = %hash, "blocks:submit:{hash} is incomplete; cannot resubmit it"),
            }
        }
        Ok(out)
    }

    /// Ends the submission of `hash` with `status` (`detail`: the daemon's answer or the block
    /// that took the height). Returns false if it was not pending.
    pub async fn resolve_submission(
        &self,
        hash: &str,
        status: SubmissionStatus,
        now_ms: u64,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let mut invocation = resolve_script().prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(hash)
            .arg(status.as_str())
            .arg(now_ms)
            .arg(detail)
            .arg(RESOLVED_SUBMISSION_TTL_SECS);
        let resolved: i64 = self.acked("resolve_submission", &invocation).await?;
        Ok(resolved == 1)
    }
}

fn parse_submission(row: &HashMap<String, String>) -> Option<Submission> {
    let text = |k: &str| row.get(k).cloned();
    let num = |k: &str| row.get(k).and_then(|v| v.parse::<u64>().ok());
    Some(Submission {
        candidate: CandidateRecord {
            login: text("login")?,
            worker: text("worker")?,
            solo: text("type")? == "solo",
            hash: text("hash")?,
            height: num("height")?,
            network_difficulty: num("difficulty")?,
            reward: num("reward")?,
            window: num("windowSize")?,
            share_difficulty: num("shareDifficulty")?,
            found_ms: num("found")?,
        },
        blob_hex: text("blob")?,
        prev_hash: text("prevHash")?,
        instance: text("instance").unwrap_or_default(),
    })
}

//! The abuse phase's flooder: hostile connections that pipeline bogus submits (shares whose
//! claimed result meets the job's difficulty but is not their hash, and every `block_every`-th
//! a fake block claim, a result of 64 zeros), each from the next source address of a range,
//! until told to stop. The pool is expected to refuse past its in-flight caps, ban the address
//! and close; the flooder then moves on to the next address, so the flood never pauses.
//!
//! It measures only what it sent and how the pool answered; the honest sessions' answer times
//! are measured by the ordinary share phase running at the same time.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What to flood with.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    /// The pool's stratum port.
    pub pool: SocketAddr,
    /// Source addresses, used in turn (each is banned after its connection).
    pub sources: Vec<Ipv4Addr>,
    /// Bogus submits pipelined per connection.
    pub batch: u32,
    /// Every n-th submit is a fake block claim (0: none).
    pub block_every: u32,
    /// Keep flooding at least until this many were sent, and until stopped.
    pub at_least: u64,
    /// The miner address to log in with.
    pub login: String,
}

/// What the flood did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodReport {
    /// Connections opened.
    pub connections: u64,
    /// Connections whose login was refused or unanswered (a banned address, a cap).
    pub refused: u64,
    /// Submit lines written to the socket.
    pub sent: u64,
    /// Of those, fake block claims.
    pub fake_blocks: u64,
    /// Answers received, by error message (`OK` for accepted).
    pub answers: BTreeMap<String, u64>,
    /// Seconds the flood ran.
    pub seconds: f64,
}

/// A result whose claimed difficulty (about 256) meets any low port difficulty.
fn plausible_result() -> String {
    format!("{}00", "ff".repeat(31))
}

/// Floods until `stop` is set and at least `spec.at_least` submits were sent.
pub async fn flood(spec: FloodSpec, stop: Arc<AtomicBool>) -> FloodReport {
    let started = std::time::Instant::now();
    let mut report = FloodReport::default();
    let mut nonce: u32 = rand::random::<u32>() >> 1;
    let mut stopped_at = None;
    for source in spec.sources.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            // Finish the promised count, but never run a minute past the phase.
            let since = *stopped_at.get_or_insert_with(std::time::Instant::now);
            if report.sent >= spec.at_least || since.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        report.connections += 1;
        if !one_connection(&spec, *source, &mut nonce, &mut report).await {
            report.refused += 1;
            // A banned or capped address: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// One hostile connection; false if its login was refused or unanswered (the submits are sent
/// anyway, with the session id the pool gave or a made-up one).
async fn one_connection(spec: &FloodSpec, source: Ipv4Addr, nonce: &mut u32, report: &mut FloodReport) -> bool {
    let Ok(stream) = crate::net::connect(spec.pool, Some(source), Duration::from_secs(10)).await else {
        return false;
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let login = json!({"id": 1, "jsonrpc": "2.0", "method": "login",
                       "params": {"login": spec.login, "pass": "flood", "agent": "pastella-loadtest flood"}});
    if write.write_all(format!("{login}\n").as_bytes()).await.is_err() {
        return false;
    }
    let reply = match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
        Ok(Ok(Some(line))) => serde_json::from_str::<Value>(&line).unwrap_or(Value::Null),
        _ => return false,
    };
    let logged_in = reply["result"]["id"].is_string();
    if !logged_in {
        *report.answers.entry(message(&reply)).or_default() += 1;
    }
    let session = reply["result"]["id"].as_str().unwrap_or("1");
    let job_id = reply["result"]["job"]["job_id"].as_str().unwrap_or("1");
    let mut lines_out = Vec::with_capacity(spec.batch as usize);
    for i in 0..spec.batch {
        *nonce = nonce.wrapping_add(1);
        let fake_block = spec.block_every > 0 && i % spec.block_every == spec.block_every - 1;
        let result = if fake_block { "00".repeat(32) } else { plausible_result() };
        let submit = json!({"id": 2 + i, "jsonrpc": "2.0", "method": "submit",
            "params": {"id": session, "job_id": job_id, "nonce": hex::encode(nonce.to_le_bytes()), "result": result}});
        lines_out.push((format!("{submit}\n"), fake_block));
    }
    // The pool closes the socket mid-batch once the address is banned: count what went out,
    // in chunks of 50 lines written to the socket.
    for chunk in lines_out.chunks(50) {
        let text: String = chunk.iter().map(|(line, _)| line.as_str()).collect();
        if write.write_all(text.as_bytes()).await.is_err() {
            break;
        }
        report.sent += chunk.len() as u64;
        report.fake_blocks += chunk.iter().filter(|(_, fake)| *fake).count() as u64;
    }
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["method"] != "job" {
            *report.answers.entry(message(&v)).or_default() += 1;
        }
    }
    logged_in
}

fn message(reply: &Value) -> String {
    match reply["error"]["message"].as_str() {
        Some(text) => text.to_string(),
        None if reply["result"].is_object() => "OK".to_string(),
        None => "no answer".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_named_by_their_message() {
        assert_eq!(message(&json!({"error": {"code": -1, "message": "Your IP is banned"}})), "Your IP is banned");
        assert_eq!(message(&json!({"error": null, "result": {"status": "OK"}})), "OK");
        assert_eq!(message(&Value::Null), "no answer");
        assert_eq!(plausible_result().len(), 64);
    }
}

//! Redis: the only module that knows key names, value formats and Lua scripts.
//!
//! Every key starts with `<coin>:` (config `coin`, default `pastella`). Keys and formats of the
//! old Node.js pool (spec §9) are kept so its tools and frontend keep working; new structures
//! (balances, the PPLNS window, block info, the payment journal, the leader lease) live under
//! new names documented in `docs/REDIS.md`.

mod block_payouts;
mod money;
mod safety;
mod shares;
mod stats;
mod submissions;

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

pub use block_payouts::{BlockPayout, PartialRecord, PayoutTerms};
pub use money::{BalanceRow, BatchDestination, Candidate, Confirmation, JournalEntry, MoneyAudit};
pub use safety::RedisSafety;
pub use shares::{CandidateRecord, CandidateResult, PplnsNeed, ShareRecord, PPLNS_NEED_HEIGHTS};
pub use stats::{BalanceSums, JournalRead, MinerRead, PoolRead, Scored, StringMap, WorkerRead};
pub use submissions::{Submission, SubmissionStatus, RESOLVED_SUBMISSION_TTL_SECS};

/// A Redis failure, with the operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("redis {op}: {source}")]
pub struct StoreError {
    /// What the pool was doing.
    pub op: &'static str,
    /// The client's error.
    #[source]
    pub source: redis::RedisError,
}

/// Shared handle to the pool's Redis (cheap to clone; reconnects by itself).
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    prefix: String,
}

impl Store {
    /// Connects to `url` (`redis://[:password@]host:port/db`), retrying until `deadline`
    /// elapses so a Redis that starts a moment after the pool is not an error.
    pub async fn connect(url: &str, prefix: &str, deadline: Duration) -> Result<Store, StoreError> {
        let client = redis::Client::open(url).map_err(|source| StoreError { op: "open", source })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let started = Instant::now();
        loop {
            match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                Ok(conn) => return Ok(Store { conn, prefix: prefix.to_string() }),
                Err(source) if started.elapsed() >= deadline => return Err(StoreError { op: "connect", source }),
                Err(e) => {
                    tracing::warn!("Redis at {} unreachable ({e}); retrying", redact(url));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// The key prefix (`coin`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:<suffix>`.
    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}:{}", self.prefix, suffix)
    }

    /// A connection handle for one operation.
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// `PING`, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", async {
            let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
            Ok(())
        })
        .await
    }
}

/// Runs one Redis operation, recording its latency and failures.
pub(crate) async fn timed<T>(
    op: &'static str,
    fut: impl std::future::Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = fut.await;
    crate::metrics::redis(op, started.elapsed(), result.is_ok());
    result.map_err(|source| StoreError { op, source })
}

/// A Redis URL with its password hidden, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://****{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact("redis://:secret@127.0.0.1:6379/0"), "redis://****@127.0.0.1:6379/0");
        assert_eq!(super::redact("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
    }
}

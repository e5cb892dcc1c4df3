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

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, MultiplexedConnection};

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

/// Where the pool's Redis is, and how sure a write must be before it counts.
#[derive(Clone)]
pub struct RedisTarget {
    /// `redis://[:password@]host:port/db`: the Redis itself, or (with `sentinels`) only the db
    /// and password used on the master they name. Contains the password: never log it.
    pub url: String,
    /// Sentinels as `host:port`; empty = connect to `url` directly.
    pub sentinels: Vec<String>,
    /// The master's name in the sentinels' configuration.
    pub master_name: String,
    /// Replica acknowledgement of money writes and share flushes.
    pub wait: ReplicaWait,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisTarget({}, {:?})", self.describe(), self.wait)
    }
}

/// `WAIT replicas timeout` after each money write and share flush; fewer acknowledgements fail
/// the step (every such step is idempotent, and its caller retries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    /// Replicas that must hold the write; 0 = no `WAIT`.
    pub replicas: u32,
    /// How long one `WAIT` may block.
    pub timeout: Duration,
}

impl RedisTarget {
    /// One Redis at `url`, no replica acknowledgement.
    pub fn direct(url: &str) -> RedisTarget {
        RedisTarget {
            url: url.to_string(),
            sentinels: Vec::new(),
            master_name: String::new(),
            wait: ReplicaWait { replicas: 0, timeout: Duration::from_secs(2) },
        }
    }

    /// The target for logs and errors, password hidden (also its `Debug`).
    pub fn describe(&self) -> String {
        if self.sentinels.is_empty() {
            redact(&self.url)
        } else {
            format!("master \"{}\" via sentinels {}", self.master_name, self.sentinels.join(", "))
        }
    }
}

/// Shared handle to the pool's Redis (cheap to clone; reconnects by itself and, with Sentinel,
/// follows the master through failovers).
#[derive(Clone)]
pub struct Store {
    master: Arc<Master>,
    prefix: String,
}

/// The current master and the connections to it.
struct Master {
    /// Every ordinary command; replaced when the sentinels name a new master.
    conn: ArcSwap<ConnectionManager>,
    /// The master's client, to open `money` on.
    client: ArcSwap<redis::Client>,
    /// The connection money writes use when `wait` is on: a plain multiplexed connection never
    /// reconnects silently, so the `WAIT` that follows a write runs on the connection that wrote
    /// it (`WAIT` counts only that client's writes). `WAIT` blocks this connection only, so
    /// money steps queue behind it while stratum and the API keep `conn`. `None` = open at the
    /// next money write.
    money: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Replica acknowledgement of money writes.
    wait: ReplicaWait,
}

fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
}

/// How often the sentinels are asked who the master is.
const SENTINEL_POLL: Duration = Duration::from_secs(1);

impl Store {
    /// Connects to `url` (`redis://[:password@]host:port/db`), retrying until `deadline`
    /// elapses so a Redis that starts a moment after the pool is not an error.
    pub async fn connect(url: &str, prefix: &str, deadline: Duration) -> Result<Store, StoreError> {
        Store::connect_to(&RedisTarget::direct(url), prefix, deadline).await
    }

    /// Connects to `target`: directly, or to the master its sentinels name, following that
    /// master through failovers for as long as the store lives. Retries until `deadline`.
    pub async fn connect_to(target: &RedisTarget, prefix: &str, deadline: Duration) -> Result<Store, StoreError> {
        let mut sentinel = if target.sentinels.is_empty() {
            None
        } else {
            let urls: Vec<String> = target.sentinels.iter().map(|s| format!("redis://{s}")).collect();
            let sentinel =
                redis::sentinel::Sentinel::build(urls).map_err(|source| StoreError { op: "open", source })?;
            Some((sentinel, master_node_info(&target.url)?))
        };
        let started = Instant::now();
        loop {
            let attempt = async {
                let client = match &mut sentinel {
                    None => redis::Client::open(target.url.as_str())?,
                    Some((sentinel, node)) => sentinel.async_master_for(&target.master_name, Some(node)).await?,
                };
                let conn = ConnectionManager::new_with_config(client.clone(), manager_config()).await?;
                Ok::<_, redis::RedisError>((client, conn))
            };
            match attempt.await {
                Ok((client, conn)) => {
                    let master = Arc::new(Master {
                        conn: ArcSwap::from_pointee(conn),
                        client: ArcSwap::from_pointee(client),
                        money: tokio::sync::Mutex::new(None),
                        wait: target.wait,
                    });
                    if let Some((sentinel, node)) = sentinel {
                        let name = target.master_name.clone();
                        tokio::spawn(follow_master(Arc::downgrade(&master), sentinel, name, node));
                    }
                    return Ok(Store { master, prefix: prefix.to_string() });
                }
                Err(source) if started.elapsed() >= deadline => return Err(StoreError { op: "connect", source }),
                Err(e) => {
                    tracing::warn!("Redis at {} unreachable ({e}); retrying", target.describe());
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
        self.master.conn.load().as_ref().clone()
    }

    /// Runs a money script (or a share flush) and, with `redis.waitReplicas` > 0, waits until
    /// that many replicas hold its writes: fewer is an error, so the caller retries the
    /// (idempotent) step rather than trusting a write a failover could lose.
    pub(crate) async fn acked<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let wait = self.master.wait;
        if wait.replicas == 0 {
            return timed(op, invocation.invoke_async(&mut self.conn())).await;
        }
        let result = timed(op, async {
            let mut conn = self.money_conn().await?;
            let value: T = invocation.invoke_async(&mut conn).await?;
            let timeout_ms = u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX);
            // `WAIT` counts up to this client's last write, and a retried script that finds its
            // work done writes nothing: a write of our own first makes the `WAIT` cover
            // everything the master holds, the first attempt's writes included.
            let (acked,): (u32,) = redis::pipe()
                .cmd("INCR")
                .arg(self.key("replication:acks"))
                .ignore()
                .cmd("WAIT")
                .arg(wait.replicas)
                .arg(timeout_ms)
                .query_async(&mut conn)
                .await?;
            if acked < wait.replicas {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "replicas did not acknowledge the write",
                    format!("WAIT: {acked} of {} replica(s) within {timeout_ms} ms", wait.replicas),
                )));
            }
            Ok(value)
        })
        .await;
        if result.is_err() {
            // A broken or doubtful connection: the next money write opens a fresh one.
            *self.master.money.lock().await = None;
        }
        result
    }

    /// The money connection, opened on the current master if there is none.
    async fn money_conn(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let mut slot = self.master.money.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(3)));
        let client = self.master.client.load_full();
        let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        *slot = Some(conn.clone());
        Ok(conn)
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

/// The db and password to use on whichever master the sentinels name, from the `redis://` URL.
fn master_node_info(url: &str) -> Result<redis::sentinel::SentinelNodeConnectionInfo, StoreError> {
    let info =
        redis::IntoConnectionInfo::into_connection_info(url).map_err(|source| StoreError { op: "open", source })?;
    Ok(redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(info.redis_settings().clone()))
}

/// Asks the sentinels every [`SENTINEL_POLL`] who the master is; when they name another one
/// (a failover), connects to it and swaps it in. Ends with the last clone of the store.
async fn follow_master(
    master: Weak<Master>,
    mut sentinel: redis::sentinel::Sentinel,
    name: String,
    node: redis::sentinel::SentinelNodeConnectionInfo,
) {
    let mut unreachable = false;
    loop {
        tokio::time::sleep(SENTINEL_POLL).await;
        let Some(master) = master.upgrade() else { return };
        let client = match sentinel.async_master_for(&name, Some(&node)).await {
            Ok(client) => client,
            Err(e) => {
                // During a failover the old master is down and no new one is promoted yet.
                if !unreachable {
                    tracing::warn!("Redis Sentinel: no master \"{name}\" reachable ({e}); asking again");
                }
                unreachable = true;
                continue;
            }
        };
        unreachable = false;
        let addr = client.get_connection_info().addr().clone();
        if &addr == master.client.load().get_connection_info().addr() {
            continue;
        }
        match ConnectionManager::new_with_config(client.clone(), manager_config()).await {
            Ok(conn) => {
                master.conn.store(Arc::new(conn));
                master.client.store(Arc::new(client));
                *master.money.lock().await = None;
                crate::metrics::redis_failover();
                tracing::warn!("Redis master \"{name}\" is now {addr} (Sentinel failover); reconnected");
            }
            Err(e) => tracing::warn!("Redis Sentinel names {addr} as master \"{name}\" but it is unreachable ({e})"),
        }
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

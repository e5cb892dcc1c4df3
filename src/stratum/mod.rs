//! The miner-facing side: one [`PortSupervisor`] actor per configured port accepts
//! connections and spreads [`MinerSession`] actors (one per TCP connection) over one arbiter
//! per core; sessions speak the stratum protocol of spec §7, build their own jobs from the
//! shared template and send shares to the verifier pool.
//!
//! Pure rules live beside the actors and are unit-tested without them: [`protocol`] (wire
//! format), [`login`] (login string), [`vardiff`], [`trust`] (share trust), [`bans`], and
//! [`line`] (the bufferless line reader), [`proxy_header`] (PROXY protocol and first-byte
//! sniff). [`transport`] sits below the session: accept policy, PROXY header and TLS.

pub mod bans;
pub mod line;
pub mod login;
pub mod protocol;
pub mod proxy_header;
pub mod session;
pub mod supervisor;
pub mod transport;
pub mod trust;
pub mod vardiff;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Recipient;
use arc_swap::ArcSwapOption;

use crate::accounting::ledger::RecordShare;
use crate::config::Config;
use crate::jobs::{JobTemplate, SubmitBlock};
use crate::pow::PowEngine;

pub use session::MinerSession;
pub use supervisor::PortSupervisor;

/// Longest request line accepted (the old pool's flood limit).
pub const MAX_LINE: usize = 10_240;
/// Jobs a session remembers (shares for older jobs get `Invalid job id`).
pub const JOBS_KEPT: usize = 4;
/// A connection that has not logged in after this long is closed.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// A login waits at most this long for the first template before it is refused.
pub const TEMPLATE_WAIT: Duration = Duration::from_secs(10);
/// Bytes queued for a miner that does not read before its connection is dropped.
pub const MAX_OUTBOX: usize = 256 * 1024;

/// What every session of every port shares.
pub struct StratumContext {
    /// The whole config.
    pub config: Arc<Config>,
    /// Vardiff parameters derived from the config.
    pub vardiff: vardiff::Params,
    /// The verifier pool.
    pub engine: PowEngine,
    /// The template being mined (None until the daemon answered once).
    pub current: Arc<ArcSwapOption<JobTemplate>>,
    /// Shared IP bans.
    pub bans: bans::BanList,
    /// Where accepted shares go.
    pub ledger: Recipient<RecordShare>,
    /// Where block candidates go.
    pub jobs: Recipient<SubmitBlock>,
    /// Connection caps.
    pub limits: ConnectionLimits,
    /// Accept policy, PROXY header and TLS.
    pub transport: transport::Transport,
    next_job_id: AtomicU64,
}

impl StratumContext {
    /// Builds the shared context.
    pub fn new(
        config: Arc<Config>,
        engine: PowEngine,
        current: Arc<ArcSwapOption<JobTemplate>>,
        ledger: Recipient<RecordShare>,
        jobs: Recipient<SubmitBlock>,
    ) -> StratumContext {
        StratumContext {
            vardiff: vardiff::Params::new(&config.var_diff),
            bans: bans::BanList::new(config.banning.clone()),
            limits: ConnectionLimits::new(
                config.pool_server.max_connections,
                config.pool_server.max_connections_per_ip,
            ),
            transport: transport::Transport::new(&config.pool_server, None),
            config,
            engine,
            current,
            ledger,
            jobs,
            // Random start so job ids differ across restarts (xmrig drops duplicate jobs).
            next_job_id: AtomicU64::new(rand::random::<u32>() as u64 * 1_000_000),
        }
    }

    /// Serves TLS ports with `acceptor`.
    pub fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> StratumContext {
        self.transport = transport::Transport::new(&self.config.pool_server, Some(acceptor));
        self
    }

    /// A process-unique job id.
    pub fn next_job_id(&self) -> u64 {
        self.next_job_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Global and per-IP connection caps, shared by all ports.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimits {
    /// Caps of `max_total` connections and `max_per_ip` per IP.
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnectionLimits {
        ConnectionLimits { max_total, max_per_ip, total: AtomicUsize::new(0), per_ip: Mutex::new(HashMap::new()) }
    }

    /// Takes a connection slot for `ip`, or says which cap refused it.
    pub fn acquire(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("limit_global");
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            drop(per_ip);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("limit_ip");
        }
        *count += 1;
        Ok(())
    }

    /// Gives back a slot taken with [`ConnectionLimits::acquire`].
    pub fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// Open connections on all ports.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_cap_total_and_per_ip() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(limits.acquire(a), Ok(()));
        assert_eq!(limits.acquire(a), Ok(()));
        assert_eq!(limits.acquire(a), Err("limit_ip"));
        assert_eq!(limits.acquire(b), Ok(()));
        assert_eq!(limits.acquire(b), Err("limit_global"));
        limits.release(a);
        assert_eq!(limits.acquire(b), Ok(()));
        assert_eq!(limits.total(), 3);
    }
}

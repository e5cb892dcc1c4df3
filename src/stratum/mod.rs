//! The miner-facing side: one [`PortSupervisor`] actor per configured port accepts
//! connections and spreads [`MinerSession`] actors (one per TCP connection) over one arbiter
//! per core; sessions speak the stratum protocol of spec §7, build their own jobs from the
//! shared template and send shares to the verifier pool. A new template reaches them through
//! [`delivery`]: one task per arbiter, no message per session.
//!
//! Pure rules live beside the actors and are unit-tested without them: [`protocol`] (wire
//! format), [`login`] (login string), [`vardiff`], [`trust`] (share trust), [`bans`],
//! [`ratelimit`] (per-IP token buckets), [`inflight`] (verification caps per session and IP),
//! [`line`] (the bufferless line reader, with its slowloris timeout) and [`proxy_header`]
//! (PROXY protocol and first-byte sniff). [`transport`] sits below the session: accept policy
//! (`allow`/`deny`), PROXY header and TLS.

pub mod bans;
pub mod capacity;
pub mod delivery;
pub mod inflight;
pub mod line;
pub mod login;
pub mod protocol;
pub mod proxy_header;
pub mod ratelimit;
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
use arc_swap::{ArcSwap, ArcSwapOption};

use crate::accounting::ledger::RecordShare;
use crate::config::Config;
use crate::jobs::{JobTemplate, SubmitBlock};
use crate::pow::PowEngine;

pub use session::MinerSession;
pub use supervisor::{PortSupervisor, PortSupervisors};

/// Longest request line accepted (the old pool's flood limit).
pub const MAX_LINE: usize = 10_240;
/// Jobs a session remembers (shares for older jobs get `Invalid job id`).
pub const JOBS_KEPT: usize = 4;
/// A login waits at most this long for the first template before it is refused.
pub const TEMPLATE_WAIT: Duration = Duration::from_secs(10);
/// Bytes queued for a miner that does not read before its connection is dropped.
pub const MAX_OUTBOX: usize = 256 * 1024;

/// What every session of every port shares.
pub struct StratumContext {
    /// The whole config; replaced by a reload ([`StratumContext::apply`]), so read it where it
    /// is used rather than copying it.
    pub config: ArcSwap<Config>,
    /// Vardiff parameters derived from the config (replaced with it).
    pub vardiff: ArcSwap<vardiff::Params>,
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
    /// Closed at shutdown: no new submit is taken once it is.
    pub submits: SubmitGate,
    /// Per-IP request rate limits.
    pub rates: ratelimit::RateLimiter,
    /// Verification caps per session and IP.
    pub in_flight: Arc<inflight::InFlight>,
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
            vardiff: ArcSwap::from_pointee(vardiff::Params::new(&config.var_diff)),
            bans: bans::BanList::new(config.banning.clone()),
            limits: ConnectionLimits::new(
                config.pool_server.max_connections,
                config.pool_server.max_connections_per_ip,
                config.limits.max_connections_per_subnet,
            ),
            rates: ratelimit::RateLimiter::new(config.limits.rate_limits),
            in_flight: inflight::InFlight::new(config.limits.shares_in_flight),
            transport: transport::Transport::new(&config.pool_server, None),
            config: ArcSwap::new(config),
            engine,
            current,
            ledger,
            jobs,
            submits: SubmitGate::default(),
            // Random start so job ids differ across restarts (xmrig drops duplicate jobs).
            next_job_id: AtomicU64::new(rand::random::<u32>() as u64 * 1_000_000),
        }
    }

    /// True if `ip` is in `poolServer.allow`: exempt from per-IP caps and rate limits (never
    /// from share checks).
    pub fn exempt(&self, ip: IpAddr) -> bool {
        self.transport.is_allowed(ip)
    }

    /// Serves TLS ports with `acceptor`.
    pub fn with_tls(self, acceptor: tokio_rustls::TlsAcceptor) -> StratumContext {
        self.transport.set_tls(acceptor);
        self
    }

    /// Applies a reloaded config to everything the sessions share: vardiff and fixed-diff
    /// rules, share trust, bans, rate limits, in-flight caps, connection caps, allow/deny and
    /// the timeouts. Sessions read these where they use them, so open connections are not
    /// touched; per-port settings go to each [`PortSupervisor`].
    pub fn apply(&self, config: Arc<Config>) {
        self.vardiff.store(Arc::new(vardiff::Params::new(&config.var_diff)));
        self.bans.set_config(config.banning.clone());
        self.limits.set_caps(
            config.pool_server.max_connections,
            config.pool_server.max_connections_per_ip,
            config.limits.max_connections_per_subnet,
        );
        self.rates.set_config(config.limits.rate_limits);
        self.in_flight.set_config(config.limits.shares_in_flight);
        self.transport.set_policy(&config.pool_server);
        self.config.store(config);
    }

    /// A process-unique job id.
    pub fn next_job_id(&self) -> u64 {
        self.next_job_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Global, per-IP and per-subnet connection caps, shared by all ports.
pub struct ConnectionLimits {
    max_total: AtomicUsize,
    max_per_ip: AtomicUsize,
    max_per_subnet: AtomicUsize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    per_subnet: Mutex<HashMap<IpAddr, usize>>,
}

/// The subnet an address counts against: its IPv4 /24 or IPv6 /64 (one customer's block).
pub fn subnet(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

impl ConnectionLimits {
    /// Caps of `max_total` connections, `max_per_ip` per IP and `max_per_subnet` per /24 or /64.
    pub fn new(max_total: usize, max_per_ip: usize, max_per_subnet: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_total: AtomicUsize::new(max_total),
            max_per_ip: AtomicUsize::new(max_per_ip),
            max_per_subnet: AtomicUsize::new(max_per_subnet),
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            per_subnet: Mutex::new(HashMap::new()),
        }
    }

    /// Applies reloaded caps to the connections accepted from now on; open connections above
    /// a lowered cap stay (they are not kicked).
    pub fn set_caps(&self, max_total: usize, max_per_ip: usize, max_per_subnet: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_ip.store(max_per_ip, Ordering::Relaxed);
        self.max_per_subnet.store(max_per_subnet, Ordering::Relaxed);
    }

    /// Takes a connection slot for `ip`, or says which cap refused it. An `exempt` address
    /// (`poolServer.allow`) is held only by the global cap, and not counted per IP or subnet.
    pub fn acquire(&self, ip: IpAddr, exempt: bool) -> Result<(), &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total.load(Ordering::Relaxed) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("limit_global");
        }
        if exempt {
            return Ok(());
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let mut per_subnet = self.per_subnet.lock().unwrap_or_else(|e| e.into_inner());
        let ip_count = per_ip.get(&ip).copied().unwrap_or(0);
        let net_count = per_subnet.get(&subnet(ip)).copied().unwrap_or(0);
        let refused = if ip_count >= self.max_per_ip.load(Ordering::Relaxed) {
            Some("limit_ip")
        } else if net_count >= self.max_per_subnet.load(Ordering::Relaxed) {
            Some("limit_subnet")
        } else {
            None
        };
        if let Some(reason) = refused {
            drop((per_ip, per_subnet));
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(reason);
        }
        per_ip.insert(ip, ip_count + 1);
        per_subnet.insert(subnet(ip), net_count + 1);
        Ok(())
    }

    /// Gives back a slot taken with [`ConnectionLimits::acquire`] (same `exempt`).
    pub fn release(&self, ip: IpAddr, exempt: bool) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if exempt {
            return;
        }
        let give_back = |map: &Mutex<HashMap<IpAddr, usize>>, key: IpAddr| {
            let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = map.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    map.remove(&key);
                }
            }
        };
        give_back(&self.per_ip, ip);
        give_back(&self.per_subnet, subnet(ip));
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
        let limits = ConnectionLimits::new(3, 2, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(limits.acquire(a, false), Ok(()));
        assert_eq!(limits.acquire(a, false), Ok(()));
        assert_eq!(limits.acquire(a, false), Err("limit_ip"));
        assert_eq!(limits.acquire(b, false), Ok(()));
        assert_eq!(limits.acquire(b, false), Err("limit_global"));
        limits.release(a, false);
        assert_eq!(limits.acquire(b, false), Ok(()));
        assert_eq!(limits.total(), 3);
    }

    #[test]
    fn limits_cap_per_subnet_and_exempt_addresses_skip_ip_and_subnet_caps() {
        let limits = ConnectionLimits::new(100, 2, 3);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(limits.acquire(ip("10.0.0.1"), false), Ok(()));
        assert_eq!(limits.acquire(ip("10.0.0.2"), false), Ok(()));
        assert_eq!(limits.acquire(ip("10.0.0.3"), false), Ok(()));
        assert_eq!(limits.acquire(ip("10.0.0.4"), false), Err("limit_subnet"), "4th in 10.0.0.0/24");
        assert_eq!(limits.acquire(ip("10.0.1.4"), false), Ok(()), "another /24");
        for _ in 0..5 {
            assert_eq!(limits.acquire(ip("10.0.0.9"), true), Ok(()), "exempt");
        }
        limits.release(ip("10.0.0.9"), true);
        limits.release(ip("10.0.0.2"), false);
        assert_eq!(limits.acquire(ip("10.0.0.4"), false), Ok(()));
        // IPv6: one /64 is one subnet, whatever the interface id.
        let v6 = ConnectionLimits::new(100, 10, 2);
        assert_eq!(v6.acquire(ip("2001:db8:0:1::1"), false), Ok(()));
        assert_eq!(v6.acquire(ip("2001:db8:0:1:ffff::2"), false), Ok(()));
        assert_eq!(v6.acquire(ip("2001:db8:0:1::3"), false), Err("limit_subnet"));
        assert_eq!(v6.acquire(ip("2001:db8:0:2::3"), false), Ok(()));
        assert_eq!(subnet(ip("2001:db8:0:1:ffff::2")), ip("2001:db8:0:1::"));
        assert_eq!(limits.total(), 8);
    }
}

/// Lets shutdown stop taking submits and wait for the ones in flight: a share answered OK
/// has always reached the ledger before the ledger's final flush.
#[derive(Default)]
pub struct SubmitGate {
    closed: std::sync::atomic::AtomicBool,
    in_flight: AtomicUsize,
}

impl SubmitGate {
    /// Enters a submit (false once the gate is closed); a `true` must be paired with `leave`.
    fn enter(&self) -> bool {
        // Count first, then check: with `close` storing first and then reading the count, a
        // submit either sees the gate closed or is counted before shutdown reads the count.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Takes no new submit from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Submits entered and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// A submit being verified and booked; dropping it ends it.
pub struct SubmitTicket(Arc<StratumContext>);

impl SubmitTicket {
    /// Enters a submit, or None once shutdown closed the gate.
    pub fn enter(shared: &Arc<StratumContext>) -> Option<SubmitTicket> {
        shared.submits.enter().then(|| SubmitTicket(shared.clone()))
    }
}

impl Drop for SubmitTicket {
    fn drop(&mut self) {
        self.0.submits.leave();
    }
}

#[cfg(test)]
mod submit_gate_tests {
    use super::SubmitGate;

    #[test]
    fn a_closed_gate_takes_no_submit_and_counts_the_ones_inside() {
        let gate = SubmitGate::default();
        assert!(gate.enter());
        assert_eq!(gate.in_flight(), 1);
        gate.close();
        assert!(!gate.enter());
        assert_eq!(gate.in_flight(), 1);
        gate.leave();
        assert_eq!(gate.in_flight(), 0);
    }
}

//! Bounded verification work (`poolServer.sharesInFlight`): how many shares of one session and
//! of one IP may wait for or occupy a verifier thread at once, and which of them may use the
//! urgent (block candidate) lane.
//!
//! A share that passed the cheap checks takes a [`Permit`]; the permit travels with the
//! verification and gives its slots back when dropped (answered, cancelled or failed), so the
//! counts can never leak. Past a cap the submit is refused at once instead of queued.
//!
//! The urgent lane holds at most one claimed block per session: a second claim while one is in
//! flight goes to the ordinary lane (still verified, still submitted if real), so one session's
//! fake claims can never stand in front of another session's real block for long. A claim that
//! fails verification closes the session and bans the IP, and [`Cancel`] drops whatever that
//! session or IP still had queued before it is hashed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::SharesInFlightConfig;

/// Which cap refused a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapHit {
    /// The session has `perSession` shares in flight.
    Session,
    /// The IP has `perIp` shares in flight.
    Ip,
}

impl CapHit {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            CapHit::Session => "in_flight_session",
            CapHit::Ip => "in_flight_ip",
        }
    }
}

/// One session's in-flight counters (owned by the session, shared with its permits).
#[derive(Default)]
pub struct SessionWork {
    shares: AtomicUsize,
    urgent: AtomicBool,
    /// Set when the session closes: its queued shares are no longer worth hashing.
    closed: AtomicBool,
}

impl SessionWork {
    /// Fresh counters.
    pub fn new() -> Arc<SessionWork> {
        Arc::new(SessionWork::default())
    }

    /// Shares of this session in flight.
    pub fn in_flight(&self) -> usize {
        self.shares.load(Ordering::Acquire)
    }

    /// Marks the session closed (its queued work is dropped before hashing).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// True once [`SessionWork::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The per-IP counts shared by all sessions.
pub struct InFlight {
    config: ArcSwap<SharesInFlightConfig>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Slots held by one share under verification; dropping it gives them back.
pub struct Permit {
    table: Arc<InFlight>,
    session: Arc<SessionWork>,
    ip: Option<IpAddr>,
    urgent: bool,
}

impl Permit {
    /// True if this share may use the urgent lane.
    pub fn urgent(&self) -> bool {
        self.urgent
    }

    /// The counters of the session this share came from.
    pub fn session_work(&self) -> Arc<SessionWork> {
        self.session.clone()
    }
}

impl InFlight {
    /// Caps from the config.
    pub fn new(config: SharesInFlightConfig) -> Arc<InFlight> {
        Arc::new(InFlight { config: ArcSwap::from_pointee(config), per_ip: Mutex::new(HashMap::new()) })
    }

    /// Applies reloaded caps to the shares submitted from now on.
    pub fn set_config(&self, config: SharesInFlightConfig) {
        self.config.store(Arc::new(config));
    }

    /// Takes a slot for one share of `session` from `ip`. `block` asks for the urgent lane
    /// (granted if the session has no other claim in flight). `exempt` skips the per-IP cap
    /// (allowed addresses); the per-session cap always applies.
    pub fn acquire(
        self: &Arc<Self>,
        session: &Arc<SessionWork>,
        ip: IpAddr,
        block: bool,
        exempt: bool,
    ) -> Result<Permit, CapHit> {
        let config = **self.config.load();
        if session.shares.fetch_add(1, Ordering::AcqRel) >= config.per_session {
            session.shares.fetch_sub(1, Ordering::AcqRel);
            return Err(CapHit::Session);
        }
        let ip = if exempt {
            None
        } else {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= config.per_ip {
                if *count == 0 {
                    per_ip.remove(&ip);
                }
                drop(per_ip);
                session.shares.fetch_sub(1, Ordering::AcqRel);
                return Err(CapHit::Ip);
            }
            *count += 1;
            Some(ip)
        };
        let urgent = block && !session.urgent.swap(true, Ordering::AcqRel);
        Ok(Permit { table: self.clone(), session: session.clone(), ip, urgent })
    }

    /// Shares of `ip` in flight.
    pub fn ip_in_flight(&self, ip: IpAddr) -> usize {
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner()).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.session.shares.fetch_sub(1, Ordering::AcqRel);
        if self.urgent {
            self.session.urgent.store(false, Ordering::Release);
        }
        if let Some(ip) = self.ip {
            let mut per_ip = self.table.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(per_session: usize, per_ip: usize) -> Arc<InFlight> {
        InFlight::new(SharesInFlightConfig { per_session, per_ip })
    }

    #[test]
    fn caps_per_session_then_per_ip_and_permits_give_slots_back() {
        let t = table(2, 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (s1, s2) = (SessionWork::new(), SessionWork::new());
        let a = t.acquire(&s1, ip, false, false).unwrap();
        let _b = t.acquire(&s1, ip, false, false).unwrap();
        assert_eq!(t.acquire(&s1, ip, false, false).err(), Some(CapHit::Session));
        let _c = t.acquire(&s2, ip, false, false).unwrap();
        assert_eq!(t.acquire(&s2, ip, false, false).err(), Some(CapHit::Ip), "3 per IP");
        assert_eq!((s1.in_flight(), s2.in_flight(), t.ip_in_flight(ip)), (2, 1, 3));
        drop(a);
        assert_eq!((s1.in_flight(), t.ip_in_flight(ip)), (1, 2));
        // Another IP and exempt addresses are not held by this IP's count.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let _d = t.acquire(&s2, other, false, false).unwrap();
        assert_eq!(t.acquire(&SessionWork::new(), ip, false, true).map(|p| p.urgent()).ok(), Some(false));
    }

    #[test]
    fn one_urgent_claim_per_session_at_a_time() {
        let t = table(10, 10);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let s = SessionWork::new();
        let first = t.acquire(&s, ip, true, false).unwrap();
        assert!(first.urgent());
        let second = t.acquire(&s, ip, true, false).unwrap();
        assert!(!second.urgent(), "a second claim waits in the ordinary lane");
        assert!(t.acquire(&SessionWork::new(), ip, true, false).unwrap().urgent(), "other sessions keep theirs");
        drop(second);
        assert!(!t.acquire(&s, ip, true, false).unwrap().urgent(), "the first is still in flight");
        drop(first);
        assert!(t.acquire(&s, ip, true, false).unwrap().urgent());
        assert!(!s.is_closed());
        s.close();
        assert!(s.is_closed());
        assert_eq!(t.ip_in_flight(ip), 0, "every permit dropped");
    }
}

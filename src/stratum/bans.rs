//! IP bans (spec §8.6, `banning` config): per-IP valid/invalid share counters; once an IP has
//! `checkThreshold` shares, it is banned for `time` if at least `invalidPercent` % of them were
//! invalid, else the counters restart. Stale shares never count (they are nobody's fault).
//!
//! Every ban is logged by [`log_ban`] on one line, `<IP> banned: "Ban: <reason>, banned for
//! <n> s"`, in the format of [`crate::log_format`]: what `deploy/fail2ban/` and the operator
//! guide's filter (`<HOST> .* "Ban:.*"`) match.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use crate::config::BanningConfig;

#[derive(Default)]
struct State {
    counters: HashMap<IpAddr, (u32, u32)>,
    banned: HashMap<IpAddr, Instant>,
}

/// The shared ban list of all ports.
pub struct BanList {
    config: ArcSwap<BanningConfig>,
    state: Mutex<State>,
    /// Fast path: no lock while nobody is banned.
    active: AtomicUsize,
}

/// A ban that was just issued.
#[derive(Debug, Clone, PartialEq)]
pub struct Ban {
    /// The banned IP.
    pub ip: IpAddr,
    /// Invalid shares in the checked sample.
    pub invalid: u32,
    /// Size of the checked sample.
    pub total: u32,
    /// Ban duration.
    pub duration: Duration,
}

impl BanList {
    /// An empty ban list.
    pub fn new(config: BanningConfig) -> BanList {
        BanList {
            config: ArcSwap::from_pointee(config),
            state: Mutex::new(State::default()),
            active: AtomicUsize::new(0),
        }
    }

    /// Applies a reloaded `banning` section to the shares counted from now on; bans already
    /// issued keep their end time.
    pub fn set_config(&self, config: BanningConfig) {
        self.config.store(Arc::new(config));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if `ip` is banned now.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        if self.active.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut state = self.lock();
        match state.banned.get(&ip) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                state.banned.remove(&ip);
                self.active.store(state.banned.len(), Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// Counts a share result from `ip`; returns the ban if this share triggered one.
    pub fn record(&self, ip: IpAddr, valid: bool) -> Option<Ban> {
        let config = self.config.load();
        if !config.enabled {
            return None;
        }
        let mut state = self.lock();
        let counters = state.counters.entry(ip).or_default();
        if valid {
            counters.0 += 1;
        } else {
            counters.1 += 1;
        }
        let (good, bad) = *counters;
        let total = good + bad;
        if total < config.check_threshold {
            return None;
        }
        state.counters.remove(&ip);
        if f64::from(bad) * 100.0 < config.invalid_percent * f64::from(total) {
            return None;
        }
        state.banned.insert(ip, Instant::now() + config.time);
        self.active.store(state.banned.len(), Ordering::Relaxed);
        let ban = Ban { ip, invalid: bad, total, duration: config.time };
        let reason = format!(
            "{} of {} shares invalid ({:.0} % >= {} %)",
            bad,
            total,
            f64::from(bad) * 100.0 / f64::from(total),
            config.invalid_percent
        );
        log_ban(ip, &reason, config.time);
        crate::metrics::ban(state.banned.len());
        Some(ban)
    }

    /// Bans `ip` now for `banning.time`, whatever its counters say (a claimed block that was
    /// not one: never an honest mistake). Applies even with `banning.enabled` false.
    pub fn ban_now(&self, ip: IpAddr, reason: &str) -> Ban {
        let config = self.config.load();
        let mut state = self.lock();
        state.counters.remove(&ip);
        state.banned.insert(ip, Instant::now() + config.time);
        self.active.store(state.banned.len(), Ordering::Relaxed);
        log_ban(ip, reason, config.time);
        crate::metrics::ban(state.banned.len());
        Ban { ip, invalid: 1, total: 1, duration: config.time }
    }

    /// Drops expired bans and counters of IPs gone quiet; returns the number of active bans.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        state.banned.retain(|_, until| *until > now);
        // Counters are small; bound them against IP churn.
        if state.counters.len() > 100_000 {
            state.counters.clear();
        }
        let active = state.banned.len();
        self.active.store(active, Ordering::Relaxed);
        crate::metrics::banned_ips(active);
        active
    }
}

/// Logs one ban as `<IP> banned: "Ban: <reason>, banned for <n> s"` (fail2ban reads it; keep
/// the shape, and use this for every kind of ban).
pub fn log_ban(ip: IpAddr, reason: &str, duration: Duration) {
    tracing::warn!(
        target: crate::log_format::BAN_TARGET,
        "{ip} banned: \"Ban: {reason}, banned for {} s\"",
        duration.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(enabled: bool) -> BanList {
        BanList::new(BanningConfig {
            enabled,
            time: Duration::from_secs(120),
            invalid_percent: 50.0,
            check_threshold: 10,
        })
    }

    #[test]
    fn bans_only_when_the_invalid_share_crosses_the_percentage() {
        let bans = list(true);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(bans.record(ip, true), None);
        }
        for _ in 0..4 {
            assert_eq!(bans.record(ip, false), None);
        }
        let ban = bans.record(ip, false).expect("5 of 10 invalid");
        assert_eq!((ban.invalid, ban.total), (5, 10));
        assert!(bans.is_banned(ip));
        assert!(!bans.is_banned("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn counters_restart_after_a_clean_sample_and_disabled_never_bans() {
        let bans = list(true);
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..6 {
            bans.record(ip, true);
        }
        for _ in 0..4 {
            assert_eq!(bans.record(ip, false), None);
        }
        // A fresh sample: 4 invalid out of 10 is below 50 %.
        for _ in 0..6 {
            bans.record(ip, true);
        }
        for _ in 0..3 {
            bans.record(ip, false);
        }
        assert_eq!(bans.record(ip, false), None);
        assert!(!bans.is_banned(ip));
        let off = list(false);
        for _ in 0..100 {
            assert_eq!(off.record(ip, false), None);
        }
        // An outright ban needs no sample, and holds even with counting bans disabled.
        assert_eq!(off.ban_now(ip, "fake block claim").duration, Duration::from_secs(120));
        assert!(off.is_banned(ip));
    }
}

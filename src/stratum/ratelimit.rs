//! Per-IP request rate limits (`poolServer.rateLimits`): one token bucket per IP and method
//! (`login`, `submit`, `getjob`, `keepalived`). A bucket refills at `perSecond` tokens a
//! second up to `burst`; a request that finds it empty is refused at once.
//!
//! Pure types driven by the caller's clock (`now` is passed in), so tests step time by hand.
//! Allowed addresses (`poolServer.allow`) are exempt: the caller passes `exempt`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::{RateLimitConfig, RateLimitsConfig};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(limit: &RateLimitConfig, now: Instant) -> TokenBucket {
        TokenBucket { tokens: limit.burst as f64, last: now }
    }

    /// Takes one token if there is one; refills first for the time since the last call.
    pub fn take(&mut self, limit: &RateLimitConfig, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True once the bucket has refilled completely by `now` (it can be forgotten).
    pub fn is_full(&self, limit: &RateLimitConfig, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * limit.per_second >= limit.burst as f64
    }
}

/// The methods that have a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `login`.
    Login,
    /// `submit`.
    Submit,
    /// `getjob`.
    GetJob,
    /// `keepalived`.
    Keepalived,
}

impl Method {
    /// The method's wire name (metric label, log field).
    pub fn name(self) -> &'static str {
        match self {
            Method::Login => "login",
            Method::Submit => "submit",
            Method::GetJob => "getjob",
            Method::Keepalived => "keepalived",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

struct IpBuckets {
    buckets: [TokenBucket; 4],
    /// The last request was refused: the next refusal is part of the same episode.
    refusing: [bool; 4],
}

/// What [`RateLimiter::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allowed,
    /// Refused; `first` is true for the first refusal after an allowed request (log it).
    Refused {
        /// The first refusal of an episode.
        first: bool,
    },
}

/// The per-IP buckets of every method, shared by all ports.
pub struct RateLimiter {
    config: ArcSwap<RateLimitsConfig>,
    ips: Mutex<HashMap<IpAddr, IpBuckets>>,
}

/// IPs tracked before full buckets are swept on the spot (against address churn).
const SWEEP_AT: usize = 100_000;

impl RateLimiter {
    /// Limits from the config.
    pub fn new(config: RateLimitsConfig) -> RateLimiter {
        RateLimiter { config: ArcSwap::from_pointee(config), ips: Mutex::new(HashMap::new()) }
    }

    /// Applies reloaded limits from now on; each IP's buckets keep their tokens (capped by the
    /// new burst at the next request).
    pub fn set_config(&self, config: RateLimitsConfig) {
        self.config.store(Arc::new(config));
    }

    fn limit(config: &RateLimitsConfig, method: Method) -> &RateLimitConfig {
        match method {
            Method::Login => &config.login,
            Method::Submit => &config.submit,
            Method::GetJob => &config.getjob,
            Method::Keepalived => &config.keepalived,
        }
    }

    /// Counts one `method` request from `ip` at `now`.
    pub fn check(&self, ip: IpAddr, method: Method, now: Instant, exempt: bool) -> Decision {
        let config = self.config.load();
        if exempt || !config.enabled {
            return Decision::Allowed;
        }
        let mut ips = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        if ips.len() >= SWEEP_AT && !ips.contains_key(&ip) {
            self.sweep_locked(&mut ips, now);
        }
        let entry = ips.entry(ip).or_insert_with(|| IpBuckets {
            buckets: [
                TokenBucket::full(&config.login, now),
                TokenBucket::full(&config.submit, now),
                TokenBucket::full(&config.getjob, now),
                TokenBucket::full(&config.keepalived, now),
            ],
            refusing: [false; 4],
        });
        let i = method.index();
        if entry.buckets[i].take(Self::limit(&config, method), now) {
            entry.refusing[i] = false;
            Decision::Allowed
        } else {
            let first = !entry.refusing[i];
            entry.refusing[i] = true;
            Decision::Refused { first }
        }
    }

    /// Forgets IPs whose buckets are all full again; returns how many IPs are still tracked.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut ips = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        self.sweep_locked(&mut ips, now);
        ips.len()
    }

    fn sweep_locked(&self, ips: &mut HashMap<IpAddr, IpBuckets>, now: Instant) {
        let methods = [Method::Login, Method::Submit, Method::GetJob, Method::Keepalived];
        let config = self.config.load();
        ips.retain(|_, b| !methods.iter().all(|m| b.buckets[m.index()].is_full(Self::limit(&config, *m), now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> RateLimitsConfig {
        RateLimitsConfig {
            enabled: true,
            login: RateLimitConfig { per_second: 5.0, burst: 3 },
            submit: RateLimitConfig { per_second: 250.0, burst: 5000 },
            getjob: RateLimitConfig { per_second: 5.0, burst: 10 },
            keepalived: RateLimitConfig { per_second: 2.0, burst: 4 },
        }
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let limit = RateLimitConfig { per_second: 2.0, burst: 3 };
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(&limit, t0);
        assert!((0..3).all(|_| bucket.take(&limit, t0)), "the burst");
        assert!(!bucket.take(&limit, t0), "empty");
        assert!(!bucket.take(&limit, t0 + Duration::from_millis(400)), "0.8 of a token");
        assert!(bucket.take(&limit, t0 + Duration::from_millis(500)), "one token after 1/rate");
        assert!(!bucket.take(&limit, t0 + Duration::from_millis(500)));
        // A long pause refills to the burst, never beyond.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| bucket.take(&limit, later)));
        assert!(!bucket.take(&limit, later));
        assert!(bucket.is_full(&limit, later + Duration::from_secs(2)));
    }

    #[test]
    fn limiter_refuses_per_ip_and_method_and_marks_the_first_refusal() {
        let limiter = RateLimiter::new(limits());
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check(a, Method::Login, t0, false), Decision::Allowed);
        }
        assert_eq!(limiter.check(a, Method::Login, t0, false), Decision::Refused { first: true });
        assert_eq!(limiter.check(a, Method::Login, t0, false), Decision::Refused { first: false });
        // Other methods and other IPs have their own buckets.
        assert_eq!(limiter.check(a, Method::GetJob, t0, false), Decision::Allowed);
        assert_eq!(limiter.check(b, Method::Login, t0, false), Decision::Allowed);
        // Exempt addresses are never refused.
        assert_eq!(limiter.check(a, Method::Login, t0, true), Decision::Allowed);
        // After 1/rate one more login goes through, and a new refusal episode starts.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(limiter.check(a, Method::Login, t1, false), Decision::Allowed);
        assert_eq!(limiter.check(a, Method::Login, t1, false), Decision::Refused { first: true });
    }

    #[test]
    fn sweep_forgets_only_refilled_ips_and_disabled_allows_all() {
        let limiter = RateLimiter::new(limits());
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        limiter.check(a, Method::Keepalived, t0, false);
        for _ in 0..4 {
            limiter.check(b, Method::Keepalived, t0 + Duration::from_millis(400), false);
        }
        // At t0 + 1 s, a refilled its one token; b (4 tokens at 2/s) has not.
        assert_eq!(limiter.sweep(t0 + Duration::from_secs(1)), 1);
        assert_eq!(limiter.sweep(t0 + Duration::from_secs(3)), 0);
        let off = RateLimiter::new(RateLimitsConfig { enabled: false, ..limits() });
        assert!((0..100).all(|_| off.check(a, Method::Login, t0, false) == Decision::Allowed));
    }
}

//! Variable difficulty (spec §8.4), with the old pool's defects fixed:
//! - intervals are measured in milliseconds, not whole seconds (sub-second share intervals used
//!   to average to 0 and always hit the jump limit);
//! - the min/max bounds are applied after the jump limit, so no step can leave them;
//! - retargeting runs on the share path and on the port's housekeeping tick, not from a timer
//!   that walks every miner;
//! - a silent miner's time since its last share counts as a sample, so it is lowered even when
//!   it never found a share at its current difficulty.

use crate::config::VarDiffConfig;

/// Share intervals kept per session.
const RING: usize = 16;

/// Vardiff state of one session (small and fixed: 80 bytes).
#[derive(Debug, Clone)]
pub struct VarDiff {
    intervals_ms: [u32; RING],
    len: u8,
    next: u8,
    last_share_ms: u64,
    last_retarget_ms: u64,
}

/// Precomputed vardiff parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    min: u64,
    max: u64,
    target_ms: f64,
    retarget_ms: u64,
    low_ms: f64,
    high_ms: f64,
    max_jump: f64,
}

impl Params {
    /// From the `varDiff` config.
    pub fn new(c: &VarDiffConfig) -> Params {
        let target_ms = c.target_time as f64 * 1000.0;
        let variance = c.variance_percent / 100.0 * target_ms;
        Params {
            min: c.min_diff,
            max: c.max_diff,
            target_ms,
            retarget_ms: c.retarget_time * 1000,
            low_ms: target_ms - variance,
            high_ms: target_ms + variance,
            max_jump: c.max_jump / 100.0,
        }
    }
}

impl VarDiff {
    /// Fresh state for a session that logged in at `now_ms`.
    pub fn new(now_ms: u64) -> VarDiff {
        VarDiff { intervals_ms: [0; RING], len: 0, next: 0, last_share_ms: now_ms, last_retarget_ms: now_ms }
    }

    /// Records an accepted share.
    pub fn on_share(&mut self, now_ms: u64) {
        let interval = now_ms.saturating_sub(self.last_share_ms).min(u64::from(u32::MAX)) as u32;
        self.intervals_ms[self.next as usize] = interval;
        self.next = ((self.next as usize + 1) % RING) as u8;
        self.len = (self.len + 1).min(RING as u8);
        self.last_share_ms = now_ms;
    }

    /// The new difficulty if a retarget is due and needed.
    pub fn retarget(&mut self, now_ms: u64, current: u64, p: &Params) -> Option<u64> {
        if now_ms.saturating_sub(self.last_retarget_ms) < p.retarget_ms {
            return None;
        }
        if current < p.min || current > p.max {
            // The bounds changed under this session (a config reload): step inside them.
            self.last_retarget_ms = now_ms;
            self.len = 0;
            self.next = 0;
            return Some(current.clamp(p.min, p.max));
        }
        let since_last = now_ms.saturating_sub(self.last_share_ms) as f64;
        let silent = since_last > p.high_ms;
        let mut sum: f64 = self.intervals_ms[..self.len as usize].iter().map(|&i| f64::from(i)).sum();
        let mut count = self.len as usize;
        if silent {
            sum += since_last;
            count += 1;
        }
        if count == 0 {
            return None;
        }
        self.last_retarget_ms = now_ms;
        let avg = sum / count as f64;
        let cur = current as f64;
        let wanted = if avg > p.high_ms && current > p.min {
            (p.target_ms / avg * cur).max(cur * (1.0 - p.max_jump))
        } else if avg < p.low_ms && current < p.max {
            if avg <= 0.0 {
                cur * (1.0 + p.max_jump)
            } else {
                (p.target_ms / avg * cur).min(cur * (1.0 + p.max_jump))
            }
        } else {
            return None;
        };
        let new = (wanted.round() as u64).clamp(p.min, p.max);
        if new == current {
            return None;
        }
        self.len = 0;
        self.next = 0;
        if silent {
            self.last_share_ms = now_ms;
        }
        Some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difficulty_outside_reloaded_bounds_is_clamped_at_the_next_retarget() {
        let narrowed = Params::new(&VarDiffConfig { min_diff: 5_000, max_diff: 20_000, ..params_config() });
        let mut v = VarDiff::new(0);
        // Shares right on target: without the new bounds nothing would change.
        for t in 1..=4 {
            v.on_share(t * 30_000);
        }
        assert_eq!(v.retarget(120_000, 100_000, &narrowed), Some(20_000), "above the new max");
        let mut low = VarDiff::new(0);
        assert_eq!(low.retarget(14_999, 1_000, &narrowed), None, "not due before retargetTime");
        assert_eq!(low.retarget(15_000, 1_000, &narrowed), Some(5_000), "below the new min");
        let mut inside = VarDiff::new(0);
        for t in 1..=4 {
            inside.on_share(t * 30_000);
        }
        assert_eq!(inside.retarget(120_000, 10_000, &narrowed), None, "on target and inside: unchanged");
    }

    fn params_config() -> VarDiffConfig {
        VarDiffConfig {
            enabled: true,
            min_diff: 100,
            max_diff: 100_000_000,
            target_time: 30,
            retarget_time: 15,
            variance_percent: 30.0,
            max_jump: 50.0,
        }
    }

    fn params() -> Params {
        Params::new(&VarDiffConfig {
            enabled: true,
            min_diff: 100,
            max_diff: 100_000_000,
            target_time: 30,
            retarget_time: 15,
            variance_percent: 30.0,
            max_jump: 50.0,
        })
    }

    /// Simulates a miner of `hashrate` H/s against vardiff for `seconds`; returns the final diff.
    fn simulate(hashrate: f64, start: u64, seconds: u64) -> u64 {
        let p = params();
        let mut v = VarDiff::new(0);
        let mut diff = start;
        let mut next_share = diff as f64 / hashrate * 1000.0;
        for now in (0..seconds * 1000).step_by(100) {
            if now as f64 >= next_share {
                v.on_share(now);
                next_share = now as f64 + diff as f64 / hashrate * 1000.0;
            }
            if let Some(d) = v.retarget(now, diff, &p) {
                diff = d;
                next_share = now as f64 + diff as f64 / hashrate * 1000.0;
            }
        }
        diff
    }

    #[test]
    fn converges_towards_one_share_per_target_time() {
        // 1000 H/s at 30 s per share wants 30000.
        let up = simulate(1000.0, 5000, 3600);
        assert!((21_000..=43_000).contains(&up), "fast miner ended at {up}");
        let down = simulate(1000.0, 500_000, 3600);
        assert!((21_000..=43_000).contains(&down), "slow miner ended at {down}");
    }

    #[test]
    fn steps_are_limited_and_bounded() {
        let p = params();
        let mut v = VarDiff::new(0);
        for t in 1..=16 {
            v.on_share(t * 10);
        }
        assert_eq!(v.retarget(15_000, 1000, &p), Some(1500));
        let mut v = VarDiff::new(0);
        v.on_share(10);
        assert_eq!(v.retarget(15_000, 99_999_999, &p), Some(100_000_000));
        let mut silent = VarDiff::new(0);
        assert_eq!(silent.retarget(600_000, 1000, &p), Some(500));
        let mut floor = VarDiff::new(0);
        assert_eq!(floor.retarget(600_000, 150, &p), Some(100));
        assert_eq!(floor.retarget(1_200_000, 100, &p), None);
    }

    #[test]
    fn waits_for_retarget_time_and_keeps_in_band_miners() {
        let p = params();
        let mut v = VarDiff::new(0);
        v.on_share(1000);
        assert_eq!(v.retarget(14_999, 1000, &p), None);
        let mut steady = VarDiff::new(0);
        for t in 1..=4 {
            steady.on_share(t * 30_000);
        }
        assert_eq!(steady.retarget(120_000, 5000, &p), None);
    }
}

//! What to submit and when: the share mix (valid, invalid, duplicate, stale) as a deterministic
//! interleaving, and open-loop arrival times (Poisson or evenly spaced).

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The kinds of share the harness sends, each with the answer the pool owes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareKind {
    /// A correct RandomX result at the job's difficulty: must be accepted.
    Valid,
    /// A fresh nonce with a made-up result: the pool must hash it and reject it.
    Invalid,
    /// A nonce this session already submitted for the job: rejected without hashing.
    Duplicate,
    /// A share for a job whose block is no longer the chain tip: rejected as stale.
    Stale,
}

impl ShareKind {
    /// Every kind, in report order.
    pub const ALL: [ShareKind; 4] = [ShareKind::Valid, ShareKind::Invalid, ShareKind::Duplicate, ShareKind::Stale];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ShareKind::Valid => "valid",
            ShareKind::Invalid => "invalid",
            ShareKind::Duplicate => "duplicate",
            ShareKind::Stale => "stale",
        }
    }
}

impl fmt::Display for ShareKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Relative weights of the share kinds, e.g. `valid=90,invalid=4,duplicate=3,stale=3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    /// (kind, weight) with weight > 0, in [`ShareKind::ALL`] order.
    pub weights: Vec<(ShareKind, u32)>,
}

impl Mix {
    /// Only valid shares.
    pub fn valid_only() -> Mix {
        Mix { weights: vec![(ShareKind::Valid, 1)] }
    }

    /// A scheduler producing kinds in this mix.
    pub fn scheduler(&self) -> MixScheduler {
        MixScheduler { weights: self.weights.clone(), current: vec![0; self.weights.len()] }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.weights.iter().map(|(k, w)| format!("{k}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let mut weights = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("share mix: expected KIND=WEIGHT, got {part:?} (e.g. valid=90,invalid=10)"))?;
            let kind = ShareKind::ALL.into_iter().find(|k| k.name() == name.trim()).ok_or_else(|| {
                format!("share mix: unknown kind {name:?}; kinds are valid, invalid, duplicate, stale")
            })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("share mix: weight of {name} must be an integer, got {weight:?}"))?;
            if weights.iter().any(|(k, _)| *k == kind) {
                return Err(format!("share mix: {name} given twice"));
            }
            if weight > 0 {
                weights.push((kind, weight));
            }
        }
        if weights.is_empty() {
            return Err("share mix: at least one kind needs a weight above 0".into());
        }
        weights.sort_by_key(|(k, _)| *k);
        Ok(Mix { weights })
    }
}

/// Smooth weighted round-robin: over every `sum(weights)` picks each kind comes up exactly
/// its weight times, spread out rather than in runs, so a short phase still sees the mix.
#[derive(Debug, Clone)]
pub struct MixScheduler {
    weights: Vec<(ShareKind, u32)>,
    current: Vec<i64>,
}

impl MixScheduler {
    /// The next kind.
    pub fn next_kind(&mut self) -> ShareKind {
        let total: i64 = self.weights.iter().map(|(_, w)| *w as i64).sum();
        let mut best = 0;
        for (i, (_, w)) in self.weights.iter().enumerate() {
            self.current[i] += *w as i64;
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        self.weights[best].0
    }
}

/// How open-loop submissions are spaced in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Exponential gaps (independent miners finding shares at random), the realistic case.
    Poisson,
    /// Even gaps: the same mean rate without bursts.
    Uniform,
}

/// Send times in microseconds from the phase start for a total `rate` per second over
/// `seconds`.
pub fn arrival_times(rate: f64, seconds: f64, arrivals: Arrivals, rng: &mut impl Rng) -> Vec<u64> {
    if rate <= 0.0 || seconds <= 0.0 {
        return Vec::new();
    }
    let end = seconds * 1e6;
    let mean_gap = 1e6 / rate;
    let mut times = Vec::with_capacity((rate * seconds * 1.1) as usize + 1);
    let mut t = match arrivals {
        Arrivals::Uniform => mean_gap / 2.0,
        Arrivals::Poisson => -mean_gap * (1.0 - rng.gen::<f64>()).ln(),
    };
    while t < end {
        times.push(t as u64);
        t += match arrivals {
            Arrivals::Uniform => mean_gap,
            Arrivals::Poisson => -mean_gap * (1.0 - rng.gen::<f64>()).ln(),
        };
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parses_and_prints_mixes() {
        let mix: Mix = "stale=3, valid=90,invalid=4,duplicate=3".parse().unwrap();
        assert_eq!(mix.to_string(), "valid=90,invalid=4,duplicate=3,stale=3");
        assert!(mix.weights.contains(&(ShareKind::Invalid, 4)));
        let only: Mix = "valid=1,stale=0".parse().unwrap();
        assert_eq!(only, Mix::valid_only());
        for bad in ["", "valid=0", "valid", "valid=x", "bogus=1", "valid=1,valid=2"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scheduler_hits_the_weights_exactly_and_interleaves() {
        let mix: Mix = "valid=6,invalid=2,duplicate=1,stale=1".parse().unwrap();
        let mut s = mix.scheduler();
        let picks: Vec<ShareKind> = (0..1000).map(|_| s.next_kind()).collect();
        for (kind, weight) in &mix.weights {
            assert_eq!(picks.iter().filter(|k| *k == kind).count(), *weight as usize * 100, "{kind}");
        }
        // Every window of one period holds the exact mix.
        for window in picks.chunks(10) {
            assert_eq!(window.iter().filter(|k| **k == ShareKind::Valid).count(), 6);
        }
        // No long run of the majority kind.
        let longest = picks.split(|k| *k != ShareKind::Valid).map(|run| run.len()).max().unwrap();
        assert!(longest <= 3, "run of {longest} valid shares");
        let mut only = Mix::valid_only().scheduler();
        assert!((0..10).all(|_| only.next_kind() == ShareKind::Valid));
    }

    #[test]
    fn uniform_arrivals_are_evenly_spaced() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t = arrival_times(100.0, 2.0, Arrivals::Uniform, &mut rng);
        assert_eq!(t.len(), 200);
        assert_eq!(t[0], 5_000);
        assert_eq!(t[1] - t[0], 10_000);
        assert!(*t.last().unwrap() < 2_000_000);
        assert!(arrival_times(0.0, 5.0, Arrivals::Uniform, &mut rng).is_empty());
    }

    #[test]
    fn poisson_arrivals_have_the_rate_and_bursts() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t = arrival_times(1000.0, 20.0, Arrivals::Poisson, &mut rng);
        let n = t.len() as f64;
        assert!((n - 20_000.0).abs() < 20_000.0 * 0.03, "{n} arrivals");
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        // Exponential gaps: about 1 - 1/e of them are shorter than the mean.
        let short = t.windows(2).filter(|w| w[1] - w[0] < 1000).count() as f64 / (n - 1.0);
        assert!((short - 0.632).abs() < 0.03, "{short}");
    }
}

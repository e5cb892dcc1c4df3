//! Share trust (spec §8.5, off unless `shareTrust.enabled`): a miner with a long run of valid
//! shares has a growing chance that an ordinary share skips RandomX verification; one invalid
//! share resets it. Block candidates are always verified.

use crate::config::ShareTrustConfig;

/// Trust state of one session.
#[derive(Debug, Clone, Copy)]
pub struct Trust {
    threshold: i32,
    penalty: i32,
    probability: f32,
}

impl Trust {
    /// A new, untrusted miner.
    pub fn new(c: &ShareTrustConfig) -> Trust {
        Trust { threshold: c.threshold as i32, penalty: 0, probability: 1.0 }
    }

    /// Whether the next ordinary share may skip verification, given a uniform random `roll`
    /// in `[0, 1)`.
    pub fn skip_verification(&self, roll: f32) -> bool {
        self.threshold <= 0 && self.penalty <= 0 && roll > self.probability
    }

    /// A verified valid share.
    pub fn on_valid(&mut self, c: &ShareTrustConfig) {
        let floor = c.min as f32 / 100.0;
        self.probability = (self.probability - c.step_down as f32 / 100.0).max(floor);
        self.penalty = (self.penalty - 1).max(0);
        self.threshold = (self.threshold - 1).max(0);
    }

    /// An invalid share.
    pub fn on_invalid(&mut self, c: &ShareTrustConfig) {
        self.probability = 1.0;
        self.penalty = c.penalty as i32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ShareTrustConfig {
        ShareTrustConfig { enabled: true, min: 10, step_down: 3, threshold: 10, penalty: 30 }
    }

    #[test]
    fn trust_grows_with_valid_shares_and_resets_on_invalid() {
        let c = cfg();
        let mut t = Trust::new(&c);
        assert!(!t.skip_verification(0.99));
        for _ in 0..10 {
            t.on_valid(&c);
        }
        // threshold reached, probability 1 - 10 * 0.03 = 0.70
        assert!(t.skip_verification(0.71));
        assert!(!t.skip_verification(0.69));
        for _ in 0..100 {
            t.on_valid(&c);
        }
        assert!(t.skip_verification(0.11));
        assert!(!t.skip_verification(0.09));
        t.on_invalid(&c);
        assert!(!t.skip_verification(0.999));
        for _ in 0..29 {
            t.on_valid(&c);
        }
        assert!(!t.skip_verification(0.999), "penalty not served");
        t.on_valid(&c);
        assert!(t.skip_verification(0.999));
    }
}

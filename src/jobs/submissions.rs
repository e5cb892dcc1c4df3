//! The rules of block submission, without the actor: which candidates are submitted (the first
//! per template height), when a pending one is tried again (backoff), and what a daemon answer
//! or the chain at the block's height means for it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::chain::Hash;
use crate::node::DaemonError;
use crate::store::SubmissionStatus;

/// First retry after this long; doubled per attempt up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Heights kept for the one-candidate-per-height rule below the newest one seen.
const HEIGHTS_KEPT: u64 = 16;

/// Whether a new candidate may be submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The first block found on this parent at this height: submit it.
    First,
    /// This very block was admitted before.
    Known,
    /// Another block was already found on this parent at this height: submitting a second one
    /// only makes an alternative block that ends orphaned.
    SecondAtHeight(Hash),
}

/// What to do after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Finished with this status; `detail` says why.
    Done(SubmissionStatus, String),
    /// Try again later; `detail` is the transient error.
    Retry(String),
}

/// What a `submitblock` answer means.
pub fn after_submit(answer: &Result<(), DaemonError>) -> Step {
    match answer {
        Ok(()) => Step::Done(SubmissionStatus::Accepted, "submitblock OK".to_string()),
        Err(e) if e.is_transient() => Step::Retry(e.to_string()),
        Err(e) => Step::Done(SubmissionStatus::Rejected, e.to_string()),
    }
}

/// Before a retry: what the chain's block at the candidate's height says, if it has one.
/// `None`: the chain does not reach that height yet, so submitting is still useful.
pub fn from_chain(ours: &Hash, at_height: Option<&Hash>) -> Option<Step> {
    match at_height {
        Some(h) if h == ours => {
            Some(Step::Done(SubmissionStatus::Accepted, "on the chain (an earlier answer was lost)".to_string()))
        }
        Some(h) => Some(Step::Done(SubmissionStatus::Superseded, format!("block {h} holds the height"))),
        None => None,
    }
}

/// The wait before attempt `attempt + 1` after `attempt` failed attempts.
pub fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(8)).min(MAX_BACKOFF)
}

struct Entry {
    attempts: u32,
    next_at: Instant,
    busy: bool,
}

/// The distributor's book of candidates: the first per (height, parent), and the pending ones
/// with their retry schedule.
#[derive(Default)]
pub struct Submissions {
    first: BTreeMap<(u64, Hash), Hash>,
    pending: HashMap<Hash, Entry>,
}

impl Submissions {
    /// Applies the one-candidate-per-height rule to `hash` found at `height` on `parent`.
    pub fn admit(&mut self, height: u64, parent: Hash, hash: Hash) -> Admission {
        let admission = match self.first.get(&(height, parent)) {
            Some(first) if *first == hash => Admission::Known,
            Some(first) => Admission::SecondAtHeight(*first),
            None => {
                self.first.insert((height, parent), hash);
                Admission::First
            }
        };
        let newest = self.first.keys().next_back().map(|(h, _)| *h).unwrap_or(0);
        self.first.retain(|(h, _), _| *h + HEIGHTS_KEPT > newest);
        admission
    }

    /// The daemon rejected `hash`, found at `height` on `parent`: a rejected block holds no
    /// height (typically one built on a template the daemon has since replaced), so the next
    /// block found there is submitted.
    pub fn rejected(&mut self, height: u64, parent: Hash, hash: &Hash) {
        if self.first.get(&(height, parent)) == Some(hash) {
            self.first.remove(&(height, parent));
        }
    }

    /// Tracks `hash` as pending, due now (a resumed one is not subject to [`Submissions::admit`]:
    /// it was admitted by the run that found it).
    pub fn track(&mut self, hash: Hash, now: Instant) {
        self.pending.entry(hash).or_insert(Entry { attempts: 0, next_at: now, busy: false });
    }

    /// The pending candidates due for an attempt at `now`, marked busy (one attempt at a time).
    pub fn due(&mut self, now: Instant) -> Vec<(Hash, u32)> {
        let mut due = Vec::new();
        for (hash, entry) in self.pending.iter_mut() {
            if !entry.busy && entry.next_at <= now {
                entry.busy = true;
                due.push((*hash, entry.attempts));
            }
        }
        due
    }

    /// An attempt at `hash` failed transiently: schedules the next one. Returns the attempts so far.
    pub fn failed(&mut self, hash: &Hash, now: Instant) -> u32 {
        let Some(entry) = self.pending.get_mut(hash) else { return 0 };
        entry.attempts += 1;
        entry.busy = false;
        entry.next_at = now + backoff(entry.attempts);
        entry.attempts
    }

    /// `hash` is finished (resolved and written).
    pub fn finish(&mut self, hash: &Hash) {
        self.pending.remove(hash);
    }

    /// Candidates not finished yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> Hash {
        Hash([b; 32])
    }

    #[test]
    fn only_the_first_block_per_height_and_parent_is_submitted() {
        let mut s = Submissions::default();
        assert_eq!(s.admit(10, h(1), h(2)), Admission::First);
        assert_eq!(s.admit(10, h(1), h(2)), Admission::Known);
        assert_eq!(s.admit(10, h(1), h(3)), Admission::SecondAtHeight(h(2)));
        // After a reorg the same height on another parent is a different race.
        assert_eq!(s.admit(10, h(9), h(4)), Admission::First);
        assert_eq!(s.admit(11, h(2), h(5)), Admission::First);
    }

    #[test]
    fn a_rejected_block_frees_its_height_for_the_next_one() {
        let mut s = Submissions::default();
        assert_eq!(s.admit(10, h(1), h(2)), Admission::First);
        s.rejected(10, h(1), &h(3));
        assert_eq!(s.admit(10, h(1), h(4)), Admission::SecondAtHeight(h(2)), "only the first's rejection frees it");
        s.rejected(10, h(1), &h(2));
        assert_eq!(s.admit(10, h(1), h(4)), Admission::First);
    }

    #[test]
    fn old_heights_are_forgotten() {
        let mut s = Submissions::default();
        s.admit(1, h(1), h(2));
        s.admit(1 + HEIGHTS_KEPT, h(1), h(3));
        assert_eq!(s.admit(1, h(1), h(4)), Admission::First);
    }

    #[test]
    fn answers_map_to_steps() {
        assert_eq!(after_submit(&Ok(())), Step::Done(SubmissionStatus::Accepted, "submitblock OK".into()));
        assert!(matches!(after_submit(&Err(DaemonError::NotSynced)), Step::Retry(_)));
        assert!(matches!(after_submit(&Err(DaemonError::Unreachable("refused".into()))), Step::Retry(_)));
        let rejected = DaemonError::Rpc { code: -7, message: "Block not accepted".into() };
        assert!(matches!(after_submit(&Err(rejected)), Step::Done(SubmissionStatus::Rejected, _)));
        let server = DaemonError::Failed { status: 500, error: "Internal server error".into() };
        assert!(matches!(after_submit(&Err(server)), Step::Retry(_)));
    }

    #[test]
    fn the_chain_decides_a_retry() {
        assert_eq!(from_chain(&h(1), None), None);
        assert!(matches!(from_chain(&h(1), Some(&h(1))), Some(Step::Done(SubmissionStatus::Accepted, _))));
        assert!(matches!(from_chain(&h(1), Some(&h(2))), Some(Step::Done(SubmissionStatus::Superseded, _))));
    }

    #[test]
    fn retries_back_off_and_run_one_at_a_time() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(30), MAX_BACKOFF);
        let mut s = Submissions::default();
        let now = Instant::now();
        s.track(h(1), now);
        assert_eq!(s.due(now), vec![(h(1), 0)]);
        assert!(s.due(now).is_empty(), "busy until the attempt ends");
        assert_eq!(s.failed(&h(1), now), 1);
        assert!(s.due(now).is_empty());
        assert_eq!(s.due(now + FIRST_BACKOFF), vec![(h(1), 1)]);
        s.finish(&h(1));
        assert_eq!(s.pending(), 0);
    }
}

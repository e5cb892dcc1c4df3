//! What worker shards measure, in mergeable form: each shard fills these for its own sessions
//! and the coordinator adds them up (the same code whether the shards are tasks or processes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;
use crate::mix::ShareKind;

/// Adds `b`'s counts into `a`.
pub fn merge_counts(a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>) {
    for (k, v) in b {
        *a.entry(k.clone()).or_default() += v;
    }
}

/// Live counters a shard reports every second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Sessions started (connect attempted).
    pub attempted: u64,
    /// TCP connections established.
    pub connected: u64,
    /// Sessions that got a login result with a job.
    pub logged_in: u64,
    /// Connects that failed.
    pub connect_failed: u64,
    /// Logins refused or unanswered.
    pub login_failed: u64,
    /// Logged-in sessions whose connection is still open.
    pub alive: u64,
    /// Logged-in sessions the pool closed (or that failed) while the harness still used them.
    pub dropped: u64,
    /// Highest job height seen.
    pub max_height: u64,
    /// Sessions that have the armed fan-out job.
    pub fanout_got: u64,
    /// Submits sent in the current share phase.
    pub submits: u64,
    /// Submit replies received in the current share phase.
    pub replies: u64,
}

impl Progress {
    /// Sums two shards' counters (heights take the maximum).
    pub fn merge(&mut self, o: &Progress) {
        self.attempted += o.attempted;
        self.connected += o.connected;
        self.logged_in += o.logged_in;
        self.connect_failed += o.connect_failed;
        self.login_failed += o.login_failed;
        self.alive += o.alive;
        self.dropped += o.dropped;
        self.max_height = self.max_height.max(o.max_height);
        self.fanout_got += o.fanout_got;
        self.submits += o.submits;
        self.replies += o.replies;
    }
}

/// Connecting and logging in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RampStats {
    /// Sessions attempted.
    pub attempted: u64,
    /// Connections established.
    pub connected: u64,
    /// Logins answered with a job.
    pub logged_in: u64,
    /// Connect failures by reason (errno name, `timeout`).
    pub connect_failures: BTreeMap<String, u64>,
    /// Login failures by reason (the pool's message class, `timeout`, `closed`).
    pub login_failures: BTreeMap<String, u64>,
    /// connect() duration, µs.
    pub connect_us: Histogram,
    /// login sent -> login result received, µs.
    pub login_us: Histogram,
    /// Wall time from the first connect to the last login answer, s.
    pub seconds: f64,
}

impl RampStats {
    /// Adds another shard's ramp.
    pub fn merge(&mut self, o: &RampStats) {
        self.attempted += o.attempted;
        self.connected += o.connected;
        self.logged_in += o.logged_in;
        merge_counts(&mut self.connect_failures, &o.connect_failures);
        merge_counts(&mut self.login_failures, &o.login_failures);
        self.connect_us.merge(&o.connect_us);
        self.login_us.merge(&o.login_us);
        self.seconds = self.seconds.max(o.seconds);
    }
}

/// One fan-out round as a shard saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FanoutStats {
    /// Logged-in sessions alive when the round was collected.
    pub alive: u64,
    /// Of those, how many received a job with the new height.
    pub got: u64,
    /// Alive sessions that never got it before the deadline.
    pub missing: u64,
    /// Time from the block request to the job's arrival, µs, one value per session.
    pub latency_us: Histogram,
}

impl FanoutStats {
    /// Adds another shard's round.
    pub fn merge(&mut self, o: &FanoutStats) {
        self.alive += o.alive;
        self.got += o.got;
        self.missing += o.missing;
        self.latency_us.merge(&o.latency_us);
    }
}

/// Answers to one kind of share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindStats {
    /// Submits sent.
    pub sent: u64,
    /// Answered `{"status":"OK"}`.
    pub accepted: u64,
    /// Refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// No answer within the response timeout (xmrig would reconnect).
    pub timed_out: u64,
    /// The connection closed before the answer.
    pub closed: u64,
}

impl KindStats {
    /// Adds another shard's counts.
    pub fn merge(&mut self, o: &KindStats) {
        self.sent += o.sent;
        self.accepted += o.accepted;
        merge_counts(&mut self.rejected, &o.rejected);
        self.timed_out += o.timed_out;
        self.closed += o.closed;
    }

    /// Answers that are not the one this kind of share is owed.
    pub fn unexpected(&self, kind: ShareKind) -> u64 {
        let expected_reason = match kind {
            ShareKind::Valid => None,
            ShareKind::Invalid => Some("invalid_result"),
            ShareKind::Duplicate => Some("duplicate"),
            ShareKind::Stale => Some("stale"),
        };
        match expected_reason {
            None => self.rejected.values().sum::<u64>() + self.timed_out + self.closed,
            Some(reason) => {
                self.accepted
                    + self.rejected.iter().filter(|(r, _)| r.as_str() != reason).map(|(_, n)| n).sum::<u64>()
                    + self.timed_out
                    + self.closed
            }
        }
    }
}

/// One share phase as a shard ran it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// Phase id.
    pub id: u32,
    /// Sessions that submitted.
    pub sessions: u64,
    /// Per kind of share.
    pub kinds: BTreeMap<ShareKind, KindStats>,
    /// Shares the plan wanted but could not build, by reason (e.g. stale without an old job).
    pub skipped: BTreeMap<String, u64>,
    /// Submit -> answer for valid shares, µs (open loop: from the scheduled send time).
    pub latency_valid_us: Histogram,
    /// Submit -> answer for every share, µs.
    pub latency_all_us: Histogram,
    /// Accepted answers per second since the phase start.
    pub accepted_per_s: Vec<u64>,
    /// The slowest answer received in each second since the phase start, µs (shows periodic
    /// stalls that percentiles hide).
    pub max_latency_per_s: Vec<u64>,
    /// Open loop: sends that left more than 5 ms after their scheduled time (harness overload).
    pub late_sends: u64,
    /// Closed loop: seconds until the first session ran out of precomputed shares (or the end).
    pub feed_seconds: f64,
    /// Closed loop: a session ran out of shares before the end.
    pub stock_exhausted: bool,
    /// Wall time from the first send to the last answer, s.
    pub seconds: f64,
}

impl PhaseStats {
    /// Adds another shard's phase.
    pub fn merge(&mut self, o: &PhaseStats) {
        self.sessions += o.sessions;
        for (k, s) in &o.kinds {
            self.kinds.entry(*k).or_default().merge(s);
        }
        merge_counts(&mut self.skipped, &o.skipped);
        self.latency_valid_us.merge(&o.latency_valid_us);
        self.latency_all_us.merge(&o.latency_all_us);
        if self.accepted_per_s.len() < o.accepted_per_s.len() {
            self.accepted_per_s.resize(o.accepted_per_s.len(), 0);
        }
        for (a, b) in self.accepted_per_s.iter_mut().zip(&o.accepted_per_s) {
            *a += b;
        }
        if self.max_latency_per_s.len() < o.max_latency_per_s.len() {
            self.max_latency_per_s.resize(o.max_latency_per_s.len(), 0);
        }
        for (a, b) in self.max_latency_per_s.iter_mut().zip(&o.max_latency_per_s) {
            *a = (*a).max(*b);
        }
        self.late_sends += o.late_sends;
        self.feed_seconds = if self.feed_seconds == 0.0 {
            o.feed_seconds
        } else if o.feed_seconds == 0.0 {
            self.feed_seconds
        } else {
            self.feed_seconds.min(o.feed_seconds)
        };
        self.stock_exhausted |= o.stock_exhausted;
        self.seconds = self.seconds.max(o.seconds);
    }

    /// Submits sent, all kinds.
    pub fn sent(&self) -> u64 {
        self.kinds.values().map(|k| k.sent).sum()
    }

    /// Accepted answers, all kinds.
    pub fn accepted(&self) -> u64 {
        self.kinds.values().map(|k| k.accepted).sum()
    }
}

/// Steady accepted rate: the mean of the full seconds in `[warmup, until)` of a per-second
/// series (the first seconds fill the verifier queue, the last one is partial).
pub fn steady_rate(per_second: &[u64], warmup_s: usize, until_s: f64) -> Option<f64> {
    let end = (until_s.floor() as usize).min(per_second.len());
    if end <= warmup_s {
        return None;
    }
    let window = &per_second[warmup_s..end];
    Some(window.iter().sum::<u64>() as f64 / window.len() as f64)
}

/// The raw hash rate of the harness's hashers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawStats {
    /// `light` or `fast`.
    pub mode: String,
    /// Hashing threads.
    pub threads: usize,
    /// Hashes computed.
    pub hashes: u64,
    /// Seconds hashed.
    pub seconds: f64,
    /// CPU seconds the hashing threads actually got (less than threads x seconds when other
    /// processes take CPU).
    pub cpu_s: f64,
    /// Seconds spent building the cache / dataset first.
    pub build_s: f64,
}

impl RawStats {
    /// Hashes per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.hashes as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Hashes per second the threads would make with a core each: hashes per CPU-second times
    /// threads. Robust against other processes taking CPU meanwhile.
    pub fn cpu_rate(&self) -> f64 {
        if self.cpu_s > 0.0 {
            self.hashes as f64 / self.cpu_s * self.threads as f64
        } else {
            self.rate()
        }
    }
}

/// A shard's answer to a phase preparation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    /// Phase id.
    pub id: u32,
    /// Shares planned, by kind.
    pub planned: BTreeMap<ShareKind, u64>,
    /// Hashes computed to find the valid ones.
    pub hashes: u64,
    /// Seconds spent hashing.
    pub hash_seconds: f64,
    /// Seconds spent building the hasher first (0 when reused).
    pub build_s: f64,
    /// Why the phase cannot run, if it cannot.
    pub error: Option<String>,
}

/// A shard's closing figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalStats {
    /// CPU seconds of the shard's process (in-process shards: 0, the coordinator counts them).
    pub cpu_s: f64,
    /// Peak RSS of the shard's process, KiB (0 in-process).
    pub hwm_kib: u64,
    /// Logged-in sessions lost before the end, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Replies whose id matched no request (late answers after a timeout).
    pub unmatched_replies: u64,
    /// Lines a miner would not understand, by description.
    pub unknown_lines: BTreeMap<String, u64>,
    /// Job pushes received.
    pub jobs_received: u64,
    /// keepalived requests sent.
    pub keepalives_sent: u64,
    /// keepalived answered with a result.
    pub keepalives_ok: u64,
    /// keepalived answered with an error or not at all.
    pub keepalives_failed: u64,
    /// Sessions alive at the end.
    pub alive: u64,
}

impl FinalStats {
    /// Adds another shard's figures.
    pub fn merge(&mut self, o: &FinalStats) {
        self.cpu_s += o.cpu_s;
        self.hwm_kib += o.hwm_kib;
        merge_counts(&mut self.dropped, &o.dropped);
        self.unmatched_replies += o.unmatched_replies;
        merge_counts(&mut self.unknown_lines, &o.unknown_lines);
        self.jobs_received += o.jobs_received;
        self.keepalives_sent += o.keepalives_sent;
        self.keepalives_ok += o.keepalives_ok;
        self.keepalives_failed += o.keepalives_failed;
        self.alive += o.alive;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Histogram {
        let mut h = Histogram::new();
        values.iter().for_each(|v| h.record(*v));
        h
    }

    #[test]
    fn ramp_and_fanout_merge_adds_counts_and_histograms() {
        let mut a = RampStats {
            attempted: 10,
            connected: 9,
            logged_in: 8,
            connect_failures: [("ECONNREFUSED".to_string(), 1)].into(),
            login_failures: [("timeout".to_string(), 1)].into(),
            connect_us: hist(&[100, 200]),
            login_us: hist(&[1000]),
            seconds: 3.0,
        };
        let b = RampStats {
            attempted: 5,
            connected: 5,
            logged_in: 5,
            connect_failures: BTreeMap::new(),
            login_failures: [("timeout".to_string(), 2)].into(),
            connect_us: hist(&[50]),
            login_us: hist(&[3000, 4000]),
            seconds: 4.5,
        };
        a.merge(&b);
        assert_eq!((a.attempted, a.connected, a.logged_in), (15, 14, 13));
        assert_eq!(a.login_failures["timeout"], 3);
        assert_eq!(a.connect_failures["ECONNREFUSED"], 1);
        assert_eq!(a.connect_us.count(), 3);
        assert_eq!(a.connect_us.min(), Some(50));
        assert_eq!(a.login_us.max(), Some(4000));
        assert_eq!(a.seconds, 4.5);

        let mut f = FanoutStats { alive: 3, got: 2, missing: 1, latency_us: hist(&[10_000, 20_000]) };
        f.merge(&FanoutStats { alive: 2, got: 2, missing: 0, latency_us: hist(&[90_000, 5_000]) });
        assert_eq!((f.alive, f.got, f.missing), (5, 4, 1));
        assert_eq!(f.latency_us.max(), Some(90_000));
        assert_eq!(f.latency_us.min(), Some(5_000));
    }

    #[test]
    fn phase_merge_adds_kinds_and_aligns_the_per_second_series() {
        let mut a =
            PhaseStats { id: 1, sessions: 4, accepted_per_s: vec![5, 6], feed_seconds: 20.0, ..Default::default() };
        a.kinds.insert(ShareKind::Valid, KindStats { sent: 11, accepted: 11, ..Default::default() });
        let mut b =
            PhaseStats { id: 1, sessions: 4, accepted_per_s: vec![1, 1, 1], feed_seconds: 12.5, ..Default::default() };
        b.kinds.insert(
            ShareKind::Valid,
            KindStats {
                sent: 4,
                accepted: 3,
                rejected: [("invalid_result".to_string(), 1)].into(),
                ..Default::default()
            },
        );
        b.kinds.insert(
            ShareKind::Stale,
            KindStats { sent: 2, rejected: [("stale".to_string(), 2)].into(), ..Default::default() },
        );
        b.late_sends = 3;
        a.max_latency_per_s = vec![10, 500];
        b.max_latency_per_s = vec![20, 100, 7];
        b.stock_exhausted = true;
        a.merge(&b);
        assert_eq!(a.sessions, 8);
        assert_eq!(a.accepted_per_s, vec![6, 7, 1]);
        assert_eq!(a.max_latency_per_s, vec![20, 500, 7]);
        assert_eq!(a.kinds[&ShareKind::Valid].sent, 15);
        assert_eq!(a.kinds[&ShareKind::Valid].unexpected(ShareKind::Valid), 1);
        assert_eq!(a.kinds[&ShareKind::Stale].unexpected(ShareKind::Stale), 0);
        assert_eq!((a.sent(), a.accepted()), (17, 14));
        assert_eq!(a.feed_seconds, 12.5);
        assert!(a.stock_exhausted);
        assert_eq!(a.late_sends, 3);
    }

    #[test]
    fn unexpected_answers_per_kind() {
        let k = KindStats {
            sent: 10,
            accepted: 1,
            rejected: [("duplicate".to_string(), 7), ("banned".to_string(), 1)].into(),
            timed_out: 1,
            closed: 0,
        };
        assert_eq!(k.unexpected(ShareKind::Duplicate), 3);
        assert_eq!(k.unexpected(ShareKind::Valid), 9);
    }

    #[test]
    fn steady_rate_skips_warmup_and_the_partial_tail() {
        let series = [10, 50, 52, 48, 50, 20];
        assert_eq!(steady_rate(&series, 1, 5.4), Some(50.0));
        assert_eq!(steady_rate(&series, 0, 2.0), Some(30.0));
        assert_eq!(steady_rate(&series, 2, 2.0), None);
        assert_eq!(steady_rate(&series, 1, 60.0), Some(44.0));
        assert_eq!(steady_rate(&[], 0, 10.0), None);
    }

    #[test]
    fn final_and_progress_merge() {
        let mut a =
            FinalStats { cpu_s: 1.5, dropped: [("eof".to_string(), 1)].into(), alive: 10, ..Default::default() };
        a.merge(&FinalStats { cpu_s: 2.0, dropped: [("eof".to_string(), 2)].into(), alive: 5, ..Default::default() });
        assert_eq!(a.cpu_s, 3.5);
        assert_eq!(a.dropped["eof"], 3);
        assert_eq!(a.alive, 15);
        let mut p = Progress { logged_in: 3, max_height: 7, ..Default::default() };
        p.merge(&Progress { logged_in: 4, max_height: 5, ..Default::default() });
        assert_eq!((p.logged_in, p.max_height), (7, 7));
    }
}

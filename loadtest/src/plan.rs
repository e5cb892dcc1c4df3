//! Turning a share mix and arrival times into per-session sends, before any hashing: each
//! arrival goes to the next session in turn and gets the next kind of the mix. A duplicate
//! must follow an earlier share of the same session for the same job (the pool only knows the
//! nonces it has seen), so a session with none yet first sends a valid share to duplicate; a
//! stale share needs an older job on the session and is skipped (and counted) without one.

use std::collections::BTreeMap;

use crate::mix::{Mix, ShareKind};

/// What the planner needs to know about a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionView {
    /// The session still holds a job of an older height (so a stale share is possible).
    pub has_older_job: bool,
    /// The session already submitted a share for its current job (so a duplicate is possible).
    pub has_previous_share: bool,
}

/// One planned submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Send time, µs from the phase start.
    pub at_us: u64,
    /// Index into the session list.
    pub session: usize,
    /// What to send.
    pub kind: ShareKind,
}

/// Plans an open-loop phase. Returns the entries in send order and the skipped shares by reason.
pub fn plan_open(times: &[u64], sessions: &[SessionView], mix: &Mix) -> (Vec<Entry>, BTreeMap<String, u64>) {
    let mut entries = Vec::with_capacity(times.len() + times.len() / 8);
    let mut skipped = BTreeMap::new();
    if sessions.is_empty() {
        if !times.is_empty() {
            skipped.insert("no logged-in session to submit from".into(), times.len() as u64);
        }
        return (entries, skipped);
    }
    let mut has_previous: Vec<bool> = sessions.iter().map(|s| s.has_previous_share).collect();
    let mut scheduler = mix.scheduler();
    for (k, &at_us) in times.iter().enumerate() {
        let session = k % sessions.len();
        let kind = scheduler.next_kind();
        match kind {
            ShareKind::Valid | ShareKind::Invalid => has_previous[session] = true,
            ShareKind::Duplicate => {
                if !has_previous[session] {
                    entries.push(Entry { at_us, session, kind: ShareKind::Valid });
                    has_previous[session] = true;
                }
            }
            ShareKind::Stale => {
                if !sessions[session].has_older_job {
                    *skipped.entry("stale: the session has no job of an older height".into()).or_default() += 1;
                    continue;
                }
            }
        }
        entries.push(Entry { at_us, session, kind });
    }
    (entries, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(entries: &[Entry], kind: ShareKind) -> usize {
        entries.iter().filter(|e| e.kind == kind).count()
    }

    #[test]
    fn spreads_arrivals_over_sessions_in_turn_with_the_mix() {
        let times: Vec<u64> = (0..100).map(|i| i * 1000).collect();
        let sessions = vec![SessionView { has_older_job: true, has_previous_share: true }; 4];
        let mix: Mix = "valid=7,invalid=1,duplicate=1,stale=1".parse().unwrap();
        let (entries, skipped) = plan_open(&times, &sessions, &mix);
        assert!(skipped.is_empty());
        assert_eq!(entries.len(), 100);
        assert_eq!(count(&entries, ShareKind::Valid), 70);
        assert_eq!(count(&entries, ShareKind::Stale), 10);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.session, i % 4);
            assert_eq!(e.at_us, i as u64 * 1000);
        }
    }

    #[test]
    fn a_duplicate_always_follows_a_share_of_its_session() {
        let times: Vec<u64> = (0..40).collect();
        let sessions = vec![SessionView::default(); 8];
        let mix: Mix = "valid=1,duplicate=1".parse().unwrap();
        let (entries, _) = plan_open(&times, &sessions, &mix);
        let mut seen = [false; 8];
        for e in &entries {
            match e.kind {
                ShareKind::Duplicate => assert!(seen[e.session], "duplicate before any share on {}", e.session),
                _ => seen[e.session] = true,
            }
        }
        assert_eq!(count(&entries, ShareKind::Duplicate), 20);
        // Sources were added for sessions whose first pick was a duplicate.
        assert!(entries.len() > 40);
        // With an earlier share on record, no source is needed.
        let ready = vec![SessionView { has_older_job: false, has_previous_share: true }; 8];
        assert_eq!(plan_open(&times, &ready, &mix).0.len(), 40);
    }

    #[test]
    fn stale_shares_without_an_older_job_are_skipped_and_counted() {
        let times: Vec<u64> = (0..10).collect();
        let sessions = vec![SessionView::default(); 2];
        let mix: Mix = "stale=1,valid=1".parse().unwrap();
        let (entries, skipped) = plan_open(&times, &sessions, &mix);
        assert_eq!(count(&entries, ShareKind::Stale), 0);
        assert_eq!(skipped.values().sum::<u64>(), 5);
        let (_, skipped) = plan_open(&times, &[], &mix);
        assert_eq!(skipped.values().sum::<u64>(), 10);
    }
}

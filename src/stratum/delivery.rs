//! Job fan-out, batched by arbiter.
//!
//! A port supervisor does not message each of its sessions when a template arrives: it spawns
//! one task on each session arbiter, and that task serves the sessions living on its own thread
//! from a thread-local registry (sessions join it when they start and leave it when they stop).
//! So the supervisor's thread does one thing per arbiter instead of one per session, and every
//! wake-up of a session happens on the session's own thread (no cross-thread queue or unpark).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;

use super::session::{MinerSession, Push};
use crate::jobs::JobTemplate;

/// The sessions of one port supervisor, on every arbiter (a supervisor that a reload replaced
/// and the new one for the same port are two groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Group(u64);

impl Group {
    /// A group no other supervisor of this process has.
    pub fn new() -> Group {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Group(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for Group {
    fn default() -> Group {
        Group::new()
    }
}

thread_local! {
    /// This arbiter's sessions, by group and session id.
    static SESSIONS: RefCell<HashMap<Group, HashMap<u64, Addr<MinerSession>>>> = RefCell::new(HashMap::new());
}

/// A session started on this thread: it gets the group's jobs from now on.
pub(super) fn join(group: Group, id: u64, addr: Addr<MinerSession>) {
    SESSIONS.with(|s| s.borrow_mut().entry(group).or_default().insert(id, addr));
}

/// A session on this thread stopped.
pub(super) fn leave(group: Group, id: u64) {
    SESSIONS.with(|s| {
        let mut sessions = s.borrow_mut();
        if let Some(members) = sessions.get_mut(&group) {
            members.remove(&id);
            if members.is_empty() {
                sessions.remove(&group);
            }
        }
    });
}

/// Runs on a session arbiter: pushes `job` to every session of `group` on this thread.
pub(super) fn deliver_here(group: Group, job: &Arc<JobTemplate>, share: FanoutShare) {
    SESSIONS.with(|s| {
        let sessions = s.borrow();
        let Some(members) = sessions.get(&group) else { return };
        share.0.add(members.len());
        for addr in members.values() {
            // do_send ignores the mailbox bound; an undelivered Push reports done on drop.
            addr.do_send(Push { job: job.clone(), fanout: share.0.clone() });
        }
    });
}

/// Tracks one template's fan-out over a port's sessions, for the fan-out metric.
pub struct Fanout {
    remaining: AtomicUsize,
    started: Instant,
    port: u16,
}

impl Fanout {
    /// A fan-out over `arbiters` arbiters: each gets a [`FanoutShare`]; the supervisor holds one
    /// more count and releases it with [`Fanout::done`] once every share is handed out.
    pub fn new(port: u16, arbiters: usize, started: Instant) -> Arc<Fanout> {
        Arc::new(Fanout { remaining: AtomicUsize::new(arbiters + 1), started, port })
    }

    /// The part of the fan-out for one arbiter (done when dropped, served or not).
    pub fn share(self: &Arc<Self>) -> FanoutShare {
        FanoutShare(self.clone())
    }

    fn add(&self, sessions: usize) {
        self.remaining.fetch_add(sessions, Ordering::AcqRel);
    }

    /// One session has its job (or will not get one).
    pub fn done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            crate::metrics::job_fanout(self.port, self.started.elapsed());
        }
    }
}

/// One arbiter's part of a fan-out; counts as done when dropped.
pub struct FanoutShare(Arc<Fanout>);

impl Drop for FanoutShare {
    fn drop(&mut self) {
        self.0.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fanout_is_complete_once_every_share_and_session_is_done() {
        let fanout = Fanout::new(3333, 2, Instant::now());
        let first = fanout.share();
        let second = fanout.share();
        fanout.done();
        first.0.add(2);
        drop(first);
        drop(second);
        assert_eq!(fanout.remaining.load(Ordering::Acquire), 2, "two sessions of the first arbiter still to serve");
        fanout.done();
        fanout.done();
        assert_eq!(fanout.remaining.load(Ordering::Acquire), 0);
    }

    #[test]
    fn groups_are_distinct_and_registries_are_per_thread() {
        let (a, b) = (Group::new(), Group::new());
        assert_ne!(a, b);
        SESSIONS.with(|s| assert!(s.borrow().is_empty()));
        leave(a, 7); // leaving a group one never joined is harmless
        SESSIONS.with(|s| assert!(s.borrow().is_empty()));
    }
}

//! Job fan-out, batched by arbiter.
//!
//! A port supervisor does not message each of its sessions when a template arrives: it spawns
//! one task on each session arbiter, and that task serves the sessions living on its own thread
//! from a thread-local registry (sessions join it when they start and leave it when they stop).
//! So the supervisor's thread does one thing per arbiter instead of one per session, and every
//! wake-up of a session happens on the session's own thread (no cross-thread queue or unpark).
//!
//! A session is served through its [`JobSlot`], not its mailbox: the task puts the template in
//! the slot and wakes the session only if the slot was empty. No message is allocated or queued
//! per session, and a session that has not run since the last template gets only the newest.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures_util::Stream;

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
    /// This arbiter's sessions, by group and slot (its address: unique while the session lives).
    static SESSIONS: RefCell<HashMap<Group, HashMap<*const JobSlot, Rc<JobSlot>>>> = RefCell::new(HashMap::new());
}

/// A session started on this thread: it gets the group's jobs from now on, in `slot`.
pub(super) fn join(group: Group, slot: &Rc<JobSlot>) {
    SESSIONS.with(|s| s.borrow_mut().entry(group).or_default().insert(Rc::as_ptr(slot), slot.clone()));
}

/// A session on this thread stopped.
pub(super) fn leave(group: Group, slot: &Rc<JobSlot>) {
    SESSIONS.with(|s| {
        let mut sessions = s.borrow_mut();
        if let Some(members) = sessions.get_mut(&group) {
            members.remove(&Rc::as_ptr(slot));
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
        for slot in members.values() {
            slot.put(Pending { job: job.clone(), fanout: share.0.clone() });
        }
    });
}

/// A template on its way to one session; the session is done with the fan-out when this is
/// dropped (handled, replaced by a newer template, or the session gone).
pub struct Pending {
    /// The template.
    pub job: Arc<JobTemplate>,
    fanout: Arc<Fanout>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.fanout.done();
    }
}

/// Where a session's next template waits: shared by the session (which reads it as a stream,
/// see [`JobSlot::feed`]) and its arbiter's registry.
#[derive(Default)]
pub struct JobSlot {
    pending: Cell<Option<Pending>>,
    waker: Cell<Option<Waker>>,
}

impl JobSlot {
    /// Puts a template in the slot (replacing one not yet taken) and wakes the session if it was
    /// waiting.
    fn put(&self, pending: Pending) {
        if self.pending.replace(Some(pending)).is_none() {
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }

    /// The session's side: a stream of templates that never ends.
    pub fn feed(self: &Rc<Self>) -> JobFeed {
        JobFeed(self.clone())
    }
}

/// The templates put in a [`JobSlot`], as a stream for the session actor.
pub struct JobFeed(Rc<JobSlot>);

impl Stream for JobFeed {
    type Item = Pending;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Pending>> {
        match self.0.pending.take() {
            Some(pending) => Poll::Ready(Some(pending)),
            None => {
                let waker = match self.0.waker.take() {
                    Some(waker) if waker.will_wake(cx.waker()) => waker,
                    _ => cx.waker().clone(),
                };
                self.0.waker.set(Some(waker));
                Poll::Pending
            }
        }
    }
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
    fn a_slot_keeps_only_the_newest_template_and_wakes_its_session_once() {
        use std::sync::atomic::AtomicUsize as Count;
        use std::task::Wake;
        struct Counter(Count);
        impl Wake for Counter {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wakes = Arc::new(Counter(Count::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let slot = Rc::new(JobSlot::default());
        let mut feed = slot.feed();
        assert!(Pin::new(&mut feed).poll_next(&mut cx).is_pending());

        let fanout = Fanout::new(3333, 0, Instant::now());
        let (old, new) = (Arc::new(JobTemplate::for_tests(1)), Arc::new(JobTemplate::for_tests(2)));
        fanout.add(2);
        slot.put(Pending { job: old, fanout: fanout.clone() });
        slot.put(Pending { job: new.clone(), fanout: fanout.clone() });
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "woken once, by the first template");
        assert_eq!(fanout.remaining.load(Ordering::Acquire), 2, "the replaced template counts as done");
        match Pin::new(&mut feed).poll_next(&mut cx) {
            Poll::Ready(Some(pending)) => assert!(Arc::ptr_eq(&pending.job, &new)),
            _ => panic!("the newest template is in the slot"),
        }
        assert_eq!(fanout.remaining.load(Ordering::Acquire), 1);
        assert!(Pin::new(&mut feed).poll_next(&mut cx).is_pending());
    }

    #[test]
    fn groups_are_distinct_and_registries_are_per_thread() {
        let (a, b) = (Group::new(), Group::new());
        assert_ne!(a, b);
        SESSIONS.with(|s| assert!(s.borrow().is_empty()));
        let slot = Rc::new(JobSlot::default());
        leave(a, &slot); // leaving a group one never joined is harmless
        join(a, &slot);
        let other = std::thread::spawn(|| SESSIONS.with(|s| s.borrow().len())).join().unwrap();
        assert_eq!(other, 0, "another thread's registry does not see this thread's sessions");
        SESSIONS.with(|s| assert_eq!(s.borrow()[&a].len(), 1));
        leave(a, &slot);
        SESSIONS.with(|s| assert!(s.borrow().is_empty(), "an emptied group is dropped"));
    }
}

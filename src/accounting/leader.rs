//! The leader lease: only the process holding it runs the block unlocker and the payment
//! processor. The lease is a Redis key with a TTL, renewed at a third of it; every money script
//! checks the holder's token (fencing), so a process that lost the lease — paused, partitioned,
//! or started by mistake — cannot credit or pay anything.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwapOption;

use crate::store::Store;

/// A shared view of the lease: the token while this process holds it.
#[derive(Clone, Default)]
pub struct Lease {
    token: Arc<ArcSwapOption<String>>,
}

impl Lease {
    /// The fencing token, if this process is the leader now.
    pub fn token(&self) -> Option<Arc<String>> {
        self.token.load_full()
    }

    /// A lease view holding `token`, for a tool or test that took the lease itself
    /// ([`Store::acquire_lease`]) and runs a money step without the election actor.
    pub fn holding(token: String) -> Lease {
        let lease = Lease::default();
        lease.token.store(Some(Arc::new(token)));
        lease
    }

    /// True if `token` is still the one held.
    pub fn holds(&self, token: &str) -> bool {
        self.token().map(|t| t.as_str() == token).unwrap_or(false)
    }

    fn set(&self, token: Option<String>) {
        crate::metrics::leader(token.is_some());
        self.token.store(token.map(Arc::new));
    }
}

/// Keeps trying to take the lease and renews it while held.
pub struct LeaderElection {
    store: Store,
    instance: String,
    ttl: Duration,
    lease: Lease,
    busy: bool,
}

/// Releases the lease (clean shutdown) so another process can take over at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resign;

impl LeaderElection {
    /// An election for `instance` with a lease of `ttl`.
    pub fn new(store: Store, instance: String, ttl: Duration, lease: Lease) -> LeaderElection {
        LeaderElection { store, instance, ttl, lease, busy: false }
    }

    fn step(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let store = self.store.clone();
        let held = self.lease.token();
        let (instance, ttl) = (self.instance.clone(), self.ttl);
        let fut = async move {
            match held {
                Some(token) => store.renew_lease(&token, ttl).await.map(|ok| ok.then(|| token.to_string())),
                None => store.acquire_lease(&instance, ttl).await,
            }
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.busy = false;
            let had = act.lease.token();
            match result {
                Ok(Some(token)) => {
                    if had.is_none() {
                        tracing::info!(token, "leader lease taken: this process runs the block unlocker and payments");
                    }
                    act.lease.set(Some(token));
                }
                Ok(None) => {
                    if had.is_some() {
                        tracing::warn!("leader lease lost to another process: unlocker and payments stop here");
                    }
                    act.lease.set(None);
                }
                Err(e) => {
                    // Keep the token: the fence in every script protects money, and a Redis
                    // blip must not stop a healthy leader.
                    tracing::warn!("leader lease: {e}");
                }
            }
        }));
    }
}

impl Actor for LeaderElection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.step(ctx);
        ctx.run_interval(self.ttl / 3, |act, ctx| act.step(ctx));
    }
}

impl Handler<Resign> for LeaderElection {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Resign, _: &mut Context<Self>) -> Self::Result {
        let token = self.lease.token();
        self.lease.set(None);
        let store = self.store.clone();
        Box::pin(async move {
            if let Some(token) = token {
                let _ = store.release_lease(&token).await;
            }
        })
    }
}

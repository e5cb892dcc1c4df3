//! Money and its inputs: the share ledger (batched Redis writes, PPLNS window, block
//! candidates), the reward split, the leader lease, the block unlocker and the payment
//! processor. Pure rules ([`split`], [`payouts`], [`verify`]) are unit-tested apart from the actors.

pub mod leader;
pub mod ledger;
pub mod payments;
pub mod payouts;
pub mod split;
pub mod unlocker;
pub mod verify;

use std::time::Duration;

use actix::{Actor, AsyncContext, Context, SpawnHandle};

/// Replaces an actor's periodic `tick` timer with one every `every` (a reload changed the
/// interval); the run in progress, if any, is not interrupted.
pub(crate) fn rearm<A>(
    ctx: &mut Context<A>,
    timer: &mut Option<SpawnHandle>,
    every: Duration,
    tick: fn(&mut A, &mut Context<A>),
) where
    A: Actor<Context = Context<A>>,
{
    if let Some(old) = timer.take() {
        ctx.cancel_future(old);
    }
    *timer = Some(ctx.run_interval(every, tick));
}

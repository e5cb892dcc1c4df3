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

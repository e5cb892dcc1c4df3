//! Money and its inputs: the share ledger (batched Redis writes, PPLNS window, block
//! candidates), and (later in this module) the reward split, block unlocker and payments.

pub mod ledger;

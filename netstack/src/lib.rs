//! `idagent-netstack`: the sans-IO userspace network stack that terminates every guest flow.
//!
//! Owns: triage of IP packets read from the guest's TUN ([`classify`]) and the any-IP smoltcp
//! stack that terminates the guest's TCP flows and surfaces its UDP datagrams ([`stack`]).
//! Does not own: the TUN fd, tokio, clocks or sockets — the driver in the `idagent` crate feeds
//! packets in with the current time, takes packets out, and re-originates each flow.
#![forbid(unsafe_code)]

pub mod classify;
pub mod stack;

pub use stack::{Stack, StackConfig, StackEvent, StackStats};

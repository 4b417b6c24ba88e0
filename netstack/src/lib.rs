//! `idagent-netstack`: the sans-IO userspace network stack that terminates every guest flow.
//!
//! Owns: IP packet classification for packets read from the guest's TUN. Does not own: the TUN
//! fd, tokio, clocks or sockets — the driver in the `idagent` crate feeds packets in and takes
//! packets out. Milestone 1 ships only the classifier that lets the driver count what it drops;
//! the smoltcp interface arrives with the interceptor milestone.
#![forbid(unsafe_code)]

pub mod classify;

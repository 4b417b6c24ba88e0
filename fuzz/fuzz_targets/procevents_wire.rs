//! `idagent::procevents::wire::parse_datagram` over one netlink datagram (proc connector).
//! The kernel is the only sender, but a truncated or corrupted datagram must still never panic
//! the daemon, and parsing must be bounded by the input.
#![no_main]

use idagent::procevents::wire::{parse_cn_msg, parse_datagram, parse_proc_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = parse_datagram(data) {
        // Each event needs at least one 16-byte netlink header.
        assert!(events.len() <= data.len() / 16, "{} events from {} bytes", events.len(), data.len());
    }
    // The inner layers are public too; they see the same hostile bytes when the outer
    // header is well formed.
    let _ = parse_cn_msg(data);
    let _ = parse_proc_event(data);
});

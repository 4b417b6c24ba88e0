//! Feeds arbitrary bytes to `Stack::receive` as guest packets, with polls and host calls in
//! between: nothing may panic, and every refused packet must be counted.
#![no_main]

use idagent_netstack::stack::{Duration, Instant};
use idagent_netstack::{Stack, StackConfig, StackEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = StackConfig {
        max_flows: 8,
        max_half_open: 4,
        tcp_rx_buffer: 4096,
        tcp_tx_buffer: 4096,
        ..StackConfig::default()
    };
    let Ok(mut stack) = Stack::new(config, Instant::ZERO) else {
        return;
    };
    let mut now = Instant::ZERO;
    let mut refused = 0u64;
    // The input is a sequence of packets, each prefixed with a one-byte length.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (packet, tail) = tail.split_at(len);
        rest = tail;
        if stack.receive(packet, now).is_err() {
            refused += 1;
        }
        now += Duration::from_millis(100);
        stack.poll(now);
        while let Some(event) = stack.next_event() {
            if let StackEvent::TcpReadable { id } = event {
                let mut buf = [0; 512];
                let _ = stack.tcp_recv(id, &mut buf);
                let _ = stack.tcp_send(id, b"reply");
            }
        }
        while stack.transmit().is_some() {}
    }
    let s = stack.stats();
    let counted = s.dropped_malformed
        + s.dropped_unsupported
        + s.dropped_bad_address
        + s.dropped_over_cap
        + s.icmp_echo_dropped;
    assert_eq!(counted, refused);
});

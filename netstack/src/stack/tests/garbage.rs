//! Hostile input: truncations, bit flips, wrong versions and lengths, random bytes. Nothing may
//! panic, and every refused packet must show up in exactly one drop counter.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn valid_packets() -> Vec<Vec<u8>> {
    let v6_guest = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let v6_dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut out = Vec::new();
    let mut push = |r: Result<(), etherparse::err::packet::BuildWriteError>, buf: Vec<u8>| {
        r.expect("build");
        out.push(buf);
    };
    let mut b = Vec::new();
    push(
        PacketBuilder::ipv4(GUEST_V4, [1, 2, 3, 4], 64)
            .tcp(1000, 443, 1, 100)
            .syn()
            .write(&mut b, &[]),
        b,
    );
    let mut b = Vec::new();
    push(
        PacketBuilder::ipv6(v6_guest, v6_dst, 64)
            .tcp(1000, 443, 1, 100)
            .syn()
            .write(&mut b, b"fast open?"),
        b,
    );
    let mut b = Vec::new();
    push(
        PacketBuilder::ipv4(GUEST_V4, [1, 2, 3, 4], 64)
            .tcp(1000, 443, 2, 100)
            .ack(5)
            .psh()
            .write(&mut b, b"data"),
        b,
    );
    let mut b = Vec::new();
    push(
        PacketBuilder::ipv4(GUEST_V4, [8, 8, 8, 8], 64)
            .udp(5353, 53)
            .write(&mut b, b"dns query"),
        b,
    );
    let mut b = Vec::new();
    push(
        PacketBuilder::ipv6(v6_guest, v6_dst, 64)
            .udp(5353, 53)
            .write(&mut b, b"dns query"),
        b,
    );
    let mut b = Vec::new();
    push(
        PacketBuilder::ipv4(GUEST_V4, [10, 77, 0, 1], 64)
            .icmpv4_echo_request(1, 2)
            .write(&mut b, b"ping"),
        b,
    );
    let mut b = Vec::new();
    let gw6 = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    push(
        PacketBuilder::ipv6(v6_guest, gw6, 64)
            .icmpv6_echo_request(1, 2)
            .write(&mut b, b"ping"),
        b,
    );
    out
}

struct Tally {
    calls: u64,
    refused: u64,
}

fn feed(stack: &mut Stack, tally: &mut Tally, packet: &[u8], now: Instant) {
    tally.calls += 1;
    if stack.receive(packet, now).is_err() {
        tally.refused += 1;
    }
    if tally.calls.is_multiple_of(64) {
        stack.poll(now);
        while stack.transmit().is_some() {}
        while stack.next_event().is_some() {}
    }
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut stack = new_stack(StackConfig::default());
    let mut tally = Tally {
        calls: 0,
        refused: 0,
    };
    let mut now = Instant::ZERO;
    let mut rng = ChaCha8Rng::seed_from_u64(0x1dae);
    for packet in valid_packets() {
        // Every prefix, including the empty one.
        for n in 0..=packet.len() {
            feed(&mut stack, &mut tally, &packet[..n], now);
        }
        // Every byte replaced by a few values (version nibble, lengths, flags, checksums).
        for i in 0..packet.len() {
            for v in [0x00, 0xff, 0x45, 0x60, packet[i] ^ 0x01, packet[i] ^ 0x80] {
                let mut m = packet.clone();
                m[i] = v;
                feed(&mut stack, &mut tally, &m, now);
            }
        }
        // Declared lengths longer and shorter than the buffer, and trailing junk.
        let mut padded = packet.clone();
        padded.extend_from_slice(&[0xaa; 32]);
        feed(&mut stack, &mut tally, &padded, now);
        for _ in 0..200 {
            let mut m = packet.clone();
            let at = rng.random_range(0..m.len());
            m[at] = rng.random();
            let cut = rng.random_range(0..=m.len());
            feed(&mut stack, &mut tally, &m[..cut], now);
        }
        now += Duration::from_millis(10);
    }
    for _ in 0..20_000 {
        let len = rng.random_range(0..200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if let Some(first) = bytes.first_mut() {
            // Bias towards plausible IP headers so the deeper parsers get exercised too.
            *first = [0x45, 0x60, *first][rng.random_range(0..3)];
        }
        feed(&mut stack, &mut tally, &bytes, now);
    }
    stack.poll(now + Duration::from_secs(600));
    let s = stack.stats();
    assert_eq!(s.packets_in, tally.calls);
    let counted = s.dropped_malformed
        + s.dropped_unsupported
        + s.dropped_bad_address
        + s.dropped_over_cap
        + s.icmp_echo_dropped;
    assert_eq!(counted, tally.refused);
    assert!(s.dropped_malformed > 1000, "{s:?}");
}

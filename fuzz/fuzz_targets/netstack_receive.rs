//! A whole `idagent_netstack::Stack` (default config) fed a sequence of guest packets with
//! advancing time, driven like the real driver: `receive`, `poll`, drain events (answering them
//! as a host would), `poll` again, drain `transmit`.
//!
//! Input: records of `[dt: u8][hdr: u16 BE][packet: hdr & 0x7fff bytes (fewer at the end)]`.
//! - time advances by `(dt & 0x7f)^2 * 16` ms before the packet (0 to ~258 s: crosses the
//!   half-open and UDP idle timeouts); `dt & 0x80` makes the host close its side of the oldest
//!   open flow and reject the UDP datagram instead of answering it;
//! - `hdr & 0x8000` rewrites the TCP acknowledgment number (and checksum) to the next sequence
//!   number the stack sent on that flow, so that captured guest flows get past the handshake
//!   although the stack chose a different initial sequence number than the captured server.
//!
//! Asserted: nothing panics; every refused packet is counted in exactly one drop counter; every
//! transmitted packet is a well-formed IP packet within the MTU; flow events are consistent
//! (`TcpClosed` exactly once per `TcpOpened`, no event for a closed or unknown flow).
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use idagent_netstack::classify::classify;
use idagent_netstack::stack::{Duration, FlowId, Instant};
use idagent_netstack::{Stack, StackConfig, StackEvent};
use libfuzzer_sys::fuzz_target;

/// (guest, remote) → the sequence number after the last segment the stack sent.
type SeqTable = HashMap<(SocketAddr, SocketAddr), u32>;

fuzz_target!(|data: &[u8]| {
    let config = StackConfig::default();
    let mtu = config.mtu;
    let mut stack = Stack::new(config, Instant::from_millis(0)).expect("default config is valid");
    let mut now = Instant::from_millis(0);
    let mut host = Host::default();
    let mut refused = 0u64;
    let mut records = 0u64;

    let mut rest = data;
    while let [dt, hi, lo, tail @ ..] = rest {
        let header = u16::from_be_bytes([*hi, *lo]);
        let len = usize::from(header & 0x7fff).min(tail.len());
        let (packet, tail) = tail.split_at(len);
        rest = tail;
        let step = u64::from(dt & 0x7f);
        now += Duration::from_millis(step * step * 16);
        let packet = if header & 0x8000 != 0 {
            fix_ack(packet, &host.next_seq).unwrap_or_else(|| packet.to_vec())
        } else {
            packet.to_vec()
        };
        records += 1;
        if stack.receive(&packet, now).is_err() {
            refused += 1;
        }
        host.drive(&mut stack, now, mtu, dt & 0x80 != 0, &packet);
    }
    // Let every timer run out.
    for _ in 0..4 {
        now += Duration::from_secs(120);
        host.drive(&mut stack, now, mtu, false, &[]);
    }

    let s = stack.stats();
    let counted = s.dropped_malformed
        + s.dropped_unsupported
        + s.dropped_bad_address
        + s.dropped_over_cap
        + s.icmp_echo_dropped;
    assert_eq!(counted, refused, "{s:?}");
    assert_eq!(s.packets_in, records);
});

#[derive(Default)]
struct Host {
    open: Vec<FlowId>,
    opened: HashSet<FlowId>,
    closed: HashSet<FlowId>,
    next_seq: SeqTable,
}

impl Host {
    fn drive(&mut self, stack: &mut Stack, now: Instant, mtu: usize, hostile: bool, packet: &[u8]) {
        stack.poll(now);
        while let Some(event) = stack.next_event() {
            self.on_event(stack, event, hostile, packet);
        }
        if hostile {
            if let Some(id) = self.open.first() {
                let _ = stack.tcp_close(*id);
            }
        }
        stack.poll(now);
        while let Some(event) = stack.next_event() {
            self.on_event(stack, event, false, packet);
        }
        while let Some(out) = stack.transmit() {
            assert!(out.len() <= mtu, "transmitted {} bytes over mtu {mtu}", out.len());
            if let Err(e) = classify(&out) {
                panic!("stack transmitted a packet it cannot classify ({e}): {out:02x?}");
            }
            learn_seq(&out, &mut self.next_seq);
        }
        let _ = stack.poll_at(now);
    }

    fn on_event(&mut self, stack: &mut Stack, event: StackEvent, hostile: bool, packet: &[u8]) {
        match event {
            StackEvent::TcpOpened { id, .. } => {
                assert!(self.opened.insert(id), "{id} opened twice");
                self.open.push(id);
                let _ = stack.tcp_send(id, b"SSH-2.0-fuzz\r\n");
            }
            StackEvent::TcpReadable { id } => {
                self.assert_live(id, "readable");
                let mut buf = [0u8; 2048];
                loop {
                    match stack.tcp_recv(id, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let _ = stack.tcp_send(id, &buf[..n]);
                        }
                    }
                }
            }
            StackEvent::TcpWritable { id } => {
                self.assert_live(id, "writable");
                let _ = stack.tcp_send_capacity(id);
            }
            StackEvent::TcpClosed { id, .. } => {
                assert!(self.opened.contains(&id), "{id} closed but never opened");
                assert!(self.closed.insert(id), "{id} closed twice");
                self.open.retain(|open| *open != id);
                assert!(stack.tcp_recv(id, &mut [0u8; 8]).is_err(), "{id} readable after close");
            }
            StackEvent::UdpDatagram { flow, payload } => {
                if hostile {
                    let _ = stack.reject_udp(packet);
                } else {
                    let reply: Vec<u8> = payload.iter().rev().copied().collect();
                    let _ = stack.send_udp(flow.dst, flow.src, &reply);
                }
            }
            StackEvent::UdpFlowExpired { .. } => {}
        }
    }

    fn assert_live(&self, id: FlowId, what: &str) {
        assert!(self.opened.contains(&id), "{what} event for unknown {id}");
        assert!(!self.closed.contains(&id), "{what} event for closed {id}");
    }
}

fn endpoints(sliced: &SlicedPacket<'_>, src_port: u16, dst_port: u16) -> Option<(SocketAddr, SocketAddr)> {
    match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            Some(((h.source_addr(), src_port).into(), (h.destination_addr(), dst_port).into()))
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            Some(((h.source_addr(), src_port).into(), (h.destination_addr(), dst_port).into()))
        }
        _ => None,
    }
}

/// Records the sequence number following a TCP segment the stack sent to the guest.
fn learn_seq(packet: &[u8], table: &mut SeqTable) {
    let Ok(sliced) = SlicedPacket::from_ip(packet) else { return };
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else { return };
    let Some((remote, guest)) = endpoints(&sliced, tcp.source_port(), tcp.destination_port()) else {
        return;
    };
    let len = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
    table.insert((guest, remote), tcp.sequence_number().wrapping_add(len));
}

/// `packet` with its TCP acknowledgment number set to what the stack sent next on its flow,
/// checksum recomputed; `None` when it is not a TCP packet of a known flow.
fn fix_ack(packet: &[u8], table: &SeqTable) -> Option<Vec<u8>> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else { return None };
    let key = endpoints(&sliced, tcp.source_port(), tcp.destination_port())?;
    let ack = *table.get(&key)?;
    let mut header = tcp.to_header();
    header.acknowledgment_number = ack;
    header.ack = true;
    let payload = tcp.payload();
    header.checksum = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => header.calc_checksum_ipv4(&v4.header().to_header(), payload).ok()?,
        Some(NetSlice::Ipv6(v6)) => header.calc_checksum_ipv6(&v6.header().to_header(), payload).ok()?,
        _ => return None,
    };
    let offset = tcp.slice().as_ptr() as usize - packet.as_ptr() as usize;
    let bytes = header.to_bytes();
    let mut fixed = packet.to_vec();
    fixed.get_mut(offset..offset + bytes.len())?.copy_from_slice(&bytes);
    Some(fixed)
}

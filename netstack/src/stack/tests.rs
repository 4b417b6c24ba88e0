//! Unit tests of [`Stack`] against a plain smoltcp client and hand-crafted packets.

use super::*;
use core::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp as smol;
use smoltcp::wire::{Ipv4Address, Ipv6Address};

const GUEST_V4: [u8; 4] = [10, 77, 0, 2];

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address literal")
}

/// A plain (not any-IP) smoltcp host playing the guest.
struct Client {
    iface: Interface,
    sockets: SocketSet<'static>,
    tx: TxQueue,
}

impl Client {
    fn new(now: Instant) -> Self {
        let mut tx = TxQueue::new(usize::MAX);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = 7;
        let mut iface = Interface::new(config, &mut CallDevice::new(None, &mut tx, 1500), now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(Ipv4Address::new(10, 77, 0, 2).into(), 24));
            let _ = a.push(IpCidr::new(
                Ipv6Address::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2).into(),
                64,
            ));
        });
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(10, 77, 0, 1));
        let _ = iface
            .routes_mut()
            .add_default_ipv6_route(Ipv6Address::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1));
        Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            tx,
        }
    }

    fn connect(&mut self, remote: SocketAddr, local_port: u16) -> SocketHandle {
        let mut socket = smol::Socket::new(
            smol::SocketBuffer::new(vec![0; 65536]),
            smol::SocketBuffer::new(vec![0; 65536]),
        );
        socket
            .connect(self.iface.context(), remote, local_port)
            .expect("connect");
        self.sockets.add(socket)
    }

    fn socket(&mut self, handle: SocketHandle) -> &mut smol::Socket<'static> {
        self.sockets.get_mut::<smol::Socket>(handle)
    }
}

/// Moves packets both ways until neither side has anything to say.
fn pump(stack: &mut Stack, client: &mut Client, now: Instant) {
    for _ in 0..1000 {
        let mut moved = false;
        let mut device = CallDevice::new(None, &mut client.tx, 1500);
        client.iface.poll(now, &mut device, &mut client.sockets);
        while let Some(packet) = client.tx.pop() {
            moved = true;
            let _ = stack.receive(&packet, now);
        }
        stack.poll(now);
        while let Some(packet) = stack.transmit() {
            moved = true;
            let mut device = CallDevice::new(Some(&packet), &mut client.tx, 1500);
            client
                .iface
                .poll_ingress_single(now, &mut device, &mut client.sockets);
        }
        if !moved {
            return;
        }
    }
    panic!("pump did not settle");
}

fn events(stack: &mut Stack) -> Vec<StackEvent> {
    std::iter::from_fn(|| stack.next_event()).collect()
}

fn opened(events: &[StackEvent]) -> Vec<(FlowId, SocketAddr, SocketAddr)> {
    events
        .iter()
        .filter_map(|e| match e {
            StackEvent::TcpOpened { id, src, dst } => Some((*id, *src, *dst)),
            _ => None,
        })
        .collect()
}

fn new_stack(config: StackConfig) -> Stack {
    Stack::new(config, Instant::ZERO).expect("valid config")
}

fn round_trip(dst: SocketAddr) {
    let now = Instant::ZERO;
    let mut stack = new_stack(StackConfig::default());
    let mut client = Client::new(now);
    let handle = client.connect(dst, 40_000);
    pump(&mut stack, &mut client, now);
    let evs = events(&mut stack);
    let [(id, src, got_dst)] = opened(&evs)[..] else {
        panic!("expected one TcpOpened, got {evs:?}");
    };
    let guest_ip: IpAddr = if dst.is_ipv4() {
        "10.77.0.2".parse().expect("ip")
    } else {
        "fd00:77::2".parse().expect("ip")
    };
    assert_eq!(src, SocketAddr::new(guest_ip, 40_000));
    assert_eq!(got_dst, dst);
    assert_eq!(stack.tcp_state(id), Some(TcpState::Established));

    client.socket(handle).send_slice(b"ping").expect("send");
    pump(&mut stack, &mut client, now);
    assert!(events(&mut stack).contains(&StackEvent::TcpReadable { id }));
    let mut buf = [0; 16];
    assert_eq!(stack.tcp_recv(id, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"ping");
    assert_eq!(stack.tcp_send(id, b"pong"), Ok(4));
    stack.tcp_close(id).expect("close");
    pump(&mut stack, &mut client, now);
    assert_eq!(client.socket(handle).recv_slice(&mut buf), Ok(4));
    assert_eq!(&buf[..4], b"pong");
    client.socket(handle).close();
    pump(&mut stack, &mut client, now);
    let evs = events(&mut stack);
    assert!(
        evs.contains(&StackEvent::TcpClosed {
            id,
            reason: TcpCloseReason::Graceful
        }),
        "{evs:?}"
    );
    let stats = stack.stats();
    assert_eq!((stats.tcp_flows, stats.tcp_buffer_bytes), (0, 0));
    assert_eq!((stats.tcp_opened, stats.tcp_closed), (1, 1));
}

#[test]
fn syn_to_any_v4_address_opens_a_flow_with_the_original_destination() {
    round_trip(addr("93.184.216.34:80"));
}

#[test]
fn syn_to_any_v6_address_opens_a_flow_with_the_original_destination() {
    round_trip(addr("[2001:db8::77]:443"));
}

#[test]
fn syn_to_the_gateway_itself_is_terminated_too() {
    round_trip(addr("10.77.0.1:8080"));
}

fn syn(src_port: u16, dst: [u8; 4], dst_port: u16, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(GUEST_V4, dst, 64)
        .tcp(src_port, dst_port, seq, 64240)
        .syn()
        .write(&mut out, &[])
        .expect("build syn");
    out
}

fn expect_rst_for(packet: &[u8], src_port: u16, seq: u32) {
    let sliced = SlicedPacket::from_ip(packet).expect("parse rst");
    let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
        panic!("not tcp");
    };
    assert!(tcp.rst() && tcp.ack());
    assert_eq!(tcp.destination_port(), src_port);
    assert_eq!(tcp.acknowledgment_number(), seq.wrapping_add(1));
}

#[test]
fn flow_cap_answers_with_rst() {
    let now = Instant::ZERO;
    let mut stack = new_stack(StackConfig {
        max_flows: 2,
        ..StackConfig::default()
    });
    for port in [1000, 1001] {
        stack
            .receive(&syn(port, [1, 2, 3, 4], 443, 5), now)
            .expect("admitted");
    }
    assert_eq!(
        stack.receive(&syn(1002, [1, 2, 3, 4], 443, 99), now),
        Err(DropReason::OverCap {
            cap: Cap::TcpFlows,
            max: 2
        })
    );
    let rst = stack.transmit().expect("rst queued before any poll");
    expect_rst_for(&rst, 1002, 99);
    stack.poll(now);
    let stats = stack.stats();
    assert_eq!((stats.rst_sent, stats.dropped_over_cap), (1, 1));
    assert_eq!((stats.tcp_flows, stats.tcp_half_open), (2, 2));
    // A retransmitted SYN of an admitted flow is not a new flow.
    stack
        .receive(&syn(1000, [1, 2, 3, 4], 443, 5), now)
        .expect("retransmit");
    assert_eq!(stack.stats().tcp_flows, 2);
}

#[test]
fn half_open_and_buffer_caps_answer_with_rst() {
    let now = Instant::ZERO;
    let mut stack = new_stack(StackConfig {
        max_half_open: 1,
        ..StackConfig::default()
    });
    stack
        .receive(&syn(1000, [1, 2, 3, 4], 443, 0), now)
        .expect("admitted");
    let refused = stack.receive(&syn(1001, [5, 6, 7, 8], 80, 0), now);
    assert!(matches!(
        refused,
        Err(DropReason::OverCap {
            cap: Cap::TcpHalfOpen,
            ..
        })
    ));

    let config = StackConfig::default();
    let mut stack = new_stack(StackConfig {
        max_buffer_bytes: config.tcp_rx_buffer + config.tcp_tx_buffer,
        ..config
    });
    stack
        .receive(&syn(1000, [1, 2, 3, 4], 443, 0), now)
        .expect("admitted");
    let refused = stack.receive(&syn(1001, [1, 2, 3, 4], 443, 0), now);
    assert!(matches!(
        refused,
        Err(DropReason::OverCap {
            cap: Cap::TcpBufferBytes,
            ..
        })
    ));
}

#[test]
fn half_open_flows_time_out_with_a_reset() {
    let mut stack = new_stack(StackConfig::default());
    stack
        .receive(&syn(1000, [1, 2, 3, 4], 443, 0), Instant::ZERO)
        .expect("admitted");
    stack.poll(Instant::ZERO);
    while stack.transmit().is_some() {}
    let deadline = stack.poll_at(Instant::ZERO).expect("a timer");
    assert!(deadline <= Instant::ZERO + DEFAULT_HALF_OPEN_TIMEOUT);
    let later = Instant::ZERO + DEFAULT_HALF_OPEN_TIMEOUT;
    // The first poll aborts the socket, the second sends its RST and removes it.
    stack.poll(later);
    stack.poll(later);
    let rst_sent = std::iter::from_fn(|| stack.transmit()).any(|p| {
        let sliced = SlicedPacket::from_ip(&p).expect("parse");
        matches!(sliced.transport, Some(TransportSlice::Tcp(t)) if t.rst())
    });
    assert!(rst_sent, "the guest is told with a RST");
    let stats = stack.stats();
    assert_eq!(stats.tcp_half_open_timeouts, 1);
    assert_eq!(
        (stats.tcp_flows, stats.tcp_half_open, stats.tcp_buffer_bytes),
        (0, 0, 0)
    );
    assert!(
        events(&mut stack).is_empty(),
        "no event for a flow never opened"
    );
}

#[test]
fn abort_emits_closed_and_resets_the_guest() {
    let now = Instant::ZERO;
    let mut stack = new_stack(StackConfig::default());
    let mut client = Client::new(now);
    let handle = client.connect(addr("198.51.100.1:22"), 41_000);
    pump(&mut stack, &mut client, now);
    let (id, _, _) = opened(&events(&mut stack))[0];
    stack.tcp_abort(id).expect("abort");
    assert_eq!(
        events(&mut stack),
        vec![StackEvent::TcpClosed {
            id,
            reason: TcpCloseReason::Aborted
        }]
    );
    assert_eq!(stack.tcp_send(id, b"x"), Err(FlowError::Closed { id }));
    pump(&mut stack, &mut client, now);
    assert_eq!(client.socket(handle).state(), smol::State::Closed);
    assert_eq!(stack.stats().tcp_flows, 0);
    assert_eq!(stack.tcp_state(id), None);
}

mod datagrams;
mod garbage;

#[test]
fn refused_syn_gets_a_rst_and_leaves_no_flow() {
    let mut stack = new_stack(StackConfig::default());
    let packet = syn(40000, [198, 51, 100, 7], 443, 77);
    stack.refuse_tcp_syn(&packet).expect("refused");
    let rst = stack.transmit().expect("a rst");
    expect_rst_for(&rst, 40000, 77);
    assert!(stack.transmit().is_none());
    stack.poll(Instant::ZERO);
    assert!(stack.next_event().is_none(), "no flow was opened");
    let stats = stack.stats();
    assert_eq!(
        (stats.syn_refused, stats.rst_sent, stats.tcp_flows),
        (1, 1, 0)
    );
    // Not a SYN: nothing is sent.
    let mut data = Vec::new();
    PacketBuilder::ipv4(GUEST_V4, [198, 51, 100, 7], 64)
        .tcp(40000, 443, 78, 64240)
        .ack(1)
        .write(&mut data, b"x")
        .expect("build");
    assert_eq!(stack.refuse_tcp_syn(&data), Err(RefuseSynError::NotSyn));
    assert!(stack.transmit().is_none());
}

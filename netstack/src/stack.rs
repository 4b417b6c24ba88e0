//! The sans-IO any-IP stack: raw IP packets from the guest in, raw IP packets to the guest out,
//! and flow events plus byte streams for the host in between.
//!
//! Owns a smoltcp [`Interface`] (`Medium::Ip`, any-IP on, default routes via its own gateway
//! addresses, so every unicast destination is local), its TCP sockets, the UDP flow table and
//! every per-guest cap ([`StackConfig`]). Does not own the TUN fd, tokio, clocks, DNS or policy:
//! the driver calls [`Stack::receive`], [`Stack::poll`] and [`Stack::transmit`] with the current
//! [`Instant`], and re-originates each flow itself.
//!
//! # How flows terminate here
//! - **TCP**: a SYN to `(dst, port)` with no socket for its 4-tuple gets a fresh smoltcp socket
//!   listening on exactly that destination before smoltcp sees the SYN; smoltcp completes the
//!   handshake and replies from the original destination. Over a cap the SYN is answered with a
//!   crafted RST instead. [`StackEvent::TcpOpened`] reports the guest's source and original
//!   destination once the handshake completes. Every `TcpOpened` is followed by exactly one
//!   [`StackEvent::TcpClosed`], after which the socket is gone. TIME-WAIT is not kept: the socket
//!   (and its buffers) is freed when it enters TIME-WAIT; a late retransmitted FIN then gets a
//!   RST, which a guest already in LAST-ACK treats as the end it expected.
//! - **UDP** never reaches smoltcp: each datagram becomes a [`StackEvent::UdpDatagram`], so the
//!   host can answer DNS for any resolver address; [`Stack::send_udp`] crafts replies and
//!   [`Stack::reject_udp`] an ICMP port unreachable (used to push QUIC back to TCP).
//! - **ICMP**: echo requests to the gateway addresses are answered by smoltcp; echo requests to
//!   any other address are dropped and counted in [`StackStats::icmp_echo_dropped`] (answering
//!   them would make every host look reachable); other ICMP types are dropped as unsupported.
//! - **Everything else** (fragments, IPv6 extension headers, other protocols, sources outside
//!   the guest prefix, non-unicast destinations, bad checksums) is dropped with a typed
//!   [`DropReason`] and counted; nothing a guest sends can panic the stack.
//!
//! # Driving it
//! Per wake-up: `receive` every packet read from the TUN, then `poll`, then drain `next_event`
//! and `transmit`. After host calls that change a socket (`tcp_send`, `tcp_recv` freeing window,
//! `tcp_close`, `tcp_abort`) call `poll` again. Sleep until [`Stack::poll_at`].

mod config;
mod craft;
mod device;
mod ingress;
mod tcp;
mod udp;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::wire::{HardwareAddress, IpCidr};

pub use config::*;
pub use craft::CraftError;
pub use ingress::{Cap, DropClass, DropReason};
pub use smoltcp::socket::tcp::State as TcpState;
pub use smoltcp::time::{Duration, Instant};
pub use tcp::{FlowError, FlowId, RefuseSynError, TcpCloseReason};
pub use udp::{RejectUdpError, SendUdpError, UdpFlowKey};

use device::{CallDevice, TxQueue};
use ingress::{GuestNet, Ingress};

/// Something the host has to act on, from [`Stack::next_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackEvent {
    /// A guest TCP handshake completed. `src` is the guest's address, `dst` the address it
    /// dialled (any address: it never left the stack).
    TcpOpened {
        id: FlowId,
        src: core::net::SocketAddr,
        dst: core::net::SocketAddr,
    },
    /// Data or end-of-stream is waiting in [`Stack::tcp_recv`]. Emitted once, then re-armed when
    /// a `tcp_recv` leaves the receive buffer empty.
    TcpReadable { id: FlowId },
    /// A flow whose last `tcp_send` was partial has room again (a quarter of its buffer).
    TcpWritable { id: FlowId },
    /// The flow is over and its id is no longer valid.
    TcpClosed { id: FlowId, reason: TcpCloseReason },
    /// One UDP datagram from the guest.
    UdpDatagram { flow: UdpFlowKey, payload: Vec<u8> },
    /// A UDP flow saw no datagram in either direction for the idle timeout and was forgotten.
    UdpFlowExpired { flow: UdpFlowKey },
}

/// Counters since the stack was created, plus current gauges (the `tcp_flows` … fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Packets passed to [`Stack::receive`], whatever became of them.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Packets handed to the driver by [`Stack::transmit`].
    pub packets_out: u64,
    pub bytes_out: u64,
    /// [`DropClass::Malformed`]: unparsable, bad lengths, bad checksums, not IP.
    pub dropped_malformed: u64,
    /// [`DropClass::Unsupported`]: fragments, extension headers, other protocols and ICMP types.
    pub dropped_unsupported: u64,
    /// [`DropClass::BadAddress`]: source outside the guest prefix, destination not unicast.
    pub dropped_bad_address: u64,
    /// [`DropClass::OverCap`]: refused because a per-guest cap was reached.
    pub dropped_over_cap: u64,
    /// Outbound packets lost because the transmit queue was full.
    pub dropped_tx_full: u64,
    /// RSTs crafted for SYNs refused over a cap or by [`Stack::refuse_tcp_syn`] (smoltcp's own
    /// RSTs are not counted).
    pub rst_sent: u64,
    /// SYNs the host refused with [`Stack::refuse_tcp_syn`] (its policy said no).
    pub syn_refused: u64,
    /// Echo requests to the gateway, answered by smoltcp.
    pub icmp_echo_answered: u64,
    /// Echo requests to any other address, dropped.
    pub icmp_echo_dropped: u64,
    /// ICMP port unreachable errors sent by [`Stack::reject_udp`].
    pub icmp_unreachable_sent: u64,
    pub tcp_opened: u64,
    pub tcp_closed: u64,
    /// Listeners removed before their handshake completed (guest RST, dropped SYN).
    pub tcp_handshakes_failed: u64,
    /// Half-open flows reset after [`StackConfig::half_open_timeout`].
    pub tcp_half_open_timeouts: u64,
    pub udp_datagrams_in: u64,
    pub udp_datagrams_out: u64,
    pub udp_flows_expired: u64,
    /// Gauge: TCP sockets alive (half-open and closing ones included).
    pub tcp_flows: usize,
    /// Gauge: TCP flows whose handshake has not completed.
    pub tcp_half_open: usize,
    /// Gauge: TCP buffer bytes reserved.
    pub tcp_buffer_bytes: usize,
    /// Gauge: UDP flows tracked.
    pub udp_flows: usize,
    /// Gauge: UDP payload bytes waiting in the event queue.
    pub udp_queued_bytes: usize,
}

impl StackStats {
    fn count_drop(&mut self, reason: &DropReason) {
        let counter = match reason.class() {
            DropClass::Malformed => &mut self.dropped_malformed,
            DropClass::Unsupported => &mut self.dropped_unsupported,
            DropClass::BadAddress => &mut self.dropped_bad_address,
            DropClass::OverCap => &mut self.dropped_over_cap,
            DropClass::IcmpEchoDropped => &mut self.icmp_echo_dropped,
        };
        *counter += 1;
    }
}

/// The stack of one guest. See the module documentation for the driving loop.
pub struct Stack {
    config: StackConfig,
    net: GuestNet,
    iface: Interface,
    sockets: SocketSet<'static>,
    tx: TxQueue,
    tcp: tcp::FlowTable,
    udp: udp::UdpTable,
    events: VecDeque<StackEvent>,
    stats: StackStats,
    /// Latest time passed to `receive` or `poll`, for calls that take no time.
    now: Instant,
}

impl core::fmt::Debug for Stack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stack")
            .field("net", &self.net)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Builds the interface: gateway addresses, any-IP, default routes through itself.
    pub fn new(config: StackConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut tx = TxQueue::new(config.max_tx_queue_bytes);
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = config.random_seed;
        let mut device = CallDevice::new(None, &mut tx, config.mtu);
        let mut iface = Interface::new(iface_config, &mut device, now);
        iface.update_ip_addrs(|addrs| {
            // Capacity is smoltcp's IFACE_MAX_ADDR_COUNT (2): exactly our two gateways.
            let _ = addrs.push(IpCidr::Ipv4(config.gateway_v4));
            let _ = addrs.push(IpCidr::Ipv6(config.gateway_v6));
        });
        // A route "via" one of our own addresses is what makes smoltcp's any-IP accept a packet.
        let routes = iface.routes_mut();
        let _ = routes.add_default_ipv4_route(config.gateway_v4.address());
        let _ = routes.add_default_ipv6_route(config.gateway_v6.address());
        iface.set_any_ip(true);
        Ok(Self {
            net: GuestNet {
                v4: config.gateway_v4,
                v6: config.gateway_v6,
            },
            iface,
            sockets: SocketSet::new(Vec::new()),
            tx,
            tcp: tcp::FlowTable::default(),
            udp: udp::UdpTable::default(),
            events: VecDeque::new(),
            stats: StackStats::default(),
            now,
            config,
        })
    }

    /// The configuration the stack was built with.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// Takes one raw IP packet from the guest (no TUN packet-information header). An `Err` means
    /// the packet was dropped (and counted); replies, if any, are queued for [`Stack::transmit`].
    pub fn receive(&mut self, packet: &[u8], now: Instant) -> Result<(), DropReason> {
        self.now = self.now.max(now);
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        let result = self.receive_parsed(packet, now);
        if let Err(reason) = &result {
            self.stats.count_drop(reason);
        }
        result
    }

    fn receive_parsed(&mut self, packet: &[u8], now: Instant) -> Result<(), DropReason> {
        match ingress::parse(packet, &self.net)? {
            Ingress::TcpSyn(syn) => {
                self.admit_syn(&syn, now)?;
                self.ingest(packet, now);
                self.reap_listener(syn.src, syn.dst);
            }
            Ingress::Tcp { src, dst, rst } => {
                self.ingest(packet, now);
                if rst {
                    self.reap_listener(src, dst);
                }
            }
            Ingress::Udp { src, dst, payload } => self.receive_udp(src, dst, payload, now)?,
            Ingress::IcmpEchoRequest => {
                self.ingest(packet, now);
                self.stats.icmp_echo_answered += 1;
            }
        }
        Ok(())
    }

    /// Hands one packet to smoltcp right away, so that the socket state it creates is visible
    /// before the next packet is triaged.
    fn ingest(&mut self, packet: &[u8], now: Instant) {
        let mut device = CallDevice::new(Some(packet), &mut self.tx, self.config.mtu);
        self.iface
            .poll_ingress_single(now, &mut device, &mut self.sockets);
    }

    /// Runs smoltcp's timers and transmissions, then turns socket changes into events and
    /// expires idle flows. Returns whether anything may have changed for the host.
    pub fn poll(&mut self, now: Instant) -> bool {
        self.now = self.now.max(now);
        let events_before = self.events.len();
        let mut device = CallDevice::new(None, &mut self.tx, self.config.mtu);
        let result = self.iface.poll(now, &mut device, &mut self.sockets);
        self.update_flows(now);
        self.expire_udp(now);
        result == PollResult::SocketStateChanged || self.events.len() != events_before
    }

    /// When [`Stack::poll`] must run next at the latest (`Some(now)` or earlier: right away);
    /// `None` when only a new packet or host call can make work.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let smoltcp = self.iface.poll_at(now, &self.sockets);
        [smoltcp, self.tcp_deadline(), self.udp_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next packet for the guest, as owned bytes (the driver writes it to the TUN and may
    /// keep it for a capture).
    pub fn transmit(&mut self) -> Option<Vec<u8>> {
        let packet = self.tx.pop()?;
        self.stats.packets_out += 1;
        self.stats.bytes_out += packet.len() as u64;
        Some(packet)
    }

    /// Packets waiting for [`Stack::transmit`].
    pub fn transmit_pending(&self) -> usize {
        self.tx.len()
    }

    /// The next event for the host, oldest first.
    pub fn next_event(&mut self) -> Option<StackEvent> {
        let event = self.events.pop_front()?;
        if let StackEvent::UdpDatagram { payload, .. } = &event {
            self.udp.dequeued(payload.len());
        }
        Some(event)
    }

    /// Counters and current gauges.
    pub fn stats(&self) -> StackStats {
        StackStats {
            dropped_tx_full: self.stats.dropped_tx_full + self.tx.dropped,
            tcp_flows: self.tcp.len(),
            tcp_half_open: self.tcp.half_open(),
            tcp_buffer_bytes: self.tcp.buffer_bytes(),
            udp_flows: self.udp.len(),
            udp_queued_bytes: self.udp.queued_bytes(),
            ..self.stats
        }
    }
}

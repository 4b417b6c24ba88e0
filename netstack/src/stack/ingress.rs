//! Pure triage of one raw IP packet from the guest: which path it takes, or why it is dropped.
//!
//! Owns every check made on guest bytes before any state changes: checked slicing, IPv4 header,
//! UDP and TCP-SYN checksums, source and destination address rules, fragments, protocols.
//! Does not own the consequences (creating sockets, queueing events, counters): that is `Stack`.
//! smoltcp re-parses the packets handed to it with its own checked parsers.

use core::net::{IpAddr, SocketAddr};

use etherparse::{Ipv4Slice, Ipv6Slice, NetSlice, SlicedPacket, TransportSlice};
use smoltcp::wire::{Ipv4Cidr, Ipv6Cidr};

/// Why a guest packet was dropped. Every variant is counted in [`StackStats`](super::StackStats)
/// under the class given by [`DropReason::class`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    #[error("empty packet")]
    Empty,
    #[error("not an ip packet (version nibble {version})")]
    NotIp { version: u8 },
    #[error("malformed packet: {reason}")]
    Malformed { reason: &'static str },
    #[error("bad {layer} checksum")]
    BadChecksum { layer: &'static str },
    #[error("fragmented packets are not reassembled")]
    Fragmented,
    #[error("ipv6 extension headers are not supported")]
    Ipv6Extensions,
    #[error("unsupported ip protocol {protocol}")]
    UnsupportedProtocol { protocol: u8 },
    #[error("icmp type {icmp_type} is not handled")]
    UnsupportedIcmp { icmp_type: u8 },
    #[error("source address {src} is not a guest address")]
    BadSource { src: IpAddr },
    #[error("destination address {dst} is not unicast")]
    NotUnicast { dst: IpAddr },
    #[error("icmp echo request to {dst} is not answered (only the gateway answers pings)")]
    IcmpEchoNotGateway { dst: IpAddr },
    #[error("{cap} cap of {max} reached")]
    OverCap { cap: Cap, max: usize },
}

/// The per-guest cap a dropped packet ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cap {
    TcpFlows,
    TcpHalfOpen,
    TcpBufferBytes,
    UdpFlows,
    UdpQueueDatagrams,
    UdpQueueBytes,
}

impl core::fmt::Display for Cap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Cap::TcpFlows => "tcp flow",
            Cap::TcpHalfOpen => "tcp half-open",
            Cap::TcpBufferBytes => "tcp buffer bytes",
            Cap::UdpFlows => "udp flow",
            Cap::UdpQueueDatagrams => "udp queue datagrams",
            Cap::UdpQueueBytes => "udp queue bytes",
        })
    }
}

/// The counter class of a [`DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropClass {
    Malformed,
    Unsupported,
    BadAddress,
    OverCap,
    IcmpEchoDropped,
}

impl DropReason {
    pub fn class(&self) -> DropClass {
        match self {
            DropReason::Empty
            | DropReason::NotIp { .. }
            | DropReason::Malformed { .. }
            | DropReason::BadChecksum { .. } => DropClass::Malformed,
            DropReason::Fragmented
            | DropReason::Ipv6Extensions
            | DropReason::UnsupportedProtocol { .. }
            | DropReason::UnsupportedIcmp { .. } => DropClass::Unsupported,
            DropReason::BadSource { .. } | DropReason::NotUnicast { .. } => DropClass::BadAddress,
            DropReason::IcmpEchoNotGateway { .. } => DropClass::IcmpEchoDropped,
            DropReason::OverCap { .. } => DropClass::OverCap,
        }
    }
}

/// The guest's link as the ingress rules see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestNet {
    pub(crate) v4: Ipv4Cidr,
    pub(crate) v6: Ipv6Cidr,
}

impl GuestNet {
    pub(crate) fn is_gateway(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => a == self.v4.address(),
            IpAddr::V6(a) => a == self.v6.address(),
        }
    }

    /// A guest source is any host address of the link prefix other than the gateway's own, so a
    /// guest cannot make flows appear to come from elsewhere.
    fn is_guest_source(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => {
                let net = self.v4.network();
                self.v4.contains_addr(&a)
                    && a != self.v4.address()
                    && a != net.address()
                    && Some(a) != net.broadcast()
            }
            IpAddr::V6(a) => {
                self.v6.contains_addr(&a) && a != self.v6.address() && !a.is_unspecified()
            }
        }
    }

    /// Any unicast destination is accepted (that is the point of any-IP), except the link's own
    /// broadcast and the special ranges no real flow targets.
    fn is_unicast_destination(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => {
                !(a.is_unspecified()
                    || a.is_broadcast()
                    || a.is_multicast()
                    || a.is_loopback()
                    || Some(a) == self.v4.network().broadcast())
            }
            IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
        }
    }
}

/// A TCP SYN (without ACK) that may need a listener first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpSyn {
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) seq: u32,
    /// Sequence space the SYN occupies (1 for the SYN plus any payload), for a RST's ACK number.
    pub(crate) seq_len: u32,
}

/// Where a valid guest packet goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ingress<'a> {
    /// A connection attempt: find or create its listener, then hand it to smoltcp.
    TcpSyn(TcpSyn),
    /// Any other TCP segment, for smoltcp (which resets segments of unknown flows).
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        rst: bool,
    },
    /// A UDP datagram for the host.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// A ping to a gateway address, answered by smoltcp.
    IcmpEchoRequest,
}

fn malformed(reason: &'static str) -> DropReason {
    DropReason::Malformed { reason }
}

/// Decides what to do with one raw IP packet from the guest, without side effects.
pub(crate) fn parse<'a>(packet: &'a [u8], net: &GuestNet) -> Result<Ingress<'a>, DropReason> {
    let first = *packet.first().ok_or(DropReason::Empty)?;
    let version = first >> 4;
    if version != 4 && version != 6 {
        return Err(DropReason::NotIp { version });
    }
    let sliced = SlicedPacket::from_ip(packet).map_err(|_| malformed("ip or transport header"))?;
    let (src, dst, protocol) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => check_ipv4(v4)?,
        Some(NetSlice::Ipv6(v6)) => check_ipv6(v6)?,
        _ => return Err(malformed("no ip header")),
    };
    if !net.is_guest_source(src) {
        return Err(DropReason::BadSource { src });
    }
    if !net.is_unicast_destination(dst) {
        return Err(DropReason::NotUnicast { dst });
    }
    match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let src = SocketAddr::new(src, tcp.source_port());
            let dst = SocketAddr::new(dst, tcp.destination_port());
            if src.port() == 0 || dst.port() == 0 {
                return Err(malformed("tcp port 0"));
            }
            if !tcp.syn() || tcp.ack() {
                return Ok(Ingress::Tcp {
                    src,
                    dst,
                    rst: tcp.rst(),
                });
            }
            // Checked here because a SYN costs a socket and its buffers before smoltcp (which
            // verifies every checksum anyway) would get to see it.
            let expected = match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => tcp.calc_checksum_ipv4(s.octets(), d.octets()),
                (IpAddr::V6(s), IpAddr::V6(d)) => tcp.calc_checksum_ipv6(s.octets(), d.octets()),
                _ => return Err(malformed("mixed address families")),
            };
            if expected.ok() != Some(tcp.checksum()) {
                return Err(DropReason::BadChecksum { layer: "tcp" });
            }
            let payload_len = u32::try_from(tcp.payload().len()).unwrap_or(u32::MAX);
            Ok(Ingress::TcpSyn(TcpSyn {
                src,
                dst,
                seq: tcp.sequence_number(),
                seq_len: payload_len.saturating_add(1) + u32::from(tcp.fin()),
            }))
        }
        Some(TransportSlice::Udp(udp)) => {
            check_udp_checksum(&udp, src, dst)?;
            Ok(Ingress::Udp {
                src: SocketAddr::new(src, udp.source_port()),
                dst: SocketAddr::new(dst, udp.destination_port()),
                payload: udp.payload(),
            })
        }
        Some(TransportSlice::Icmpv4(icmp)) => {
            check_echo(icmp.type_u8(), 8, dst, net).map(|()| Ingress::IcmpEchoRequest)
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            check_echo(icmp.type_u8(), 128, dst, net).map(|()| Ingress::IcmpEchoRequest)
        }
        None => Err(DropReason::UnsupportedProtocol { protocol }),
    }
}

fn check_ipv4(v4: &Ipv4Slice<'_>) -> Result<(IpAddr, IpAddr, u8), DropReason> {
    let header = v4.header();
    if v4.is_payload_fragmented() {
        return Err(DropReason::Fragmented);
    }
    // etherparse does not verify the header checksum, and UDP never reaches smoltcp, which would.
    if header.to_header().calc_header_checksum() != header.header_checksum() {
        return Err(DropReason::BadChecksum {
            layer: "ipv4 header",
        });
    }
    Ok((
        IpAddr::V4(header.source_addr()),
        IpAddr::V4(header.destination_addr()),
        v4.payload_ip_number().0,
    ))
}

fn check_ipv6(v6: &Ipv6Slice<'_>) -> Result<(IpAddr, IpAddr, u8), DropReason> {
    if v6.is_payload_fragmented() {
        return Err(DropReason::Fragmented);
    }
    let header = v6.header();
    // smoltcp follows only hop-by-hop options; refusing every extension keeps both parsers
    // agreeing on where the transport header starts.
    if header.next_header() != v6.payload().ip_number {
        return Err(DropReason::Ipv6Extensions);
    }
    Ok((
        IpAddr::V6(header.source_addr()),
        IpAddr::V6(header.destination_addr()),
        v6.payload().ip_number.0,
    ))
}

fn check_udp_checksum(
    udp: &etherparse::UdpSlice<'_>,
    src: IpAddr,
    dst: IpAddr,
) -> Result<(), DropReason> {
    let header = udp.to_header();
    let expected = match (src, dst) {
        // A zero checksum means "none" in IPv4 only.
        (IpAddr::V4(_), IpAddr::V4(_)) if header.checksum == 0 => return Ok(()),
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            header.calc_checksum_ipv4_raw(s.octets(), d.octets(), udp.payload())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            header.calc_checksum_ipv6_raw(s.octets(), d.octets(), udp.payload())
        }
        _ => return Err(malformed("mixed address families")),
    };
    if expected.ok() != Some(header.checksum) {
        return Err(DropReason::BadChecksum { layer: "udp" });
    }
    Ok(())
}

/// Only echo requests to the gateway are answered; pinging any other address would otherwise
/// make every host on the internet look reachable to the guest.
fn check_echo(
    icmp_type: u8,
    echo_request: u8,
    dst: IpAddr,
    net: &GuestNet,
) -> Result<(), DropReason> {
    if icmp_type != echo_request {
        return Err(DropReason::UnsupportedIcmp { icmp_type });
    }
    if !net.is_gateway(dst) {
        return Err(DropReason::IcmpEchoNotGateway { dst });
    }
    Ok(())
}

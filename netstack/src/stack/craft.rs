//! Packets the stack writes itself, outside smoltcp: RSTs for refused SYNs, UDP replies and ICMP
//! port-unreachable errors. Pure functions from values to bytes, checksums included.
//!
//! Owns the wire layout of those three packets. Does not own the decision to send them or the
//! transmit queue (`Stack`), nor any TCP state (smoltcp).

use core::net::{IpAddr, SocketAddr};

use etherparse::{icmpv4, icmpv6, Icmpv4Type, Icmpv6Type, PacketBuilder};

use super::ingress::TcpSyn;

/// Hop limit of every crafted packet, as for smoltcp's own.
const HOP_LIMIT: u8 = 64;
/// RFC 1812 §4.3.2.3: an ICMPv4 error, quote included, should not exceed 576 bytes.
const ICMPV4_MAX_ERROR: usize = 576;
/// RFC 4443 §2.4 (c): an ICMPv6 error must not exceed the minimum IPv6 MTU.
const ICMPV6_MAX_ERROR: usize = 1280;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const ICMP_HEADER: usize = 8;
pub(crate) const UDP_HEADER: usize = 8;

/// Why a packet could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CraftError {
    #[error("source {from} and destination {to} are of different address families")]
    MixedFamilies { from: IpAddr, to: IpAddr },
    #[error("packet of {len} bytes exceeds the mtu of {mtu}")]
    TooLarge { len: usize, mtu: usize },
}

/// The IP header length of a family.
pub(crate) fn ip_header_len(addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => IPV4_HEADER,
        IpAddr::V6(_) => IPV6_HEADER,
    }
}

/// RFC 9293 §3.10.7.1 reply to a SYN that no socket will take: `<SEQ=0><ACK=SEG.SEQ+SEG.LEN>
/// <CTL=RST,ACK>`, from the address the guest tried to reach.
pub(crate) fn tcp_rst_for_syn(syn: &TcpSyn) -> Vec<u8> {
    let ack = syn.seq.wrapping_add(syn.seq_len);
    let (from, to) = (syn.dst, syn.src);
    let mut out = Vec::with_capacity(ip_header_len(from.ip()) + 20);
    let written = match (from.ip(), to.ip()) {
        (IpAddr::V4(f), IpAddr::V4(t)) => PacketBuilder::ipv4(f.octets(), t.octets(), HOP_LIMIT)
            .tcp(from.port(), to.port(), 0, 0)
            .rst()
            .ack(ack)
            .write(&mut out, &[]),
        (IpAddr::V6(f), IpAddr::V6(t)) => PacketBuilder::ipv6(f.octets(), t.octets(), HOP_LIMIT)
            .tcp(from.port(), to.port(), 0, 0)
            .rst()
            .ack(ack)
            .write(&mut out, &[]),
        // ingress::parse never yields a SYN with mixed families.
        _ => return Vec::new(),
    };
    // Writing a header-only packet into a Vec cannot fail.
    if written.is_err() {
        out.clear();
    }
    out
}

/// A UDP datagram `from` → `to`, checksummed, no larger than `mtu`.
pub(crate) fn udp_datagram(
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
    mtu: usize,
) -> Result<Vec<u8>, CraftError> {
    let len = ip_header_len(from.ip()) + UDP_HEADER + payload.len();
    if len > mtu {
        return Err(CraftError::TooLarge { len, mtu });
    }
    let mut out = Vec::with_capacity(len);
    let written = match (from.ip(), to.ip()) {
        (IpAddr::V4(f), IpAddr::V4(t)) => PacketBuilder::ipv4(f.octets(), t.octets(), HOP_LIMIT)
            .udp(from.port(), to.port())
            .write(&mut out, payload),
        (IpAddr::V6(f), IpAddr::V6(t)) => PacketBuilder::ipv6(f.octets(), t.octets(), HOP_LIMIT)
            .udp(from.port(), to.port())
            .write(&mut out, payload),
        (f, t) => return Err(CraftError::MixedFamilies { from: f, to: t }),
    };
    // etherparse only refuses payloads over 65535 bytes, which the mtu check already excludes.
    written.map_err(|_| CraftError::TooLarge { len, mtu })?;
    Ok(out)
}

/// An ICMP/ICMPv6 "port unreachable" from `original_dst` to `original_src`, quoting as much of
/// the original packet (trimmed to its IP length) as the RFC size limits allow.
pub(crate) fn icmp_port_unreachable(
    original: &[u8],
    original_src: IpAddr,
    original_dst: IpAddr,
) -> Result<Vec<u8>, CraftError> {
    let quote = trim_to_ip_length(original);
    let mut out = Vec::new();
    let written = match (original_dst, original_src) {
        (IpAddr::V4(f), IpAddr::V4(t)) => {
            let quote = &quote[..quote
                .len()
                .min(ICMPV4_MAX_ERROR - IPV4_HEADER - ICMP_HEADER)];
            PacketBuilder::ipv4(f.octets(), t.octets(), HOP_LIMIT)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    icmpv4::DestUnreachableHeader::Port,
                ))
                .write(&mut out, quote)
        }
        (IpAddr::V6(f), IpAddr::V6(t)) => {
            let quote = &quote[..quote
                .len()
                .min(ICMPV6_MAX_ERROR - IPV6_HEADER - ICMP_HEADER)];
            PacketBuilder::ipv6(f.octets(), t.octets(), HOP_LIMIT)
                .icmpv6(Icmpv6Type::DestinationUnreachable(
                    icmpv6::DestUnreachableCode::Port,
                ))
                .write(&mut out, quote)
        }
        (f, t) => return Err(CraftError::MixedFamilies { from: f, to: t }),
    };
    let len = out.len();
    written.map_err(|_| CraftError::TooLarge {
        len,
        mtu: ICMPV6_MAX_ERROR,
    })?;
    Ok(out)
}

/// Drops link padding after the IP packet so the quote holds only the original datagram.
fn trim_to_ip_length(packet: &[u8]) -> &[u8] {
    let declared = match packet.first().map(|b| b >> 4) {
        Some(4) => packet
            .get(2..4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))),
        Some(6) => packet
            .get(4..6)
            .map(|b| IPV6_HEADER + usize::from(u16::from_be_bytes([b[0], b[1]]))),
        _ => None,
    };
    let len = declared.unwrap_or(packet.len()).min(packet.len());
    &packet[..len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    #[test]
    fn rst_acknowledges_the_syn() {
        let syn = TcpSyn {
            src: "10.77.0.2:40000".parse().expect("addr"),
            dst: "198.51.100.9:443".parse().expect("addr"),
            seq: u32::MAX,
            seq_len: 1,
        };
        let rst = tcp_rst_for_syn(&syn);
        let sliced = SlicedPacket::from_ip(&rst).expect("parse rst");
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not tcp");
        };
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!(tcp.acknowledgment_number(), 0);
        assert_eq!((tcp.source_port(), tcp.destination_port()), (443, 40000));
        let Some(NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("not ipv4");
        };
        let expected = tcp
            .calc_checksum_ipv4(ip.header().source(), ip.header().destination())
            .expect("checksum");
        assert_eq!(tcp.checksum(), expected);
    }

    #[test]
    fn udp_over_mtu_and_mixed_families_are_refused() {
        let v4: SocketAddr = "10.77.0.1:53".parse().expect("addr");
        let v6: SocketAddr = "[fd00:77::2]:5353".parse().expect("addr");
        assert!(matches!(
            udp_datagram(v4, v6, b"x", 1500),
            Err(CraftError::MixedFamilies { .. })
        ));
        let to: SocketAddr = "10.77.0.2:5353".parse().expect("addr");
        assert!(udp_datagram(v4, to, &[0; 1472], 1500).is_ok());
        assert_eq!(
            udp_datagram(v4, to, &[0; 1473], 1500),
            Err(CraftError::TooLarge {
                len: 1501,
                mtu: 1500
            })
        );
    }

    #[test]
    fn icmp_quote_is_trimmed_and_bounded() {
        let mut original = Vec::new();
        PacketBuilder::ipv4([10, 77, 0, 2], [1, 1, 1, 1], 64)
            .udp(1000, 443)
            .write(&mut original, &[7; 1000])
            .expect("build");
        original.extend_from_slice(&[0xee; 4]); // link padding must not be quoted
        let icmp = icmp_port_unreachable(
            &original,
            "10.77.0.2".parse().expect("addr"),
            "1.1.1.1".parse().expect("addr"),
        )
        .expect("craft");
        assert_eq!(icmp.len(), ICMPV4_MAX_ERROR);
        assert_eq!(trim_to_ip_length(&original).len(), original.len() - 4);
    }
}

//! Pure classification of raw IP packets read from the guest's TUN (no I/O, no panics).
//!
//! A packet is parsed with etherparse's checked slicing; anything that does not parse is a typed
//! [`ClassifyError`], which the caller counts and drops.

use core::net::IpAddr;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// Transport protocol of a guest packet, as far as the stack cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP, with the SYN-without-ACK bit pair (a connection attempt) called out.
    Tcp {
        syn: bool,
    },
    Udp,
    Icmp,
    /// Any other IP protocol number (or an IPv6 extension chain we do not follow).
    Other(u8),
}

/// What a packet is: addresses, ports and transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub transport: Transport,
    pub len: usize,
}

/// Why a packet could not be classified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClassifyError {
    #[error("empty packet")]
    Empty,
    #[error("malformed ip packet of {len} bytes: {reason}")]
    Malformed { len: usize, reason: String },
    #[error("not an ip packet (version nibble {0})")]
    NotIp(u8),
}

/// Classifies one raw IP packet (TUN without packet information header).
pub fn classify(packet: &[u8]) -> Result<PacketMeta, ClassifyError> {
    let first = *packet.first().ok_or(ClassifyError::Empty)?;
    let version = first >> 4;
    if version != 4 && version != 6 {
        return Err(ClassifyError::NotIp(version));
    }
    let sliced = SlicedPacket::from_ip(packet).map_err(|e| ClassifyError::Malformed {
        len: packet.len(),
        reason: e.to_string(),
    })?;
    let (src, dst, proto) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.protocol().0,
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload().ip_number.0,
            )
        }
        _ => {
            return Err(ClassifyError::Malformed {
                len: packet.len(),
                reason: "no network header".into(),
            })
        }
    };
    let (src_port, dst_port, transport) = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => (
            Some(t.source_port()),
            Some(t.destination_port()),
            Transport::Tcp {
                syn: t.syn() && !t.ack(),
            },
        ),
        Some(TransportSlice::Udp(u)) => (
            Some(u.source_port()),
            Some(u.destination_port()),
            Transport::Udp,
        ),
        Some(TransportSlice::Icmpv4(_)) | Some(TransportSlice::Icmpv6(_)) => {
            (None, None, Transport::Icmp)
        }
        None => (None, None, Transport::Other(proto)),
    };
    Ok(PacketMeta {
        src,
        dst,
        src_port,
        dst_port,
        transport,
        len: packet.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn tcp_syn_v4_is_classified() {
        let builder = PacketBuilder::ipv4([10, 77, 0, 2], [10, 77, 0, 1], 64)
            .tcp(40000, 443, 1, 65535)
            .syn();
        let mut buf = Vec::new();
        builder.write(&mut buf, &[]).expect("write packet");
        let meta = classify(&buf).expect("classify");
        assert_eq!(meta.dst_port, Some(443));
        assert_eq!(meta.transport, Transport::Tcp { syn: true });
    }

    #[test]
    fn udp_v6_is_classified() {
        let mut src = [0u8; 16];
        src[0] = 0xfd;
        let builder = PacketBuilder::ipv6(src, [0xfd; 16], 64).udp(5353, 53);
        let mut buf = Vec::new();
        builder.write(&mut buf, b"q").expect("write packet");
        let meta = classify(&buf).expect("classify");
        assert_eq!(meta.transport, Transport::Udp);
        assert_eq!(meta.dst_port, Some(53));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(classify(&[]), Err(ClassifyError::Empty));
        assert_eq!(classify(&[0x10, 1, 2]), Err(ClassifyError::NotIp(1)));
        assert!(matches!(
            classify(&[0x45, 0, 0, 200, 1]),
            Err(ClassifyError::Malformed { .. })
        ));
        // Every prefix of a valid packet must classify or error, never panic.
        let builder = PacketBuilder::ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64).udp(1, 2);
        let mut buf = Vec::new();
        builder.write(&mut buf, b"hello").expect("write packet");
        for n in 0..buf.len() {
            let _ = classify(&buf[..n]);
        }
    }
}

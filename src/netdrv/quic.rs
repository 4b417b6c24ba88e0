//! The records of refused QUIC connections: one `blocked` event per connection attempt with
//! the number of datagrams it sent (`datagrams`), not one per retransmission. A QUIC client
//! repeats its Initial over several seconds (and `REPEAT_WINDOW` is one), so a refused
//! attempt used to write about five records.
//!
//! A connection is keyed by its Destination Connection ID when the datagram has a long header
//! (RFC 8999 §5.1: the version-independent layout), else by its 5-tuple. Its record is written
//! when it has been quiet for [`QUIC_IDLE`], when the table is full and it is the oldest
//! ([`MAX_QUIC_CONNECTIONS`]), or when the run ends. Does not own the refusal itself (the
//! driver answers with ICMP port unreachable) nor the rate limit of early writes (`drops.rs`).

use super::notice;
use crate::audit::{AuditSink, BlockedEvent, EventBody, Repeat};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// Refused QUIC connections tracked at once; a new one beyond it writes the record of the
/// least recently seen one early (under the drop records' rate limit).
pub const MAX_QUIC_CONNECTIONS: usize = 1024;
/// How long a refused connection stays quiet before its record is written. Longer than a QUIC
/// client's handshake retransmissions (about 1 + 2 + 4 … s before it gives up).
pub const QUIC_IDLE: Duration = Duration::from_secs(30);
/// Longest Connection ID tracked (QUIC v1's limit, RFC 9000 §17.2); longer ones are keyed by
/// the 5-tuple.
const MAX_CID_LEN: usize = 20;
/// The reason of every QUIC record.
pub(super) const QUIC_REASON: &str =
    "QUIC refused (ICMP port unreachable) so the client falls back to TCP";

/// The identity of one refused connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ConnKey {
    /// The long header's Destination Connection ID, per destination: stable across the
    /// client's retransmissions, even from another source port.
    Cid {
        dst: SocketAddr,
        len: u8,
        cid: [u8; MAX_CID_LEN],
    },
    /// Short header or unparseable: the 5-tuple (UDP implied).
    Tuple { src: SocketAddr, dst: SocketAddr },
}

#[derive(Debug)]
struct Conn {
    name: Option<String>,
    datagrams: u64,
    first: SystemTime,
    last: SystemTime,
    last_seen: Instant,
}

/// The Destination Connection ID of a QUIC long-header packet (`payload` is the UDP payload):
/// first bit set, a 4-byte version, a 1-byte length, the ID. `None` for a short header, an
/// ID longer than [`MAX_CID_LEN`] or a truncated datagram.
fn long_header_dcid(payload: &[u8]) -> Option<&[u8]> {
    let first = *payload.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let len = usize::from(*payload.get(5)?);
    if len > MAX_CID_LEN {
        return None;
    }
    payload.get(6..6 + len)
}

/// The UDP payload of a raw IP packet, if it is UDP.
fn udp_payload(packet: &[u8]) -> Option<&[u8]> {
    match etherparse::SlicedPacket::from_ip(packet).ok()?.transport? {
        etherparse::TransportSlice::Udp(u) => Some(u.payload()),
        _ => None,
    }
}

/// The run's refused QUIC connections.
#[derive(Debug, Default)]
pub(super) struct QuicRefusals {
    conns: HashMap<ConnKey, Conn>,
    cap_noticed: bool,
}

impl QuicRefusals {
    /// Counts one refused datagram from `src` to `dst` (`packet` is the raw IP packet).
    /// `name_of` is asked once per connection; `admit_early` is the rate limit of a record
    /// written early because the table is full.
    pub(super) fn refused(
        &mut self,
        audit: &AuditSink,
        src: SocketAddr,
        dst: SocketAddr,
        packet: &[u8],
        name_of: impl FnOnce(SocketAddr) -> Option<String>,
        admit_early: impl FnOnce() -> bool,
    ) {
        let key = match udp_payload(packet).and_then(long_header_dcid) {
            Some(id) => {
                let mut cid = [0u8; MAX_CID_LEN];
                cid[..id.len()].copy_from_slice(id);
                ConnKey::Cid {
                    dst,
                    len: id.len() as u8,
                    cid,
                }
            }
            None => ConnKey::Tuple { src, dst },
        };
        let now = SystemTime::now();
        if let Some(c) = self.conns.get_mut(&key) {
            c.datagrams += 1;
            c.last = now;
            c.last_seen = Instant::now();
            return;
        }
        if self.conns.len() >= MAX_QUIC_CONNECTIONS {
            if !self.cap_noticed {
                self.cap_noticed = true;
                notice(
                    audit,
                    "quic_refusal_cap",
                    format!("more than {MAX_QUIC_CONNECTIONS} refused QUIC connections at once; the least recently seen one is written early (each a blocked event, rate-limited)"),
                );
            }
            // O(n) only while the table is full; every record it writes is rate-limited.
            let oldest = self
                .conns
                .iter()
                .min_by_key(|(_, c)| c.last_seen)
                .map(|(k, _)| *k);
            if let Some((k, c)) = oldest.and_then(|k| self.conns.remove_entry(&k)) {
                if admit_early() {
                    write(audit, &k, c);
                }
            }
        }
        self.conns.insert(
            key,
            Conn {
                name: name_of(dst),
                datagrams: 1,
                first: now,
                last: now,
                last_seen: Instant::now(),
            },
        );
    }

    /// Writes the records of connections quiet for [`QUIC_IDLE`] by `now`.
    pub(super) fn expire(&mut self, audit: &AuditSink, now: Instant) {
        if self.conns.is_empty() {
            return;
        }
        let idle: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_seen) >= QUIC_IDLE)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            if let Some(c) = self.conns.remove(&k) {
                write(audit, &k, c);
            }
        }
    }

    /// Run end: writes every connection's record, in the order they started.
    pub(super) fn finish(&mut self, audit: &AuditSink) {
        let mut all: Vec<(ConnKey, Conn)> = self.conns.drain().collect();
        all.sort_by_key(|(_, c)| c.first);
        for (k, c) in all {
            write(audit, &k, c);
        }
    }
}

fn rfc3339(t: SystemTime) -> Option<String> {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn write(audit: &AuditSink, key: &ConnKey, c: Conn) {
    let (dst, quic_dcid) = match key {
        ConnKey::Cid { dst, len, cid } => (*dst, Some(hex::encode(&cid[..usize::from(*len)]))),
        ConnKey::Tuple { dst, .. } => (*dst, None),
    };
    audit.emit(EventBody::Blocked(BlockedEvent {
        what: "udp".into(),
        target: dst.to_string(),
        reason: QUIC_REASON.into(),
        flow: None,
        name: c.name,
        datagrams: Some(c.datagrams),
        quic_dcid,
        // When the attempt started and last retransmitted; no `repeated`: one record is
        // one connection.
        repeat: Repeat {
            repeated: None,
            first_ts: rfc3339(c.first),
            last_ts: rfc3339(c.last),
        },
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, RunEnd, RunId};

    /// A raw IPv4/UDP packet from `src_port` to 192.0.2.1:443 carrying `payload`.
    fn packet(src_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 77, 0, 2], [192, 0, 2, 1], 64)
            .udp(src_port, 443)
            .write(&mut buf, payload)
            .expect("write packet");
        buf
    }

    #[tokio::test]
    async fn connections_past_the_cap_write_the_oldest_early_and_idle_ones_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::create(&path, RunId::generate(), 8192).expect("create");
        let audit = log.sink();
        let mut quic = QuicRefusals::default();
        let dst: SocketAddr = "192.0.2.1:443".parse().expect("addr");
        let src = |port| SocketAddr::from(([10, 77, 0, 2], port));
        // Short headers: one connection per source port (the 5-tuple).
        for port in 0..=u16::try_from(MAX_QUIC_CONNECTIONS).expect("u16") {
            let p = packet(10_000 + port, b"\x40x");
            quic.refused(&audit, src(10_000 + port), dst, &p, |_| None, || true);
        }
        // The long-header connection: three datagrams from three ports, one key.
        let initial = [0xc3, 0, 0, 0, 1, 2, 0xab, 0xcd, 0];
        for port in [1, 2, 3] {
            quic.refused(
                &audit,
                src(port),
                dst,
                &packet(port, &initial),
                |_| None,
                || true,
            );
        }
        assert_eq!(quic.conns.len(), MAX_QUIC_CONNECTIONS);
        quic.expire(&audit, Instant::now());
        assert_eq!(quic.conns.len(), MAX_QUIC_CONNECTIONS, "nothing idle yet");
        quic.expire(&audit, Instant::now() + QUIC_IDLE);
        assert!(quic.conns.is_empty());
        log.finish(RunEnd::default()).await.expect("finish");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let blocked: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["kind"] == "blocked").collect();
        // Every connection is one record, the two evicted ones included.
        assert_eq!(blocked.len(), MAX_QUIC_CONNECTIONS + 2);
        let total: u64 = blocked.iter().filter_map(|b| b["datagrams"].as_u64()).sum();
        assert_eq!(total, MAX_QUIC_CONNECTIONS as u64 + 1 + 3);
        let long: Vec<_> = blocked
            .iter()
            .filter(|b| b["quic_dcid"] == "abcd")
            .collect();
        assert_eq!(long.len(), 1);
        assert_eq!(long[0]["datagrams"], 3);
        let notices = lines.iter().filter(|l| l["what"] == "quic_refusal_cap");
        assert_eq!(notices.count(), 1);
    }

    #[test]
    fn long_header_dcid_is_read_with_checked_access() {
        let mut p = vec![0xc0, 0, 0, 0, 1, 4, 0xde, 0xad, 0xbe, 0xef, 0x00];
        assert_eq!(long_header_dcid(&p), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
        p.truncate(8);
        assert_eq!(long_header_dcid(&p), None, "truncated");
        assert_eq!(
            long_header_dcid(&[0x40, 1, 2, 3, 4, 5, 6]),
            None,
            "short header"
        );
        assert_eq!(long_header_dcid(&[0xc0, 0, 0, 0, 1, 21]), None, "too long");
        assert_eq!(long_header_dcid(&[]), None);
        assert_eq!(long_header_dcid(&[0xc0, 0, 0, 0, 1, 0]), Some(&[][..]));
    }
}

//! The records of guest packets the userspace stack refused, from its typed drop reason
//! ([`DropReason`]): `blocked` events (protocol, destination, reason) under a rate limit, one
//! `netstack_cap` notice per cap, and a `netstack_drops_unrecorded` notice for what the rate
//! limit left out. Identical `blocked` events are further aggregated by the audit sink.
//! Does not own the drops themselves (the stack) or the counters (`run_end`).

use super::notice;
use crate::audit::{AuditSink, BlockedEvent, EventBody};
use crate::upstream::NameTable;
use idagent_netstack::classify::{PacketMeta, Transport};
use idagent_netstack::stack::{Cap, DropReason};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// ICMP echo targets recorded with a `blocked` event (one each); beyond, only the counter.
pub const MAX_ICMP_TARGETS_LOGGED: usize = 64;
/// Refused packets (over a cap, fragments, QUIC …) written as `blocked` events per second at
/// most; the rest are counted in a `netstack_drops_unrecorded` notice.
pub const MAX_DROP_RECORDS_PER_SEC: u32 = 64;

/// The rate limit of [`Drops::blocked`]: a one-second window and what it let through.
#[derive(Debug)]
struct DropLog {
    window: Instant,
    written: u32,
    unrecorded: u64,
}

impl DropLog {
    fn new() -> Self {
        Self {
            window: Instant::now(),
            written: 0,
            unrecorded: 0,
        }
    }

    /// Whether one more record may be written now; starts a new window (and reports what the
    /// last one left out) when a second has passed.
    fn admit(&mut self, audit: &AuditSink) -> bool {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.flush(audit);
            self.window = Instant::now();
            self.written = 0;
        }
        if self.written >= MAX_DROP_RECORDS_PER_SEC {
            self.unrecorded += 1;
            return false;
        }
        self.written += 1;
        true
    }

    fn flush(&mut self, audit: &AuditSink) {
        if self.unrecorded > 0 {
            notice(
                audit,
                "netstack_drops_unrecorded",
                format!(
                    "{} refused packets were not written as blocked events (over {MAX_DROP_RECORDS_PER_SEC} a second); they are counted in run_end",
                    self.unrecorded
                ),
            );
            self.unrecorded = 0;
        }
    }
}

/// What the driver remembers about refused packets.
#[derive(Debug)]
pub(super) struct Drops {
    /// ICMP targets already logged (at most [`MAX_ICMP_TARGETS_LOGGED`]).
    icmp_logged: HashSet<IpAddr>,
    /// Per-guest stack caps already reported with a `notice`.
    caps_noticed: HashSet<Cap>,
    log: DropLog,
    /// The run's names, so a record says which name the guest meant by its destination.
    names: Option<Arc<Mutex<NameTable>>>,
}

impl Drops {
    pub(super) fn new(names: Option<Arc<Mutex<NameTable>>>) -> Self {
        Self {
            icmp_logged: HashSet::new(),
            caps_noticed: HashSet::new(),
            log: DropLog::new(),
            names,
        }
    }

    /// The name the guest resolved for `addr`, if any.
    fn name_of(&self, addr: IpAddr) -> Option<String> {
        let names = self.names.as_ref()?.lock().ok()?;
        names.name_of(addr.to_canonical()).map(str::to_owned)
    }

    /// Whether one more refused-packet record may be written now (the shared rate limit).
    pub(super) fn admit(&mut self, audit: &AuditSink) -> bool {
        self.log.admit(audit)
    }

    /// Writes what the rate limit left out of the last window (at the end of the run).
    pub(super) fn flush(&mut self, audit: &AuditSink) {
        self.log.flush(audit);
    }

    /// The record of a guest packet the stack dropped, from its typed reason. An ICMP echo to
    /// anything but the gateway (idagent originates no ICMP for the guest) is one `blocked`
    /// event per target, at most [`MAX_ICMP_TARGETS_LOGGED`]; a per-guest cap is one `notice`
    /// per cap, and each packet over it a `blocked` event (protocol, destination, cap);
    /// fragments, IPv6 extension headers and other protocols are `blocked` events with the
    /// reason. Those `blocked` events go through [`Drops::blocked`]'s rate limit, and
    /// identical ones are aggregated by the audit sink. Malformed packets and bad addresses
    /// (which the guest kernel does not send without raw sockets) stay counters:
    /// `tun_packets_dropped` in `run_end`.
    pub(super) fn record(
        &mut self,
        audit: &AuditSink,
        reason: &DropReason,
        meta: Option<&PacketMeta>,
    ) {
        match reason {
            DropReason::IcmpEchoNotGateway { dst }
                if self.icmp_logged.len() < MAX_ICMP_TARGETS_LOGGED
                    && self.icmp_logged.insert(*dst) =>
            {
                audit.emit(EventBody::Blocked(BlockedEvent {
                    what: "icmp".into(),
                    target: dst.to_string(),
                    reason: "ICMP is answered for the gateway only; nothing is sent upstream"
                        .into(),
                    flow: None,
                    name: self.name_of(*dst),
                    datagrams: None,
                    quic_dcid: None,
                    repeat: Default::default(),
                }));
            }
            DropReason::OverCap { cap, max } => {
                if self.caps_noticed.insert(*cap) {
                    notice(
                        audit,
                        "netstack_cap",
                        format!(
                            "the guest reached the {cap} cap ({max}); further packets over it are dropped (each a blocked event, rate-limited; counted in run_end)"
                        ),
                    );
                }
                let (cap, max) = (*cap, *max);
                self.blocked(audit, meta, || {
                    let what = match cap {
                        Cap::TcpFlows | Cap::TcpHalfOpen | Cap::TcpBufferBytes => {
                            "connection refused with a RST"
                        }
                        _ => "datagram dropped",
                    };
                    format!("over the {cap} cap ({max}): {what}")
                });
            }
            DropReason::Fragmented => self.blocked(audit, meta, || {
                "fragmented packet dropped: fragments are not reassembled (a datagram larger than the 65,520-byte TUN MTU is refused whole)".into()
            }),
            DropReason::Ipv6Extensions
            | DropReason::UnsupportedProtocol { .. }
            | DropReason::UnsupportedIcmp { .. } => {
                self.blocked(audit, meta, || format!("dropped: {reason}"));
            }
            _ => {}
        }
    }

    /// One `blocked` event for a refused packet, at most [`MAX_DROP_RECORDS_PER_SEC`] per
    /// second (the reason is only formatted when it is written); the packets over the rate are
    /// counted and said in one `netstack_drops_unrecorded` notice per second that had any.
    pub(super) fn blocked(
        &mut self,
        audit: &AuditSink,
        meta: Option<&PacketMeta>,
        reason: impl FnOnce() -> String,
    ) {
        if !self.log.admit(audit) {
            return;
        }
        let name = meta.and_then(|m| self.name_of(m.dst));
        let (what, target) = match meta {
            Some(m) => {
                let what = match m.transport {
                    Transport::Tcp { .. } | Transport::Other(6) => "tcp",
                    Transport::Udp | Transport::Other(17) => "udp",
                    Transport::Icmp | Transport::Other(1 | 58) => "icmp",
                    Transport::Other(_) => "ip",
                };
                let target = match m.dst_port {
                    Some(port) => SocketAddr::new(m.dst, port).to_string(),
                    None => m.dst.to_string(),
                };
                (what, target)
            }
            None => ("ip", String::new()),
        };
        audit.emit(EventBody::Blocked(BlockedEvent {
            what: what.into(),
            target,
            reason: reason(),
            flow: None,
            name,
            datagrams: None,
            quic_dcid: None,
            repeat: Default::default(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, RunEnd, RunId};

    #[tokio::test]
    async fn drop_records_are_rate_limited_and_the_rest_counted_in_a_notice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::create(&path, RunId::generate(), 1024).expect("create");
        let audit = log.sink();
        let mut drops = Drops::new(None);
        let over = 36u16;
        for port in 0..u16::try_from(MAX_DROP_RECORDS_PER_SEC).expect("u16") + over {
            let meta = PacketMeta {
                src: "10.77.0.2".parse().expect("ip"),
                dst: "192.0.2.1".parse().expect("ip"),
                src_port: Some(4000),
                dst_port: Some(1000 + port),
                transport: Transport::Tcp { syn: true },
                len: 60,
            };
            let reason = DropReason::OverCap {
                cap: Cap::TcpFlows,
                max: 4096,
            };
            drops.record(&audit, &reason, Some(&meta));
        }
        drops.flush(&audit);
        log.finish(RunEnd::default()).await.expect("finish");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let blocked = lines.iter().filter(|l| l["kind"] == "blocked");
        assert_eq!(blocked.count() as u32, MAX_DROP_RECORDS_PER_SEC);
        let notices: Vec<&str> = lines
            .iter()
            .filter(|l| l["kind"] == "notice")
            .filter_map(|l| l["what"].as_str())
            .collect();
        assert_eq!(notices, ["netstack_cap", "netstack_drops_unrecorded"]);
        let unrecorded = lines
            .iter()
            .find(|l| l["what"] == "netstack_drops_unrecorded")
            .and_then(|l| l["detail"].as_str())
            .expect("detail");
        assert!(
            unrecorded.starts_with(&format!("{over} refused")),
            "{unrecorded}"
        );
    }
}

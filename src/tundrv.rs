//! The one task that owns the guest's TUN fd.
//!
//! Milestone 1 driver: every packet the guest sends is classified (pure, in `idagent-netstack`),
//! counted and dropped — the interceptor milestone replaces the drop with the smoltcp stack.
//! Each distinct (protocol, destination, port) gets one `notice` in the audit log, up to
//! [`DEFAULT_MAX_REPORTED_DESTS`], so a reviewer sees what the guest tried to reach.
//! Reads never block the run: the task ends when told to or when the fd goes away.

use crate::audit::{AuditSink, EventBody, Notice};
use idagent_netstack::classify::{classify, Transport};
use std::collections::HashSet;
use tokio::sync::watch;

/// Distinct dropped destinations reported individually before the rest are only counted.
pub const DEFAULT_MAX_REPORTED_DESTS: usize = 256;

#[derive(Debug, Default, Clone, Copy)]
pub struct TunStats {
    pub packets: u64,
    pub bytes: u64,
    pub malformed: u64,
}

/// Runs until `stop` flips to true. Returns what was dropped.
pub async fn run_drop_driver(
    device: tun::Device,
    audit: AuditSink,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<TunStats> {
    let dev = tun::AsyncDevice::new(device)?;
    let mut buf = vec![0u8; usize::from(crate::netns::TUN_MTU) + 4];
    let mut stats = TunStats::default();
    let mut seen = HashSet::new();
    loop {
        tokio::select! {
            r = dev.recv(&mut buf) => {
                let n = match r {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                stats.packets += 1;
                stats.bytes += n as u64;
                let Some(packet) = buf.get(..n) else { continue };
                match classify(packet) {
                    Ok(meta) => {
                        let proto = match meta.transport {
                            Transport::Tcp { .. } => "tcp".to_string(),
                            Transport::Udp => "udp".to_string(),
                            Transport::Icmp => "icmp".to_string(),
                            Transport::Other(p) => format!("ip-proto-{p}"),
                        };
                        let key = (proto, meta.dst, meta.dst_port);
                        if seen.len() < DEFAULT_MAX_REPORTED_DESTS && seen.insert(key.clone()) {
                            let port = key.2.map(|p| format!(" port {p}")).unwrap_or_default();
                            audit.emit(EventBody::Notice(Notice {
                                what: "tun_drop".into(),
                                detail: format!(
                                    "{} to {}{port} dropped: no network interceptor in this build",
                                    key.0, key.1
                                ),
                            }));
                        }
                    }
                    Err(_) => stats.malformed += 1,
                }
            }
            _ = stop.changed() => break,
        }
    }
    Ok(stats)
}

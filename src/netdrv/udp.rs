//! Plain UDP (not DNS, not QUIC): one host socket per guest flow, connected to the upstream
//! the policy chose; replies go back through the stack. Bounded: at most
//! [`DEFAULT_MAX_UDP_RELAYS`] flows at once; each is logged as one `udp` event when the stack
//! expires it (idle) or the run ends.

use super::{notice, udp_event, UdpReply};
use crate::audit::AuditSink;
use idagent_netstack::stack::UdpFlowKey;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Guest UDP flows relayed at once.
pub const DEFAULT_MAX_UDP_RELAYS: usize = 256;
/// Refused flows remembered (so each is logged once).
const MAX_REFUSED_REMEMBERED: usize = 4096;

/// Datagram and byte counts of one relayed flow.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub datagrams_up: u64,
    pub datagrams_down: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

struct Relay {
    socket: Arc<UdpSocket>,
    name: Option<String>,
    up: Counts,
    down_datagrams: Arc<AtomicU64>,
    down_bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// The run's UDP relays.
#[derive(Default)]
pub(crate) struct Relays {
    relays: HashMap<UdpFlowKey, Relay>,
    refused: HashSet<UdpFlowKey>,
    cap_noticed: bool,
}

impl Relays {
    /// Whether `flow` was not refused before (so the caller logs it once).
    pub fn note_refused(&mut self, flow: UdpFlowKey) -> bool {
        if self.refused.len() >= MAX_REFUSED_REMEMBERED {
            return false;
        }
        self.refused.insert(flow)
    }

    /// Sends one guest datagram upstream, opening the flow's socket on first use.
    pub fn send(
        &mut self,
        flow: UdpFlowKey,
        name: Option<String>,
        target: SocketAddr,
        payload: Vec<u8>,
        replies: &mpsc::Sender<UdpReply>,
        audit: &AuditSink,
    ) {
        if !self.relays.contains_key(&flow) {
            if self.relays.len() >= DEFAULT_MAX_UDP_RELAYS {
                if !self.cap_noticed {
                    self.cap_noticed = true;
                    notice(audit, "udp_relay_cap", format!("more than {DEFAULT_MAX_UDP_RELAYS} UDP flows at once; further datagrams dropped"));
                }
                return;
            }
            match open(flow, target, replies) {
                Ok((socket, down_datagrams, down_bytes, task)) => {
                    self.relays.insert(
                        flow,
                        Relay {
                            socket,
                            name,
                            up: Counts::default(),
                            down_datagrams,
                            down_bytes,
                            task,
                        },
                    );
                }
                Err(e) => {
                    notice(
                        audit,
                        "udp_relay_failed",
                        format!("{} via {target}: {e}", flow.dst),
                    );
                    return;
                }
            }
        }
        if let Some(r) = self.relays.get_mut(&flow) {
            r.up.datagrams_up += 1;
            r.up.bytes_up += payload.len() as u64;
            // Non-blocking: a full socket buffer drops the datagram, as UDP may.
            let _ = r.socket.try_send(&payload);
        }
    }

    /// The stack forgot `flow` (idle): log it and close its socket.
    pub fn expire(&mut self, flow: &UdpFlowKey, audit: &AuditSink) {
        if let Some(r) = self.relays.remove(flow) {
            log(flow, r, audit);
        }
    }

    /// Run end: log and close every flow.
    pub fn finish(&mut self, audit: &AuditSink) {
        for (flow, r) in self.relays.drain() {
            log(&flow, r, audit);
        }
    }
}

fn log(flow: &UdpFlowKey, r: Relay, audit: &AuditSink) {
    r.task.abort();
    let counts = Counts {
        datagrams_down: r.down_datagrams.load(Ordering::Relaxed),
        bytes_down: r.down_bytes.load(Ordering::Relaxed),
        ..r.up
    };
    audit.emit(udp_event(flow, r.name, &counts));
}

type Opened = (
    Arc<UdpSocket>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    tokio::task::JoinHandle<()>,
);

fn open(
    flow: UdpFlowKey,
    target: SocketAddr,
    replies: &mpsc::Sender<UdpReply>,
) -> std::io::Result<Opened> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let std_socket = std::net::UdpSocket::bind(bind)?;
    std_socket.connect(target)?;
    std_socket.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(std_socket)?);
    let (datagrams, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (rs, rd, rb, tx) = (
        socket.clone(),
        datagrams.clone(),
        bytes.clone(),
        replies.clone(),
    );
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = rs.recv(&mut buf).await {
            rd.fetch_add(1, Ordering::Relaxed);
            rb.fetch_add(n as u64, Ordering::Relaxed);
            // Replies come from the address the guest dialled, whatever the map said.
            let reply = UdpReply {
                from: flow.dst,
                to: flow.src,
                payload: buf[..n].to_vec(),
            };
            if tx.send(reply).await.is_err() {
                break;
            }
        }
    });
    Ok((socket, datagrams, bytes, task))
}

//! UDP without smoltcp: guest datagrams become events, host replies become crafted packets.
//!
//! Owns the UDP flow table (for its cap and idle expiry, so the host learns when to drop its own
//! upstream socket), the bounded queue of undelivered datagrams, and `send_udp` / `reject_udp`.
//! Does not own DNS or any upstream socket: that is the host's.

use std::collections::BTreeMap;

use core::net::SocketAddr;

use smoltcp::time::{Duration, Instant};

use super::craft::{self, CraftError};
use super::ingress::{self, Cap, DropReason, Ingress};
use super::{Stack, StackEvent};

/// A guest UDP flow: the guest's address and the address it sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UdpFlowKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// Why [`Stack::send_udp`] sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendUdpError {
    #[error("build udp datagram: {0}")]
    Craft(#[from] CraftError),
    #[error("transmit queue full")]
    TxQueueFull,
}

/// Why [`Stack::reject_udp`] sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectUdpError {
    #[error("packet to reject is not a valid guest udp datagram")]
    NotUdp,
    #[error("packet to reject is invalid: {0}")]
    Invalid(DropReason),
    #[error("build icmp port unreachable: {0}")]
    Craft(#[from] CraftError),
    #[error("transmit queue full")]
    TxQueueFull,
}

#[derive(Debug, Default)]
pub(crate) struct UdpTable {
    /// Last datagram seen in either direction, per flow.
    flows: BTreeMap<UdpFlowKey, Instant>,
    queued_datagrams: usize,
    queued_bytes: usize,
}

impl UdpTable {
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
    /// A queued datagram was taken by the host.
    pub(crate) fn dequeued(&mut self, bytes: usize) {
        self.queued_datagrams -= 1;
        self.queued_bytes -= bytes;
    }
}

impl Stack {
    pub(super) fn receive_udp(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let config = &self.config;
        let flow = UdpFlowKey { src, dst };
        if self.udp.queued_datagrams >= config.max_udp_queue_datagrams {
            return Err(DropReason::OverCap {
                cap: Cap::UdpQueueDatagrams,
                max: config.max_udp_queue_datagrams,
            });
        }
        if self.udp.queued_bytes.saturating_add(payload.len()) > config.max_udp_queue_bytes {
            return Err(DropReason::OverCap {
                cap: Cap::UdpQueueBytes,
                max: config.max_udp_queue_bytes,
            });
        }
        if !self.udp.flows.contains_key(&flow) && self.udp.flows.len() >= config.max_udp_flows {
            // A full table gives up its oldest lookup first: a DNS flow is finished once the
            // host has answered, and a resolver asks again from the same or a new port.
            let oldest_dns = self
                .udp
                .flows
                .iter()
                .filter(|(k, _)| k.dst.port() == 53)
                .min_by_key(|(_, last)| **last)
                .map(|(k, _)| *k);
            if let Some(old) = oldest_dns {
                self.udp.flows.remove(&old);
                self.stats.udp_flows_expired += 1;
                self.events
                    .push_back(StackEvent::UdpFlowExpired { flow: old });
            }
        }
        if !self.udp.flows.contains_key(&flow) && self.udp.flows.len() >= config.max_udp_flows {
            return Err(DropReason::OverCap {
                cap: Cap::UdpFlows,
                max: config.max_udp_flows,
            });
        }
        self.udp.flows.insert(flow, now);
        self.udp.queued_datagrams += 1;
        self.udp.queued_bytes += payload.len();
        self.stats.udp_datagrams_in += 1;
        self.events.push_back(StackEvent::UdpDatagram {
            flow,
            payload: payload.to_vec(),
        });
        Ok(())
    }

    /// Forgets flows idle for [`StackConfig::udp_idle_timeout`](super::StackConfig) (DNS
    /// flows: `dns_idle_timeout`).
    pub(super) fn expire_udp(&mut self, now: Instant) {
        let (general, dns) = (self.config.udp_idle_timeout, self.config.dns_idle_timeout);
        let events = &mut self.events;
        let stats = &mut self.stats;
        self.udp.flows.retain(|flow, last| {
            let keep = now < *last + idle_timeout(flow, general, dns);
            if !keep {
                stats.udp_flows_expired += 1;
                events.push_back(StackEvent::UdpFlowExpired { flow: *flow });
            }
            keep
        });
    }

    /// The earliest UDP idle expiry.
    pub(super) fn udp_deadline(&self) -> Option<Instant> {
        let (general, dns) = (self.config.udp_idle_timeout, self.config.dns_idle_timeout);
        self.udp
            .flows
            .iter()
            .map(|(flow, last)| *last + idle_timeout(flow, general, dns))
            .min()
    }

    /// Sends one UDP datagram `from` (any address, typically the one the guest dialled) `to` the
    /// guest. The packet must fit the MTU: the host truncates DNS answers (TC bit) rather than
    /// fragmenting. Refreshes the matching flow's idle timer (as of the last `receive`/`poll`).
    pub fn send_udp(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Result<(), SendUdpError> {
        let packet = craft::udp_datagram(from, to, payload, self.config.mtu)?;
        self.tx
            .push(packet)
            .map_err(|_| SendUdpError::TxQueueFull)?;
        self.stats.udp_datagrams_out += 1;
        // The reply's flow key is the guest's view: guest address first.
        if let Some(last) = self.udp.flows.get_mut(&UdpFlowKey { src: to, dst: from }) {
            // The stack has no clock: the time of the latest receive/poll stands for "now".
            *last = self.now;
        }
        Ok(())
    }

    /// Answers a guest UDP datagram (as given to [`Stack::receive`]) with an ICMP or ICMPv6 port
    /// unreachable quoting it, from the address the guest tried to reach.
    pub fn reject_udp(&mut self, original_packet: &[u8]) -> Result<(), RejectUdpError> {
        let (src, dst) = match ingress::parse(original_packet, &self.net) {
            Ok(Ingress::Udp { src, dst, .. }) => (src, dst),
            Ok(_) => return Err(RejectUdpError::NotUdp),
            Err(reason) => return Err(RejectUdpError::Invalid(reason)),
        };
        let packet = craft::icmp_port_unreachable(original_packet, src.ip(), dst.ip())?;
        self.tx
            .push(packet)
            .map_err(|_| RejectUdpError::TxQueueFull)?;
        self.stats.icmp_unreachable_sent += 1;
        Ok(())
    }
}

fn idle_timeout(flow: &UdpFlowKey, general: Duration, dns: Duration) -> Duration {
    if flow.dst.port() == 53 {
        dns.min(general)
    } else {
        general
    }
}

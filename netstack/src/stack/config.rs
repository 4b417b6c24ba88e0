//! Configuration of a [`Stack`](super::Stack): the gateway addresses and every per-guest cap.
//!
//! Owns the named defaults and their validation. Does not own enforcement: the caps are checked
//! where the resource is created (`stack::tcp` for flows and buffers, `stack::udp` for datagrams,
//! `stack::device` for the transmit queue).

use core::net::{Ipv4Addr, Ipv6Addr};
use smoltcp::time::Duration;
use smoltcp::wire::{Ipv4Cidr, Ipv6Cidr};

/// Most TCP flows (sockets, half-open ones included) alive at once per guest.
pub const DEFAULT_MAX_FLOWS: usize = 4096;
/// Most TCP flows whose handshake has not completed yet (smoltcp `SYN-RECEIVED`).
pub const DEFAULT_MAX_HALF_OPEN: usize = 512;
/// How long a flow may stay half-open before it is reset and removed.
pub const DEFAULT_HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Receive buffer of one TCP flow; its size also sets the window scale (256 KiB → shift 3).
pub const DEFAULT_TCP_RX_BUFFER: usize = 256 * 1024;
/// Transmit buffer of one TCP flow.
pub const DEFAULT_TCP_TX_BUFFER: usize = 256 * 1024;
/// Total TCP buffer bytes reserved across all flows of one guest. With the default buffer sizes
/// this admits 1024 flows, fewer than [`DEFAULT_MAX_FLOWS`]: whichever cap is hit first wins.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 512 * 1024 * 1024;
/// Most UDP flows (guest source, destination pairs) tracked at once.
pub const DEFAULT_MAX_UDP_FLOWS: usize = 1024;
/// A UDP flow with no datagram in either direction for this long is forgotten.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The idle timeout of a UDP flow to port 53. Resolvers open a new socket (a new flow) per
/// lookup and the host answers at once: held for the general timeout, a few hundred lookups a
/// minute would fill the flow table and stop name resolution.
pub const DEFAULT_DNS_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most guest UDP datagrams queued as events and not yet taken by the host.
pub const DEFAULT_MAX_UDP_QUEUE_DATAGRAMS: usize = 1024;
/// Most guest UDP payload bytes queued as events and not yet taken by the host.
pub const DEFAULT_MAX_UDP_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of outbound packets waiting for the driver; smoltcp stops emitting when full.
pub const DEFAULT_MAX_TX_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Default MTU; equal to the TUN MTU the host configures (`idagent::netns::TUN_MTU`).
pub const DEFAULT_MTU: usize = 65_520;

/// Everything a [`Stack`](super::Stack) needs to know up front. Start from
/// [`StackConfig::default`] and override fields.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The stack's own IPv4 address and the guest's on-link prefix (default `10.77.0.1/24`).
    /// Guest packets must come from another address of this prefix.
    pub gateway_v4: Ipv4Cidr,
    /// The stack's own IPv6 address and the guest's on-link prefix (default `fd00:77::1/64`).
    pub gateway_v6: Ipv6Cidr,
    /// MTU of the link to the guest; bounds outbound packets, including crafted UDP replies.
    pub mtu: usize,
    /// See [`DEFAULT_MAX_FLOWS`].
    pub max_flows: usize,
    /// See [`DEFAULT_MAX_HALF_OPEN`].
    pub max_half_open: usize,
    /// See [`DEFAULT_HALF_OPEN_TIMEOUT`].
    pub half_open_timeout: Duration,
    /// See [`DEFAULT_TCP_RX_BUFFER`].
    pub tcp_rx_buffer: usize,
    /// See [`DEFAULT_TCP_TX_BUFFER`].
    pub tcp_tx_buffer: usize,
    /// See [`DEFAULT_MAX_BUFFER_BYTES`].
    pub max_buffer_bytes: usize,
    /// smoltcp's socket timeout: reset a flow whose guest sent nothing for this long. Off by
    /// default because smoltcp 0.12 applies it to idle flows too (its docs say otherwise), so it
    /// is only safe together with `tcp_keep_alive`. Flows of a silent guest are bounded by the
    /// flow caps and end with the run.
    pub tcp_timeout: Option<Duration>,
    /// smoltcp keep-alive probe interval. Off by default: smoltcp 0.12's probe carries one
    /// garbage byte at `SND.NXT - 1`, and when its own FIN is unacknowledged that byte lands at a
    /// valid sequence number and is delivered to the guest as data (found by `tests/netsim.rs`).
    pub tcp_keep_alive: Option<Duration>,
    /// See [`DEFAULT_MAX_UDP_FLOWS`].
    pub max_udp_flows: usize,
    /// See [`DEFAULT_UDP_IDLE_TIMEOUT`].
    pub udp_idle_timeout: Duration,
    /// See [`DEFAULT_DNS_IDLE_TIMEOUT`].
    pub dns_idle_timeout: Duration,
    /// See [`DEFAULT_MAX_UDP_QUEUE_DATAGRAMS`].
    pub max_udp_queue_datagrams: usize,
    /// See [`DEFAULT_MAX_UDP_QUEUE_BYTES`].
    pub max_udp_queue_bytes: usize,
    /// See [`DEFAULT_MAX_TX_QUEUE_BYTES`].
    pub max_tx_queue_bytes: usize,
    /// Seed for smoltcp's initial sequence numbers. The driver should pass a random value; tests
    /// pass a constant to stay deterministic.
    pub random_seed: u64,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            gateway_v4: Ipv4Cidr::new(Ipv4Addr::new(10, 77, 0, 1), 24),
            gateway_v6: Ipv6Cidr::new(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1), 64),
            mtu: DEFAULT_MTU,
            max_flows: DEFAULT_MAX_FLOWS,
            max_half_open: DEFAULT_MAX_HALF_OPEN,
            half_open_timeout: DEFAULT_HALF_OPEN_TIMEOUT,
            tcp_rx_buffer: DEFAULT_TCP_RX_BUFFER,
            tcp_tx_buffer: DEFAULT_TCP_TX_BUFFER,
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
            tcp_timeout: None,
            tcp_keep_alive: None,
            max_udp_flows: DEFAULT_MAX_UDP_FLOWS,
            udp_idle_timeout: DEFAULT_UDP_IDLE_TIMEOUT,
            dns_idle_timeout: DEFAULT_DNS_IDLE_TIMEOUT,
            max_udp_queue_datagrams: DEFAULT_MAX_UDP_QUEUE_DATAGRAMS,
            max_udp_queue_bytes: DEFAULT_MAX_UDP_QUEUE_BYTES,
            max_tx_queue_bytes: DEFAULT_MAX_TX_QUEUE_BYTES,
            random_seed: 0,
        }
    }
}

/// Why a [`StackConfig`] was refused by [`Stack::new`](super::Stack::new).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("mtu {mtu} is outside 1280..=65535")]
    Mtu { mtu: usize },
    #[error("tcp buffer size {bytes} is outside 1..=1073741824")]
    TcpBuffer { bytes: usize },
    #[error("gateway prefix /{prefix_len} leaves no room for a guest address")]
    GatewayPrefix { prefix_len: u8 },
}

impl StackConfig {
    /// Checks the values smoltcp or the caps cannot work with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // 1280 is the IPv6 minimum MTU; above 65535 an IPv4 total length cannot describe a packet.
        if !(1280..=65535).contains(&self.mtu) {
            return Err(ConfigError::Mtu { mtu: self.mtu });
        }
        // smoltcp's window scale tops out at 14 (1 GiB); an empty buffer cannot carry a stream.
        for bytes in [self.tcp_rx_buffer, self.tcp_tx_buffer] {
            if bytes == 0 || bytes > 1 << 30 {
                return Err(ConfigError::TcpBuffer { bytes });
            }
        }
        let v4 = self.gateway_v4.prefix_len();
        if v4 > 30 {
            return Err(ConfigError::GatewayPrefix { prefix_len: v4 });
        }
        let v6 = self.gateway_v6.prefix_len();
        if v6 > 126 {
            return Err(ConfigError::GatewayPrefix { prefix_len: v6 });
        }
        Ok(())
    }

    /// Buffer bytes one TCP flow reserves against [`StackConfig::max_buffer_bytes`].
    pub(crate) fn flow_buffer_bytes(&self) -> usize {
        self.tcp_rx_buffer.saturating_add(self.tcp_tx_buffer)
    }
}

//! TCP flows: admission of guest SYNs against the caps, the flow table, turning smoltcp socket
//! states into [`StackEvent`]s, and the host-side byte-stream API.
//!
//! Owns every TCP socket's lifetime: created for an admitted SYN, removed when the handshake
//! fails or times out, when the flow reaches TIME-WAIT or CLOSED, or right after the RST of an
//! abort has left. Does not own the TCP state machine (smoltcp) or packet triage (`ingress`).

use std::collections::{BTreeMap, HashMap};

use core::net::SocketAddr;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp as smol;
use smoltcp::time::Instant;
use smoltcp::wire::IpListenEndpoint;

use super::ingress::{Cap, DropReason, TcpSyn};
use super::{craft, Stack, StackEvent, StackStats, TcpState};

/// One TCP flow of one guest. Ids are never reused within a [`Stack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

impl core::fmt::Display for FlowId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "tcp#{}", self.0)
    }
}

/// How a TCP flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpCloseReason {
    /// Both sides sent FIN and it was acknowledged.
    Graceful,
    /// The guest sent RST, or (if configured) it stayed silent for
    /// [`StackConfig::tcp_timeout`]; smoltcp does not tell the two apart.
    ///
    /// [`StackConfig::tcp_timeout`]: super::StackConfig::tcp_timeout
    Reset,
    /// The host called [`Stack::tcp_abort`].
    Aborted,
}

/// Why a host-side TCP call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("unknown tcp flow {id}")]
    UnknownFlow { id: FlowId },
    #[error("tcp flow {id} is closed for this operation")]
    Closed { id: FlowId },
    #[error("tcp flow {id}: the guest finished sending")]
    Finished { id: FlowId },
}

/// Why [`Stack::refuse_tcp_syn`] sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefuseSynError {
    #[error("packet to refuse is not a guest tcp syn")]
    NotSyn,
    #[error("packet to refuse is invalid: {0}")]
    Invalid(DropReason),
    #[error("transmit queue full")]
    TxQueueFull,
}

#[derive(Debug)]
pub(crate) struct Flow {
    handle: SocketHandle,
    src: SocketAddr,
    dst: SocketAddr,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// Listening or SYN-RECEIVED; no event yet.
    HalfOpen { deadline: Instant },
    /// `TcpOpened` was emitted; `TcpClosed` is still owed.
    Open(OpenFlow),
    /// `TcpClosed` was emitted (or never owed); the socket waits for its RST to leave.
    Dying,
}

#[derive(Debug)]
struct OpenFlow {
    readable_armed: bool,
    writable_wanted: bool,
    /// LAST-ACK or CLOSING was seen, so a later CLOSED is the end of a graceful close.
    fin_exchanged: bool,
}

/// The flows of one stack and the cap gauges derived from them.
#[derive(Debug, Default)]
pub(crate) struct FlowTable {
    flows: BTreeMap<FlowId, Flow>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), FlowId>,
    next_id: u64,
    half_open: usize,
    buffer_bytes: usize,
}

impl FlowTable {
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }
    pub(crate) fn half_open(&self) -> usize {
        self.half_open
    }
    pub(crate) fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }
}

#[derive(PartialEq, Eq)]
enum Keep {
    Yes,
    No,
}

/// A peer FIN has been received (state only; smoltcp keeps buffered data readable).
fn peer_finished(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::CloseWait | TcpState::LastAck | TcpState::Closing | TcpState::TimeWait
    )
}

impl Stack {
    /// Whether `packet` is a guest TCP SYN that passes triage (checksums, addresses): the
    /// host decides only what the stack would otherwise take.
    pub fn would_accept_syn(&self, packet: &[u8]) -> bool {
        matches!(
            super::ingress::parse(packet, &self.net),
            Ok(super::ingress::Ingress::TcpSyn(_))
        )
    }

    /// Refuses a guest connection attempt before any handshake: answers the SYN (a packet the
    /// caller has not given to [`Stack::receive`]) with a RST from the address the guest
    /// dialled, and creates no state. The host's policy decides; the stack only speaks TCP.
    pub fn refuse_tcp_syn(&mut self, packet: &[u8]) -> Result<(), RefuseSynError> {
        let syn = match super::ingress::parse(packet, &self.net) {
            Ok(super::ingress::Ingress::TcpSyn(syn)) => syn,
            Ok(_) => return Err(RefuseSynError::NotSyn),
            Err(reason) => return Err(RefuseSynError::Invalid(reason)),
        };
        match self.tx.push(craft::tcp_rst_for_syn(&syn)) {
            Ok(()) => {
                self.stats.rst_sent += 1;
                self.stats.syn_refused += 1;
                Ok(())
            }
            Err(_) => {
                self.stats.dropped_tx_full += 1;
                Err(RefuseSynError::TxQueueFull)
            }
        }
    }

    /// Makes sure a socket will take `syn`: keeps an existing live flow of the same 4-tuple
    /// (smoltcp answers retransmitted SYNs), or creates a listener if every cap allows.
    pub(super) fn admit_syn(&mut self, syn: &TcpSyn, now: Instant) -> Result<(), DropReason> {
        let tuple = (syn.src, syn.dst);
        if self.tcp.by_tuple.contains_key(&tuple) {
            // Settle the old flow first, so that a dead one emits its TcpClosed before the
            // guest reuses the 4-tuple.
            self.update_flows(now);
            match self.tcp.by_tuple.get(&tuple).copied() {
                Some(id) if matches!(self.tcp.flows.get(&id), Some(f) if matches!(f.stage, Stage::Dying)) => {
                    self.remove_flow(id)
                }
                Some(_) => return Ok(()),
                None => {}
            }
        }
        let config = &self.config;
        let flow_bytes = config.flow_buffer_bytes();
        let over = if self.tcp.flows.len() >= config.max_flows {
            Some((Cap::TcpFlows, config.max_flows))
        } else if self.tcp.half_open >= config.max_half_open {
            Some((Cap::TcpHalfOpen, config.max_half_open))
        } else if self.tcp.buffer_bytes.saturating_add(flow_bytes) > config.max_buffer_bytes {
            Some((Cap::TcpBufferBytes, config.max_buffer_bytes))
        } else {
            None
        };
        if let Some((cap, max)) = over {
            match self.tx.push(craft::tcp_rst_for_syn(syn)) {
                Ok(()) => self.stats.rst_sent += 1,
                Err(_) => self.stats.dropped_tx_full += 1,
            }
            return Err(DropReason::OverCap { cap, max });
        }

        let mut socket = smol::Socket::new(
            smol::SocketBuffer::new(vec![0; config.tcp_rx_buffer]),
            smol::SocketBuffer::new(vec![0; config.tcp_tx_buffer]),
        );
        // The host re-originates every flow: coalescing small writes would only add latency.
        socket.set_nagle_enabled(false);
        socket.set_congestion_control(smol::CongestionControl::Cubic);
        socket.set_timeout(config.tcp_timeout);
        socket.set_keep_alive(config.tcp_keep_alive);
        let endpoint = IpListenEndpoint {
            addr: Some(syn.dst.ip().into()),
            port: syn.dst.port(),
        };
        // ingress::parse refuses port 0, the only value listen() rejects.
        socket.listen(endpoint).map_err(|_| DropReason::Malformed {
            reason: "tcp port 0",
        })?;
        let deadline = now + config.half_open_timeout;
        let handle = self.sockets.add(socket);
        let id = FlowId(self.tcp.next_id);
        self.tcp.next_id += 1;
        self.tcp.flows.insert(
            id,
            Flow {
                handle,
                src: syn.src,
                dst: syn.dst,
                stage: Stage::HalfOpen { deadline },
            },
        );
        self.tcp.by_tuple.insert(tuple, id);
        self.tcp.half_open += 1;
        self.tcp.buffer_bytes += flow_bytes;
        Ok(())
    }

    /// Removes the half-open flow of this 4-tuple if its socket is (back) in LISTEN: smoltcp
    /// dropped its SYN, or a guest RST sent it back there. A stray listener would otherwise take
    /// the next SYN of another 4-tuple to the same destination.
    pub(super) fn reap_listener(&mut self, src: SocketAddr, dst: SocketAddr) {
        let Some(&id) = self.tcp.by_tuple.get(&(src, dst)) else {
            return;
        };
        let Some(flow) = self.tcp.flows.get(&id) else {
            return;
        };
        if matches!(flow.stage, Stage::HalfOpen { .. })
            && self.sockets.get::<smol::Socket>(flow.handle).state() == TcpState::Listen
        {
            self.stats.tcp_handshakes_failed += 1;
            self.remove_flow(id);
        }
    }

    fn remove_flow(&mut self, id: FlowId) {
        let Some(flow) = self.tcp.flows.remove(&id) else {
            return;
        };
        self.sockets.remove(flow.handle);
        if self.tcp.by_tuple.get(&(flow.src, flow.dst)) == Some(&id) {
            self.tcp.by_tuple.remove(&(flow.src, flow.dst));
        }
        if matches!(flow.stage, Stage::HalfOpen { .. }) {
            self.tcp.half_open -= 1;
        }
        self.tcp.buffer_bytes -= self.config.flow_buffer_bytes();
    }

    /// Turns socket states into events and removes finished sockets.
    pub(super) fn update_flows(&mut self, now: Instant) {
        let mut dead = Vec::new();
        for (&id, flow) in self.tcp.flows.iter_mut() {
            let socket = self.sockets.get_mut::<smol::Socket>(flow.handle);
            let was_half_open = matches!(flow.stage, Stage::HalfOpen { .. });
            let keep = step_flow(id, flow, socket, now, &mut self.events, &mut self.stats);
            if was_half_open && !matches!(flow.stage, Stage::HalfOpen { .. }) {
                self.tcp.half_open -= 1;
            }
            if keep == Keep::No {
                dead.push(id);
            }
        }
        for id in dead {
            self.remove_flow(id);
        }
    }

    /// The earliest half-open deadline.
    pub(super) fn tcp_deadline(&self) -> Option<Instant> {
        self.tcp
            .flows
            .values()
            .filter_map(|flow| match flow.stage {
                Stage::HalfOpen { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    fn open_flow(
        &mut self,
        id: FlowId,
    ) -> Result<(&mut OpenFlow, &mut smol::Socket<'static>), FlowError> {
        let flow = self
            .tcp
            .flows
            .get_mut(&id)
            .ok_or(FlowError::UnknownFlow { id })?;
        let Stage::Open(open) = &mut flow.stage else {
            return Err(FlowError::Closed { id });
        };
        Ok((open, self.sockets.get_mut::<smol::Socket>(flow.handle)))
    }

    /// Reads what the guest sent. `Ok(0)` means nothing yet; [`FlowError::Finished`] means the
    /// guest closed its side and everything was read. Call [`Stack::poll`] afterwards so the
    /// freed window is advertised.
    pub fn tcp_recv(&mut self, id: FlowId, buf: &mut [u8]) -> Result<usize, FlowError> {
        let (open, socket) = self.open_flow(id)?;
        match socket.recv_slice(buf) {
            Ok(n) => {
                if socket.recv_queue() == 0 {
                    open.readable_armed = true;
                }
                Ok(n)
            }
            Err(smol::RecvError::Finished) => Err(FlowError::Finished { id }),
            Err(smol::RecvError::InvalidState) => Err(FlowError::Closed { id }),
        }
    }

    /// Queues bytes for the guest; a short count is back-pressure, followed by
    /// [`StackEvent::TcpWritable`] once there is room. Call [`Stack::poll`] to send.
    pub fn tcp_send(&mut self, id: FlowId, data: &[u8]) -> Result<usize, FlowError> {
        let (open, socket) = self.open_flow(id)?;
        let written = socket
            .send_slice(data)
            .map_err(|smol::SendError::InvalidState| FlowError::Closed { id })?;
        if written < data.len() {
            open.writable_wanted = true;
        }
        Ok(written)
    }

    /// Bytes [`Stack::tcp_send`] would accept now.
    pub fn tcp_send_capacity(&mut self, id: FlowId) -> Result<usize, FlowError> {
        let (_, socket) = self.open_flow(id)?;
        if !socket.may_send() {
            return Ok(0);
        }
        Ok(socket.send_capacity() - socket.send_queue())
    }

    /// Sends FIN once the queued bytes are out; the guest may keep sending until it closes too.
    pub fn tcp_close(&mut self, id: FlowId) -> Result<(), FlowError> {
        let (_, socket) = self.open_flow(id)?;
        socket.close();
        Ok(())
    }

    /// Resets the flow (RST on the next [`Stack::poll`]) and emits its `TcpClosed` right away.
    pub fn tcp_abort(&mut self, id: FlowId) -> Result<(), FlowError> {
        let (_, socket) = self.open_flow(id)?;
        socket.abort();
        if let Some(flow) = self.tcp.flows.get_mut(&id) {
            flow.stage = Stage::Dying;
        }
        self.stats.tcp_closed += 1;
        self.events.push_back(StackEvent::TcpClosed {
            id,
            reason: TcpCloseReason::Aborted,
        });
        Ok(())
    }

    /// The smoltcp state of a flow, while its socket exists.
    pub fn tcp_state(&self, id: FlowId) -> Option<TcpState> {
        let flow = self.tcp.flows.get(&id)?;
        Some(self.sockets.get::<smol::Socket>(flow.handle).state())
    }

    /// The guest's source and the original destination of a flow.
    pub fn tcp_endpoints(&self, id: FlowId) -> Option<(SocketAddr, SocketAddr)> {
        let flow = self.tcp.flows.get(&id)?;
        Some((flow.src, flow.dst))
    }
}

/// One flow's transition for this poll.
fn step_flow(
    id: FlowId,
    flow: &mut Flow,
    socket: &mut smol::Socket<'static>,
    now: Instant,
    events: &mut std::collections::VecDeque<StackEvent>,
    stats: &mut StackStats,
) -> Keep {
    let state = socket.state();
    if let Stage::HalfOpen { deadline } = flow.stage {
        match state {
            TcpState::Listen | TcpState::Closed => {
                stats.tcp_handshakes_failed += 1;
                flow.stage = Stage::Dying;
            }
            TcpState::SynReceived | TcpState::SynSent if now >= deadline => {
                stats.tcp_half_open_timeouts += 1;
                socket.abort();
                flow.stage = Stage::Dying;
                return Keep::Yes;
            }
            TcpState::SynReceived | TcpState::SynSent => return Keep::Yes,
            _ => {
                stats.tcp_opened += 1;
                events.push_back(StackEvent::TcpOpened {
                    id,
                    src: flow.src,
                    dst: flow.dst,
                });
                flow.stage = Stage::Open(OpenFlow {
                    readable_armed: true,
                    writable_wanted: false,
                    fin_exchanged: false,
                });
            }
        }
    }
    let open = match &mut flow.stage {
        Stage::Open(open) => open,
        // Keep a dying socket only while its RST is still to be sent.
        _ if state == TcpState::Closed && socket.remote_endpoint().is_some() => return Keep::Yes,
        _ => return Keep::No,
    };
    if open.readable_armed && (socket.recv_queue() > 0 || peer_finished(state)) {
        open.readable_armed = false;
        events.push_back(StackEvent::TcpReadable { id });
    }
    let free = socket.send_capacity() - socket.send_queue();
    if open.writable_wanted && socket.may_send() && free >= socket.send_capacity() / 4 {
        open.writable_wanted = false;
        events.push_back(StackEvent::TcpWritable { id });
    }
    let reason = match state {
        TcpState::LastAck | TcpState::Closing => {
            open.fin_exchanged = true;
            return Keep::Yes;
        }
        TcpState::TimeWait => TcpCloseReason::Graceful,
        TcpState::Closed if open.fin_exchanged => TcpCloseReason::Graceful,
        TcpState::Closed | TcpState::Listen => TcpCloseReason::Reset,
        _ => return Keep::Yes,
    };
    stats.tcp_closed += 1;
    events.push_back(StackEvent::TcpClosed { id, reason });
    flow.stage = Stage::Dying;
    if state == TcpState::Closed && socket.remote_endpoint().is_some() {
        Keep::Yes
    } else {
        Keep::No
    }
}

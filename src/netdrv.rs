//! The one task that owns the guest's TUN fd and the userspace stack.
//!
//! Owns: the loop `select!`ing over TUN readable, the stack's next timer, UDP replies and the
//! flows' wake-ups; moving bytes between smoltcp sockets and the gateway's [`FlowStream`]s
//! (bounded both ways: back-pressure, never unbounded queues); the pcapng copy of every
//! packet; DNS (UDP and TCP, any resolver address), QUIC refusal (UDP/443 gets ICMP port
//! unreachable so clients fall back to TCP), and other UDP relayed per flow under the same
//! upstream policy as TCP; the records of packets the stack refused (`drops.rs`). Does not
//! own: protocol logic (the sans-IO `idagent-netstack`), HTTP/TLS (the gateway).

use crate::audit::{AuditSink, BlockedEvent, DnsEvent, EventBody, Notice, UdpEvent};
use crate::dns::DnsService;
use crate::gateway::Gateway;
use crate::pcap::{Direction, PcapSender};
use crate::upstream::{evaluate, DialRequest, Verdict};
use bytes::Bytes;
use idagent_netstack::classify::{classify, Transport};
use idagent_netstack::stack::{FlowError, FlowId, Instant as StackInstant, UdpFlowKey};
use idagent_netstack::{Stack, StackConfig, StackEvent};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

mod drops;
pub mod flow;
mod quic;
mod udp;

pub use drops::{MAX_DROP_RECORDS_PER_SEC, MAX_ICMP_TARGETS_LOGGED};
pub use quic::{MAX_QUIC_CONNECTIONS, QUIC_IDLE};

use flow::{DriverEnds, FlowOut, ReadyList};

/// Longest the loop sleeps without a timer, so counters and idle checks stay fresh.
const MAX_IDLE: Duration = Duration::from_millis(200);
/// Service rounds per wake-up before the loop transmits and waits again.
const SERVICE_ROUNDS: usize = 4;
/// UDP replies (DNS answers, relayed datagrams) queued toward the guest.
const UDP_REPLY_QUEUE: usize = 1024;
/// Bytes read from a smoltcp socket per chunk handed to the gateway.
const READ_CHUNK: usize = flow::MAX_CHUNK;
/// UDP flows (guest address, destination) whose policy decision is remembered, so a datagram
/// stream costs one `decision` event, not one per datagram. When full it is cleared.
pub const MAX_UDP_DECISIONS: usize = 4096;
/// What the driver counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct DriverStats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped: u64,
    pub tcp_flows: u64,
    pub dns_queries: u64,
    pub quic_refused: u64,
}

/// A UDP datagram to put into the stack, toward the guest.
#[derive(Debug)]
pub(crate) struct UdpReply {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

struct FlowSlot {
    ends: DriverEnds,
    /// The unsent tail of a chunk from the gateway.
    pending_out: Option<Bytes>,
    readable: bool,
    closing: bool,
}

/// Everything the driver needs besides the TUN.
pub struct DriverParts {
    pub gateway: Arc<Gateway>,
    pub dns: Arc<DnsService>,
    pub pcap: Option<PcapSender>,
    pub audit: AuditSink,
}

impl std::fmt::Debug for DriverParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverParts").finish_non_exhaustive()
    }
}

/// Starts the driver on a thread of its own (a current-thread runtime on tokio's blocking
/// pool) and returns its handle. The gateway's flow tasks and DNS answers go to the calling
/// runtime. Why a thread: on the multi-thread runtime, a flow task that wakes the driver puts
/// it in its own worker's LIFO slot, so the stack and the relay ran on one core and the
/// other sat idle (measured: 43 % vs 6 % of samples, 32 % idle, during a bulk download).
pub fn spawn(
    device: tun::Device,
    parts: DriverParts,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<DriverStats>> {
    let main = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(run(device, parts, main, stop))
    })
}

/// Runs until `stop` flips to true or the TUN goes away. Flow tasks go to `main`; UDP relay
/// sockets stay on the runtime that runs this future.
pub async fn run(
    device: tun::Device,
    parts: DriverParts,
    main: tokio::runtime::Handle,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<DriverStats> {
    let dev = tun::AsyncDevice::new(device)?;
    let epoch = std::time::Instant::now();
    let now = || StackInstant::from_micros(epoch.elapsed().as_micros() as i64);
    let config = StackConfig {
        random_seed: random_seed(),
        ..StackConfig::default()
    };
    let mut stack = Stack::new(config, now()).map_err(std::io::Error::other)?;
    let names = parts.gateway.names.clone();
    let mut drv = Driver {
        parts,
        main,
        flows: HashMap::new(),
        ready: ReadyList::new(),
        dirty: Vec::new(),
        udp: udp::Relays::default(),
        stats: DriverStats::default(),
        udp_decisions: HashMap::new(),
        drops: drops::Drops::new(Some(names)),
        quic: quic::QuicRefusals::default(),
        budget_noticed: false,
        chunk: vec![0u8; READ_CHUNK],
    };
    let (udp_tx, mut udp_rx) = mpsc::channel::<UdpReply>(UDP_REPLY_QUEUE);
    let mut buf = vec![0u8; usize::from(crate::netns::TUN_MTU) + 64];
    let mut last_sweep = std::time::Instant::now();
    loop {
        while let Some(packet) = stack.transmit() {
            drv.stats.packets_out += 1;
            drv.stats.bytes_out += packet.len() as u64;
            let ts = SystemTime::now();
            if dev.send(&packet).await.is_err() {
                return Ok(drv.stats);
            }
            // After the write, the capture takes the buffer itself: no copy on the bulk path.
            if let Some(p) = &drv.parts.pcap {
                p.packet_owned(Direction::ToGuest, ts, packet);
            }
        }
        let current = now();
        let wait = stack
            .poll_at(current)
            .map(|at| {
                if at > current {
                    Duration::from_micros((at - current).total_micros())
                } else {
                    Duration::ZERO
                }
            })
            .unwrap_or(MAX_IDLE)
            .min(MAX_IDLE);
        let ready = drv.ready.clone();
        tokio::select! {
            r = dev.recv(&mut buf) => {
                let n = match r {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if let Some(packet) = buf.get(..n) {
                    drv.ingress(&mut stack, packet, now());
                }
            }
            Some(reply) = udp_rx.recv() => {
                if stack.send_udp(reply.from, reply.to, &reply.payload).is_err() {
                    drv.stats.dropped += 1;
                }
            }
            _ = ready.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        if last_sweep.elapsed() >= MAX_IDLE {
            // Safety net: every wake rule is event-driven, but sweeping all flows this rarely
            // costs nothing, and no flow stays stuck on a lost wake-up for longer than this.
            last_sweep = std::time::Instant::now();
            drv.quic.expire(&drv.parts.audit, last_sweep);
            drv.dirty.extend(drv.flows.keys().copied());
            if drv.ready.take_pushed_back() && !drv.budget_noticed {
                drv.budget_noticed = true;
                notice(
                    &drv.parts.audit,
                    "flow_queue_budget",
                    format!(
                        "the guest's flows queued {} bytes, the budget shared by all flows ({}); flows are held to {} bytes each way until queues drain",
                        drv.ready.queued_bytes(),
                        flow::MAX_QUEUED_BYTES,
                        flow::FLOW_QUEUE_FLOOR
                    ),
                );
            }
        }
        // Events raised by servicing (a send that frees the window, a close) are handled in
        // the same turn; a bounded number of rounds so transmission is never starved.
        for _ in 0..SERVICE_ROUNDS {
            stack.poll(now());
            while let Some(event) = stack.next_event() {
                drv.on_event(&mut stack, event, &udp_tx);
            }
            drv.ready.take(&mut drv.dirty);
            if drv.dirty.is_empty() {
                break;
            }
            drv.service_flows(&mut stack);
        }
        stack.poll(now());
    }
    drv.udp.finish(&drv.parts.audit);
    drv.quic.finish(&drv.parts.audit);
    drv.drops.flush(&drv.parts.audit);
    Ok(drv.stats)
}

struct Driver {
    parts: DriverParts,
    /// The runtime of the gateway's flow tasks and DNS answers.
    main: tokio::runtime::Handle,
    flows: HashMap<FlowId, FlowSlot>,
    /// Flows the gateway side asked the driver to look at.
    ready: Arc<ReadyList>,
    /// Flows to service this turn (stack events and the ready list), possibly repeated.
    dirty: Vec<FlowId>,
    udp: udp::Relays,
    stats: DriverStats,
    /// Records of the packets the stack refused.
    drops: drops::Drops,
    /// Refused QUIC connections, each written once with its datagram count.
    quic: quic::QuicRefusals,
    /// The flow queues' shared budget pushed back and a `notice` said so (once per run).
    budget_noticed: bool,
    /// Policy decisions of UDP flows: allowed (true) or refused (at most [`MAX_UDP_DECISIONS`]).
    udp_decisions: HashMap<(SocketAddr, SocketAddr), bool>,
    chunk: Vec<u8>,
}

impl Driver {
    fn ingress(&mut self, stack: &mut Stack, packet: &[u8], now: StackInstant) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        if let Some(p) = &self.parts.pcap {
            p.packet(Direction::FromGuest, SystemTime::now(), packet);
        }
        let meta = classify(packet).ok();
        if let Some(meta) = &meta {
            if self.refused_by_policy(stack, meta, packet) {
                return;
            }
        }
        if let Err(reason) = stack.receive(packet, now) {
            self.stats.dropped += 1;
            self.drops.record(&self.parts.audit, &reason, meta.as_ref());
            return;
        }
        // QUIC: refuse at once so clients fall back to TCP (where the gateway sees the HTTP).
        if let Some(meta) = meta {
            if meta.transport == Transport::Udp
                && meta.dst_port == Some(443)
                && stack.reject_udp(packet).is_ok()
            {
                self.stats.quic_refused += 1;
                let src = SocketAddr::new(meta.src, meta.src_port.unwrap_or(0));
                let dst = SocketAddr::new(meta.dst, 443);
                let (names, drops) = (&self.parts.gateway.names, &mut self.drops);
                let audit = &self.parts.audit;
                self.quic.refused(
                    audit,
                    src,
                    dst,
                    packet,
                    |dst| name_in(names, dst),
                    || drops.admit(audit),
                );
            }
        }
    }

    /// The policy's gate for a new TCP connection (at its SYN, before any handshake) and for a
    /// UDP flow (at its first datagram): a denial in enforce mode answers with a RST or an
    /// ICMP port unreachable and the packet never reaches the stack. DNS (port 53), QUIC
    /// (UDP/443, always refused) and the explicit proxy are decided elsewhere.
    fn refused_by_policy(
        &mut self,
        stack: &mut Stack,
        meta: &idagent_netstack::classify::PacketMeta,
        packet: &[u8],
    ) -> bool {
        let enforcer = &self.parts.gateway.enforcer;
        let Some(port) = meta.dst_port.filter(|_| enforcer.active()) else {
            return false;
        };
        let dst = SocketAddr::new(meta.dst, port);
        match meta.transport {
            // Only a SYN the stack would take is decided (a malformed one is dropped anyway).
            Transport::Tcp { syn: true }
                if !is_gateway_service(dst) && stack.would_accept_syn(packet) =>
            {
                let name = self.name_of(dst);
                let req = idagent_policy::Request::Connect {
                    name: name.as_deref(),
                    addr: dst.ip().to_canonical(),
                    port,
                    proto: idagent_policy::Proto::Tcp,
                };
                let ctx = crate::enforce::Context::default();
                if let crate::enforce::Permit::Deny(_) = enforcer.check(&req, ctx, "tcp_reset") {
                    if stack.refuse_tcp_syn(packet).is_err() {
                        self.stats.dropped += 1;
                    }
                    return true;
                }
                false
            }
            Transport::Udp if port != 53 && port != 443 => {
                let key = (SocketAddr::new(meta.src, meta.src_port.unwrap_or(0)), dst);
                let allowed = match self.udp_decisions.get(&key) {
                    Some(allowed) => *allowed,
                    None => {
                        let name = self.name_of(dst);
                        let req = idagent_policy::Request::Datagram {
                            name: name.as_deref(),
                            addr: dst.ip().to_canonical(),
                            port,
                        };
                        let ctx = crate::enforce::Context::default();
                        let permit = enforcer.check(&req, ctx, "icmp_unreachable");
                        let allowed = permit == crate::enforce::Permit::Allow;
                        if self.udp_decisions.len() >= MAX_UDP_DECISIONS {
                            self.udp_decisions.clear();
                        }
                        self.udp_decisions.insert(key, allowed);
                        allowed
                    }
                };
                if !allowed && stack.reject_udp(packet).is_err() {
                    self.stats.dropped += 1;
                }
                !allowed
            }
            _ => false,
        }
    }

    /// The name the guest resolved for `dst`'s address in this run, if any.
    fn name_of(&self, dst: SocketAddr) -> Option<String> {
        name_in(&self.parts.gateway.names, dst)
    }

    fn on_event(&mut self, stack: &mut Stack, event: StackEvent, udp_tx: &mpsc::Sender<UdpReply>) {
        match event {
            StackEvent::TcpOpened { id, src, dst } => self.open_flow(id, src, dst),
            StackEvent::TcpReadable { id } => {
                if let Some(f) = self.flows.get_mut(&id) {
                    f.readable = true;
                    self.dirty.push(id);
                }
            }
            StackEvent::TcpWritable { id } => self.dirty.push(id),
            StackEvent::TcpClosed { id, .. } => {
                self.flows.remove(&id);
            }
            StackEvent::UdpDatagram { flow, payload } => self.on_udp(stack, flow, payload, udp_tx),
            StackEvent::UdpFlowExpired { flow } => self.udp.expire(&flow, &self.parts.audit),
        }
    }

    fn open_flow(&mut self, id: FlowId, src: SocketAddr, dst: SocketAddr) {
        self.stats.tcp_flows += 1;
        let (stream, ends) = flow::pair(id, self.ready.clone());
        self.dirty.push(id);
        self.flows.insert(
            id,
            FlowSlot {
                ends,
                pending_out: None,
                readable: true,
                closing: false,
            },
        );
        if dst.port() == 53 {
            let dns = self.parts.dns.clone();
            let audit = self.parts.audit.clone();
            self.main.spawn(dns_over_tcp(stream, dns, audit, dst));
        } else {
            let gw = self.parts.gateway.clone();
            let mut meta = gw.open_flow(src, dst);
            meta.proxy = dst.port() == crate::gateway::PROXY_PORT
                && (dst.ip() == crate::netns::GATEWAY_V4 || dst.ip() == crate::netns::GATEWAY_V6);
            // The SYN gate (`refused_by_policy`) decided this connection already.
            meta.connect_decided = true;
            self.main.spawn(gw.serve_flow(stream, meta));
        }
    }

    /// Moves bytes both ways, as far as buffers allow, for every flow in `dirty`.
    fn service_flows(&mut self, stack: &mut Stack) {
        // One scratch buffer for the driver's life: this runs on every wake-up.
        let chunk = &mut self.chunk;
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for id in self.dirty.drain(..) {
            let Some(f) = self.flows.get_mut(&id) else {
                continue; // closed since it was queued
            };
            f.ends.unqueue();
            // Guest → gateway: read only what the gateway queue has room for, so nothing
            // waits in between; a full queue leaves the rest in smoltcp and closes the window.
            while f.readable {
                let room = f.ends.up_room().min(chunk.len());
                if room == 0 {
                    break;
                }
                match stack.tcp_recv(id, &mut chunk[..room]) {
                    Ok(0) => f.readable = false,
                    Ok(n) => f.ends.push_up(Bytes::copy_from_slice(&chunk[..n])),
                    Err(FlowError::Finished { .. }) => {
                        f.ends.finish_up();
                        f.readable = false;
                    }
                    Err(_) => f.readable = false,
                }
            }
            // Gateway → guest.
            loop {
                if let Some(p) = f.pending_out.take() {
                    match stack.tcp_send(id, &p) {
                        Ok(n) if n < p.len() => {
                            // The stack is full: its writable event brings the flow back.
                            f.pending_out = Some(p.slice(n..));
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                match f.ends.pop_down() {
                    Some(FlowOut::Data(d)) => f.pending_out = Some(d),
                    Some(FlowOut::Shutdown) => {
                        if !f.closing {
                            f.closing = true;
                            let _ = stack.tcp_close(id);
                        }
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    fn on_udp(
        &mut self,
        stack: &mut Stack,
        flow: UdpFlowKey,
        payload: Vec<u8>,
        udp_tx: &mpsc::Sender<UdpReply>,
    ) {
        match flow.dst.port() {
            53 => {
                self.stats.dns_queries += 1;
                let dns = self.parts.dns.clone();
                let audit = self.parts.audit.clone();
                let tx = udp_tx.clone();
                self.main.spawn(async move {
                    let outcome = dns.answer(&payload).await;
                    log_dns(&audit, "udp", flow.dst, outcome.event);
                    if let Some(response) = outcome.response {
                        let _ = tx
                            .send(UdpReply {
                                from: flow.dst,
                                to: flow.src,
                                payload: response,
                            })
                            .await;
                    }
                });
            }
            443 => {} // refused at ingress (QUIC)
            _ => {
                let name = self.name_of(flow.dst);
                let verdict = evaluate(
                    &self.parts.gateway.policy,
                    &DialRequest {
                        name: name.clone(),
                        addr: flow.dst.ip(),
                        port: flow.dst.port(),
                    },
                );
                match verdict {
                    Verdict::Mapped(target) | Verdict::Direct(target) => {
                        self.udp
                            .send(flow, name, target, payload, udp_tx, &self.parts.audit);
                    }
                    Verdict::Refuse(reason) => {
                        if self.udp.note_refused(flow) {
                            self.parts.audit.emit(EventBody::Blocked(BlockedEvent {
                                what: "udp".into(),
                                target: flow.dst.to_string(),
                                reason: reason.to_string(),
                                flow: None,
                                name,
                                datagrams: None,
                                quic_dcid: None,
                                repeat: Default::default(),
                            }));
                        }
                        let _ = stack; // nothing to send back: the datagram is dropped
                    }
                }
            }
        }
    }
}

/// The name the guest resolved for `dst`'s address in this run, if any.
fn name_in(
    names: &std::sync::Mutex<crate::upstream::NameTable>,
    dst: SocketAddr,
) -> Option<String> {
    names
        .lock()
        .ok()
        .and_then(|t| t.name_of(dst.ip().to_canonical()).map(str::to_owned))
}

/// DNS over TCP (RFC 1035 §4.2.2 framing) to any resolver address.
async fn dns_over_tcp(
    mut stream: flow::FlowStream,
    dns: Arc<DnsService>,
    audit: AuditSink,
    server: SocketAddr,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 2 * 65_538 {
            break; // a client that never completes a frame
        }
        let (messages, consumed) = crate::dns::split_tcp_messages(&buf);
        let messages: Vec<Vec<u8>> = messages.into_iter().map(<[u8]>::to_vec).collect();
        buf.drain(..consumed);
        for m in messages {
            let outcome = dns.answer(&m).await;
            log_dns(&audit, "tcp", server, outcome.event);
            if let Some(resp) = outcome
                .response
                .and_then(|r| crate::dns::frame_tcp(&r).ok())
            {
                if stream.write_all(&resp).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// The `dns` event, plus a `blocked` event when policy (not the resolver) said no.
fn log_dns(
    audit: &AuditSink,
    transport: &'static str,
    server: SocketAddr,
    data: crate::dns::DnsEventData,
) {
    if let Some(block) = data.blocked {
        audit.emit(EventBody::Blocked(BlockedEvent {
            what: "dns".into(),
            target: format!("{} {}", data.name, data.qtype),
            reason: serde_json::to_value(block)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            flow: None,
            // The name is the target itself.
            name: None,
            datagrams: None,
            quic_dcid: None,
            repeat: Default::default(),
        }));
    }
    audit.emit(EventBody::Dns(DnsEvent {
        transport: transport.into(),
        server: server.to_string(),
        data,
        repeat: Default::default(),
    }));
}

/// The gateway's own services, which the SYN gate leaves to their own decision points: DNS
/// over TCP (decided per query) and the explicit proxy (decided per proxied request).
pub(crate) fn is_gateway_service(dst: SocketAddr) -> bool {
    let gateway = dst.ip() == crate::netns::GATEWAY_V4 || dst.ip() == crate::netns::GATEWAY_V6;
    dst.port() == 53 || (gateway && dst.port() == crate::gateway::PROXY_PORT)
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        return epoch_nanos();
    }
    u64::from_le_bytes(b)
}

fn epoch_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Logs a notice once per run for a driver-level problem.
pub(crate) fn notice(audit: &AuditSink, what: &str, detail: String) {
    audit.emit(EventBody::Notice(Notice {
        what: what.into(),
        detail,
    }));
}

pub(crate) fn udp_event(key: &UdpFlowKey, name: Option<String>, c: &udp::Counts) -> EventBody {
    EventBody::Udp(UdpEvent {
        src: key.src.to_string(),
        dst: key.dst.to_string(),
        name,
        datagrams_up: c.datagrams_up,
        datagrams_down: c.datagrams_down,
        bytes_up: c.bytes_up,
        bytes_down: c.bytes_down,
    })
}

//! The Identity Agent gateway: every guest TCP flow ends here and is completed on the guest's
//! behalf.
//!
//! Owns: sniffing a flow's first bytes (HTTP/1.x, TLS, anything else), choosing the upstream
//! (through the pure `upstream::evaluate`), and the `tcp`, `blocked` audit events. HTTP and
//! TLS live in `gateway/http.rs` and `gateway/intercept.rs`; byte taps in `gateway/tap.rs`.
//! Does not own: where flows come from — the netstack driver (transparent), the explicit
//! proxy on port 5000, and `idagent gateway` behind an iptables REDIRECT all hand it a stream
//! plus the original destination, so all three produce the same events.

use crate::audit::{AuditSink, BlockedEvent, EventBody, FlowId, TcpEvent};
use crate::enforce::{Context, Permit};
use crate::upstream::{DialRequest, NameTable, Policy, Verdict};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{debug, info_span, Instrument};

pub mod grpc;
pub mod http;
pub mod intercept;
pub mod jsonrpc;
pub mod tap;
pub mod ws;

use tap::{escape_bytes, Counters, GuestStream};

/// Default bytes of each body (and of each direction of an opaque flow) kept in the log.
pub const DEFAULT_CAPTURE_BYTES: usize = 64 * 1024;
/// How long the gateway waits for a client to speak first before treating the flow as
/// server-first and relaying it.
pub const SNIFF_TIMEOUT: Duration = Duration::from_millis(500);
/// Most bytes read while sniffing (a TLS ClientHello can span several records).
pub const MAX_SNIFF_BYTES: usize = 16 * 1024;
/// Upstream connect timeout.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The gateway's own explicit-proxy port (inside the sandbox and standalone).
pub const PROXY_PORT: u16 = 5000;
/// Largest read from the upstream of an opaque relay (one chunk toward the guest).
const RELAY_CHUNK: usize = crate::netdrv::flow::MAX_CHUNK;

/// How TLS flows are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Terminate with a per-run CA the guest trusts, log the HTTP inside.
    Intercept,
    /// Relay the bytes; log SNI only.
    Passthrough,
}

/// Everything the gateway needs, shared by all flows of a run.
pub struct Gateway {
    pub audit: AuditSink,
    pub policy: Arc<Policy>,
    pub names: Arc<Mutex<NameTable>>,
    pub capture_bytes: usize,
    pub tls_mode: TlsMode,
    pub tls: Option<intercept::TlsContext>,
    /// The run's one enforcer: connect (for flows no SYN gate decided), TLS and HTTP.
    pub enforcer: Arc<crate::enforce::Enforcer>,
    /// The run's known secret values: learned from what the guest sends, scrubbed from
    /// everything the gateway logs. Shared with the run's other recorders (execs, run start).
    pub known: Arc<crate::redact::KnownSecrets>,
    /// HTTP/2 upstream connections, one per upstream, shared by the guest's connections.
    pub(crate) h2_pool: http::upstream::H2Pool,
    /// `--http1-only`: cleartext HTTP/2 (h2c prior knowledge) is relayed as opaque bytes
    /// rather than served (TLS flows follow `TlsContext`'s own setting).
    http1_only: std::sync::atomic::AtomicBool,
    next_flow: AtomicU64,
    /// CONNECT tunnels to serve as flows of their own. A channel (not a direct spawn) so the
    /// HTTP handler's future does not contain the flow handler's (a recursive type).
    tunnels: tokio::sync::mpsc::UnboundedSender<(hyper::upgrade::OnUpgrade, FlowMeta)>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("tls_mode", &self.tls_mode)
            .finish_non_exhaustive()
    }
}

/// A flow as the guest made it.
#[derive(Debug, Clone)]
pub struct FlowMeta {
    pub id: FlowId,
    pub src: SocketAddr,
    /// The original destination.
    pub dst: SocketAddr,
    /// The name the guest resolved for `dst`, if it did.
    pub name: Option<String>,
    /// The guest is talking to the gateway's explicit proxy (port 5000): absolute-form
    /// requests and CONNECT name their own targets.
    pub proxy: bool,
    /// The connect decision was made already (the driver's SYN gate), so the gateway does not
    /// make it again.
    pub connect_decided: bool,
}

impl FlowMeta {
    /// `name:port` when the name is known, else the address.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{n}:{}", self.dst.port()),
            None => self.dst.to_string(),
        }
    }
}

/// Why an upstream dial did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("refused by policy: {0}")]
    Refused(String),
    #[error("connect {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
}

impl Gateway {
    /// The run's gateway. Must be called inside a tokio runtime (it starts the task that serves
    /// CONNECT tunnels).
    pub fn new(
        audit: AuditSink,
        policy: Arc<Policy>,
        names: Arc<Mutex<NameTable>>,
        capture_bytes: usize,
        tls_mode: TlsMode,
        tls: Option<intercept::TlsContext>,
        enforcer: Arc<crate::enforce::Enforcer>,
    ) -> Arc<Self> {
        let (tunnels, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(hyper::upgrade::OnUpgrade, FlowMeta)>();
        let known = Arc::new(crate::redact::KnownSecrets::new(Some(audit.clone())));
        let gw = Arc::new(Self {
            known,
            audit,
            policy,
            names,
            capture_bytes,
            tls_mode,
            tls,
            enforcer,
            h2_pool: http::upstream::H2Pool::default(),
            http1_only: std::sync::atomic::AtomicBool::new(false),
            next_flow: AtomicU64::new(1),
            tunnels,
        });
        let weak = Arc::downgrade(&gw);
        tokio::spawn(async move {
            while let Some((upgrade, meta)) = rx.recv().await {
                let Some(gw) = weak.upgrade() else { break };
                tokio::spawn(async move {
                    if let Ok(upgraded) = upgrade.await {
                        gw.serve_flow(hyper_util::rt::TokioIo::new(upgraded), meta)
                            .await;
                    }
                });
            }
        });
        gw
    }

    /// `--http1-only` (see the field).
    pub fn set_http1_only(&self, only: bool) {
        self.http1_only.store(only, Ordering::Relaxed);
    }

    /// Hands an accepted CONNECT tunnel to the tunnel task.
    pub(crate) fn serve_tunnel(&self, upgrade: hyper::upgrade::OnUpgrade, meta: FlowMeta) {
        let _ = self.tunnels.send((upgrade, meta));
    }

    /// A new flow id and the name the guest resolved for `dst`.
    pub fn open_flow(&self, src: SocketAddr, dst: SocketAddr) -> FlowMeta {
        let name = self
            .names
            .lock()
            .ok()
            .and_then(|t| t.name_of(dst.ip()).map(str::to_owned));
        FlowMeta {
            id: FlowId(self.next_flow.fetch_add(1, Ordering::Relaxed)),
            src,
            dst,
            name,
            proxy: false,
            connect_decided: false,
        }
    }

    /// A new flow for a target an explicit-proxy client named (`CONNECT host:port`, or an
    /// absolute-form URL). Mapped names get their synthetic address (the policy maps them by
    /// name); IP literals are taken as they are; other names are resolved by the host only
    /// when online (offline they stay unresolved and the policy refuses them).
    pub async fn proxy_target(&self, via: &FlowMeta, host: &str, port: u16) -> FlowMeta {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            Some(ip)
        } else if self.policy.map.lookup(host, port).is_some() {
            self.names
                .lock()
                .ok()
                .and_then(|mut t| t.synthetic_for(host).ok())
                .map(|(v4, _)| std::net::IpAddr::V4(v4))
        } else if !self.policy.offline {
            tokio::net::lookup_host((host, port))
                .await
                .ok()
                .and_then(|mut it| it.next())
                .map(|a| a.ip())
        } else {
            None
        };
        FlowMeta {
            id: FlowId(self.next_flow.fetch_add(1, Ordering::Relaxed)),
            src: via.src,
            dst: SocketAddr::new(addr.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()), port),
            name: (host.parse::<std::net::IpAddr>().is_err()).then(|| host.to_ascii_lowercase()),
            proxy: false,
            connect_decided: false,
        }
    }

    /// Serves one guest TCP flow to its end: logs `tcp` open and close around it.
    pub async fn serve_flow<S>(self: Arc<Self>, stream: S, meta: FlowMeta)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let span = info_span!("flow", flow.id = %meta.id, dst.addr = %meta.dst);
        async move {
            let started = Instant::now();
            self.audit.emit(EventBody::Tcp(tcp_event(&meta, "open")));
            let counters = Arc::new(Counters::default());
            let mut close = self.clone().dispatch(stream, &meta, counters.clone()).await;
            close.bytes_up = Some(counters.up.load(Ordering::Relaxed));
            close.bytes_down = Some(counters.down.load(Ordering::Relaxed));
            close.duration_ms = Some(started.elapsed().as_millis() as u64);
            self.audit.emit(EventBody::Tcp(close));
        }
        .instrument(span)
        .await
    }

    /// Sniffs and hands the flow to the right handler; returns the close event to fill in.
    async fn dispatch<S>(
        self: Arc<Self>,
        mut stream: S,
        meta: &FlowMeta,
        counters: Arc<Counters>,
    ) -> TcpEvent
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut close = tcp_event(meta, "close");
        if !meta.connect_decided && !meta.proxy {
            // Flows no SYN gate saw (explicit-proxy tunnels, the standalone gateway): the
            // connect decision is made here, before a byte is read.
            if let Permit::Deny(d) =
                self.enforcer
                    .check(&connect_request(meta), Context::flow(meta.id), "tcp_reset")
            {
                close.close_reason = Some(format!("denied by policy (rule {})", d.rule));
                return close;
            }
        }
        let first = match sniff(&mut stream).await {
            Ok(b) => b,
            Err(e) => {
                close.close_reason = Some(format!("guest read error: {e}"));
                return close;
            }
        };
        counters.up.fetch_add(first.len() as u64, Ordering::Relaxed);
        let guest = GuestStream::new(stream, first.clone(), counters.clone());
        let result = if crate::tls::looks_like_tls(&first) {
            close.protocol = Some("tls".into());
            intercept::serve(self.clone(), guest, meta, &first).await
        } else if http::looks_like_http(&first) {
            close.protocol = Some("http".into());
            http::serve_plain(self.clone(), guest, meta).await
        } else if http::looks_like_h2_preface(&first) && !self.http1_only.load(Ordering::Relaxed) {
            // h2c by prior knowledge (plain-text gRPC): served, and forwarded, as HTTP/2.
            close.protocol = Some("h2c".into());
            let end =
                http::serve_h2(self.clone(), guest, meta, http::UpstreamKind::Plain, None).await;
            match end.error {
                Some(e) => Err(e),
                None => Ok(end.upstream),
            }
        } else {
            close.protocol = Some("relay".into());
            self.relay(guest, meta, &first, &mut close).await
        };
        match result {
            Ok(upstream) => {
                close.upstream = upstream.map(|a| a.to_string());
                close.close_reason.get_or_insert_with(|| "closed".into());
            }
            Err(reason) => close.close_reason = Some(reason),
        }
        close
    }

    /// Applies the upstream policy to a dial toward `dst` for the guest's `name`; refusals are
    /// logged as `blocked` events.
    pub async fn dial(
        &self,
        meta: &FlowMeta,
        name: Option<&str>,
    ) -> Result<(TcpStream, SocketAddr), DialError> {
        let name = name.map(str::to_owned).or_else(|| meta.name.clone());
        let request = DialRequest {
            name: name.clone(),
            addr: meta.dst.ip(),
            port: meta.dst.port(),
        };
        let target = match crate::upstream::evaluate(&self.policy, &request) {
            Verdict::Mapped(addr) | Verdict::Direct(addr) => addr,
            Verdict::Refuse(reason) => {
                let reason = reason.to_string();
                // An address literal given as the name (a Host, bracketed when v6; an SNI) is
                // not a name.
                let name = name.filter(|n| {
                    let bare = n.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
                    bare.unwrap_or(n).parse::<std::net::IpAddr>().is_err()
                });
                self.audit.emit(EventBody::Blocked(BlockedEvent {
                    what: "tcp".into(),
                    target: match &name {
                        Some(n) => format!("{n}:{} ({})", meta.dst.port(), meta.dst),
                        None => meta.dst.to_string(),
                    },
                    reason: reason.clone(),
                    flow: Some(meta.id),
                    name,
                    datagrams: None,
                    quic_dcid: None,
                    repeat: Default::default(),
                }));
                return Err(DialError::Refused(reason));
            }
        };
        debug!(upstream = %target, "dialing");
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok((s, target))
            }
            Ok(Err(e)) => Err(DialError::Connect {
                addr: target,
                reason: e.to_string(),
            }),
            Err(_) => Err(DialError::Connect {
                addr: target,
                reason: "timed out".into(),
            }),
        }
    }

    /// The decision for relaying opaque bytes on `meta` (plain, or inside intercepted TLS):
    /// a rule that wants to see HTTP (`inspect: l7`) never lets bytes it cannot read through.
    pub(crate) fn stream_permitted(&self, meta: &FlowMeta, tls: bool) -> Result<(), String> {
        let req = idagent_policy::Request::Stream {
            name: meta.name.as_deref(),
            addr: meta.dst.ip().to_canonical(),
            port: meta.dst.port(),
            tls,
        };
        match self
            .enforcer
            .check(&req, Context::flow(meta.id), "tcp_close")
        {
            Permit::Allow => Ok(()),
            Permit::Deny(d) => Err(format!("denied by policy (rule {})", d.rule)),
        }
    }

    /// Opaque flow: relay both ways, keep the first bytes of each direction.
    async fn relay<S>(
        &self,
        mut guest: GuestStream<S>,
        meta: &FlowMeta,
        first: &[u8],
        close: &mut TcpEvent,
    ) -> Result<Option<SocketAddr>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Opaque protocols carry credentials in clear too (Redis `AUTH`, FTP `PASS`, IMAP
        // `LOGIN`, `Authorization:` lines): the log keeps their fingerprints only.
        // The value of a credential the run has seen elsewhere is scrubbed too; these are the
        // first bytes of a longer stream, so a value cut at their end is masked.
        let up = escape_bytes(&first[..first.len().min(self.capture_bytes)]);
        let up = self.known.learning(|| crate::redact::redact_wire(&up).0);
        close.first_bytes_up = Some(self.known.scrub_capture(&up, true).text);
        self.stream_permitted(meta, false)?;
        let (mut upstream, addr) = self.dial(meta, None).await.map_err(|e| e.to_string())?;
        let mut down_first = CaptureWriter::new(self.capture_bytes);
        let (mut ur, mut uw) = upstream.split();
        let (mut gr, mut gw) = tokio::io::split(&mut guest);
        let up = async {
            let r = tokio::io::copy(&mut gr, &mut uw).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut uw).await;
            r
        };
        let down = async {
            let mut buf = vec![0u8; RELAY_CHUNK];
            loop {
                let n = ur.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                down_first.observe(&buf[..n]);
                tokio::io::AsyncWriteExt::write_all(&mut gw, &buf[..n]).await?;
            }
            tokio::io::AsyncWriteExt::shutdown(&mut gw).await
        };
        let (r1, r2) = tokio::join!(up, down);
        let down = self
            .known
            .learning(|| crate::redact::redact_wire(&escape_bytes(&down_first.data)).0);
        close.first_bytes_down = Some(self.known.scrub_capture(&down, true).text);
        match (r1, r2) {
            (Err(e), _) | (_, Err(e)) => close.close_reason = Some(format!("relay: {e}")),
            _ => {}
        }
        Ok(Some(addr))
    }
}

/// Keeps the first `cap` bytes written through it.
struct CaptureWriter {
    data: Vec<u8>,
    cap: usize,
}

impl CaptureWriter {
    fn new(cap: usize) -> Self {
        Self {
            data: Vec::new(),
            cap,
        }
    }
    fn observe(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.data.len());
        self.data.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }
}

/// The policy request of a TCP connection to `meta.dst`.
pub(crate) fn connect_request(meta: &FlowMeta) -> idagent_policy::Request<'_> {
    idagent_policy::Request::Connect {
        name: meta.name.as_deref(),
        addr: meta.dst.ip().to_canonical(),
        port: meta.dst.port(),
        proto: idagent_policy::Proto::Tcp,
    }
}

/// A `tcp` event for `meta` with nothing measured yet.
fn tcp_event(meta: &FlowMeta, phase: &'static str) -> TcpEvent {
    TcpEvent {
        flow: meta.id,
        phase: phase.into(),
        src: meta.src.to_string(),
        dst: meta.dst.to_string(),
        name: meta.name.clone(),
        upstream: None,
        protocol: None,
        bytes_up: None,
        bytes_down: None,
        duration_ms: None,
        close_reason: None,
        first_bytes_up: None,
        first_bytes_down: None,
    }
}

/// Reads what the client sends first: until a TLS ClientHello is complete, an HTTP request
/// line is visible, [`MAX_SNIFF_BYTES`], or [`SNIFF_TIMEOUT`] of silence (server-first
/// protocols). Returns the bytes read (possibly empty).
async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        match read {
            Err(_) => break,
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
        if buf.len() >= MAX_SNIFF_BYTES || enough_to_decide(&buf) {
            break;
        }
    }
    Ok(buf.freeze())
}

fn enough_to_decide(buf: &[u8]) -> bool {
    if crate::tls::looks_like_tls(buf) {
        return !matches!(
            crate::tls::parse_client_hello(buf),
            Err(crate::tls::SniError::Incomplete { .. })
        );
    }
    // Anything else: the first bytes decide (an HTTP method, or not).
    buf.len() >= 8 || buf.contains(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniff_returns_early_for_http_and_waits_out_silence() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let got = sniff(&mut b).await.expect("sniff");
        assert!(got.starts_with(b"GET "));
        let (_c, mut d) = tokio::io::duplex(1024);
        let started = std::time::Instant::now();
        let got = sniff(&mut d).await.expect("sniff");
        assert!(got.is_empty() && started.elapsed() >= SNIFF_TIMEOUT);
    }
}

//! HTTP/1.x through the gateway: hyper on both legs.
//!
//! Owns: serving the guest's requests (plain, or inside an intercepted TLS session), keeping
//! one upstream connection per guest connection (keep-alive), streaming bodies both ways
//! through taps (nothing buffers a whole body — but `http/body_gate.rs`, at most 1 MiB, where
//! the policy decides on the MCP tool a request names; SSE and chunked responses reach the
//! guest as they arrive), `Upgrade` (WebSocket) tunnels, and the `http` audit event with credentials
//! redacted. `Expect: 100-continue` is hyper's: the guest's body is read only once forwarded.
//! Every request first passes `http/gate.rs` (routing by its own target, then the policy);
//! `http/tunnel.rs` holds CONNECT, the connection's identity and the gateway's own refusals.
//!
//! HTTP/2 (the default; `--http1-only` turns it off): each guest stream is its own request and
//! its own `http` record, forwarded as a stream over an HTTP/2 upstream connection when the
//! upstream agrees `h2` (one shared connection per upstream, `http/upstream.rs`), trailers and
//! `te: trailers` carried both ways, resets and GOAWAY passed on by hyper on each leg. An
//! upstream that speaks only HTTP/1.1 gets each stream as an HTTP/1.1 request, on a small pool
//! of upstream connections per guest connection (an h1 connection carries one at a time).
//! gRPC calls are HTTP/2 streams like any other; their records also carry `grpc`. RFC 8441
//! WebSockets (extended CONNECT, advertised in our SETTINGS) are `http/ws_h2.rs`'s.

use super::tap::{Tap, TapBody};
use super::{FlowMeta, Gateway};
use crate::audit::HttpEvent;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

mod body_gate;
mod gate;
mod record;
mod tunnel;
mod upgrade;
pub(crate) mod upstream;
mod ws_h2;

type GuestBody = BoxBody<Bytes, hyper::Error>;
use record::{finish_event, header_list, http_event, Unanswered};
pub use record::{CANCELLED_NOTE, CANCEL_WINDOW, MAX_CANCELLED_STREAMS, TOO_MANY_CANCELS_REASON};
use upstream::{H1Sender, H2Sender, Opened, Sender, UpBody};

/// Anything we can speak HTTP over upstream (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Whether a flow's first bytes start an HTTP/1.x request.
pub fn looks_like_http(first: &[u8]) -> bool {
    METHODS.iter().any(|m| first.starts_with(m))
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): a client speaking HTTP/2 by prior knowledge
/// (h2c, or inside TLS without ALPN).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a flow's first bytes start the HTTP/2 preface (enough of it to tell: 8 bytes).
pub fn looks_like_h2_preface(first: &[u8]) -> bool {
    first.len() >= 8 && H2_PREFACE.starts_with(&first[..first.len().min(H2_PREFACE.len())])
}

/// How the gateway reaches the upstream of one guest connection.
#[derive(Debug, Clone)]
pub enum UpstreamKind {
    Plain,
    /// TLS toward the upstream with this server name (the guest's SNI, or the address).
    Tls {
        server_name: String,
        /// The SNI of the guest's ClientHello, if it sent one (for the `http` records).
        sni: Option<String>,
    },
}

/// Per-guest-connection state shared by its requests.
struct Conn {
    gw: Arc<Gateway>,
    meta: FlowMeta,
    kind: UpstreamKind,
    /// HTTP/1 guest connections: the upstream connection, for explicit-proxy clients the
    /// target it was opened for, and the address it reaches.
    sender: tokio::sync::Mutex<Option<(H1Sender, Option<String>, SocketAddr)>>,
    /// HTTP/2 guest connections to an HTTP/1.1 upstream: idle upstream connections (at most
    /// [`MAX_IDLE_UPSTREAM`]).
    pool: tokio::sync::Mutex<Vec<(H1Sender, SocketAddr)>>,
    /// HTTP/2 guest connections to an HTTP/2 upstream: the shared connection its streams ride
    /// (also in the gateway's pool, when the pool had room), and what it reaches.
    h2: Mutex<Option<(H2Sender, SocketAddr, Option<String>)>>,
    multiplexed: bool,
    /// Streams the guest abandoned before their response, in the current window (see
    /// [`MAX_CANCELLED_STREAMS`]), and the signal that closes the connection past the cap.
    cancels: Mutex<(Instant, u32)>,
    calm_down: tokio::sync::Notify,
    upstream: Mutex<Option<SocketAddr>>,
    /// Result of upstream TLS verification, for the `tls` event.
    verify: Mutex<Option<String>>,
}

/// How long a guest connection may take to send a request's complete head. HTTP/1: hyper's
/// `header_read_timeout`, which runs whenever the connection waits for a head, so it is also
/// the keep-alive idle limit (a connection idle that long between requests is closed, as
/// servers do: Apache's default is 5 s); HTTP/2: from the connection's start to its first
/// request. Past it the connection is closed and its `tcp` close says
/// [`HEADER_TIMEOUT_REASON`]: a connection with an unfinished head holds buffers on both sides
/// of its flow and must not hold them for the whole run.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of one request's head (request line plus headers; HTTP/2: the decoded header
/// list). Over it HTTP/1 answers `431` and closes, HTTP/2 resets the stream.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The `close_reason` of a connection closed by [`HEADER_READ_TIMEOUT`].
pub const HEADER_TIMEOUT_REASON: &str = "header_timeout";

/// Concurrent streams one HTTP/2 guest connection may open (each may hold an upstream
/// connection while it runs).
pub(crate) const MAX_H2_STREAMS: u32 = 32;
/// Streams the guest may reset before idagent has taken them (rapid reset, CVE-2023-44487):
/// one more and the connection gets GOAWAY `ENHANCE_YOUR_CALM` ("too_many_resets"). Such a
/// stream never reached the gate, so it has no record and the upstream never saw it. h2's
/// default, named here so it cannot change under us with a dependency update.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams idagent itself may reset for the guest's stream errors on one connection (a guest
/// provoking resets instead of sending them) before it sends GOAWAY. h2's default, named here.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Idle upstream connections kept per HTTP/2 guest connection.
const MAX_IDLE_UPSTREAM: usize = 8;

/// What an HTTP session reports back to its flow.
#[derive(Debug, Default)]
pub struct SessionEnd {
    pub upstream: Option<SocketAddr>,
    pub upstream_verify: Option<String>,
    pub error: Option<String>,
}

/// Serves HTTP/1.x requests from `guest` until it closes.
/// `initial`: an upstream connection already opened for it (see `upstream::preopen`).
pub async fn serve<S>(
    gw: Arc<Gateway>,
    guest: S,
    meta: &FlowMeta,
    kind: UpstreamKind,
    initial: Option<Opened>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Conn::new(gw, meta, kind, false, initial);
    let svc_conn = conn.clone();
    let service = hyper::service::service_fn(move |req| svc_conn.clone().forward(req));
    let served = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(guest), service)
        .with_upgrades()
        .await;
    conn.end(served.err().map(|e| {
        if e.is_timeout() {
            HEADER_TIMEOUT_REASON.to_owned()
        } else {
            format!("guest http: {e}")
        }
    }))
}

/// Serves HTTP/2 streams from `guest` (ALPN `h2` agreed, or h2c prior knowledge) until it
/// closes. `initial`: an upstream connection already opened for it.
pub async fn serve_h2<S>(
    gw: Arc<Gateway>,
    guest: S,
    meta: &FlowMeta,
    kind: UpstreamKind,
    initial: Option<Opened>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Conn::new(gw, meta, kind, true, initial);
    let svc_conn = conn.clone();
    // Set by the first request: until then the connection runs on HEADER_READ_TIMEOUT.
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = asked.clone();
    let service = hyper::service::service_fn(move |req| {
        first.store(true, std::sync::atomic::Ordering::Relaxed);
        svc_conn.clone().forward(req)
    });
    let served = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        // RFC 8441: WebSockets over HTTP/2 streams (`http/ws_h2.rs`).
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .serve_connection(TokioIo::new(guest), service);
    let mut served = std::pin::pin!(served);
    let served = tokio::select! {
        r = &mut served => r,
        () = tokio::time::sleep(HEADER_READ_TIMEOUT) => {
            if !asked.load(std::sync::atomic::Ordering::Relaxed) {
                return conn.end(Some(HEADER_TIMEOUT_REASON.to_owned()));
            }
            tokio::select! {
                r = &mut served => r,
                () = conn.calm_down.notified() => {
                    served.as_mut().graceful_shutdown();
                    let _ = served.await;
                    return conn.end(Some(TOO_MANY_CANCELS_REASON.to_owned()));
                }
            }
        }
        () = conn.calm_down.notified() => {
            // Too many streams reset before their answer: GOAWAY, let the open ones finish.
            served.as_mut().graceful_shutdown();
            let _ = served.await;
            return conn.end(Some(TOO_MANY_CANCELS_REASON.to_owned()));
        }
    };
    // hyper's own message is only "http2 error"; its source says which (a GOAWAY we sent for
    // a reset or CONTINUATION flood: "detected excessive load generating behavior"; a protocol
    // error), for the `tcp` close and `tls` records.
    conn.end(served.err().map(|e| match std::error::Error::source(&e) {
        Some(why) => format!("guest http2: {e}: {why}"),
        None => format!("guest http2: {e}"),
    }))
}

/// Plain HTTP flow: serve it, report the upstream.
pub async fn serve_plain<S>(
    gw: Arc<Gateway>,
    guest: S,
    meta: &FlowMeta,
) -> Result<Option<SocketAddr>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let end = serve(gw, guest, meta, UpstreamKind::Plain, None).await;
    match end.error {
        Some(e) => Err(e),
        None => Ok(end.upstream),
    }
}

impl Conn {
    fn new(
        gw: Arc<Gateway>,
        meta: &FlowMeta,
        kind: UpstreamKind,
        multiplexed: bool,
        initial: Option<Opened>,
    ) -> Arc<Self> {
        let (mut sender, mut pool, mut h2) = (None, Vec::new(), None);
        let (mut upstream, mut verify) = (None, None);
        if let Some(o) = initial {
            upstream = Some(o.addr);
            verify = o.verify.clone();
            match o.sender {
                Sender::H1(s) if multiplexed => pool.push((s, o.addr)),
                Sender::H1(s) => sender = Some((s, None, o.addr)),
                Sender::H2(s) => h2 = Some((s, o.addr, o.verify)),
            }
        }
        Arc::new(Conn {
            gw,
            meta: meta.clone(),
            kind,
            sender: tokio::sync::Mutex::new(sender),
            pool: tokio::sync::Mutex::new(pool),
            h2: Mutex::new(h2),
            multiplexed,
            cancels: Mutex::new((Instant::now(), 0)),
            calm_down: tokio::sync::Notify::new(),
            upstream: Mutex::new(upstream),
            verify: Mutex::new(verify),
        })
    }

    fn end(&self, error: Option<String>) -> SessionEnd {
        SessionEnd {
            upstream: self.upstream.lock().ok().and_then(|u| *u),
            upstream_verify: self.verify.lock().ok().and_then(|v| v.clone()),
            error,
        }
    }

    fn scheme(&self) -> &'static str {
        match self.kind {
            UpstreamKind::Plain => "http",
            UpstreamKind::Tls { .. } => "https",
        }
    }

    /// The full URL of a request as the guest meant it.
    fn url(&self, uri: &Uri, headers: &HeaderMap) -> (String, Option<String>) {
        let host_header = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned);
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .or(host_header)
            .unwrap_or_else(|| self.meta.label());
        // Userinfo of an absolute-form URL (`http://user:pass@host/`, explicit proxy) is
        // accepted: the URL keeps only its fingerprint, the host is what follows it, and
        // upstream never sees it ([`without_userinfo`]).
        let (userinfo, authority) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (redacted, _) = self
                    .gw
                    .known
                    .learning(|| crate::redact::redact_text(&format!("x://{userinfo}@")));
                let userinfo = redacted.strip_prefix("x://").unwrap_or("…@").to_owned();
                (userinfo, hostport.to_owned())
            }
            None => (String::new(), authority),
        };
        let host = authority
            .rsplit_once(':')
            .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h.to_owned())
            .unwrap_or_else(|| authority.clone());
        let default_port = if self.scheme() == "https" { 443 } else { 80 };
        // An absolute-form URL (explicit proxy) names its own port; otherwise the port the
        // guest dialled is the URL's when the Host header leaves it out.
        let absolute = uri.authority().is_some();
        let authority =
            if absolute || authority.contains(':') || self.meta.dst.port() == default_port {
                authority
            } else {
                format!("{authority}:{}", self.meta.dst.port())
            };
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        (
            format!("{}://{userinfo}{authority}{path}", self.scheme()),
            Some(host),
        )
    }

    /// Sends `req` on this guest connection's upstream connection, (re)connecting when there
    /// is none, it went away, or (explicit proxy) the request names another target. Requests
    /// of one HTTP/1 guest connection are sequential, so holding the lock is no contention.
    /// `authority`: what the request was routed and decided by (its absolute-form URL or
    /// `:authority`), which the upstream gets as `Host` / `:authority`.
    async fn send(
        &self,
        host: Option<&str>,
        target: Option<FlowMeta>,
        mut req: Request<UpBody>,
        authority: Option<&str>,
        event: &mut HttpEvent,
    ) -> Result<Response<Incoming>, String> {
        if self.multiplexed {
            return self.send_multiplexed(host, req, authority, event).await;
        }
        let key = target.as_ref().map(FlowMeta::label);
        let mut slot = self.sender.lock().await;
        let reusable = match slot.as_mut() {
            Some((s, k, _)) if *k == key => s.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            let meta = target.unwrap_or_else(|| self.meta.clone());
            let opened = upstream::open(&self.gw, &meta, &self.kind, host, false)
                .await
                .map_err(|e| self.failed(e))?;
            self.note_upstream(&opened);
            let Sender::H1(s) = opened.sender else {
                return Err("upstream: unexpected HTTP/2 connection".into());
            };
            *slot = Some((s, key, opened.addr));
        }
        let (sender, _, addr) = slot.as_mut().ok_or("no upstream connection")?;
        event.upstream = Some(addr.to_string());
        event.upstream_version = Some("HTTP/1.1".into());
        for_upstream(&mut req, false, self.scheme(), authority);
        sender
            .send_request(req)
            .await
            .map_err(|e| format!("upstream: {e}"))
    }

    /// HTTP/2 streams: over the upstream's HTTP/2 connection (this connection's, or the
    /// gateway pool's, or a new one), else over an idle (or new) HTTP/1.1 connection, kept
    /// for reuse after.
    async fn send_multiplexed(
        &self,
        host: Option<&str>,
        mut req: Request<UpBody>,
        authority: Option<&str>,
        event: &mut HttpEvent,
    ) -> Result<Response<Incoming>, String> {
        let mut opened = self.live_h2();
        if opened.is_none() {
            let idle = {
                let mut pool = self.pool.lock().await;
                pool.retain(|(s, _)| !s.is_closed());
                pool.iter()
                    .position(|(s, _)| s.is_ready())
                    .map(|i| pool.swap_remove(i))
            };
            opened = match idle {
                Some((s, addr)) => Some(Opened {
                    sender: Sender::H1(s),
                    addr,
                    verify: None,
                }),
                None => {
                    let o = upstream::open(&self.gw, &self.meta, &self.kind, host, true)
                        .await
                        .map_err(|e| self.failed(e))?;
                    if let Sender::H2(s) = &o.sender {
                        if let Ok(mut slot) = self.h2.lock() {
                            *slot = Some((s.clone(), o.addr, o.verify.clone()));
                        }
                    }
                    Some(o)
                }
            };
        }
        let opened = opened.ok_or("no upstream connection")?;
        self.note_upstream(&opened);
        event.upstream = Some(opened.addr.to_string());
        match opened.sender {
            Sender::H2(mut sender) => {
                event.upstream_version = Some("HTTP/2".into());
                for_upstream(&mut req, true, self.scheme(), authority);
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| format!("upstream: {e}"))
            }
            Sender::H1(mut sender) => {
                event.upstream_version = Some("HTTP/1.1".into());
                for_upstream(&mut req, false, self.scheme(), authority);
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| format!("upstream: {e}"));
                // Ready again once this response's body is done; a later stream checks.
                let mut pool = self.pool.lock().await;
                if pool.len() < MAX_IDLE_UPSTREAM {
                    pool.push((sender, opened.addr));
                }
                resp
            }
        }
    }

    /// This connection's HTTP/2 upstream connection if it is still open, else the gateway
    /// pool's for the same upstream (after a GOAWAY another guest connection may have opened
    /// a new one).
    fn live_h2(&self) -> Option<Opened> {
        let mut slot = self.h2.lock().ok()?;
        if let Some((s, addr, verify)) = slot.as_ref().filter(|(s, _, _)| !s.is_closed()) {
            return Some(Opened {
                sender: Sender::H2(s.clone()),
                addr: *addr,
                verify: verify.clone(),
            });
        }
        *slot = None;
        let pooled = self
            .gw
            .h2_pool
            .get(&upstream::PoolKey::new(&self.meta, &self.kind))?;
        if let Sender::H2(s) = &pooled.sender {
            *slot = Some((s.clone(), pooled.addr, pooled.verify.clone()));
        }
        Some(pooled)
    }

    /// A connection that could not be opened: what it got as far as, for the flow's records.
    fn failed(&self, e: upstream::OpenError) -> String {
        if let Some(v) = e.verify {
            self.set_verify(v);
        }
        if let (Some(addr), Ok(mut u)) = (e.addr, self.upstream.lock()) {
            *u = Some(addr);
        }
        e.reason
    }

    fn set_verify(&self, v: String) {
        if let Ok(mut slot) = self.verify.lock() {
            slot.get_or_insert(v);
        }
    }

    async fn forward(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<GuestBody>, std::convert::Infallible> {
        let started = Instant::now();
        let (url, host) = self.url(req.uri(), req.headers());
        let method = req.method().clone();
        if method == Method::CONNECT {
            if ws_h2::is_websocket(&req) {
                return Ok(self.websocket_h2(req, started).await);
            }
            return Ok(self.connect_tunnel(req, started).await);
        }
        // Explicit proxy, absolute-form: the URL names the target.
        let target = match (self.meta.proxy, req.uri().authority()) {
            (true, Some(auth)) => {
                let port = auth.port_u16().unwrap_or(80);
                Some(self.gw.proxy_target(&self.meta, auth.host(), port).await)
            }
            _ => None,
        };
        let identity = self.identity(target.is_some());
        let gated = gate::check(
            &self.gw,
            &self.meta,
            identity.as_deref(),
            method.as_str(),
            &url,
            host.as_deref(),
            req.headers(),
        );
        // A decision on the MCP tool the body names reads (and then forwards) the body.
        let mut req = req.map(body_gate::GuestReqBody::streaming);
        let gated = body_gate::check(&self.gw, &self.meta, gated, &mut req).await;
        if let gate::Gate::Refuse {
            status,
            content_type,
            headers,
            body,
            note,
        } = gated
        {
            let mut event = http_event(&self, method.to_string(), url, header_list(req.headers()));
            event.note = Some(note);
            event.version = Some(version_name(req.version()).into());
            // A body read to decide on (an MCP tool call) is the request's, logged as such.
            let req_tap = Tap::new(self.gw.capture_bytes);
            if let Some(read) = req.body().buffered() {
                req_tap.observe_all(read);
            }
            return Ok(self.refusal_with(
                event,
                (status, content_type, headers),
                &req_tap,
                &body,
                started,
            ));
        }
        // An `Upgrade: h2c` offer would turn this HTTP/1.1 connection into frames mid-way: it is
        // dropped, and the upstream answers in HTTP/1.1 (h2c by prior knowledge is served as
        // HTTP/2 from the first byte, `serve_h2`).
        drop_h2c_offer(req.headers_mut());
        let guest_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let capture = self.gw.capture_bytes;
        let grpc = super::grpc::is_call(req.method(), req.uri(), req.headers());
        let req_tap = Tap::new(capture).framed(grpc);
        let resp_tap = Tap::new(capture).framed(grpc);
        let req_headers = header_list(req.headers());
        let version = version_name(req.version());
        let authority = req.uri().authority().map(|a| without_userinfo(a.as_str()));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, guest_upgrade.is_some());
        let upstream_req = Request::from_parts(parts, TapBody::new(body, req_tap.clone()).boxed());
        let mut event = http_event(&self, method.to_string(), url, req_headers);
        event.version = Some(version.into());
        let mut pending = Unanswered {
            conn: &self,
            event: Some(event),
            req: req_tap.clone(),
            resp: resp_tap.clone(),
            started,
        };
        let sent = match pending.event.as_mut() {
            Some(event) => {
                self.send(
                    host.as_deref(),
                    target,
                    upstream_req,
                    authority.as_deref(),
                    event,
                )
                .await
            }
            None => Err("no record".into()),
        };
        let Some(mut event) = pending.event.take() else {
            return Ok(plain_response(StatusCode::BAD_GATEWAY, "idagent gateway\n"));
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                event.note = Some(format!("error: {e}"));
                finish_event(&self.gw, event, &req_tap, &resp_tap, started);
                return Ok(plain_response(
                    StatusCode::BAD_GATEWAY,
                    &format!("idagent gateway: {e}\n"),
                ));
            }
        };
        event.status = Some(resp.status().as_u16());
        event.resp_headers = header_list(resp.headers());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(guest_up) = guest_upgrade {
                let upstream_up = hyper::upgrade::on(&mut resp);
                let mut upgrade = upgrade::from_response(self.meta.id, resp.headers());
                upgrade.known = Some(self.gw.known.clone());
                let audit = self.gw.audit.clone();
                tokio::spawn(async move {
                    if let (Ok(g), Ok(u)) = (guest_up.await, upstream_up.await) {
                        // Both legs, with a WebSocket's messages logged (`ws` events).
                        upgrade::relay(TokioIo::new(g), TokioIo::new(u), upgrade, audit).await;
                    }
                });
            }
            event.note = Some("upgrade".into());
            finish_event(&self.gw, event, &req_tap, &resp_tap, started);
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, empty_body()));
        }
        let (parts, body) = resp.into_parts();
        let gw = self.gw.clone();
        let (rq, rs) = (req_tap.clone(), resp_tap.clone());
        let body = TapBody::new(body, resp_tap)
            .on_end(move || finish_event(&gw, event, &rq, &rs, started));
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// `host[:port]` of an authority: the userinfo of an absolute-form URL is the guest's
/// credential for that URL, never forwarded as part of the `Host` upstream.
fn without_userinfo(authority: &str) -> String {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, hostport)| hostport)
        .to_owned()
}

/// Removes an `Upgrade: h2c` offer (and its `HTTP2-Settings`); other upgrades stay.
fn drop_h2c_offer(headers: &mut HeaderMap) {
    let h2c = headers.get_all(http::header::UPGRADE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("h2c"))
    });
    if h2c {
        headers.remove(http::header::UPGRADE);
        headers.remove("http2-settings");
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
}

/// Hop-by-hop headers belong to one leg; `Connection: upgrade` must survive for upgrades.
/// `te: trailers` is the one `te` both HTTP versions carry end to end (gRPC requires it: a
/// server that does not see it may refuse the call), so it is kept, alone.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let trailers = headers.get_all(http::header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    for h in ["proxy-connection", "keep-alive", "proxy-authenticate", "te"] {
        headers.remove(h);
    }
    if trailers {
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
    if !upgrade {
        headers.remove(http::header::CONNECTION);
    }
}

/// Shapes a request for the upstream leg's protocol. HTTP/1.1: origin-form target and the
/// routed authority as `Host` (whatever `Host` the guest also sent). HTTP/2: the authority as
/// `:authority` in an absolute URI, and none of the headers HTTP/2 forbids.
fn for_upstream(req: &mut Request<UpBody>, h2: bool, scheme: &str, authority: Option<&str>) {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let host = authority.map(str::to_owned).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    if h2 {
        *req.version_mut() = http::Version::HTTP_2;
        for h in [
            http::header::CONNECTION,
            http::header::UPGRADE,
            http::header::TRANSFER_ENCODING,
            http::header::HOST,
        ] {
            req.headers_mut().remove(h);
        }
        let absolute = host.and_then(|h| format!("{scheme}://{h}{path}").parse::<Uri>().ok());
        *req.uri_mut() =
            absolute.unwrap_or_else(|| path.parse().unwrap_or_else(|_| Uri::from_static("/")));
    } else {
        *req.version_mut() = http::Version::HTTP_11;
        *req.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
        if let Some(h) = authority.and_then(|a| http::HeaderValue::from_str(a).ok()) {
            req.headers_mut().insert(http::header::HOST, h);
        }
    }
}

fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn plain_response(status: StatusCode, text: &str) -> Response<GuestBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(text.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

fn empty_body() -> GuestBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_methods_are_recognised() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http(b"CONNECT a:443 HTTP/1.1\r\n"));
        assert!(!looks_like_http(b"\x16\x03\x01"));
        assert!(!looks_like_http(b"SSH-2.0-"));
        assert!(!looks_like_http(b"GE"));
    }
}

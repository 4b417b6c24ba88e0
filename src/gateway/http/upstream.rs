//! Upstream connections of the HTTP gateway.
//!
//! Owns: opening one (TCP, or TLS verified for the upstream's name; ALPN `h2` offered when the
//! guest's own leg is HTTP/2, else `http/1.1` only), the HTTP handshake for the protocol the
//! upstream agreed (h2 over TLS by ALPN, h2c by prior knowledge when the guest used it), and the
//! gateway-wide pool of HTTP/2 connections, one per upstream, shared by every guest connection
//! that goes there (an HTTP/2 connection multiplexes streams; its TCP and TLS set-up is paid
//! once per upstream, not once per guest connection).
//!
//! Pooled connections are keyed by everything the dial and the TLS verification were decided
//! on (the guest's destination, its resolved name, the TLS server name), so a stream only ever
//! rides a connection that a fresh dial for it would have produced. Per-request routing and
//! policy are still decided per stream, before a stream is sent (`gate.rs`).

use super::{Conn, UpstreamKind};
use crate::gateway::{FlowMeta, Gateway};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// What the gateway sends upstream: the guest's body through its tap.
pub type UpBody = BoxBody<Bytes, hyper::Error>;
pub type H1Sender = hyper::client::conn::http1::SendRequest<UpBody>;
pub type H2Sender = hyper::client::conn::http2::SendRequest<UpBody>;

/// Distinct upstreams with a pooled HTTP/2 connection. Past it a new upstream's connection is
/// used by the guest connection that opened it and not shared (nothing is refused).
pub const MAX_POOLED_UPSTREAMS: usize = 256;

/// An upstream connection ready for requests.
#[derive(Debug)]
pub enum Sender {
    H1(H1Sender),
    H2(H2Sender),
}

/// A connection just opened (or taken from the pool) and what it was opened to.
#[derive(Debug)]
pub struct Opened {
    pub sender: Sender,
    pub addr: SocketAddr,
    /// The upstream TLS verification result (`ok`, `failed: …`), for TLS upstreams.
    pub verify: Option<String>,
}

impl Opened {
    pub fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }
}

/// What a pooled connection was decided on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    dst: SocketAddr,
    name: Option<String>,
    /// The TLS server name (None: cleartext h2c).
    server_name: Option<String>,
}

impl PoolKey {
    pub fn new(meta: &FlowMeta, kind: &UpstreamKind) -> Self {
        Self {
            dst: meta.dst,
            name: meta.name.clone(),
            server_name: match kind {
                UpstreamKind::Tls { server_name, .. } => Some(server_name.clone()),
                UpstreamKind::Plain => None,
            },
        }
    }
}

struct Pooled {
    sender: H2Sender,
    addr: SocketAddr,
    verify: Option<String>,
}

/// The gateway's HTTP/2 connections, one per upstream.
#[derive(Default)]
pub struct H2Pool {
    conns: Mutex<HashMap<PoolKey, Pooled>>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.conns.lock().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("H2Pool").field("upstreams", &n).finish()
    }
}

impl H2Pool {
    /// A live connection to `key`'s upstream (a closed one, after GOAWAY or an error, is
    /// dropped here, and the caller opens a new one).
    pub fn get(&self, key: &PoolKey) -> Option<Opened> {
        let mut conns = self.conns.lock().ok()?;
        match conns.get(key) {
            Some(p) if !p.sender.is_closed() => Some(Opened {
                sender: Sender::H2(p.sender.clone()),
                addr: p.addr,
                verify: p.verify.clone(),
            }),
            Some(_) => {
                conns.remove(key);
                None
            }
            None => None,
        }
    }

    /// Shares `sender` for later streams to `key`'s upstream.
    pub fn put(&self, key: PoolKey, sender: &H2Sender, addr: SocketAddr, verify: Option<String>) {
        let Ok(mut conns) = self.conns.lock() else {
            return;
        };
        if conns.len() >= MAX_POOLED_UPSTREAMS {
            conns.retain(|_, p| !p.sender.is_closed());
        }
        if conns.len() < MAX_POOLED_UPSTREAMS || conns.contains_key(&key) {
            conns.insert(
                key,
                Pooled {
                    sender: sender.clone(),
                    addr,
                    verify,
                },
            );
        }
    }
}

/// Opens a connection to the upstream of `meta` (routing and refusal by `Gateway::dial`).
/// `h2`: the guest's leg is HTTP/2, so offer `h2` upstream (TLS ALPN; cleartext: h2c prior
/// knowledge, which is what the guest itself used). An HTTP/2 connection goes into the pool.
pub async fn open(
    gw: &Gateway,
    meta: &FlowMeta,
    kind: &UpstreamKind,
    host: Option<&str>,
    h2: bool,
) -> Result<Opened, OpenError> {
    let name = match kind {
        UpstreamKind::Tls { server_name, .. } => Some(server_name.as_str()),
        UpstreamKind::Plain => host,
    };
    let (tcp, addr) = gw
        .dial(meta, name)
        .await
        .map_err(|e| OpenError::new(e.to_string(), None, None))?;
    let _ = tcp.set_nodelay(true);
    let (io, use_h2, verify): (Box<dyn super::Io>, bool, Option<String>) = match kind {
        UpstreamKind::Plain => (Box::new(tcp), h2, None),
        UpstreamKind::Tls { server_name, .. } => {
            let tls = gw
                .tls
                .as_ref()
                .ok_or_else(|| OpenError::new("no TLS context".into(), None, Some(addr)))?;
            match tls.connect_upstream_alpn(server_name, tcp, h2).await {
                Ok(s) => {
                    let agreed = s.get_ref().1.alpn_protocol() == Some(b"h2");
                    (Box::new(s), agreed, Some("ok".into()))
                }
                Err(e) => {
                    return Err(OpenError::new(
                        format!("upstream tls: {e}"),
                        Some(format!("failed: {e}")),
                        Some(addr),
                    ))
                }
            }
        }
    };
    let sender = if use_h2 {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| {
                OpenError::new(
                    format!("upstream h2 handshake: {e}"),
                    verify.clone(),
                    Some(addr),
                )
            })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        gw.h2_pool
            .put(PoolKey::new(meta, kind), &sender, addr, verify.clone());
        Sender::H2(sender)
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .preserve_header_case(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| {
                OpenError::new(
                    format!("upstream http handshake: {e}"),
                    verify.clone(),
                    Some(addr),
                )
            })?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        sender.ready().await.map_err(|e| {
            OpenError::new(
                format!("upstream not ready: {e}"),
                verify.clone(),
                Some(addr),
            )
        })?;
        Sender::H1(sender)
    };
    Ok(Opened {
        sender,
        addr,
        verify,
    })
}

/// A connection that could not be opened: why, and the TLS verification result if it got
/// that far (the `tls` record's `upstream_verify`).
#[derive(Debug)]
pub struct OpenError {
    pub reason: String,
    pub verify: Option<String>,
    /// The upstream address, when the dial got one.
    pub addr: Option<SocketAddr>,
}

impl OpenError {
    fn new(reason: String, verify: Option<String>, addr: Option<SocketAddr>) -> Self {
        Self {
            reason,
            verify,
            addr,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Before the guest's handshake finishes: the upstream connection a guest that offered `h2`
/// will use, so the protocol the guest is offered is one the upstream speaks (honest ALPN).
/// A pooled HTTP/2 connection is reused without a dial. `None` when it cannot be opened (the
/// guest's requests then get the error, each in its own `http` record, as they would without
/// the early dial).
pub async fn preopen(
    gw: &Gateway,
    meta: &FlowMeta,
    kind: &UpstreamKind,
) -> Result<Opened, OpenError> {
    if let Some(pooled) = gw.h2_pool.get(&PoolKey::new(meta, kind)) {
        return Ok(pooled);
    }
    match tokio::time::timeout(PREOPEN_TIMEOUT, open(gw, meta, kind, None, true)).await {
        Ok(opened) => opened,
        Err(_) => Err(OpenError::new(
            format!("upstream did not answer within {PREOPEN_TIMEOUT:?}"),
            None,
            None,
        )),
    }
}

/// How long the guest's handshake waits for the upstream to be reached (see [`preopen`]): an
/// upstream that does not answer must not hold the guest's handshake; past it the guest is
/// offered the default, and its requests retry the dial.
pub const PREOPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Conn {
    /// Records what a request's connection reached (the flow's `upstream`, the `tls` record's
    /// verification result).
    pub(super) fn note_upstream(&self, opened: &Opened) {
        if let Ok(mut u) = self.upstream.lock() {
            *u = Some(opened.addr);
        }
        if let Some(v) = &opened.verify {
            self.set_verify(v.clone());
        }
    }
}

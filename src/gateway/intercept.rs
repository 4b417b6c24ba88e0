//! TLS flows: interception with the run's CA, or passthrough.
//!
//! Owns: reading the guest's ClientHello (already sniffed), terminating TLS with a leaf minted
//! for its SNI (or for the dialled address when there is none), opening TLS to the upstream
//! with verification against the host's roots plus `--upstream-ca`, and the `tls` audit event.
//! A guest that refuses our certificate (pinning, or a CA it does not trust) is logged as
//! `mode: rejected` with the alert it sent. Does not own: HTTP inside (see `http.rs`).

use super::http::upstream;
use super::http::{self, UpstreamKind};
use super::tap::{Counters, GuestStream};
use super::{sniff, FlowMeta, Gateway, TlsMode};
use crate::audit::{EventBody, TlsEvent};
use crate::tls::{self, LeafName, RunCa};
use bytes::Bytes;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, KeyLog, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The run's TLS material: CA, guest-facing and upstream configs, key log.
pub struct TlsContext {
    pub ca: Arc<RunCa>,
    keylog: Arc<dyn KeyLog>,
    server: Arc<ServerConfig>,
    /// `server` offering `h2` first (the default for guests that offer it).
    server_h2: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// `client` offering `h2` first, for guests whose own leg is HTTP/2.
    client_h2: Arc<ClientConfig>,
    /// Speak HTTP/2 where both sides can (off with `--http1-only`).
    http2: bool,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    pub fn new(
        ca: Arc<RunCa>,
        keylog: Arc<dyn KeyLog>,
        upstream_ca_pem: Option<&[u8]>,
    ) -> Result<Self, tls::TlsError> {
        let server = tls::server_config(ca.clone(), keylog.clone())?;
        let server_h2 = tls::offer_h2(&server);
        let client = tls::upstream_client_config(upstream_ca_pem, None)?;
        let mut client_h2 = (*client).clone();
        client_h2.alpn_protocols = vec![b"h2".to_vec(), tls::ALPN_HTTP11.to_vec()];
        Ok(Self {
            ca,
            keylog,
            server,
            server_h2,
            client,
            client_h2: Arc::new(client_h2),
            http2: true,
        })
    }

    /// `--http1-only`: HTTP/1.1 on both legs; a guest that offers only `h2` is refused in the
    /// handshake (no protocol in common), and the `tls` record says so.
    pub fn with_http1_only(mut self, only: bool) -> Self {
        self.http2 = !only;
        self
    }

    /// Whether HTTP/2 is spoken where both sides can.
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// TLS to the upstream, verified for `server_name` (a DNS name or an IP literal).
    pub async fn connect_upstream(
        &self,
        server_name: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        tokio_rustls::TlsConnector::from(self.client.clone())
            .connect(name, tcp)
            .await
    }

    /// [`Self::connect_upstream`], offering `h2` first when `h2` (the agreed protocol is the
    /// stream's `alpn_protocol()`).
    pub async fn connect_upstream_alpn(
        &self,
        server_name: &str,
        tcp: TcpStream,
        h2: bool,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let config = if h2 { &self.client_h2 } else { &self.client };
        tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
    }

    /// The guest-facing config for this ClientHello: `h2` first for a guest that offers it,
    /// unless the upstream was reached and speaks only HTTP/1.1 and the guest can too
    /// (`upstream_h1`), or `--http1-only`. A guest that offers only `h2` to an HTTP/1.1
    /// upstream still gets `h2`: its streams are forwarded as HTTP/1.1 requests.
    fn server_for(
        &self,
        sni: Option<&str>,
        dst: SocketAddr,
        offered: &[Vec<u8>],
        upstream_h1: bool,
    ) -> Result<Arc<ServerConfig>, tls::TlsError> {
        let offers_h11 = offered.iter().any(|p| p == tls::ALPN_HTTP11);
        let h2 = self.http2 && offered.iter().any(|p| p == b"h2") && !(upstream_h1 && offers_h11);
        match sni {
            Some(_) if h2 => Ok(self.server_h2.clone()),
            Some(_) => Ok(self.server.clone()),
            // No SNI: the guest dialled an address; a leaf for that IP passes its name check.
            None => {
                let config = tls::server_config_for(
                    self.ca.clone(),
                    self.keylog.clone(),
                    LeafName::Ip(dst.ip()),
                )?;
                Ok(if h2 { tls::offer_h2(&config) } else { config })
            }
        }
    }
}

/// Serves a flow whose first bytes are a TLS ClientHello.
pub async fn serve<S>(
    gw: Arc<Gateway>,
    guest: GuestStream<S>,
    meta: &FlowMeta,
    first: &[u8],
) -> Result<Option<SocketAddr>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hello = match tls::parse_client_hello(first) {
        Ok(h) => h,
        Err(e) => {
            emit_tls(
                &gw,
                meta,
                None,
                None,
                Hello {
                    refused_by: Some("idagent"),
                    ..Hello::default()
                },
                "rejected",
                None,
                Some(format!("malformed ClientHello: {e}")),
            );
            return Err(format!("malformed ClientHello: {e}"));
        }
    };
    let sni = hello.server_name.clone();
    if let Some(rule) = refused_by_policy(&gw, meta, sni.as_deref(), &hello.alpn) {
        let mut guest = guest;
        // A fatal access_denied alert, before any handshake or upstream dial.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut guest, &ACCESS_DENIED_ALERT).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut guest).await;
        let err = format!("denied by policy (rule {rule})");
        let hello = Hello {
            offered: &hello.alpn,
            refused_by: Some("idagent"),
            upstream_alpn: None,
        };
        emit_tls(
            &gw,
            meta,
            sni,
            None,
            hello,
            "denied",
            None,
            Some(err.clone()),
        );
        return Err(err);
    }
    let ctx = match (&gw.tls, gw.tls_mode) {
        (Some(ctx), TlsMode::Intercept) => ctx,
        _ => return passthrough(gw.clone(), guest, meta, sni).await,
    };
    let server_name = sni
        .clone()
        .or_else(|| meta.name.clone())
        .unwrap_or_else(|| meta.dst.ip().to_string());
    let kind = UpstreamKind::Tls {
        server_name: server_name.clone(),
        sni: sni.clone(),
    };
    // Honest ALPN: a guest that offers `h2` is offered what the upstream speaks, so the
    // upstream is reached first (or its pooled HTTP/2 connection reused).
    let (pre, pre_error) = if ctx.http2 && hello.alpn.iter().any(|p| p == b"h2") {
        match upstream::preopen(&gw, meta, &kind).await {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let upstream_alpn = pre
        .as_ref()
        .map(|o| if o.is_h2() { "h2" } else { "http/1.1" }.to_owned());
    let upstream_h1 = pre.as_ref().is_some_and(|o| !o.is_h2());
    let pre_verify = pre
        .as_ref()
        .and_then(|o| o.verify.clone())
        .or_else(|| pre_error.as_ref().and_then(|e| e.verify.clone()));
    let config = ctx
        .server_for(sni.as_deref(), meta.dst, &hello.alpn, upstream_h1)
        .map_err(|e| e.to_string())?;
    // A guest that starts a handshake and stalls holds its flow (and the handshake state):
    // it gets as long as a request head would.
    let accepted = tokio::time::timeout(
        http::HEADER_READ_TIMEOUT,
        tokio_rustls::TlsAcceptor::from(config.clone()).accept(guest),
    )
    .await;
    // A failed handshake: one `rejected` record saying who ended it and why.
    let rejected = |who: &'static str, err: String| {
        let offered = Hello {
            offered: &hello.alpn,
            refused_by: Some(who),
            upstream_alpn: upstream_alpn.clone(),
        };
        emit_tls(
            &gw,
            meta,
            sni.clone(),
            None,
            offered,
            "rejected",
            pre_verify.clone(),
            Some(err.clone()),
        );
        err
    };
    let tls_stream = match accepted {
        Err(_) => return Err(rejected("idagent", TLS_HANDSHAKE_TIMEOUT_REASON.to_owned())),
        Ok(Err(e)) => {
            let (who, mut err) = handshake_failure(&e, &hello.alpn, &config.alpn_protocols);
            if !ctx.http2 && err.starts_with("no application protocol") {
                err.push_str(" (--http1-only)");
            }
            return Err(rejected(who, err));
        }
        Ok(Ok(s)) => s,
    };
    let alpn = tls_stream
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let (upstream, verify, error) = if alpn.as_deref() == Some("h2") {
        // HTTP/2 was agreed: no sniffing (the preface is not an HTTP/1 request line).
        let inner = GuestStream::new(tls_stream, Bytes::new(), Arc::new(Counters::default()));
        let end = http::serve_h2(gw.clone(), inner, meta, kind, pre).await;
        (end.upstream, end.upstream_verify, end.error)
    } else {
        // What runs inside: HTTP/1.x, or opaque bytes relayed over TLS.
        let mut tls_stream = tls_stream;
        let inner_first = sniff(&mut tls_stream)
            .await
            .map_err(|e| format!("read inside tls: {e}"))?;
        let inner = GuestStream::new(
            tls_stream,
            inner_first.clone(),
            Arc::new(Counters::default()),
        );
        // An HTTP/1.1 upstream reached early serves the guest's HTTP/1.1 requests.
        let pre = pre.filter(|o| !o.is_h2());
        if http::looks_like_http(&inner_first) {
            let end = http::serve(gw.clone(), inner, meta, kind, pre).await;
            (end.upstream, end.upstream_verify, end.error)
        } else if http::looks_like_h2_preface(&inner_first) && ctx.http2 {
            // HTTP/2 by prior knowledge inside TLS (no ALPN): served as HTTP/2 all the same.
            let end = http::serve_h2(gw.clone(), inner, meta, kind, pre).await;
            (end.upstream, end.upstream_verify, end.error)
        } else {
            relay_inside(&gw, ctx, inner, meta, &server_name).await
        }
    };
    let offered = Hello {
        offered: &hello.alpn,
        refused_by: None,
        upstream_alpn,
    };
    emit_tls(
        &gw,
        meta,
        sni,
        alpn,
        offered,
        "intercepted",
        verify,
        error.clone(),
    );
    match error {
        Some(e) => Err(e),
        None => Ok(upstream),
    }
}

/// ALPN names written per `tls` record (a ClientHello may list many).
const MAX_ALPN_LOGGED: usize = 16;

/// Why the guest-facing handshake failed, and who ended it. rustls reports our own refusals
/// (no protocol in common) and the guest's alerts (a certificate it does not trust) as
/// distinct errors; anything else is the guest going away mid-handshake.
fn handshake_failure(
    e: &std::io::Error,
    offered: &[Vec<u8>],
    served: &[Vec<u8>],
) -> (&'static str, String) {
    let names = |list: &[Vec<u8>]| {
        list.iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoApplicationProtocol) => (
            "idagent",
            format!(
                "no application protocol in common: the guest offered [{}], idagent serves [{}]",
                names(offered),
                names(served)
            ),
        ),
        Some(rustls::Error::AlertReceived(alert)) => (
            "guest",
            format!("the guest rejected the handshake (alert {alert:?}): it does not trust our certificate, or pins another"),
        ),
        Some(other) => ("idagent", format!("handshake failed: {other}")),
        None => ("guest", format!("the guest ended the handshake: {e}")),
    }
}

/// The `close_reason` (and `tls` error) of a guest handshake that did not finish within
/// [`http::HEADER_READ_TIMEOUT`].
pub const TLS_HANDSHAKE_TIMEOUT_REASON: &str = "tls_handshake_timeout";

/// A TLS record holding one fatal `access_denied` (49) alert, TLS 1.2 record version (what
/// TLS 1.3 peers also send before a handshake).
const ACCESS_DENIED_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

/// The TLS decision point: the policy decides the ClientHello's SNI (and the address the
/// guest dialled) before anything else happens. Returns the deciding rule of an enforced
/// denial.
fn refused_by_policy(
    gw: &Gateway,
    meta: &FlowMeta,
    sni: Option<&str>,
    alpn: &[Vec<u8>],
) -> Option<String> {
    if !gw.enforcer.active() {
        return None;
    }
    let alpn: Vec<String> = alpn
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let req = idagent_policy::Request::Tls {
        sni,
        alpn: &alpn,
        name: meta.name.as_deref(),
        addr: meta.dst.ip().to_canonical(),
        port: meta.dst.port(),
    };
    match gw
        .enforcer
        .check(&req, crate::enforce::Context::flow(meta.id), "tls_alert")
    {
        crate::enforce::Permit::Allow => None,
        crate::enforce::Permit::Deny(d) => Some(d.rule),
    }
}

/// Non-HTTP bytes inside an intercepted session: relayed over a verified upstream TLS session.
async fn relay_inside<S>(
    gw: &Gateway,
    ctx: &TlsContext,
    mut inner: S,
    meta: &FlowMeta,
    server_name: &str,
) -> (Option<SocketAddr>, Option<String>, Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = gw.stream_permitted(meta, true) {
        return (None, None, Some(e));
    }
    let (tcp, addr) = match gw.dial(meta, Some(server_name)).await {
        Ok(x) => x,
        Err(e) => return (None, None, Some(e.to_string())),
    };
    let mut up = match ctx.connect_upstream(server_name, tcp).await {
        Ok(s) => s,
        Err(e) => {
            return (
                Some(addr),
                Some(format!("failed: {e}")),
                Some(format!("upstream tls: {e}")),
            )
        }
    };
    let err = tokio::io::copy_bidirectional(&mut inner, &mut up)
        .await
        .err()
        .map(|e| format!("relay: {e}"));
    (Some(addr), Some("ok".into()), err)
}

/// `--tls passthrough`: relay the encrypted bytes, log the SNI.
async fn passthrough<S>(
    gw: Arc<Gateway>,
    mut guest: GuestStream<S>,
    meta: &FlowMeta,
    sni: Option<String>,
) -> Result<Option<SocketAddr>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    emit_tls(
        &gw,
        meta,
        sni.clone(),
        None,
        Hello::default(),
        "passthrough",
        None,
        None,
    );
    let (mut up, addr) = gw
        .dial(meta, sni.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    tokio::io::copy_bidirectional(&mut guest, &mut up)
        .await
        .map_err(|e| format!("relay: {e}"))?;
    Ok(Some(addr))
}

/// What the guest offered and who refused, for the `tls` record.
#[derive(Default)]
struct Hello<'a> {
    offered: &'a [Vec<u8>],
    refused_by: Option<&'static str>,
    upstream_alpn: Option<String>,
}

#[allow(clippy::too_many_arguments)] // one record's fields
fn emit_tls(
    gw: &Gateway,
    meta: &FlowMeta,
    sni: Option<String>,
    alpn: Option<String>,
    hello: Hello<'_>,
    mode: &'static str,
    upstream_verify: Option<String>,
    error: Option<String>,
) {
    gw.audit.emit(EventBody::Tls(TlsEvent {
        flow: meta.id,
        sni,
        alpn,
        alpn_offered: hello
            .offered
            .iter()
            .take(MAX_ALPN_LOGGED)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        refused_by: hello.refused_by.map(str::to_owned),
        upstream_alpn: hello.upstream_alpn,
        mode: mode.into(),
        upstream_verify,
        error,
    }));
}

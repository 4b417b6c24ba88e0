//! The accept loop and HTTP/1.1 plumbing shared by every fake.
//!
//! Owns: accepting on one listener, the TLS handshake, serving HTTP/1.1 with hyper (keep-alive,
//! `Expect: 100-continue`, chunked bodies), reading and recording each request, and routing it
//! to the SSE probe or the fake's own handler. Does not own: what any fake answers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::body::{full, ResBody};
use crate::record::{FakeServer, Recorded, Recorder};
use crate::sse::SseProbe;
use crate::{google, openai};

/// Request bodies are kept up to this size; longer ones are answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Connections open at once per fake; further ones are closed on accept.
pub const MAX_CONNECTIONS_PER_SERVER: usize = 512;
/// A TLS client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// State shared by all fakes of one [`crate::Fakes`].
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) recorder: Recorder,
    pub(crate) sse: Arc<SseProbe>,
    connections: AtomicU64,
    completions: AtomicU64,
}

/// What a request handler knows about its connection.
#[derive(Debug)]
struct Conn {
    server: FakeServer,
    sni: Option<String>,
    id: u64,
}

/// Serves `server` on `listener` until `shutdown` changes or its sender is dropped; open
/// connections are aborted when this returns (their tasks live in a local `JoinSet`).
pub(crate) async fn serve(
    listener: TcpListener,
    server: FakeServer,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_CONNECTIONS_PER_SERVER {
            continue; // dropping `tcp` closes it
        }
        let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        conns.spawn(connection(
            tcp,
            server,
            tls.clone(),
            Arc::clone(&shared),
            id,
        ));
    }
}

async fn connection(
    tcp: TcpStream,
    server: FakeServer,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    id: u64,
) {
    // Events must leave as soon as they are written, not after Nagle's delay.
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = tls else {
        let conn = Conn {
            server,
            sni: None,
            id,
        };
        return serve_http(TokioIo::new(tcp), conn, shared).await;
    };
    let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
        return; // a failed handshake is the client's problem; the fake just hangs up
    };
    let sni = stream.get_ref().1.server_name().map(str::to_owned);
    let conn = Conn { server, sni, id };
    serve_http(TokioIo::new(stream), conn, shared).await;
}

async fn serve_http<I>(io: I, conn: Conn, shared: Arc<Shared>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let service = service_fn(move |request| {
        let conn = Arc::clone(&conn);
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(request, &conn, &shared).await) }
    });
    // Errors here are clients hanging up or sending garbage: nothing for a fake to do.
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

async fn handle(mut request: Request<Incoming>, conn: &Conn, shared: &Shared) -> Response<ResBody> {
    // `GET /upgrade-echo` with an `Upgrade` header switches protocols (101) and then echoes
    // every byte back: enough to prove a proxy carries an upgraded (WebSocket-style) stream.
    let upgrade = (request.uri().path() == "/upgrade-echo"
        && request.headers().contains_key(hyper::header::UPGRADE))
    .then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let body = read_body(body).await;
    let path = parts.uri.path().to_owned();
    shared.recorder.push(Recorded {
        server: conn.server,
        tls: conn.server.tls(),
        sni: conn.sni.clone(),
        connection: conn.id,
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| path.clone(), ToString::to_string),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body: body.bytes.clone(),
        body_truncated: body.truncated,
    });
    if body.truncated {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    if body.failed {
        return plain(StatusCode::BAD_REQUEST, "request body ended early\n");
    }
    match (&parts.method, path.as_str()) {
        (&Method::GET, "/sse") => Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(shared.sse.stream())
            .unwrap_or_else(|_| internal_error()),
        (&Method::GET, "/ack") => {
            shared.sse.ack();
            plain(StatusCode::OK, "ok\n")
        }
        (&Method::GET, "/upgrade-echo") if upgrade.is_some() => {
            if let Some(upgrade) = upgrade {
                tokio::spawn(async move {
                    if let Ok(upgraded) = upgrade.await {
                        let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                });
            }
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(full(bytes::Bytes::new()))
                .unwrap_or_else(|_| internal_error())
        }
        _ => match conn.server {
            FakeServer::GoogleHttp | FakeServer::GoogleHttps => {
                google::respond(&parts.method, &path)
            }
            FakeServer::OpenAiHttps => {
                let seq = shared.completions.fetch_add(1, Ordering::Relaxed) + 1;
                openai::respond(&parts.method, &path, &parts.headers, &body.bytes, seq)
            }
        },
    }
}

/// A request body as far as it was read.
struct BodyRead {
    bytes: Vec<u8>,
    /// Longer than [`MAX_BODY_BYTES`]; `bytes` holds the first `MAX_BODY_BYTES`.
    truncated: bool,
    /// The connection failed before the body ended.
    failed: bool,
}

async fn read_body(mut body: Incoming) -> BodyRead {
    let mut read = BodyRead {
        bytes: Vec::new(),
        truncated: false,
        failed: false,
    };
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            read.failed = true;
            break;
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let room = MAX_BODY_BYTES - read.bytes.len();
        if data.len() > room {
            read.bytes.extend_from_slice(&data[..room]);
            read.truncated = true;
            break;
        }
        read.bytes.extend_from_slice(&data);
    }
    read
}

fn plain(status: StatusCode, text: &'static str) -> Response<ResBody> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(text))
        .unwrap_or_else(|_| internal_error())
}

/// The fallback when a response cannot be built (it never fails with the static headers used
/// here, but a fake must not panic on the request path either).
pub(crate) fn internal_error() -> Response<ResBody> {
    let mut response = Response::new(full("internal error\n"));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

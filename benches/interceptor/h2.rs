//! The HTTP/2 load client of the interceptor bench (`client h2`): hyper's HTTP/2 client over
//! rustls with ALPN `h2` only, on one connection, run unchanged on the host (direct) and in
//! the idagent guest (intercepted). Like the HTTP/1 client it prints one `BENCH {json}` line
//! per result.
//!
//! Owns: the keep-alive latency loop (sequential `GET /small` on one connection), the 8-stream
//! loops (8 concurrent streams on that same connection, `GET /small` and then bulk bodies,
//! each for a fixed time) and their events. Does not own: the server, the guest or the report.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::json;

use crate::client::{emit, SMALL_PATH, WARMUP_REQUESTS};

/// Concurrent streams of the throughput loops.
pub const STREAMS: usize = 8;
/// Longest any request (or the connect and handshake) may take: every loop stays bounded.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What `client h2` needs.
#[derive(Debug, Clone)]
pub struct Opts {
    pub addr: SocketAddr,
    pub name: String,
    pub ca: String,
    pub requests: usize,
    /// Duration of each 8-stream loop.
    pub secs: f64,
    /// Body length of one bulk stream request.
    pub bulk_bytes: u64,
}

/// Runs the three measurements; the first error ends the mode.
pub fn run(o: &Opts) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut sender = connect(o).await?;
        let small = uri(o, SMALL_PATH);
        for _ in 0..WARMUP_REQUESTS {
            get(&mut sender, &small).await?;
        }
        let mut us = Vec::with_capacity(o.requests);
        for _ in 0..o.requests {
            let t0 = Instant::now();
            get(&mut sender, &small).await?;
            us.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        us.sort_by(f64::total_cmp);
        let at = |q: f64| {
            us.get(((us.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        emit(json!({"metric": "lat_h2", "p50_us": at(0.5), "p99_us": at(0.99), "n": o.requests}));

        let (ok, bytes, secs) = streams(&sender, &small, o.secs).await?;
        emit(
            json!({"metric": "h2_streams", "streams": STREAMS, "ok": ok, "bytes": bytes,
                    "secs": secs}),
        );
        let bulk = uri(o, &format!("/zeros/{}", o.bulk_bytes));
        let (ok, bytes, secs) = streams(&sender, &bulk, o.secs).await?;
        if bytes != ok * o.bulk_bytes {
            return Err(io::Error::other(format!(
                "bulk streams read {bytes} bytes for {ok} bodies of {}",
                o.bulk_bytes
            )));
        }
        emit(
            json!({"metric": "h2_bulk", "streams": STREAMS, "ok": ok, "bytes": bytes,
                    "secs": secs}),
        );
        Ok(())
    })
}

/// `https://NAME[:PORT]PATH`: the authority names the port dialled unless it is 443, as a
/// browser's would (the gateway answers `421` to a request for another port than the one its
/// connection reaches).
fn uri(o: &Opts, path: &str) -> String {
    match o.addr.port() {
        443 => format!("https://{}{path}", o.name),
        port => format!("https://{}:{port}{path}", o.name),
    }
}

/// TCP, TLS with ALPN `h2` only (verified against `--ca`), then the HTTP/2 handshake. A server
/// (or interceptor) that does not agree on `h2` is an error, not a silent HTTP/1.1.
async fn connect(o: &Opts) -> io::Result<SendRequest<Empty<Bytes>>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&o.ca)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
    roots.add_parsable_certificates(certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(o.name.clone()).map_err(io::Error::other)?;
    let setup = async {
        let tcp = tokio::net::TcpStream::connect(o.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() != Some(b"h2") {
            return Err(io::Error::other(format!(
                "the server agreed ALPN {:?}, not h2",
                alpn.map(|a| String::from_utf8_lossy(&a).into_owned())
            )));
        }
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("client: h2 connection: {e}");
            }
        });
        Ok(sender)
    };
    tokio::time::timeout(IO_TIMEOUT, setup)
        .await
        .map_err(|_| io::Error::other("h2 connect timed out"))?
}

/// One `GET`; returns the body length. A non-2xx status is an error.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, uri: &str) -> io::Result<u64> {
    let req = http::Request::get(uri)
        .body(Empty::<Bytes>::new())
        .map_err(io::Error::other)?;
    let exchange = async {
        sender.ready().await.map_err(io::Error::other)?;
        let resp = sender.send_request(req).await.map_err(io::Error::other)?;
        if !resp.status().is_success() {
            return Err(io::Error::other(format!("status {}", resp.status())));
        }
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(io::Error::other)?.into_data() {
                n += data.len() as u64;
            }
        }
        Ok(n)
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::other(format!("GET {uri} timed out")))?
}

/// [`STREAMS`] tasks, each sending `GET uri` back to back on the shared connection until `secs`
/// have passed: (responses, body bytes, seconds until the last one finished).
async fn streams(
    sender: &SendRequest<Empty<Bytes>>,
    uri: &str,
    secs: f64,
) -> io::Result<(u64, u64, f64)> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (mut sender, uri) = (sender.clone(), uri.to_owned());
            tokio::spawn(async move {
                let (mut ok, mut bytes) = (0u64, 0u64);
                while Instant::now() < deadline {
                    bytes += get(&mut sender, &uri).await?;
                    ok += 1;
                }
                Ok::<_, io::Error>((ok, bytes))
            })
        })
        .collect();
    let (mut ok, mut bytes) = (0, 0);
    for task in tasks {
        let (o, b) = task.await.map_err(io::Error::other)??;
        ok += o;
        bytes += b;
    }
    Ok((ok, bytes, t0.elapsed().as_secs_f64()))
}

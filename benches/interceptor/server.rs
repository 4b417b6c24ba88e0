//! Host-side upstreams of the interceptor bench: one plain HTTP and two HTTPS listeners (hyper,
//! same handler) on a given address, plus the bench's own test CA for the HTTPS leaf. The
//! second HTTPS listener offers ALPN `h2` (then `http/1.1`) and serves whichever was agreed,
//! for the HTTP/2 rows; the first offers no ALPN, so it always speaks HTTP/1.1.
//!
//! Owns: `GET /zeros/<n>` (n zero bytes, streamed in 256 KiB frames with a content-length),
//! `GET /small` (64 bytes), a raw TCP listener that answers the line `BULK <n>\n` with n zero
//! bytes and a FIN (no HTTP: through idagent it takes the gateway's opaque relay), binding, and
//! stopping every connection when dropped. Does not own: the client or the report.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Largest data frame of a response body.
const CHUNK: usize = 256 * 1024;
/// Body length of `GET /small`.
const SMALL_BYTES: u64 = 64;
/// The name the HTTPS leaf is issued for (and the guest dials).
pub const NAME: &str = "bench.test";

static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// The bench CA and a `bench.test` leaf it signed: as PEM (the gRPC server, a Python process,
/// reads the leaf and its key from files) and as a rustls server config.
#[derive(Debug)]
pub struct BenchTls {
    pub ca_pem: String,
    pub leaf_pem: String,
    pub key_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

/// A fresh bench CA and its `bench.test` leaf (also valid for 127.0.0.1).
pub fn tls_setup() -> Result<BenchTls, Box<dyn std::error::Error>> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "idagent bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![NAME.to_owned()])?;
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    Ok(BenchTls {
        ca_pem: ca_cert.pem(),
        leaf_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
        config: Arc::new(config),
    })
}

/// Running listeners; dropping this stops them and every open connection.
#[derive(Debug)]
pub struct Servers {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// HTTPS with ALPN `h2` offered first.
    pub h2: SocketAddr,
    /// The raw `BULK <n>` listener.
    pub tcp: SocketAddr,
    _stop: watch::Sender<bool>,
}

/// Binds ephemeral ports on `ip` and serves until the returned value is dropped. Must be called
/// inside a tokio runtime.
pub async fn start(ip: IpAddr, tls: Arc<rustls::ServerConfig>) -> std::io::Result<Servers> {
    let (stop_tx, stop) = watch::channel(false);
    let http = TcpListener::bind((ip, 0)).await?;
    let https = TcpListener::bind((ip, 0)).await?;
    let h2 = TcpListener::bind((ip, 0)).await?;
    let raw = TcpListener::bind((ip, 0)).await?;
    let servers = Servers {
        http: http.local_addr()?,
        https: https.local_addr()?,
        h2: h2.local_addr()?,
        tcp: raw.local_addr()?,
        _stop: stop_tx,
    };
    tokio::spawn(accept_loop(http, None, stop.clone()));
    let mut h2_config = (*tls).clone();
    h2_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(accept_loop(
        https,
        Some(TlsAcceptor::from(tls)),
        stop.clone(),
    ));
    tokio::spawn(accept_loop(
        h2,
        Some(TlsAcceptor::from(Arc::new(h2_config))),
        stop.clone(),
    ));
    tokio::spawn(raw_accept_loop(raw, stop));
    Ok(servers)
}

async fn raw_accept_loop(listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = raw_bulk(stream) => {}
                _ = stop.changed() => {}
            }
        });
    }
}

/// Reads `BULK <n>\n` (at most 64 bytes), writes n zero bytes, then closes.
async fn raw_bulk(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        if stream.read(&mut byte).await? == 0 {
            return Ok(());
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&line);
    let Some(mut left) = text
        .strip_prefix("BULK ")
        .and_then(|n| n.trim().parse::<u64>().ok())
    else {
        return Ok(());
    };
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream.write_all(&ZEROS[..n]).await?;
        left -= n as u64;
    }
    stream.shutdown().await
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue; // EMFILE and the like: keep serving the connections already open
        };
        let _ = stream.set_nodelay(true);
        let (tls, stop) = (tls.clone(), stop.clone());
        tokio::spawn(async move {
            match tls {
                None => serve(stream, stop).await,
                Some(acceptor) => {
                    let Ok(s) = acceptor.accept(stream).await else {
                        return;
                    };
                    if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                        serve_h2(s, stop).await;
                    } else {
                        serve(s, stop).await;
                    }
                }
            }
        });
    }
}

async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    mut stop: watch::Receiver<bool>,
) {
    let service =
        hyper::service::service_fn(|req| async move { Ok::<_, Infallible>(handle(&req)) });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(CHUNK * 2)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = conn => {}
        _ = stop.changed() => {}
    }
}

async fn serve_h2<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    mut stop: watch::Receiver<bool>,
) {
    let service =
        hyper::service::service_fn(|req| async move { Ok::<_, Infallible>(handle(&req)) });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = conn => {}
        _ = stop.changed() => {}
    }
}

fn handle(req: &Request<Incoming>) -> Response<Zeros> {
    let path = req.uri().path();
    let len = match path.strip_prefix("/zeros/") {
        Some(n) => n.parse().ok(),
        None if path == "/small" => Some(SMALL_BYTES),
        None => None,
    };
    let mut resp = Response::new(Zeros {
        left: len.unwrap_or(0),
    });
    if len.is_none() {
        *resp.status_mut() = StatusCode::NOT_FOUND;
    }
    resp
}

/// A body of `left` zero bytes, in frames of at most [`CHUNK`].
#[derive(Debug)]
pub struct Zeros {
    left: u64,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &ZEROS[..n as usize],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

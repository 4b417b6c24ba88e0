//! The load client of the interceptor bench: one program, run unchanged on the host (case a), in
//! a plain container (case b) and in the idagent guest (case c). The bench binary is static, so
//! it runs itself in `client` mode wherever it is copied.
//!
//! Owns: blocking HTTP/1.1 over TCP and over rustls (content-length and chunked bodies), the
//! timed loops (bulk download, keep-alive latency, new connections, held connections) and one
//! `BENCH {json}` line per result on stdout. Does not own: servers, containers or the report.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde_json::json;

/// Read buffer of one connection; also the largest single read of a bulk body.
const READ_BUF: usize = 256 * 1024;
/// Requests sent before timing starts on a keep-alive connection.
pub const WARMUP_REQUESTS: usize = 50;
/// The path of the keep-alive and connection requests (`GET /small`).
pub const SMALL_PATH: &str = "/small";
/// Longest any single socket operation may block: every loop stays bounded.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Options shared by the client's modes (`--key value` pairs after the mode).
#[derive(Debug, Clone)]
struct Opts {
    http: SocketAddr,
    https: Option<SocketAddr>,
    /// The HTTPS listener that offers ALPN `h2` (mode `h2`).
    h2: Option<SocketAddr>,
    /// Body length of one request of the HTTP/2 bulk streams.
    h2_bulk_bytes: u64,
    /// The raw `BULK <n>` server (bulk over plain TCP, no HTTP).
    tcp_bulk: Option<SocketAddr>,
    name: String,
    ca: Option<String>,
    bulk_bytes: u64,
    bulk_reps: usize,
    /// Skip the HTTP bulk downloads (`--bulk-http no`), for profiling the TCP path alone.
    bulk_http: bool,
    requests: usize,
    conn_secs: f64,
    conns: usize,
    hold_secs: f64,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        http: "127.0.0.1:80".parse().map_err(|_| "default addr")?,
        https: None,
        h2: None,
        h2_bulk_bytes: 4 << 20,
        tcp_bulk: None,
        name: "bench.test".into(),
        ca: None,
        bulk_bytes: 256 << 20,
        bulk_reps: 3,
        bulk_http: true,
        requests: 2000,
        conn_secs: 3.0,
        conns: 1000,
        hold_secs: 5.0,
    };
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let val = it.next().ok_or_else(|| format!("{key} needs a value"))?;
        let bad = |_| format!("bad value for {key}: {val}");
        match key.as_str() {
            "--http" => o.http = val.parse().map_err(|_| bad(()))?,
            "--https" => o.https = Some(val.parse().map_err(|_| bad(()))?),
            "--h2" => o.h2 = Some(val.parse().map_err(|_| bad(()))?),
            "--h2-bulk-bytes" => o.h2_bulk_bytes = val.parse().map_err(|_| bad(()))?,
            "--tcp" => o.tcp_bulk = Some(val.parse().map_err(|_| bad(()))?),
            "--name" => o.name = val.clone(),
            "--ca" => o.ca = Some(val.clone()),
            "--bulk-bytes" => o.bulk_bytes = val.parse().map_err(|_| bad(()))?,
            "--bulk-reps" => o.bulk_reps = val.parse().map_err(|_| bad(()))?,
            "--bulk-http" => o.bulk_http = val != "no",
            "--requests" => o.requests = val.parse().map_err(|_| bad(()))?,
            "--conn-secs" => o.conn_secs = val.parse().map_err(|_| bad(()))?,
            "--conns" => o.conns = val.parse().map_err(|_| bad(()))?,
            "--hold-secs" => o.hold_secs = val.parse().map_err(|_| bad(()))?,
            _ => return Err(format!("unknown option {key}")),
        }
    }
    Ok(o)
}

/// `client suite|bulk|https|hold|h2 OPTIONS`; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let Some((mode, rest)) = args.split_first() else {
        eprintln!("usage: client suite|bulk|https|hold|h2 [--http ADDR] [--https ADDR] ...");
        return 2;
    };
    let opts = match parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("client: {e}");
            return 2;
        }
    };
    let result = match mode.as_str() {
        "suite" => suite(&opts),
        "bulk" => bulks(&opts),
        "https" => lat_https(&opts),
        "hold" => hold(&opts),
        "h2" => h2(&opts),
        _ => Err(io::Error::other(format!("unknown mode {mode}"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("client: {mode}: {e}");
            1
        }
    }
}

pub fn emit(value: serde_json::Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "BENCH {value}");
    let _ = out.flush();
}

/// The bulk downloads only: over plain TCP (when `--tcp` is given), then over HTTP.
fn bulks(o: &Opts) -> io::Result<()> {
    if let Some(addr) = o.tcp_bulk {
        for rep in 0..o.bulk_reps {
            let secs = bulk_tcp(addr, o.bulk_bytes)?;
            emit(json!({"metric": "bulk_tcp", "rep": rep, "bytes": o.bulk_bytes, "secs": secs}));
        }
    }
    for rep in 0..o.bulk_reps * usize::from(o.bulk_http) {
        let secs = bulk(o)?;
        emit(json!({"metric": "bulk", "rep": rep, "bytes": o.bulk_bytes, "secs": secs}));
    }
    Ok(())
}

fn suite(o: &Opts) -> io::Result<()> {
    bulks(o)?;
    let mut conn = HttpConn::new(tcp(o.http)?);
    let lat = latency(&mut conn, &o.name, o.requests)?;
    emit(json!({"metric": "lat_http", "p50_us": lat.0, "p99_us": lat.1, "n": o.requests}));
    if o.https.is_some() {
        lat_https(o)?;
    }
    for concurrency in [1usize, 8] {
        let (ok, errors, secs) = connrate(o, concurrency);
        emit(
            json!({"metric": "conns", "concurrency": concurrency, "ok": ok,
                    "errors": errors, "secs": secs}),
        );
    }
    Ok(())
}

/// The HTTPS keep-alive latency only (one connection, `requests` after the warm-up).
fn lat_https(o: &Opts) -> io::Result<()> {
    let addr = o
        .https
        .ok_or_else(|| io::Error::other("https mode needs --https"))?;
    let mut conn = HttpConn::new(tls(o, addr)?);
    let lat = latency(&mut conn, &o.name, o.requests)?;
    emit(json!({"metric": "lat_https", "p50_us": lat.0, "p99_us": lat.1, "n": o.requests}));
    Ok(())
}

/// The HTTP/2 measurements (`interceptor/h2.rs`) against `--h2`.
fn h2(o: &Opts) -> io::Result<()> {
    let addr = o.h2.ok_or_else(|| io::Error::other("h2 mode needs --h2"))?;
    let ca =
        o.ca.clone()
            .ok_or_else(|| io::Error::other("h2 mode needs --ca"))?;
    let run = crate::h2::run(&crate::h2::Opts {
        addr,
        name: o.name.clone(),
        ca,
        requests: o.requests,
        secs: o.conn_secs,
        bulk_bytes: o.h2_bulk_bytes,
    });
    // The bench prints the rows not measured as FAILED with this reason and goes on.
    if let Err(e) = run {
        emit(json!({"metric": "h2_error", "error": e.to_string()}));
    }
    Ok(())
}

/// Opens `conns` keep-alive connections (one request each), holds them `hold_secs`, then checks
/// each still answers.
fn hold(o: &Opts) -> io::Result<()> {
    emit(json!({"metric": "hold_start"}));
    std::thread::sleep(Duration::from_secs(1));
    let mut held = Vec::with_capacity(o.conns);
    let started = Instant::now();
    for _ in 0..o.conns {
        let mut c = HttpConn::new(tcp(o.http)?);
        c.request(&small_request(&o.name, false))?;
        held.push(c);
    }
    emit(json!({"metric": "hold_ready", "conns": held.len(),
                "open_secs": started.elapsed().as_secs_f64()}));
    std::thread::sleep(Duration::from_secs_f64(o.hold_secs));
    let req = small_request(&o.name, false);
    let alive = held
        .iter_mut()
        .map(|c| c.request(&req))
        .filter(Result::is_ok)
        .count();
    emit(json!({"metric": "hold_end", "alive": alive}));
    Ok(())
}

fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn tls(
    o: &Opts,
    addr: SocketAddr,
) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let ca =
        o.ca.as_deref()
            .ok_or_else(|| io::Error::other("--https needs --ca"))?;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
    roots.add_parsable_certificates(certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(o.name.clone()).map_err(io::Error::other)?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, tcp(addr)?))
}

fn small_request(name: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!("GET {SMALL_PATH} HTTP/1.1\r\nHost: {name}\r\n{connection}\r\n").into_bytes()
}

/// Seconds to download `bulk_bytes` over a fresh connection (request sent → last byte read).
fn bulk(o: &Opts) -> io::Result<f64> {
    let mut c = HttpConn::new(tcp(o.http)?);
    let req = format!(
        "GET /zeros/{} HTTP/1.1\r\nHost: {}\r\n\r\n",
        o.bulk_bytes, o.name
    );
    let t0 = Instant::now();
    let got = c.request(req.as_bytes())?;
    let secs = t0.elapsed().as_secs_f64();
    if got != o.bulk_bytes {
        return Err(io::Error::other(format!(
            "bulk body {got} bytes, wanted {}",
            o.bulk_bytes
        )));
    }
    Ok(secs)
}

/// Seconds to read `bytes` zero bytes from the raw bulk server over a fresh connection
/// (request line sent → EOF).
fn bulk_tcp(addr: SocketAddr, bytes: u64) -> io::Result<f64> {
    let mut s = tcp(addr)?;
    let mut buf = vec![0u8; READ_BUF];
    let t0 = Instant::now();
    s.write_all(format!("BULK {bytes}\n").as_bytes())?;
    let mut got = 0u64;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => got += n as u64,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if got != bytes {
        return Err(io::Error::other(format!(
            "bulk TCP stream {got} bytes, wanted {bytes}"
        )));
    }
    Ok(secs)
}

/// p50 and p99 in microseconds of `n` sequential small requests after a warm-up.
fn latency<S: Read + Write>(c: &mut HttpConn<S>, name: &str, n: usize) -> io::Result<(f64, f64)> {
    let req = small_request(name, false);
    for _ in 0..WARMUP_REQUESTS {
        c.request(&req)?;
    }
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        c.request(&req)?;
        us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    let at = |q: f64| {
        us.get(((us.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok((at(0.50), at(0.99)))
}

/// connect + request + close in `concurrency` threads for `conn_secs`: (ok, errors, seconds).
fn connrate(o: &Opts, concurrency: usize) -> (u64, u64, f64) {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(o.conn_secs);
    let req = small_request(&o.name, true);
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (ok, errors, req, addr) = (ok.clone(), errors.clone(), req.clone(), o.http);
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let r = tcp(addr).and_then(|s| HttpConn::new(s).request(&req));
                    let counter = if r.is_ok() { &ok } else { &errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        secs,
    )
}

/// A minimal HTTP/1.1 client connection: write a request, read the response head and discard
/// its body (content-length, chunked, or until EOF).
struct HttpConn<S> {
    s: S,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

impl<S: Read + Write> HttpConn<S> {
    fn new(s: S) -> Self {
        Self {
            s,
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            pos: 0,
            len: 0,
        }
    }

    /// Sends `req` and reads the whole response; returns the body length. Non-2xx is an error.
    fn request(&mut self, req: &[u8]) -> io::Result<u64> {
        self.s.write_all(req)?;
        self.s.flush()?;
        let status = self.line()?;
        let code = status
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse::<u64>().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
        if !code.starts_with('2') {
            return Err(io::Error::other(format!("status {status}")));
        }
        if chunked {
            let mut total = 0;
            loop {
                let size = self.line()?;
                let size = u64::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                if size == 0 {
                    while !self.line()?.is_empty() {}
                    return Ok(total);
                }
                self.skip(size)?;
                self.line()?;
                total += size;
            }
        }
        match length {
            Some(n) => self.skip(n).map(|()| n),
            None if close => self.skip_to_eof(),
            None => Ok(0),
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.len {
            (self.pos, self.len) = (0, 0);
        } else if self.len == self.buf.len() {
            self.buf.copy_within(self.pos..self.len, 0);
            (self.pos, self.len) = (0, self.len - self.pos);
        }
        let n = self.s.read(&mut self.buf[self.len..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.len += n;
        Ok(())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf[self.pos..self.len]
                .iter()
                .position(|&b| b == b'\n')
            {
                let text = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]);
                let text = text.trim_end_matches('\r').to_owned();
                self.pos += i + 1;
                return Ok(text);
            }
            if self.len - self.pos > 16 * 1024 {
                return Err(io::Error::other("response line too long"));
            }
            self.fill()?;
        }
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        loop {
            let take = ((self.len - self.pos) as u64).min(n);
            self.pos += take as usize;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    fn skip_to_eof(&mut self) -> io::Result<u64> {
        let mut total = (self.len - self.pos) as u64;
        (self.pos, self.len) = (0, 0);
        loop {
            match self.s.read(&mut self.buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(total),
                Err(e) => return Err(e),
            }
        }
    }
}

//! The hostile guest against the HTTP/2 path: raw frames from Python in the guest (over `ssl`
//! with ALPN `h2`, or h2c) against idagent's HTTP/2 server, forwarded to a hyper HTTP/2
//! server of the test's own on loopback (TLS, a test CA, the names mapped to it), offline.
//!
//! Rapid reset (CVE-2023-44487 shape), more streams than advertised, a header list over the
//! cap and an endless CONTINUATION sequence (CVE-2024-27316 shape), a guest that never reads
//! a large response, pool isolation between TLS server names and per-request routing on a
//! pooled connection, request trailers (forwarded, logged redacted), and h2c by prior
//! knowledge to an unmapped address. Each asserts what the guest and the upstream saw and what
//! the log says; idagent's memory is sampled from `/proc/PID/status` (VmRSS).

mod common;
use common::*;
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame};
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// What the upstream saw, read by the test after the run.
#[derive(Default)]
struct Seen {
    /// TLS connections accepted.
    conns: AtomicU64,
    /// `/hang` requests received.
    hang: AtomicU64,
    /// Bytes of `/big` bodies hyper pulled from the body (what back-pressure let through).
    big_sent: AtomicU64,
    /// Paths of every request, in order.
    paths: Mutex<Vec<String>>,
}

/// Size of each `/big` body: far more than any buffer on the way.
const BIG_BODY: u64 = 1 << 30;

/// A `/big` body: 64 KiB chunks, each counted as hyper takes it.
struct BigBody {
    left: u64,
    seen: Arc<Seen>,
    chunk: Bytes,
}

impl Body for BigBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.chunk.len() as u64;
        self.left = self.left.saturating_sub(n);
        self.seen.big_sent.fetch_add(n, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

type RespBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    conn: u64,
    sni: Option<String>,
    seen: Arc<Seen>,
) -> Result<hyper::Response<RespBody>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    if let Ok(mut p) = seen.paths.lock() {
        p.push(path.clone());
    }
    let authority = req.uri().authority().map(|a| a.to_string());
    let full = |v: Value| {
        hyper::Response::new(
            http_body_util::Full::new(Bytes::from(v.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
    };
    match path.as_str() {
        p if p.starts_with("/hang") => {
            seen.hang.fetch_add(1, Ordering::Relaxed);
            // Never answers in the run's lifetime: the request ends only by a reset.
            tokio::time::sleep(std::time::Duration::from_secs(120)).await;
            Ok(full(json!("late")))
        }
        "/big" => Ok(hyper::Response::new(
            BigBody {
                left: BIG_BODY,
                seen: seen.clone(),
                chunk: Bytes::from(vec![b'z'; 64 * 1024]),
            }
            .boxed(),
        )),
        "/stats" => Ok(full(json!({
            "conns": seen.conns.load(Ordering::Relaxed),
            "big_sent": seen.big_sent.load(Ordering::Relaxed),
        }))),
        _ => {
            // Echo: the body's size and the trailers as received.
            let collected = req.into_body().collect().await;
            let (len, trailers) = match collected {
                Ok(c) => {
                    let trailers: Vec<(String, String)> = c
                        .trailers()
                        .map(|t| {
                            t.iter()
                                .map(|(n, v)| {
                                    (
                                        n.as_str().to_owned(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (c.to_bytes().len(), trailers)
                }
                Err(_) => (0, Vec::new()),
            };
            Ok(full(json!({
                "conn": conn,
                "sni": sni,
                "authority": authority,
                "path": path,
                "body_len": len,
                "trailers": trailers,
            })))
        }
    }
}

/// A hyper HTTP/2 server (TLS, ALPN `h2` only; hyper's default settings, as a real server's)
/// on loopback, on a runtime of its own. Returns its port and what it saw.
fn upstream(pki: &Pki) -> (u16, Arc<Seen>) {
    let config = tls_server_config(pki, &[b"h2"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = seen.conns.fetch_add(1, Ordering::Relaxed) + 1;
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    let svc = hyper::service::service_fn(move |req| {
                        answer(req, conn, sni.clone(), seen.clone())
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
    });
    (port, seen)
}

/// Raw HTTP/2 frames over a socket, for the guest: just enough of a client to say exactly what
/// an attacker would (HEADERS and RST_STREAM back to back, CONTINUATION without end, more
/// streams than allowed), while answering SETTINGS and PING like a real one.
const RAW_H2: &str = r#"
import json, select, socket, ssl, struct, time, hpack
def frame(t, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([t, flags]) + (sid & 0x7fffffff).to_bytes(4, "big") + payload
def tls(name, timeout=10):
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection((name, 443), timeout=timeout), server_hostname=name)
    assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
    return s
class H2:
    def __init__(self, sock, scheme="https"):
        self.s, self.scheme = sock, scheme
        self.enc, self.dec, self.buf = hpack.Encoder(), hpack.Decoder(), b""
        self.goaway = self.goaway_data = self.max_streams = None
        self.resets, self.status, self.body, self.trailers, self.ended = {}, {}, {}, {}, set()
        self.pings = 0
        self.s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
        while self.max_streams is None and self.goaway is None:
            if self.recv_frame() is None:
                break
    def send(self, t, flags, sid, payload=b""):
        self.s.sendall(frame(t, flags, sid, payload))
    def block(self, authority, path, method="GET", extra=()):
        return self.enc.encode([(":method", method), (":scheme", self.scheme),
                                (":authority", authority), (":path", path)] + list(extra))
    def request(self, sid, authority, path, method="GET", end=True, extra=()):
        self.send(1, 0x4 | (0x1 if end else 0), sid, self.block(authority, path, method, extra))
    def recv_frame(self):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            try:
                d = self.s.recv(1 << 16)
            except (OSError, ssl.SSLError):
                d = b""
            if not d:
                return None
            self.buf += d
        n = int.from_bytes(self.buf[:3], "big")
        t, flags = self.buf[3], self.buf[4]
        sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
        p, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        if t == 4 and not flags & 1:
            for i in range(0, len(p) - 5, 6):
                k, v = struct.unpack(">HI", p[i:i + 6])
                if k == 3:
                    self.max_streams = v
            if self.max_streams is None:
                self.max_streams = -1
            self.send(4, 1, 0)
        elif t == 6:
            if flags & 1:
                self.pings += 1
            else:
                self.send(6, 1, 0, p)
        elif t == 7:
            self.goaway = struct.unpack(">I", p[4:8])[0]
            self.goaway_data = p[8:].decode(errors="replace")
        elif t == 3:
            self.resets[sid] = struct.unpack(">I", p)[0]
        elif t == 1:
            hs = dict(self.dec.decode(p))  # hyper sends neither padding nor priority
            if sid in self.status:
                self.trailers[sid] = hs
            else:
                self.status[sid] = int(hs.get(":status", 0))
            if flags & 1:
                self.ended.add(sid)
        elif t == 0:
            self.body[sid] = self.body.get(sid, b"") + p
            if flags & 1:
                self.ended.add(sid)
            if p:
                self.send(8, 0, 0, len(p).to_bytes(4, "big"))
                if not flags & 1:
                    self.send(8, 0, sid, len(p).to_bytes(4, "big"))
        return t, flags, sid, p
    def wait(self, sid):
        while sid not in self.ended and sid not in self.resets:
            if self.recv_frame() is None:
                break
        return self.status.get(sid), self.body.get(sid, b""), self.resets.get(sid)
    def sync(self):
        # A PING round trip: everything sent before it has been read by the peer.
        want = self.pings + 1
        self.send(6, 0, 0, b"syncsync")
        while self.pings < want:
            if self.recv_frame() is None:
                return False
        return True
    def drain(self):
        # Reads until the peer closes (or goes quiet for the socket's timeout).
        try:
            while self.recv_frame() is not None:
                pass
        except Exception:
            pass
def get(name, path):
    c = H2(tls(name))
    c.request(1, name, path)
    status, body, reset = c.wait(1)
    c.s.close()
    # A response whose body did not end (the socket timed out) is no answer.
    return status if 1 in c.ended else None, body.decode(errors="replace"), reset
"#;

/// Runs `idagent run --offline ARGS -- python3 -c RAW_H2+SCRIPT`, sampling idagent's resident
/// memory (VmRSS, KiB) every 50 ms; returns the run and the largest sample.
fn run_h2_guest(extra: &[&str], script: &str) -> (Run, u64) {
    let script = format!("{RAW_H2}\n{script}");
    let mut args = vec!["--offline"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--image", GUEST_IMAGE, "--", "python3", "-c", &script]);
    run_sampling_rss(&args, std::time::Duration::from_millis(50))
}

/// The run, its upstream (names mapped to one hyper HTTP/2 server) and what it saw.
fn attack(names: &[&str], script: &str) -> (Run, u64, Arc<Seen>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), names);
    let (port, seen) = upstream(&pki);
    let maps: Vec<String> = names
        .iter()
        .map(|n| format!("{n}:443=127.0.0.1:{port}"))
        .collect();
    let ca = pki.ca.to_string_lossy().into_owned();
    let mut args = vec!["--upstream-ca", &ca];
    for m in &maps {
        args.extend(["--upstream-map", m.as_str()]);
    }
    let (run, rss) = run_h2_guest(&args, script);
    (run, rss, seen)
}

/// The `http` records whose URL ends with `path`.
fn records<'a>(run: &'a Run, path: &'a str) -> Vec<&'a Value> {
    run.of_kind("http")
        .filter(|e| e["url"].as_str().is_some_and(|u| u.ends_with(path)))
        .collect()
}

/// A short account of a big run for assertion messages (its kinds and last records).
fn summary(run: &Run) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for e in &run.events {
        *kinds
            .entry(e["kind"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let tail: Vec<String> = run
        .events
        .iter()
        .filter(|e| {
            !["http", "exec", "exec_ran", "run_start"].contains(&e["kind"].as_str().unwrap_or(""))
        })
        .rev()
        .take(30)
        .map(|e| e.to_string())
        .collect();
    format!(
        "exit {:?}\nstdout {}\nstderr {}\nkinds {kinds:?}\nlast non-http records:\n{}",
        run.code(),
        run.stdout(),
        run.stderr().chars().take(4000).collect::<String>(),
        tail.join("\n")
    )
}

const MIB: u64 = 1024;

const RAPID_RESET: &str = r#"
out = {}
# 1. The burst: 5,000 HEADERS + RST_STREAM pairs, never waiting.
c = H2(tls("h2.test"))
sent, err = 0, None
try:
    for batch in range(0, 5000, 100):
        data = b""
        for i in range(batch, batch + 100):
            sid = 2 * i + 1
            data += frame(1, 0x5, sid, c.block("h2.test", "/hang")) + frame(3, 0, sid, (8).to_bytes(4, "big"))
        c.s.sendall(data)
        sent += 100
        while select.select([c.s], [], [], 0)[0] or c.s.pending():
            if c.recv_frame() is None:
                raise OSError("closed by idagent")
except OSError as e:
    err = str(e)
c.s.settimeout(3)
c.drain()
out["burst"] = {"sent": sent, "err": err, "goaway": c.goaway, "goaway_data": c.goaway_data}
# 2. Paced: 32 HEADERS, a PING round trip (so idagent has taken every stream), 32 RST_STREAM;
# ROUNDS times on one connection. No stream is reset before it is accepted.
c = H2(tls("h2.test"))
# First one stream known to have reached the gate: a later stream's answer means idagent took
# it (streams are taken in order), and only then is it reset.
c.request(1, "h2.test", "/hang-first")
c.request(3, "h2.test", "/echo")
st = c.wait(3)[0]
out["echo"] = st if 3 in c.ended else None
c.send(3, 0, 1, (8).to_bytes(4, "big"))
sent, err, sid = 0, None, 5
try:
    for r in range(ROUNDS):
        ids = list(range(sid, sid + 64, 2))
        sid += 64
        c.s.sendall(b"".join(frame(1, 0x5, i, c.block("h2.test", "/hang")) for i in ids))
        if not c.sync():
            raise OSError("closed by idagent")
        c.s.sendall(b"".join(frame(3, 0, i, (8).to_bytes(4, "big")) for i in ids))
        sent += len(ids)
    c.sync()
except OSError as e:
    err = str(e)
out["paced"] = {"sent": sent, "err": err, "goaway": c.goaway, "goaway_data": c.goaway_data,
                "refused": len(c.resets)}
c.s.close()
out["after"] = get("h2.test", "/after")[0]
print("RESULT " + json.dumps(out))
"#;

/// Paced rounds of 32 streams in the rapid-reset test.
const ROUNDS: usize = 100;

/// Rapid reset (CVE-2023-44487). The burst (5,000 HEADERS + RST_STREAM pairs, never waiting)
/// is cut off by a GOAWAY (ENHANCE_YOUR_CALM) after a few streams reset before idagent took
/// them. The paced form (each stream taken before it is reset: 32 at a time, a PING round trip
/// between) is not a protocol error: every stream reached the gate and has its record,
/// `cancelled`. idagent stays up (a new connection's request succeeds) and bounded.
#[test]
fn rapid_reset_is_bounded_and_recorded() {
    let script = format!("ROUNDS = {ROUNDS}\n{RAPID_RESET}");
    let (run, rss, seen) = attack(&["h2.test"], &script);
    assert_eq!(run.code(), Some(0), "{}", summary(&run));
    let got = run.result();
    let hang = records(&run, "/hang");
    let audit_bytes = std::fs::metadata(run.run_dir().join("audit.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "rapid reset: {got}; {} /hang records, {} reached the upstream, {} upstream connections; audit.jsonl {audit_bytes} bytes; max VmRSS {} MiB",
        hang.len(),
        seen.hang.load(Ordering::Relaxed),
        seen.conns.load(Ordering::Relaxed),
        rss / MIB
    );
    assert_eq!(got["after"], 200, "idagent still serves: {}", summary(&run));
    let burst = &got["burst"];
    assert_eq!(burst["goaway"], 11, "ENHANCE_YOUR_CALM: {got}");
    assert_eq!(burst["goaway_data"], "too_many_resets", "{got}");
    assert!(burst["sent"].as_u64().is_some_and(|n| n < 5000), "{got}");
    // The paced form is no protocol error: each stream reached the gate (and the upstream)
    // before its reset, so past 100 of them in 10 s idagent sends a graceful GOAWAY
    // (NO_ERROR, `too_many_cancelled_streams`); if idagent's taking falls behind the resets
    // it is cut off as the burst was (ENHANCE_YOUR_CALM).
    let paced = &got["paced"];
    assert!(
        paced["err"].is_null() || paced["goaway"] == 11 || paced["goaway"] == 0,
        "paced: {got}"
    );
    if paced["goaway"] == 0 && !paced["err"].is_null() {
        assert!(
            run.of_kind("tcp")
                .any(|e| e["close_reason"] == "too_many_cancelled_streams"),
            "the graceful GOAWAY says why: {}",
            summary(&run)
        );
        // Graceful: the first GOAWAY names no last stream, a PING round trip passes before
        // the second, and streams already under way finish; rounds are 32 streams.
        let sent = paced["sent"].as_u64().unwrap_or(0);
        assert!(
            sent < 400,
            "cut off soon after 100 abandoned streams, not after {ROUNDS} rounds: {got}"
        );
    }
    assert_eq!(paced["refused"], 0, "never over the stream limit: {got}");
    assert_eq!(got["echo"], 200, "{got}");
    let first = records(&run, "/hang-first");
    assert_eq!(first.len(), 1, "{}", summary(&run));
    let sent = burst["sent"].as_u64().unwrap_or(0) + paced["sent"].as_u64().unwrap_or(0);
    assert!(hang.len() as u64 <= sent, "{} records", hang.len());
    for e in first.iter().chain(&hang) {
        assert_eq!(
            e["note"], "cancelled by the guest before the response",
            "{e}"
        );
        assert!(e["status"].is_null(), "{e}");
        assert_eq!(e["version"], "HTTP/2", "{e}");
    }
    // The upstream saw no more than the gate let through.
    assert!(seen.hang.load(Ordering::Relaxed) <= hang.len() as u64);
    let cut: Vec<&Value> = run
        .of_kind("tcp")
        .filter(|e| {
            e["close_reason"]
                .as_str()
                .is_some_and(|r| r.contains("excessive load generating behavior"))
        })
        .collect();
    assert!(!cut.is_empty(), "the close says why: {}", summary(&run));
    assert!(rss > 0, "no RSS sample");
    assert!(rss < 512 * MIB, "idagent used {} MiB", rss / MIB);
}

const STREAMS_AND_HEADERS: &str = r#"
out = {}
# 1. 40 streams at once where 32 are allowed.
c = H2(tls("h2.test"))
out["max_streams"] = c.max_streams
c.s.sendall(b"".join(frame(1, 0x5, 2 * i + 1, c.block("h2.test", "/hang")) for i in range(40)))
out["synced"] = c.sync()
out["refused"] = sorted(set(c.resets.values()))
out["refused_n"] = len(c.resets)
for i in range(40):
    if 2 * i + 1 not in c.resets:
        c.send(3, 0, 2 * i + 1, (8).to_bytes(4, "big"))
c.request(81, "h2.test", "/after-streams")
out["after_streams"] = c.wait(81)[0]
c.s.close()
# 2. A header list over 64 KiB, in HEADERS + CONTINUATION frames.
c = H2(tls("h2.test"))
block = c.enc.encode([(":method", "GET"), (":scheme", "https"), (":authority", "h2.test"),
                      (":path", "/big-head"), ("x-pad", "a" * 70000)], huffman=False)
parts = [block[i:i + 16384] for i in range(0, len(block), 16384)]
out["big_head_frames"] = len(parts)
data = frame(1, 0x1 | (0x4 if len(parts) == 1 else 0), 1, parts[0])
for j, p in enumerate(parts[1:], 1):
    data += frame(9, 0x4 if j == len(parts) - 1 else 0, 1, p)
c.s.sendall(data)
st, body, reset = c.wait(1)
out["big_head"] = [st, reset, c.goaway]
if c.goaway is None:
    c.enc = hpack.Encoder()  # the peer dropped what the big block added to its table
    c.request(3, "h2.test", "/after-big-head")
    out["after_big_head"] = c.wait(3)[0]
c.s.close()
# 3. CONTINUATION without end.
c = H2(tls("h2.test"))
c.send(1, 0x1, 1, c.block("h2.test", "/endless"))
sent, err = 0, None
try:
    for k in range(2000):
        c.s.sendall(b"".join(frame(9, 0, 1, c.enc.encode([("x-c%d" % (k * 50 + j), "v" * 64)])) for j in range(50)))
        sent += 50
        while select.select([c.s], [], [], 0)[0] or c.s.pending():
            if c.recv_frame() is None:
                raise OSError("closed by idagent")
except OSError as e:
    err = str(e)
c.s.settimeout(3)
c.drain()
out["endless"] = {"sent": sent, "err": err, "goaway": c.goaway, "goaway_data": c.goaway_data}
out["after_all"] = get("h2.test", "/after-all")[0]
print("RESULT " + json.dumps(out))
"#;

/// More streams than advertised are refused (REFUSED_STREAM) and the connection goes on; a
/// header list over the cap is refused (431 or a reset) and the connection goes on; an endless
/// CONTINUATION sequence ends the connection (GOAWAY) after a few frames, with a `tcp` close
/// saying why; memory stays bounded.
#[test]
fn stream_limit_header_cap_and_continuation_flood() {
    let (run, rss, seen) = attack(&["h2.test"], STREAMS_AND_HEADERS);
    assert_eq!(run.code(), Some(0), "{}", summary(&run));
    let got = run.result();
    eprintln!("streams and headers: {got}; max VmRSS {} MiB", rss / MIB);
    assert_eq!(got["max_streams"], 32, "{got}");
    assert_eq!(got["synced"], true, "{got}");
    // REFUSED_STREAM (7) for each stream over the limit, nothing else.
    assert_eq!(got["refused"], json!([7]), "{got}");
    assert_eq!(got["refused_n"], 8, "{got}");
    assert_eq!(got["after_streams"], 200, "{got}");
    let hang = records(&run, "/hang");
    assert_eq!(hang.len(), 32, "the 32 admitted streams: {}", summary(&run));
    assert!(hang
        .iter()
        .all(|e| e["note"].as_str().is_some_and(|n| n.contains("cancelled"))));
    assert!(seen.hang.load(Ordering::Relaxed) <= 32);

    // The oversized head never reached the gate or the upstream.
    assert!(
        got["big_head_frames"].as_u64().is_some_and(|n| n > 1),
        "{got}"
    );
    let big = &got["big_head"];
    assert!(
        big[0] == 431 || big[1].is_u64() || big[2].is_u64(),
        "refused somehow: {got}"
    );
    assert!(records(&run, "/big-head").is_empty());
    let paths = seen.paths.lock().expect("paths").clone();
    assert!(!paths.iter().any(|p| p == "/big-head" || p == "/endless"));

    // The flood: GOAWAY ENHANCE_YOUR_CALM (11) long before the guest ran out of frames.
    let endless = &got["endless"];
    assert_eq!(endless["goaway"], 11, "{got}");
    assert!(
        endless["sent"].as_u64().is_some_and(|n| n < 100_000),
        "{got}"
    );
    assert!(records(&run, "/endless").is_empty());
    let closes: Vec<&Value> = run
        .of_kind("tcp")
        .filter(|e| e["phase"] == "close")
        .filter(|e| {
            e["close_reason"]
                .as_str()
                .is_some_and(|r| r.contains("excessive load generating behavior"))
        })
        .collect();
    assert!(!closes.is_empty(), "a close saying why: {}", summary(&run));
    assert_eq!(got["after_all"], 200, "{got}");
    assert!(rss < 512 * MIB, "idagent used {} MiB", rss / MIB);
}

const NEVER_READS: &str = r#"
out = {}
# 32 large downloads (all a connection may have) on one connection, then nothing read from it.
a = H2(tls("h2.test"))
for i in range(32):
    a.request(2 * i + 1, "h2.test", "/big")
# Another connection asks the upstream how far it got, until it stops moving.
b = H2(tls("h2.test"))
last, still, sid, polls, t0 = -1, 0, 1, [], time.time()
try:
    while still < 3 and len(polls) < 40:
        time.sleep(0.25)
        b.request(sid, "h2.test", "/stats")
        st, body, reset = b.wait(sid)
        if sid not in b.ended:
            raise OSError("stalled")
        sid += 2
        if st != 200:
            out["b_first"] = [st, body.decode(errors="replace"), reset, time.time() - t0]
        n = json.loads(body)["big_sent"]
        polls.append(n)
        still = still + 1 if n == last else 0
        last = n
    out["stalled_at"] = last
    # The stalled downloads share the upstream connection with these.
    b.request(sid, "h2.test", "/echo-b")
    st = b.wait(sid)[0]
    out["b"] = st if sid in b.ended else None
except Exception as e:
    out["b_error"] = repr(e)
out["polls"] = polls
try:
    t1 = time.time()
    out["c"] = get("h2.test", "/echo-c")[0]
    out["c_secs"] = time.time() - t1
except Exception as e:
    out["c_error"] = repr(e)
print("RESULT " + json.dumps(out), flush=True)
"#;

/// A guest that never reads 32 large responses: back-pressure reaches the upstream (it is held
/// to a stream window of a 1 GiB body each), idagent's memory stays bounded, and the other
/// connections to the same upstream (the same pooled upstream connection) still work. With
/// hyper's default windows (5 MiB a connection, 2 MiB a stream) three unread streams stalled
/// every stream of the run to that upstream.
#[test]
fn a_guest_that_never_reads_holds_back_the_upstream_only() {
    let (run, rss, seen) = attack(&["h2.test"], NEVER_READS);
    assert_eq!(run.code(), Some(0), "{}", summary(&run));
    let got = run.result();
    let sent = seen.big_sent.load(Ordering::Relaxed);
    eprintln!(
        "never reads: {got}; upstream produced {} MiB; max VmRSS {} MiB",
        sent >> 20,
        rss / MIB
    );
    assert!(got["stalled_at"].is_u64(), "{got}");
    assert_eq!(got["b"], 200, "another connection, its sixth stream: {got}");
    assert_eq!(got["c"], 200, "new connection: {got}");
    assert!(
        sent < 64 << 20,
        "upstream pushed {} MiB into a guest that reads nothing",
        sent >> 20
    );
    assert!(rss < 512 * MIB, "idagent used {} MiB", rss / MIB);
}

const POOL_ISOLATION: &str = r#"
out = {}
def echo(c, sid, authority, path):
    c.request(sid, authority, path)
    st, body, reset = c.wait(sid)
    return st, (json.loads(body) if st == 200 else body.decode(errors="replace")), reset
a = H2(tls("a.test"))
out["a"] = echo(a, 1, "a.test", "/a")
out["a_misdirected"] = echo(a, 3, "b.test", "/misdirected")
out["a_port"] = echo(a, 5, "a.test:8443", "/misdirected-port")
b = H2(tls("b.test"))
out["b"] = echo(b, 1, "b.test", "/b")
a2 = H2(tls("a.test"))
out["a2"] = echo(a2, 1, "a.test", "/a2")
print("RESULT " + json.dumps(out))
"#;

/// Two names mapped to one upstream address never share a pooled connection (the TLS server
/// name differs, and so does what was verified); two connections to the same name do; and a
/// stream naming another host on a connection to one name gets 421, and never reaches the
/// upstream, pooled connection or not.
#[test]
fn pooled_connections_are_per_server_name_and_streams_are_routed_each() {
    let (run, _, seen) = attack(&["a.test", "b.test"], POOL_ISOLATION);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let got = run.result();
    let (a, b, a2) = (&got["a"], &got["b"], &got["a2"]);
    for x in [a, b, a2] {
        assert_eq!(x[0], 200, "{got}");
    }
    assert_eq!(a[1]["sni"], "a.test", "{got}");
    assert_eq!(b[1]["sni"], "b.test", "{got}");
    assert_ne!(
        a[1]["conn"], b[1]["conn"],
        "a.test and b.test shared: {got}"
    );
    assert_eq!(a[1]["conn"], a2[1]["conn"], "one pooled connection: {got}");
    assert_eq!(a[1]["authority"], "a.test", "{got}");
    assert_eq!(got["a_misdirected"][0], 421, "{got}");
    assert_eq!(got["a_port"][0], 421, "{got}");
    let paths = seen.paths.lock().expect("paths").clone();
    assert!(
        !paths.iter().any(|p| p.starts_with("/misdirected")),
        "{paths:?}"
    );
    let mis = records(&run, "/misdirected");
    assert_eq!(mis.len(), 1, "{}", run.explain());
    assert_eq!(mis[0]["status"], 421);
    assert_eq!(mis[0]["note"], "misdirected");
    assert!(
        run.of_kind("blocked").any(|e| e["what"] == "http"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("misdirected"))),
        "{}",
        run.explain()
    );
    assert_eq!(seen.conns.load(Ordering::Relaxed), 2, "{}", run.explain());
}

const KEY: &str = "sk-proj-Zq8xY2vW4tR6uP0oI9nM3bV5cX7zL1kJ";
const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEfGh12";

const TRAILERS: &str = r#"
c = H2(tls("h2.test"))
c.request(1, "h2.test", "/upload", method="POST", end=False,
          extra=[("te", "trailers"), ("content-type", "application/octet-stream")])
c.send(0, 0, 1, b"hello trailers")
c.send(1, 0x5, 1, c.enc.encode([("x-api-key", KEY), ("x-checksum", "abc123"),
                                ("authorization", "Bearer " + TOKEN)]))
st, body, reset = c.wait(1)
print("RESULT " + json.dumps({"status": st, "echo": json.loads(body) if st == 200 else body.decode(errors="replace")}))
"#;

/// Request trailers (HTTP/2, as a client-streaming gRPC call ends) reach the upstream as sent,
/// and the record lists them with their secrets redacted; the secrets are nowhere in the log.
#[test]
fn request_trailers_are_forwarded_and_logged_redacted() {
    let script = format!("KEY = {KEY:?}\nTOKEN = {TOKEN:?}\n{TRAILERS}");
    let (run, _, _) = attack(&["h2.test"], &script);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let got = run.result();
    assert_eq!(got["status"], 200, "{got}");
    let echo = &got["echo"];
    assert_eq!(echo["body_len"], 14, "{got}");
    let trailers = echo["trailers"].as_array().cloned().unwrap_or_default();
    for (name, value) in [
        ("x-api-key", KEY.to_owned()),
        ("x-checksum", "abc123".to_owned()),
        ("authorization", format!("Bearer {TOKEN}")),
    ] {
        assert!(
            trailers
                .iter()
                .any(|t| t[0] == name && t[1] == value.as_str()),
            "upstream got {name}: {got}"
        );
    }
    let rec = records(&run, "/upload");
    assert_eq!(rec.len(), 1, "{}", run.explain());
    let logged = rec[0]["req_trailers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let field = |n: &str| {
        logged
            .iter()
            .find(|t| t[0] == n)
            .and_then(|t| t[1].as_str())
            .unwrap_or_else(|| panic!("no {n} in req_trailers: {}", rec[0]))
            .to_owned()
    };
    assert_eq!(field("x-checksum"), "abc123");
    assert!(!field("x-api-key").contains(KEY), "{}", rec[0]);
    assert!(field("authorization").starts_with("Bearer "), "{}", rec[0]);
    assert!(!field("authorization").contains(TOKEN), "{}", rec[0]);
    assert!(
        rec[0]["credentials"]
            .as_array()
            .is_some_and(|c| c.len() >= 2),
        "{}",
        rec[0]
    );
    let audit = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).expect("audit");
    assert!(!audit.contains(KEY), "the key is in the log");
    assert!(!audit.contains(TOKEN), "the token is in the log");
}

const H2C_UNMAPPED: &str = r#"
s = socket.create_connection(("203.0.113.7", 80), timeout=10)
c = H2(s, scheme="http")
c.request(1, "203.0.113.7", "/by-address")
one = c.wait(1)
c.request(3, "evil.example", "/by-name")
three = c.wait(3)
print("RESULT " + json.dumps({"one": [one[0], one[2]], "three": [three[0], three[2]]}))
"#;

/// h2c by prior knowledge to an address nothing maps, offline: each stream is refused (502)
/// with its `http` record, the dial is refused with a `blocked` record, and the flow reached
/// no upstream.
#[test]
fn h2c_to_an_unmapped_address_offline_is_refused_and_logged() {
    let (run, _) = run_h2_guest(&[], H2C_UNMAPPED);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let got = run.result();
    assert_eq!(got["one"][0], 502, "{got}");
    assert_eq!(got["three"][0], 502, "{got}");
    for path in ["/by-address", "/by-name"] {
        let rec = records(&run, path);
        assert_eq!(rec.len(), 1, "{}", run.explain());
        assert_eq!(rec[0]["version"], "HTTP/2", "{}", rec[0]);
        assert!(
            rec[0]["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("error")),
            "{}",
            rec[0]
        );
        assert!(rec[0]["upstream"].is_null(), "{}", rec[0]);
    }
    let blocked: Vec<&Value> = run
        .of_kind("blocked")
        .filter(|e| {
            e["target"]
                .as_str()
                .is_some_and(|t| t.contains("203.0.113.7"))
        })
        .collect();
    assert!(!blocked.is_empty(), "{}", run.explain());
    let close = run
        .of_kind("tcp")
        .find(|e| e["phase"] == "close" && e["protocol"] == "h2c")
        .unwrap_or_else(|| panic!("no h2c close\n{}", run.explain()));
    assert!(close["upstream"].is_null(), "{close}");
}

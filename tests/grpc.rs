//! HTTP/2 end to end (issue 10, item 1): real clients in the guest (grpcio, httpx with h2,
//! curl) against real local servers (grpcio's own server on Debian's Python, a hyper server),
//! through idagent, offline. Both legs speak HTTP/2 by default; every stream is its own `http`
//! record; gRPC calls carry service, method and status (from the trailers); h2c by prior
//! knowledge works for plain-text gRPC; `--http1-only` keeps both legs on HTTP/1.1.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// grpcio's server (generic handlers, raw bytes: no generated code needed) on loopback, TLS
/// and plain-text ports. `demo.Echo/Unary` echoes (or fails with NOT_FOUND on `fail`),
/// `demo.Echo/Stream` answers three messages.
const GRPC_SERVER: &str = r#"
import grpc, sys, threading
from concurrent import futures
cert, key = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
slow_ended = threading.Event()
def slow(req, ctx):
    # Never answers: the call ends only when its stream is reset (the guest's cancel,
    # carried across by idagent), while the connection stays up.
    ctx.add_callback(slow_ended.set)
    slow_ended.wait(30)
    return b"late"
def was_cancelled(req, ctx):
    return b"yes" if slow_ended.wait(10) else b"no"
def unary(req, ctx):
    if req == b"fail":
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    ctx.set_trailing_metadata((("x-served-by", "grpcio"),))
    return b"echo:" + req
def stream(req, ctx):
    for i in range(3):
        yield b"part%d:" % i + req
handler = grpc.method_handlers_generic_handler("demo.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
    "Slow": grpc.unary_unary_rpc_method_handler(slow),
    "WasCancelled": grpc.unary_unary_rpc_method_handler(was_cancelled),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
tls = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
plain = server.add_insecure_port("127.0.0.1:0")
server.start()
print(tls, plain, flush=True)
server.wait_for_termination()
"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the grpcio server; returns it and its (TLS, plain) ports.
fn grpc_server(pki: &Pki) -> (Server, u16, u16) {
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(GRPC_SERVER)
        .arg(&pki.cert)
        .arg(&pki.key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the grpcio server (Debian's python3-grpcio)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read ports");
    let ports: Vec<u16> = line
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(ports.len(), 2, "grpcio server said {line:?}");
    (Server(child), ports[0], ports[1])
}

const GRPC_CLIENT: &str = r#"
import grpc, json, time
out = {}
# Trusts the run's CA through GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, which idagent sets.
ch = grpc.secure_channel("grpc.test:443", grpc.ssl_channel_credentials())
unary = ch.unary_unary("/demo.Echo/Unary")
out["unary"] = unary(b"hi", timeout=20).decode()
try:
    unary(b"fail", timeout=20)
    out["fail"] = "succeeded"
except grpc.RpcError as e:
    out["fail"] = [e.code().name, e.details()]
out["stream"] = [m.decode() for m in ch.unary_stream("/demo.Echo/Stream")(b"x", timeout=20)]
# A call the guest cancels (RST_STREAM): the server must see the cancel.
call = ch.unary_unary("/demo.Echo/Slow").future(b"wait")
time.sleep(1)
call.cancel()
out["slow"] = call.cancelled()
# Asked on the same connection, still up: did the server see that call end?
out["server_saw_cancel"] = ch.unary_unary("/demo.Echo/WasCancelled")(b"?", timeout=20).decode()
plain = grpc.insecure_channel("h2c.test:80")
out["h2c"] = plain.unary_unary("/demo.Echo/Unary")(b"plain", timeout=20).decode()
print("RESULT " + json.dumps(out), flush=True)
"#;

fn grpc_records(run: &Run) -> Vec<&Value> {
    run.of_kind("http")
        .filter(|e| e["grpc"].is_object())
        .collect()
}

#[test]
fn grpc_unary_streaming_and_h2c_through_idagent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), &["grpc.test"]);
    let (_server, tls_port, plain_port) = grpc_server(&pki);
    let map_tls = format!("grpc.test:443=127.0.0.1:{tls_port}");
    let map_plain = format!("h2c.test:80=127.0.0.1:{plain_port}");
    let ca = pki.ca.to_string_lossy().into_owned();
    let run = offline_python(
        &[
            "--upstream-map",
            &map_tls,
            "--upstream-map",
            &map_plain,
            "--upstream-ca",
            &ca,
        ],
        GRPC_CLIENT,
    );
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let got = run.result();
    assert_eq!(got["unary"], "echo:hi", "{got}");
    assert_eq!(
        got["fail"],
        serde_json::json!(["NOT_FOUND", "no such thing"])
    );
    assert_eq!(
        got["stream"],
        serde_json::json!(["part0:x", "part1:x", "part2:x"])
    );
    assert_eq!(got["h2c"], "echo:plain", "{got}");
    assert_eq!(got["slow"], true, "{got}");
    // The guest's RST_STREAM reached the upstream as a reset of its stream.
    assert_eq!(got["server_saw_cancel"], "yes", "{got}");
    // ... and the abandoned call has its record.
    let slow = run
        .of_kind("http")
        .find(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("/demo.Echo/Slow"))
        })
        .unwrap_or_else(|| panic!("no record of the cancelled call\n{}", run.explain()));
    assert!(
        slow["note"]
            .as_str()
            .is_some_and(|n| n.contains("cancelled")),
        "{slow}"
    );

    let calls: Vec<&Value> = grpc_records(&run)
        .into_iter()
        .filter(|e| e["grpc"]["method"] != "Slow" && e["grpc"]["method"] != "WasCancelled")
        .collect();
    assert_eq!(calls.len(), 4, "one record per call: {}", run.explain());
    let call = |method: &str, status: u64| {
        calls
            .iter()
            .find(|e| e["grpc"]["method"] == method && e["grpc"]["status"] == status)
            .unwrap_or_else(|| panic!("no {method} call with status {status}: {calls:#?}"))
    };
    for e in &calls {
        assert_eq!(e["grpc"]["service"], "demo.Echo", "{e}");
        assert_eq!(e["version"], "HTTP/2", "guest leg: {e}");
        assert_eq!(e["upstream_version"], "HTTP/2", "upstream leg: {e}");
        assert_eq!(e["method"], "POST");
        assert!(e["upstream"].is_string(), "{e}");
    }
    let ok = call("Unary", 0);
    assert_eq!(ok["grpc"]["req_messages"], 1);
    assert_eq!(ok["grpc"]["resp_messages"], 1);
    // Trailers carried across and logged: grpc-status and the server's own trailer.
    let trailers = ok["resp_trailers"].as_array().cloned().unwrap_or_default();
    assert!(
        trailers
            .iter()
            .any(|t| t[0] == "x-served-by" && t[1] == "grpcio"),
        "{ok}"
    );
    // `te: trailers` reached the upstream (grpcio refuses calls without it).
    assert!(
        ok["req_headers"]
            .as_array()
            .is_some_and(|h| h.iter().any(|t| t[0] == "te" && t[1] == "trailers")),
        "{ok}"
    );
    let failed = call("Unary", 5);
    assert_eq!(failed["grpc"]["message"], "no such thing", "{failed}");
    // A trailers-only answer (headers with END_STREAM) is a complete response.
    assert!(failed["note"].is_null(), "{failed}");
    let streamed = call("Stream", 0);
    assert_eq!(streamed["grpc"]["resp_messages"], 3, "{streamed}");
    let h2c: Vec<_> = calls
        .iter()
        .filter(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://h2c.test"))
        })
        .collect();
    assert_eq!(h2c.len(), 1, "{calls:#?}");

    // The guest's TLS: h2 agreed with the guest and with the upstream.
    let tls = run
        .of_kind("tls")
        .find(|e| e["sni"] == "grpc.test")
        .unwrap_or_else(|| panic!("no tls record\n{}", run.explain()));
    assert_eq!(tls["alpn"], "h2", "{tls}");
    assert_eq!(tls["upstream_alpn"], "h2", "{tls}");
    assert_eq!(tls["upstream_verify"], "ok", "{tls}");
    // The h2c flow is recorded as such.
    assert!(
        run.of_kind("tcp")
            .any(|e| e["phase"] == "close" && e["protocol"] == "h2c"),
        "{}",
        run.explain()
    );

    // report.html lists the calls in its "Agent tool calls" section.
    let report = std::fs::read_to_string(run.run_dir().join("report.html")).expect("report");
    assert!(report.contains("Agent tool calls"), "no tool calls section");
    assert!(
        report.contains("demo.Echo/Stream"),
        "no gRPC call in the report"
    );
    assert!(
        report.contains("NOT_FOUND"),
        "no gRPC status name in the report"
    );

    // The pcapng decrypts: tshark sees the gRPC calls inside HTTP/2 inside TLS.
    let paths = tshark(
        &run.run_dir().join("traffic.pcapng"),
        &["http2.headers.path"],
        "grpc",
    );
    assert!(
        paths.iter().any(|p| p.contains("/demo.Echo/Unary")),
        "tshark -Y grpc: {paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.contains("/demo.Echo/Stream")),
        "tshark -Y grpc: {paths:?}"
    );
}

/// A hyper server (TLS, ALPN h2 and http/1.1) that answers every request with the HTTP version
/// it was asked in, on a runtime of its own.
fn version_server(pki: &Pki) -> u16 {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let config = tls_server_config(pki, &[b"h2", b"http/1.1"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
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
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                        let body = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    });
                    let io = hyper_util::rt::TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, svc)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
    });
    port
}

const H2_CLIENTS: &str = r#"
import json, subprocess, httpx
out = {}
with httpx.Client(http2=True) as c:
    r1 = c.get("https://h2.test/one")
    r2 = c.get("https://h2.test/two")
    out["httpx"] = [r1.http_version, r1.text, r2.text]
p = subprocess.run(["curl", "-sS", "--http2", "-w", " %{http_version}", "https://h2.test/curl"],
                   capture_output=True, text=True)
out["curl"] = (p.stdout + p.stderr).strip()
print("RESULT " + json.dumps(out), flush=True)
"#;

fn h2_run(extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), &["h2.test"]);
    let port = version_server(&pki);
    let map = format!("h2.test:443=127.0.0.1:{port}");
    let ca = pki.ca.to_string_lossy().into_owned();
    let mut args = vec!["--upstream-map", &map, "--upstream-ca", &ca];
    args.extend_from_slice(extra);
    offline_python(&args, H2_CLIENTS)
}

#[test]
fn httpx_and_curl_speak_h2_on_both_legs_by_default() {
    let run = h2_run(&[]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let got = run.result();
    assert_eq!(
        got["httpx"],
        serde_json::json!(["HTTP/2", "HTTP/2.0", "HTTP/2.0"]),
        "guest leg, then what the server saw: {got}"
    );
    assert_eq!(got["curl"], "HTTP/2.0 2", "{got}");
    let http: Vec<&Value> = run.of_kind("http").collect();
    assert_eq!(http.len(), 3, "{}", run.explain());
    for e in &http {
        assert_eq!(e["version"], "HTTP/2", "{e}");
        assert_eq!(e["upstream_version"], "HTTP/2", "{e}");
        assert_eq!(e["status"], 200);
    }
    // httpx's two requests were two streams of one connection, and one upstream connection
    // served all three (the pool is per upstream, not per guest connection).
    assert_eq!(http[0]["flow"], http[1]["flow"], "{http:#?}");
    let upstream_tls: Vec<&Value> = run
        .of_kind("tls")
        .filter(|e| e["sni"] == "h2.test")
        .collect();
    assert_eq!(upstream_tls.len(), 2, "{upstream_tls:#?}");
    assert!(
        upstream_tls.iter().all(|e| e["alpn"] == "h2"),
        "{upstream_tls:#?}"
    );
}

#[test]
fn http1_only_keeps_both_legs_on_http11() {
    let run = h2_run(&["--http1-only"]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let got = run.result();
    assert_eq!(
        got["httpx"],
        serde_json::json!(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1"]),
        "{got}"
    );
    assert_eq!(got["curl"], "HTTP/1.1 1.1", "{got}");
    for e in run.of_kind("http") {
        assert_eq!(e["version"], "HTTP/1.1", "{e}");
        assert_eq!(e["upstream_version"], "HTTP/1.1", "{e}");
    }
}

/// Calls `demo.Echo/Unary`, and `demo.Echo/Stream` when `stream`; prints what each got.
fn policy_client(stream: bool) -> String {
    format!(
        r#"
import grpc, json
out = {{}}
ch = grpc.secure_channel("grpc.test:443", grpc.ssl_channel_credentials())
out["unary"] = ch.unary_unary("/demo.Echo/Unary")(b"hi", timeout=20).decode()
if {stream}:
    try:
        out["stream"] = [m.decode() for m in ch.unary_stream("/demo.Echo/Stream")(b"x", timeout=20)]
    except grpc.RpcError as e:
        out["stream"] = [e.code().name, e.details()]
print("RESULT " + json.dumps(out), flush=True)
"#,
        stream = if stream { "True" } else { "False" }
    )
}

#[test]
fn learned_grpc_methods_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), &["grpc.test"]);
    let (_server, tls_port, _) = grpc_server(&pki);
    let map = format!("grpc.test:443=127.0.0.1:{tls_port}");
    let ca = pki.ca.to_string_lossy().into_owned();
    let base = ["--upstream-map", map.as_str(), "--upstream-ca", ca.as_str()];
    let observed = offline_python(&base, &policy_client(false));
    assert_eq!(observed.code(), Some(0), "{}", observed.explain());

    let runs = dir.path().join("runs/observed");
    std::fs::create_dir_all(&runs).expect("mkdir");
    std::fs::copy(
        observed.run_dir().join("audit.jsonl"),
        runs.join("audit.jsonl"),
    )
    .expect("copy");
    let policy = dir.path().join("policy.yaml");
    let out = Command::new(IDAGENT)
        .args(["policy", "learn"])
        .arg(&runs)
        .arg("-o")
        .arg(&policy)
        .output()
        .expect("policy learn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = std::fs::read_to_string(&policy).expect("policy");
    assert!(
        yaml.contains("demo.Echo") && yaml.contains("Unary") && !yaml.contains("Stream"),
        "learned: {yaml}"
    );

    let policy = policy.display().to_string();
    let mut args = base.to_vec();
    args.extend(["--policy", policy.as_str(), "--mode", "enforce"]);
    let enforced = offline_python(&args, &policy_client(true));
    let explain = enforced.explain();
    assert_eq!(enforced.code(), Some(0), "{explain}");
    let got = enforced.result();
    assert_eq!(got["unary"], "echo:hi", "{explain}");
    assert_eq!(got["stream"][0], "PERMISSION_DENIED", "{explain}");
    assert!(
        got["stream"][1]
            .as_str()
            .is_some_and(|m| m.contains("denied by idagent policy")),
        "{got}"
    );
    let deny = enforced
        .of_kind("decision")
        .find(|d| d["verdict"] == "deny" && d["layer"] == "http")
        .unwrap_or_else(|| panic!("no deny decision\n{explain}"));
    assert_eq!(deny["enforced_by"], "grpc_status", "{deny}");
    assert_eq!(deny["request"]["grpc"], "demo.Echo/Stream", "{deny}");
    // The refused call has its record, in gRPC terms.
    let refused = grpc_records(&enforced)
        .into_iter()
        .find(|e| e["grpc"]["method"] == "Stream")
        .unwrap_or_else(|| panic!("no record of the refused call\n{explain}"));
    assert_eq!(refused["grpc"]["status"], 7, "{refused}");
    assert!(
        refused["upstream"].is_null(),
        "the refused call went nowhere: {refused}"
    );
}

//! Milestone 2 acceptance: guests that know nothing about idagent reach http and https names
//! through the userspace stack and the gateway, hermetically (`--offline`, local fakes behind
//! `--upstream-map`), and every flow lands in the audit log and the pcapng.

mod common;
use common::*;
use idagent_fakes::{start_blocking, FakeServer, FakesHandle};
use serde_json::Value;

const KEY: &str = "sk-idagent-test-0123456789abcdefWXYZ";

fn fakes() -> (tempfile::TempDir, FakesHandle) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = start_blocking(dir.path()).expect("start fakes");
    (dir, fakes)
}

/// `idagent run --offline <fakes' map and CA> ARGS`.
fn run_with_fakes(fakes: &FakesHandle, args: &[&str]) -> Run {
    let mut all: Vec<String> = vec!["--offline".into()];
    all.extend(fakes.idagent_args());
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    idagent_run(&refs)
}

fn http_events(run: &Run) -> Vec<&Value> {
    run.of_kind("http").collect()
}

fn tshark_requests(pcap: &std::path::Path) -> Vec<String> {
    tshark(
        pcap,
        &["http.request.method", "http.host", "http.request.uri"],
        "http.request",
    )
}

#[test]
fn python_node_and_curl_reach_http_and_https_names() {
    let (_dir, fakes) = fakes();
    let script = format!(
        r#"set -e
curl -sS -m 20 -o /dev/null -w 'curl %{{http_code}}\n' http://www.google.com/
python3 - <<'PY'
import urllib.request
body = urllib.request.urlopen('https://www.google.com/', timeout=20).read()
print('python', len(body))
PY
node -e '
fetch("https://api.openai.com/v1/chat/completions", {{
  method: "POST",
  headers: {{ "Authorization": "Bearer {KEY}", "Content-Type": "application/json" }},
  body: JSON.stringify({{ model: "gpt-4o-mini", messages: [{{ role: "user", content: "hello" }}] }}),
}}).then(r => r.json()).then(j => console.log("node", j.choices[0].message.content))
  .catch(e => {{ console.log("node error", e.cause || e); process.exit(1); }});
'
"#
    );
    let run = run_with_fakes(&fakes, &["--image", GUEST_IMAGE, "--", "sh", "-c", &script]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let out = run.stdout();
    assert!(out.contains("curl 200"), "{out}");
    assert!(
        out.contains(&format!("python {}", idagent_fakes::google_html().len())),
        "{out}"
    );
    assert!(
        out.contains(&format!("node {}", idagent_fakes::OPENAI_REPLY)),
        "{out}"
    );

    // The fakes received exactly the requests made, with the real credential.
    let got: Vec<(FakeServer, String, String)> = fakes
        .requests()
        .iter()
        .map(|r| (r.server, r.method.clone(), r.path_and_query.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (FakeServer::GoogleHttp, "GET".into(), "/".into()),
            (FakeServer::GoogleHttps, "GET".into(), "/".into()),
            (
                FakeServer::OpenAiHttps,
                "POST".into(),
                "/v1/chat/completions".into()
            ),
        ]
    );
    let chat = fakes.requests_to(FakeServer::OpenAiHttps).remove(0);
    assert_eq!(
        chat.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let body: Value = serde_json::from_slice(&chat.body).expect("json body");
    assert_eq!(body["messages"][0]["content"], "hello");

    // dns, tcp, tls and http events, with names and byte counts.
    for name in ["www.google.com", "api.openai.com"] {
        assert!(
            run.of_kind("dns")
                .any(|e| e["name"] == name && e["rcode"] == "NOERROR" && e["source"] == "mapped"),
            "no dns answer for {name}\n{}",
            run.explain()
        );
        assert!(
            run.of_kind("tcp")
                .any(|e| e["phase"] == "open" && e["name"] == name),
            "{}",
            run.explain()
        );
    }
    let tls: Vec<&Value> = run.of_kind("tls").collect();
    assert!(tls.iter().any(|e| e["sni"] == "api.openai.com"
        && e["mode"] == "intercepted"
        && e["upstream_verify"] == "ok"));
    assert!(tls
        .iter()
        .any(|e| e["sni"] == "www.google.com" && e["mode"] == "intercepted"));
    let https_google = http_events(&run)
        .into_iter()
        .find(|e| e["url"] == "https://www.google.com/")
        .unwrap_or_else(|| panic!("no https google event\n{}", run.explain()));
    assert_eq!(https_google["method"], "GET");
    assert_eq!(https_google["status"], 200);
    assert_eq!(
        https_google["resp_bytes"],
        idagent_fakes::google_html().len()
    );
    assert_eq!(
        https_google["resp_sha256"],
        sha256_hex(idagent_fakes::google_html())
    );
    let chat_ev = http_events(&run)
        .into_iter()
        .find(|e| e["url"] == "https://api.openai.com/v1/chat/completions")
        .unwrap_or_else(|| panic!("no chat event\n{}", run.explain()));
    assert_eq!(chat_ev["method"], "POST");
    assert!(
        chat_ev["note"].is_null(),
        "exchange not complete: {chat_ev}"
    );
    assert_eq!(chat_ev["status"], 200);
    assert_eq!(chat_ev["req_bytes"], chat.body.len());
    assert_eq!(chat_ev["req_sha256"], sha256_hex(&chat.body));
    assert!(chat_ev["req_body"]
        .as_str()
        .is_some_and(|b| b.contains("gpt-4o-mini")));
    assert!(chat_ev["resp_body"]
        .as_str()
        .is_some_and(|b| b.contains("chat.completion")));
    assert!(run
        .of_kind("http")
        .any(|e| e["url"] == "http://www.google.com/" && e["status"] == 200));
    // A TCP close carries the byte counts of the guest's side of the flow.
    let closes: Vec<&Value> = run
        .of_kind("tcp")
        .filter(|e| e["phase"] == "close")
        .collect();
    assert!(
        closes
            .iter()
            .all(|e| e["bytes_up"].as_u64() > Some(0) && e["bytes_down"].as_u64() > Some(0)),
        "{}",
        run.explain()
    );

    // The credential appears only as a fingerprint.
    let audit = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).expect("audit");
    assert!(
        !audit.contains(KEY) && !audit.contains(&KEY[3..]),
        "the key leaked into the audit log"
    );
    assert!(
        audit.contains("bearer:…WXYZ:sha256="),
        "no fingerprint of the key\n{}",
        run.explain()
    );

    // tshark decodes the same requests, decrypted, from the pcapng with no extra option.
    let seen = tshark_requests(&run.run_dir().join("traffic.pcapng"));
    for want in [
        "GET www.google.com /",
        "POST api.openai.com /v1/chat/completions",
    ] {
        assert!(
            seen.iter().any(|s| s == want),
            "tshark did not show {want}: {seen:?}"
        );
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn unmapped_names_and_addresses_are_refused_and_logged() {
    let (_dir, fakes) = fakes();
    let script = r#"
import socket, json
res = {}
try:
    socket.getaddrinfo('exfil.example.net', 443); res['dns'] = 'resolved'
except socket.gaierror as e:
    res['dns'] = 'failed'
s = socket.create_connection(('203.0.113.5', 80), timeout=10)
s.sendall(b'GET / HTTP/1.1\r\nHost: 203.0.113.5\r\n\r\n')
res['direct'] = s.recv(100).decode(errors='replace').split('\r\n')[0]
print(json.dumps(res))
"#;
    let run = run_with_fakes(
        &fakes,
        &["--image", GUEST_IMAGE, "--", "python3", "-c", script],
    );
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let res: Value = serde_json::from_str(run.stdout().trim()).expect("json");
    assert_eq!(res["dns"], "failed");
    assert_eq!(res["direct"], "HTTP/1.1 502 Bad Gateway");
    assert!(
        run.of_kind("dns")
            .any(|e| e["name"] == "exfil.example.net" && e["rcode"] == "NXDOMAIN"),
        "{}",
        run.explain()
    );
    assert!(
        run.of_kind("blocked").any(|e| e["what"] == "dns"
            && e["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("exfil.example.net"))),
        "{}",
        run.explain()
    );
    assert!(
        run.of_kind("blocked")
            .any(|e| e["what"] == "tcp" && e["target"] == "203.0.113.5:80"),
        "{}",
        run.explain()
    );
    assert!(fakes.requests().is_empty(), "something reached a fake");
}

#[test]
fn sse_reaches_the_guest_as_it_is_sent() {
    let (_dir, fakes) = fakes();
    // Read the first event, then ask the fake (on another connection) to send the last one.
    // A gateway that buffered the response would deadlock here until the fake's timeout.
    let script = r#"
import urllib.request, ssl
r = urllib.request.urlopen('https://api.openai.com/sse', timeout=30)
first = r.readline().decode().strip()
print('first', first, flush=True)
urllib.request.urlopen('https://www.google.com/ack', timeout=30).read()
rest = r.read().decode()
print('rest', rest.strip())
"#;
    let run = run_with_fakes(
        &fakes,
        &["--image", GUEST_IMAGE, "--", "python3", "-c", script],
    );
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert!(run.stdout().contains("first data:"), "{}", run.explain());
    assert!(
        fakes.ack_seen_before_last(),
        "the last event was sent before the guest saw the first\n{}",
        run.explain()
    );
}

#[test]
fn garbage_from_the_guest_is_contained() {
    let (_dir, fakes) = fakes();
    let script = r#"
import socket, urllib.request
def poke(host, port, data):
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(data)
        s.settimeout(5)
        try: s.recv(1000)
        except OSError: pass
        s.close()
    except OSError:
        pass
poke('api.openai.com', 443, b'\x16\x03\x01\xff\xff' + b'\x00' * 300)            # TLS garbage
poke('api.openai.com', 443, b'\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00')         # truncated hello
poke('www.google.com', 80, b'GET / HTTP/9.9\r\nHost: \x00\x01\r\n\r\n' * 3)      # HTTP garbage
poke('www.google.com', 80, b'\x00\xff' * 500)                                    # neither
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b'\xde\xad\xbe\xef' * 10, ('10.77.0.1', 53))                           # DNS garbage
u.sendto(b'\x00', ('8.8.8.8', 53))
print(len(urllib.request.urlopen('https://www.google.com/', timeout=20).read()))
"#;
    let run = run_with_fakes(
        &fakes,
        &["--image", GUEST_IMAGE, "--", "python3", "-c", script],
    );
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert_eq!(
        run.stdout().trim(),
        idagent_fakes::google_html().len().to_string()
    );
    assert!(
        run.of_kind("tls").any(|e| e["mode"] == "rejected"),
        "{}",
        run.explain()
    );
    assert!(run
        .of_kind("http")
        .any(|e| e["url"] == "https://www.google.com/" && e["status"] == 200));
}

#[test]
fn explicit_proxy_on_port_5000_is_served_and_logged() {
    let (_dir, fakes) = fakes();
    let script = r#"set -e
curl -sS -m 20 -x http://10.77.0.1:5000 -o /dev/null -w 'plain %{http_code}\n' http://www.google.com/
curl -sS -m 20 -x http://10.77.0.1:5000 -o /dev/null -w 'connect %{http_code}\n' -H 'Authorization: Bearer sk-proxy-0123456789abcdefghij' https://api.openai.com/v1/models
HTTPS_PROXY=http://10.77.0.1:5000 python3 -c "import urllib.request; print('python', urllib.request.urlopen('https://www.google.com/', timeout=20).status)"
"#;
    let run = run_with_fakes(&fakes, &["--image", GUEST_IMAGE, "--", "sh", "-c", script]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    for want in ["plain 200", "connect 200", "python 200"] {
        assert!(run.stdout().contains(want), "{want}\n{}", run.explain());
    }
    // Absolute-form and tunnelled requests are logged like transparent ones.
    assert!(
        run.of_kind("http")
            .any(|e| e["url"] == "http://www.google.com/" && e["status"] == 200),
        "{}",
        run.explain()
    );
    assert!(
        run.of_kind("http")
            .any(|e| e["method"] == "CONNECT" && e["url"] == "api.openai.com:443"),
        "{}",
        run.explain()
    );
    assert!(
        run.of_kind("http")
            .any(|e| e["url"] == "https://api.openai.com/v1/models" && e["status"] == 200),
        "{}",
        run.explain()
    );
    assert!(
        run.of_kind("tls")
            .any(|e| e["sni"] == "www.google.com" && e["mode"] == "intercepted"),
        "{}",
        run.explain()
    );
    let servers: Vec<FakeServer> = fakes.requests().iter().map(|r| r.server).collect();
    assert_eq!(
        servers,
        [
            FakeServer::GoogleHttp,
            FakeServer::OpenAiHttps,
            FakeServer::GoogleHttps
        ]
    );
}

#[test]
fn capture_writes_the_pcap_where_asked() {
    let (_dir, fakes) = fakes();
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("out.pcapng");
    let mut args: Vec<String> = vec![
        "capture".into(),
        "--pcap".into(),
        pcap.display().to_string(),
    ];
    args.extend([
        "--run-dir".into(),
        dir.path().join("run").display().to_string(),
        "--offline".into(),
    ]);
    args.extend(fakes.idagent_args());
    args.extend(
        [
            "--image",
            GUEST_IMAGE,
            "--",
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "https://www.google.com/",
        ]
        .map(String::from),
    );
    let out = std::process::Command::new(IDAGENT)
        .args(&args)
        .output()
        .expect("idagent capture");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("run/traffic.pcapng").exists(),
        "capture also wrote the default pcap"
    );
    assert_eq!(tshark_requests(&pcap), ["GET www.google.com /"]);
    let events = read_audit(&dir.path().join("run/audit.jsonl"));
    assert_no_leftovers(events[0]["run"].as_str().expect("run id"));
}

#[test]
fn keep_alive_and_expect_continue_pass_through() {
    let (_dir, fakes) = fakes();
    let script = r#"set -e
python3 - <<'PY'
import http.client, json
c = http.client.HTTPSConnection('api.openai.com', timeout=20)
for i in range(3):
    c.request('GET', '/v1/models', headers={'Authorization': 'Bearer sk-keepalive-0123456789abcdef'})
    r = c.getresponse(); r.read()
    print('models', r.status)
PY
python3 -c "import json; print(json.dumps({'model': 'm', 'messages': [{'role': 'user', 'content': 'a' * 300000}]}))" > /tmp/workspace/big.json
curl -sS -m 30 -o /dev/null -w 'expect %{http_code}\n' -H 'Expect: 100-continue' -H 'Authorization: Bearer sk-expect-0123456789abcdef' \
  -H 'Content-Type: application/json' --data-binary @/tmp/workspace/big.json \
  https://api.openai.com/v1/chat/completions
"#;
    let run = run_with_fakes(&fakes, &["--image", GUEST_IMAGE, "--", "sh", "-c", script]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert_eq!(
        run.stdout().matches("models 200").count(),
        3,
        "{}",
        run.explain()
    );
    assert!(run.stdout().contains("expect 200"), "{}", run.explain());
    let got = fakes.requests_to(FakeServer::OpenAiHttps);
    assert_eq!(got.len(), 4);
    // One guest connection with three requests: one upstream connection, reused.
    assert!(
        got[0].connection == got[1].connection && got[1].connection == got[2].connection,
        "upstream keep-alive not reused"
    );
    assert!(
        got[3].body.len() > 300_000,
        "the 100-continue body did not arrive whole"
    );
    let post = run
        .of_kind("http")
        .find(|e| e["method"] == "POST")
        .unwrap_or_else(|| panic!("no POST\n{}", run.explain()));
    assert_eq!(post["req_bytes"], got[3].body.len());
    assert_eq!(
        post["req_body"].as_str().map(str::len),
        Some(64 * 1024),
        "capture is capped at --capture-bytes"
    );
    let flows: std::collections::BTreeSet<String> = run
        .of_kind("http")
        .filter(|e| e["method"] == "GET")
        .map(|e| e["flow"].to_string())
        .collect();
    assert_eq!(
        flows.len(),
        1,
        "three requests on one guest connection share a flow"
    );
}

#[test]
fn upgraded_streams_are_carried_and_logged() {
    let (_dir, fakes) = fakes();
    // A WebSocket-style Upgrade: after the 101, bytes flow both ways through the gateway.
    let script = r#"
import socket, ssl
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(('api.openai.com', 443), timeout=20), server_hostname='api.openai.com')
s.sendall(b'GET /upgrade-echo HTTP/1.1\r\nHost: api.openai.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n')
head = b''
while b'\r\n\r\n' not in head:
    head += s.recv(1)
print(head.split(b'\r\n')[0].decode())
s.sendall(b'ping through the upgrade')
got = b''
while len(got) < 24:
    got += s.recv(100)
print(got.decode())
"#;
    let run = run_with_fakes(
        &fakes,
        &["--image", GUEST_IMAGE, "--", "python3", "-c", script],
    );
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert_eq!(
        run.stdout(),
        "HTTP/1.1 101 Switching Protocols\nping through the upgrade\n",
        "{}",
        run.explain()
    );
    assert!(
        run.of_kind("http")
            .any(|e| e["url"] == "https://api.openai.com/upgrade-echo"
                && e["status"] == 101
                && e["note"] == "upgrade"),
        "{}",
        run.explain()
    );
}

#[test]
fn http2_guests_are_served_per_stream_and_decoded() {
    let (_dir, fakes) = fakes();
    // A guest that offers only h2 (python3-h2 over `ssl`) to an upstream that speaks only
    // HTTP/1.1: it still gets h2, and its streams are forwarded as HTTP/1.1 requests. Two requests on
    // one HTTP/2 connection (curl reuses it), then a POST with a body.
    let script = r#"
import json, socket, ssl
import h2.connection, h2.events
ctx = ssl.create_default_context()
ctx.set_alpn_protocols(["h2"])  # only h2
s = ctx.wrap_socket(socket.create_connection(("api.openai.com", 443), timeout=20),
                    server_hostname="api.openai.com")
assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
c = h2.connection.H2Connection()
c.initiate_connection()
s.sendall(c.data_to_send())
def start(method, path, body=None):
    sid = c.get_next_available_stream_id()
    headers = [(":method", method), (":path", path), (":scheme", "https"),
               (":authority", "api.openai.com"),
               ("authorization", "Bearer sk-idagent-test-0123456789abcdefWXYZ")]
    if body is not None:
        headers.append(("content-type", "application/json"))
    c.send_headers(sid, headers, end_stream=body is None)
    if body is not None:
        c.send_data(sid, body, end_stream=True)
    s.sendall(c.data_to_send())
    return sid
def finish(sids):
    status, done = {}, set()
    while done != set(sids):
        data = s.recv(65536)
        if not data:
            raise EOFError
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status[ev.stream_id] = dict(ev.headers)[b":status"].decode()
            elif isinstance(ev, h2.events.DataReceived):
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                done.add(ev.stream_id)
        s.sendall(c.data_to_send())
    for sid in sids:
        print("2", status[sid])
# Two requests in turn on one connection, then a POST with a body.
for _ in range(2):
    finish([start("GET", "/v1/models")])
body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "over h2"}]}).encode()
finish([start("POST", "/v1/chat/completions", body)])
# Five concurrent streams on one connection: the gateway needs several upstream connections.
finish([start("GET", "/v1/models?%d" % i) for i in range(1, 6)])
"#;
    let run = run_with_fakes(
        &fakes,
        &["--image", GUEST_IMAGE, "--", "python3", "-c", script],
    );
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert_eq!(run.stdout(), "2 200\n".repeat(8), "{}", run.explain());

    // The fake got HTTP/1.1 requests with a Host header and the real credential.
    let got = fakes.requests_to(FakeServer::OpenAiHttps);
    let mut paths: Vec<&str> = got.iter().map(|r| r.path_and_query.as_str()).collect();
    assert_eq!(
        paths[..3],
        ["/v1/models", "/v1/models", "/v1/chat/completions"],
        "{}",
        run.explain()
    );
    paths[3..].sort_unstable();
    assert_eq!(
        paths[3..],
        (1..=5)
            .map(|i| format!("/v1/models?{i}"))
            .collect::<Vec<_>>(),
        "{}",
        run.explain()
    );
    for r in &got {
        assert_eq!(r.header("host"), Some("api.openai.com"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
    assert!(String::from_utf8_lossy(&got[2].body).contains("over h2"));

    // Logged per stream, on an intercepted session that agreed h2 with the guest and
    // http/1.1 with the upstream.
    assert!(
        run.of_kind("tls").any(|e| e["alpn"] == "h2"
            && e["mode"] == "intercepted"
            && e["upstream_alpn"] == "http/1.1"),
        "{}",
        run.explain()
    );
    let http = http_events(&run);
    assert_eq!(http.len(), 8, "{}", run.explain());
    assert!(
        http.iter()
            .all(|e| e["version"] == "HTTP/2" && e["upstream_version"] == "HTTP/1.1"),
        "{http:#?}"
    );
    assert_eq!(
        http.iter()
            .filter(|e| e["url"] == "https://api.openai.com/v1/models" && e["status"] == 200)
            .count(),
        2
    );
    let parallel_flows: std::collections::BTreeSet<String> =
        http[3..].iter().map(|e| e["flow"].to_string()).collect();
    assert_eq!(
        parallel_flows.len(),
        1,
        "five streams, one guest connection"
    );
    assert!(http
        .iter()
        .filter(|e| e["method"] == "GET")
        .all(|e| e["status"] == 200 && e["resp_bytes"] == 261));
    let post = http
        .iter()
        .find(|e| e["method"] == "POST")
        .unwrap_or_else(|| panic!("no POST\n{}", run.explain()));
    assert_eq!(post["req_bytes"], got[2].body.len());
    let audit = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).expect("audit");
    assert!(!audit.contains(&KEY[3..]), "credential leaked");

    // tshark decrypts the HTTP/2 streams from the pcapng with no extra option.
    let seen = tshark(
        &run.run_dir().join("traffic.pcapng"),
        &["http2.headers.method", "http2.headers.path"],
        "http2.headers.method",
    );
    assert_eq!(
        seen[..3],
        [
            "GET /v1/models",
            "GET /v1/models",
            "POST /v1/chat/completions"
        ],
        "{}",
        run.explain()
    );
    // Streams sent in one packet share its line (`GET,GET /a,/b`).
    let paths: usize = seen
        .iter()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|p| p.split(',').count())
        .sum();
    assert_eq!(paths, 8, "{seen:?}");
}

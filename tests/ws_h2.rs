//! WebSockets over HTTP/2 (RFC 8441; issue 10): a guest speaking h2 only (Debian's
//! python3-h2 over `ssl`) sees SETTINGS_ENABLE_CONNECT_PROTOCOL, opens an extended CONNECT
//! stream and exchanges WebSocket frames as DATA with a local HTTP/1.1 WebSocket echo server
//! (TLS, a test CA), which gets a proper h1 Upgrade from idagent. The log holds the stream's
//! `http` record and one `ws` record per message and direction, as for an h1 upgrade; an
//! upstream refusal reaches the guest's stream as its status; a policy learned from the run
//! decides the stream as the GET it stands for. Real engine, real kernel, offline.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A TLS HTTP/1.1 WebSocket echo server on 127.0.0.1. `/chat` is switched (the first offered
/// subprotocol agreed) and every frame echoed until a close, echoed too; any other path is
/// answered `403`. Every request head it got is kept in `heads`.
fn echo_server(config: rustls::ServerConfig, heads: Arc<Mutex<Vec<String>>>) -> u16 {
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, heads) = (config.clone(), heads.clone());
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut b).is_ok() {
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                heads.lock().expect("heads").push(head.clone());
                if !head.starts_with("GET /chat ") {
                    let _ = s.write_all(
                        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n",
                    );
                    let _ = s.flush();
                    return;
                }
                let protocol = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("sec-websocket-protocol")
                            .then(|| v.split(',').next().unwrap_or("").trim().to_owned())
                    })
                    .unwrap_or_default();
                // The gateway does not check the accept key (the guest cannot, over h2): a
                // fixed one keeps the test free of SHA-1.
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                     Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
                );
                if s.write_all(answer.as_bytes()).is_err() || s.flush().is_err() {
                    return;
                }
                while let Some((b0, payload)) = ws_read_frame(&mut s) {
                    if ws_write_frame(&mut s, b0, &payload).is_err() || b0 & 0x0f == 8 {
                        break;
                    }
                }
            });
        }
    });
    port
}

const GUEST: &str = r#"
import json, os, socket, ssl, struct
import h2.connection, h2.events, h2.settings
def frame(b0, payload, masked=True):
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126: head = bytes([b0, m | n])
    elif n < 65536: head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else: head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not masked: return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
def parse_frames(buf):
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        n, at = b1 & 0x7f, 2
        if n == 126: n, at = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127: n, at = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < at + n: break
        out.append((b0, buf[at:at + n]))
        buf = buf[at + n:]
    return out, buf
ctx = ssl.create_default_context()
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("ws.test", 443), timeout=20),
                    server_hostname="ws.test")
assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
c = h2.connection.H2Connection()
c.initiate_connection()
s.sendall(c.data_to_send())
out = {}
def pump(until):
    while not until():
        data = s.recv(65536)
        if not data: raise EOFError
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                cp = ev.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
                out["enable_connect_protocol"] = cp.new_value if cp else 0
            elif isinstance(ev, h2.events.ResponseReceived):
                streams[ev.stream_id]["headers"] = {k.decode(): v.decode() for k, v in ev.headers}
            elif isinstance(ev, h2.events.DataReceived):
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                streams[ev.stream_id]["data"] += ev.data
            elif isinstance(ev, h2.events.StreamEnded):
                streams[ev.stream_id]["ended"] = True
        s.sendall(c.data_to_send())
streams = {}
# RFC 8441 §3: the client waits for the server's SETTINGS before an extended CONNECT.
pump(lambda: "enable_connect_protocol" in out)
def connect(path):
    sid = c.get_next_available_stream_id()
    streams[sid] = {"data": b"", "ended": False}
    c.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                         (":scheme", "https"), (":path", path), (":authority", "ws.test"),
                         ("sec-websocket-version", "13"),
                         ("sec-websocket-protocol", "chat, superchat"),
                         ("origin", "https://ws.test")])
    s.sendall(c.data_to_send())
    pump(lambda: "headers" in streams[sid])
    return sid
sid = connect("/chat")
out["status"] = streams[sid]["headers"][":status"]
out["protocol"] = streams[sid]["headers"].get("sec-websocket-protocol")
binary = bytes(range(256)) + bytes(range(44))
frames = [
    frame(0x81, b"hello"),
    frame(0x82, binary),
    frame(0x01, b"frag"),
    frame(0x89, b"ping!"),
    frame(0x80, b"mented"),
    frame(0x81, b"not masked", masked=False),
    frame(0x88, struct.pack(">H", 1000) + b"bye"),
]
c.send_data(sid, b"".join(frames))
s.sendall(c.data_to_send())
echoes = []
def closed():
    global echoes
    got, rest = parse_frames(streams[sid]["data"])
    echoes = [[b0, p.hex()] for b0, p in got]
    return any(b0 & 0x0f == 8 for b0, _ in got)
pump(closed)
out["echoes"] = echoes
c.end_stream(sid)
s.sendall(c.data_to_send())
# Another path: refused by the upstream (its status is the stream's), or by the policy.
nope = connect(SECOND_PATH)
pump(lambda: streams[nope]["ended"])
out["refused"] = [streams[nope]["headers"][":status"], streams[nope]["data"].decode()]
print("RESULT " + json.dumps(out), flush=True)
"#;

#[test]
fn rfc8441_websocket_streams_are_translated_logged_and_decided_as_get() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), &["ws.test"]);
    // An HTTP/1.1 server: the gateway must come with an h1 Upgrade.
    let config = tls_server_config(&pki, &[b"http/1.1"]);
    let ca = pki.ca.clone();
    let server_heads = Arc::new(Mutex::new(Vec::new()));
    let port = echo_server(config, server_heads.clone());
    let map = format!("ws.test:443=127.0.0.1:{port}");
    let ca = ca.to_string_lossy().into_owned();
    let args = ["--upstream-map", &map, "--upstream-ca", &ca];
    let run = offline_python(&args, &GUEST.replace("SECOND_PATH", "\"/nope\""));
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let r = run.result();
    assert_eq!(r["enable_connect_protocol"], 1, "{r}");
    assert_eq!(r["status"], "200", "{r}");
    assert_eq!(r["protocol"], "chat", "the 101's subprotocol: {r}");
    let binary: Vec<u8> = (0..=255u8).chain(0..44u8).collect();
    let echoed: Vec<(u64, String)> = r["echoes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e[0].as_u64().unwrap_or(0),
                        e[1].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<(u64, String)> = [
        (0x81, hex::encode(b"hello")),
        (0x82, hex::encode(&binary)),
        (0x01, hex::encode(b"frag")),
        (0x89, hex::encode(b"ping!")),
        (0x80, hex::encode(b"mented")),
        (0x81, hex::encode(b"not masked")),
        (0x88, hex::encode(b"\x03\xe8bye")),
    ]
    .into_iter()
    .collect();
    assert_eq!(echoed, want, "{}", run.explain());
    assert_eq!(r["refused"], serde_json::json!(["403", "no\n"]), "{r}");

    // The echo server got a proper HTTP/1.1 Upgrade, with the guest's end-to-end headers.
    // (Without a request: the connection the gateway opened before answering the guest's
    // ALPN offer, to learn what the upstream speaks; each WebSocket gets one of its own.)
    let heads: Vec<String> = server_heads
        .lock()
        .expect("heads")
        .iter()
        .filter(|h| !h.is_empty())
        .cloned()
        .collect();
    assert_eq!(heads.len(), 2, "{heads:?}");
    let chat = &heads[0];
    let header = |name: &str| -> Vec<String> {
        chat.lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    };
    assert!(chat.starts_with("GET /chat HTTP/1.1\r\n"), "{chat}");
    assert_eq!(header("host"), ["ws.test"], "{chat}");
    assert_eq!(header("upgrade"), ["websocket"], "{chat}");
    assert_eq!(header("connection"), ["Upgrade"], "{chat}");
    assert_eq!(header("sec-websocket-version"), ["13"], "{chat}");
    assert_eq!(
        header("sec-websocket-protocol"),
        ["chat, superchat"],
        "{chat}"
    );
    assert_eq!(header("origin"), ["https://ws.test"], "{chat}");
    let key = header("sec-websocket-key");
    assert_eq!(key.len(), 1, "{chat}");
    // 16 random bytes, base64: 22 characters and `==`; a fresh one per handshake.
    assert!(
        key[0].len() == 24 && key[0].ends_with("==") && !key[0][..22].contains('='),
        "{chat}"
    );
    assert!(heads[1].starts_with("GET /nope HTTP/1.1\r\n"), "{heads:?}");
    assert!(
        !heads[1].contains(&key[0]),
        "the key is not reused: {heads:?}"
    );

    // One `http` record per stream: the GET it stands for, over HTTP/2, upstream HTTP/1.1.
    let http: Vec<&Value> = run.of_kind("http").collect();
    assert_eq!(http.len(), 2, "{}", run.explain());
    let ws_rec = http
        .iter()
        .find(|e| e["url"] == "https://ws.test/chat")
        .unwrap_or_else(|| panic!("no record of /chat\n{}", run.explain()));
    assert_eq!(ws_rec["method"], "GET", "{ws_rec}");
    assert_eq!(ws_rec["note"], "upgrade", "{ws_rec}");
    assert_eq!(ws_rec["status"], 101, "{ws_rec}");
    assert_eq!(ws_rec["version"], "HTTP/2", "{ws_rec}");
    assert_eq!(ws_rec["upstream_version"], "HTTP/1.1", "{ws_rec}");
    assert!(ws_rec["upstream"].is_string(), "{ws_rec}");
    assert_eq!(
        ws_rec["req_headers"][0],
        serde_json::json!([":protocol", "websocket"]),
        "{ws_rec}"
    );
    let nope = http
        .iter()
        .find(|e| e["url"] == "https://ws.test/nope")
        .unwrap_or_else(|| panic!("no record of /nope\n{}", run.explain()));
    assert_eq!(nope["status"], 403, "{nope}");
    assert!(nope["note"].is_null(), "{nope}");
    assert_eq!(nope["resp_body"], "no\n", "{nope}");

    // `ws` records, both ways, as for an h1 upgrade.
    let flow = &ws_rec["flow"];
    for direction in ["up", "down"] {
        let ws: Vec<&Value> = run
            .of_kind("ws")
            .filter(|e| e["direction"] == direction)
            .collect();
        let summary: Vec<(&str, u64, &str)> = ws
            .iter()
            .map(|e| {
                (
                    e["opcode"].as_str().unwrap_or("?"),
                    e["size"].as_u64().unwrap_or(0),
                    e["first"].as_str().unwrap_or("?"),
                )
            })
            .collect();
        assert_eq!(
            summary[..],
            [
                ("text", 5, "hello"),
                ("binary", 300, ws[1]["first"].as_str().unwrap_or("?")),
                ("ping", 5, "ping!"),
                ("text", 10, "fragmented"),
                ("text", 10, "not masked"),
                ("close", 5, "bye"),
            ],
            "{direction}: {}",
            run.explain()
        );
        assert!(ws.iter().all(|e| &e["flow"] == flow), "{ws:?}");
        assert_eq!(ws[0]["sha256"], sha256_hex(b"hello"));
        assert_eq!(ws[1]["sha256"], sha256_hex(&binary));
        assert!(
            ws[1]["first"]
                .as_str()
                .is_some_and(|f| f.starts_with('\0') && f.contains("\\x80\\x81")),
            "binary is escaped: {:?}",
            ws[1]
        );
        assert_eq!(ws[3]["sha256"], sha256_hex(b"fragmented"));
        assert_eq!(ws[5]["code"], 1000);
    }

    // The stream is decided as the GET it stands for: a policy learned from this run lets
    // `/chat` through again and refuses a path it never saw, before any upstream request.
    let policy = dir.path().join("ws.yaml");
    let learned = std::process::Command::new(IDAGENT)
        .args(["policy", "learn"])
        .arg(run.run_dir())
        .arg("-o")
        .arg(&policy)
        .output()
        .expect("start idagent policy learn");
    assert!(learned.status.success(), "{learned:?}");
    let yaml = std::fs::read_to_string(&policy).expect("policy written");
    assert!(yaml.contains("/chat"), "{yaml}");
    let policy = policy.to_string_lossy().into_owned();
    let mut enforced_args = args.to_vec();
    enforced_args.extend(["--policy", &policy, "--mode", "enforce"]);
    let before = heads.len();
    let enforced = offline_python(&enforced_args, &GUEST.replace("SECOND_PATH", "\"/other\""));
    let got = enforced.result();
    assert_eq!(got["status"], "200", "{}", enforced.explain());
    assert_eq!(got["echoes"].as_array().map(Vec::len), Some(7), "{got}");
    assert_eq!(got["refused"][0], "403", "{}", enforced.explain());
    let body: Value = serde_json::from_str(got["refused"][1].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("403 body is not JSON ({e}): {got}"));
    assert_eq!(body["layer"], "http", "{body}");
    let request = body["request"].as_str().unwrap_or_default();
    assert!(
        request.contains("GET") && request.contains("/other"),
        "{body}"
    );
    let denied = enforced
        .of_kind("http")
        .find(|e| e["url"] == "https://ws.test/other")
        .unwrap_or_else(|| panic!("no record of /other\n{}", enforced.explain()));
    assert!(
        denied["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("denied by policy")),
        "{denied}"
    );
    let heads_after: Vec<String> = server_heads
        .lock()
        .expect("heads")
        .iter()
        .filter(|h| !h.is_empty())
        .cloned()
        .collect();
    assert_eq!(
        heads_after.len(),
        before + 1,
        "only /chat reached the server: {heads_after:?}"
    );
    assert!(
        heads_after[before].starts_with("GET /chat "),
        "{heads_after:?}"
    );
}

//! WebSocket messages in the log (issue 10, item 3): a guest's h1 `Upgrade: websocket`
//! through the gateway to a local echo server leaves one `ws` event per message and direction,
//! with opcode, size, sha256 and redacted first bytes; permessage-deflate messages are logged
//! inflated. Real engine, real kernel, offline.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;

/// A WebSocket echo server on 127.0.0.1: answers the handshake, then echoes every frame as it
/// came (fragments stay fragments, compressed frames stay compressed), until a close, which it
/// echoes too.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut b = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n") && s.read_exact(&mut b).is_ok() {
                    req.push(b[0]);
                }
                // An offered extension is accepted as offered (permessage-deflate with its
                // parameters): echoed frames then stay valid for the client whatever it chose.
                let extensions = String::from_utf8_lossy(&req)
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("sec-websocket-extensions")
                            .then(|| format!("Sec-WebSocket-Extensions: {}\r\n", value.trim()))
                    })
                    .unwrap_or_default();
                // The client below does not check the accept key, and neither does the
                // gateway: a fixed one keeps the test free of SHA-1.
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                         {extensions}\r\n"
                    )
                    .as_bytes(),
                );
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

const SECRET: &str = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234";

#[test]
fn websocket_messages_are_logged_both_ways_with_secrets_fingerprinted() {
    let port = echo_server();
    let map = format!("ws.test:80=127.0.0.1:{port}");
    let script = format!(
        r#"{GUEST_FRAMES}
s = socket.create_connection(("ws.test", 80), timeout=10)
s.sendall(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while not head.endswith(b"\r\n\r\n"):
    head += recv_exact(s, 1)
binary = bytes(range(256)) * 2
secret = json.dumps({{"api_key": "{SECRET}"}}).encode()
frames = [
    frame(0x81, b"hello"),
    frame(0x82, binary),
    frame(0x01, b"frag"),
    frame(0x89, b"ping!"),
    frame(0x80, b"mented"),
    frame(0x81, secret),
    frame(0x88, struct.pack(">H", 1000) + b"bye"),
]
s.sendall(b"".join(frames))
echoes = []
while True:
    b0, payload = read_frame(s)
    echoes.append([b0, payload.hex()])
    if b0 & 0x0f == 8: break
print("RESULT " + json.dumps({{"status": head.split(b"\r\n")[0].decode(), "echoes": echoes}}))
"#
    );
    let run = offline_python(&["--upstream-map", &map], &script);
    let r = run.result();
    assert_eq!(
        r["status"],
        "HTTP/1.1 101 Switching Protocols",
        "{}",
        run.explain()
    );
    assert_eq!(r["echoes"].as_array().map(Vec::len), Some(7), "{r}");
    let http: Vec<&Value> = run.of_kind("http").collect();
    assert_eq!(http.len(), 1, "{}", run.explain());
    assert_eq!(http[0]["note"], "upgrade");
    let flow = &http[0]["flow"];
    let binary: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    for direction in ["up", "down"] {
        let ws: Vec<&Value> = run
            .of_kind("ws")
            .filter(|e| e["direction"] == direction)
            .collect();
        let summary: Vec<(String, u64)> = ws
            .iter()
            .map(|e| {
                (
                    e["opcode"].as_str().unwrap_or("?").to_owned(),
                    e["size"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let secret_len = format!("{{\"api_key\": \"{SECRET}\"}}").len() as u64;
        let want: Vec<(String, u64)> = [
            ("text", 5),
            ("binary", 512),
            ("ping", 5),
            ("text", 10),
            ("text", secret_len),
            ("close", 5),
        ]
        .iter()
        .map(|(o, n)| ((*o).to_owned(), *n))
        .collect();
        assert_eq!(summary, want, "{direction}: {}", run.explain());
        assert!(ws.iter().all(|e| &e["flow"] == flow), "{ws:?}");
        assert_eq!(ws[0]["first"], "hello");
        assert_eq!(ws[0]["sha256"], sha256_hex(b"hello"));
        assert_eq!(ws[1]["sha256"], sha256_hex(&binary));
        assert!(
            ws[1]["first"].as_str().is_some_and(|f| f.contains("\\xff")),
            "binary is escaped: {:?}",
            ws[1]
        );
        assert_eq!(ws[2]["first"], "ping!");
        assert_eq!(ws[3]["first"], "fragmented", "reassembled: {:?}", ws[3]);
        assert_eq!(ws[3]["sha256"], sha256_hex(b"fragmented"));
        let first = ws[4]["first"].as_str().unwrap_or_default();
        assert!(first.contains("api_key"), "{:?}", ws[4]);
        assert!(
            !first.contains("AbCdEfGhIj"),
            "secret in the log: {:?}",
            ws[4]
        );
        assert!(
            ws[4]["credentials"]
                .as_array()
                .is_some_and(|c| !c.is_empty()),
            "{:?}",
            ws[4]
        );
        assert_eq!(ws[5]["code"], 1000);
        assert_eq!(ws[5]["first"], "bye");
    }
    // The secret is nowhere in the log, whatever record.
    let log = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).unwrap_or_default();
    assert!(!log.is_empty(), "{}", run.explain());
    assert!(!log.contains("AbCdEfGhIjKl"), "the secret reached the log");
}

/// The guest's frame helpers (client frames are masked), shared by the scripts.
const GUEST_FRAMES: &str = r#"
import json, os, socket, struct, zlib
def frame(b0, payload):
    key = os.urandom(4)
    n = len(payload)
    if n < 126: head = bytes([b0, 0x80 | n])
    elif n < 65536: head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else: head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk: raise EOFError
        out += chunk
    return out
def read_frame(s):
    b0, b1 = recv_exact(s, 2)
    n = b1 & 0x7f
    if n == 126: n = struct.unpack(">H", recv_exact(s, 2))[0]
    elif n == 127: n = struct.unpack(">Q", recv_exact(s, 8))[0]
    return b0, recv_exact(s, n)
"#;

/// A guest with Python's stdlib only (zlib, raw DEFLATE) talks permessage-deflate through the
/// gateway, once with context takeover (later messages refer back into earlier ones, one is
/// fragmented) and once with `*_no_context_takeover`: the `ws` events show the inflated text,
/// its size and sha256, the wire size beside them, and a secret inside a compressed message is
/// redacted. The echoes prove the relay forwarded the compressed bytes unchanged.
#[test]
fn permessage_deflate_messages_are_logged_inflated() {
    let port = echo_server();
    let map = format!("ws.test:80=127.0.0.1:{port}");
    let script = format!(
        r#"{GUEST_FRAMES}
TAIL = b"\x00\x00\xff\xff"
def deflate(c, msg):
    out = c.compress(msg) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]
def session(ext, frames):
    s = socket.create_connection(("ws.test", 80), timeout=10)
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Extensions: " + ext + b"\r\n\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += recv_exact(s, 1)
    assert b"permessage-deflate" in head.lower(), head
    s.sendall(b"".join(frame(b0, p) for b0, p in frames))
    # The echoes' payloads, to compare with what was sent.
    echoes = []
    while True:
        b0, payload = read_frame(s)
        echoes.append(payload.hex())
        if b0 & 0x0f == 8: break
    s.close()
    return echoes
secret = json.dumps({{"api_key": "{SECRET}"}}).encode()
c = zlib.compressobj(wbits=-15)
texts = [b"hello hello hello, the agent speaks", secret, b"the agent speaks once more: hello hello"]
one = deflate(c, texts[0])
two = deflate(c, texts[1])
three = deflate(c, texts[2])
cut = len(three) // 2
kept = [
    (0xC1, one),
    (0x81, b"plain text"),
    (0xC1, two),
    (0x41, three[:cut]),
    (0x89, b"ping"),
    (0x80, three[cut:]),
    (0x88, struct.pack(">H", 1000) + b"bye"),
]
fresh_texts = [b"fresh context: hello hello", b"fresh context: hello hello"]
fresh = [(0xC1, deflate(zlib.compressobj(wbits=-15), t)) for t in fresh_texts]
fresh.append((0x88, struct.pack(">H", 1000)))
echo_kept = session(b"permessage-deflate", kept)
echo_fresh = session(b"permessage-deflate; client_no_context_takeover; server_no_context_takeover", fresh)
print("RESULT " + json.dumps({{
    "echo_kept": echo_kept, "echo_fresh": echo_fresh,
    "sent_kept": [p.hex() for _, p in kept], "sent_fresh": [p.hex() for _, p in fresh],
    "wire": [len(one), len(two), len(three), len(fresh[0][1])],
}}))
"#
    );
    let run = offline_python(&["--upstream-map", &map], &script);
    let r = run.result();
    // The echo server answers each frame with the same frame: same payloads, same order.
    assert_eq!(r["echo_kept"], r["sent_kept"], "{}", run.explain());
    assert_eq!(r["echo_fresh"], r["sent_fresh"], "{}", run.explain());
    let wire: Vec<u64> = r["wire"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert_eq!(wire.len(), 4, "{r}");
    let http: Vec<&Value> = run.of_kind("http").collect();
    assert_eq!(http.len(), 2, "{}", run.explain());
    let secret = format!("{{\"api_key\": \"{SECRET}\"}}");
    let texts = [
        "hello hello hello, the agent speaks",
        secret.as_str(),
        "the agent speaks once more: hello hello",
    ];
    for direction in ["up", "down"] {
        let of_flow = |flow: &Value| -> Vec<&Value> {
            run.of_kind("ws")
                .filter(|e| e["direction"] == direction && &e["flow"] == flow)
                .collect()
        };
        let kept = of_flow(&http[0]["flow"]);
        let ops: Vec<&str> = kept.iter().filter_map(|e| e["opcode"].as_str()).collect();
        assert_eq!(
            ops,
            ["text", "text", "text", "ping", "text", "close"],
            "{direction}: {}",
            run.explain()
        );
        // The compressed ones, in wire order: messages 0, 2 and 4 (after the ping).
        for (e, (text, wire)) in [kept[0], kept[2], kept[4]]
            .iter()
            .zip(texts.iter().zip(&wire))
        {
            assert_eq!(e["compressed"], true, "{e}");
            assert_eq!(e["inflate"], "done", "{e}");
            assert_eq!(e["compressed_size"], *wire, "{e}");
            assert_eq!(e["size"], text.len() as u64, "{e}");
            assert_eq!(e["sha256"], sha256_hex(text.as_bytes()), "{e}");
        }
        assert_eq!(kept[0]["first"], texts[0]);
        assert_eq!(kept[4]["first"], texts[2], "fragmented and compressed");
        assert_eq!(kept[1]["first"], "plain text");
        assert!(kept[1].get("inflate").is_none(), "{}", kept[1]);
        let first = kept[2]["first"].as_str().unwrap_or_default();
        assert!(first.contains("\"api_key\""), "inflated: {}", kept[2]);
        assert!(
            !first.contains("AbCdEfGhIj"),
            "secret in the log: {}",
            kept[2]
        );
        assert!(
            kept[2]["credentials"]
                .as_array()
                .is_some_and(|c| !c.is_empty()),
            "{}",
            kept[2]
        );
        let fresh = of_flow(&http[1]["flow"]);
        assert_eq!(fresh.len(), 3, "{direction}: {}", run.explain());
        for e in &fresh[..2] {
            assert_eq!(e["inflate"], "done", "{e}");
            assert_eq!(e["first"], "fresh context: hello hello", "{e}");
            assert_eq!(e["compressed_size"], wire[3], "{e}");
        }
    }
    let notices: Vec<&Value> = run
        .of_kind("notice")
        .filter(|n| n["what"].as_str().is_some_and(|w| w.starts_with("ws_")))
        .collect();
    assert!(notices.is_empty(), "{notices:?}");
    let log = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).unwrap_or_default();
    assert!(!log.is_empty(), "{}", run.explain());
    assert!(!log.contains("AbCdEfGhIjKl"), "the secret reached the log");
}

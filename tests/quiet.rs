//! Quiet, correct logs (issue 10, item 5): a refused QUIC connection is one `blocked` record
//! with its datagram count, IPv6 targets are bracketed, flows carry the name the guest
//! resolved, and the guest's hostname resolves without a DNS query. Real engine, real kernel,
//! offline; judged by the audit log.

mod common;
use common::*;
use serde_json::Value;

/// A QUIC v1 long-header Initial-looking datagram builder (first byte, version, DCID, empty
/// SCID, padding), shared by the guest scripts.
const QUIC_PY: &str = r#"
import json, socket, time
def quic(dcid):
    return b"\xc3" + b"\x00\x00\x00\x01" + bytes([len(dcid)]) + dcid + b"\x00" + b"\x00" * 1180
def send(family, addr, dcid, n):
    s = socket.socket(family, socket.SOCK_DGRAM)
    for _ in range(n):
        s.sendto(quic(dcid), addr)
        time.sleep(0.05)
    s.close()
"#;

/// The QUIC refusals of a run (`blocked` records with the QUIC reason).
fn quic_records(run: &Run) -> Vec<&Value> {
    run.of_kind("blocked")
        .filter(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("QUIC")))
        .collect()
}

/// Five datagrams of one connection (same DCID, from five sockets, so only the DCID ties them
/// together), a second connection of two datagrams to the same target and a short-header
/// "connection" of three (keyed by its 5-tuple): three records, counts 5, 2 and 3, no
/// `repeated` aggregation on top.
#[test]
fn a_refused_quic_connection_is_one_record_with_its_datagram_count() {
    let script = format!(
        r#"{QUIC_PY}
one = bytes.fromhex("0102030405060708")
for _ in range(5):
    send(socket.AF_INET, ("192.0.2.10", 443), one, 1)
send(socket.AF_INET, ("192.0.2.10", 443), bytes.fromhex("aabbccdd"), 2)
# A short header (no DCID to read): keyed by its 5-tuple, three datagrams from one socket.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(b"\x40short", ("192.0.2.11", 443))
    time.sleep(0.05)
print("RESULT " + json.dumps({{"ok": True}}))
"#
    );
    let run = offline_python(&[], &script);
    assert_eq!(run.result()["ok"], true, "{}", run.explain());
    let quic = quic_records(&run);
    let of = |dcid: Option<&str>, target: &str| -> Vec<&Value> {
        quic.iter()
            .copied()
            .filter(|e| e["target"] == target && e["quic_dcid"].as_str() == dcid)
            .collect()
    };
    let one = of(Some("0102030405060708"), "192.0.2.10:443");
    assert_eq!(one.len(), 1, "{}", run.explain());
    assert_eq!(one[0]["datagrams"], 5, "{}", run.explain());
    assert_eq!(one[0]["what"], "udp");
    assert!(one[0]["repeated"].is_null(), "{:?}", one[0]);
    assert!(one[0]["first_ts"].is_string() && one[0]["last_ts"].is_string());
    let two = of(Some("aabbccdd"), "192.0.2.10:443");
    assert_eq!(two.len(), 1, "{}", run.explain());
    assert_eq!(two[0]["datagrams"], 2);
    let short = of(None, "192.0.2.11:443");
    assert_eq!(short.len(), 1, "{}", run.explain());
    assert_eq!(short[0]["datagrams"], 3);
    assert_eq!(quic.len(), 3, "no other QUIC record: {quic:?}");
    // Every datagram was refused (counted in run_end as before).
    let end = run.of_kind("run_end").next().expect("run_end");
    assert_eq!(end["counts"]["blocked"].as_u64(), Some(3), "{end}");
}

/// IPv6 destinations written as `[v6]:port` in every record that names one: the tcp flow,
/// the refused dial, a refused UDP flow and a refused QUIC datagram.
#[test]
fn ipv6_targets_are_bracketed() {
    let script = format!(
        r#"{QUIC_PY}
r = {{}}
c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
c.settimeout(5)
try:
    c.connect(("2001:db8::5", 8080))
    c.sendall(b"GET / HTTP/1.1\r\nHost: [2001:db8::5]:8080\r\n\r\n")
    r["tcp"] = c.recv(100).decode(errors="replace")
except OSError as e:
    r["tcp"] = type(e).__name__
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.sendto(b"hi", ("2001:db8::7", 7000))
send(socket.AF_INET6, ("2001:db8::6", 443), bytes.fromhex("0a0b0c0d"), 2)
time.sleep(0.3)
print("RESULT " + json.dumps(r))
"#
    );
    let run = offline_python(&[], &script);
    let _ = run.result();
    let with = |kind: &str, field: &str, value: &str| {
        run.of_kind(kind).filter(|e| e[field] == value).count()
    };
    assert_eq!(
        with("tcp", "dst", "[2001:db8::5]:8080"),
        2,
        "open and close\n{}",
        run.explain()
    );
    assert!(
        with("blocked", "target", "[2001:db8::5]:8080") >= 1,
        "{}",
        run.explain()
    );
    assert_eq!(
        with("blocked", "target", "[2001:db8::7]:7000"),
        1,
        "{}",
        run.explain()
    );
    let quic: Vec<&Value> = quic_records(&run)
        .into_iter()
        .filter(|e| e["target"] == "[2001:db8::6]:443")
        .collect();
    assert_eq!(quic.len(), 1, "{}", run.explain());
    assert_eq!(quic[0]["datagrams"], 2);
    // No address:port text anywhere in the log names a v6 address without brackets.
    for e in &run.events {
        for field in ["target", "dst", "src", "server", "upstream", "reason"] {
            let Some(text) = e[field].as_str() else {
                continue;
            };
            for (i, _) in text.match_indices("2001:db8::") {
                assert!(
                    i > 0 && text.as_bytes()[i - 1] == b'[',
                    "unbracketed v6 in {field}: {e}"
                );
            }
        }
    }
}

/// The guest resolves `x.example` (mapped on one port, so it gets a synthetic address) and
/// uses it on other ports too: the tcp flow, its refused dial, a refused UDP flow and a
/// refused QUIC connection all carry `name`.
#[test]
fn flows_carry_the_name_the_guest_resolved() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let map = format!("x.example:8080=127.0.0.1:{port}");
    let script = format!(
        r#"{QUIC_PY}
r = {{}}
addr = socket.gethostbyname("x.example")
r["addr"] = addr
def get(port):
    c = socket.create_connection((addr, port), timeout=5)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n")
    try:
        return c.recv(100).decode(errors="replace").split("\r\n")[0]
    except OSError as e:
        return type(e).__name__
r["mapped"] = get(8080)
r["unmapped"] = get(9090)
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hi", (addr, 7000))
send(socket.AF_INET, (addr, 443), bytes.fromhex("01020304"), 2)
time.sleep(0.3)
print("RESULT " + json.dumps(r))
"#
    );
    let run = offline_python(&["--upstream-map", &map], &script);
    let r = run.result();
    assert_eq!(r["mapped"], "HTTP/1.1 204 No Content", "{}", run.explain());
    let addr = r["addr"].as_str().expect("resolved").to_owned();
    let named = |kind: &'static str, target_field: &'static str, target: &str| -> Vec<&Value> {
        run.of_kind(kind)
            .filter(|e| e[target_field].as_str().is_some_and(|t| t.contains(target)))
            .collect()
    };
    for port in [8080, 9090] {
        let flows = named("tcp", "dst", &format!("{addr}:{port}"));
        assert_eq!(flows.len(), 2, "{}", run.explain());
        assert!(flows.iter().all(|e| e["name"] == "x.example"), "{flows:?}");
    }
    let dial = named("blocked", "target", &format!("{addr}:9090"));
    assert_eq!(dial.len(), 1, "{}", run.explain());
    assert_eq!(dial[0]["name"], "x.example", "{:?}", dial[0]);
    assert_eq!(dial[0]["what"], "tcp");
    let udp = named("blocked", "target", &format!("{addr}:7000"));
    assert_eq!(udp.len(), 1, "{}", run.explain());
    assert_eq!(udp[0]["name"], "x.example", "{:?}", udp[0]);
    let quic = named("blocked", "target", &format!("{addr}:443"));
    assert_eq!(quic.len(), 1, "{}", run.explain());
    assert_eq!(quic[0]["name"], "x.example", "{:?}", quic[0]);
    assert_eq!(quic[0]["datagrams"], 2);
}

/// `hostname` in the guest is the name `/etc/hostname` holds, and resolving it is answered by
/// `/etc/hosts`: no DNS query leaves the guest for it.
#[test]
fn the_guest_hostname_matches_etc_hostname_and_resolves_locally() {
    let script = r#"
import json, socket, subprocess
r = {
    "hostname": subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip(),
    "etc": open("/etc/hostname").read().strip(),
    "gethostname": socket.gethostname(),
    "addr": socket.gethostbyname(socket.gethostname()),
}
print("RESULT " + json.dumps(r))
"#;
    let run = offline_python(&[], script);
    let r = run.result();
    assert_eq!(r["hostname"], "idagent-guest", "{}", run.explain());
    assert_eq!(r["etc"], "idagent-guest");
    assert_eq!(r["gethostname"], "idagent-guest");
    assert_eq!(r["addr"], "127.0.1.1", "{}", run.explain());
    // The script resolves nothing else: any DNS query at all is the hostname's.
    let queried: Vec<&Value> = run.of_kind("dns").collect();
    assert!(queried.is_empty(), "hostname went to DNS: {queried:?}");
}

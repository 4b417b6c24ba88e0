//! The guest against the network side of its sandbox (issue 9, items 2, 4 and 5): floods of
//! refused requests, packets the stack cannot take (fragments, flows over a cap) and idle
//! connections that never finish their headers. Real engine, real kernel, offline; judged by
//! the audit log a reviewer reads.

mod common;
use common::*;
use serde_json::Value;

/// How many occurrences a record stands for (aggregated records carry `repeated`).
fn occurrences(e: &Value) -> u64 {
    e["repeated"].as_u64().unwrap_or(1)
}

/// The log with its bulky kinds left out, for failure messages of runs that write thousands.
fn summary(run: &Run) -> String {
    let kinds: std::collections::BTreeMap<String, usize> =
        run.events.iter().fold(Default::default(), |mut m, e| {
            *m.entry(e["kind"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
            m
        });
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}\nkinds: {kinds:?}\nlast: {:?}",
        run.code(),
        run.stdout(),
        run.stderr()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n"),
        run.events.last()
    )
}

const DNS_FLOOD: &str = r#"
import json, socket, struct, time
N = 20000
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
def query(i):
    q = struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0)
    for label in b"flood.refused.test".split(b"."):
        q += bytes([len(label)]) + label
    return q + b"\x00" + struct.pack(">HH", 1, 1)
sent = answered = 0
t0 = time.time()
for i in range(N):
    s.sendto(query(i), ("10.77.0.1", 53))
    sent += 1
    try:
        s.recv(512)
        answered += 1
    except socket.timeout:
        pass
print("RESULT " + json.dumps({"sent": sent, "answered": answered, "secs": time.time() - t0}))
"#;

/// A bounded DNS flood for a name refused offline: the log holds a few aggregated records,
/// not one per query, and their counts add up to exactly what the guest sent.
#[test]
fn a_dns_flood_is_aggregated_and_every_query_is_counted() {
    let run = offline_python(&[], DNS_FLOOD);
    assert_eq!(run.code(), Some(0), "{}", summary(&run));
    let res = run.result();
    let sent = res["sent"].as_u64().expect("sent");
    assert_eq!(sent, 20_000);
    // Every query was answered (NXDOMAIN), so none was lost on the way: the counts can be exact.
    assert_eq!(res["answered"], sent, "{}", summary(&run));
    assert_eq!(run.of_kind("gap").count(), 0, "{}", summary(&run));

    let dns: Vec<&Value> = run
        .of_kind("dns")
        .filter(|e| e["name"] == "flood.refused.test")
        .collect();
    let blocked: Vec<&Value> = run
        .of_kind("blocked")
        .filter(|e| e["what"] == "dns" && e["target"] == "flood.refused.test A")
        .collect();
    assert_eq!(dns.iter().map(|e| occurrences(e)).sum::<u64>(), sent);
    assert_eq!(blocked.iter().map(|e| occurrences(e)).sum::<u64>(), sent);
    // About two lines per second of flood and key (the first, then the window's count).
    let bound = 2 * (res["secs"].as_f64().unwrap_or(60.0).ceil() as usize + 2);
    assert!(
        dns.len() <= bound && blocked.len() <= bound,
        "{} dns and {} blocked lines for {sent} queries (bound {bound})",
        dns.len(),
        blocked.len()
    );
    let summaries: Vec<&&Value> = dns.iter().filter(|e| e["repeated"].is_u64()).collect();
    assert!(!summaries.is_empty());
    for s in summaries {
        assert_eq!(s["rcode"], "NXDOMAIN");
        assert_eq!(s["blocked"], "offline");
        let (first, last) = (s["first_ts"].as_str(), s["last_ts"].as_str());
        assert!(
            first.is_some_and(|f| last.is_some_and(|l| f <= l && l.ends_with('Z'))),
            "{s}"
        );
    }
    // The report reads the aggregated records back (typed reader) without an error.
    let report = std::fs::read_to_string(run.run_dir().join("report.html")).expect("report");
    assert!(report.contains("flood.refused.test"));
}

const UDP_CAPS: &str = r#"
import json, socket, time
r = {}
# 1. One datagram bigger than the TUN MTU (65,520): the guest kernel sends it as fragments.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: fragment, never EMSGSIZE
s.sendto(b"x" * 65507, ("192.0.2.7", 9999))
time.sleep(1.2)  # a new second: the drop-record rate limit starts over
# 2. 1,074 UDP flows (one socket each): 1,024 fill the stack's flow table, 50 are over the cap.
# Paced: unpaced, the TUN's transmit queue (500 packets) drops datagrams before idagent sees them.
socks = []
for i in range(1074):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"hi", ("192.0.2.8", 7000))
    socks.append(u)
    time.sleep(0.001)
# 3. QUIC once the table is full: dropped over the cap, before the QUIC refusal.
q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q.sendto(b"\xc0quic", ("192.0.2.9", 443))
time.sleep(0.5)
print("RESULT " + json.dumps({"flows": len(socks) + 1}))
"#;

/// The blocked records of a run whose reason contains `needle`.
fn blocked_with<'a>(run: &'a Run, needle: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    run.of_kind("blocked")
        .filter(move |e| e["reason"].as_str().is_some_and(|r| r.contains(needle)))
}

fn cap_notices(run: &Run, cap: &str) -> usize {
    run.of_kind("notice")
        .filter(|e| {
            e["what"] == "netstack_cap" && e["detail"].as_str().is_some_and(|d| d.contains(cap))
        })
        .count()
}

/// Fragmented UDP, UDP flows past the flow table's cap and QUIC once it is full: each refused
/// packet is a `blocked` record (protocol, destination, reason), the cap one `notice`.
#[test]
fn fragments_and_udp_over_the_flow_cap_are_recorded() {
    let run = offline_python(&[], UDP_CAPS);
    assert_eq!(run.code(), Some(0), "{}", summary(&run));
    assert_eq!(run.result()["flows"], 1075);
    assert_eq!(run.of_kind("gap").count(), 0, "{}", summary(&run));
    // No record was left out by the rate limit (fewer than 64 a second here), so counts are exact.
    assert_eq!(
        run.of_kind("notice")
            .filter(|e| e["what"] == "netstack_drops_unrecorded")
            .count(),
        0,
        "{}",
        summary(&run)
    );

    // 65,535 bytes of IP over a 65,520-byte MTU: two fragments, both refused and recorded.
    let frags: Vec<&Value> = blocked_with(&run, "fragment").collect();
    assert!(
        frags
            .iter()
            .all(|e| e["what"] == "udp" && e["target"] == "192.0.2.7"),
        "{frags:?}"
    );
    assert_eq!(
        frags.iter().map(|e| occurrences(e)).sum::<u64>(),
        2,
        "{frags:?}"
    );

    let over: Vec<&Value> = blocked_with(&run, "udp flow cap (1024)").collect();
    let to = |target: &str| {
        over.iter()
            .filter(|e| e["what"] == "udp" && e["target"] == target)
            .map(|e| occurrences(e))
            .sum::<u64>()
    };
    assert_eq!(
        to("192.0.2.8:7000"),
        50,
        "{over:?}\n{}",
        run.of_kind("blocked")
            .chain(run.of_kind("notice"))
            .chain(run.of_kind("run_end"))
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(to("192.0.2.9:443"), 1, "QUIC over the cap: {over:?}");
    assert_eq!(over.iter().map(|e| occurrences(e)).sum::<u64>(), 51);
    assert_eq!(cap_notices(&run, "udp flow cap"), 1, "{}", summary(&run));
    // The flows inside the cap were refused by the upstream policy (offline), as before.
    let offline: u64 = blocked_with(&run, "offline")
        .filter(|e| e["target"] == "192.0.2.8:7000")
        .map(occurrences)
        .sum();
    assert_eq!(offline, 1024, "{}", summary(&run));
}

const IDLE_CONNECTIONS: &str = r#"
import json, resource, select, socket, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
held, refused = [], 0
for i in range(1074):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("192.0.2.10", 80))
    except ConnectionRefusedError:
        refused += 1
        s.close()
        continue
    # A request head that never ends.
    s.sendall(b"GET /idle HTTP/1.1\r\nHost: idle.test\r\nX-Pad: " + b"a" * 48 * 1024)
    held.append(s)
last_send = time.time()
open_ = {s.fileno(): s for s in held}
poller = select.poll()
for fd in open_:
    poller.register(fd, select.POLLIN)
while open_ and time.time() - last_send < 40:
    for fd, _ in poller.poll(1000):
        s = open_.pop(fd, None)
        if s is None:
            continue
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data:
            open_[fd] = s  # an answer (none expected): keep waiting for the close
            continue
        poller.unregister(fd)
        s.close()
secs = time.time() - last_send
# A head over the 64 KiB cap is answered 431 at once.
big = socket.create_connection(("192.0.2.10", 80), timeout=5)
big.sendall(b"GET /big HTTP/1.1\r\nHost: idle.test\r\nX-Pad: " + b"a" * 100 * 1024)
status = big.recv(64).split(b"\r\n")[0].decode()
print("RESULT " + json.dumps({"held": len(held), "refused": refused,
                             "still_open": len(open_), "secs": secs, "big": status}))
"#;

/// 1,074 connections that never finish their request head: 1,024 fill the stack's TCP buffer
/// cap (the rest get a RST, each a `blocked` record, the cap one `notice`), and every held one
/// is closed by the header-read timeout with a `tcp` close saying so. idagent's memory stays
/// bounded meanwhile.
#[test]
fn idle_connections_with_unfinished_headers_are_timed_out_and_bounded() {
    let (run, max_rss_kib) = run_sampling_rss_100(&[
        "--offline",
        "--image",
        GUEST_IMAGE,
        "--",
        "python3",
        "-c",
        IDLE_CONNECTIONS,
    ]);
    assert_eq!(run.code(), Some(0), "{}", summary(&run));
    let res = run.result();
    let held = res["held"].as_u64().expect("held");
    assert_eq!(held, 1024, "the TCP buffer cap admits 1,024 flows: {res}");
    assert_eq!(res["refused"], 50, "{res}");
    assert_eq!(
        res["still_open"], 0,
        "every held connection was closed: {res}"
    );
    assert_eq!(
        res["big"], "HTTP/1.1 431 Request Header Fields Too Large",
        "{res}"
    );
    let secs = res["secs"].as_f64().expect("secs");
    assert!(
        (9.0..30.0).contains(&secs),
        "closed after {secs} s (timeout 10 s)"
    );

    let timed_out = run
        .of_kind("tcp")
        .filter(|e| e["phase"] == "close" && e["close_reason"] == "header_timeout")
        .count();
    assert_eq!(timed_out as u64, held, "{}", summary(&run));
    let over: u64 = blocked_with(&run, "tcp buffer bytes cap")
        .filter(|e| e["what"] == "tcp" && e["target"] == "192.0.2.10:80")
        .map(occurrences)
        .sum();
    assert_eq!(over, 50, "{}", summary(&run));
    assert_eq!(
        cap_notices(&run, "tcp buffer bytes cap"),
        1,
        "{}",
        summary(&run)
    );
    eprintln!(
        "idagent max VmRSS during the run: {} MiB",
        max_rss_kib / 1024
    );
    assert!(max_rss_kib > 0, "no RSS sample");
    assert!(
        max_rss_kib < 512 * 1024,
        "idagent used {} MiB for 1,024 idle connections",
        max_rss_kib / 1024
    );
}

const TWO_HOSTS: &str = r#"
import http.client, json, ssl
r = {}
for label, conn in [
    ("plain", http.client.HTTPConnection("www.google.com", 80, timeout=10)),
    ("tls", http.client.HTTPSConnection("www.google.com", context=ssl.create_default_context(), timeout=10)),
]:
    conn.request("GET", "/")
    first = conn.getresponse()
    first.read()
    # The same keep-alive connection, another Host (unmapped, offline).
    conn.request("GET", "/", headers={"Host": "other.example"})
    second = conn.getresponse()
    second.read()
    r[label] = [first.status, second.status]
print("RESULT " + json.dumps(r))
"#;

/// A second `Host` on a keep-alive connection is answered 421 and goes nowhere, over plain
/// HTTP and inside TLS; every `http` record says where it went (`upstream`, per request) and
/// over which TLS name (`sni`, absent for plain HTTP).
#[test]
fn http_records_carry_upstream_and_sni_per_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = idagent_fakes::start_blocking(dir.path()).expect("start fakes");
    let mut args: Vec<String> = vec!["--offline".into()];
    args.extend(fakes.idagent_args());
    args.extend(
        ["--image", GUEST_IMAGE, "--", "python3", "-c", TWO_HOSTS]
            .iter()
            .map(|s| s.to_string()),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = idagent_run(&refs);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let res = run.result();
    assert_eq!(
        res["plain"],
        serde_json::json!([200, 421]),
        "{}",
        run.explain()
    );
    assert_eq!(
        res["tls"],
        serde_json::json!([200, 421]),
        "{}",
        run.explain()
    );

    let http: Vec<&Value> = run.of_kind("http").collect();
    assert_eq!(http.len(), 4, "{}", run.explain());
    let google_http = fakes
        .addr(idagent_fakes::FakeServer::GoogleHttp)
        .to_string();
    let google_https = fakes
        .addr(idagent_fakes::FakeServer::GoogleHttps)
        .to_string();
    let shape = |e: &Value| {
        (
            e["url"].as_str().unwrap_or_default().to_owned(),
            e["status"].as_u64(),
            e["upstream"].as_str().map(str::to_owned),
            e["sni"].as_str().map(str::to_owned),
        )
    };
    let got: Vec<_> = http.iter().map(|e| shape(e)).collect();
    let sni = Some("www.google.com".to_owned());
    assert_eq!(
        got,
        vec![
            (
                "http://www.google.com/".into(),
                Some(200),
                Some(google_http),
                None
            ),
            ("http://other.example/".into(), Some(421), None, None),
            (
                "https://www.google.com/".into(),
                Some(200),
                Some(google_https),
                sni.clone()
            ),
            ("https://other.example/".into(), Some(421), None, sni),
        ],
        "{}",
        run.explain()
    );
    // One connection each: both records of a connection share its flow.
    assert_eq!(http[0]["flow"], http[1]["flow"]);
    assert_eq!(http[2]["flow"], http[3]["flow"]);
    // The refusals are `blocked` records too, and nothing reached a fake for other.example.
    assert_eq!(
        blocked_with(&run, "misdirected").count(),
        2,
        "{}",
        run.explain()
    );
    assert_eq!(fakes.requests().len(), 2, "{:?}", fakes.requests());
}

const NO_READERS: &str = r#"
import json, socket, time
socks = []
for i in range(256):
    s = socket.create_connection(("bulk.test", 80), timeout=10)
    s.sendall(b"GET /bulk HTTP/1.1\r\nHost: bulk.test\r\n\r\n")
    socks.append(s)
# Never read: every response piles up between the upstream and the guest.
time.sleep(4)
print("RESULT " + json.dumps({"open": len(socks)}))
"#;

/// A loopback upstream answering every request with `bytes` of body (it writes until the
/// client stops reading); serves until the test process ends.
fn bulk_upstream(bytes: usize) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\n\r\n");
                let chunk = vec![b'z'; 64 * 1024];
                if conn.write_all(header.as_bytes()).is_err() {
                    return;
                }
                for _ in 0..bytes / chunk.len() {
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// 256 connections whose responses the guest never reads: the flows' queues between the
/// stack and the gateway reach the budget they share (128 MiB; 256 × 1 MiB of per-flow caps
/// would pass it twice, and what the guest kernel and smoltcp absorb first is ~0.4 MiB a
/// flow), which holds them back and says so once.
#[test]
fn flows_nobody_reads_are_held_to_a_shared_budget() {
    let upstream = bulk_upstream(8 << 20);
    let map = format!("bulk.test:80={upstream}");
    let (run, max_rss_kib) = run_sampling_rss_100(&[
        "--offline",
        "--upstream-map",
        &map,
        "--image",
        GUEST_IMAGE,
        "--",
        "python3",
        "-c",
        NO_READERS,
    ]);
    assert_eq!(run.code(), Some(0), "{}", summary(&run));
    assert_eq!(run.result()["open"], 256);
    let budget: Vec<&Value> = run
        .of_kind("notice")
        .filter(|e| e["what"] == "flow_queue_budget")
        .collect();
    let down: u64 = run
        .of_kind("tcp")
        .filter_map(|e| e["bytes_down"].as_u64())
        .sum();
    assert_eq!(budget.len(), 1, "{} bytes down\n{}", down, summary(&run));
    assert!(
        budget[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("134217728")),
        "{budget:?}"
    );
    eprintln!(
        "idagent max VmRSS with 256 unread flows: {} MiB",
        max_rss_kib / 1024
    );
    // Generous: smoltcp buffers, hyper buffers and the pcap queue come on top of the budget.
    assert!(max_rss_kib < 1024 * 1024, "{} MiB", max_rss_kib / 1024);
}

fn run_sampling_rss_100(args: &[&str]) -> (Run, u64) {
    run_sampling_rss(args, std::time::Duration::from_millis(100))
}

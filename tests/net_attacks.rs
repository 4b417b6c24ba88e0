//! The guest against the network side of its sandbox (issue 9, items 2, 4 and 5): floods of
//! refused requests, packets the stack cannot take (fragments, flows over a cap) and idle
//! connections that never finish their headers. Real engine, real kernel, offline; judged by
//! the audit log a reviewer reads.

mod common;
use common::*;
use serde_json::Value;

/// The `RESULT {json}` line the guest script printed.
fn result_of(run: &Run) -> Value {
    let line = run
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("RESULT ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no RESULT\n{}", run.explain()));
    serde_json::from_str(&line).expect("RESULT is json")
}

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
        run.stderr().lines().rev().take(20).collect::<Vec<_>>().join("\n"),
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
    let run = idagent_run(&[
        "--offline",
        "--image",
        GUEST_IMAGE,
        "--",
        "python3",
        "-c",
        DNS_FLOOD,
    ]);
    assert_eq!(run.code(), Some(0), "{}", summary(&run));
    let res = result_of(&run);
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

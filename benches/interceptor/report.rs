//! The interceptor bench's results and their one markdown table (printed and written to a
//! file): each measurement per case with its ratio to case (a), then the floors marked
//! PASS or BELOW. Owns: folding the client's `BENCH` events into numbers, and the text. Does
//! not own: measuring.

use serde_json::Value;
use std::fmt::Write;

/// One case's numbers, from the client's events (and idagent's memory for case c).
#[derive(Debug, Default, Clone)]
pub struct CaseResult {
    /// Median of the HTTP bulk repetitions, Gbit/s.
    pub bulk_gbps: Option<f64>,
    pub bulk_all: Vec<f64>,
    /// Median of the raw TCP bulk repetitions, Gbit/s.
    pub bulk_tcp_gbps: Option<f64>,
    pub bulk_tcp_all: Vec<f64>,
    /// (p50, p99) in µs.
    pub lat_http: Option<(f64, f64)>,
    pub lat_https: Option<(f64, f64)>,
    /// New connections per second at concurrency 1 and 8.
    pub conns_seq: Option<f64>,
    pub conns_c8: Option<f64>,
    pub conn_errors: u64,
    /// idagent's peak RSS during the case (KiB).
    pub idagent_hwm_kib: Option<u64>,
    pub pcap_bytes: Option<u64>,
    /// Packets the capture dropped (its queue was full or its size cap reached).
    pub pcap_dropped: Option<u64>,
    /// The HTTPS keep-alive runs without and with the 1,000-rule policy (idagent only).
    pub policy: Option<PolicyRuns>,
}

/// Interleaved idagent runs of the HTTPS keep-alive measurement alone: without a policy, then
/// with the generated 1,000-rule policy in enforce mode, `reps` times.
#[derive(Debug, Default, Clone)]
pub struct PolicyRuns {
    /// (p50, p99) in µs of each run, in order.
    pub bare: Vec<(f64, f64)>,
    pub with_policy: Vec<(f64, f64)>,
    /// Over all the policy runs: requests sent (warm-up included), `decision` events, `http`
    /// ones that allowed, exec/file ones that would deny (those sections are in report mode).
    pub requests: u64,
    pub decisions: u64,
    pub http_allowed: u64,
    pub report_denied: u64,
}

impl PolicyRuns {
    fn p50(runs: &[(f64, f64)]) -> Option<f64> {
        median(&runs.iter().map(|l| l.0).collect::<Vec<_>>())
    }
    fn p99(runs: &[(f64, f64)]) -> Option<f64> {
        median(&runs.iter().map(|l| l.1).collect::<Vec<_>>())
    }
    /// Median p50 with the policy minus median p50 without, µs.
    pub fn added_p50(&self) -> Option<f64> {
        Some(Self::p50(&self.with_policy)? - Self::p50(&self.bare)?)
    }
}

/// idagent's memory around the held connections.
#[derive(Debug, Default, Clone)]
pub struct Rss {
    pub conns: Option<u64>,
    pub alive: Option<u64>,
    pub idle_kib: Option<u64>,
    pub held_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
}

impl CaseResult {
    pub fn from_events(events: &[Value]) -> Self {
        let mut r = Self::default();
        for e in events {
            let f = |k: &str| e[k].as_f64().unwrap_or(0.0);
            match e["metric"].as_str() {
                Some("bulk") if f("secs") > 0.0 => {
                    r.bulk_all.push(f("bytes") * 8.0 / f("secs") / 1e9)
                }
                Some("bulk_tcp") if f("secs") > 0.0 => {
                    r.bulk_tcp_all.push(f("bytes") * 8.0 / f("secs") / 1e9)
                }
                Some("lat_http") => r.lat_http = Some((f("p50_us"), f("p99_us"))),
                Some("lat_https") => r.lat_https = Some((f("p50_us"), f("p99_us"))),
                Some("conns") => {
                    let rate = Some(f("ok") / f("secs").max(1e-9));
                    r.conn_errors += e["errors"].as_u64().unwrap_or(0);
                    match e["concurrency"].as_u64() {
                        Some(1) => r.conns_seq = rate,
                        _ => r.conns_c8 = rate,
                    }
                }
                _ => {}
            }
        }
        r.bulk_gbps = median(&r.bulk_all);
        r.bulk_tcp_gbps = median(&r.bulk_tcp_all);
        r
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

type Metric = fn(&CaseResult) -> Option<f64>;

const ROWS: [(&str, Metric); 13] = [
    (
        "bulk TCP download (opaque relay), Gbit/s (median of reps)",
        |r| r.bulk_tcp_gbps,
    ),
    (
        "bulk HTTP download (body SHA-256'd), Gbit/s (median)",
        |r| r.bulk_gbps,
    ),
    ("HTTP keep-alive p50, µs", |r| r.lat_http.map(|l| l.0)),
    ("HTTP keep-alive p99, µs", |r| r.lat_http.map(|l| l.1)),
    ("HTTPS keep-alive p50, µs", |r| r.lat_https.map(|l| l.0)),
    ("HTTPS keep-alive p99, µs", |r| r.lat_https.map(|l| l.1)),
    (
        "HTTPS keep-alive p50, µs, no policy (paired runs, median)",
        |r| PolicyRuns::p50(&r.policy.as_ref()?.bare),
    ),
    (
        "HTTPS keep-alive p50, µs, 1,000-rule policy (enforce)",
        |r| PolicyRuns::p50(&r.policy.as_ref()?.with_policy),
    ),
    (
        "HTTPS keep-alive p99, µs, no policy (paired runs, median)",
        |r| PolicyRuns::p99(&r.policy.as_ref()?.bare),
    ),
    (
        "HTTPS keep-alive p99, µs, 1,000-rule policy (enforce)",
        |r| PolicyRuns::p99(&r.policy.as_ref()?.with_policy),
    ),
    ("new HTTP conns/s, sequential", |r| r.conns_seq),
    ("new HTTP conns/s, concurrency 8", |r| r.conns_c8),
    ("idagent peak RSS in the run, MiB", |r| {
        r.idagent_hwm_kib.map(mib)
    }),
];

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn cell(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{v:.2} ({:.2}×)", v / b),
        (Some(v), _) => format!("{v:.2}"),
        (None, _) => "–".into(),
    }
}

fn floor(
    text: &mut String,
    name: &str,
    value: Option<f64>,
    pass: impl Fn(f64) -> bool,
    shown: &str,
) {
    let verdict = match value {
        Some(v) if pass(v) => "PASS",
        Some(_) => "BELOW",
        None => "n/a",
    };
    let _ = writeln!(text, "| {name} | {shown} | {verdict} |");
}

/// The whole report as markdown.
pub fn render(cases: &[(&str, CaseResult)], rss: &Rss, disk_gbps: Option<f64>) -> String {
    let mut t = String::from("# idagent interceptor bench\n\n");
    let _ = writeln!(
        t,
        "Same static client, same host servers (hyper, rustls). Ratios are to (a). \
         (c) = `idagent run --offline --upstream-map bench.test:…=127.0.0.1:…`; idagent has \
         no switch to turn the pcapng off, so \"snaplen 96\" (headers only) stands for \"without pcap\".\n"
    );
    let _ = write!(t, "| measurement |");
    for (name, _) in cases {
        let _ = write!(t, " {name} |");
    }
    let _ = write!(t, "\n|---|");
    for _ in cases {
        let _ = write!(t, "---|");
    }
    t.push('\n');
    // A partial run (`IDAGENT_BENCH_MODE=policy`) has no (a): no ratios then.
    let base = cases
        .iter()
        .find(|(n, _)| n.starts_with("(a)"))
        .map(|(_, r)| r);
    for (label, metric) in ROWS {
        if cases.iter().all(|(_, r)| metric(r).is_none()) {
            continue; // not measured in this mode
        }
        let _ = write!(t, "| {label} |");
        for (_, r) in cases {
            let _ = write!(t, " {} |", cell(metric(r), base.and_then(metric)));
        }
        t.push('\n');
    }
    for (label, all) in [
        (
            "bulk TCP, every rep (Gbit/s)",
            (|r| &r.bulk_tcp_all) as fn(&CaseResult) -> &Vec<f64>,
        ),
        ("bulk HTTP, every rep (Gbit/s)", |r| &r.bulk_all),
    ] {
        if cases.iter().all(|(_, r)| all(r).is_empty()) {
            continue;
        }
        let _ = write!(t, "| {label} |");
        for (_, r) in cases {
            let reps: Vec<String> = all(r).iter().map(|g| format!("{g:.2}")).collect();
            let _ = write!(t, " {} |", reps.join(", "));
        }
        t.push('\n');
    }
    if cases.iter().any(|(_, r)| r.policy.is_some()) {
        let _ = write!(t, "| HTTPS p50 per paired run, no policy → policy (µs) |");
        for (_, r) in cases {
            let pairs: Vec<String> = r
                .policy
                .iter()
                .flat_map(|p| p.bare.iter().zip(&p.with_policy))
                .map(|(b, w)| format!("{:.0} → {:.0}", b.0, w.0))
                .collect();
            let _ = write!(t, " {} |", pairs.join(", "));
        }
        t.push('\n');
    }
    t.pop();
    let _ = write!(t, "\n| failed new connections |");
    for (_, r) in cases {
        let _ = write!(t, " {} |", r.conn_errors);
    }
    let _ = write!(t, "\n| pcapng size, MiB |");
    for (_, r) in cases {
        let _ = write!(t, " {} |", cell(r.pcap_bytes.map(|b| mib(b / 1024)), None));
    }
    let _ = write!(t, "\n| pcapng packets dropped |");
    for (_, r) in cases {
        let _ = write!(t, " {} |", opt(r.pcap_dropped.map(|d| d as f64), 0));
    }
    let _ = writeln!(t, "\n");
    let _ = writeln!(
        t,
        "Held connections (idagent run, full pcap): {} opened, {} still answering after the hold; \
         idagent VmRSS {} MiB before, {} MiB while held, VmHWM {} MiB.\n",
        opt(rss.conns.map(|c| c as f64), 0),
        opt(rss.alive.map(|c| c as f64), 0),
        opt(rss.idle_kib.map(mib), 1),
        opt(rss.held_kib.map(mib), 1),
        opt(rss.hwm_kib.map(mib), 1),
    );
    if let Some((name, p)) = cases
        .iter()
        .find_map(|(n, r)| Some((n, r.policy.as_ref()?)))
    {
        let _ = writeln!(
            t,
            "Policy runs ({name}, HTTPS keep-alive only, {} pairs without/with policy, \
             interleaved): a generated policy of 1,000 HTTP rules (100 hosts × 10 paths, \
             `--mode enforce` for network; exec and files in report mode). Over the policy \
             runs: {} requests sent, {} `decision` events, {} `http` allowed, 0 network \
             denials, {} exec/file would-deny (report mode).\n",
            p.with_policy.len(),
            p.requests,
            p.decisions,
            p.http_allowed,
            p.report_denied,
        );
    }
    let _ = writeln!(
        t,
        "Disk under the run folders: {} Gbit/s sustained (1 GiB written and synced). The full \
         pcap waits for the disk rather than drop packets, so a long full-pcap transfer runs at \
         most at this speed once the page cache's dirty allowance is used up.\n",
        opt(disk_gbps, 2)
    );
    floors(&mut t, cases, rss);
    t
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn floors(t: &mut String, cases: &[(&str, CaseResult)], rss: &Rss) {
    let a = &cases[0].1;
    let by = |prefix: &str| {
        cases
            .iter()
            .find(|(n, _)| n.contains(prefix))
            .map(|(_, r)| r)
    };
    let (full, snap) = (by("full pcap"), by("snaplen"));
    let ratio = |r: Option<&CaseResult>| Some(r?.bulk_tcp_gbps? / a.bulk_tcp_gbps?);
    let http_ratio = |r: Option<&CaseResult>| Some(r?.bulk_gbps? / a.bulk_gbps?);
    let added =
        |r: Option<&CaseResult>, f: fn(&CaseResult) -> Option<(f64, f64)>| Some(f(r?)?.0 - f(a)?.0);
    let _ = writeln!(t, "| floor (issue) | measured | verdict |\n|---|---|---|");
    let r = ratio(snap);
    floor(
        t,
        "bulk TCP through the stack ≥ 0.35× (a) [snaplen 96]",
        r,
        |v| v >= 0.35,
        &format!("{}×", opt(r, 2)),
    );
    let r = ratio(full);
    floor(
        t,
        "bulk TCP with full pcap ≥ 0.2× (a)",
        r,
        |v| v >= 0.2,
        &format!("{}×", opt(r, 2)),
    );
    // The same floors for HTTP bulk, where the gateway also hashes every body byte: reported
    // beside the TCP ones so the cost of the hash stays visible.
    let r = http_ratio(snap);
    floor(
        t,
        "bulk HTTP (SHA-256 of the body) ≥ 0.35× (a) [snaplen 96]",
        r,
        |v| v >= 0.35,
        &format!("{}×", opt(r, 2)),
    );
    let r = http_ratio(full);
    floor(
        t,
        "bulk HTTP (SHA-256 of the body) with full pcap ≥ 0.2× (a)",
        r,
        |v| v >= 0.2,
        &format!("{}×", opt(r, 2)),
    );
    for (name, f) in [
        (
            "added HTTP p50 ≤ 1 ms [full pcap]",
            (|r: &CaseResult| r.lat_http) as fn(&CaseResult) -> _,
        ),
        ("added HTTPS p50 ≤ 1 ms [full pcap]", |r: &CaseResult| {
            r.lat_https
        }),
    ] {
        let v = added(full, f);
        floor(t, name, v, |us| us <= 1000.0, &format!("{} µs", opt(v, 0)));
    }
    let v = full.and_then(|r| r.policy.as_ref()?.added_p50());
    floor(
        t,
        "added HTTPS p50 with 1,000-rule policy vs none ≤ 20 µs [full pcap]",
        v,
        |us| us <= 20.0,
        &format!("{} µs", opt(v, 1)),
    );
    let v = full.and_then(|r| r.conns_c8);
    floor(
        t,
        "≥ 2,000 new conns/s [full pcap, concurrency 8]",
        v,
        |c| c >= 2000.0,
        &format!("{}/s", opt(v, 0)),
    );
    let v = full.and_then(|r| r.conns_seq);
    floor(
        t,
        "≥ 2,000 new conns/s [full pcap, sequential]",
        v,
        |c| c >= 2000.0,
        &format!("{}/s", opt(v, 0)),
    );
    let v = rss.hwm_kib.map(mib);
    let held_all = rss.conns.is_some_and(|c| c >= 1000);
    floor(
        t,
        "1,000 open connections under 300 MiB RSS [VmHWM]",
        v.filter(|_| held_all),
        |m| m < 300.0,
        &format!("{} MiB", opt(v, 1)),
    );
}

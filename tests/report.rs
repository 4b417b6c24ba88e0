//! `idagent report`'s library: a synthetic audit log with every kind of record (values taken
//! from real runs), read back as a reviewer would see it — the text, the JSON and the HTML
//! page, the latter rendered by a real headless Chromium.
//!
//! The browser test needs `/usr/bin/chromium` (Debian: `apt-get install chromium`); it fails
//! when Chromium is missing unless `IDAGENT_SKIP_BROWSER=1` is set.

mod common;
use common::{chromium, run_chromium};
use idagent::report::{self, RunReport};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const RUN: &str = "20261128T010443Z-596eda";
const HOSTILE_PATH: &str = "/etc/<script>alert(1)</script>";
const HOSTILE_URL: &str = "https://evil.test/\"><img src=x onerror=alert(1)>";
const BEARER_FP: &str = "bearer:…ijkl:sha256=6016dba4";
const COOKIE_FP: &str = "cookie:…:sha256=463869a5";
const API_KEY_FP: &str = "api_key:…3456:sha256=82be8a4d";
const CHAT_URL: &str = "https://api.openai.com/v1/chat/completions";

/// Records in log order, without the envelope's `v`, `seq`, `ts` and `run`.
fn bodies() -> Vec<Value> {
    let argv = json!([
        "sh",
        "-c",
        "curl -sS https://api.openai.com/v1/models; node app.js"
    ]);
    vec![
        json!({"kind":"run_start","idagent_version":"0.1.0","image":"idagent-guest:latest",
            "command":argv,"user":"65534:65534","workspace":"/tmp/workspace",
            "limits":{"memory_bytes":1073741824,"pids":512,"timeout_secs":null},"offline":true,
            "container":format!("idagent-{RUN}")}),
        json!({"kind":"net_setup","tun":"tun0","mtu":65520,"guest_addrs":["10.77.0.2/24","fd00:77::2/64"],
            "gateway_addrs":["10.77.0.1","fd00:77::1"],"routes":["default dev tun0 scope link "],
            "rules_sha256":"30af3b4cb1a9ae101ed818a5b4cb6b2d55aa0b3823f0d68b1623c4a6ed3ed5fb",
            "ca_sha256":"c0bb14c1178823ad136c46fa5b4bd84655a162399be6af2b03c9a7e0f68c9069"}),
        json!({"kind":"exec","pid":7,"ppid":1,"path":"/usr/bin/sh","argv":argv,
            "caller":"/.idagent/idagent","uid":65534}),
        json!({"kind":"exec","pid":8,"ppid":7,"path":"/usr/local/bin/node","argv":["node","app.js"],
            "caller":"/usr/bin/dash","uid":65534,"error":"ENOENT"}),
        // Older logs carried secrets in argv in clear; the report must not show them.
        json!({"kind":"exec","pid":8,"ppid":7,"path":"/usr/bin/node",
            "argv":["node","app.js","--key","sk-node1234567890abcdefghijkl","\u{1b}[31mred\u{1b}[0m"],
            "caller":"/usr/bin/dash","uid":65534}),
        json!({"kind":"dns","transport":"udp","server":"10.77.0.1:53","name":"api.openai.com",
            "qtype":"A","rcode":"NOERROR","answers":["198.18.0.1"],"source":"mapped"}),
        json!({"kind":"dns","transport":"udp","server":"10.77.0.1:53","name":"api.openai.com",
            "qtype":"AAAA","rcode":"NOERROR","answers":["fd00:77:ffff::1"],"source":"mapped"}),
        json!({"kind":"blocked","what":"dns","target":"unmapped.test A","reason":"offline"}),
        json!({"kind":"dns","transport":"udp","server":"10.77.0.1:53","name":"unmapped.test",
            "qtype":"A","rcode":"NXDOMAIN","answers":[],"source":"refused","blocked":"offline"}),
        json!({"kind":"tcp","flow":3,"phase":"open","src":"[fd00:77::2]:57772",
            "dst":"[fd00:77:ffff::1]:443","name":"api.openai.com"}),
        json!({"kind":"http","flow":3,"method":"POST","url":CHAT_URL,"status":200,
            "req_headers":[["host","api.openai.com"],["authorization",format!("Bearer {BEARER_FP}")],
                ["x-evil","</script><script>alert(2)</script>"]],
            "resp_headers":[["set-cookie",format!("NID={COOKIE_FP}; path=/; HttpOnly")]],
            "req_bytes":67,"resp_bytes":380,
            "req_sha256":"c0d337f2f8840199018ef48c91537b37c6fb1636594bb1bd3692a2b8ee83ac00",
            "resp_sha256":"923740c71b36cd097e2251d6be117237baee67c9ba9346f2189364309e17fa1c",
            "req_body":"{\"model\":\"gpt-4o-mini\"}","resp_body":"{\"choices\":[]}",
            "credentials":[format!("Bearer {BEARER_FP}"),format!("NID={COOKIE_FP}; path=/; HttpOnly")],
            "duration_ms":7}),
        json!({"kind":"tls","flow":3,"sni":"api.openai.com","alpn":"http/1.1","mode":"intercepted",
            "upstream_verify":"ok"}),
        json!({"kind":"tcp","flow":3,"phase":"close","src":"[fd00:77::2]:57772",
            "dst":"[fd00:77:ffff::1]:443","name":"api.openai.com","upstream":"127.0.0.1:36515",
            "protocol":"tls","bytes_up":863,"bytes_down":1621,"duration_ms":113,"close_reason":"closed"}),
        json!({"kind":"tcp","flow":4,"phase":"open","src":"10.77.0.2:40588","dst":"198.18.0.9:80"}),
        json!({"kind":"blocked","what":"tcp","target":"evil.test:80 (198.18.0.9:80)",
            "reason":"offline and not mapped","flow":4}),
        json!({"kind":"http","flow":4,"method":"GET",
            "url":format!("{HOSTILE_URL}?api_key={API_KEY_FP}"),
            "req_headers":[["host","evil.test"]],"resp_headers":[],"req_bytes":0,"resp_bytes":0,
            "req_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "resp_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "req_body":"","resp_body":"","credentials":[API_KEY_FP],
            "note":"error: refused by policy: offline and not mapped","duration_ms":0}),
        json!({"kind":"tcp","flow":4,"phase":"close","src":"10.77.0.2:40588","dst":"198.18.0.9:80",
            "protocol":"http","bytes_up":77,"bytes_down":144,"duration_ms":0,"close_reason":"closed"}),
        json!({"kind":"udp","src":"10.77.0.2:5353","dst":"198.18.0.1:9999","name":"api.openai.com",
            "datagrams_up":2,"datagrams_down":1,"bytes_up":120,"bytes_down":60}),
        json!({"kind":"blocked","what":"udp","target":"198.18.0.1:443",
            "reason":"QUIC refused (ICMP port unreachable) so the client falls back to TCP"}),
        json!({"kind":"file","op":"create","path":"/tmp/workspace/x","outcome":"ok","size":3,
            "sha256":"98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4","pid":8,
            "exe":"/usr/bin/node"}),
        json!({"kind":"file","op":"rename","path":"/tmp/workspace/y","from":"/tmp/workspace/x",
            "outcome":"ok","pid":8,"exe":"/usr/bin/node"}),
        json!({"kind":"file","op":"delete","path":"/tmp/workspace/y","outcome":"ok"}),
        json!({"kind":"file","op":"open_write","path":"/etc/x","outcome":"denied","errno":"EROFS",
            "pid":8,"exe":"/usr/bin/node","syscall":"openat"}),
        json!({"kind":"file","op":"creat","path":HOSTILE_PATH,"outcome":"denied","errno":"EROFS",
            "pid":8,"exe":"/usr/bin/node","syscall":"openat"}),
        json!({"kind":"gap","dropped":3,"reason":"audit queue full"}),
        json!({"kind":"notice","what":"fswatch_hash_skipped","detail":"/tmp/workspace/big: over 1 GiB"}),
        json!({"kind":"future_kind","answer":42}),
        json!({"kind":"exit","pid":8,"signal":9,"exe":"/usr/bin/node"}),
        json!({"kind":"exit","pid":7,"code":0,"exe":"/usr/bin/dash"}),
        json!({"kind":"exit","pid":1,"code":0,"exe":"/.idagent/idagent"}),
        json!({"kind":"decision","layer":"file","verdict":"deny","mode":"enforce",
            "rule":"default-deny","would_deny":false,"enforced_by":"landlock",
            "request":{"op":"create_file","path":HOSTILE_PATH},"pid":8}),
        json!({"kind":"run_end","exit_code":0,"reason":"exited","duration_ms":3837,"counts":{},
            "tun_packets_in":32,"tun_packets_out":23,"tun_packets_dropped":0,"pcap_packets":55,
            "pcap_packets_dropped":0,"firewall_packets_dropped":0}),
    ]
}

/// The lines of an audit log of `bodies()`, 100 ms apart; seq skips `hole_at` when given.
fn log_lines(hole_at: Option<u64>) -> Vec<String> {
    let mut seq = 0;
    bodies()
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            seq += 1;
            if Some(seq) == hole_at {
                seq += 1;
            }
            let mut rec = json!({"v":1,"seq":seq,
                "ts":format!("2026-11-28T01:04:{:02}.{:03}000000Z", 43 + i / 10, (i % 10) * 100),
                "run":RUN});
            if let (Some(rec), Value::Object(body)) = (rec.as_object_mut(), body) {
                rec.extend(body);
            }
            rec.to_string()
        })
        .collect()
}

fn write_run(content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("audit.jsonl"), content).expect("write audit.jsonl");
    dir
}

fn full_run() -> tempfile::TempDir {
    write_run(&(log_lines(Some(21)).join("\n") + "\n"))
}

fn load(dir: &Path) -> RunReport {
    report::load(dir).expect("load report")
}

#[test]
fn report_lists_what_the_guest_did() {
    let dir = full_run();
    let r = load(dir.path());
    assert_eq!(r.run.as_deref(), Some(RUN));
    assert_eq!(
        (r.exit_code, r.end_reason.as_deref()),
        (Some(0), Some("exited"))
    );
    assert_eq!(r.duration_ms, Some(3837));

    let req = r
        .requests
        .iter()
        .find(|q| q.url == CHAT_URL)
        .expect("chat request");
    assert_eq!((req.method.as_str(), req.status), ("POST", Some(200)));
    assert_eq!(
        (req.req_bytes, req.resp_bytes, req.duration_ms),
        (67, 380, Some(7))
    );
    assert_eq!(req.credentials, [BEARER_FP, COOKIE_FP]);

    let api = r
        .destinations
        .iter()
        .find(|d| d.name.as_deref() == Some("api.openai.com"));
    let api = api.expect("api.openai.com destination");
    assert_eq!(api.tcp_flows, 1);
    assert_eq!(api.udp_flows, 1);
    assert_eq!((api.bytes_up, api.bytes_down), (863 + 120, 1621 + 60));
    assert_eq!(api.tls_modes, ["intercepted"]);
    assert!(api.addresses.contains(&"198.18.0.1".to_string()));
    assert!(api.ports.contains(&443));
    let evil = r
        .destinations
        .iter()
        .find(|d| d.name.as_deref() == Some("evil.test"));
    assert!(evil.expect("evil.test destination").blocked);
    let unmapped = r
        .destinations
        .iter()
        .find(|d| d.name.as_deref() == Some("unmapped.test"));
    assert!(unmapped.expect("unmapped.test destination").blocked);

    let denied: Vec<_> = r.writes_denied.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(denied, ["/etc/x", HOSTILE_PATH]);
    assert_eq!(r.writes_denied[0].errno.as_deref(), Some("EROFS"));
    assert_eq!(r.writes_denied[0].syscall.as_deref(), Some("openat"));
    let ops: Vec<_> = r.files_written.iter().map(|f| f.op.as_str()).collect();
    assert_eq!(ops, ["create", "rename", "delete"]);
    assert_eq!(r.files_written[0].size, Some(3));

    // Exec joined with exit: the ENOENT attempt did not run, the real node was killed.
    let node: Vec<_> = r.processes.iter().filter(|p| p.pid == Some(8)).collect();
    assert_eq!(node[0].error.as_deref(), Some("ENOENT"));
    assert!(!node[0].exited);
    assert_eq!(node[1].exit_signal, Some(9));
    assert_eq!(r.processes[0].exit_code, Some(0));
    // The clear-text key in argv is shown as a fingerprint and listed as a credential.
    let argv = node[1].argv.join(" ");
    assert!(!argv.contains("sk-node1234567890"), "{argv}");
    assert!(r
        .credentials
        .iter()
        .any(|c| c.locations.iter().any(|l| l.starts_with("argv of pid 8"))));

    // The DNS refusal is logged twice (blocked + dns): one row, count 1.
    let dns_block: Vec<_> = r.blocked.iter().filter(|b| b.what == "dns").collect();
    assert_eq!((dns_block.len(), dns_block[0].count), (1, 1));
    assert_eq!(r.blocked.len(), 3);

    let fps: Vec<_> = r
        .credentials
        .iter()
        .map(|c| c.fingerprint.as_str())
        .collect();
    for fp in [BEARER_FP, COOKIE_FP, API_KEY_FP] {
        assert!(fps.contains(&fp), "{fp} missing from {fps:?}");
    }
    assert_eq!(r.credential_kinds.get("cookie"), Some(&1));
    let bearer = r.credentials.iter().find(|c| c.fingerprint == BEARER_FP);
    assert_eq!(
        bearer.map(|c| c.locations.clone()).unwrap_or_default(),
        [format!("POST {CHAT_URL}")]
    );

    assert_eq!(r.counts.get("future_kind"), Some(&1));
    assert!(
        !r.warnings.iter().any(|w| w.contains("not a valid record")),
        "every known kind parses typed: {:?}",
        r.warnings
    );
    assert_eq!(r.decisions.denied.len(), 1);
    assert_eq!(
        r.decisions.denied[0].request,
        format!("create_file {HOSTILE_PATH}")
    );
    assert!(r
        .notices
        .iter()
        .any(|n| n.what == "gap" && n.detail.contains("3 event(s) lost")));
    assert!(
        r.warnings.iter().any(|w| w.contains("seq hole")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn text_and_json_show_the_essentials() {
    let dir = full_run();
    let r = load(dir.path());
    let text = report::render_text(&r);
    println!("{text}");
    for line in text.lines() {
        assert!(line.chars().count() < 120, "line too long: {line}");
    }
    assert!(
        !text.contains('\u{1b}'),
        "terminal escape reached the text report"
    );
    let request_line = text
        .lines()
        .find(|l| l.contains(CHAT_URL))
        .expect("request line");
    assert!(
        request_line.contains("POST") && request_line.contains("200"),
        "{request_line}"
    );
    let denied = text
        .lines()
        .find(|l| l.contains("/etc/x"))
        .expect("denied write");
    assert!(
        denied.contains("EROFS") && denied.contains("openat"),
        "{denied}"
    );
    assert!(text.contains(BEARER_FP));
    assert!(text.contains("Writes denied (2)"));
    assert!(text.contains("seq hole"));

    let parsed: Value = serde_json::from_str(&r.to_json()).expect("json output parses");
    assert_eq!(parsed["requests"][0]["url"], CHAT_URL);
    assert_eq!(parsed["writes_denied"][0]["path"], "/etc/x");
    assert_eq!(
        parsed["credentials"][0]["fingerprint"]
            .as_str()
            .map(|s| s.contains("sha256=")),
        Some(true)
    );
    assert_eq!(parsed["report_version"], 1);
}

#[test]
fn torn_last_line_is_a_warning() {
    let lines = log_lines(None);
    let cut = lines.len() - 7; // the `gap` record, after both denied writes
    let mut content = lines[..cut].join("\n");
    content.push('\n');
    content.push_str(&lines[cut][..40]);
    let dir = write_run(&content);
    let r = load(dir.path());
    assert!(
        r.warnings.iter().any(|w| w.contains("torn last line")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("no run_end")),
        "{:?}",
        r.warnings
    );
    assert_eq!(r.end_reason, None);
    assert_eq!(r.writes_denied.len(), 2);
    assert!(report::render_text(&r).contains("no run_end"));
}

#[test]
fn a_missing_log_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = report::load(dir.path()).expect_err("no audit.jsonl");
    assert!(err.to_string().contains("audit.jsonl"), "{err}");
}

#[test]
fn html_escapes_everything_from_the_guest() {
    let dir = full_run();
    let path = report::write_html(dir.path()).expect("write report.html");
    assert_eq!(path, dir.path().join("report.html"));
    let html = std::fs::read_to_string(&path).expect("read report.html");
    assert!(!html.contains("<script>alert"), "hostile path unescaped");
    assert!(!html.contains("<img"), "hostile url unescaped");
    assert!(
        !html.contains("</script><script>alert(2)"),
        "hostile header unescaped"
    );
    assert!(html.contains("/etc/&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("https://evil.test/&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert_eq!(html.matches("<script").count(), 1, "only our own script");
    // Guest URLs are text, never links or sources.
    assert!(!html.contains("src=\"") && !html.contains("href=\"http"));
    assert!(html.contains("Content-Security-Policy"));
    assert!(
        !html.contains("sk-node1234567890"),
        "clear-text key in the html"
    );
    assert!(html.contains("future_kind"));
}

#[test]
fn html_renders_in_a_real_browser() {
    if std::env::var("IDAGENT_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("IDAGENT_SKIP_BROWSER=1: browser test skipped");
        return;
    }
    assert!(
        chromium().is_some(),
        "chromium not found at /usr/bin/chromium: install it (apt-get install -y chromium) \
         or set IDAGENT_SKIP_BROWSER=1 to skip this test"
    );
    let dir = full_run();
    let page = report::write_html(dir.path()).expect("write report.html");

    let dom = run_chromium(&page, &["--dump-dom"]);
    assert!(
        dom.contains(CHAT_URL),
        "request URL missing from the rendered DOM"
    );
    assert!(
        dom.contains("/etc/x"),
        "denied path missing from the rendered DOM"
    );
    // Written by the inline script: proves it ran under the page's CSP.
    let shown = format!("{} of {} events shown", bodies().len(), bodies().len());
    assert!(dom.contains(&shown), "timeline script did not run: {shown}");
    assert!(!dom.contains("<img"), "hostile URL became an element");
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "hostile path became a script"
    );

    // Kept in the target dir so a reviewer can look at it.
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let png = shots.join("report.png");
    let _ = std::fs::remove_file(&png);
    std::fs::copy(&page, shots.join("report.html")).expect("keep report.html");
    run_chromium(
        &page,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,2000",
        ],
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(
        bytes.len() > 10_000,
        "screenshot too small: {} bytes",
        bytes.len()
    );
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn timeline_is_capped() {
    let n = report::MAX_TIMELINE_EVENTS + 5;
    let mut timeline = report::Timeline::default();
    for seq in 1..=n {
        let record: idagent::audit::Record = serde_json::from_value(
            json!({"v":1,"seq":seq,"ts":"2026-11-28T01:04:43Z","run":RUN,"kind":"exit","pid":seq}),
        )
        .expect("an exit record");
        timeline.push(&record);
    }
    let html = report::render_html(&RunReport::default(), &timeline);
    assert!(html.contains(&format!(
        "Showing the first {} of {n} events",
        report::MAX_TIMELINE_EVENTS
    )));
    assert_eq!(
        html.matches("<tr id=\"e").count(),
        report::MAX_TIMELINE_EVENTS
    );
}

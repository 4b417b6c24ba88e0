//! Reports built from synthetic log files: the typed read path end to end, without Docker.

use super::*;
use std::io::Write as _;

const ENVELOPE: &str = r#""v":1,"run":"20260101T000000Z-abcdef""#;

/// Writes `bodies` (JSON objects without the envelope) as a log, `seq` from 1.
fn log_file(bodies: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = std::fs::File::create(log_path(dir.path())).expect("create log");
    for (i, body) in bodies.iter().enumerate() {
        let body = body.trim().trim_start_matches('{');
        let ts = format!("2026-01-01T00:00:{:02}Z", i % 60);
        writeln!(f, "{{{ENVELOPE},\"seq\":{},\"ts\":\"{ts}\",{body}", i + 1).expect("write");
    }
    dir
}

fn decision(layer: &str, verdict: &str, mode: &str, would: bool, req: &str) -> String {
    let enforced = if mode == "enforce" && verdict == "deny" {
        r#","enforced_by":"tcp_reset""#
    } else {
        ""
    };
    format!(
        r#"{{"kind":"decision","layer":"{layer}","verdict":"{verdict}","mode":"{mode}","rule":"r1","would_deny":{would}{enforced},"request":{req}}}"#
    )
}

#[test]
fn decisions_denials_first_then_would_denies_then_allows() {
    let connect = r#"{"addr":"10.1.2.3","port":443,"proto":"tcp"}"#;
    let http =
        r#"{"name":"www.google.com","port":443,"scheme":"https","method":"GET","path":"/other"}"#;
    let dns = r#"{"name":"api.openai.com","qtype":"A"}"#;
    let lines = [
        r#"{"kind":"run_start","idagent_version":"0.1.0","image":"img","command":["sh"],"user":"1","workspace":"/tmp/workspace","limits":{"memory_bytes":1,"pids":1,"timeout_secs":null},"offline":false,"container":"c"}"#.to_owned(),
        decision("http", "deny", "report", true, http),
        decision("connect", "deny", "enforce", false, connect),
        decision("connect", "deny", "enforce", false, connect),
        decision("dns", "allow", "enforce", false, dns),
        decision("dns", "allow", "enforce", false, dns),
        decision("http", "allow", "enforce", false, http),
        r#"{"kind":"from_a_newer_writer","x":1}"#.to_owned(),
        r#"{"kind":"notice","what":"w","detail":"d","added_later":true}"#.to_owned(),
        r#"{"kind":"run_end","exit_code":0,"reason":"exited","duration_ms":5,"counts":{}}"#
            .to_owned(),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let dir = log_file(&refs);
    let r = load(dir.path()).expect("report");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let d = &r.decisions;
    assert_eq!(d.denied.len(), 1);
    assert_eq!(d.denied[0].request, "connect 10.1.2.3:443");
    assert_eq!(d.denied[0].count, 2);
    assert_eq!(d.denied[0].enforced_by.as_deref(), Some("tcp_reset"));
    assert_eq!(d.would_deny.len(), 1);
    assert_eq!(
        d.would_deny[0].request,
        "GET https://www.google.com:443/other"
    );
    assert_eq!(d.allowed.get("dns"), Some(&2));
    assert_eq!(d.allowed.get("http"), Some(&1));
    assert_eq!(r.counts.get("from_a_newer_writer"), Some(&1));
    assert_eq!(r.notices.len(), 1);

    let text = render_text(&r);
    let denied = text.find("Decisions: denied (1)").expect("denied section");
    let would = text
        .find("Decisions: would deny")
        .expect("would-deny section");
    let allowed = text
        .find("Decisions: allowed (3)")
        .expect("allowed section");
    assert!(denied < would && would < allowed, "{text}");
    assert!(text.contains("by layer: dns 2, http 1"), "{text}");

    let json = r.to_json();
    assert!(json.contains("\"would_deny\""), "{json}");
    assert!(json.contains("connect 10.1.2.3:443"));

    let page = write_html(dir.path()).expect("write html");
    let html = std::fs::read_to_string(page).expect("read html");
    assert!(html.contains("id=\"decisions\""));
    assert!(
        html.contains("from_a_newer_writer"),
        "unknown kinds are in the timeline"
    );
}

#[test]
fn torn_last_line_and_bad_lines_are_warnings() {
    let dir = log_file(&[
        r#"{"kind":"gap","dropped":2,"reason":"audit queue full"}"#,
        r#"{"kind":"file","op":"no_such_op","path":"/x","outcome":"ok"}"#,
    ]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log_path(dir.path()))
        .expect("open");
    write!(f, "{{{ENVELOPE},\"seq\":3,\"kind\":\"no").expect("write");
    let r = load(dir.path()).expect("report");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("line 2: not a valid record")),
        "{:?}",
        r.warnings
    );
    assert!(r.warnings.iter().any(|w| w.contains("torn last line")));
    assert_eq!(r.notices.len(), 1);
}

#[test]
fn workspace_symlinks_and_setuid_modes_are_a_warning() {
    let lines = [
        r#"{"kind":"file","op":"create","path":"/tmp/workspace/s","outcome":"ok","size":11,"type":"symlink","target":"/etc/shadow"}"#,
        r#"{"kind":"file","op":"chmod","path":"/tmp/workspace/x","outcome":"ok","mode":"4755"}"#,
        r#"{"kind":"file","op":"create","path":"/tmp/workspace/ok","outcome":"ok","size":1,"mode":"0644"}"#,
        r#"{"kind":"run_end","exit_code":0,"reason":"exited","duration_ms":5,"counts":{}}"#,
    ];
    let dir = log_file(&lines);
    let r = load(dir.path()).expect("report");
    let w = r
        .warnings
        .iter()
        .find(|w| w.contains("symlink"))
        .unwrap_or_else(|| panic!("{:?}", r.warnings));
    assert!(w.contains("held 2 symlink"), "{w}");
    assert!(w.contains("/tmp/workspace/s → /etc/shadow"), "{w}");
    assert!(w.contains("/tmp/workspace/x mode 4755"), "{w}");
    assert!(!w.contains("/tmp/workspace/ok"), "{w}");
}

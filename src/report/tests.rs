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

/// An `http` record body; `extra` is more fields (`"jsonrpc":{…}`, `"status":200` …).
fn http(flow: u64, method: &str, url: &str, extra: &str) -> String {
    format!(
        r#"{{"kind":"http","flow":{flow},"method":"{method}","url":"{url}","req_headers":[],"resp_headers":[],"req_bytes":1,"resp_bytes":1,"req_sha256":"","resp_sha256":"","req_body":"","resp_body":"","duration_ms":3,{extra}}}"#
    )
}

fn policy_decision(flow: u64, verdict: &str, mode: &str, would: bool, path: &str) -> String {
    let enforced = if verdict == "deny" && mode == "enforce" {
        r#","enforced_by":"http_403""#
    } else {
        ""
    };
    format!(
        r#"{{"kind":"decision","layer":"http","verdict":"{verdict}","mode":"{mode}","rule":"mcp-rule","would_deny":{would}{enforced},"flow":{flow},"request":{{"name":"mcp.test","port":80,"scheme":"http","method":"POST","path":"{path}"}}}}"#
    )
}

/// The HTML of the "Agent tool calls" section (up to the next section).
fn calls_section(html: &str) -> &str {
    let start = html
        .find("<section id=\"tool-calls\"")
        .unwrap_or(html.len());
    let rest = html.get(start..).unwrap_or_default();
    let end = rest
        .find("<section id=\"destinations\"")
        .unwrap_or(rest.len());
    rest.get(..end).unwrap_or_default()
}

#[test]
fn agent_tool_calls_mcp_and_grpc_in_log_order() {
    const MCP: &str = "http://mcp.test/mcp";
    let hostile_args = r#"{\"q\":\"</td><script>alert(1)</script>\u2028\u202e\"}"#;
    let lines = [
        r#"{"kind":"run_start","idagent_version":"0.1.0","image":"img","command":["sh"],"user":"1","workspace":"/tmp/workspace","limits":{"memory_bytes":1,"pids":1,"timeout_secs":null},"offline":false,"container":"c"}"#.to_owned(),
        http(1, "POST", MCP, r#""status":200,"jsonrpc":{"method":"initialize","id":"0","response_messages":1}"#),
        http(1, "POST", MCP, r#""status":202,"jsonrpc":{"method":"notifications/initialized"}"#),
        http(1, "POST", MCP, r#""status":200,"jsonrpc":{"method":"tools/list","id":"1","response_messages":1}"#),
        http(1, "POST", MCP, r#""status":200,"jsonrpc":{"method":"tools/call","id":"2","tool":"get_weather","arguments":"{\"city\":\"Paris\"}","response_messages":2,"tool_error":false}"#),
        http(1, "POST", MCP, &format!(r#""status":200,"jsonrpc":{{"method":"tools/call","id":"3","tool":"<script>alert(2)</script>\u2028","arguments":"{hostile_args}","response_messages":1,"tool_error":true}}"#)),
        http(1, "POST", MCP, r#""status":200,"jsonrpc":{"method":"tools/call","id":"4","tool":"nope","response_messages":1,"error_code":-32601}"#),
        // A plain request: not a call.
        http(2, "GET", "http://mcp.test/health", r#""status":200"#),
        // Refused: the decision, then the gate's 403.
        policy_decision(3, "deny", "enforce", false, "/mcp"),
        http(3, "POST", MCP, r#""status":403,"note":"denied by policy (rule mcp-rule)","jsonrpc":{"method":"tools/call","id":"5","tool":"delete_repo","arguments":"{}"}"#),
        // Report mode: it went ahead.
        policy_decision(4, "deny", "report", true, "/mcp"),
        http(4, "POST", MCP, r#""status":200,"jsonrpc":{"method":"tools/call","id":"6","tool":"read_file","arguments":"{}","response_messages":1,"tool_error":false}"#),
        http(5, "POST", "https://grpc.test/helloworld.Greeter/SayHello", r#""status":200,"grpc":{"service":"helloworld.Greeter","method":"SayHello","status":0,"req_messages":1,"resp_messages":1}"#),
        http(5, "POST", "https://grpc.test/admin.Admin/Wipe", r#""status":200,"grpc":{"service":"admin.Admin","method":"Wipe","status":7,"message":"not <b>you</b>","req_messages":1,"resp_messages":0}"#),
        r#"{"kind":"run_end","exit_code":0,"reason":"exited","duration_ms":5,"counts":{}}"#.to_owned(),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let dir = log_file(&refs);
    let r = load(dir.path()).expect("report");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let calls: Vec<(&str, &str, &str)> = r
        .tool_calls
        .iter()
        .map(|c| (c.protocol.as_str(), c.call.as_str(), c.outcome.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("MCP", "initialize", "ok"),
            ("MCP", "notifications/initialized", "sent"),
            ("MCP", "tools/list", "ok"),
            ("MCP", "get_weather", "ok"),
            (
                "MCP",
                "<script>alert(2)</script>\u{2028}",
                "tool error (isError)"
            ),
            ("MCP", "nope", "error -32601 (method not found)"),
            ("MCP", "delete_repo", "refused by policy"),
            ("MCP", "read_file", "ok"),
            ("gRPC", "helloworld.Greeter/SayHello", "0 OK"),
            (
                "gRPC",
                "admin.Admin/Wipe",
                "7 PERMISSION_DENIED: not <b>you</b>"
            ),
        ]
    );
    let seqs: Vec<u64> = r.tool_calls.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let by_call = |name: &str| r.tool_calls.iter().find(|c| c.call == name);
    let weather = by_call("get_weather").expect("get_weather");
    assert!(weather.tool_call && !weather.failed);
    assert_eq!(weather.server, "mcp.test");
    assert_eq!(weather.arguments.as_deref(), Some(r#"{"city":"Paris"}"#));
    assert!(!by_call("tools/list").expect("tools/list").tool_call);
    let refused = by_call("delete_repo").expect("delete_repo");
    assert!(refused.refused && refused.failed);
    assert_eq!(refused.policy.as_deref(), Some("denied (rule mcp-rule)"));
    let reported = by_call("read_file").expect("read_file");
    assert!(!reported.refused && !reported.failed);
    assert_eq!(
        reported.policy.as_deref(),
        Some("would deny (rule mcp-rule, report mode)")
    );
    let wipe = by_call("admin.Admin/Wipe").expect("wipe");
    assert!(wipe.failed && wipe.grpc_status == Some(7));
    assert!(
        !by_call("helloworld.Greeter/SayHello")
            .expect("hello")
            .failed
    );
    assert_eq!(
        r.headline().first(),
        Some(&("tool calls", 7)),
        "tools/call and gRPC calls"
    );

    let text = render_text(&r);
    let section = text
        .find("Agent tool calls (10)")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(section < text.find("Destinations").unwrap_or(0), "{text}");
    let weather_line = text
        .lines()
        .find(|l| l.contains("get_weather"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(weather_line.contains("Paris") && weather_line.contains("MCP"));
    assert!(text.contains("403 denied (rule mcp-rule)"), "{text}");
    assert!(text.contains("202 sent"), "{text}");
    assert!(
        !text.contains('\u{2028}') && !text.contains('\u{202e}'),
        "{text}"
    );
    assert!(
        text.contains("</script>\\u"),
        "U+2028 shown as an escape: {text}"
    );

    let page = write_html(dir.path()).expect("write html");
    let html = std::fs::read_to_string(page).expect("read html");
    assert!(
        html.contains("href=\"#tool-calls\""),
        "the nav and the card link it"
    );
    let s = calls_section(&html);
    assert!(
        s.contains("Agent tool calls <span class=\"count\">10</span>"),
        "{s}"
    );
    assert!(
        s.contains("<b><span class=\"mono tool\">get_weather</span></b>"),
        "{s}"
    );
    assert!(
        s.contains("<b><span class=\"mono tool\">admin.Admin/Wipe</span></b>"),
        "{s}"
    );
    assert!(s.contains("{&quot;city&quot;:&quot;Paris&quot;}"), "{s}");
    for raw in [
        "<script>",
        "</td><script>",
        "<b>you</b>",
        "\u{2028}",
        "\u{202e}",
    ] {
        assert!(!s.contains(raw), "{raw:?} unescaped in {s}");
    }
    assert!(
        s.contains("&lt;script&gt;alert(2)&lt;/script&gt;\\u{2028}"),
        "{s}"
    );
    assert!(s.contains("&lt;/td&gt;&lt;script&gt;alert(1)"), "{s}");
    assert!(
        s.contains("7 PERMISSION_DENIED: not &lt;b&gt;you&lt;/b&gt;"),
        "{s}"
    );
    assert!(
        s.contains("HTTP 403") && s.contains("denied (rule mcp-rule)"),
        "{s}"
    );
    assert!(s.contains("would deny (rule mcp-rule, report mode)"), "{s}");
    assert!(s.contains("5 MCP tool call(s)"), "{s}");
    assert!(s.contains("3 other JSON-RPC message(s)"), "{s}");
    assert!(!s.contains("/health"), "a plain request is no call: {s}");
    let json = r.to_json();
    assert!(json.contains("\"tool_calls\""), "{json}");
}

#[test]
fn no_agent_tool_calls_is_one_line() {
    let lines = [
        http(1, "GET", "http://example.test/", r#""status":200"#),
        r#"{"kind":"run_end","exit_code":0,"reason":"exited","duration_ms":5,"counts":{}}"#
            .to_owned(),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let dir = log_file(&refs);
    let r = load(dir.path()).expect("report");
    assert!(r.tool_calls.is_empty());
    assert_eq!(r.requests.len(), 1);
    let text = render_text(&r);
    assert!(text.contains("Agent tool calls (0)\n  none\n"), "{text}");
    let page = write_html(dir.path()).expect("write html");
    let html = std::fs::read_to_string(page).expect("read html");
    let s = calls_section(&html);
    assert!(s.contains("<p class=\"empty\">None.</p>"), "{s}");
    assert!(!s.contains("<table"), "{s}");
}

//! MCP tool rules end to end (issue 10, item 3): a guest's JSON-RPC calls to an MCP-style
//! server are observed, `policy learn` writes a rule allowing the tool seen, and reruns under
//! that policy let the learned tool through while another is refused in enforce mode (`403`
//! with a JSON-RPC error, the server never sees it) and only recorded in report mode. The
//! server is the test's own, on loopback, reached through `--offline --upstream-map`.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Answers each JSON-RPC POST with a JSON result naming the tool it was asked to call, and
/// remembers every tool called.
fn mcp_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let called = Arc::new(Mutex::new(Vec::new()));
    let seen = called.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let Ok(n) = s.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                };
                let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let tool = call["params"]["name"].as_str().unwrap_or("").to_owned();
                if call["method"] == "tools/call" {
                    seen.lock().expect("lock").push(tool.clone());
                }
                let answer = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": call["id"],
                    "result": {"content": [{"type": "text", "text": format!("ran {tool}")}], "isError": false},
                })
                .to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(answer.as_bytes());
            });
        }
    });
    (port, called)
}

/// The guest: `initialize`, then a call of each tool in `tools`; prints each answer's status
/// and JSON body.
fn script(tools: &[&str]) -> String {
    let tools = serde_json::to_string(tools).expect("json");
    format!(
        r#"
import json, urllib.request, urllib.error
def call(i, method, params):
    body = {{"jsonrpc": "2.0", "id": i, "method": method, "params": params}}
    req = urllib.request.Request("http://mcp.test/mcp", data=json.dumps(body).encode(),
        headers={{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}})
    try:
        r = urllib.request.urlopen(req, timeout=20)
        return [r.status, json.loads(r.read())]
    except urllib.error.HTTPError as e:
        return [e.code, json.loads(e.read() or b"null")]
out = {{"initialize": call(1, "initialize", {{}})}}
for i, tool in enumerate({tools}):
    out[tool] = call(10 + i, "tools/call", {{"name": tool, "arguments": {{"q": "x"}}}})
print("RESULT " + json.dumps(out), flush=True)
"#
    )
}

fn keep(run: &Run, into: &Path) -> PathBuf {
    let dst = into.join("observed");
    std::fs::create_dir_all(&dst).expect("mkdir");
    std::fs::copy(run.run_dir().join("audit.jsonl"), dst.join("audit.jsonl")).expect("copy");
    dst
}

/// The `decision` of the call of `tool`.
fn tool_decision<'a>(run: &'a Run, tool: &str) -> Option<&'a Value> {
    run.of_kind("decision")
        .find(|d| d["layer"] == "http" && d["request"]["tool"] == tool)
}

#[test]
fn learned_mcp_tools_are_enforced_and_reported() {
    let (port, called) = mcp_server();
    let map = format!("mcp.test:80=127.0.0.1:{port}");
    let base = ["--upstream-map", map.as_str()];
    let observed = offline_python(&base, &script(&["search"]));
    assert_eq!(observed.code(), Some(0), "{}", observed.explain());
    assert_eq!(
        observed.result()["search"][0],
        200,
        "{}",
        observed.explain()
    );

    let keep_dir = tempfile::tempdir().expect("tempdir");
    let dir = keep(&observed, keep_dir.path());
    let policy = keep_dir.path().join("policy.yaml");
    let out = Command::new(IDAGENT)
        .args(["policy", "learn"])
        .arg(&dir)
        .arg("-o")
        .arg(&policy)
        .output()
        .expect("policy learn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = std::fs::read_to_string(&policy).expect("policy");
    assert!(yaml.contains("mcp: {tools: [search]}"), "{yaml}");
    let out = Command::new(IDAGENT)
        .args(["policy", "explain"])
        .arg(&policy)
        .output()
        .expect("policy explain");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains("(mcp tools only: search)"), "{page}");

    let policy = policy.display().to_string();
    let with_mode = |mode: &'static str| {
        let mut args = base.to_vec();
        args.extend(["--policy", policy.as_str(), "--mode", mode]);
        args
    };
    called.lock().expect("lock").clear();
    let enforced = offline_python(&with_mode("enforce"), &script(&["search", "delete_all"]));
    let explain = enforced.explain();
    assert_eq!(enforced.code(), Some(0), "{explain}");
    let got = enforced.result();
    assert_eq!(got["initialize"][0], 200, "{explain}");
    assert_eq!(got["search"][0], 200, "{explain}");
    assert_eq!(
        got["search"][1]["result"]["content"][0]["text"],
        "ran search"
    );
    // The refusal, in JSON-RPC: the call's id, our code, the rule.
    let refused = &got["delete_all"];
    assert_eq!(refused[0], 403, "{explain}");
    assert_eq!(refused[1]["jsonrpc"], "2.0");
    assert_eq!(refused[1]["id"], 11);
    assert_eq!(refused[1]["error"]["code"], -32001);
    assert_eq!(
        refused[1]["error"]["message"],
        "denied by idagent policy (rule mcp-tool-not-allowed)"
    );
    assert_eq!(
        *called.lock().expect("lock"),
        ["search"],
        "the refused tool reached the server"
    );
    let deny = tool_decision(&enforced, "delete_all")
        .unwrap_or_else(|| panic!("no decision for the refused tool\n{explain}"));
    assert_eq!(deny["verdict"], "deny", "{deny}");
    assert_eq!(deny["rule"], "mcp-tool-not-allowed");
    assert_eq!(deny["enforced_by"], "mcp_403");
    let allow = tool_decision(&enforced, "search").expect("decision for search");
    assert_eq!(allow["verdict"], "allow", "{allow}");
    // One decision per request to the endpoint: initialize and two tool calls.
    let endpoint = enforced
        .of_kind("decision")
        .filter(|d| d["layer"] == "http" && d["request"]["path"] == "/mcp")
        .count();
    assert_eq!(endpoint, 3, "{explain}");
    // The allowed call was forwarded whole: the tap counted its body once.
    let http = enforced
        .of_kind("http")
        .find(|h| h["jsonrpc"]["tool"] == "search")
        .unwrap_or_else(|| panic!("no http record for search\n{explain}"));
    assert_eq!(http["status"], 200, "{http}");
    let length = http["req_headers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| {
            h[0].as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("content-length"))
        })
        .and_then(|h| h[1].as_str()?.parse::<u64>().ok());
    assert!(length.is_some_and(|n| n > 0), "{http}");
    assert_eq!(http["req_bytes"].as_u64(), length, "{http}");
    assert!(enforced.of_kind("http").any(|h| h["status"] == 403
        && h["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("denied by policy (rule mcp-tool-not-allowed"))));

    called.lock().expect("lock").clear();
    let reported = offline_python(&with_mode("report"), &script(&["search", "delete_all"]));
    let explain = reported.explain();
    assert_eq!(reported.code(), Some(0), "{explain}");
    assert_eq!(reported.result()["delete_all"][0], 200, "{explain}");
    assert_eq!(
        *called.lock().expect("lock"),
        ["search", "delete_all"],
        "report mode refused a call"
    );
    let would = tool_decision(&reported, "delete_all")
        .unwrap_or_else(|| panic!("no decision for the unlisted tool\n{explain}"));
    assert_eq!(would["verdict"], "deny", "{would}");
    assert_eq!(would["would_deny"], true);
    assert!(would["enforced_by"].is_null(), "{would}");
}

//! MCP tool calls in the log (issue 10, item 3): a guest posts JSON-RPC 2.0 `tools/call` to an
//! MCP-style server (streamable HTTP: the answer is an SSE stream) and the `http` record names
//! the method, id, tool and redacted arguments. The server is the test's own, on loopback,
//! reached through `--offline --upstream-map`.

mod common;
use common::*;
use std::io::{Read, Write};

/// Answers every request with one SSE stream: a progress notification, then the result.
fn mcp_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head, then the body by Content-Length.
                loop {
                    let Ok(n) = s.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let body = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\r\n\r\n\
                            event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":42,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"sunny\"}],\"isError\":false}}\r\n\r\n";
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(body.as_bytes());
            });
        }
    });
    port
}

const SECRET: &str = "sk-proj-mcpArgSecret0123456789abcdefXYZ";

#[test]
fn mcp_tool_calls_are_named_in_the_log() {
    let port = mcp_server();
    let map = format!("mcp.test:80=127.0.0.1:{port}");
    let script = format!(
        r#"
import json, urllib.request
call = {{"jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {{"name": "get_weather", "arguments": {{"city": "Paris", "api_key": "{SECRET}"}}}}}}
req = urllib.request.Request("http://mcp.test/mcp", data=json.dumps(call).encode(),
    headers={{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}})
body = urllib.request.urlopen(req, timeout=20).read().decode()
print("RESULT " + json.dumps({{"sunny": "sunny" in body}}), flush=True)
"#
    );
    let run = offline_python(&["--upstream-map", &map], &script);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert_eq!(run.result()["sunny"], true, "{}", run.explain());
    let http = run
        .of_kind("http")
        .find(|e| e["url"] == "http://mcp.test/mcp")
        .unwrap_or_else(|| panic!("no http record\n{}", run.explain()));
    let rpc = &http["jsonrpc"];
    assert_eq!(rpc["method"], "tools/call", "{http}");
    assert_eq!(rpc["id"], "42");
    assert_eq!(rpc["tool"], "get_weather");
    assert_eq!(rpc["response_messages"], 2);
    assert_eq!(rpc["tool_error"], false);
    let args = rpc["arguments"].as_str().unwrap_or("");
    assert!(args.contains("Paris"), "{args}");
    assert!(!args.contains(SECRET), "{args}");
    let log = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).expect("log");
    assert!(
        !log.contains(SECRET),
        "the argument's secret reached the log"
    );
    let report = std::fs::read_to_string(run.run_dir().join("report.html")).expect("report");
    assert!(
        !report.contains(SECRET),
        "the argument's secret reached the report"
    );
    // The report names the call first-class: its section, the tool in bold, its arguments.
    let start = report
        .find("<section id=\"tool-calls\">")
        .unwrap_or_else(|| panic!("no tool-calls section in report.html"));
    let section = &report[start..];
    let section = &section[..section.find("</section>").unwrap_or(section.len())];
    assert!(
        section.contains("<b><span class=\"mono tool\">get_weather</span></b>"),
        "{section}"
    );
    assert!(
        section.contains("mcp.test") && section.contains("Paris"),
        "{section}"
    );
    assert!(section.contains("HTTP 200"), "{section}");
}

//! Issue 10 item 4: redaction that uses what it knows. A credential the run has seen once — a
//! request header, a variable given to the guest — is scrubbed wherever it appears again: a
//! response body or header echoing it, a later request, an exec's argv. Real guest clients
//! against a local echo server on 127.0.0.1 (mapped with `--upstream-map`, `--offline`).

mod common;
use common::*;
use idagent::redact::fingerprint;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;

/// An HTTP/1.1 server that answers every request with a JSON body echoing its request line,
/// headers and body, and an `X-Echo` header repeating every request header's value.
fn echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = echo_one(conn);
            });
        }
    });
    addr
}

fn echo_one(conn: std::net::TcpStream) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut headers = serde_json::Map::new();
    let mut values = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.trim_end().split_once(':') {
            let value = value.trim().to_owned();
            if name.eq_ignore_ascii_case("content-length") {
                len = value.parse().unwrap_or(0);
            }
            values.push(value.clone());
            headers.insert(name.to_ascii_lowercase(), Value::String(value));
        }
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    let reply = serde_json::json!({
        "request": line.trim_end(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    })
    .to_string();
    let echo: String = values
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: {echo}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    w.flush()
}

/// A line server for an opaque relayed flow: echoes every line it reads.
fn line_echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut w) = conn.try_clone() else { return };
                for line in BufReader::new(conn).split(b'\n').map_while(Result::ok) {
                    if w.write_all(&line).and_then(|_| w.write_all(b"\n")).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// 40 characters nobody else sends: a fresh hex digest.
fn random_secret(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let hex = sha256_hex(format!("{tag}{nanos}{}", std::process::id()).as_bytes());
    format!("K{}", &hex[..39])
}

fn products(run: &Run) -> (String, String) {
    let audit = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).expect("audit");
    let report = std::fs::read_to_string(run.run_dir().join("report.html")).expect("report");
    (audit, report)
}

fn http_to<'a>(run: &'a Run, path: &str) -> &'a Value {
    run.of_kind("http")
        .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(path)))
        .unwrap_or_else(|| panic!("no http event for {path}\n{}", run.explain()))
}

#[test]
fn an_api_key_echoed_by_the_server_is_never_in_clear() {
    let server = echo_server();
    let relay = line_echo_server();
    let key = random_secret("x-api-key");
    let script = format!(
        r#"import json, urllib.request
def get(path, headers):
    r = urllib.request.Request("http://echo.test" + path, headers=headers)
    with urllib.request.urlopen(r, timeout=20) as resp:
        return resp.headers.get("X-Echo", ""), json.loads(resp.read())
echo, body = get("/keyed", {{"X-Api-Key": "{key}"}})
print("RESULT", json.dumps({{"echoed_header": "{key}" in echo, "echoed_body": body["headers"].get("x-api-key") == "{key}"}}))
get("/plain", {{"Accept": "application/json"}})
import socket
s = socket.create_connection(("relay.test", 7000), timeout=20)
s.sendall(b"HELLO {key}\n")
print("relay", s.recv(4096))
s.close()
"#
    );
    // The script is a workspace file, so the key reaches idagent only through the guest's
    // request (not on a command line idagent logs first).
    let ws = tempfile::tempdir().expect("tempdir");
    std::fs::write(ws.path().join("t.py"), script).expect("write script");
    let run = idagent_run(&[
        "--offline",
        "--upstream-map",
        &format!("echo.test:80={server}"),
        "--upstream-map",
        &format!("relay.test:7000={relay}"),
        "--workspace",
        ws.path().to_str().expect("utf-8 path"),
        "--image",
        GUEST_IMAGE,
        "--",
        "python3",
        "/tmp/workspace/t.py",
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    // The server really echoed the key, in its header and its JSON body.
    let result = run.result();
    assert_eq!(result["echoed_header"], true, "{}", run.explain());
    assert_eq!(result["echoed_body"], true, "{}", run.explain());

    let fp = fingerprint("x-api-key", &key);
    let (audit, report) = products(&run);
    assert!(
        !audit.contains(&key),
        "key in clear in audit.jsonl\n{audit}"
    );
    assert!(!report.contains(&key), "key in clear in report.html");
    assert!(report.contains(&fp), "{fp} missing in report.html");

    let keyed = http_to(&run, "/keyed");
    assert_eq!(keyed["credentials"], serde_json::json!([fp]), "{keyed}");
    let resp_body = keyed["resp_body"].as_str().expect("resp_body");
    assert!(
        resp_body.contains(&format!("\"x-api-key\":\"{fp}\"")),
        "{resp_body}"
    );
    let echo = keyed["resp_headers"]
        .as_array()
        .and_then(|h| h.iter().find(|p| p[0] == "x-echo"))
        .expect("x-echo header");
    assert!(echo[1].as_str().is_some_and(|v| v.contains(&fp)), "{echo}");

    // An opaque flow sent it later, and its server echoed it: both first bytes are scrubbed.
    assert!(
        run.stdout().contains(&format!("relay b'HELLO {key}")),
        "{}",
        run.explain()
    );
    let relayed = run
        .of_kind("tcp")
        .find(|e| {
            e["first_bytes_up"]
                .as_str()
                .is_some_and(|b| b.starts_with("HELLO"))
        })
        .unwrap_or_else(|| panic!("no relayed flow\n{}", run.explain()));
    assert_eq!(
        relayed["first_bytes_up"],
        format!("HELLO {fp}\n"),
        "{relayed}"
    );
    assert_eq!(
        relayed["first_bytes_down"],
        format!("HELLO {fp}\n"),
        "{relayed}"
    );

    // No credential: an empty list, written.
    let plain = http_to(&run, "/plain");
    assert_eq!(plain["credentials"], serde_json::json!([]), "{plain}");
    for e in run.of_kind("http") {
        assert!(e["credentials"].is_array(), "{e}");
    }
}

#[test]
fn a_secret_env_value_is_scrubbed_from_argv_requests_and_responses() {
    let server = echo_server();
    let token = random_secret("my_token");
    let guest = "curl -sS -m 20 -H \"x: $MY_TOKEN\" http://echo.test/env && \
                 echo \"note $MY_TOKEN\" | curl -sS -m 20 --data-binary @- http://echo.test/body";
    let run = idagent_run(&[
        "--offline",
        "--upstream-map",
        &format!("echo.test:80={server}"),
        "--env",
        &format!("MY_TOKEN={token}"),
        "--image",
        GUEST_IMAGE,
        "--",
        "sh",
        "-c",
        guest,
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    // The guest got the value and sent it: the echo came back with it.
    assert!(run.stdout().contains(&token), "{}", run.explain());

    let fp = fingerprint("my_token", &token);
    let (audit, report) = products(&run);
    assert!(
        !audit.contains(&token),
        "token in clear in audit.jsonl\n{audit}"
    );
    assert!(!report.contains(&token), "token in clear in report.html");
    // The header `x` is no secret name: only the known value finds it.
    let env = http_to(&run, "/env");
    let x = env["req_headers"]
        .as_array()
        .and_then(|h| h.iter().find(|p| p[0] == "x"))
        .expect("x header");
    assert_eq!(x[1], fp.as_str(), "{env}");
    assert_eq!(env["credentials"], serde_json::json!([fp]), "{env}");
    let body = http_to(&run, "/body");
    assert!(
        body["req_body"]
            .as_str()
            .is_some_and(|b| b.contains(&format!("note {fp}"))),
        "{body}"
    );
    assert!(
        body["resp_body"].as_str().is_some_and(|b| b.contains(&fp)),
        "{body}"
    );
    // The shell expanded it into curl's argv: the exec records hold its fingerprint.
    let curl_with_header = run
        .of_kind("exec")
        .chain(run.of_kind("exec_ran"))
        .filter(|e| {
            e["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|w| *w == format!("x: {fp}").as_str()))
        })
        .count();
    assert!(curl_with_header >= 1, "{}", run.explain());
}

#[test]
fn credentials_read_back_as_a_list_from_every_writer() {
    let line = |credentials: &str| {
        format!(
            r#"{{"flow":1,"method":"GET","url":"http://a/","req_headers":[],"resp_headers":[],
               "req_bytes":0,"resp_bytes":0,"req_sha256":"","resp_sha256":"","req_body":"",
               "resp_body":"","duration_ms":0{credentials}}}"#
        )
    };
    for (field, want) in [
        ("", vec![]),
        (r#","credentials":null"#, vec![]),
        (r#","credentials":[]"#, vec![]),
        (
            r#","credentials":["x:…:sha256=01234567"]"#,
            vec!["x:…:sha256=01234567"],
        ),
    ] {
        let e: idagent::audit::HttpEvent =
            serde_json::from_str(&line(field)).unwrap_or_else(|e| panic!("{field}: {e}"));
        assert_eq!(e.credentials, want, "{field}");
        // Written back, the list is always there.
        let written = serde_json::to_value(&e).expect("serialize");
        assert!(written["credentials"].is_array(), "{written}");
    }
}

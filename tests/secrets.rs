//! Issue 9 item 6: secrets in the products people open, and the operator's terminal. A real
//! guest sends real credentials (headers, URLs, bodies, opaque protocols, command lines) to
//! local fakes; `audit.jsonl` and `report.html` must hold none of them in clear, only their
//! fingerprints. Guest output must not drive the operator's terminal, and is capped.

mod common;
use common::*;
use idagent::redact::fingerprint;
use idagent_fakes::{start_blocking, FakeServer, FakesHandle};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXRzLXRlc3QifQ.SigNature0123456789_-abcd";
const AIZA: &str = "AIzaSyD0123456789abcdefghijklmnopqrstuv";

fn fakes() -> (tempfile::TempDir, FakesHandle) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = start_blocking(dir.path()).expect("start fakes");
    (dir, fakes)
}

/// A workspace seed holding the guest's script, so no secret is on a command line.
fn seed(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("t.py"), script).expect("write script");
    dir
}

/// `idagent run --offline <fakes> --workspace SEED EXTRA… -- python3 /tmp/workspace/t.py`.
fn run_script(fakes: &FakesHandle, script: &str, extra: &[String]) -> Run {
    let ws = seed(script);
    let mut args: Vec<String> = vec!["--offline".into()];
    args.extend(fakes.idagent_args());
    args.extend(extra.iter().cloned());
    args.extend(
        [
            "--workspace",
            ws.path().to_str().expect("utf-8 path"),
            "--image",
            GUEST_IMAGE,
            "--",
            "python3",
            "/tmp/workspace/t.py",
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    idagent_run(&refs)
}

/// Neither product holds any secret in clear; each holds the fingerprints it must.
fn assert_products(run: &Run, secrets: &[&str], in_audit: &[String], in_report: &[String]) {
    let audit = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).expect("audit");
    let report = std::fs::read_to_string(run.run_dir().join("report.html")).expect("report");
    for secret in secrets {
        assert!(!audit.contains(secret), "{secret} in audit.jsonl\n{audit}");
        assert!(!report.contains(secret), "{secret} in report.html");
    }
    for fp in in_audit {
        assert!(
            audit.contains(fp.as_str()),
            "{fp} missing in audit.jsonl\n{audit}"
        );
    }
    for fp in in_report {
        assert!(report.contains(fp.as_str()), "{fp} missing in report.html");
    }
}

#[test]
fn http_headers_urls_and_bodies_keep_only_fingerprints() {
    let (_dir, fakes) = fakes();
    // (header, value, kind of its fingerprint)
    let headers = [
        (
            "Private-Token",
            "glpat-PrivTok0123456789abcd",
            "private-token",
        ),
        (
            "X-Vault-Token",
            "hvs.VaultTok0123456789abcdef",
            "x-vault-token",
        ),
        ("apikey", "ApiKeyHdr0123456789abcdWXYZ", "apikey"),
        (
            "X-Access-Token",
            "AccessTokHdr0123456789abcd",
            "x-access-token",
        ),
        ("api-key", "AzureKey0123456789abcdefgh", "api-key"),
        (
            "X-Hub-Signature-256",
            "sha256=HubSig0123456789abcdef",
            "x-hub-signature-256",
        ),
    ];
    // (query parameter, value, kind)
    let params = [
        (
            "X-Amz-Signature",
            "AmzSig0123456789abcdefgh",
            "x-amz-signature",
        ),
        (
            "X-Amz-Credential",
            "AKIDCred0123456789abcd",
            "x-amz-credential",
        ),
        ("sig", "AzureSas0123456789abcdef", "sig"),
        ("token", "UrlTok0123456789abcdefgh", "token"),
        ("key", AIZA, "key"),
    ];
    // (JSON field, value, kind)
    let fields = [
        ("password", "JsonPw0123456789abcdefgh", "password"),
        ("api_key", "JsonApiKey0123456789abcd", "api_key"),
        ("token", "JsonTok0123456789abcdefg", "token"),
        ("access_token", "JsonAt0123456789abcdefgh", "access_token"),
        ("secret", "JsonSecret0123456789abcd", "secret"),
        ("client_secret", "JsonCs0123456789abcdefgh", "client_secret"),
        ("private_key", "JsonPk0123456789abcdefgh", "private_key"),
    ];
    // Key formats in free text, with their kinds.
    let formats = [
        ("AKIAIOSFODNN7EXAMPLE", "aws"),
        ("ghp_0123456789abcdefghijABCDEFGHIJ0123", "github"),
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKl", "slack"),
        ("sk-ant-api03-Secrets0123456789abcdefgh", "sk-ant"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe"),
    ];
    let header_dict: String = headers
        .iter()
        .map(|(n, v, _)| format!("{n:?}: {v:?}, "))
        .collect();
    let query: Vec<String> = params.iter().map(|(n, v, _)| format!("{n}={v}")).collect();
    let fields_dict: String = fields
        .iter()
        .map(|(n, v, _)| format!("{n:?}: {v:?}, "))
        .collect();
    let notes: Vec<&str> = formats.iter().map(|(v, _)| *v).collect();
    let script = format!(
        r#"import json, urllib.request, urllib.error
def req(url, headers={{}}, data=None):
    r = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=20) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
print("headers", req("https://api.openai.com/v1/models", {{{header_dict}}}))
print("url", req("http://www.google.com/v1/session/{JWT}?{query}&q=visible"))
body = json.dumps({{{fields_dict} "notes": "{notes}", "max_tokens": 7}}).encode()
print("json", req("https://api.openai.com/v1/chat/completions", {{"Content-Type": "application/json"}}, body))
print("form", req("http://www.google.com/login", {{"Content-Type": "application/x-www-form-urlencoded"}}, b"user=alice&password=FormPw0123456789abcdefgh&passwd=FormPasswd0123456789ab"))
"#,
        query = query.join("&"),
        notes = notes.join(" "),
    );
    let run = run_script(&fakes, &script, &[]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    for step in ["headers", "url", "json", "form"] {
        assert!(run.stdout().contains(step), "{step}\n{}", run.explain());
    }
    // The upstream received the real credentials: the guest really sent them.
    let got = fakes.requests();
    let models = got
        .iter()
        .find(|r| r.path_and_query == "/v1/models")
        .expect("models request");
    for (name, value, _) in headers {
        assert_eq!(models.header(name), Some(value), "{name}");
    }

    let mut secrets: Vec<&str> = vec![JWT, "FormPw0123456789abcdefgh", "FormPasswd0123456789ab"];
    let mut fps = vec![
        fingerprint("jwt", JWT),
        fingerprint("password", "FormPw0123456789abcdefgh"),
        fingerprint("passwd", "FormPasswd0123456789ab"),
    ];
    for (_, value, kind) in headers.iter().chain(&params).chain(&fields) {
        secrets.push(value);
        fps.push(fingerprint(kind, value));
    }
    for (value, kind) in formats {
        secrets.push(value);
        fps.push(fingerprint(kind, value));
    }
    assert_products(&run, &secrets, &fps, &fps);
    // Harmless headers and parameters stay readable.
    let audit = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).expect("audit");
    assert!(audit.contains("q=visible"), "{audit}");
    assert!(
        run.of_kind("http").any(
            |e| e["req_headers"]
                .as_array()
                .is_some_and(|h| h.iter().any(|p| p[0]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("content-length"))
                    && p[1].as_str().is_some_and(|v| v.parse::<u64>().is_ok())))
        ),
        "{}",
        run.explain()
    );
    assert!(audit.contains(r#"\"max_tokens\": 7"#), "{audit}");
}

/// A line-oriented server for the opaque-flow test: answers `+OK` to every line it reads.
fn ok_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone");
                for line in BufReader::new(conn).split(b'\n') {
                    if line.is_err() || w.write_all(b"+OK\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn opaque_flows_and_proxy_userinfo_keep_only_fingerprints() {
    let (_dir, fakes) = fakes();
    let server = ok_server();
    let mut extra = Vec::new();
    for name in [
        "redis.test:6379",
        "ftp.test:21",
        "imap.test:143",
        "dav.test:8080",
    ] {
        extra.push("--upstream-map".to_string());
        extra.push(format!("{name}={server}"));
    }
    let script = r#"import socket
def talk(host, port, data):
    s = socket.create_connection((host, port), timeout=20)
    s.sendall(data)
    got = s.recv(4096)
    s.close()
    return got
print("resp", talk("redis.test", 6379, b"*2\r\n$4\r\nAUTH\r\n$24\r\nRedisRespPw0123456789abc\r\n"))
print("inline", talk("redis.test", 6379, b"AUTH default RedisInlinePw0123456789ab\r\n"))
print("ftp", talk("ftp.test", 21, b"USER anonymous\r\nPASS FtpPass0123456789abcdef\r\n"))
print("imap", talk("imap.test", 143, b"a1 LOGIN alice ImapPass0123456789abcdef\r\n"))
print("dav", talk("dav.test", 8080, b"PROPFIND /dav/ HTTP/1.1\r\nHost: dav.test\r\nAuthorization: Basic RGF2QmFzaWMwMTIzNDU2Nzg5\r\n\r\n"))
s = socket.create_connection(("10.77.0.1", 5000), timeout=20)
s.sendall(b"GET http://alice:ProxyUserPw0123456789ab@www.google.com/ HTTP/1.1\r\nHost: www.google.com\r\nConnection: close\r\n\r\n")
resp = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    resp += chunk
print("proxy", resp.split(b"\r\n")[0].decode())
"#;
    let run = run_script(&fakes, script, &extra);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    for step in ["resp", "inline", "ftp", "imap", "dav"] {
        assert!(
            run.stdout().contains(&format!("{step} b'+OK")),
            "{step}\n{}",
            run.explain()
        );
    }
    // Userinfo through the explicit proxy is accepted, and upstream never sees it.
    assert!(
        run.stdout().contains("proxy HTTP/1.1 200"),
        "{}",
        run.explain()
    );
    let google: Vec<_> = fakes.requests_to(FakeServer::GoogleHttp);
    assert_eq!(google.len(), 1, "{google:?}");
    assert_eq!(google[0].header("host"), Some("www.google.com"));
    assert!(!google[0].target.contains("ProxyUserPw"), "{google:?}");
    let proxied = run
        .of_kind("http")
        .find(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.contains("www.google.com"))
        })
        .expect("proxied request");
    let pw_fp = fingerprint("userinfo", "ProxyUserPw0123456789ab");
    assert_eq!(
        proxied["url"],
        format!("http://alice:{pw_fp}@www.google.com/"),
        "{proxied}"
    );

    let secrets = [
        "RedisRespPw0123456789abc",
        "RedisInlinePw0123456789ab",
        "FtpPass0123456789abcdef",
        "ImapPass0123456789abcdef",
        "RGF2QmFzaWMwMTIzNDU2Nzg5",
        "ProxyUserPw0123456789ab",
    ];
    let in_audit = [
        fingerprint("auth", "RedisRespPw0123456789abc"),
        fingerprint("auth", "RedisInlinePw0123456789ab"),
        fingerprint("pass", "FtpPass0123456789abcdef"),
        fingerprint("login", "ImapPass0123456789abcdef"),
        fingerprint("basic", "RGF2QmFzaWMwMTIzNDU2Nzg5"),
        pw_fp.clone(),
    ];
    assert_products(&run, &secrets, &in_audit, &[pw_fp]);
    // Each relayed flow kept its first bytes, redacted.
    let relayed = run
        .of_kind("tcp")
        .filter(|e| e["first_bytes_up"].is_string())
        .count();
    assert!(relayed >= 5, "{}", run.explain());
}

#[test]
fn command_lines_keep_only_fingerprints() {
    // `sh -c 'exit 0' ARGS…`: the shell ignores ARGS, the log records them.
    let args = [
        "sh",
        "-c",
        "exit 0",
        "curl",
        "-u",
        "alice:ArgvUserPw0123456789ab",
        "--password",
        "ArgvPassword0123456789ab",
        "--password=ArgvPasswordEq0123456789",
        "--token=ArgvTokenEq0123456789abc",
        "--api-key",
        "ArgvApiKey0123456789abcd",
        "-H",
        "Authorization: Basic QXJndkJhc2ljMDEyMzQ1Njc4OQ==",
        "https://bob:ArgvUrlPw0123456789abcd@example.com/",
        "mysql -uroot -pArgvMysqlPw0123456789ab db",
    ];
    let mut all = vec!["--offline", "--image", GUEST_IMAGE, "--"];
    all.extend(args);
    let run = idagent_run(&all);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let command: Vec<String> = run.events[0]["command"]
        .as_array()
        .expect("run_start.command")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect();
    let fp = |k: &str, s: &str| fingerprint(k, s);
    let want = [
        "sh".to_string(),
        "-c".into(),
        "exit 0".into(),
        "curl".into(),
        "-u".into(),
        format!("alice:{}", fp("userinfo", "ArgvUserPw0123456789ab")),
        "--password".into(),
        fp("password", "ArgvPassword0123456789ab"),
        format!("--password={}", fp("password", "ArgvPasswordEq0123456789")),
        format!("--token={}", fp("token", "ArgvTokenEq0123456789abc")),
        "--api-key".into(),
        fp("api-key", "ArgvApiKey0123456789abcd"),
        "-H".into(),
        format!(
            "Authorization: Basic {}",
            fp("basic", "QXJndkJhc2ljMDEyMzQ1Njc4OQ==")
        ),
        format!(
            "https://bob:{}@example.com/",
            fp("userinfo", "ArgvUrlPw0123456789abcd")
        ),
        format!(
            "mysql -uroot -p{} db",
            fp("password", "ArgvMysqlPw0123456789ab")
        ),
    ];
    assert_eq!(command, want);
    // The exec of `sh` records argv one argument at a time (the supervisor's
    // `redact_text`): the single-argument forms are redacted there too.
    let exec = run
        .of_kind("exec")
        .find(|e| e["argv"][0] == "sh")
        .expect("exec of sh");
    let argv = exec["argv"].to_string();
    for secret in [
        "ArgvPasswordEq0123456789",
        "ArgvTokenEq0123456789abc",
        "QXJndkJhc2ljMDEyMzQ1Njc4OQ==",
        "ArgvUrlPw0123456789abcd",
    ] {
        assert!(!argv.contains(secret), "{secret} in {argv}");
    }
    let report = std::fs::read_to_string(run.run_dir().join("report.html")).expect("report");
    assert!(report.contains(&fp("token", "ArgvTokenEq0123456789abc")));
}

/// Everything written to a pty by `idagent ARGS` until it exits, and its exit status.
fn through_pty(args: &[&str]) -> (Vec<u8>, i32) {
    let driver = r#"import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(driver)
        .arg(IDAGENT)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 pty driver");
    (out.stdout, out.status.code().unwrap_or(-1))
}

#[test]
fn guest_escape_sequences_never_reach_the_terminal() {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    // Title (OSC 0/2), clear screen, OSC 52 clipboard, a C1 CSI, BEL, DEL, CR; UTF-8 text
    // written a byte at a time so characters are cut across chunks.
    let guest = r#"printf '\033]0;pwned\007\033]2;t2\007\033[2J\033[H'; printf '\033]52;c;ZXZpbA==\007' >&2; printf '\302\2331m\177\r'; for b in '\303' '\251' '\346' '\227' '\245' '\n'; do printf "$b"; sleep 0.05; done; echo done"#;
    let (out, code) = through_pty(&[
        "--log",
        "off",
        "run",
        "--run-dir",
        run_dir.to_str().expect("utf-8"),
        "--offline",
        "--image",
        GUEST_IMAGE,
        "--",
        "sh",
        "-c",
        guest,
    ]);
    let shown = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{shown}");
    assert!(!out.contains(&0x1b), "ESC reached the terminal: {out:?}");
    assert!(!out.contains(&0x07) && !out.contains(&0x7f), "{out:?}");
    assert!(!shown.contains('\u{9b}'), "{out:?}");
    for visible in [
        "\\x1b]0;pwned\\x07",
        "\\x1b[2J",
        "\\x1b]52;c;ZXZpbA==\\x07",
        "\\u{9b}1m\\x7f\\x0d",
        "é日\r\n",
        "done",
    ] {
        assert!(shown.contains(visible), "{visible:?} not in {shown:?}");
    }
    // The log keeps what the guest wrote.
    let log = std::fs::read(run_dir.join("stdout.log")).expect("stdout.log");
    assert!(
        log.starts_with(b"\x1b]0;pwned\x07\x1b]2;t2\x07\x1b[2J"),
        "{log:?}"
    );
    assert!(
        log.ends_with("\u{9b}1m\x7f\ré日\ndone\n".as_bytes()),
        "{log:?}"
    );
    let err = std::fs::read(run_dir.join("stderr.log")).expect("stderr.log");
    assert_eq!(err, b"\x1b]52;c;ZXZpbA==\x07");
    let events = read_audit(&run_dir.join("audit.jsonl"));
    assert_no_leftovers(events[0]["run"].as_str().unwrap_or_default());
}

/// Waits (bounded) until the run's container is up (its `net_setup` record, written after the
/// container started) and returns the container's name (from `run_start`).
fn container_of(run_dir: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(run_dir.join("audit.jsonl")).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if events.iter().any(|e| e["kind"] == "net_setup") {
            return events[0]["container"]
                .as_str()
                .expect("container")
                .to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no net_setup: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn output_is_capped_with_one_notice_and_no_engine_copy() {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    let cap = 10_000;
    // The guest's go: a host listener it reaches as `go.test` and waits on, so the container
    // is inspected while it runs (and no fixed sleep decides when).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let go_addr = listener.local_addr().expect("addr");
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = go_rx.recv();
            let _ = conn.write_all(b"go");
        }
    });
    // 300,000 bytes of stdout (a bounded flood), 5,000 of stderr (under the cap); then wait
    // for the go.
    let guest = "head -c 300000 /dev/zero | tr '\\0' a; head -c 5000 /dev/zero | tr '\\0' b >&2; \
                 python3 -c \"import socket; s = socket.create_connection(('go.test', 80), timeout=60); s.sendall(b'ready'); s.recv(2)\"";
    let child = std::process::Command::new(IDAGENT)
        .args(["run", "--run-dir"])
        .arg(&run_dir)
        .args(["--offline", "--max-output-bytes", &cap.to_string()])
        .args(["--upstream-map", &format!("go.test:80={go_addr}")])
        .args(["--image", GUEST_IMAGE, "--", "sh", "-c", guest])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start idagent");
    let container = container_of(&run_dir);
    // The engine keeps no copy of the output.
    let inspect = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.HostConfig.LogConfig.Type}}",
            &container,
        ])
        .output()
        .expect("docker inspect");
    let _ = go_tx.send(());
    let out = child.wait_with_output().expect("wait idagent");
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "none",
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    let events = read_audit(&run_dir.join("audit.jsonl"));
    let run = Run { dir, out, events };
    check_audit_invariants(&run);
    assert_no_leftovers(&run.run_id());
    let log = std::fs::read(run.run_dir().join("stdout.log")).expect("stdout.log");
    assert_eq!(log.len(), cap, "stdout.log is capped");
    assert!(log.iter().all(|b| *b == b'a'));
    assert_eq!(run.out.stdout, log, "the terminal got what the log got");
    let err = std::fs::read(run.run_dir().join("stderr.log")).expect("stderr.log");
    assert_eq!(err, vec![b'b'; 5000], "stderr under its cap is whole");
    let caps: Vec<_> = run
        .of_kind("notice")
        .filter(|e| e["what"] == "output_cap")
        .collect();
    assert_eq!(caps.len(), 1, "{}", run.explain());
    assert!(caps[0]["detail"]
        .as_str()
        .is_some_and(|d| d.starts_with("stdout")));
    let dropped: Vec<_> = run
        .of_kind("notice")
        .filter(|e| e["what"] == "output_dropped")
        .collect();
    assert_eq!(dropped.len(), 1, "{}", run.explain());
    assert_eq!(
        dropped[0]["detail"],
        format!(
            "stdout: {} bytes dropped after the cap ({cap} kept)",
            300_000 - cap
        )
    );
}

#[test]
fn exec_argv_pairs_keep_only_fingerprints() {
    let run = idagent_run(&[
        "--offline",
        "--image",
        GUEST_IMAGE,
        "--",
        "sh",
        "-c",
        "exit 0",
        "--password",
        "ExecPairPw0123456789abcd",
        "-u",
        "alice:ExecPairUserPw0123456789",
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let exec = run
        .of_kind("exec")
        .find(|e| e["argv"][0] == "sh")
        .expect("exec of sh");
    let argv = exec["argv"].to_string();
    assert!(!argv.contains("ExecPairPw0123456789abcd"), "{argv}");
    assert!(!argv.contains("ExecPairUserPw0123456789"), "{argv}");
    assert!(argv.contains(&fingerprint("password", "ExecPairPw0123456789abcd")));
}

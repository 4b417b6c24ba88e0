//! Milestone 4 acceptance, end to end (real engine, kernel, TUN, TLS, Landlock; hermetic
//! fakes): run → `policy learn` → `policy check` → confined reruns, an attacker's guest under
//! the learned policy in enforce and report mode, learning across victims, determinism and
//! `diff`, and bad policy files. Judged by what a user sees: exit codes, the audit log, the
//! guest's own view of each refusal, files on disk.

mod common;
use common::*;
use idagent_fakes::{start_blocking, FakeServer, FakesHandle};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn fakes() -> (tempfile::TempDir, FakesHandle) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = start_blocking(dir.path()).expect("start fakes");
    (dir, fakes)
}

fn hermetic(fakes: &FakesHandle) -> Vec<String> {
    let mut args = vec!["--offline".to_owned()];
    args.extend(fakes.idagent_args());
    args
}

fn run_with(fakes: &FakesHandle, extra: &[String], target: &[&str]) -> Run {
    let mut args = hermetic(fakes);
    args.extend(extra.iter().cloned());
    args.extend(target.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    idagent_run(&refs)
}

/// Keeps a run folder after its `Run` is gone (the temp dirs are per run).
fn keep(run: &Run, into: &Path, name: &str) -> PathBuf {
    let dst = into.join(name);
    std::fs::create_dir_all(&dst).expect("mkdir");
    std::fs::copy(run.run_dir().join("audit.jsonl"), dst.join("audit.jsonl")).expect("copy log");
    dst
}

fn learn(runs: &[&Path], out: &Path) -> Output {
    let mut args = vec!["policy".to_owned(), "learn".to_owned()];
    args.extend(runs.iter().map(|p| p.display().to_string()));
    args.extend(["-o".to_owned(), out.display().to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    idagent(&refs)
}

fn decisions(run: &Run) -> Vec<&Value> {
    run.of_kind("decision").collect()
}

fn denies(run: &Run) -> Vec<&Value> {
    run.of_kind("decision")
        .filter(|d| d["verdict"] == "deny")
        .collect()
}

/// Each victim: learn from an unconfined run, check it, then five confined reruns behave like
/// the unconfined one with zero denials.
#[test]
fn each_victim_learns_checks_and_reruns_confined() {
    let (_d, fakes) = fakes();
    let keep_dir = tempfile::tempdir().expect("tempdir");
    for victim in ["python-scrape", "node-openai", "go-escape"] {
        let target = format!("victims/{victim}");
        let env = [
            "-e".to_owned(),
            "OPENAI_API_KEY=sk-idagent-e2e-0000POLICY".to_owned(),
        ];
        let first = run_with(&fakes, &env, &[&target]);
        let expected_code = first.code();
        let dir = keep(&first, keep_dir.path(), victim);
        let policy = keep_dir.path().join(format!("{victim}.yaml"));
        let out = learn(&[&dir], &policy);
        assert!(out.status.success(), "{victim}: {}", output_text(&out));
        let yaml = std::fs::read_to_string(&policy).expect("policy written");
        assert!(
            yaml.contains("version: 1") && yaml.contains("observation: complete"),
            "{yaml}"
        );
        let out = idagent(&[
            "policy",
            "check",
            &policy.display().to_string(),
            &dir.display().to_string(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{victim}: check\n{}",
            output_text(&out)
        );

        let mut extra = env.to_vec();
        extra.extend([
            "--policy".into(),
            policy.display().to_string(),
            "--mode".into(),
            "enforce".into(),
        ]);
        for i in 0..5 {
            let run = run_with(&fakes, &extra, &[&target]);
            assert_eq!(
                run.code(),
                expected_code,
                "{victim} rerun {i}\n{}",
                run.explain()
            );
            assert!(
                denies(&run).is_empty(),
                "{victim} rerun {i} denied\n{}",
                run.explain()
            );
            assert!(
                !decisions(&run).is_empty(),
                "{victim}: no decisions\n{}",
                run.explain()
            );
            match victim {
                "python-scrape" => {
                    let saved = std::fs::read(run.run_dir().join("workspace/google.html"))
                        .expect("google.html written under enforcement");
                    assert_eq!(saved, idagent_fakes::google_html());
                }
                "node-openai" => assert!(
                    run.of_kind("http").any(|e| e["method"] == "POST"
                        && e["url"] == "https://api.openai.com/v1/chat/completions"
                        && e["status"] == 200),
                    "{}",
                    run.explain()
                ),
                _ => {
                    let refused: Vec<&Value> = run
                        .of_kind("file")
                        .filter(|e| e["outcome"] == "denied")
                        .collect();
                    assert!(!refused.is_empty(), "{}", run.explain());
                    assert!(
                        refused.iter().all(|e| e["errno"] == "EROFS"),
                        "{}",
                        run.explain()
                    );
                }
            }
        }
    }
}

/// The attacker's script: each line tries one thing the python-scrape policy does not allow
/// and reports what the guest saw, as one JSON object.
const ATTACK: &str = r##"
import json, os, socket, subprocess, urllib.request, urllib.error
r = {}
def http(method, url):
    try:
        data = b"x" if method == "POST" else None
        with urllib.request.urlopen(urllib.request.Request(url, method=method, data=data), timeout=10) as resp:
            return [resp.status, resp.read(400).decode("utf-8", "replace")]
    except urllib.error.HTTPError as e:
        return [e.code, e.read(400).decode("utf-8", "replace")]
    except Exception as e:
        return ["error", type(e).__name__]
r["get_other"] = http("GET", "https://www.google.com/other")
r["post_root"] = http("POST", "https://www.google.com/")
def resolve(name):
    try:
        socket.getaddrinfo(name, 443)
        return "resolved"
    except socket.gaierror as e:
        return "gaierror"
r["openai"] = resolve("api.openai.com")
r["random"] = resolve("qz7x0k2m9v4w1c8r5t3y6u0pa1b2.google.com")
try:
    socket.create_connection(("192.0.2.10", 443), timeout=5).close()
    r["ip_literal"] = "connected"
except ConnectionRefusedError:
    r["ip_literal"] = "refused"
except Exception as e:
    r["ip_literal"] = type(e).__name__
try:
    os.mkdir("/tmp/workspace/.ssh")
    r["mkdir"] = "ok"
except OSError as e:
    r["mkdir"] = e.errno
r["system"] = os.system("id >/dev/null 2>&1")
script = "/tmp/workspace/run.sh"
with open(script, "w") as f:
    f.write("#!/bin/sh\nexit 0\n")
os.chmod(script, 0o755)
try:
    r["script"] = subprocess.run([script]).returncode
except PermissionError as e:
    r["script"] = e.errno
try:
    r["loader"] = subprocess.run(["/lib64/ld-linux-x86-64.so.2", "/bin/true"]).returncode
except OSError as e:
    r["loader"] = e.errno
with open("/tmp/workspace/draft.txt", "w") as f:
    f.write("draft")
try:
    os.rename("/tmp/workspace/draft.txt", "/tmp/workspace/final.txt")
    r["rename"] = "ok"
except OSError as e:
    r["rename"] = e.errno
try:
    os.symlink("/etc/passwd", "/tmp/workspace/link")
    r["symlink"] = "ok"
except OSError as e:
    r["symlink"] = e.errno
with open("/dev/shm/idagent-scratch", "w") as f:
    f.write("1")
r["shm"] = "ok"
import http.client, ssl
c = http.client.HTTPSConnection("www.google.com", context=ssl.create_default_context(), timeout=10)
c.request("GET", "/")
first = c.getresponse()
first.read()
c.request("GET", "/", headers={"Host": "api.openai.com"})
second = c.getresponse()
second.read()
r["misdirected"] = [first.status, second.status]
p = http.client.HTTPConnection("10.77.0.1", 5000, timeout=10)
p.request("CONNECT", "api.openai.com:443")
r["proxy_connect"] = p.getresponse().status
p.close()
c = http.client.HTTPSConnection("www.google.com", context=ssl.create_default_context(), timeout=10)
c.request("GET", "/%2e%2e/other")
dotdot = c.getresponse()
dotdot.read()
r["dotdot"] = dotdot.status
import time
raw = ssl.create_default_context().wrap_socket(socket.create_connection(("www.google.com", 443), timeout=10), server_hostname="www.google.com")
raw.sendall(b"GE")
time.sleep(0.8)
try:
    raw.sendall(b"T /other HTTP/1.1\r\nHost: www.google.com\r\nConnection: close\r\n\r\n")
    r["slow_request"] = "answered" if raw.recv(64) else "closed"
except (OSError, ssl.SSLError):
    r["slow_request"] = "closed"
fd = os.open("/lib64/ld-linux-x86-64.so.2", os.O_RDONLY)
try:
    r["loader_fd"] = subprocess.run(["/proc/self/fd/%d" % fd, "/bin/true"], pass_fds=[fd]).returncode
except OSError as e:
    r["loader_fd"] = e.errno
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
u.connect(("192.0.2.10", 9999))
try:
    u.send(b"ping")
    u.recv(16)
    r["udp"] = "answered"
except ConnectionRefusedError:
    r["udp"] = "refused"
except socket.timeout:
    r["udp"] = "timeout"
print("RESULT " + json.dumps(r, sort_keys=True))
"##;

/// A predicate over a `decision` event's `request` fields.
type RequestCheck = Box<dyn Fn(&Value) -> bool>;

fn has_decision(run: &Run, layer: &str, what: impl Fn(&Value) -> bool, would_deny: bool) -> bool {
    run.of_kind("decision").any(|d| {
        d["layer"] == layer
            && d["verdict"] == "deny"
            && d["would_deny"] == would_deny
            && d["rule"].as_str().is_some_and(|r| !r.is_empty())
            && what(&d["request"])
    })
}

#[test]
fn attacker_under_the_learned_policy_is_refused_in_enforce_and_only_recorded_in_report() {
    let (_d, fakes) = fakes();
    let keep_dir = tempfile::tempdir().expect("tempdir");
    let first = run_with(&fakes, &[], &["victims/python-scrape"]);
    assert_eq!(first.code(), Some(0), "{}", first.explain());
    let dir = keep(&first, keep_dir.path(), "scrape");
    let policy = keep_dir.path().join("scrape.yaml");
    assert!(learn(&[&dir], &policy).status.success());
    // A mapped IP literal the policy does not name: reachable without a policy.
    let google = fakes.addr(FakeServer::GoogleHttps);
    let mapped_ip = vec![
        "--upstream-map".to_owned(),
        format!("192.0.2.10:443={google}"),
    ];
    let cmd = ["--image", GUEST_IMAGE, "--", "python3", "-c", ATTACK];
    let bare = run_with(&fakes, &mapped_ip, &cmd);
    let unconfined = bare.result();
    assert_eq!(unconfined["ip_literal"], "connected", "{}", bare.explain());
    assert_eq!(unconfined["mkdir"], "ok");
    assert_eq!(unconfined["system"], 0);
    assert_eq!(unconfined["script"], 0);
    assert_eq!(unconfined["loader"], 0);
    assert_eq!(unconfined["misdirected"], serde_json::json!([200, 421]));
    assert_eq!(unconfined["proxy_connect"], 200);
    assert_eq!(unconfined["slow_request"], "answered", "{}", bare.explain());
    assert_eq!(unconfined["loader_fd"], 0);
    assert_eq!(unconfined["rename"], "ok");
    assert_eq!(unconfined["symlink"], "ok");

    let mut with_policy = mapped_ip.clone();
    with_policy.extend([
        "--policy".into(),
        policy.display().to_string(),
        "--mode".into(),
    ]);
    let mut enforce_args = with_policy.clone();
    enforce_args.push("enforce".into());
    let enforced = run_with(&fakes, &enforce_args, &cmd);
    let got = enforced.result();
    let explain = enforced.explain();
    assert_eq!(got["get_other"][0], 403, "{explain}");
    let body: Value = serde_json::from_str(got["get_other"][1].as_str().expect("body"))
        .unwrap_or_else(|e| panic!("403 body is not JSON ({e}): {got}"));
    assert_eq!(body["layer"], "http");
    assert!(body["rule"].is_string() && body["request"].as_str().unwrap_or("").contains("/other"));
    assert_eq!(got["post_root"][0], 403, "{explain}");
    assert_eq!(got["openai"], "gaierror", "{explain}");
    assert_eq!(got["random"], "gaierror", "{explain}");
    assert_eq!(got["ip_literal"], "refused", "{explain}");
    assert_eq!(got["mkdir"], 13, "{explain}");
    assert_ne!(got["system"], 0, "{explain}");
    assert_eq!(got["script"], 13, "{explain}");
    assert_eq!(got["udp"], "refused", "{explain}");
    // The dynamic loader run as a program: Landlock must let the loader execute, so that
    // route is refused at the syscall.
    assert_eq!(got["loader"], 13, "{explain}");
    // Scratch shared memory stays writable; a second Host on a keep-alive connection is 421
    // with or without a policy; the explicit proxy refuses CONNECT to a denied host with 403.
    assert_eq!(got["shm"], "ok", "{explain}");
    assert_eq!(
        got["misdirected"],
        serde_json::json!([200, 421]),
        "{explain}"
    );
    assert_eq!(got["proxy_connect"], 403, "{explain}");
    // A path that climbs out of what the rules name, bytes that are not HTTP to a host whose
    // rule wants to read HTTP, and the loader reached through a descriptor: all refused.
    assert_eq!(got["dotdot"], 403, "{explain}");
    assert_eq!(got["slow_request"], "closed", "{explain}");
    assert_eq!(got["loader_fd"], 13, "{explain}");
    // The policy lets the run create files in the workspace, not remove them (a rename
    // removes the old name) nor make symlinks: the kernel refuses both, and says so.
    assert_eq!(got["rename"], 13, "{explain}");
    assert_eq!(got["symlink"], 13, "{explain}");
    for (op, path) in [
        ("rename", "/tmp/workspace/final.txt"),
        ("create_special", "/tmp/workspace/link"),
    ] {
        assert!(
            has_decision(
                &enforced,
                "file",
                |r| r["op"] == op && r["path"] == path,
                false
            ),
            "no enforced {op} denial\n{explain}"
        );
    }
    // Everything the kernel refused in the workspace is on record as refused.
    for path in [
        "/tmp/workspace/.ssh",
        "/tmp/workspace/final.txt",
        "/tmp/workspace/link",
    ] {
        assert!(
            enforced
                .of_kind("file")
                .any(|e| e["path"] == path && e["errno"] == "EACCES"),
            "{path} not recorded as refused\n{explain}"
        );
    }
    assert!(
        enforced
            .of_kind("exec")
            .any(|e| e["path"] == "/usr/bin/python3" && e["real_path"] == "/usr/bin/python3.11"),
        "{explain}"
    );
    assert!(!enforced.run_dir().join("workspace/.ssh").exists());
    let checks: [(&str, RequestCheck); 11] = [
        (
            "http",
            Box::new(|r| r["method"] == "GET" && r["path"] == "/other"),
        ),
        (
            "http",
            Box::new(|r| r["method"] == "POST" && r["path"] == "/"),
        ),
        ("dns", Box::new(|r| r["name"] == "api.openai.com")),
        (
            "dns",
            Box::new(|r| r["name"] == "qz7x0k2m9v4w1c8r5t3y6u0pa1b2.google.com"),
        ),
        (
            "connect",
            Box::new(|r| r["addr"] == "192.0.2.10" && r["port"] == 443),
        ),
        (
            "file",
            Box::new(|r| r["path"] == "/tmp/workspace/.ssh" && r["op"] == "create_dir"),
        ),
        // Decided on what runs: /bin/sh is dash on this image.
        (
            "exec",
            Box::new(|r| r["path"] == "/bin/sh" || r["path"] == "/usr/bin/dash"),
        ),
        ("exec", Box::new(|r| r["path"] == "/tmp/workspace/run.sh")),
        (
            "datagram",
            Box::new(|r| r["addr"] == "192.0.2.10" && r["port"] == 9999),
        ),
        (
            "exec",
            Box::new(|r| r["path"].as_str().is_some_and(|p| p.contains("ld-linux"))),
        ),
        (
            "connect",
            Box::new(|r| r["name"] == "api.openai.com" && r["port"] == 443),
        ),
    ];
    for (layer, what) in &checks {
        assert!(
            has_decision(&enforced, layer, what, false),
            "no enforced {layer} denial\n{explain}"
        );
    }
    assert!(enforced
        .of_kind("decision")
        .filter(|d| d["verdict"] == "deny")
        .all(|d| d["mode"] == "enforce" && d["enforced_by"].is_string()));
    assert!(enforced
        .of_kind("file")
        .any(|e| e["path"] == "/tmp/workspace/.ssh"
            && e["outcome"] == "denied"
            && e["errno"] == "EACCES"));

    // Learning from the enforced run allows nothing the policy refused there.
    let enforced_dir = keep(&enforced, keep_dir.path(), "enforced");
    let relearned = keep_dir.path().join("relearned.yaml");
    let out = learn(&[&enforced_dir], &relearned);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not learned"),
        "{}",
        output_text(&out)
    );
    let yaml = std::fs::read_to_string(&relearned).expect("read");
    for refused in [
        "api.openai.com",
        "path: /other",
        "192.0.2.10",
        "/bin/sh",
        "/dev/shm",
    ] {
        assert!(
            !yaml.contains(refused),
            "learned {refused} from a refusal:\n{yaml}"
        );
    }

    // Report mode: the guest sees what it sees without a policy; every denial is recorded.
    let mut report_args = with_policy;
    report_args.push("report".into());
    let reported = run_with(&fakes, &report_args, &cmd);
    assert_eq!(reported.result(), unconfined, "{}", reported.explain());
    for (layer, what) in &checks {
        assert!(
            has_decision(&reported, layer, what, true),
            "no would-deny {layer} decision\n{}",
            reported.explain()
        );
    }
    assert!(reported
        .of_kind("decision")
        .all(|d| d["mode"] == "report" && d["enforced_by"].is_null()));
    // `idagent report` puts the denials first.
    let out = idagent(&["report", &enforced.run_dir().display().to_string()]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains("/other") && page.to_lowercase().contains("decision"),
        "{page}"
    );
}

#[test]
fn one_policy_from_two_victims_determinism_and_diff() {
    let (_d, fakes) = fakes();
    let keep_dir = tempfile::tempdir().expect("tempdir");
    let env = [
        "-e".to_owned(),
        "OPENAI_API_KEY=sk-idagent-e2e-0000POLICY".to_owned(),
    ];
    let s1 = keep(
        &run_with(&fakes, &[], &["victims/python-scrape"]),
        keep_dir.path(),
        "s1",
    );
    let s2 = keep(
        &run_with(&fakes, &[], &["victims/python-scrape"]),
        keep_dir.path(),
        "s2",
    );
    let n1 = keep(
        &run_with(&fakes, &env, &["victims/node-openai"]),
        keep_dir.path(),
        "n1",
    );
    let both = keep_dir.path().join("both.yaml");
    let again = keep_dir.path().join("again.yaml");
    assert!(learn(&[&s1, &n1], &both).status.success());
    assert!(learn(&[&s1, &n1], &again).status.success());
    let (a, b) = (
        std::fs::read(&both).expect("read"),
        std::fs::read(&again).expect("read"),
    );
    assert_eq!(a, b, "learn is not deterministic");
    for run in [&s1, &n1] {
        let out = idagent(&[
            "policy",
            "check",
            &both.display().to_string(),
            &run.display().to_string(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    }
    // A single-victim policy does not let the other victim through.
    let scrape_only = keep_dir.path().join("scrape.yaml");
    assert!(learn(&[&s1], &scrape_only).status.success());
    let out = idagent(&[
        "policy",
        "check",
        &scrape_only.display().to_string(),
        &n1.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("api.openai.com"),
        "{}",
        output_text(&out)
    );
    // Same victim twice: nothing new. Another victim: its host and path are new.
    let out = idagent(&["diff", &s1.display().to_string(), &s2.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let out = idagent(&[
        "diff",
        &s1.display().to_string(),
        &n1.display().to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let d: Value = serde_json::from_slice(&out.stdout).expect("diff json");
    let new: Vec<String> = d["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .flat_map(|k| k["new"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(
        new.iter()
            .any(|n| n.contains("api.openai.com") && n.contains("/v1/chat/completions")),
        "{new:?}"
    );
    let out = idagent(&["diff", &s1.display().to_string(), "/nonexistent/run"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{}",
        output_text(&out)
    );
}

#[test]
fn bad_policy_files_are_refused_with_file_line_col_before_any_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("unknown.yaml", "version: 1\nmode: enforce\nnetwork:\n  rules: []\n  colour: blue\n", 5),
        (
            "etc.yaml",
            "version: 1\nmode: enforce\nfiles:\n  rules:\n    - path: /etc/**\n      kind: dir\n      allow: [create_file]\n",
            5,
        ),
    ];
    for (name, yaml, line) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).expect("write");
        let p = path.display().to_string();
        let run_dir = dir.path().join(format!("run-{name}"));
        let rd = run_dir.display().to_string();
        let out = idagent(&[
            "run",
            "--run-dir",
            &rd,
            "--policy",
            &p,
            "--image",
            GUEST_IMAGE,
            "--",
            "true",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("{p}:{line}:")), "{name}: {err}");
        // Refused before anything was made: no run folder, so no container either.
        assert!(!run_dir.exists(), "{name}: the run started");
        let out = idagent(&["policy", "explain", &p]);
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    }
    // Method/path rules on HTTPS cannot be enforced on TLS the gateway does not open.
    let l7 = dir.path().join("l7.yaml");
    std::fs::write(
        &l7,
        "version: 1\nmode: enforce\nnetwork:\n  rules:\n    - host: www.google.com\n      port: 443\n      protocol: https\n      http:\n        - method: GET\n          path: /\n",
    )
    .expect("write");
    let run_dir = dir.path().join("run-l7");
    let out = idagent(&[
        "run",
        "--run-dir",
        &run_dir.display().to_string(),
        "--tls",
        "passthrough",
        "--policy",
        &l7.display().to_string(),
        "--image",
        GUEST_IMAGE,
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("passthrough"),
        "{}",
        output_text(&out)
    );
    // Default deny per section: an enforced policy without exec rules lets nothing start, and
    // says so before the run and in the record.
    let bare = dir.path().join("bare.yaml");
    std::fs::write(&bare, "version: 1\nmode: enforce\n").expect("write");
    let run = idagent_run(&[
        "--offline",
        "--policy",
        &bare.display().to_string(),
        "--image",
        GUEST_IMAGE,
        "--",
        "true",
    ]);
    assert_eq!(run.code(), Some(127), "{}", run.explain());
    assert!(run.stderr().contains("no exec rules"), "{}", run.explain());
    assert!(
        run.of_kind("decision").any(|d| d["layer"] == "exec"
            && d["verdict"] == "deny"
            && d["enforced_by"] == "landlock"),
        "{}",
        run.explain()
    );
    assert!(!run_dir.exists());
}

//! Issue 11's acceptance in the real topology: the three victims run in the Kubernetes pod
//! topology built with the Docker engine (holder, net-init with NET_ADMIN only, a proxy without
//! capabilities, the agent in its own pid namespace), against the fakes on an internal network
//! of their own, observed and then enforced — with the same assertions as the Docker mode:
//! requests logged and decrypted, writes outside the workspace refused, the policy enforced,
//! nothing reaching an unmapped address, nothing left behind.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const VICTIMS: [&str; 3] = ["python-scrape", "node-openai", "go-escape"];

/// `idagent audit --topology pod --run-root ROOT EXTRA...`: its exit code and output; the
/// network it made is gone afterwards.
fn audit(root: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let (pid, out) = output_with_pid(
        Command::new(IDAGENT)
            .args(["audit", "--topology", "pod", "--run-root"])
            .arg(root)
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    no_network_owned_by(pid);
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Runs `cmd` to its end with its output captured; its pid comes along (what it made is
/// labelled with it).
fn output_with_pid(cmd: &mut Command) -> (u32, std::process::Output) {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start idagent");
    let pid = child.id();
    (pid, child.wait_with_output().expect("wait for idagent"))
}

fn log(root: &Path, victim: &str) -> Vec<Value> {
    read_audit(&root.join(victim).join("audit.jsonl"))
}

fn kinds<'a>(events: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| e["kind"] == kind)
}

/// The invariants every run's log keeps, checked on a pod run: contiguous `seq`, `run_start`
/// first and `run_end` last, the observers said, the run's containers and network gone.
fn check_pod_log(events: &[Value], what: &str) {
    assert!(!events.is_empty(), "{what}: empty log");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1), "{what}: seq hole");
    }
    let start = &events[0];
    assert_eq!(start["kind"], "run_start", "{what}");
    assert!(
        start["container"]
            .as_str()
            .is_some_and(|c| c.starts_with("pod:")),
        "{what}: {start}"
    );
    let obs = &start["observation"];
    assert_eq!(obs["seccomp"], true, "{what}: {obs}");
    assert_eq!(obs["fswatch"], true, "{what}: {obs}");
    // Said, never silent: a pod is not the initial network namespace.
    assert_eq!(obs["proc_connector"], false, "{what}: {obs}");
    assert_eq!(obs["exits"], "init+seccomp", "{what}: {obs}");
    assert!(
        obs["missing"].as_array().is_some_and(|m| m
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.contains("proc connector")))),
        "{what}: {obs}"
    );
    let end = events.last().expect("last");
    assert_eq!(end["kind"], "run_end", "{what}");
    assert_eq!(end["reason"], "exited", "{what}: {end}");
    let run = start["run"].as_str().expect("run id");
    assert_no_leftovers(run);
    // Every exec of the run is recorded by the agent's own supervisor, the command's first.
    assert!(kinds(events, "exec").next().is_some(), "{what}: no exec");
    // Hermetic: every TCP flow that left idagent's stack went to a mapped fake.
    for tcp in kinds(events, "tcp").filter(|e| e["phase"] == "open") {
        let name = tcp["name"].as_str().unwrap_or_default();
        assert!(
            ["www.google.com", "api.openai.com"].contains(&name),
            "{what}: a flow to an unmapped destination: {tcp}"
        );
    }
}

/// `idagent policy learn RUNS... -o OUT`; returns OUT.
fn learn(runs: &[&Path], out: &Path) -> std::path::PathBuf {
    let st = Command::new(IDAGENT)
        .args(["policy", "learn"])
        .args(runs)
        .arg("-o")
        .arg(out)
        .status()
        .expect("policy learn");
    assert!(st.success());
    out.to_owned()
}

/// No network of run `run_id` (a pod run's relay network is named after it) is left; other
/// tests' runs may have theirs meanwhile.
fn no_network_of(run_id: &str) {
    let out = Command::new("docker")
        .args(["network", "ls", "--format", "{{.Name}}"])
        .output()
        .expect("docker network ls");
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        !names.lines().any(|n| n == format!("idagent-net-{run_id}")),
        "a pod network left behind: {names}"
    );
}

/// No network that an `idagent audit` run (process `pid`) made is left.
fn no_network_owned_by(pid: u32) {
    let out = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=idagent.owner-pid={pid}"),
        ])
        .output()
        .expect("docker network ls");
    assert!(
        out.stdout.is_empty(),
        "a network of process {pid} left behind"
    );
}

#[test]
fn the_three_victims_pass_in_the_pod_topology_observed_then_enforced() {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");

    // Observe.
    let observed = dir.path().join("observe");
    let (code, text) = audit(&observed, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("VERDICT: PASS"), "{text}");
    for v in VICTIMS {
        check_pod_log(&log(&observed, v), v);
    }
    // Requests logged and decrypted from the proxy's capture.
    let py = log(&observed, "python-scrape");
    assert!(kinds(&py, "http").any(|e| e["method"] == "GET"
        && e["url"] == "https://www.google.com/"
        && e["status"] == 200));
    assert_eq!(
        tshark(
            &observed.join("python-scrape/traffic.pcapng"),
            &["http.request.method", "http.request.full_uri"],
            "http.request"
        ),
        ["GET https://www.google.com/"]
    );
    // The page written in the agent's workspace is recorded with its hash.
    assert!(
        kinds(&py, "file").any(|e| e["path"] == "/tmp/workspace/google.html"
            && e["outcome"] == "ok"
            && e["sha256"] == sha256_hex(idagent_fakes::google_html()))
    );
    let node = log(&observed, "node-openai");
    let post = kinds(&node, "http")
        .find(|e| e["method"] == "POST" && e["url"] == "https://api.openai.com/v1/chat/completions")
        .expect("the OpenAI call");
    assert_eq!(post["status"], 200);
    // Writes outside the workspace refused by the kernel (read-only root), and logged.
    let go = log(&observed, "go-escape");
    for path in [
        "/etc/idagent-escape",
        "/usr/local/bin/idagent-escape",
        "/idagent-escape",
    ] {
        assert!(
            kinds(&go, "file")
                .any(|e| e["path"] == path && e["outcome"] == "denied" && e["errno"] == "EROFS"),
            "{path} not denied"
        );
        assert!(!Path::new(path).exists(), "{path} on the host");
    }

    // Learn over the pod runs, then enforce: the victims do only what they did, so they pass,
    // and every decision is an allow.
    let policy = learn(&[&observed], &dir.path().join("policy.yaml"));
    let enforced = dir.path().join("enforce");
    let p = policy.to_str().expect("utf-8 path");
    let (code, text) = audit(&enforced, &["--policy", p, "--mode", "enforce"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("VERDICT: PASS"), "{text}");
    for v in VICTIMS {
        let events = log(&enforced, v);
        check_pod_log(&events, v);
        assert_eq!(events[0]["observation"]["landlock"], true, "{v}");
        let decisions: Vec<&Value> = kinds(&events, "decision").collect();
        assert!(!decisions.is_empty(), "{v}: no decision recorded");
        for d in decisions {
            assert_eq!(d["verdict"], "allow", "{v}: {d}");
        }
    }

    // A policy learned without the Python run: its exec is refused by Landlock in the agent
    // (the kernel, not a check of ours), and nothing of it reaches the fake.
    let narrow = learn(
        &[&observed.join("node-openai"), &observed.join("go-escape")],
        &dir.path().join("narrow.yaml"),
    );
    let refused = dir.path().join("narrow");
    let n = narrow.to_str().expect("utf-8 path");
    let (code, text) = audit(&refused, &["--policy", n, "--mode", "enforce"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("python-scrape — FAIL"), "{text}");
    let py = log(&refused, "python-scrape");
    check_pod_log(&py, "python-scrape (narrow)");
    assert!(
        kinds(&py, "decision").any(|d| d["layer"] == "exec" && d["verdict"] == "deny"),
        "no exec denial"
    );
    assert!(
        kinds(&py, "exec").any(|e| e["error"] == "EACCES"),
        "the refused exec is not recorded"
    );
    assert!(kinds(&py, "http").next().is_none(), "python ran anyway");
    // The other two still pass under it.
    for v in ["node-openai", "go-escape"] {
        assert!(text.contains(&format!("{v} — PASS")), "{text}");
    }
}

#[test]
fn a_pod_run_that_cannot_start_says_why_in_one_line_and_leaves_nothing() {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    // A network that does not exist: the holder cannot be created.
    let (owner, out) = output_with_pid(
        Command::new(IDAGENT)
            .args([
                "run",
                "--topology",
                "pod",
                "--pod-network",
                "idagent-no-such-network",
                "--offline",
                "--run-dir",
            ])
            .arg(dir.path().join("run"))
            .args(["--image", GUEST_IMAGE, "--", "true"]),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("idagent: error:") && last.contains("idagent-no-such-network"),
        "{err}"
    );
    // Nothing of that run (other tests' pods may be running meanwhile: only its owner's).
    let ps = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=idagent.owner-pid={owner}"),
        ])
        .output()
        .expect("docker ps");
    assert!(ps.stdout.is_empty(), "pod containers left behind");
    // The same with the workspace seeded: refused before anything exists.
    let out = Command::new(IDAGENT)
        .args(["run", "--topology", "pod", "--offline", "--workspace"])
        .arg(dir.path())
        .args(["--image", GUEST_IMAGE, "--", "true"])
        .output()
        .expect("idagent run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workspace"));
    // An upstream on the host's loopback, with a pod network of the user's: a pod does not
    // share the host's loopback; said, not timed out. (Without --pod-network it is relayed:
    // see the next test.)
    let out = Command::new(IDAGENT)
        .args([
            "run",
            "--topology",
            "pod",
            "--pod-network",
            "idagent-test-user-network",
            "--offline",
            "--upstream-map",
            "www.google.com:443=127.0.0.1:9",
            "--image",
            GUEST_IMAGE,
            "--",
            "true",
        ])
        .output()
        .expect("idagent run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback") && err.contains("--pod-network"),
        "{err}"
    );
}

/// The Docker mode's way to reach fakes — on the host's loopback, through the upstream map —
/// works in the pod topology too: the map's loopback targets are relayed from a network of
/// the run's own, which the pod's real interface is on, and the agent still cannot reach them
/// itself.
#[test]
fn fakes_on_the_hosts_loopback_serve_a_pod_run_through_its_proxy() {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = idagent_fakes::start_blocking(dir.path()).expect("fakes");
    let google = fakes.addr(idagent_fakes::FakeServer::GoogleHttps);
    let mut args: Vec<String> = ["--topology", "pod", "--offline"]
        .map(str::to_owned)
        .to_vec();
    args.extend(fakes.idagent_args());
    args.push("victims/python-scrape".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = idagent_run(&refs);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    check_audit_invariants(&run);
    assert!(run
        .of_kind("http")
        .any(|e| e["url"] == "https://www.google.com/" && e["status"] == 200));
    assert_eq!(
        fakes
            .requests_to(idagent_fakes::FakeServer::GoogleHttps)
            .len(),
        1,
        "the fake saw the one request, through the proxy"
    );
    assert_no_leftovers(&run.run_id());
    no_network_of(&run.run_id());
    // The agent dialling the fake's host address itself dials its pod's own loopback, where
    // nothing listens: the host's stays out of reach.
    let probe = format!(
        "import socket\ns = socket.socket()\ns.settimeout(3)\ntry:\n    s.connect(('{}', {}))\n    s.send(b'x')\n    print('RESULT %r' % repr(s.recv(20)))\nexcept Exception as e:\n    print('RESULT %r' % repr(e))\n",
        google.ip(),
        google.port()
    );
    let mut args: Vec<String> = ["--topology", "pod", "--offline"]
        .map(str::to_owned)
        .to_vec();
    args.extend(fakes.idagent_args());
    args.extend(["--image", GUEST_IMAGE, "--", "python3", "-c", &probe].map(str::to_owned));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = idagent_run(&refs);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert_eq!(
        fakes
            .requests_to(idagent_fakes::FakeServer::GoogleHttps)
            .len(),
        1,
        "the agent reached the fake by itself"
    );
    assert!(
        run.stdout().contains("Connection refused"),
        "{}",
        run.explain()
    );
    assert_no_leftovers(&run.run_id());
    no_network_of(&run.run_id());
}

#[test]
fn a_pod_run_past_its_timeout_is_stopped_and_says_so() {
    ensure_image();
    let run = idagent_run(&[
        "--topology",
        "pod",
        "--offline",
        "--timeout",
        "3",
        "--image",
        GUEST_IMAGE,
        "--",
        "sh",
        "-c",
        "echo started; sleep 60",
    ]);
    assert_eq!(run.code(), Some(124), "{}", run.explain());
    check_audit_invariants(&run);
    let end = run.events.last().expect("run_end");
    assert_eq!(end["reason"], "timeout", "{}", run.explain());
    assert!(run.stdout().contains("started"));
    assert_no_leftovers(&run.run_id());
}

/// Killing `idagent run --topology pod` is killing the kubelet, not the pod: the proxy keeps
/// observing, the agent finishes, the log is complete; `idagent gc` then removes what the dead
/// orchestrator left (containers, control folder).
#[test]
fn a_killed_pod_orchestrator_leaves_a_complete_log_and_gc_reaps_the_rest() {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    let mut child = Command::new(IDAGENT)
        .args(["run", "--topology", "pod", "--offline", "--run-dir"])
        .arg(&run_dir)
        .args([
            "--image",
            GUEST_IMAGE,
            "--",
            "sh",
            "-c",
            "sleep 4; echo done > /tmp/workspace/after",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start idagent");
    // Wait for the agent to be running, then kill the orchestrator.
    let started = std::time::Instant::now();
    loop {
        let out = Command::new("docker")
            .args(["ps", "-q", "--filter", "label=idagent.pod-role=agent"])
            .output()
            .expect("docker ps");
        if !out.stdout.is_empty() && run_dir.join("audit.jsonl").is_file() {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "the pod never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL idagent");
    child.wait().expect("reap");
    let audit = run_dir.join("audit.jsonl");
    // The proxy finishes the run by itself once the agent is done.
    let started = std::time::Instant::now();
    let events = loop {
        let events = read_audit(&audit);
        if events.last().is_some_and(|e| e["kind"] == "run_end") {
            break events;
        }
        assert!(started.elapsed().as_secs() < 60, "no run_end: {events:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1));
    }
    assert_eq!(events.last().expect("end")["reason"], "exited");
    assert!(kinds(&events, "file").any(|e| e["path"] == "/tmp/workspace/after"));
    let run_id = events[0]["run"].as_str().expect("run id").to_owned();
    // gc keeps the pod while its agent or proxy still runs (the proxy writes report.html after
    // run_end); once both are done it is a leftover.
    let started = std::time::Instant::now();
    loop {
        let out = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=idagent.run={run_id}"),
            ])
            .args(["--filter", "status=running"])
            .output()
            .expect("docker ps");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let running = String::from_utf8_lossy(&out.stdout).lines().count();
        // The holder (pause) runs until removed; the proxy and the agent end by themselves.
        if running <= 1 {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "the pod never finished");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let gc = Command::new(IDAGENT)
        .arg("gc")
        .output()
        .expect("idagent gc");
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert_no_leftovers(&run_id);
}

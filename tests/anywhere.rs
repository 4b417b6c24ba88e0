//! idagent where its users run it: inside a network namespace that is not the initial one (a
//! CI job in a container, a Kubernetes pod), where the kernel's proc connector does not
//! answer. The test makes the namespace itself; the three victims pass `idagent audit` from
//! inside it, and every run says which observers it had.

mod common;
use common::*;
use std::process::Command;

/// A network namespace made (and removed) by the test, loopback up for the local fakes.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("idagent-test-{}-{n}", std::process::id());
        let ok = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip");
            assert!(st.success(), "ip {args:?}");
        };
        ok(&["netns", "add", &name]);
        ok(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn the_victims_pass_the_audit_from_a_non_initial_network_namespace() {
    ensure_image();
    let ns = Netns::new();
    let root = tempfile::tempdir().expect("tempdir");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(IDAGENT)
        .args(["audit", "--run-root"])
        .arg(root.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("idagent audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("VERDICT: PASS"), "{stdout}");
    for victim in ["python-scrape", "node-openai", "go-escape"] {
        let events = read_audit(&root.path().join(victim).join("audit.jsonl"));
        let start = &events[0];
        assert_eq!(start["kind"], "run_start");
        let obs = &start["observation"];
        assert_eq!(obs["proc_connector"], false, "{victim}: {obs}");
        assert_eq!(obs["exits"], "init+seccomp", "{victim}: {obs}");
        assert!(
            obs["missing"].as_array().is_some_and(|m| m
                .iter()
                .any(|s| s.as_str().unwrap_or("").contains("proc connector"))),
            "{victim}: what is missing is said: {obs}"
        );
        let end = events.last().expect("end");
        assert_eq!(end["kind"], "run_end");
        assert_eq!(end["observation"], *obs, "{victim}: run_end repeats it");
        // The command's exit still has a record, from init.
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "exit" && e["source"] == "init" && e["code"] == 0),
            "{victim}: no exit record from init"
        );
        assert_no_leftovers(start["run"].as_str().expect("run"));
    }
}

#[test]
fn in_the_initial_namespace_the_proc_connector_is_used_and_said() {
    let run = idagent_run(&["--offline", "--image", GUEST_IMAGE, "--", "true"]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let obs = &run.events[0]["observation"];
    assert_eq!(obs["proc_connector"], true, "{obs}");
    assert_eq!(obs["exits"], "proc_connector");
    assert_eq!(obs["seccomp"], true);
    assert_eq!(obs["fswatch"], true);
    assert_eq!(obs["missing"], serde_json::json!([]));
}

#[test]
fn without_the_proc_connector_exits_and_execs_still_have_records() {
    ensure_image();
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(IDAGENT)
        .arg("run")
        .arg("--run-dir")
        .arg(&run_dir)
        .args([
            "--offline",
            "--image",
            GUEST_IMAGE,
            "--",
            "sh",
            "-c",
            // A grandchild exits 3 (reaped by its parent, seen by seccomp); an orphan killed by
            // a signal is reaped by init.
            "sh -c 'exit 3'; (sleep 30 & echo $! > /tmp/workspace/pid) ; kill -9 $(cat /tmp/workspace/pid); sleep 0.3; exit 5",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("idagent run");
    let events = read_audit(&run_dir.join("audit.jsonl"));
    let run = Run { dir, out, events };
    check_audit_invariants(&run);
    assert_no_leftovers(&run.run_id());
    assert_eq!(run.code(), Some(5), "{}", run.explain());
    let exits: Vec<_> = run.of_kind("exit").collect();
    assert!(
        exits
            .iter()
            .any(|e| e["source"] == "seccomp" && e["code"] == 3),
        "the grandchild's exit_group\n{}",
        run.explain()
    );
    assert!(
        exits
            .iter()
            .any(|e| e["source"] == "init" && e["signal"] == 9),
        "the killed orphan, reaped by init\n{}",
        run.explain()
    );
    assert!(
        exits
            .iter()
            .any(|e| e["source"] == "init" && e["code"] == 5),
        "the command itself\n{}",
        run.explain()
    );
    assert!(
        run.of_kind("exec_ran")
            .any(|e| e["source"] == "seccomp" && e["ran"] == "/usr/bin/sleep"),
        "execs are confirmed by the supervisor alone\n{}",
        run.explain()
    );
}

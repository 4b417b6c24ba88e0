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
        let name = format!("idagent-test-{}", std::process::id());
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

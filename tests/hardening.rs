//! The guest against its own sandbox (first part of the hardening work): it cannot
//! ptrace-stop or read its PID 1, and what a run leaves on the host is readable by its owner
//! only. Real engine, real kernel; judged by what the guest sees and the files' modes.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

const PROBE: &str = r#"
import ctypes, json
r = {}
try:
    open("/proc/1/environ").read()
    r["environ"] = "read"
except PermissionError:
    r["environ"] = "denied"
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.ptrace(16, 1, 0, 0)  # PTRACE_ATTACH to the guest's init
r["ptrace"] = [rc, ctypes.get_errno()]
print("RESULT " + json.dumps(r))
"#;

#[test]
fn the_guest_cannot_touch_its_init_and_the_run_folder_is_private() {
    cannot_touch_init(&[]);
}

/// The same in the pod topology: the agent's init (which also runs its observers) is as
/// untouchable, and the proxy writes the run folder as privately.
#[test]
fn in_a_pod_the_guest_cannot_touch_its_init_and_the_run_folder_is_private() {
    cannot_touch_init(&["--topology", "pod"]);
}

fn cannot_touch_init(extra: &[&str]) {
    let run = offline_python(extra, PROBE);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let got = run.result();
    assert_eq!(got["environ"], "denied", "{}", run.explain());
    assert_eq!(
        got["ptrace"],
        serde_json::json!([-1, libc::EPERM]),
        "{}",
        run.explain()
    );

    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let dir = run.run_dir();
    assert_eq!(mode(&dir), 0o700, "run folder");
    for file in [
        "audit.jsonl",
        "report.html",
        "stdout.log",
        "stderr.log",
        "traffic.pcapng",
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
}

const PING: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
s.settimeout(1)
s.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x01idagent", ("192.0.2.1", 0))
try:
    s.recv(100)
    print("RESULT answered")
except socket.timeout:
    print("RESULT unanswered")
s.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x02idagent", ("10.77.0.1", 0))
s.recv(100)
"#;

/// A ping to anything but the gateway goes nowhere and is on record (the stack drops it before
/// any flow exists, so the record comes from the stack's typed drop reason).
#[test]
fn pings_beyond_the_gateway_are_dropped_and_recorded() {
    pings_dropped(&[]);
}

#[test]
fn in_a_pod_pings_beyond_the_gateway_are_dropped_and_recorded() {
    pings_dropped(&["--topology", "pod"]);
}

fn pings_dropped(extra: &[&str]) {
    let run = offline_python(extra, PING);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert!(
        run.stdout().contains("RESULT unanswered"),
        "{}",
        run.explain()
    );
    let blocked: Vec<_> = run
        .of_kind("blocked")
        .filter(|e| e["what"] == "icmp")
        .collect();
    assert_eq!(blocked.len(), 1, "{}", run.explain());
    assert_eq!(blocked[0]["target"], "192.0.2.1");
}

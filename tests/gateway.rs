//! The standalone gateway, in the topology of the original brief: in a network namespace this
//! test creates, an iptables REDIRECT rule sends a client's connections to `idagent gateway`,
//! which logs the original destination and serves the request from a local fake upstream.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A network namespace and the processes started in it; all removed on drop.
struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Netns {
    fn new() -> Self {
        let name = format!("idagent-gwtest-{}", std::process::id());
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.sh(&format!("ip netns add {}", ns.name));
        for cmd in [
            "ip link set lo up",
            // A route for the fake "internet" range, on a veth pair that exists only here.
            "ip link add v0 type veth peer name v1",
            "ip addr add 203.0.113.1/24 dev v0",
            "ip link set v0 up",
            "ip link set v1 up",
            "iptables -t nat -A OUTPUT -p tcp -d 203.0.113.0/24 -j REDIRECT --to-ports 5000",
        ] {
            ns.sh(&format!("ip netns exec {} {cmd}", ns.name));
        }
        ns
    }

    fn sh(&self, cmd: &str) {
        let st = Command::new("sh").args(["-c", cmd]).status().expect("sh");
        assert!(st.success(), "{cmd} failed");
    }

    fn spawn(&mut self, argv: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in netns");
        self.children.push(child);
    }

    fn output(&self, argv: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("run in netns")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn redirected_connections_are_logged_with_their_original_destination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let www = dir.path().join("www");
    std::fs::create_dir(&www).expect("www");
    std::fs::write(www.join("hello.txt"), b"hello through the gateway\n").expect("file");
    let run_dir = dir.path().join("run");
    let mut ns = Netns::new();
    ns.spawn(&[
        "python3",
        "-m",
        "http.server",
        "8080",
        "--bind",
        "127.0.0.1",
        "--directory",
        www.to_str().expect("path"),
    ]);
    ns.spawn(&[
        IDAGENT,
        "gateway",
        "--listen",
        "0.0.0.0:5000",
        "--offline",
        "--upstream-map",
        "203.0.113.10:80=127.0.0.1:8080",
        "--run-dir",
        run_dir.to_str().expect("path"),
        "--timeout",
        "60",
    ]);
    // Retry until both servers listen (bounded).
    let started = Instant::now();
    let out = loop {
        let out = ns.output(&["curl", "-sf", "-m", "5", "http://203.0.113.10/hello.txt"]);
        if out.status.success() || started.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello through the gateway\n");
    // An unmapped destination is refused and logged; nothing leaves the namespace.
    let refused = ns.output(&[
        "curl",
        "-s",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://203.0.113.99/",
    ]);
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "502");
    drop(ns); // SIGTERM the gateway: it writes run_end.
    let events = read_audit(&run_dir.join("audit.jsonl"));
    let explain = || {
        events
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        events.last().map(|e| e["kind"].clone()),
        Some("run_end".into()),
        "{}",
        explain()
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1));
    }
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "tcp" && e["phase"] == "open" && e["dst"] == "203.0.113.10:80"),
        "{}",
        explain()
    );
    let http = events
        .iter()
        .find(|e| e["kind"] == "http" && e["status"] == 200)
        .unwrap_or_else(|| panic!("no http event\n{}", explain()));
    assert_eq!(http["url"], "http://203.0.113.10/hello.txt");
    assert_eq!(http["method"], "GET");
    assert_eq!(http["resp_bytes"], 26);
    assert_eq!(
        http["resp_sha256"],
        sha256_hex(b"hello through the gateway\n")
    );
    assert!(
        events.iter().any(|e| e["kind"] == "tcp"
            && e["phase"] == "close"
            && e["upstream"] == "127.0.0.1:8080"),
        "{}",
        explain()
    );
    assert!(
        events.iter().any(|e| e["kind"] == "blocked"
            && e["target"]
                .as_str()
                .is_some_and(|t| t.contains("203.0.113.99"))),
        "{}",
        explain()
    );
}

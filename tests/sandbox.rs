//! Milestone 1 acceptance: real guests in real containers, judged by the audit log, the exit
//! code and the files on disk.

mod common;
use common::*;
use serde_json::Value;

fn denied_paths(run: &Run) -> Vec<(String, String)> {
    run.of_kind("file")
        .filter(|e| e["outcome"] == "denied")
        .map(|e| {
            (
                e["path"].as_str().unwrap_or_default().to_owned(),
                e["errno"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

const OUTSIDE: [&str; 4] = ["/etc/x", "/usr/x", "/x", "/tmp/x"];

#[test]
fn python_writes_inside_workspace_and_is_refused_outside() {
    let script = r#"
import errno, json
with open('/tmp/workspace/x', 'w') as f:
    f.write('hello from python\n')
res = {}
for p in ['/etc/x', '/usr/x', '/x', '/tmp/x']:
    try:
        with open(p, 'w') as f:
            f.write('escape')
        res[p] = 'ok'
    except OSError as e:
        res[p] = errno.errorcode[e.errno]
print(json.dumps(res))
"#;
    let run = idagent_run(&["--image", GUEST_IMAGE, "--", "python3", "-c", script]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let res: Value = serde_json::from_str(run.stdout().trim()).expect("guest printed JSON");
    for p in OUTSIDE {
        assert_eq!(res[p], "EROFS", "guest saw {p}: {}", res[p]);
    }
    // The write inside is logged with the hash of its final content and the writer.
    let data = b"hello from python\n";
    let created = run
        .of_kind("file")
        .find(|e| e["path"] == "/tmp/workspace/x" && e["outcome"] == "ok")
        .unwrap_or_else(|| panic!("no workspace event\n{}", run.explain()));
    assert_eq!(created["op"], "create");
    assert_eq!(created["size"], data.len());
    assert_eq!(created["sha256"], sha256_hex(data));
    assert!(
        created["exe"]
            .as_str()
            .is_some_and(|e| e.contains("python")),
        "{created}"
    );
    assert_eq!(
        std::fs::read(run.run_dir().join("workspace/x")).expect("workspace kept"),
        data
    );
    // Each attempt outside is logged as denied with EROFS.
    let denied = denied_paths(&run);
    for p in OUTSIDE {
        assert!(
            denied.contains(&(p.to_owned(), "EROFS".to_owned())),
            "{p} not logged as denied\n{}",
            run.explain()
        );
    }
    // The exec of the command and its exit are in the log.
    assert!(
        run.of_kind("exec")
            .any(|e| e["argv"][0] == "python3" && e["argv"][1] == "-c"),
        "{}",
        run.explain()
    );
    assert!(
        run.of_kind("exit").any(|e| e["code"] == 0),
        "{}",
        run.explain()
    );
    let end = run.events.last().expect("run_end");
    assert_eq!(end["exit_code"], 0);
    assert_eq!(end["reason"], "exited");
}

#[test]
fn static_go_binary_is_refused_outside_workspace() {
    let run = idagent_run(&["victims/go-escape"]);
    assert_eq!(
        run.code(),
        Some(0),
        "go-escape reports an escape\n{}",
        run.explain()
    );
    let denied = denied_paths(&run);
    for p in [
        "/etc/idagent-escape",
        "/usr/local/bin/idagent-escape",
        "/idagent-escape",
    ] {
        assert!(
            denied.contains(&(p.to_owned(), "EROFS".to_owned())),
            "{p} not logged as denied\n{}",
            run.explain()
        );
        assert!(!std::path::Path::new(p).exists(), "{p} exists on the host");
    }
    assert!(
        run.of_kind("file")
            .any(|e| e["path"] == "/tmp/workspace/go-escape.txt"
                && e["outcome"] == "ok"
                && e["sha256"].is_string()),
        "{}",
        run.explain()
    );
    // Statically linked: no dynamic loader, so this is seccomp's doing, not LD_PRELOAD's.
    assert!(run
        .of_kind("exec")
        .any(|e| e["path"].as_str().is_some_and(|p| p.ends_with("go-escape"))));
    // Nothing persisted in the image either.
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            GUEST_IMAGE,
            "ls",
            "/etc/idagent-escape",
            "/idagent-escape",
        ])
        .output()
        .expect("docker run");
    assert!(!out.status.success(), "escape files exist in the image");
}

#[test]
fn only_the_workspace_and_documented_scratch_mounts_are_writable() {
    let script = r#"
for line in open('/proc/self/mountinfo'):
    f = line.split()
    sep = f.index('-')
    opts = f[5].split(',') + f[sep + 3].split(',')
    if 'rw' in f[5].split(','):
        print(f[4], f[sep + 1])
"#;
    let run = idagent_run(&["--image", GUEST_IMAGE, "--", "python3", "-c", script]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let mut writable: Vec<(String, String)> = run
        .stdout()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    writable.sort();
    // Non-persistent kernel or tmpfs mounts (documented in README "What the guest can write").
    // Docker's masks over sensitive /proc files are its /dev/null, bind-mounted from tmpfs.
    let allowed_scratch = [
        ("/dev", "tmpfs"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/dev/pts", "devpts"),
        ("/proc", "proc"),
        ("/sys/fs/cgroup", "tmpfs"),
    ];
    for (mount, fstype) in &writable {
        let ok = mount == "/tmp/workspace"
            || allowed_scratch.contains(&(mount.as_str(), fstype.as_str()))
            || (mount.starts_with("/proc/") && fstype == "tmpfs");
        assert!(
            ok,
            "unexpected writable mount {mount} ({fstype})\n{}",
            run.explain()
        );
    }
    assert!(
        writable.iter().any(|(m, _)| m == "/tmp/workspace"),
        "{}",
        run.explain()
    );
}

#[test]
fn network_is_sealed() {
    // A server on the host's loopback: the guest must not reach it.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    server.set_nonblocking(true).expect("nonblocking");
    let script = format!(
        r#"
import socket, subprocess, json
res = {{}}
res['routes4'] = subprocess.run(['ip', '-4', 'route', 'show', 'default'], capture_output=True, text=True).stdout.strip()
res['routes6'] = subprocess.run(['ip', '-6', 'route', 'show', 'default'], capture_output=True, text=True).stdout.strip()
res['links'] = subprocess.run(['ip', '-o', 'link'], capture_output=True, text=True).stdout
s = socket.socket(); s.settimeout(3)
try:
    s.connect(('127.0.0.1', {port})); res['host_loopback'] = 'connected'
except OSError as e:
    res['host_loopback'] = type(e).__name__
res['iptables_flush'] = subprocess.run(['iptables', '-F'], capture_output=True).returncode
res['ip6tables_flush'] = subprocess.run(['ip6tables', '-F'], capture_output=True).returncode
res['route_add'] = subprocess.run(['ip', 'route', 'add', '1.2.3.0/24', 'dev', 'lo'], capture_output=True).returncode
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); res['raw'] = 'opened'
except OSError as e:
    res['raw'] = type(e).__name__
res['unshare_net'] = subprocess.run(['unshare', '-n', 'true'], capture_output=True).returncode
res['unshare_user_net'] = subprocess.run(['unshare', '-Urn', 'true'], capture_output=True).returncode
print(json.dumps(res))
"#
    );
    let run = idagent_run(&["--image", GUEST_IMAGE, "--", "python3", "-c", &script]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert!(
        server.accept().is_err(),
        "the host's loopback server was reached"
    );
    let res: Value = serde_json::from_str(run.stdout().trim()).expect("guest printed JSON");
    let r4 = res["routes4"].as_str().unwrap_or_default();
    let r6 = res["routes6"].as_str().unwrap_or_default();
    assert!(
        r4.lines().count() == 1 && r4.contains("dev tun0"),
        "v4 default routes: {r4}"
    );
    assert!(
        r6.lines().count() == 1 && r6.contains("dev tun0"),
        "v6 default routes: {r6}"
    );
    let links = res["links"].as_str().unwrap_or_default();
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo", "tun0"], "interfaces in the guest: {links}");
    assert_ne!(res["host_loopback"], "connected");
    assert_ne!(res["iptables_flush"], 0, "iptables -F worked in the guest");
    assert_ne!(
        res["ip6tables_flush"], 0,
        "ip6tables -F worked in the guest"
    );
    assert_ne!(res["route_add"], 0, "the guest changed its routes");
    assert_eq!(res["raw"], "PermissionError");
    assert_ne!(res["unshare_net"], 0, "unshare -n worked in the guest");
    assert_ne!(
        res["unshare_user_net"], 0,
        "unshare -Urn worked in the guest"
    );
    let setup = run
        .of_kind("net_setup")
        .next()
        .unwrap_or_else(|| panic!("no net_setup\n{}", run.explain()));
    assert_eq!(setup["tun"], "tun0");
}

#[test]
fn unreachable_docker_is_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("nothing-here.sock");
    let out = std::process::Command::new(IDAGENT)
        .args([
            "--docker-host",
            &format!("unix://{}", sock.display()),
            "run",
            "--image",
            GUEST_IMAGE,
            "--",
            "true",
        ])
        .output()
        .expect("start idagent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "more than one line: {err}"
    );
    assert!(
        err.contains(&sock.display().to_string()),
        "socket not named: {err}"
    );
}

#[test]
fn bad_target_is_exit_2_with_a_hint() {
    let out = std::process::Command::new(IDAGENT)
        .args(["run", "/nonexistent/victim"])
        .output()
        .expect("start idagent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("/nonexistent/victim") && err.contains("hint"),
        "{err}"
    );
}

#[test]
fn guest_exit_code_is_idagent_exit_code() {
    let run = idagent_run(&["--image", GUEST_IMAGE, "--", "sh", "-c", "exit 7"]);
    assert_eq!(run.code(), Some(7), "{}", run.explain());
    assert_eq!(
        run.events.last().map(|e| e["exit_code"].clone()),
        Some(7.into())
    );
}

#[test]
fn timeout_stops_the_guest_and_cleans_up() {
    let run = idagent_run(&[
        "--timeout",
        "3",
        "--image",
        GUEST_IMAGE,
        "--",
        "sleep",
        "600",
    ]);
    assert_eq!(run.code(), Some(124), "{}", run.explain());
    assert_eq!(
        run.events.last().map(|e| e["reason"].clone()),
        Some("timeout".into())
    );
}

#[test]
fn env_and_seeded_workspace_reach_the_guest() {
    let seed = tempfile::tempdir().expect("seed");
    std::fs::create_dir(seed.path().join("sub")).expect("mkdir");
    std::fs::write(seed.path().join("sub/in.txt"), b"seeded\n").expect("seed file");
    let run = idagent_run(&[
        "--env",
        "GREETING=hello there",
        "--workspace",
        seed.path().to_str().expect("utf-8 path"),
        "--image",
        GUEST_IMAGE,
        "--",
        "sh",
        "-c",
        "printf '%s|' \"$GREETING\" \"$(cat /tmp/workspace/sub/in.txt)\" \"$(id -u)\"; echo more >> /tmp/workspace/sub/in.txt",
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert_eq!(run.stdout(), "hello there|seeded|65534|");
    // The seed is copied, never written through.
    assert_eq!(
        std::fs::read(seed.path().join("sub/in.txt")).expect("seed"),
        b"seeded\n"
    );
    let after = b"seeded\nmore\n";
    assert_eq!(
        std::fs::read(run.run_dir().join("workspace/sub/in.txt")).expect("kept"),
        after
    );
    assert!(
        run.of_kind("file")
            .any(|e| e["path"] == "/tmp/workspace/sub/in.txt"
                && e["op"] == "modify"
                && e["sha256"] == sha256_hex(after)),
        "{}",
        run.explain()
    );
}

/// Starts `idagent run … sleep 600` and returns once the guest command runs (its exec is in the
/// log), with the audit log's path.
fn start_sleeping_guest(run_dir: &std::path::Path) -> (std::process::Child, std::path::PathBuf) {
    ensure_image();
    let child = std::process::Command::new(IDAGENT)
        .arg("run")
        .arg("--run-dir")
        .arg(run_dir)
        .args(["--image", GUEST_IMAGE, "--", "sleep", "600"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start idagent");
    let audit = run_dir.join("audit.jsonl");
    let started = std::time::Instant::now();
    while !read_audit(&audit).iter().any(|e| e["kind"] == "exec") {
        assert!(started.elapsed().as_secs() < 60, "guest never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (child, audit)
}

#[test]
fn sigterm_tears_everything_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, audit) = start_sleeping_guest(&dir.path().join("run"));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let events = read_audit(&audit);
    let end = events.last().expect("events");
    assert_eq!(end["kind"], "run_end");
    assert_eq!(end["reason"], "interrupted");
    assert_no_leftovers(events[0]["run"].as_str().expect("run id"));
}

#[test]
fn killed_idagent_stops_its_guest_and_gc_reaps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, audit) = start_sleeping_guest(&dir.path().join("run"));
    child.kill().expect("SIGKILL idagent");
    child.wait().expect("reap");
    let events = read_audit(&audit);
    let run_id = events[0]["run"].as_str().expect("run id").to_owned();
    // Every line written before the kill is intact and numbered without a hole.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1));
    }
    // The guest's init notices that nobody observes it any more and stops the guest.
    let filter = format!("label=idagent.run={run_id}");
    let started = std::time::Instant::now();
    loop {
        let out = std::process::Command::new("docker")
            .args(["ps", "-q", "--filter", &filter])
            .output()
            .expect("docker ps");
        if out.stdout.is_empty() {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "guest kept running without idagent"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let gc = std::process::Command::new(IDAGENT)
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

#[test]
fn missing_image_is_exit_2() {
    let out = std::process::Command::new(IDAGENT)
        .args([
            "run",
            "--image",
            "idagent-test/no-such-image:0",
            "--",
            "true",
        ])
        .output()
        .expect("start idagent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("idagent-test/no-such-image:0"), "{err}");
}

#[test]
fn not_root_is_exit_2_with_a_hint() {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(IDAGENT)
        .args(["run", "--image", GUEST_IMAGE, "--", "true"])
        .output()
        .expect("start idagent as nobody");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("root") && err.contains("hint"), "{err}");
}

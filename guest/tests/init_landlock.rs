//! `guest-init --landlock PLAN` end to end, without Docker: this test binary re-runs itself as
//! the real init (`init::run`, which never returns) against a real control socket; the parent
//! plays the host (hello, `GO`, and a minimal seccomp supervisor that lets every notified call
//! continue) and checks what a user sees: the exit code, stderr and the files on disk.

#![allow(unsafe_code)] // the minimal supervisor: poll(2) and the seccomp notification ioctls

use idagent_guest::ctl::CtlServer;
use idagent_guest::init::{self, InitArgs, EXIT_EXEC, EXIT_SETUP};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CHILD_ENV: &str = "IDAGENT_INIT_LANDLOCK_CHILD";

/// The child half: become init with `ctl PLAN SCRIPT` from the environment. A no-op otherwise.
#[test]
fn child_becomes_init() {
    let Some(spec) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let spec = spec.to_string_lossy().into_owned();
    let mut parts = spec.splitn(3, '\n');
    let (Some(ctl), Some(plan), Some(script)) = (parts.next(), parts.next(), parts.next()) else {
        std::process::exit(99);
    };
    init::run(
        &InitArgs {
            ctl: PathBuf::from(ctl),
            landlock: Some(PathBuf::from(plan)),
            pod: false,
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        },
        None,
    )
}

fn spawn_init(ctl: &Path, plan: &Path, script: &str) -> std::process::Child {
    let spec = format!("{}\n{}\n{script}", ctl.display(), plan.display());
    Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "child_becomes_init",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn init")
}

/// Answers every notification with CONTINUE until `stop` or the filter has no users left.
fn continue_all(listener: OwnedFd, stop: Arc<AtomicBool>) {
    let fd = listener.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; 100 ms so `stop` is seen.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n <= 0 {
            continue;
        }
        if pfd.revents & libc::POLLHUP != 0 {
            return;
        }
        // SAFETY: seccomp_notif is plain data; RECV requires it zeroed and fills it in.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV on our listener fd with a valid, writable seccomp_notif.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
            continue;
        }
        // SAFETY: seccomp_notif_resp is plain data.
        let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
        resp.id = req.id;
        resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
        // SAFETY: SEND on our listener fd with a valid response (ENOENT if the call is gone).
        unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    }
}

/// Plays the host for one init run; its output.
fn run_init(dir: &Path, plan: &str, script: &str) -> Output {
    let ctl = dir.join("ctl.sock");
    let plan_path = dir.join("run.plan");
    std::fs::write(&plan_path, plan).expect("write plan");
    let server = CtlServer::bind(&ctl).expect("bind");
    let child = spawn_init(&ctl, &plan_path, script);
    let mut conn = server
        .accept_init(Duration::from_secs(10))
        .expect("init hello");
    let stop = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let stop = stop.clone();
        std::thread::spawn(move || continue_all(conn.listener, stop))
    };
    conn.reply.go().expect("go");
    let out = child.wait_with_output().expect("wait init");
    stop.store(true, Ordering::Relaxed);
    supervisor.join().expect("supervisor thread");
    drop(conn.reply);
    out
}

fn plan_for(dir: &Path, execs: &[&str]) -> String {
    let mut plan = format!(
        "idagent-landlock 1\nhandle-files\nhandle-exec\nwrite {} make_reg,write_file,truncate\n",
        dir.join("ws").display()
    );
    for e in execs {
        plan.push_str(&format!("exec {e}\n"));
    }
    plan
}

fn skip() -> bool {
    let none = idagent_guest::landlock::abi_version().is_none();
    if none {
        eprintln!("SKIPPED: Landlock is not available in this kernel");
    }
    none
}

#[test]
fn init_applies_the_plan_to_the_command() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir(d.join("ws")).expect("mkdir");
    let script = format!(
        "echo a > {ws}/a || exit 10; (echo b > {out}) 2>/dev/null && exit 11; \
         /bin/true 2>/dev/null && exit 12; echo c > /dev/null || exit 13; exit 42",
        ws = d.join("ws").display(),
        out = d.join("outside.txt").display()
    );
    let out = run_init(d, &plan_for(d, &["/bin/sh"]), &script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(42), "stderr: {stderr}");
    assert_eq!(
        std::fs::read_to_string(d.join("ws/a")).ok().as_deref(),
        Some("a\n")
    );
    assert!(!d.join("outside.txt").exists());
}

#[test]
fn command_not_in_the_plan_cannot_start() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("ws")).expect("mkdir");
    let out = run_init(dir.path(), &plan_for(dir.path(), &["/bin/true"]), "exit 0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_EXEC), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot execute /bin/sh: Permission denied"),
        "{stderr}"
    );
}

#[test]
fn bad_plan_is_a_setup_failure_before_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let bad = d.join("bad.plan");
    std::fs::write(&bad, "idagent-landlock 1\nwrite /tmp make_reg\n").expect("write");
    for (plan, want) in [
        (bad, "bad.plan: line 2: `write` without `handle-files`"),
        (d.join("missing.plan"), "read landlock plan"),
    ] {
        // No server: init must fail on the plan before it ever tries the socket.
        let out = spawn_init(&d.join("nobody.sock"), &plan, "exit 0")
            .wait_with_output()
            .expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_SETUP), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("idagent guest-init:"))
            .unwrap_or_default();
        assert!(line.contains(want), "{stderr}");
    }
}

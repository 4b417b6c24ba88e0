//! End to end without Docker: a forked child runs the real guest init (`idagent_guest::init`)
//! against a real control socket, its command runs under the real filter, and the supervisor's
//! output is checked where a user would look: the audit log, the attribution table and the exit
//! code. Needs root (a private mount namespace with a read-only tmpfs); skipped otherwise.

use super::*;
use crate::audit::{AuditLog, RunEnd, RunId};
use idagent_guest::ctl::{CtlServer, InitConn};
use idagent_guest::init::InitArgs;
use std::ffi::CString;
use std::path::Path;

/// In the forked child (single-threaded): build the guest's view of the file system, then
/// become its init. Never returns.
fn become_guest(ctl: &Path, dir: &Path, script: &str) -> ! {
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let ro = c(&dir.join("ro").to_string_lossy());
    let (tmpfs, slash, tmp, ws) = (c("tmpfs"), c("/"), c("/tmp"), c("/tmp/workspace"));
    // SAFETY: valid NUL-terminated strings; this child owns its new mount namespace, so the
    // mounts never reach the host.
    let ok = unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                tmpfs.as_ptr(),
                ro.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_RDONLY,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                tmpfs.as_ptr(),
                tmp.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ) == 0
            && libc::mkdir(ws.as_ptr(), 0o777) == 0
    };
    if !ok {
        eprintln!("smoke guest setup: {}", io::Error::last_os_error());
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(99) };
    }
    idagent_guest::init::run(
        &InitArgs {
            ctl: ctl.to_owned(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            landlock: None,
            pod: false,
        },
        None,
    )
}

/// Waits for `pid` for at most `timeout` (pidfd + poll, no sleeps); its wait status.
fn wait_child(pid: libc::pid_t, timeout: Duration) -> Option<i32> {
    // SAFETY: pidfd_open on our own child; the fd is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    let mut fd = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = pidfd >= 0 && unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as i32) } > 0;
    let mut status = 0;
    // SAFETY: reaping (or, on timeout, killing then reaping) our own child; closing our pidfd.
    unsafe {
        if !ready {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::waitpid(pid, &mut status, 0);
        if pidfd >= 0 {
            libc::close(pidfd);
        }
    }
    ready.then_some(status)
}

#[test]
fn supervisor_sees_exec_and_writes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping supervisor_sees_exec_and_writes: needs root for mount namespaces");
        return;
    }
    // Under /dev/shm, not /tmp: the guest gets its own /tmp (to hold /tmp/workspace).
    let dir = tempfile::tempdir_in("/dev/shm").expect("tempdir");
    std::fs::create_dir(dir.path().join("ro")).expect("mkdir ro");
    let ctl_path = dir.path().join("ctl.sock");
    let server = CtlServer::bind(&ctl_path).expect("bind ctl");
    let d = dir.path().display();
    let script = format!(
        "mkdir {d}/ro/denied; mkdir {d}/made; : > /dev/null; echo x > /tmp/workspace/f; \
         exec /bin/sh -c 'exit 7' argv0 hello"
    );
    // SAFETY: the child only sets up mounts and runs the guest init, which execs or exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        become_guest(&ctl_path, dir.path(), &script);
    }

    let init = server
        .accept_init(Duration::from_secs(20))
        .expect("init hello");
    std::fs::remove_file(&ctl_path).expect("unlink ctl socket");
    let log_path = dir.path().join("audit.jsonl");
    let log = AuditLog::create(&log_path, RunId::generate(), 1024).expect("audit log");
    let attribution = Arc::new(Attribution::default());
    let listener = init.listener.try_clone().expect("dup listener");
    let supervisor = spawn(
        listener,
        log.sink(),
        attribution.clone(),
        std::sync::Arc::new(crate::enforce::Enforcer::disabled(log.sink())),
        // No proc connector here: exits and exec confirmations come from the supervisor.
        SupervisorOptions { exits: true },
    )
    .expect("spawn");
    // Only the supervisor may hold the listener once the guest runs.
    let InitConn {
        listener,
        mut reply,
        ..
    } = init;
    drop(listener);
    reply.go().expect("go");

    let status = wait_child(child, Duration::from_secs(30)).expect("guest finished in time");
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        7,
        "init exits with the command's code"
    );
    let stats = supervisor.join();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime
        .block_on(log.finish(RunEnd::default()))
        .expect("finish");

    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log_path)
        .expect("read log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let execs: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "exec").collect();
    let argvs: Vec<&serde_json::Value> = execs.iter().map(|e| &e["argv"]).collect();
    assert!(
        argvs.contains(&&serde_json::json!([
            "/bin/sh", "-c", "exit 7", "argv0", "hello"
        ])),
        "{argvs:?}"
    );
    assert!(
        argvs.contains(&&serde_json::json!(["/bin/sh", "-c", script])),
        "{argvs:?}"
    );
    let first = execs.first().expect("an exec event");
    assert_eq!(first["path"], "/bin/sh");
    assert_eq!(first["uid"], 0);
    assert!(first["pid"].as_i64().unwrap_or(0) > 0);

    let files: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "file").collect();
    let denied = files
        .iter()
        .find(|e| e["path"] == format!("{d}/ro/denied"))
        .expect("denied mkdir on the read-only mount");
    assert_eq!(denied["op"], "mkdir");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["errno"], "EROFS");
    assert!(denied["syscall"]
        .as_str()
        .unwrap_or("")
        .starts_with("mkdir"));
    assert_eq!(denied["exe"], "/usr/bin/mkdir");
    let made = files
        .iter()
        .find(|e| e["path"] == format!("{d}/made"))
        .expect("mkdir on a writable mount");
    assert_eq!(made["outcome"], "ok");
    assert!(made.get("errno").is_none());
    assert!(
        files.iter().all(|e| e["path"] != "/dev/null"),
        "device writes are not file events: {files:?}"
    );
    assert!(
        files.iter().all(|e| e["path"] != "/tmp/workspace/f"),
        "workspace writes are left to the watcher"
    );
    let actor = attribution
        .lookup("/tmp/workspace/f")
        .expect("workspace write attributed");
    assert!(actor.exe.ends_with("sh"), "{actor:?}");
    // What each exec ran, confirmed by the supervisor alone (`exec 7` replaced the shell).
    let ran: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "exec_ran").collect();
    let mkdir = ran
        .iter()
        .find(|e| e["argv"][0] == "mkdir")
        .unwrap_or_else(|| panic!("mkdir's exec confirmed: {ran:?}"));
    assert_eq!(mkdir["ran"], "/usr/bin/mkdir");
    assert_eq!(mkdir["mismatch"], false);
    assert_eq!(mkdir["source"], "seccomp");
    assert!(
        ran.iter().all(|e| e["mismatch"] == false),
        "nothing swapped here: {ran:?}"
    );
    let sh = std::fs::canonicalize("/bin/sh").expect("real /bin/sh");
    assert!(
        ran.iter()
            .any(|e| e["ran"] == sh.to_string_lossy().as_ref() && e["argv"][3] == "argv0"),
        "the last exec confirmed with its argv: {ran:?}"
    );
    // The command's exit, from exit_group, in the proc connector's shape.
    let exits: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "exit").collect();
    assert!(
        exits.iter().any(|e| e["code"] == 7
            && e["source"] == "seccomp"
            && e["exe"] == sh.to_string_lossy().as_ref()
            && e["pid"].as_i64() == first["pid"].as_i64()),
        "{exits:?}"
    );
    assert!(exits
        .iter()
        .any(|e| e["exe"] == "/usr/bin/mkdir" && e["code"] == 0));
    assert_eq!(stats.exit_events, exits.len() as u64);
    assert_eq!(stats.exec_events, execs.len() as u64);
    assert_eq!(stats.file_events, files.len() as u64);
    assert!(stats.attributions >= 1);
}

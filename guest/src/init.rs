//! `idagent guest-init [--pod] [--landlock PLAN] --ctl PATH [--landlock PLAN] -- CMD ARGS...`:
//! the guest container's PID 1.
//!
//! With `--pod` (a pod's agent, see `idagent::pod`) the order differs: no fd in the hello and
//! a second connection, to `events.sock` beside the control socket; after `GO`, the fork comes
//! first — the child restores nothing yet, becomes dumpable for its supervisor, sets
//! no-new-privs, installs the filter and sends its listener back over a socketpair (a kernel
//! without user notification sends its reason instead), then waits on a pipe — while PID 1
//! says `MAIN <pid>`, starts its observers ([`PodHook`]) on the listener and lets the child go.
//! PID 1 must be 1 (its own pid namespace), and the plan is the control folder's when present.
//!
//! Owns: the order of the guest's start-up and PID 1's duties afterwards. In order:
//! 0. with `--landlock`, read and parse the plan file ([`crate::landlock::Plan`]);
//! 1. connect to the host's control socket at PATH (retrying for up to
//!    [`CONNECT_ATTEMPTS`] × [`CONNECT_RETRY`] while the socket is missing or refusing);
//! 2. set `PR_SET_NO_NEW_PRIVS` and install [`crate::filter::program`] with a notification
//!    listener;
//! 3. send the hello and the listener fd ([`crate::ctl`]), then close our copy of the listener
//!    (the untrusted program must never hold it: it could steal its own notifications);
//! 4. wait for the host: `ABORT <reason>` or EOF → print the reason, exit [`EXIT_SETUP`];
//! 5. on `GO`, fork; the child restores the signal mask, applies the Landlock plan if there is
//!    one ([`crate::landlock::apply`]; on failure it prints one line and exits [`EXIT_SETUP`])
//!    and execvp's CMD (printing one line and exiting [`EXIT_EXEC`] if that fails); PID 1
//!    forwards SIGTERM, SIGINT, SIGHUP and SIGQUIT to it, reaps every zombie
//!    (orphans are re-parented to PID 1) and, when the command exits, exits with its code, or
//!    128 + the signal that killed it.
//!
//! Any start-up failure before the fork prints one line and exits [`EXIT_SETUP`].
//!
//! The Landlock domain covers the exec of CMD itself: the plan must allow executing CMD as
//! init resolves it through `PATH` (and its interpreter, for a script), or the exec fails with
//! `EACCES` and the child exits [`EXIT_EXEC`]. PID 1 stays outside the domain.
//!
//! Runs before any thread exists (`main.rs` dispatches here first) and uses libc directly: no
//! async runtime, no logging framework. Does not own: the filter program or the wire format.

#![allow(unsafe_code)] // OS module: sigprocmask, fork, execvp, waitpid, kill

use crate::ctl::{self, Reply};
use crate::filter;
use crate::landlock::{self, Plan, PlanError};
use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Exit code for a start-up failure or a host abort (as `docker run` uses 125).
pub const EXIT_SETUP: i32 = 125;
/// Exit code when the command cannot be executed.
pub const EXIT_EXEC: i32 = 127;
/// Connection attempts while the control socket is not there yet.
pub const CONNECT_ATTEMPTS: u32 = 50;
pub const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// Signals PID 1 passes on to the command.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Parsed `guest-init` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitArgs {
    pub ctl: PathBuf,
    /// `--landlock PLAN`: the Landlock plan file to apply in the child before the exec.
    pub landlock: Option<PathBuf>,
    /// `--pod`: a pod's agent init (see [`PodStart`]).
    pub pod: bool,
    pub command: Vec<OsString>,
}

/// What a pod's agent init hands its observers: it keeps the seccomp listener (no host takes
/// it), and sends their records to the proxy over the event socket.
#[derive(Debug)]
pub struct PodStart {
    /// The command's seccomp listener, or why the kernel gave none (gVisor).
    pub listener: Result<std::os::fd::OwnedFd, String>,
    pub events: UnixStream,
    /// The control volume (policy, plan, CA files), read-only here.
    pub ctl_dir: PathBuf,
    /// The command's pid.
    pub child: libc::pid_t,
}

/// Started by init in pod mode after the fork and before the command is let go; the returned
/// closure is called when the command has exited (final scans, flushing) before init exits.
pub type PodHook = fn(PodStart) -> Result<Box<dyn FnOnce()>, String>;

/// The event socket's name in the control folder.
pub const POD_EVENTS_SOCK: &str = "events.sock";
/// The Landlock plan's name in the control folder (used in pod mode when present).
pub const POD_LANDLOCK_PLAN: &str = "landlock.plan";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("usage: idagent guest-init [--pod] [--landlock PLAN] --ctl PATH -- CMD [ARGS...]")]
    Usage,
    #[error("read landlock plan {}: {source}", path.display())]
    ReadPlan {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("landlock plan {}: {source}", path.display())]
    ParsePlan { path: PathBuf, source: PlanError },
    #[error("argument contains a NUL byte: {0:?}")]
    NulInArgument(OsString),
    #[error(transparent)]
    Ctl(#[from] ctl::CtlError),
    #[error("install seccomp filter: {0}")]
    InstallFilter(std::io::Error),
    #[error("{0}: {1}")]
    Os(&'static str, std::io::Error),
    #[error("--pod: {0}")]
    Pod(String),
}

/// Parses the arguments after `guest-init`: `--ctl PATH -- CMD [ARGS...]`, with an optional
/// `--landlock PLAN` before or after `--ctl PATH`. Each option once, both values non-empty.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<InitArgs, InitError> {
    let mut args = args.into_iter();
    let mut ctl = None;
    let mut landlock = None;
    let mut pod = false;
    loop {
        let arg = args.next().ok_or(InitError::Usage)?;
        let slot = match arg.to_str() {
            Some("--") => break,
            Some("--pod") if !pod => {
                pod = true;
                continue;
            }
            Some("--ctl") => &mut ctl,
            Some("--landlock") => &mut landlock,
            _ => return Err(InitError::Usage),
        };
        let value = PathBuf::from(args.next().ok_or(InitError::Usage)?);
        if slot.is_some() || value.as_os_str().is_empty() {
            return Err(InitError::Usage);
        }
        *slot = Some(value);
    }
    let ctl = ctl.ok_or(InitError::Usage)?;
    let command: Vec<OsString> = args.collect();
    if command.is_empty() {
        return Err(InitError::Usage);
    }
    Ok(InitArgs {
        ctl,
        landlock,
        pod,
        command,
    })
}

/// Step 0: reads and parses the Landlock plan file.
pub fn read_plan(path: &std::path::Path) -> Result<Plan, InitError> {
    let text = std::fs::read_to_string(path).map_err(|source| InitError::ReadPlan {
        path: path.to_path_buf(),
        source,
    })?;
    Plan::parse(&text).map_err(|source| InitError::ParsePlan {
        path: path.to_path_buf(),
        source,
    })
}

/// Entry point for `idagent guest-init ...` (`argv[1] == "guest-init"`). Never returns.
/// `hook` starts a pod's agent-side observers (`--pod`); without one `--pod` is refused.
pub fn main_with(hook: Option<PodHook>) -> ! {
    match parse_args(std::env::args_os().skip(2)) {
        Ok(args) => run(&args, hook),
        Err(e) => fail(&e),
    }
}

/// [`main_with`] without pod support.
pub fn main() -> ! {
    main_with(None)
}

/// Runs init with parsed arguments. Never returns.
pub fn run(args: &InitArgs, hook: Option<PodHook>) -> ! {
    let argv = match to_cstrings(&args.command) {
        Ok(argv) => argv,
        Err(e) => fail(&e),
    };
    let ctl_dir = args
        .ctl
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let pod = match (args.pod, hook) {
        (false, _) => None,
        (true, None) => fail(&InitError::Pod("this build has no pod observers".into())),
        // SAFETY: getpid has no preconditions.
        (true, Some(_)) if unsafe { libc::getpid() } != 1 => fail(&InitError::Pod(
            "must be PID 1 of the agent's own pid namespace (Kubernetes: \
             shareProcessNamespace: false): the app could signal it otherwise"
                .into(),
        )),
        (true, Some(hook)) => Some(hook),
    };
    // In a pod the plan is the proxy's to write: present in the control folder or not at all.
    let landlock = match (&args.landlock, pod.is_some()) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(ctl_dir.join(POD_LANDLOCK_PLAN)).filter(|p| p.is_file()),
        (None, false) => None,
    };
    let plan = match landlock.as_deref().map(read_plan).transpose() {
        Ok(plan) => plan,
        Err(e) => fail(&e),
    };
    let (mut stream, kept) = match pod {
        None => match handshake(args) {
            Ok(stream) => (stream, None),
            Err(e) => fail(&e),
        },
        Some(hook) => match handshake_pod(args, &ctl_dir) {
            Ok((stream, events)) => (stream, Some((hook, events))),
            Err(e) => fail(&e),
        },
    };
    match ctl::read_reply(&mut stream) {
        Ok(Reply::Go) => {}
        Ok(Reply::Abort(reason)) => {
            eprintln!("idagent guest-init: aborted by host: {reason}");
            std::process::exit(EXIT_SETUP);
        }
        Err(e) => fail(&e.into()),
    }
    // Search PATH here, once, so the guest's log shows one exec of the real program rather
    // than execvp's failed attempts in every PATH directory.
    let file = resolve_program(&argv[0]);
    let ctl = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let observers = kept.map(|(hook, events)| {
        move |listener, child| {
            hook(PodStart {
                listener,
                events,
                ctl_dir,
                child,
            })
        }
    });
    match supervise(&file, &argv, plan.as_ref(), ctl, observers) {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(&e),
    }
    // `stream` stays open until exit so the host sees EOF exactly when PID 1 is gone.
}

fn fail(e: &InitError) -> ! {
    eprintln!("idagent guest-init: {e}");
    std::process::exit(EXIT_SETUP)
}

fn to_cstrings(command: &[OsString]) -> Result<Vec<CString>, InitError> {
    command
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| InitError::NulInArgument(a.clone())))
        .collect()
}

/// Steps 1–3: connect, install the filter, hand over the listener.
fn handshake(args: &InitArgs) -> Result<UnixStream, InitError> {
    let stream = connect_with_retry(&args.ctl)?;
    let listener =
        filter::install_with_listener(&filter::program()).map_err(InitError::InstallFilter)?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    ctl::send_hello(&stream, pid, listener.as_fd())?;
    drop(listener);
    Ok(stream)
}

/// Steps 1–3 in a pod: connect, say hello, connect the event socket. The filter is installed
/// later, in the forked child only: init's own observers (which use `openat2`, a notified
/// syscall) must not wait on themselves.
fn handshake_pod(
    args: &InitArgs,
    ctl_dir: &std::path::Path,
) -> Result<(UnixStream, UnixStream), InitError> {
    let stream = connect_with_retry(&args.ctl)?;
    ctl::send_hello_pod(&stream, 1)?;
    let events = connect_with_retry(&ctl_dir.join(POD_EVENTS_SOCK))?;
    Ok((stream, events))
}

fn connect_with_retry(path: &std::path::Path) -> Result<UnixStream, InitError> {
    let mut attempt = 1;
    loop {
        match ctl::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(ctl::CtlError::Connect { source, .. })
                if attempt < CONNECT_ATTEMPTS
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
            {
                // Nothing to wait on: the socket appears when the host creates it.
                std::thread::sleep(CONNECT_RETRY);
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn os_err(what: &'static str) -> InitError {
    InitError::Os(what, std::io::Error::last_os_error())
}

/// Step 5: fork, exec in the child; in PID 1 forward signals and reap until the command exits.
/// Returns the exit code to exit with.
///
/// Dead-man switch: the control stream to the host stays open for the whole run and raises
/// SIGIO when it changes state. EOF on it means idagent is gone (killed, crashed): nobody is
/// observing any more, so init kills everything in the guest and exits rather than let an
/// unobserved guest run on.
fn supervise(
    file: &CString,
    argv: &[CString],
    plan: Option<&Plan>,
    ctl: libc::c_int,
    observers: Option<
        impl FnOnce(
            Result<std::os::fd::OwnedFd, String>,
            libc::pid_t,
        ) -> Result<Box<dyn FnOnce()>, String>,
    >,
) -> Result<i32, InitError> {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` and `old` are valid sigset_t for the calls; the signal numbers are valid.
    // Blocking before the fork means no SIGCHLD or forwarded signal can be lost between the
    // fork and the first sigwaitinfo.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in FORWARDED.into_iter().chain([libc::SIGCHLD, libc::SIGIO]) {
            libc::sigaddset(&mut set, sig);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
            return Err(os_err("block signals"));
        }
    }
    // SAFETY: fcntl on the control socket we own; F_SETOWN to ourselves and O_ASYNC make the
    // kernel queue SIGIO (blocked above, so it waits for sigwaitinfo) when the host hangs up.
    unsafe {
        let flags = libc::fcntl(ctl, libc::F_GETFL);
        if flags < 0
            || libc::fcntl(ctl, libc::F_SETOWN, libc::getpid()) != 0
            || libc::fcntl(ctl, libc::F_SETFL, flags | libc::O_ASYNC) != 0
        {
            return Err(os_err("arm control socket"));
        }
    }
    // PID 1 is not dumpable: the app runs as the same uid and could otherwise ptrace-stop it
    // (or read its /proc files) and outlive the dead-man switch. The command's own exec resets
    // the flag for the app, so its crash dumps and /proc stay as usual.
    // SAFETY: prctl with PR_SET_DUMPABLE and a constant argument; no pointers.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(os_err("make init non-dumpable"));
    }
    if host_gone(ctl) {
        return Err(InitError::Os(
            "host hung up before start",
            std::io::Error::from_raw_os_error(libc::EPIPE),
        ));
    }
    // In a pod, the child installs the filter and hands its listener back over `pair`, then
    // waits on `gate` until init's observers run (they start threads, which must not exist
    // at the fork).
    let mut gate = [-1 as libc::c_int; 2];
    let mut pair = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 and socketpair write two fds into the arrays.
    if observers.is_some()
        && unsafe {
            libc::pipe2(gate.as_mut_ptr(), libc::O_CLOEXEC) != 0
                || libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    pair.as_mut_ptr(),
                ) != 0
        }
    {
        return Err(os_err("pipe"));
    }
    // SAFETY: init is single-threaded here (main.rs dispatches before any thread starts), so
    // the child may do anything (allocate, open files); it restores the mask, applies the
    // Landlock plan and execs.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(os_err("fork"));
    }
    if child == 0 {
        if gate[0] >= 0 {
            // SAFETY: closing init's end of the pair in the child; `pair[1]` is ours.
            unsafe { libc::close(pair[0]) };
            // SAFETY: `pair[1]` is a socket this child owns from here on.
            let back = unsafe { UnixStream::from_raw_fd(pair[1]) };
            // Init is not dumpable and the fork inherited that; init's observers (same uid) must
            // read this process's memory at its first exec. The exec would reset it anyway.
            // SAFETY: prctl with PR_SET_DUMPABLE and a constant argument; no pointers.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
            // No new privileges whatever happens next: it is not the filter's to give.
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                eprintln!(
                    "idagent guest-init: no_new_privs: {}",
                    std::io::Error::last_os_error()
                );
                // SAFETY: _exit skips atexit handlers and stdio buffers inherited from init.
                unsafe { libc::_exit(EXIT_SETUP) }
            }
            let handed = match filter::install_with_listener(&filter::program()) {
                Ok(l) => ctl::send_with_fd(&back, b"L", l.as_fd()).map_err(|e| e.to_string()),
                // A kernel without seccomp user notification (gVisor): the command runs
                // unobserved by the supervisor, and init tells the proxy, which says so in the
                // log. The read-only root and the missing capabilities still refuse.
                Err(e) => {
                    use std::io::Write;
                    (&back)
                        .write_all(format!("N {e}").as_bytes())
                        .map_err(|e| e.to_string())
                }
            };
            // The listener is dropped here: the program exec'd below never holds it.
            if let Err(e) = handed {
                eprintln!("idagent guest-init: seccomp listener: {e}");
                // SAFETY: _exit skips atexit handlers and stdio buffers inherited from init.
                unsafe { libc::_exit(EXIT_SETUP) }
            }
            drop(back);
            let mut byte = 0u8;
            // SAFETY: one-byte read into a valid buffer from the pipe created above.
            let n = unsafe { libc::read(gate[0], (&mut byte as *mut u8).cast(), 1) };
            if n != 1 {
                // SAFETY: _exit skips atexit handlers and stdio buffers inherited from init.
                unsafe { libc::_exit(EXIT_SETUP) }
            }
        }
        exec_child(file.as_ptr(), &ptrs, &old, plan);
    }
    let mut finish: Option<Box<dyn FnOnce()>> = None;
    if let Some(start) = observers {
        // SAFETY: closing our copies of the child's ends.
        unsafe {
            libc::close(gate[0]);
            libc::close(pair[1]);
        }
        // SAFETY: `pair[0]` is init's end, owned from here on.
        let back = unsafe { UnixStream::from_raw_fd(pair[0]) };
        let listener = match ctl::recv_fd(&back) {
            Ok(l) => l,
            Err(e) => {
                // SAFETY: kill/waitpid on the child we forked.
                unsafe {
                    libc::kill(child, libc::SIGKILL);
                    libc::waitpid(child, std::ptr::null_mut(), 0);
                }
                return Err(InitError::Pod(format!(
                    "the command's seccomp listener: {e}"
                )));
            }
        };
        drop(back);
        let _ = ctl::send_report(
            // SAFETY: `ctl` is the open control socket for the whole of init's life.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(ctl) },
            &ctl::InitReport::Main(child),
        );
        match start(listener, child) {
            Ok(f) => finish = Some(f),
            Err(e) => {
                // SAFETY: kill/waitpid on the child we forked, which has not exec'd yet.
                unsafe {
                    libc::kill(child, libc::SIGKILL);
                    libc::waitpid(child, std::ptr::null_mut(), 0);
                }
                return Err(InitError::Pod(format!("start observers: {e}")));
            }
        }
        // SAFETY: one byte from a valid buffer into the pipe's write end, then close it.
        unsafe {
            libc::write(gate[1], b"g".as_ptr().cast(), 1);
            libc::close(gate[1]);
        }
    }
    let code = reap_loop(child, ctl, &set)?;
    if let Some(finish) = finish {
        finish();
    }
    Ok(code)
}

/// PID 1's loop after the fork: forward signals, reap, watch the host; returns the exit code.
fn reap_loop(child: libc::pid_t, ctl: libc::c_int, set: &libc::sigset_t) -> Result<i32, InitError> {
    // Reports init could not send (the host was not reading); said in one `LOST` line later.
    let mut lost = 0u64;
    loop {
        // SAFETY: siginfo_t is plain data that sigwaitinfo fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t and `info` is writable.
        let sig = unsafe { libc::sigwaitinfo(set, &mut info) };
        if sig < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os_err("wait for signals"));
        }
        if sig == libc::SIGIO {
            if host_gone(ctl) {
                eprintln!("idagent guest-init: idagent on the host is gone; stopping the guest");
                // SAFETY: kill(-1) from PID 1 signals every other process of the guest's pid
                // namespace; init itself is not signalled.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                let _ = reap(child, ctl, &mut lost);
                return Ok(128 + libc::SIGKILL);
            }
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill with a pid we forked and a valid signal number; if the child is
            // already gone the ESRCH is harmless.
            unsafe { libc::kill(child, sig) };
            continue;
        }
        if let Some(code) = reap(child, ctl, &mut lost) {
            return Ok(code);
        }
    }
}

/// Whether the host end of the control stream has closed (EOF or error on a peek).
fn host_gone(ctl: libc::c_int) -> bool {
    let mut byte = 0u8;
    // SAFETY: one-byte peek into a valid buffer; MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            ctl,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN))
}

/// Reaps every exited child, reporting each to the host; returns the exit code once `main`
/// is among them.
fn reap(main: libc::pid_t, ctl: libc::c_int, lost: &mut u64) -> Option<i32> {
    // SAFETY: `ctl` is the control stream init keeps open for its whole life.
    let ctl = unsafe { std::os::fd::BorrowedFd::borrow_raw(ctl) };
    let mut code = None;
    loop {
        let mut status = 0;
        // SAFETY: `status` is writable; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return code;
        }
        let report = if libc::WIFSIGNALED(status) {
            ctl::InitReport::Exit {
                pid,
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            ctl::InitReport::Exit {
                pid,
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        };
        if *lost > 0 && ctl::send_report(ctl, &ctl::InitReport::Lost(*lost)) {
            *lost = 0;
        }
        if !ctl::send_report(ctl, &report) {
            *lost += 1;
        }
        if pid == main {
            code = Some(if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            });
        }
    }
}

/// The program `name` names: itself if it contains a `/`, else the first executable regular
/// file of that name in `PATH` (execvp's default `PATH` when unset). Falls back to `name`, so
/// execvp reports the error the user expects.
fn resolve_program(name: &CString) -> CString {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') {
        return name.clone();
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in path
        .as_bytes()
        .split(|b| *b == b':')
        .filter(|d| !d.is_empty())
    {
        let mut candidate = dir.to_vec();
        candidate.push(b'/');
        candidate.extend_from_slice(bytes);
        let os = std::ffi::OsStr::from_bytes(&candidate);
        let executable =
            std::fs::metadata(os).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if executable {
            if let Ok(c) = CString::new(candidate) {
                return c;
            }
        }
    }
    name.clone()
}

/// In the forked child: restore the signal mask, enter the Landlock domain and exec. Never
/// returns.
fn exec_child(
    file: *const libc::c_char,
    argv: &[*const libc::c_char],
    mask: &libc::sigset_t,
    plan: Option<&Plan>,
) -> ! {
    // SAFETY: `mask` is the valid mask saved before the fork.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
    if let Some(plan) = plan {
        if let Err(e) = landlock::apply(plan) {
            eprintln!("idagent guest-init: landlock: {e}");
            // SAFETY: _exit skips atexit handlers and stdio buffers inherited from the parent.
            unsafe { libc::_exit(EXIT_SETUP) }
        }
    }
    // SAFETY: `argv` is a NULL-terminated array of pointers into CStrings that live until exec
    // replaces the image.
    unsafe { libc::execvp(file, argv.as_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: argv[0] is a valid NUL-terminated string (see above).
    let name = unsafe { std::ffi::CStr::from_ptr(argv[0]) };
    eprintln!(
        "idagent guest-init: cannot execute {}: {err}",
        name.to_string_lossy()
    );
    // SAFETY: _exit skips atexit handlers and stdio buffers inherited from the parent.
    unsafe { libc::_exit(EXIT_EXEC) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_ctl_and_command() {
        let a = parse_args(os(&["--ctl", "/c.sock", "--", "sh", "-c", "x"])).expect("ok");
        assert_eq!(a.ctl, PathBuf::from("/c.sock"));
        assert_eq!(a.command, os(&["sh", "-c", "x"]));
        let a = parse_args(os(&["--ctl", "/c", "--", "--"])).expect("ok");
        assert_eq!(a.command, os(&["--"]));
        assert_eq!(a.landlock, None);
    }

    #[test]
    fn parses_pod_once_anywhere_before_the_command() {
        let a = parse_args(os(&["--pod", "--ctl", "/c", "--", "x"])).expect("ok");
        assert!(a.pod);
        let a = parse_args(os(&["--ctl", "/c", "--pod", "--", "x"])).expect("ok");
        assert!(a.pod);
        assert!(parse_args(os(&["--pod", "--pod", "--ctl", "/c", "--", "x"])).is_err());
        // After `--` it is the command's.
        let a = parse_args(os(&["--ctl", "/c", "--", "--pod"])).expect("ok");
        assert!(!a.pod);
        assert_eq!(a.command, os(&["--pod"]));
    }

    #[test]
    fn parses_landlock_before_or_after_ctl() {
        for args in [
            &["--landlock", "/p.plan", "--ctl", "/c", "--", "sh"][..],
            &["--ctl", "/c", "--landlock", "/p.plan", "--", "sh"],
        ] {
            let a = parse_args(os(args)).expect("ok");
            assert_eq!(a.ctl, PathBuf::from("/c"));
            assert_eq!(a.landlock, Some(PathBuf::from("/p.plan")));
            assert_eq!(a.command, os(&["sh"]));
        }
        // After `--` it is the command's argument.
        let a = parse_args(os(&["--ctl", "/c", "--", "sh", "--landlock", "x"])).expect("ok");
        assert_eq!(a.landlock, None);
        assert_eq!(a.command, os(&["sh", "--landlock", "x"]));
    }

    #[test]
    fn reads_plan_or_names_the_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.plan");
        std::fs::write(&good, "idagent-landlock 1\nhandle-exec\nexec /bin/true\n").expect("write");
        assert!(read_plan(&good).expect("ok").handle_exec);
        let bad = dir.path().join("bad.plan");
        std::fs::write(&bad, "idagent-landlock 1\nhandle-files\nwrite /x nope\n").expect("write");
        let e = read_plan(&bad).expect_err("bad");
        assert!(matches!(e, InitError::ParsePlan { .. }), "{e:?}");
        assert!(
            e.to_string().contains("bad.plan: line 3: unknown right"),
            "{e}"
        );
        let missing = dir.path().join("missing.plan");
        assert!(matches!(
            read_plan(&missing),
            Err(InitError::ReadPlan { .. })
        ));
    }

    #[test]
    fn rejects_bad_usage() {
        for bad in [
            &[][..],
            &["--ctl"],
            &["--ctl", "/c"],
            &["--ctl", "/c", "--"],
            &["--ctl", "/c", "sh"],
            &["sh"],
            &["--ctl", "", "--", "sh"],
            &["--landlock", "/p", "--", "sh"],
            &["--ctl", "/c", "--landlock", "", "--", "sh"],
            &[
                "--ctl",
                "/c",
                "--landlock",
                "/p",
                "--landlock",
                "/q",
                "--",
                "sh",
            ],
            &["--ctl", "/c", "--ctl", "/d", "--", "sh"],
            &["--ctl", "/c", "--landlock"],
            &["--ctl", "/c", "--landlock", "/p", "--"],
            &["--ctl", "/c", "--seccomp", "/p", "--", "sh"],
        ] {
            assert!(
                matches!(parse_args(os(bad)), Err(InitError::Usage)),
                "{bad:?}"
            );
        }
    }
}

#![allow(unsafe_code)] // OS module: netlink proc connector (nix has no NETLINK_CONNECTOR protocol)
//! Process exits of the guest, observed from the host through the netlink proc connector.
//!
//! Owns: the `NETLINK_CONNECTOR` socket subscribed to `CN_IDX_PROC`, the dedicated thread that
//! reads it, and turning the guest tree's exits into `exit` audit events (via `tracker`).
//! Does not own: execs (the seccomp supervisor records those with argv), the container's
//! exit code as Docker reports it (the supervisor), or any pid namespace work: idagent runs as
//! root in the initial pid namespace and reads guest pids from `/proc/<pid>/status`.

use crate::audit::{AuditSink, EventBody};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{bind, recvfrom, send, setsockopt, sockopt, MsgFlags, NetlinkAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod procfs;
mod tracker;
pub mod wire;

pub use tracker::{ProcStats, UNKNOWN_GUEST_PID};

/// Guest processes tracked at once; forks beyond it are not followed (one `notice`).
pub const DEFAULT_MAX_TRACKED_PROCS: usize = 65_536;
/// How long `stop` keeps listening for the root's exit event: the kernel sends it after
/// waking the parent, so the runtime can report the exit before the event is queued.
pub const STOP_GRACE: Duration = Duration::from_millis(500);
/// How long `start` waits for the kernel to acknowledge the subscription.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// Receive buffer asked for: a fork bomb produces events faster than one thread may drain a
/// default-sized buffer (the overflow is still handled, as `ENOBUFS`).
const RCVBUF_BYTES: usize = 8 << 20;
const RECV_BUF: usize = 16 << 10;

/// Failure to start watching process events.
#[derive(Debug, thiserror::Error)]
pub enum ProcEventsError {
    #[error("open netlink proc connector socket: {0}")]
    OpenSocket(std::io::Error),
    #[error("bind netlink socket to proc connector group {group}: {source}")]
    Bind { group: u32, source: Errno },
    #[error("send proc connector listen request: {0}")]
    Subscribe(Errno),
    #[error("proc connector refused the listen request: errno {0}")]
    Refused(u32),
    #[error("read proc connector socket: {0}")]
    Receive(Errno),
    #[error("create stop pipe: {0}")]
    StopPipe(Errno),
    #[error("spawn proc events thread: {0}")]
    Spawn(std::io::Error),
}

/// A running watcher of the guest's process tree. Dropping it stops the thread without
/// waiting; [`ProcWatcher::stop`] drains and joins.
#[derive(Debug)]
pub struct ProcWatcher {
    /// Closing it wakes the thread (POLLHUP on the read end).
    stop_tx: Option<OwnedFd>,
    thread: Option<JoinHandle<ProcStats>>,
}

/// Starts watching the tree rooted at `root_host_pid` (the container's PID 1, whose pid in
/// the guest is `root_guest_pid`). The socket is subscribed when this returns: no event after
/// it is missed, short of a kernel buffer overrun (which is reported and reconciled).
/// Stops a program that was started through the dynamic loader (`ld.so /bin/sh`): Landlock
/// must let every dynamic executable's loader execute, so that route is closed here, after the
/// exec has happened — race-free, since `/proc/<pid>/exe` is what runs, not what was asked —
/// by a SIGKILL when the policy does not allow the loader itself as a program.
///
/// It also hands each exec event to the supervisor's [`crate::supervisor::ExecConfirm`], which
/// records what the exec ran (`exec_ran`).
#[derive(Debug, Clone)]
pub struct ExecGuard {
    /// Set when exec rules are enforced: loaders run as programs are stopped.
    pub enforcer: Option<std::sync::Arc<crate::enforce::Enforcer>>,
    /// Told of every exec of a guest process.
    pub confirm: Option<std::sync::Arc<crate::supervisor::ExecConfirm>>,
}

impl ExecGuard {
    /// Kills `host_pid` when `exe` (what it runs now) is the dynamic loader and the policy does
    /// not allow the loader as a program.
    pub fn check(&self, host_pid: i32, exe: &str, guest_pid: Option<i32>) {
        let Some(enforcer) = &self.enforcer else {
            return;
        };
        if !is_dynamic_loader(exe) {
            return;
        }
        let req = idagent_policy::Request::Exec {
            path: exe,
            argv: &[],
        };
        let ctx = crate::enforce::Context {
            flow: None,
            pid: guest_pid,
        };
        if let crate::enforce::Permit::Deny(_) = enforcer.check(&req, ctx, "kill_after_exec") {
            // SAFETY-free: nix's kill; the pid is a tracked guest process (a stale pid at worst
            // gets ESRCH: the tracker removes exited processes as their exit arrives).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(host_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Whether `path` names the dynamic loader (`ld-linux-x86-64.so.2`, `ld-musl-*.so.1`,
/// `ld.so`), by its file name.
pub fn is_dynamic_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    (name.starts_with("ld-") && name.contains(".so")) || name == "ld.so"
}

/// Whether the proc connector answers here: it refuses the subscription outside the initial
/// network namespace. Checked before a run creates anything, so the run knows up front where
/// its exit records come from.
pub fn probe() -> Result<(), ProcEventsError> {
    let sock = open_socket()?;
    let mut tracker = tracker::Tracker::new(procfs::ProcFs::default(), -1, -1, 1);
    // Events arriving meanwhile are the host's, not a guest's: nothing is emitted.
    subscribe(&sock, &mut tracker, |_| {})
}

pub fn start(
    root_host_pid: i32,
    root_guest_pid: i32,
    audit: AuditSink,
    guard: Option<ExecGuard>,
) -> Result<ProcWatcher, ProcEventsError> {
    let sock = open_socket()?;
    let mut tracker = tracker::Tracker::new(
        procfs::ProcFs::default(),
        root_host_pid,
        root_guest_pid,
        DEFAULT_MAX_TRACKED_PROCS,
    );
    subscribe(&sock, &mut tracker, |out| emit_all(&audit, out))?;
    let (stop_rx, stop_tx) = nix::unistd::pipe().map_err(ProcEventsError::StopPipe)?;
    let thread = std::thread::Builder::new()
        .name("procevents".into())
        .spawn(move || run(sock, stop_rx, tracker, audit, guard))
        .map_err(ProcEventsError::Spawn)?;
    Ok(ProcWatcher {
        stop_tx: Some(stop_tx),
        thread: Some(thread),
    })
}

impl ProcWatcher {
    /// Stops the thread after draining pending events (waiting up to [`STOP_GRACE`] for the
    /// root's exit), records the root's exit from `/proc` if its event never came, and returns
    /// what was seen. Call it once the guest has exited.
    pub fn stop(mut self) -> ProcStats {
        drop(self.stop_tx.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(stats)) => stats,
            _ => ProcStats::default(),
        }
    }
}

fn open_socket() -> Result<OwnedFd, ProcEventsError> {
    // SAFETY: socket(2) takes no pointers; the returned descriptor is checked and then owned
    // by exactly one OwnedFd.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_CONNECTOR,
        )
    };
    if raw < 0 {
        return Err(ProcEventsError::OpenSocket(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // Best effort: without CAP_NET_ADMIN the forced size is refused and the default stays.
    if setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF_BYTES).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &RCVBUF_BYTES);
    }
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, wire::CN_IDX_PROC)).map_err(|source| {
        ProcEventsError::Bind {
            group: wire::CN_IDX_PROC,
            source,
        }
    })?;
    Ok(sock)
}

/// Sends `PROC_CN_MCAST_LISTEN` and waits for the kernel's acknowledgement, feeding any event
/// that arrives meanwhile to the tracker.
fn subscribe<S: procfs::ProcSource>(
    sock: &OwnedFd,
    tracker: &mut tracker::Tracker<S>,
    mut on_events: impl FnMut(Vec<EventBody>),
) -> Result<(), ProcEventsError> {
    // Port id 0 in the header: the kernel fills in ours.
    let msg = wire::subscribe_message(0, wire::PROC_CN_MCAST_LISTEN);
    send(sock.as_raw_fd(), &msg, MsgFlags::empty()).map_err(ProcEventsError::Subscribe)?;
    let deadline = Instant::now() + ACK_TIMEOUT;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Old kernels do not acknowledge; being bound to the group is what matters.
            tracing::warn!("proc connector did not acknowledge the listen request");
            return Ok(());
        }
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(ProcEventsError::Receive(e)),
        }
        let mut out = Vec::new();
        let mut acked = None;
        match receive(sock, &mut buf, tracker, &mut out, &mut acked) {
            Ok(()) | Err(Errno::EAGAIN) => {}
            Err(e) => return Err(ProcEventsError::Receive(e)),
        }
        on_events(out);
        match acked {
            Some(0) => return Ok(()),
            Some(err) => return Err(ProcEventsError::Refused(err)),
            None => {}
        }
    }
}

/// Reads datagrams until the socket would block. `acked` gets the error code of an
/// acknowledgement, if one arrives.
fn receive<S: procfs::ProcSource>(
    sock: &OwnedFd,
    buf: &mut [u8],
    tracker: &mut tracker::Tracker<S>,
    out: &mut Vec<EventBody>,
    acked: &mut Option<u32>,
) -> Result<(), Errno> {
    loop {
        let (n, from) = match recvfrom::<NetlinkAddr>(sock.as_raw_fd(), buf) {
            Ok(r) => r,
            Err(Errno::EINTR) => continue,
            Err(Errno::ENOBUFS) => {
                tracker.on_lost("ENOBUFS (netlink receive buffer overrun)", out);
                continue;
            }
            Err(e) => return Err(e),
        };
        // Only the kernel (port id 0) speaks for the proc connector.
        if from.is_some_and(|a| a.pid() != 0) {
            continue;
        }
        match wire::parse_datagram(buf.get(..n).unwrap_or_default()) {
            Ok(events) => {
                for ev in events {
                    if let wire::ProcEvent::Ack { err } = ev {
                        *acked = Some(err);
                    }
                    tracker.on_event(ev, out);
                }
            }
            Err(e) => {
                tracker.count_malformed();
                tracing::debug!(error = %e, "malformed proc connector datagram");
            }
        }
    }
}

fn emit_all(audit: &AuditSink, out: Vec<EventBody>) {
    for body in out {
        audit.emit(body);
    }
}

/// The watcher thread: poll the socket and the stop pipe; on stop, drain with a grace.
fn run<S: procfs::ProcSource>(
    sock: OwnedFd,
    stop_rx: OwnedFd,
    mut tracker: tracker::Tracker<S>,
    audit: AuditSink,
    guard: Option<ExecGuard>,
) -> ProcStats {
    let mut buf = vec![0u8; RECV_BUF];
    let mut stop_deadline: Option<Instant> = None;
    loop {
        let timeout = match stop_deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::from(u16::try_from(left).unwrap_or(u16::MAX))
            }
        };
        // Once stopping, the stop pipe stays readable (hung up): poll the socket alone.
        let mut fds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        if stop_deadline.is_none() {
            fds.push(PollFd::new(stop_rx.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "poll on proc connector failed");
                break;
            }
        }
        let stop_signalled = fds.get(1).and_then(PollFd::any).unwrap_or(false);
        let mut out = Vec::new();
        match receive(&sock, &mut buf, &mut tracker, &mut out, &mut None) {
            Ok(()) | Err(Errno::EAGAIN) => {}
            Err(e) => {
                tracing::warn!(error = %e, "read proc connector failed");
                emit_all(&audit, out);
                break;
            }
        }
        emit_all(&audit, out);
        let execs = tracker.take_exec_events();
        if let Some(confirm) = guard.as_ref().and_then(|g| g.confirm.as_ref()) {
            for host_pid in execs {
                confirm.on_exec(host_pid);
            }
        }
        for (host_pid, exe, guest_pid) in tracker.take_execs() {
            if let (Some(guard), Some(exe)) = (&guard, exe) {
                guard.check(host_pid, &exe, guest_pid);
            }
        }
        if stop_signalled && stop_deadline.is_none() {
            stop_deadline = Some(Instant::now() + STOP_GRACE);
        }
        if let Some(d) = stop_deadline {
            if tracker.root_exited() || Instant::now() >= d {
                break;
            }
        }
    }
    let mut out = Vec::new();
    tracker.finish(&mut out);
    emit_all(&audit, out);
    tracker.stats().clone()
}

#[cfg(test)]
mod tests;

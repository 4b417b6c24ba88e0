//! The host end of the guest's seccomp filter: one std thread that receives every notification
//! from the listener fd, reads what the guest asked for from `/proc/<pid>`, lets the call
//! continue, and turns it into audit events.
//!
//! Owns: the listener fd (closing it makes every notified syscall in the guest fail with
//! `ENOSYS`, so the thread runs until the run ends), the per-notification protocol
//! (`RECV` → read arguments → `ID_VALID` → record → `SEND` with `FLAG_CONTINUE`), and the
//! mapping to events:
//! - `execve`/`execveat` → an `exec` event with argv (at most [`procfs::MAX_ARGV`] entries of
//!   [`procfs::MAX_STRING`] bytes), then, once the exec happened, an `exec_ran` event with
//!   what runs (see [`exec_confirm`]);
//! - a path-changing call under [`crate::GUEST_WORKSPACE`] → no event, only an
//!   [`Attribution`] record (the workspace watcher reports it with size and hash);
//! - elsewhere on a read-only mount → a `file` event `denied`, `EROFS`;
//! - elsewhere on a writable mount → a `file` event `ok` ("allowed by the mount", not "it
//!   succeeded": the supervisor never sees the result), except device nodes and kernel
//!   interfaces (`/dev` but `/dev/shm` and `/dev/mqueue`, `/proc`, `/sys`), which are skipped;
//! - `exit_group` → an `exit` event (`source: seccomp`) when [`SupervisorOptions::exits`] says
//!   so; otherwise it continues at once, after confirming an exec still in flight for it.
//!
//! Where a write lands is judged by the path resolved as the kernel resolves it inside the
//! guest's root (`resolve`: symlinks, `..` after them, `/proc/self/root|cwd|fd/N`, `/dev/fd/N`),
//! not by its text; the text is kept as `requested` when it differs. A `file` event's `path` is
//! the path changed (the new name of a rename or link, the link of a symlink); `from` is the old
//! name of a rename, the existing file of a link, or the contents of a symlink.
//!
//! The supervisor observes: it replies `CONTINUE`, so the kernel re-reads the
//! arguments after we did (the documented seccomp_unotify TOCTOU: a second guest thread can
//! change a path between our read and the kernel's); a resolved path can therefore make a
//! record wrong, never let a write through, and `exec_ran` says what an exec really ran.
//! Unreadable arguments (the call will fault) are counted in
//! [`SupervisorStats::read_failures`], not reported. Read-only opens never reach this thread
//! (the filter lets them through in the kernel).
//! Its one exception is a refusal: under a policy that enforces exec rules, an exec of the
//! dynamic loader itself (`ld.so PROG`, a route Landlock must leave open) is failed with
//! `EACCES`; a swapped argument can only make that refusal needless, never let a call through.
//!
//! Does not own: installing the filter or receiving the listener (`idagent_guest`), the
//! workspace's contents (`fswatch`).

#![allow(unsafe_code)] // OS module: seccomp ioctls and /proc/<pid>/mem

mod exec_confirm;
mod procfs;
mod resolve;
mod syscalls;

pub use exec_confirm::{ExecConfirm, EXEC_CONFIRM_WINDOW, MAX_PENDING_EXEC_CONFIRMS};

use crate::attribution::{Actor, Attribution, Recorded};
use crate::audit::{
    AuditSink, EventBody, ExecEvent, ExitEvent, FileEvent, FileOp, Notice, Outcome,
};
use procfs::{GuestMem, Mount, Status};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use syscalls::{Call, Flags, PathArg};

/// How long a mount namespace's parsed mountinfo is reused (guests cannot mount: no caps).
const MOUNT_CACHE_TTL: Duration = Duration::from_secs(2);
/// Mount namespaces remembered at once; the cache is cleared when it would grow past this.
const MAX_MOUNT_CACHE: usize = 16;

/// What the supervisor saw over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SupervisorStats {
    /// Notifications received.
    pub notifications: u64,
    pub exec_events: u64,
    pub file_events: u64,
    /// Workspace paths recorded for the watcher instead of an event.
    pub attributions: u64,
    /// Notifications whose arguments or process could not be read (nothing was emitted).
    pub read_failures: u64,
    /// `exit` events written from `exit_group` (only with [`SupervisorOptions::exits`]).
    pub exit_events: u64,
    /// Write attempts whose path resolved (symlinks, `/proc/self/…`) to another one than its
    /// text: recorded with `requested`.
    pub resolved_elsewhere: u64,
}

/// What the supervisor records beyond execs and file writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SupervisorOptions {
    /// Write an `exit` event (`source: "seccomp"`) for every `exit_group` a guest process
    /// makes: the source of exits where the proc connector is missing. Off by default (the
    /// proc connector writes them; both on would write each exit twice).
    pub exits: bool,
}

/// The running supervisor thread. Dropping it tells the thread to stop without waiting.
#[derive(Debug)]
pub struct SupervisorHandle {
    stop: Option<UnixStream>,
    thread: Option<std::thread::JoinHandle<SupervisorStats>>,
    confirm: Arc<ExecConfirm>,
}

impl SupervisorHandle {
    /// The exec confirmations this supervisor waits for: hand it to `procevents` (its exec
    /// events confirm them sooner; see [`ExecConfirm::on_exec`]).
    pub fn exec_confirm(&self) -> Arc<ExecConfirm> {
        self.confirm.clone()
    }

    /// Asks the thread to handle the notifications already queued and stop. Only call this
    /// when the guest is gone or going: afterwards its notified syscalls fail with `ENOSYS`.
    pub fn stop(&mut self) {
        // Closing our end wakes the thread's poll with POLLHUP.
        self.stop = None;
    }

    /// Stops the thread (see [`Self::stop`]) and returns its counts.
    pub fn join(mut self) -> SupervisorStats {
        self.stop();
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// Starts the supervisor thread on `listener` (the guest filter's notification fd).
pub fn spawn(
    listener: OwnedFd,
    audit: AuditSink,
    attribution: Arc<Attribution>,
    enforcer: Arc<crate::enforce::Enforcer>,
    options: SupervisorOptions,
) -> io::Result<SupervisorHandle> {
    check_notif_sizes()?;
    let (stop, stop_rx) = UnixStream::pair()?;
    let confirm = Arc::new(ExecConfirm::new(audit.clone()));
    let supervisor = Supervisor {
        listener,
        audit,
        attribution,
        enforcer,
        options,
        confirm: confirm.clone(),
        stats: SupervisorStats::default(),
        mounts: HashMap::new(),
    };
    let thread = std::thread::Builder::new()
        .name("seccomp-supervisor".into())
        .spawn(move || supervisor.run(stop_rx))?;
    Ok(SupervisorHandle {
        stop: Some(stop),
        thread: Some(thread),
        confirm,
    })
}

/// The kernel copies its own struct sizes in and out of the ioctls; refuse to run if they
/// differ from libc's definitions rather than let it write past our structs.
fn check_notif_sizes() -> io::Result<()> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one seccomp_notif_sizes into `sizes`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let ours = (
        std::mem::size_of::<libc::seccomp_notif>(),
        std::mem::size_of::<libc::seccomp_notif_resp>(),
        std::mem::size_of::<libc::seccomp_data>(),
    );
    let kernel = (
        usize::from(sizes.seccomp_notif),
        usize::from(sizes.seccomp_notif_resp),
        usize::from(sizes.seccomp_data),
    );
    if ours != kernel {
        return Err(io::Error::other(format!(
            "seccomp notification struct sizes differ: kernel {kernel:?}, idagent {ours:?}"
        )));
    }
    Ok(())
}

struct Supervisor {
    listener: OwnedFd,
    audit: AuditSink,
    attribution: Arc<Attribution>,
    /// Labels each exec and workspace write with the policy's decision; the refusal itself is
    /// Landlock's, in the guest kernel (this thread always lets the call continue).
    enforcer: Arc<crate::enforce::Enforcer>,
    options: SupervisorOptions,
    confirm: Arc<ExecConfirm>,
    stats: SupervisorStats,
    /// Parsed mountinfo per mount namespace (`/proc/<pid>/ns/mnt`), with when it was read.
    mounts: HashMap<String, (Instant, Arc<Vec<Mount>>)>,
}

/// What one notification turned into, decided before replying and applied after.
enum Observed {
    Event(Box<EventBody>),
    /// An exec event, and what to confirm once the exec happened (absent when it will fail).
    Exec(Box<EventBody>, Option<Expectation>),
    /// Record it, and fail the call with this errno instead of letting it continue. Only ever a
    /// denial: refusing on what we read is safe even if a guest thread swaps the argument
    /// (the worst it gets is a refusal), unlike allowing on it.
    Refuse(Box<EventBody>, i32),
    Attribute(Vec<String>, Actor),
}

/// What `exec_confirm` needs to know about an exec that is about to continue.
struct Expectation {
    host_tgid: u32,
    guest_pid: i32,
    requested: String,
    before: exec_confirm::Signature,
}

enum Next {
    Continue,
    End,
}

impl Supervisor {
    fn run(mut self, stop: UnixStream) -> SupervisorStats {
        tracing::debug!("seccomp supervisor started");
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // Exec confirmations due soon bound the wait (see `exec_confirm`).
            let timeout = self.confirm.poll(Instant::now()).map_or(-1, |d| {
                i32::try_from(d.as_millis().max(1)).unwrap_or(i32::MAX)
            });
            // SAFETY: two valid pollfds for the duration of the call.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::warn!(error = %e, "seccomp supervisor poll failed");
                break;
            }
            if fds[1].revents != 0 {
                self.drain();
                break;
            }
            if fds[0].revents & libc::POLLIN != 0 {
                if let Next::End = self.handle_one() {
                    break;
                }
            } else if fds[0].revents != 0 {
                // POLLHUP: every process the filter was attached to is gone.
                break;
            }
        }
        self.confirm.flush();
        tracing::debug!(?self.stats, "seccomp supervisor stopped");
        self.stats
    }

    /// Handles what is already queued, without waiting for more.
    fn drain(&mut self) {
        loop {
            let mut fd = libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; timeout 0 never blocks.
            let ready = unsafe { libc::poll(&mut fd, 1, 0) };
            if ready <= 0 || fd.revents & libc::POLLIN == 0 {
                return;
            }
            if let Next::End = self.handle_one() {
                return;
            }
        }
    }

    fn handle_one(&mut self) -> Next {
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before RECV.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif (sizes checked in `spawn`) into `notif`.
        let rc = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut notif as *mut libc::seccomp_notif,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // Interrupted, or the target died between poll and recv.
                Some(libc::EINTR) | Some(libc::ENOENT) => Next::Continue,
                _ => {
                    tracing::debug!(error = %e, "seccomp notification receive ended");
                    Next::End
                }
            };
        }
        self.stats.notifications += 1;
        let observed = self.observe(&notif);
        // Only trust what we read if the target is still the one that made the call (the pid
        // could have been reused while we read /proc/<pid>).
        let valid = self.id_valid(notif.id);
        let refuse = match &observed {
            Some(Observed::Refuse(_, errno)) => Some(*errno),
            _ => None,
        };
        // Recorded before the reply: an exec's confirmation (which may come from another
        // thread as soon as the call continues) must find its expectation, and follow its
        // `exec` event in the log.
        match observed {
            Some(o) if valid => self.apply(o),
            Some(_) => self.stats.read_failures += 1,
            None => {}
        }
        match refuse {
            Some(errno) => self.reply_error(notif.id, errno),
            None => self.reply_continue(notif.id),
        }
        Next::Continue
    }

    fn id_valid(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: ID_VALID reads one u64 from `id`.
        let rc = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &mut id as *mut u64,
            )
        };
        rc == 0
    }

    fn reply_continue(&self, id: u64) {
        self.reply(libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        });
    }

    /// Fails the notified call with `errno` (the kernel never performs it).
    fn reply_error(&self, id: u64, errno: i32) {
        self.reply(libc::seccomp_notif_resp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        });
    }

    fn reply(&self, mut resp: libc::seccomp_notif_resp) {
        // SAFETY: SEND reads one seccomp_notif_resp (size checked in `spawn`) from `resp`.
        let rc = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp as *mut libc::seccomp_notif_resp,
            )
        };
        if rc < 0 {
            // ENOENT: the target died or a signal interrupted its syscall; nothing to do.
            tracing::debug!(error = %io::Error::last_os_error(), "seccomp reply not delivered");
        }
    }

    fn apply(&mut self, observed: Observed) {
        match observed {
            Observed::Event(body) | Observed::Refuse(body, _) => {
                let body = *body;
                match body {
                    EventBody::Exec(_) => self.stats.exec_events += 1,
                    EventBody::Exit(_) => self.stats.exit_events += 1,
                    _ => self.stats.file_events += 1,
                }
                self.audit.emit(body);
            }
            Observed::Exec(body, expect) => {
                self.stats.exec_events += 1;
                self.audit.emit(*body);
                if let Some(e) = expect {
                    self.confirm
                        .expect(e.host_tgid, e.guest_pid, e.requested, e.before);
                }
            }
            Observed::Attribute(paths, actor) => {
                for path in paths {
                    self.stats.attributions += 1;
                    if let Recorded::Evicted { first: true } =
                        self.attribution.record(&path, actor.clone())
                    {
                        self.audit.emit(EventBody::Notice(Notice {
                            what: "attribution_cap".into(),
                            detail: format!(
                                "over {} workspace paths or {} bytes of path state: the oldest \
                                 are forgotten, and later changes to them are reported without \
                                 their process",
                                crate::attribution::DEFAULT_MAX_ATTRIBUTIONS,
                                crate::attribution::DEFAULT_MAX_ATTRIBUTION_BYTES
                            ),
                        }));
                    }
                }
            }
        }
    }

    /// Reads everything the notification's event needs while the caller is still blocked.
    fn observe(&mut self, notif: &libc::seccomp_notif) -> Option<Observed> {
        let spec = syscalls::lookup(i64::from(notif.data.nr))?;
        let (pid, args) = (notif.pid, notif.data.args);
        let result = match spec.call {
            Call::Exit { code } => {
                // A process with an exec in flight is stopped here, still readable: the
                // moment to confirm a short-lived program.
                self.confirm.on_exit(pid);
                if !self.options.exits {
                    return None;
                }
                observe_exit(pid, arg(&args, code)).map(Some)
            }
            Call::Exec { target, argv } => self.observe_exec(pid, &args, target, argv).map(Some),
            Call::File {
                op,
                flags,
                target,
                from,
                from_changes,
            } => {
                let call = FileCall {
                    name: spec.name,
                    op,
                    flags,
                    target,
                    from,
                    from_changes,
                };
                self.observe_file(pid, &args, &call)
            }
        };
        result.unwrap_or_else(|e| {
            tracing::debug!(syscall = spec.name, pid, error = %e, "seccomp argument read failed");
            self.stats.read_failures += 1;
            None
        })
    }

    fn observe_exec(
        &self,
        pid: u32,
        args: &[u64; 6],
        target: PathArg,
        argv_arg: usize,
    ) -> io::Result<Observed> {
        let mem = GuestMem::open(pid)?;
        let seen = resolve::read_path(&mem, pid, args, target)?;
        // Credentials on a command line (`curl -H "Authorization: Bearer …"`) are logged as
        // fingerprints, like everywhere else in the log.
        let read = mem.read_argv(arg(args, argv_arg))?;
        let argv: Vec<String> = self.confirm.redact_argv(&read.args);
        let status = Status::read(pid)?;
        let ppid = status
            .ppid
            .and_then(|pp| u32::try_from(pp).ok())
            .and_then(|pp| Status::read(pp).ok())
            .map(|parent| procfs::guest_ppid(&status, &parent))
            .unwrap_or(0);
        // What runs, not what was named: Landlock grants by inode, so the decision is made on
        // the real path (an exec of a symlink, `/proc/self/fd/N` or `/dev/fd/N` is an exec of
        // the file behind it), resolved from the text the guest wrote, as the kernel will.
        let path = seen.lexical;
        let resolved = seen
            .written
            .as_deref()
            .and_then(|w| resolve::resolve_in_guest(pid, w, true))
            .or_else(|| procfs::real_path_in_guest(pid, &path));
        let mut error = (resolved.is_none() && procfs::exists_in_guest(pid, &path) == Some(false))
            .then(|| "ENOENT".to_owned());
        let real_path = resolved.filter(|real| *real != path);
        // The dynamic loader run as a program (`ld.so PROG`) is a route Landlock must leave
        // open: a denied one is refused here, at the syscall (a denial on what we read is safe
        // whatever a second thread does; a swap to the loader after our read is stopped after
        // the exec by `procevents::ExecGuard`). Anything else is refused by Landlock, and the
        // decision here only labels what the kernel does with the same policy.
        let decided = real_path.as_deref().unwrap_or(&path).to_owned();
        let loader = crate::procevents::is_dynamic_loader(&decided);
        let guest_pid = status.guest_tgid().unwrap_or(0);
        let mut refuse = false;
        if error.is_none() && self.enforcer.active() {
            let req = idagent_policy::Request::Exec {
                path: &decided,
                argv: &argv,
            };
            let ctx = crate::enforce::Context::pid(guest_pid);
            let how = if loader { "seccomp" } else { "landlock" };
            if let Some(d) = self.enforcer.label(&req, ctx, how) {
                if d.enforced() {
                    error = Some("EACCES".to_owned());
                    refuse = loader;
                }
            }
        }
        // An exec expected to run is confirmed after it did (see `exec_confirm`): what runs
        // now is the "before" it must differ from.
        let host_tgid = status.host_tgid().unwrap_or(pid);
        let expect = match (&error, exec_confirm::Signature::read(host_tgid)) {
            (None, Some(before)) => Some(Expectation {
                host_tgid,
                guest_pid,
                requested: decided,
                before,
            }),
            _ => None,
        };
        let event = Box::new(EventBody::Exec(ExecEvent {
            pid: guest_pid,
            ppid,
            error,
            path,
            real_path,
            argv,
            argv_truncated: read.truncated,
            argc: read.truncated.then_some(read.argc),
            caller: procfs::read_link(pid, "exe").ok(),
            uid: status.uid.unwrap_or(u32::MAX),
        }));
        Ok(if refuse {
            Observed::Refuse(event, libc::EACCES)
        } else {
            Observed::Exec(event, expect)
        })
    }

    /// `Ok(None)` when the call is not a file write worth reporting.
    fn observe_file(
        &mut self,
        pid: u32,
        args: &[u64; 6],
        call: &FileCall,
    ) -> io::Result<Option<Observed>> {
        let mem = GuestMem::open(pid)?;
        let flags_value = match call.flags {
            Flags::None => 0,
            Flags::Open(i) | Flags::Unlink(i) => arg(args, i),
            Flags::OpenHow(i) => mem.read_u64(arg(args, i))?,
        };
        let Some(op) = syscalls::file_op(call.op, call.flags, flags_value) else {
            return Ok(None);
        };
        let seen = resolve::read_path(&mem, pid, args, call.target)?;
        // Judged by where the kernel will write, not by the text: a workspace symlink to /etc,
        // `/proc/self/root/…`, `/proc/self/cwd/…`, `/dev/fd/N/…` name files elsewhere.
        let real = seen.written.as_deref().and_then(|w| {
            resolve::resolve_in_guest(pid, w, resolve::follows_last(op, flags_value))
        });
        if !seen.is_path && real.is_none() {
            // An fd that is a pipe, socket or memfd: not a file in any mount.
            return Ok(None);
        }
        let requested = real
            .as_ref()
            .filter(|r| **r != seen.lexical)
            .map(|_| seen.lexical.clone());
        let path = real.unwrap_or(seen.lexical);
        if requested.is_some() {
            self.stats.resolved_elsewhere += 1;
        }
        let from = match call.from {
            Some(f) => {
                let from = resolve::read_path(&mem, pid, args, f)?;
                // A rename's or link's old name is not followed (symlink contents are text).
                let real = match f {
                    PathArg::Raw(_) => None,
                    _ => from
                        .written
                        .as_deref()
                        .and_then(|w| resolve::resolve_in_guest(pid, w, false)),
                };
                Some(real.unwrap_or(from.lexical))
            }
            None => None,
        };
        let status = Status::read(pid)?;
        let actor = Actor {
            pid: status.guest_tgid().unwrap_or(0),
            exe: procfs::read_link(pid, "exe").unwrap_or_default(),
        };
        let changed: Vec<&String> = std::iter::once(&path)
            .chain(from.as_ref().filter(|_| call.from_changes))
            .collect();
        let outside = changed
            .iter()
            .find(|p| !procfs::is_within(p, crate::GUEST_WORKSPACE));
        let Some(decisive) = outside else {
            if let Some(denied) = self.label_write(pid, call, op, &path, from.as_ref(), &actor) {
                return Ok(Some(denied));
            }
            let paths = changed.into_iter().cloned().collect();
            return Ok(Some(Observed::Attribute(paths, actor)));
        };
        let mounts = self.mounts_of(pid)?;
        let Some(mount) = procfs::mount_for(&mounts, decisive) else {
            return Err(io::Error::other(format!("no mount holds {decisive}")));
        };
        let (outcome, errno) = if mount.read_only {
            (Outcome::Denied, Some("EROFS".to_owned()))
        } else if procfs::is_pseudo(decisive) {
            return Ok(None);
        } else {
            (Outcome::Ok, None)
        };
        Ok(Some(Observed::Event(Box::new(EventBody::File(
            FileEvent {
                op,
                path,
                requested,
                outcome,
                errno,
                size: None,
                sha256: None,
                from,
                pid: Some(actor.pid),
                exe: Some(actor.exe).filter(|e| !e.is_empty()),
                syscall: Some(call.name.to_owned()),
                node: Default::default(),
            },
        )))))
    }

    /// The policy's label for a workspace write: a `decision` event, and when the policy is
    /// enforced (so Landlock refuses it in the guest) a `file` event `denied`, `EACCES` —
    /// Landlock refusals never reach the filesystem, so the workspace watcher cannot see them.
    fn label_write(
        &self,
        pid: u32,
        call: &FileCall,
        op: FileOp,
        path: &str,
        from: Option<&String>,
        actor: &Actor,
    ) -> Option<Observed> {
        if !self.enforcer.active() {
            return None;
        }
        let creates = matches!(op, FileOp::OpenWrite | FileOp::Creat)
            && procfs::exists_in_guest(pid, path) == Some(false);
        let dir = from.is_some_and(|f| procfs::is_dir_in_guest(pid, f));
        let req = crate::policy_cmd::replay::file_request(
            op,
            path,
            from.map(String::as_str),
            dir,
            creates,
        )?;
        let decision = self.enforcer.label(
            &req.as_request(),
            crate::enforce::Context::pid(actor.pid),
            "landlock",
        )?;
        decision.enforced().then(|| {
            Observed::Event(Box::new(EventBody::File(FileEvent {
                op,
                path: path.to_owned(),
                requested: None,
                outcome: Outcome::Denied,
                errno: Some("EACCES".to_owned()),
                size: None,
                sha256: None,
                from: from.cloned(),
                pid: Some(actor.pid),
                exe: Some(actor.exe.clone()).filter(|e| !e.is_empty()),
                syscall: Some(call.name.to_owned()),
                node: Default::default(),
            })))
        })
    }

    /// `pid`'s mounts, from a short-lived cache keyed by its mount namespace.
    fn mounts_of(&mut self, pid: u32) -> io::Result<Arc<Vec<Mount>>> {
        let ns = procfs::read_link(pid, "ns/mnt")?;
        if let Some((at, mounts)) = self.mounts.get(&ns) {
            if at.elapsed() < MOUNT_CACHE_TTL {
                return Ok(mounts.clone());
            }
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
        let mounts = Arc::new(procfs::parse_mountinfo(&text));
        if self.mounts.len() >= MAX_MOUNT_CACHE {
            self.mounts.clear();
        }
        self.mounts.insert(ns, (Instant::now(), mounts.clone()));
        Ok(mounts)
    }
}

/// The parts of a file syscall's spec `observe_file` needs.
struct FileCall {
    name: &'static str,
    op: FileOp,
    flags: Flags,
    target: PathArg,
    from: Option<PathArg>,
    from_changes: bool,
}

fn arg(args: &[u64; 6], i: usize) -> u64 {
    args.get(i).copied().unwrap_or(0)
}

/// An `exit` event for the process whose thread `pid` (host) called `exit_group(code)`: it is
/// still alive, so its pid and program can be read.
fn observe_exit(pid: u32, code: u64) -> io::Result<Observed> {
    let status = Status::read(pid)?;
    Ok(Observed::Event(Box::new(EventBody::Exit(ExitEvent {
        pid: status
            .guest_tgid()
            .unwrap_or(crate::procevents::UNKNOWN_GUEST_PID),
        // The kernel keeps the low 8 bits, as wait(2) reports them.
        code: Some((code & 0xff) as i32),
        signal: None,
        exe: procfs::read_link(pid, "exe").ok(),
        source: Some("seccomp".to_owned()),
    }))))
}

#[cfg(test)]
mod smoke_tests;

/// The real path of `path` for guest process `pid` (host pid), as the guest sees it: see
/// `procfs::real_path_in_guest`.
pub fn real_path_in_guest(pid: u32, path: &str) -> Option<String> {
    procfs::real_path_in_guest(pid, path)
}

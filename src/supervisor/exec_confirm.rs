//! Confirming what an exec ran. The `exec` event is written when the syscall is made, from the
//! path idagent read; the kernel reads it again after we let the call continue, and a second
//! guest thread can change it in between. So once the exec has happened, `/proc/<pid>/exe` and
//! `cmdline` say what runs, and an `exec_ran` event records it and flags a mismatch.
//!
//! Owns: the expectations (one per process with an exec in flight, at most
//! [`MAX_PENDING_EXEC_CONFIRMS`]), the one check that decides the exec has happened — the
//! process's signature (`exe` and the code and stack addresses of its memory map, new for
//! every exec under ASLR) differs from the one read before the call continued — and the event.
//! Two sources call the check: the proc connector's exec event ([`ExecConfirm::on_exec`], from
//! `procevents`) and the supervisor itself ([`ExecConfirm::poll`], on a short bounded schedule,
//! so it works without the proc connector; and when the process makes its next exec or calls
//! `exit_group`, while it is stopped). Whichever sees the change first writes the one event.
//! The signature check keeps a late proc connector event from confirming a newer exec.
//!
//! Observation only: nothing here refuses anything. Does not own: the `exec` event (the
//! supervisor) or stopping a loader run as a program (`procevents::ExecGuard`).

use super::procfs;
use crate::audit::{AuditSink, EventBody, ExecRanEvent, Notice};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Execs waiting for confirmation at once; beyond it an exec is not confirmed (one `notice`).
pub const MAX_PENDING_EXEC_CONFIRMS: usize = 1024;
/// How long after the call continued the supervisor keeps looking for the change; an exec
/// that takes longer (or fails) is recorded `unconfirmed: not_seen`.
pub const EXEC_CONFIRM_WINDOW: Duration = Duration::from_millis(250);
/// First re-check delay; each later one doubles (1, 2, 4 … ms: at most ~9 checks per exec).
const FIRST_CHECK: Duration = Duration::from_millis(1);
/// Most bytes of `/proc/<pid>/cmdline` read.
const MAX_CMDLINE_BYTES: usize = 16 << 10;
/// Most `#!` lines followed from the requested file to the interpreter (the kernel's own
/// limit on nested interpreters is 4).
const MAX_INTERPRETER_DEPTH: usize = 4;

/// What identifies the program a process runs: different after every exec (ASLR places code
/// and stack anew; `exe` changes with the program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Signature {
    exe: Option<String>,
    maps: Option<(u64, u64, u64)>,
}

/// What a look at a process found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Probe {
    /// It runs this program.
    Runs(Signature),
    /// Alive, between programs: mid-exec its new memory map has no code or stack yet (all
    /// zero), as after its exit has begun.
    Changing,
    /// Gone, or a zombie.
    Gone,
}

impl Signature {
    /// The program `host_pid` runs now, if it runs one.
    pub(super) fn read(host_pid: u32) -> Option<Self> {
        match Self::probe(host_pid) {
            Probe::Runs(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn probe(host_pid: u32) -> Probe {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{host_pid}/stat")) else {
            return Probe::Gone;
        };
        match parse_stat(&stat) {
            None => Probe::Gone,
            Some((state, _)) if state == 'Z' || state == 'X' => Probe::Gone,
            Some((_, (0, 0, 0))) => Probe::Changing,
            Some((_, maps)) => Probe::Runs(Self {
                exe: procfs::read_link(host_pid, "exe").ok(),
                maps: Some(maps),
            }),
        }
    }
}

/// The state (field 3) and `startcode`, `endcode`, `startstack` (fields 26–28) of
/// `/proc/<pid>/stat`; the command name (field 2) may hold spaces and parentheses, so fields
/// are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, (u64, u64, u64))> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3.
    let at = |n: usize| f.get(n - 3).and_then(|v| v.parse().ok());
    let state = f.first()?.chars().next()?;
    Some((state, (at(26)?, at(27)?, at(28)?)))
}

#[derive(Debug)]
struct Expected {
    guest_pid: i32,
    requested: String,
    before: Signature,
    since: Instant,
    next_check: Instant,
    wait: Duration,
}

#[derive(Debug, Default)]
struct Pending {
    /// By host tgid (a thread's exec makes it the process's leader).
    map: HashMap<u32, Expected>,
    cap_hit: bool,
}

/// Shared between the supervisor and `procevents` (see the module docs).
#[derive(Debug)]
pub struct ExecConfirm {
    pending: Mutex<Pending>,
    audit: AuditSink,
    /// Called with (host pid, what runs, guest pid) for every confirmed exec: where the proc
    /// connector is missing, this is how a loader exec that got past the syscall refusal is
    /// still stopped (see `procevents::ExecGuard`).
    guard: std::sync::OnceLock<Hook>,
    known: std::sync::OnceLock<Arc<crate::redact::KnownSecrets>>,
}

/// A check run on what an exec actually started.
pub type ExecHook = Box<dyn Fn(i32, &str, Option<i32>) + Send + Sync>;

struct Hook(ExecHook);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecHook")
    }
}

/// Where the check was called from: written as `source`.
#[derive(Debug, Clone, Copy)]
enum Source {
    ProcConnector,
    Seccomp,
}

impl ExecConfirm {
    pub fn new(audit: AuditSink) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            audit,
            guard: std::sync::OnceLock::new(),
            known: std::sync::OnceLock::new(),
        }
    }

    /// The run's known secrets, scrubbed from every argv the supervisor logs (once; set before
    /// the guest's command starts).
    pub fn set_known(&self, known: Arc<crate::redact::KnownSecrets>) {
        let _ = self.known.set(known);
    }

    /// `argv` redacted for the log: by the rules of [`crate::redact::redact_argv`], and of the
    /// run's known values once they are set.
    pub(super) fn redact_argv(&self, argv: &[String]) -> Vec<String> {
        match self.known.get() {
            Some(known) => known.redact_argv(argv),
            None => crate::redact::redact_argv(argv),
        }
    }

    /// Installs the hook run on every confirmed exec (once; later calls are ignored).
    pub fn set_guard(&self, hook: ExecHook) {
        let _ = self.guard.set(Hook(hook));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An exec of `requested` by process `host_tgid` is about to continue; `before` is what it
    /// runs now. A previous exec still in flight for it is settled first: the process is
    /// making another call, so that exec either happened (it runs another program now) or
    /// failed (it still runs the one from before: a shell trying the next `PATH` entry).
    pub(super) fn expect(
        &self,
        host_tgid: u32,
        guest_pid: i32,
        requested: String,
        before: Signature,
    ) {
        let mut p = self.lock();
        if let Some(old) = p.map.remove(&host_tgid) {
            self.finish(host_tgid, old, Source::Seccomp);
        }
        if p.map.len() >= MAX_PENDING_EXEC_CONFIRMS {
            if !p.cap_hit {
                p.cap_hit = true;
                self.audit.emit(EventBody::Notice(Notice {
                    what: "exec_confirm_cap".into(),
                    detail: format!(
                        "{MAX_PENDING_EXEC_CONFIRMS} execs waiting for confirmation; further \
                         execs get no exec_ran record while the table is full"
                    ),
                }));
            }
            return;
        }
        let now = Instant::now();
        p.map.insert(
            host_tgid,
            Expected {
                guest_pid,
                requested,
                before,
                since: now,
                next_check: now + FIRST_CHECK,
                wait: FIRST_CHECK,
            },
        );
    }

    /// The kernel says process `host_tgid` exec'd (the proc connector's event). Confirms its
    /// expectation when the process has changed since; a late event for an older exec finds
    /// the signature unchanged and leaves a newer expectation alone.
    pub fn on_exec(&self, host_tgid: i32) {
        let Ok(tgid) = u32::try_from(host_tgid) else {
            return;
        };
        let mut p = self.lock();
        if let Some(e) = p.map.remove(&tgid) {
            if let Some(e) = self.check(tgid, e, Source::ProcConnector) {
                p.map.insert(tgid, e);
            }
        }
    }

    /// Process `host_pid` is stopped at `exit_group`: if it has an exec in flight, settle it
    /// now, while `/proc` can still be read (a short-lived program is gone a moment later).
    pub(super) fn on_exit(&self, host_pid: u32) {
        let mut p = self.lock();
        if let Some(e) = p.map.remove(&host_pid) {
            self.finish(host_pid, e, Source::Seccomp);
        }
    }

    /// Checks the expectations that are due; returns how long until the next one is.
    pub(super) fn poll(&self, now: Instant) -> Option<Duration> {
        let mut p = self.lock();
        if p.map.is_empty() {
            return None;
        }
        let due: Vec<u32> = p
            .map
            .iter()
            .filter(|(_, e)| e.next_check <= now)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            let Some(mut e) = p.map.remove(&pid) else {
                continue;
            };
            if now.duration_since(e.since) >= EXEC_CONFIRM_WINDOW {
                self.finish(pid, e, Source::Seccomp);
                continue;
            }
            e.wait *= 2;
            e.next_check = now + e.wait;
            if let Some(e) = self.check(pid, e, Source::Seccomp) {
                p.map.insert(pid, e);
            }
        }
        p.map
            .values()
            .map(|e| e.next_check.saturating_duration_since(now))
            .min()
    }

    /// Settles everything still waiting (the supervisor is stopping).
    pub(super) fn flush(&self) {
        let mut p = self.lock();
        for (pid, e) in std::mem::take(&mut p.map) {
            self.finish(pid, e, Source::Seccomp);
        }
    }

    /// `Some(e)` back when the process has not changed yet.
    fn check(&self, pid: u32, e: Expected, source: Source) -> Option<Expected> {
        match Signature::probe(pid) {
            Probe::Runs(now) if now == e.before => Some(e),
            Probe::Changing => Some(e),
            Probe::Runs(_) => {
                self.emit(pid, e, source, None);
                None
            }
            Probe::Gone => {
                self.emit(pid, e, source, Some("exited"));
                None
            }
        }
    }

    /// Final word on `e`: confirmed if the process changed, else `not_seen`.
    fn finish(&self, pid: u32, e: Expected, source: Source) {
        match Signature::probe(pid) {
            Probe::Runs(now) if now == e.before => self.emit(pid, e, source, Some("not_seen")),
            Probe::Runs(_) => self.emit(pid, e, source, None),
            Probe::Changing => self.emit(pid, e, source, Some("not_seen")),
            Probe::Gone => self.emit(pid, e, source, Some("exited")),
        }
    }

    fn emit(&self, pid: u32, e: Expected, source: Source, unconfirmed: Option<&str>) {
        let ran = match unconfirmed {
            None => procfs::read_link(pid, "exe").ok(),
            Some(_) => None,
        };
        let (argv, argv_truncated) = match &ran {
            Some(_) => {
                // The kernel sets the exe link and maps the new program before it copies the
                // arguments: an exec caught in between has an empty cmdline for a moment.
                for _ in 0..ARGV_WAIT_TRIES {
                    if argv_written(pid) {
                        break;
                    }
                    std::thread::sleep(ARGV_WAIT_STEP);
                }
                let (argv, truncated) = read_cmdline(pid);
                (self.redact_argv(&argv), truncated)
            }
            None => (Vec::new(), false),
        };
        let interpreter = ran
            .as_deref()
            .is_some_and(|ran| ran != e.requested && is_interpreter_of(pid, &e.requested, ran));
        let mismatch = ran
            .as_deref()
            .is_some_and(|ran| ran != e.requested && !interpreter);
        if let (Some(guard), Some(ran)) = (self.guard.get(), ran.as_deref()) {
            if let Ok(host) = i32::try_from(pid) {
                (guard.0)(host, ran, Some(e.guest_pid));
            }
        }
        if mismatch {
            tracing::debug!(pid, requested = %e.requested, "exec ran another program");
        }
        self.audit.emit(EventBody::ExecRan(ExecRanEvent {
            pid: e.guest_pid,
            requested: e.requested,
            ran,
            argv,
            argv_truncated,
            interpreter,
            mismatch,
            source: match source {
                Source::ProcConnector => "proc_connector",
                Source::Seccomp => "seccomp",
            }
            .into(),
            unconfirmed: unconfirmed.map(str::to_owned),
        }));
    }
}

/// How long an exec's confirmation waits for its argv to be written: 20 × 250 µs.
const ARGV_WAIT_TRIES: u32 = 20;
const ARGV_WAIT_STEP: Duration = Duration::from_micros(250);

/// Whether the process's argument area is filled in: a program always has at least one byte
/// of `cmdline` (an exec with an empty argv gets `""` from the kernel), so an empty read is an
/// exec still in progress.
fn argv_written(pid: u32) -> bool {
    use std::io::Read;
    let mut byte = [0u8; 1];
    std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|mut f| f.read(&mut byte))
        .is_ok_and(|n| n > 0)
}

/// `/proc/<pid>/cmdline` as argv (at most [`procfs::MAX_ARGV`] entries of
/// [`procfs::MAX_STRING`] bytes, [`MAX_CMDLINE_BYTES`] in all; not redacted yet), and
/// whether it was cut.
fn read_cmdline(pid: u32) -> (Vec<String>, bool) {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(format!("/proc/{pid}/cmdline")) else {
        return (Vec::new(), false);
    };
    let mut buf = Vec::new();
    let limit = MAX_CMDLINE_BYTES as u64 + 1;
    if file.take(limit).read_to_end(&mut buf).is_err() {
        return (Vec::new(), false);
    }
    let mut truncated = buf.len() > MAX_CMDLINE_BYTES;
    buf.truncate(MAX_CMDLINE_BYTES);
    let text = buf.strip_suffix(&[0]).unwrap_or(&buf);
    let mut argv = Vec::new();
    for (i, arg) in text.split(|b| *b == 0).enumerate() {
        if i >= procfs::MAX_ARGV {
            truncated = true;
            break;
        }
        let cut = arg.len() > procfs::MAX_STRING;
        truncated |= cut;
        let arg = String::from_utf8_lossy(&arg[..arg.len().min(procfs::MAX_STRING)]);
        argv.push(arg.into_owned());
    }
    // Redacted by the caller, on the whole command line: pairs (`--password X`,
    // `-u user:pass`) are only seen there.
    (argv, truncated)
}

/// Whether `ran` is the interpreter `requested` names in its `#!` line (following nested
/// interpreters), resolved in `pid`'s root. Read after the exec: a script rewritten meanwhile
/// can make this wrong, and then the record says `mismatch`, the safe side.
fn is_interpreter_of(pid: u32, requested: &str, ran: &str) -> bool {
    let mut script = requested.to_owned();
    for _ in 0..MAX_INTERPRETER_DEPTH {
        let Some(interp) = shebang(pid, &script) else {
            return false;
        };
        let real = super::resolve::resolve_in_guest(pid, &interp, true).unwrap_or(interp);
        if real == ran {
            return true;
        }
        script = real;
    }
    false
}

/// The interpreter path of `path`'s `#!` line, read inside `pid`'s root.
fn shebang(pid: u32, path: &str) -> Option<String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    let root = std::fs::File::open(format!("/proc/{pid}/root")).ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(&root, path, how).ok()?;
    let mut head = [0u8; 256];
    let n = std::fs::File::from(fd).read(&mut head).ok()?;
    parse_shebang(head.get(..n)?)
}

/// The interpreter of a `#!` line (`#!/bin/sh -e` → `/bin/sh`), as the kernel splits it.
fn parse_shebang(head: &[u8]) -> Option<String> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|b| *b == b'\n').unwrap_or(line.len())];
    let text = String::from_utf8_lossy(line);
    text.split([' ', '\t'])
        .find(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_an_odd_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123 \
                    1000 10 184467 4194304 4198400 140737 0 0 0 0 0 0 0 0 0 17 0 0 0";
        assert_eq!(parse_stat(stat), Some(('S', (4194304, 4198400, 140737))));
        assert_eq!(parse_stat("42 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn shebang_lines() {
        assert_eq!(parse_shebang(b"#!/bin/sh -e\necho"), Some("/bin/sh".into()));
        assert_eq!(
            parse_shebang(b"#!  /usr/bin/env python3"),
            Some("/usr/bin/env".into())
        );
        assert_eq!(parse_shebang(b"#!"), None);
        assert_eq!(parse_shebang(b"\x7fELF"), None);
    }

    #[test]
    fn own_process_signature_is_readable_and_stable() {
        let me = std::process::id();
        let a = Signature::read(me).expect("signature of self");
        assert_eq!(Signature::read(me), Some(a));
        assert_eq!(Signature::probe(u32::MAX - 1), Probe::Gone);
    }
}

//! Typed audit events. Field names here are the public schema (`docs/audit-log.md`): renaming
//! one is a schema change and bumps [`super::SCHEMA_VERSION`].

use serde::Serialize;
use std::collections::BTreeMap;

/// One audit record's payload; the writer adds `v`, `seq`, `ts` and `run`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    RunStart(RunStart),
    RunEnd(RunEnd),
    NetSetup(NetSetup),
    File(FileEvent),
    Exec(ExecEvent),
    Exit(ExitEvent),
    Gap(Gap),
    Notice(Notice),
}

impl EventBody {
    /// The `kind` string of this event (as serialized).
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::RunStart(_) => "run_start",
            EventBody::RunEnd(_) => "run_end",
            EventBody::NetSetup(_) => "net_setup",
            EventBody::File(_) => "file",
            EventBody::Exec(_) => "exec",
            EventBody::Exit(_) => "exit",
            EventBody::Gap(_) => "gap",
            EventBody::Notice(_) => "notice",
        }
    }
}

/// First event of every run.
#[derive(Debug, Clone, Serialize)]
pub struct RunStart {
    pub idagent_version: String,
    pub image: String,
    pub command: Vec<String>,
    pub user: String,
    pub workspace: String,
    pub limits: Limits,
    pub offline: bool,
    pub container: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub memory_bytes: i64,
    pub pids: i64,
    pub timeout_secs: Option<u64>,
}

/// Last event of every run; `counts` (events per kind, this one included) is filled in by the
/// writer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunEnd {
    /// The guest's exit code; absent when the run ended before the guest did.
    pub exit_code: Option<i64>,
    /// Why the run ended: `exited`, `timeout`, `interrupted` or `error`.
    pub reason: String,
    pub duration_ms: u64,
    pub counts: BTreeMap<&'static str, u64>,
    /// Packets the guest sent into its TUN that were dropped, and their bytes.
    pub tun_packets_dropped: u64,
    pub tun_bytes_dropped: u64,
    /// Packets that left by another interface and were dropped by the guest's firewall
    /// (iptables/ip6tables counters of the final DROP rules), when they could be read.
    pub firewall_packets_dropped: Option<u64>,
}

/// How the guest's network was sealed.
#[derive(Debug, Clone, Serialize)]
pub struct NetSetup {
    pub tun: String,
    pub mtu: u32,
    pub guest_addrs: Vec<String>,
    pub gateway_addrs: Vec<String>,
    pub routes: Vec<String>,
    /// sha256 of the iptables/ip6tables rules applied in the guest's namespace.
    pub rules_sha256: String,
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    /// A new file appeared (reported once it was closed after writing, with its content hash).
    Create,
    /// An existing file was written and closed.
    Modify,
    Delete,
    Rename,
    Mkdir,
    Rmdir,
    /// Attempts seen at the syscall boundary (outside the workspace).
    OpenWrite,
    Creat,
    Unlink,
    Link,
    Symlink,
    Chmod,
    Chown,
    Truncate,
    Mknod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Denied,
}

/// A file event: a change under `/tmp/workspace` (`outcome: ok`) or a write attempt elsewhere.
#[derive(Debug, Clone, Serialize)]
pub struct FileEvent {
    pub op: FileOp,
    /// Absolute path as the guest sees it.
    pub path: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// For renames: the old path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Guest pid (as the guest sees it) of the process that did it, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The syscall that was attempted, for attempts seen at the syscall boundary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
}

/// A program execution in the guest (recorded when the exec syscall is made).
#[derive(Debug, Clone, Serialize)]
pub struct ExecEvent {
    pub pid: i32,
    pub ppid: i32,
    pub path: String,
    pub argv: Vec<String>,
    /// The executable that made the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    pub uid: u32,
    /// `ENOENT` when `path` does not exist in the guest's filesystem, so the exec is bound to
    /// fail (a shell or `execvp` searching `PATH` makes such attempts). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A guest process ended.
#[derive(Debug, Clone, Serialize)]
pub struct ExitEvent {
    pub pid: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// Events that were lost; `seq` stays contiguous and this record says how many are missing.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub dropped: u64,
    pub reason: String,
}

/// Something a reviewer should know that is not one of the events above (an observer that
/// stopped, a cap that was hit, a teardown step that failed).
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub what: String,
    pub detail: String,
}

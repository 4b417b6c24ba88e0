//! Typed audit events. Field names here are the public schema (`docs/audit-log.md`): renaming
//! one is a schema change and bumps [`super::SCHEMA_VERSION`].

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// One audit record's payload; the writer adds `v`, `seq`, `ts` and `run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    RunStart(RunStart),
    RunEnd(RunEnd),
    NetSetup(NetSetup),
    File(FileEvent),
    Exec(ExecEvent),
    ExecRan(ExecRanEvent),
    Exit(ExitEvent),
    Gap(Gap),
    Notice(Notice),
    Dns(DnsEvent),
    Tcp(TcpEvent),
    Udp(UdpEvent),
    Tls(TlsEvent),
    Http(HttpEvent),
    Ws(WsEvent),
    Blocked(BlockedEvent),
    Decision(DecisionEvent),
    /// A `kind` this reader does not know (a newer writer's): its fields are skipped. Never
    /// written.
    #[serde(other, skip_serializing)]
    Unknown,
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
            EventBody::ExecRan(_) => "exec_ran",
            EventBody::Exit(_) => "exit",
            EventBody::Gap(_) => "gap",
            EventBody::Notice(_) => "notice",
            EventBody::Dns(_) => "dns",
            EventBody::Tcp(_) => "tcp",
            EventBody::Udp(_) => "udp",
            EventBody::Tls(_) => "tls",
            EventBody::Http(_) => "http",
            EventBody::Ws(_) => "ws",
            EventBody::Blocked(_) => "blocked",
            EventBody::Decision(_) => "decision",
            EventBody::Unknown => "unknown",
        }
    }
}

/// First event of every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStart {
    pub idagent_version: String,
    pub image: String,
    pub command: Vec<String>,
    pub user: String,
    pub workspace: String,
    pub limits: Limits,
    pub offline: bool,
    pub container: String,
    /// Which observers this run has (absent in logs written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation: Option<Observation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: i64,
    pub pids: i64,
    pub timeout_secs: Option<u64>,
    /// CPUs the guest may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Size of the workspace tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_bytes: Option<u64>,
    /// The audit log's byte cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_bytes: Option<u64>,
}

/// Which observers a run had, said in `run_start` (planned) and `run_end` (what ran), so a
/// reviewer never mistakes a missing record for a missing action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Observation {
    /// The seccomp supervisor: execs, write attempts outside the workspace.
    pub seccomp: bool,
    /// The workspace watcher: every change under /tmp/workspace.
    pub fswatch: bool,
    /// The kernel's proc connector: every fork, exec and exit. It answers only in the initial
    /// network namespace.
    pub proc_connector: bool,
    /// Where `exit` events come from: `proc_connector` (every process), or
    /// `init+seccomp` (processes init reaped, with code or signal, and every `exit_group`
    /// with its code; a process killed by a signal and reaped by its own parent is not seen).
    pub exits: String,
    /// Landlock enforces the policy's file and exec rules in the guest.
    pub landlock: bool,
    /// What is not observed in this run, and why (empty when everything is).
    pub missing: Vec<String>,
}

/// Last event of every run; `counts` (events per kind, this one included) is filled in by the
/// writer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunEnd {
    /// The guest's exit code; absent when the run ended before the guest did.
    pub exit_code: Option<i64>,
    /// Why the run ended: `exited`, `timeout`, `interrupted` or `error`.
    pub reason: String,
    pub duration_ms: u64,
    pub counts: BTreeMap<String, u64>,
    /// Packets the guest sent into its TUN, and what idagent's stack sent back.
    pub tun_packets_in: u64,
    pub tun_packets_out: u64,
    /// Guest packets the stack dropped (malformed, unsupported, over a cap).
    pub tun_packets_dropped: u64,
    /// Packets written to the pcapng, and packets it had to drop (queue or file cap).
    pub pcap_packets: Option<u64>,
    pub pcap_packets_dropped: Option<u64>,
    /// Packets that left by another interface and were dropped by the guest's firewall
    /// (iptables/ip6tables counters of the final DROP rules), when they could be read.
    pub firewall_packets_dropped: Option<u64>,
    /// The observers that ran (see `run_start.observation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observation: Option<Observation>,
}

/// How the guest's network was sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetSetup {
    pub tun: String,
    pub mtu: u32,
    pub guest_addrs: Vec<String>,
    pub gateway_addrs: Vec<String>,
    pub routes: Vec<String>,
    /// sha256 of the iptables/ip6tables rules applied in the guest's namespace.
    pub rules_sha256: String,
    /// SHA-256 fingerprint of the run's interception CA (absent with `--tls passthrough`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Workspace metadata changed with the content and mode unchanged: extended attributes,
    /// owner, link count or timestamps (inotify `IN_ATTRIB`, or a scan that saw only the
    /// ctime move). `chmod` (above) is used when the mode changed, with the new `mode`.
    Attrib,
}

/// The type of a workspace entry that is neither a regular file nor a directory (those are
/// implied by the op: `mkdir`/`rmdir` are directories, the rest regular files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    Symlink,
    Fifo,
    Socket,
    Device,
    #[serde(other)]
    Other,
}

/// What the workspace watcher learnt about the entry itself, beyond its content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileNode {
    /// Set for symlinks, FIFOs, sockets and device nodes; absent for files and directories.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub file_type: Option<FileType>,
    /// A symlink's target as stored (never resolved), lossy UTF-8, cut to
    /// `fswatch::MAX_LINK_TARGET_BYTES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Permission bits in octal, 4 digits (`"4755"` is setuid): on `create`, `mkdir` and
    /// `chmod` events of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Denied,
}

/// A file event: a change under `/tmp/workspace` (`outcome: ok`) or a write attempt elsewhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEvent {
    pub op: FileOp,
    /// Absolute path as the guest sees it. For attempts seen at the syscall boundary, the path
    /// resolved as the kernel resolves it inside the guest's root (symlinks, `/proc/self/root`,
    /// `/proc/self/cwd`, `/dev/fd/N`), when it could be resolved.
    pub path: String,
    /// The path as the guest wrote it (joined to its cwd or dirfd, `.`/`..` removed by text),
    /// when it differs from `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
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
    /// Type, link target and mode, for workspace events.
    #[serde(flatten)]
    pub node: FileNode,
}

/// A program execution in the guest (recorded when the exec syscall is made; what ran is the
/// [`ExecRanEvent`] after it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecEvent {
    /// Guest pid of the process (also when a thread made the call: the exec makes it the
    /// process's leader).
    pub pid: i32,
    pub ppid: i32,
    pub path: String,
    /// The file `path` resolves to in the guest (symlinks, `/proc/self/fd/N`), when it differs
    /// from `path`: what a decision is made on, and what `exec_ran` expects to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_path: Option<String>,
    /// `argv` was cut to the caps (entries or bytes); `argc` then says how many there were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argc: Option<usize>,
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

/// What an exec actually ran, read from `/proc/<pid>` after the exec happened: the `exec`
/// event is written when the syscall is made, and a second guest thread can change the path
/// between idagent's read and the kernel's. One per `exec` that was expected to succeed, for
/// the same `pid`, after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRanEvent {
    /// Guest pid (the process's, also when a thread made the call).
    pub pid: i32,
    /// What the `exec` event says should run: its `real_path`, else its `path`.
    pub requested: String,
    /// `/proc/<pid>/exe` after the exec; absent when it could not be read (see `unconfirmed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran: Option<String>,
    /// `/proc/<pid>/cmdline` after the exec (capped like an exec's argv, credentials redacted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    /// `ran` is the interpreter named by `requested`'s `#!` line (a script), not a mismatch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interpreter: bool,
    /// `ran` is neither `requested` nor its interpreter: the `exec` record names the wrong
    /// program (its path was swapped after idagent read it).
    pub mismatch: bool,
    /// Who saw the exec happen: `proc_connector` (the kernel's exec event) or `seccomp` (the
    /// supervisor, watching `/proc/<pid>` change after it let the call continue).
    pub source: String,
    /// Why `ran` is missing: `exited` (the process was gone before it could be read) or
    /// `not_seen` (no change within the bound: the exec most likely failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<String>,
}

/// A guest process ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitEvent {
    pub pid: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Who saw the exit: absent for the proc connector, `init` (reaped by the guest's PID 1)
    /// or `seccomp` (the process's `exit_group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Events that were lost; `seq` stays contiguous and this record says how many are missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gap {
    pub dropped: u64,
    pub reason: String,
}

/// Something a reviewer should know that is not one of the events above (an observer that
/// stopped, a cap that was hit, a teardown step that failed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notice {
    pub what: String,
    pub detail: String,
}

/// Identifies one guest flow across its `tcp`, `tls` and `http` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FlowId(pub u64);

impl std::fmt::Display for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "f{}", self.0)
    }
}

/// A DNS query the guest made (any resolver address, UDP or TCP) and idagent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsEvent {
    /// `udp` or `tcp`.
    pub transport: Cow<'static, str>,
    /// The resolver address the guest asked (any address: idagent answers for all).
    pub server: String,
    #[serde(flatten)]
    pub data: crate::dns::DnsEventData,
    /// Set on the one record that stands for identical refusals counted after this one's
    /// first occurrence (`super::repeat`).
    #[serde(flatten, default)]
    pub repeat: Repeat,
}

/// The aggregation fields of a `blocked` or refused `dns` record: absent on a record that
/// stands for itself; on a summary, how many identical records it stands for and when the
/// first and last of them happened (RFC 3339 UTC). See `super::repeat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ts: Option<String>,
}

impl Repeat {
    /// How many occurrences the record stands for: 1, or `repeated` for a summary.
    pub fn occurrences(&self) -> u64 {
        self.repeated.unwrap_or(1)
    }
}

/// A guest TCP connection: one event when it opens, one when it closes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpEvent {
    pub flow: FlowId,
    /// `open` or `close`.
    pub phase: Cow<'static, str>,
    pub src: String,
    /// The original destination the guest dialled.
    pub dst: String,
    /// The name the guest resolved for `dst`, when it did (`api.openai.com:443`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where idagent connected on the guest's behalf (after the upstream map).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// What the gateway found on the flow: `http`, `tls`, `relay`, `proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_up: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_down: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    /// First bytes each way of a flow that is neither HTTP nor TLS (escaped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bytes_up: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bytes_down: Option<String>,
}

/// A guest UDP flow (other than DNS), logged when it goes idle or the run ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UdpEvent {
    pub src: String,
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub datagrams_up: u64,
    pub datagrams_down: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// A TLS session on a guest flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsEvent {
    pub flow: FlowId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The protocol agreed with the guest (ALPN), when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// The ALPN protocols the guest offered in its ClientHello, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn_offered: Vec<String>,
    /// Who ended a handshake that failed: `idagent` (e.g. no application protocol in common,
    /// a policy denial, a timeout) or `guest` (it rejected our certificate or aborted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_by: Option<String>,
    /// `intercepted`, `passthrough`, `denied` (by the policy) or `rejected` (the handshake
    /// with the guest failed; `refused_by` and `error` say who ended it and why).
    pub mode: Cow<'static, str>,
    /// Upstream certificate verification: `ok`, `failed: …`, or absent when not dialled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_verify: Option<String>,
    /// The protocol the upstream agreed, when idagent connected to it before answering the
    /// guest's handshake (a guest that offered `h2`: it is offered what the upstream speaks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_alpn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One HTTP exchange, logged when the response body ends (or fails).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpEvent {
    pub flow: FlowId,
    /// Where idagent sent this request (`addr:port`, after the upstream map); absent when it
    /// sent it nowhere (refused by idagent: 403, 421; the dial failed; a `CONNECT`, whose
    /// tunnel is a flow of its own). Per request: keep-alive requests may go to different
    /// upstreams (explicit proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The SNI of the guest's TLS session that carried the request; absent for plain HTTP
    /// and for TLS without SNI. `url` holds the `Host` (or `:authority`) the request named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    pub method: String,
    /// Full URL, credentials in it redacted to fingerprints.
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub req_headers: Vec<(String, String)>,
    pub resp_headers: Vec<(String, String)>,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub req_sha256: String,
    pub resp_sha256: String,
    /// The first `--capture-bytes` of each body (lossy UTF-8, credentials redacted).
    pub req_body: String,
    pub resp_body: String,
    /// Bare fingerprints of the credentials seen in this exchange (headers, URL, bodies), one
    /// per distinct secret; always written, `[]` when there are none. Read back from older
    /// logs where it was absent or `null` as `[]`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub credentials: Vec<String>,
    /// JSON-RPC 2.0 (MCP) facts of the exchange, when its request body was a JSON-RPC call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonrpc: Option<JsonRpcInfo>,
    /// gRPC facts of the exchange (request `content-type: application/grpc…`): the
    /// service and method from the path, the status from the trailers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcInfo>,
    /// The HTTP version of the guest's leg (`HTTP/1.1`, `HTTP/2`), and of the upstream leg
    /// when there was one. Absent in logs written before they existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_version: Option<String>,
    /// Request and response trailers (HTTP/2, chunked HTTP/1.1), redacted like headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub req_trailers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resp_trailers: Vec<(String, String)>,
    /// `upgrade` for a 101 switch (WebSocket), `error` when the exchange failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub duration_ms: u64,
}

/// One WebSocket message on an upgraded HTTP/1.1 connection (`http` record with `note:
/// upgrade`); control frames (close, ping, pong) are messages of their own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WsEvent {
    pub flow: FlowId,
    /// `up` (guest → server) or `down`.
    pub direction: Cow<'static, str>,
    /// `text`, `binary`, `close`, `ping` or `pong`.
    pub opcode: Cow<'static, str>,
    /// Payload bytes of the whole message (all fragments, unmasked).
    pub size: u64,
    pub sha256: String,
    /// The first bytes of the message (lossy UTF-8 for text, escaped for binary, credentials
    /// redacted); for `close`, the reason. Empty when `compressed`.
    #[serde(default)]
    pub first: String,
    /// permessage-deflate: `size` and `sha256` are of the compressed bytes, and `first` is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compressed: bool,
    /// The status code of a `close` that carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Fingerprints of credentials seen in `first`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
}

/// What an exchange said in JSON-RPC 2.0 (the transport of MCP's tool calls).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JsonRpcInfo {
    /// The call's `method` (of the first call, for a batch).
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A batch's length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    /// For `tools/call`: the tool's name and its arguments (JSON text, redacted, cut at 1 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// JSON-RPC messages in the answer (JSON or SSE), when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_messages: Option<u64>,
    /// The answer's `error.code`, when the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// MCP's `result.isError` (a tool's own failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_error: Option<bool>,
}

/// What a gRPC call was: `/{service}/{method}` and its `grpc-status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcInfo {
    /// Fully qualified service, e.g. `helloworld.Greeter`.
    pub service: String,
    pub method: String,
    /// `grpc-status` from the response trailers (or a trailers-only response's headers);
    /// absent when the call ended without one (reset, cut off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    /// `grpc-message`, percent-decoded and redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Length-prefixed messages seen each way (counted from the message framing).
    pub req_messages: u64,
    pub resp_messages: u64,
}

/// Something the guest tried that idagent refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockedEvent {
    /// `dns`, `tcp`, `udp`, `icmp`, `http`, `ip`.
    pub what: Cow<'static, str>,
    pub target: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowId>,
    /// The name the guest resolved for the target's address, when it did (absent in logs
    /// written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Datagrams this one record stands for: a refused QUIC connection is one record however
    /// many times the client retransmitted (never aggregated further into `repeated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datagrams: Option<u64>,
    /// The QUIC Destination Connection ID (hex) the refused connection was keyed by; absent
    /// when it was keyed by its 5-tuple (short header, or not parseable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic_dcid: Option<String>,
    /// See [`Repeat`].
    #[serde(flatten, default)]
    pub repeat: Repeat,
}

/// One policy decision (`idagent run --policy`): every decision point — DNS, connect, TLS,
/// HTTP, datagram, file, exec — writes exactly one per request it decides, allow or deny, in
/// report and in enforce mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionEvent {
    /// `dns`, `connect`, `tls`, `http`, `datagram`, `file` or `exec`.
    pub layer: String,
    /// `allow` or `deny`: what the policy says.
    pub verdict: String,
    /// `report` (nothing is refused because of the policy) or `enforce`.
    pub mode: String,
    /// The id of the rule that decided, or `default-deny`.
    pub rule: String,
    /// The policy denies it but the mode is `report`, so it went ahead.
    pub would_deny: bool,
    /// How a denial was enforced (`nxdomain`, `tcp_reset`, `tls_alert`, `http_403`,
    /// `http_421`, `icmp_unreachable`, `landlock`); absent when nothing was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforced_by: Option<String>,
    /// What was asked, with the fields of its layer.
    pub request: DecisionRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowId>,
    /// Guest pid, for file and exec decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

/// The request of a [`DecisionEvent`]; only the fields of its layer are present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecisionRequest {
    /// DNS name, the resolved name of a connect/datagram destination, or the HTTP host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qtype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `tcp` or `udp` for connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
    /// `http` or `https`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A gRPC call's `service/method` (http).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// An MCP `tools/call`'s tool (http); empty when the body had to be read for a tools
    /// rule but its tool could not be (over the size cap, not in time, not JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// File operation (`create_file`, `create_dir`, `write`, `remove`, `rename`,
    /// `create_special`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// A rename's old path (`path` is the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
}

/// A list that older writers left out or wrote as `null` reads as empty.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

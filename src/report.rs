//! The run report: what a reviewer reads after a run, built from `RUN_DIR/audit.jsonl` alone.
//!
//! Owns reading the audit log tolerantly ([`read_log`], over the typed reader
//! [`crate::audit::read::records`]: unknown kinds are counted and shown raw, unknown fields are
//! ignored, a torn last line or a `seq` hole becomes a warning, not an error) and in one
//! streaming pass (no record is kept after it is folded, so a log of any size is read in bounded
//! memory), folding it into a [`RunReport`] (agent tool calls, destinations, requests, files,
//! denied writes, processes, blocked attempts, policy decisions, credentials seen) and rendering it as text ([`render_text`]), JSON (`serde_json` of
//! [`RunReport`]) or one self-contained HTML page ([`render_html`], [`write_html`]).
//! It does not write or validate the audit log (that is `audit`), and it never redacts beyond
//! what `redact` already did, except that argv and commands are passed through
//! [`crate::redact::redact_text`] before they are shown (logs from before argv redaction).
//!
//! Everything in the log is guest-controlled: the text renderer replaces control characters
//! (no terminal escapes reach the reviewer's terminal) and the HTML renderer escapes every
//! value and pins a Content-Security-Policy that allows only its own inline script.
//!
//! `report --summary DIR` ([`load_summary`], [`render_summary_text`]) folds the reports of
//! every run under a folder into one table (`summary`).
//!
//! Caps: [`MAX_ROWS`] rows per table, [`MAX_TIMELINE_EVENTS`] events in the HTML timeline,
//! [`MAX_LINE_BYTES`] per log line, [`MAX_LOCATIONS`] places listed per credential.

mod assets;
mod build;
mod fields;
mod html;
mod summary;
mod text;
mod timeline;

#[cfg(test)]
mod tests;

pub use crate::audit::read::MAX_LINE_BYTES;
pub use html::{render_html, Timeline};
pub use summary::{
    load_summary, render_summary_text, DenialRow, DestinationRow, RunRow, Summary, Totals,
    SUMMARY_SCHEMA_VERSION,
};
pub use text::render_text;

use crate::audit::{LineError, Record};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the [`RunReport`] JSON shape (`--format json`).
pub const REPORT_SCHEMA_VERSION: u32 = 1;
/// Rows kept per table; the rest are counted in [`RunReport::omitted`].
pub const MAX_ROWS: usize = 10_000;
/// Events shown in the HTML timeline; the rest are counted in a note.
pub const MAX_TIMELINE_EVENTS: usize = 20_000;
/// Places listed per credential (URLs, argv); the rest are counted.
pub const MAX_LOCATIONS: usize = 16;
/// Warnings about the log itself kept; the rest are counted in the last one.
const MAX_WARNINGS: usize = 100;

/// The report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("open audit log {path}: {source}")]
    OpenLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read audit log {path}: {source}")]
    ReadLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--summary`: the run folders under the folder could not be listed.
    #[error(transparent)]
    Tree(#[from] crate::policy_cmd::tree::TreeError),
    #[error("write report {path}: {source}")]
    WriteHtml {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything a reviewer needs from one run (the `--format json` output).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// [`REPORT_SCHEMA_VERSION`].
    pub report_version: u32,
    pub run: Option<String>,
    pub idagent_version: Option<String>,
    pub image: Option<String>,
    /// The guest command (argv), credentials redacted.
    pub command: Vec<String>,
    pub user: Option<String>,
    pub offline: Option<bool>,
    /// RFC 3339 times of `run_start` and of `run_end` (or of the last record).
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_ms: Option<u64>,
    /// The guest's exit code; absent when the run ended before the guest did.
    pub exit_code: Option<i64>,
    /// `exited`, `timeout`, `interrupted`, `error`; absent when the log has no `run_end`.
    pub end_reason: Option<String>,
    /// Records per kind, as counted in the file.
    pub counts: BTreeMap<String, u64>,
    /// MCP / JSON-RPC and gRPC calls (`http` records with `jsonrpc` or `grpc`), in log order.
    pub tool_calls: Vec<ToolCall>,
    pub destinations: Vec<Destination>,
    pub requests: Vec<Request>,
    pub files_written: Vec<FileWrite>,
    pub writes_denied: Vec<DeniedWrite>,
    pub processes: Vec<Process>,
    pub blocked: Vec<Blocked>,
    /// `decision` records of a run under `--policy`.
    pub decisions: Decisions,
    pub credentials: Vec<Credential>,
    /// Distinct credentials per fingerprint kind (`bearer`, `cookie` …).
    pub credential_kinds: BTreeMap<String, u64>,
    /// `notice` and `gap` records.
    pub notices: Vec<NoticeRow>,
    /// Problems with the log itself (torn line, `seq` hole, missing `run_end` …).
    pub warnings: Vec<String>,
    /// Rows left out of a table over [`MAX_ROWS`], per table name.
    pub omitted: BTreeMap<String, u64>,
}

/// One remote party: a name the guest resolved or dialled, or a bare address.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Destination {
    /// The DNS name (from DNS, the flow, SNI or the HTTP host); absent for bare addresses.
    pub name: Option<String>,
    /// Addresses answered by DNS or dialled.
    pub addresses: Vec<String>,
    pub ports: Vec<u16>,
    pub dns_queries: u64,
    pub tcp_flows: u64,
    pub udp_flows: u64,
    pub requests: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// What the gateway found on the flows (`http`, `tls`, `relay` …), plus `udp`.
    pub protocols: Vec<String>,
    /// TLS modes seen (`intercepted`, `passthrough`, `rejected`).
    pub tls_modes: Vec<String>,
    /// `allowed`, `blocked` (nothing got through) or `partly blocked`.
    pub verdict: String,
    pub blocked: bool,
    pub blocked_reasons: Vec<String>,
}

/// One HTTP exchange.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Request {
    pub seq: u64,
    /// Milliseconds since `run_start`.
    pub at_ms: Option<i64>,
    pub flow: Option<u64>,
    pub method: String,
    pub url: String,
    pub status: Option<u64>,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub duration_ms: Option<u64>,
    pub note: Option<String>,
    /// Fingerprints seen in this exchange.
    pub credentials: Vec<String>,
}

/// One JSON-RPC (MCP) or gRPC call: an `http` record whose `jsonrpc` or `grpc` is set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolCall {
    pub seq: u64,
    /// Milliseconds since `run_start` (of the record, written when the exchange ended).
    pub at_ms: Option<i64>,
    pub flow: Option<u64>,
    /// The host of the request's URL.
    pub server: String,
    /// `MCP` (a method of MCP's namespace: `tools/…`, `initialize`, `notifications/…` …),
    /// `JSON-RPC` (any other method) or `gRPC`.
    pub protocol: String,
    /// Whether this is an MCP `tools/call` (the tool name is [`ToolCall::call`]).
    pub tool_call: bool,
    /// The tool's name for `tools/call`, else the JSON-RPC method, or gRPC `service/method`.
    pub call: String,
    /// The JSON-RPC id; absent for a notification and for gRPC.
    pub id: Option<String>,
    /// A JSON-RPC batch's length (the row describes its first call).
    pub batch: Option<u64>,
    /// `tools/call` arguments as the log has them (JSON text, redacted, cut by the gateway).
    pub arguments: Option<String>,
    pub http_status: Option<u64>,
    /// The JSON-RPC answer's `error.code`.
    pub error_code: Option<i64>,
    /// MCP's `result.isError`.
    pub tool_error: Option<bool>,
    /// `grpc-status`, and `grpc-message`.
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<String>,
    /// gRPC messages each way.
    pub grpc_messages: Option<(u64, u64)>,
    /// The outcome in words: `ok`, `tool error (isError)`, `error -32601 method not found`,
    /// `7 PERMISSION_DENIED: …`, `no answer` …
    pub outcome: String,
    /// Whether the call failed (HTTP ≥ 400, a JSON-RPC error, `isError`, gRPC status ≠ 0).
    pub failed: bool,
    /// `denied (rule R)` when the policy refused it, `would deny (rule R, report mode)`.
    pub policy: Option<String>,
    /// Whether the policy refused it (the gateway answered 403).
    pub refused: bool,
}

impl ToolCall {
    /// An invocation (an MCP `tools/call` or a gRPC call), as opposed to the rest of an MCP
    /// session (`initialize`, `tools/list`, notifications) or other JSON-RPC.
    pub fn is_invocation(&self) -> bool {
        self.tool_call || self.protocol == "gRPC"
    }
}

/// A change the guest made where it may write (the workspace, scratch tmpfs).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileWrite {
    pub seq: u64,
    pub at_ms: Option<i64>,
    pub op: String,
    pub path: String,
    /// The old path of a rename.
    pub from: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub pid: Option<i64>,
    pub exe: Option<String>,
}

/// A write the read-only filesystem refused.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeniedWrite {
    pub seq: u64,
    pub at_ms: Option<i64>,
    pub op: String,
    pub path: String,
    pub errno: Option<String>,
    pub pid: Option<i64>,
    pub exe: Option<String>,
    pub syscall: Option<String>,
}

/// One exec, joined with the exit of its pid.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Process {
    pub seq: u64,
    pub at_ms: Option<i64>,
    pub pid: Option<i64>,
    pub ppid: Option<i64>,
    pub path: String,
    /// Credentials redacted.
    pub argv: Vec<String>,
    pub caller: Option<String>,
    /// `ENOENT` when the exec was bound to fail.
    pub error: Option<String>,
    pub exit_code: Option<i64>,
    pub exit_signal: Option<i64>,
    /// Whether an `exit` record was seen for this process.
    pub exited: bool,
}

/// Something idagent refused, aggregated by what, target and reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Blocked {
    /// Sequence number of the first occurrence.
    pub seq: u64,
    pub what: String,
    pub target: String,
    pub reason: String,
    pub count: u64,
}

/// What the policy decided: enforced denials first, then what it would have denied in report
/// mode, then how many requests it allowed per layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Decisions {
    /// `verdict: deny` in `mode: enforce`, aggregated, in order of first occurrence.
    pub denied: Vec<DecisionRow>,
    /// `would_deny: true` (report mode), aggregated, in order of first occurrence.
    pub would_deny: Vec<DecisionRow>,
    /// Allowed decisions per layer (`dns`, `connect`, `http` …).
    pub allowed: BTreeMap<String, u64>,
}

impl Decisions {
    /// Whether the log had no decision at all (a run without `--policy`).
    pub fn is_empty(&self) -> bool {
        self.denied.is_empty() && self.would_deny.is_empty() && self.allowed.is_empty()
    }
}

/// Identical decisions (same layer, request, rule and enforcement) with their count.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecisionRow {
    /// Sequence number of the first occurrence.
    pub seq: u64,
    pub layer: String,
    /// The request in one line: `GET https://host:443/path`, `dns name A`, `exec /bin/sh`,
    /// `create_dir /tmp/workspace/.ssh`, `connect 10.1.2.3:443`.
    pub request: String,
    /// The rule id that decided, or `default-deny`.
    pub rule: String,
    /// How a denial was enforced (`nxdomain`, `tcp_reset`, `landlock` …).
    pub enforced_by: Option<String>,
    pub count: u64,
}

/// One distinct credential fingerprint and where it was seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Credential {
    /// `KIND:…TAIL:sha256=HEX8`.
    pub fingerprint: String,
    pub kind: String,
    /// Records it appeared in.
    pub occurrences: u64,
    /// Where: `GET https://host/path`, `argv of pid 8 (/usr/bin/curl)` … (at most
    /// [`MAX_LOCATIONS`]; `locations_omitted` counts the rest).
    pub locations: Vec<String>,
    pub locations_omitted: u64,
}

/// A `notice` or `gap` record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NoticeRow {
    pub seq: u64,
    pub at_ms: Option<i64>,
    /// The notice's `what`, or `gap`.
    pub what: String,
    pub detail: String,
}

impl RunReport {
    /// Pretty JSON (the `--format json` output), with a trailing newline.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        let mut out = serde_json::to_string_pretty(self).unwrap_or_default();
        out.push('\n');
        out
    }

    /// Short verdict line: counts a reviewer scans first.
    pub fn headline(&self) -> Vec<(&'static str, usize)> {
        let calls = self.tool_calls.iter();
        vec![
            ("tool calls", calls.filter(|c| c.is_invocation()).count()),
            ("requests", self.requests.len()),
            ("destinations", self.destinations.len()),
            ("blocked", self.blocked.len()),
            ("denied by policy", self.decisions.denied.len()),
            ("writes denied", self.writes_denied.len()),
            ("files written", self.files_written.len()),
            ("processes", self.processes.len()),
            ("credentials", self.credentials.len()),
        ]
    }
}

/// The audit log of `run_dir`.
pub fn log_path(run_dir: &Path) -> PathBuf {
    run_dir.join("audit.jsonl")
}

/// Reads `path` (an `audit.jsonl`) tolerantly, handing each record to `visit` in file order;
/// returns the problems found with the log itself (torn or unparsable lines, `seq` holes).
/// Fails only when the file cannot be opened or read.
pub fn read_log(path: &Path, mut visit: impl FnMut(&Record)) -> Result<Vec<String>, ReportError> {
    let mut records = crate::audit::read::records(path).map_err(|e| ReportError::OpenLog {
        path: e.path,
        source: e.source,
    })?;
    let mut last_seq: Option<u64> = None;
    let mut warnings = Vec::new();
    while let Some(item) = records.next() {
        match item {
            Ok(record) => {
                check_seq(record.seq, &mut last_seq, records.line(), &mut warnings);
                visit(&record);
            }
            Err(LineError::Read { source, .. }) => {
                return Err(ReportError::ReadLog {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(LineError::TooLong { line }) => warnings.push(format!(
                "line {line}: longer than {MAX_LINE_BYTES} bytes, skipped"
            )),
            Err(LineError::Torn { line }) => warnings.push(format!(
                "line {line}: torn last line (the writer was stopped mid-line), skipped"
            )),
            Err(LineError::Parse { line, source }) => warnings.push(format!(
                "line {line}: not a valid record ({source}), skipped"
            )),
        }
    }
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - MAX_WARNINGS;
        warnings.truncate(MAX_WARNINGS);
        warnings.push(format!("… and {more} more warnings"));
    }
    Ok(warnings)
}

fn check_seq(seq: u64, last: &mut Option<u64>, line: u64, warnings: &mut Vec<String>) {
    match *last {
        Some(prev) if seq == prev + 1 => {}
        Some(prev) if seq > prev + 1 => warnings.push(format!(
            "seq hole: {} record(s) missing between seq {prev} and {seq} (line {line})",
            seq - prev - 1
        )),
        Some(prev) => warnings.push(format!(
            "seq out of order: {seq} after {prev} (line {line})"
        )),
        None if seq != 1 => warnings.push(format!(
            "log starts at seq {seq}: {} record(s) missing before it",
            seq.saturating_sub(1)
        )),
        None => {}
    }
    *last = Some(last.map_or(seq, |prev| prev.max(seq)));
}

/// Reads `RUN_DIR/audit.jsonl` and builds its report.
pub fn load(run_dir: &Path) -> Result<RunReport, ReportError> {
    let mut b = build::Builder::new();
    let warnings = read_log(&log_path(run_dir), |e| b.push(e))?;
    Ok(b.finish_with(warnings))
}

/// Builds the report of `run_dir` and writes it to `RUN_DIR/report.html`; returns that path.
pub fn write_html(run_dir: &Path) -> Result<PathBuf, ReportError> {
    let mut b = build::Builder::new();
    let mut timeline = Timeline::default();
    let warnings = read_log(&log_path(run_dir), |e| {
        b.push(e);
        timeline.push(e);
    })?;
    let report = b.finish_with(warnings);
    let html = render_html(&report, &timeline);
    let path = run_dir.join("report.html");
    // Owner-only, like the log it is made from.
    let write = || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?
            .write_all(html.as_bytes())
    };
    write().map_err(|source| ReportError::WriteHtml {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

//! The typed policy: rules, sections and [`Policy`] itself, plus its error type. Owns the
//! canonical order of rules (sections sort on construction, so equal policies are equal values
//! and print byte-identically) and the per-section host indexes. Does not own parsing
//! (`parse`), printing (`yaml_out`) or matching (`eval`).

use crate::host::{HostIndex, HostPattern};
use crate::kinds::{Action, FileKind, FileOp, Inspect, Mode, Protocol};
use crate::path::{PathPattern, WorkspacePath};
use serde::Serialize;
use std::collections::HashMap;

/// A policy file that could not be read: 1-based line and column, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct PolicyError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong, lowercase, naming the value.
    pub message: String,
}

/// Whether the runs the policy was learned from were observed completely.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Observation {
    /// Every event was recorded.
    #[default]
    Complete,
    /// Some events may be missing (audit gaps, caps hit...): the policy may be too narrow.
    Incomplete {
        /// Why, one line each.
        reasons: Vec<String>,
    },
}

/// Provenance of a learned rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// How many observed events this rule covers.
    pub count: u64,
    /// The runs they came from, sorted, unique.
    pub runs: Vec<String>,
    /// Earliest timestamp.
    pub first: String,
    /// Latest timestamp.
    pub last: String,
    /// Sequence number (in the audit log of the earliest run) of one such event.
    pub example_seq: u64,
}

/// The gRPC calls a `grpc` sub-rule matches: one service, one method or all of its methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrpcMatch {
    /// Fully qualified service (`helloworld.Greeter`).
    pub service: String,
    /// Method name; `None` (`"*"` in the file) = every method of the service.
    pub method: Option<String>,
}

/// One HTTP sub-rule of an `l7` network rule: a method and path (optionally restricted to
/// some MCP tools), or a gRPC service and method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpRule {
    /// Stable id; default `http:HOST:PORT:METHOD:PATH`, for a gRPC rule
    /// `grpc:HOST:PORT:SERVICE/METHOD`.
    pub id: String,
    /// Uppercase method, or `*` for any (`POST` for a gRPC rule).
    pub method: String,
    /// Compiled path pattern (`/SERVICE/METHOD` or `/SERVICE/*` for a gRPC rule).
    pub path: PathPattern,
    /// A gRPC rule: matches only gRPC calls ([`crate::Rpc::Grpc`]) of this service and method.
    pub grpc: Option<GrpcMatch>,
    /// MCP tools (sorted, unique): an allow rule then allows, of the `tools/call` requests
    /// to its endpoint, only those of a listed tool (other JSON-RPC requests, and requests
    /// without a body, as any http rule); a deny rule denies only calls of a listed tool (and
    /// calls whose tool could not be read). `None` = not an MCP rule.
    pub tools: Option<Vec<String>>,
    /// Allowed query keys (sorted); `None` = any query.
    pub query: Option<Vec<String>>,
    /// Allow or deny.
    pub action: Action,
    /// Mode override for decisions made by this rule.
    pub mode: Option<Mode>,
    /// Reviewer flags (see `risks`).
    pub risk: Vec<String>,
    /// Provenance.
    pub seen: Option<Seen>,
}

/// One network rule: a host and a port, and what may flow there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkRule {
    /// Stable id; default `net:HOST:PORT`.
    pub id: String,
    /// Host pattern.
    pub host: HostPattern,
    /// TCP port.
    pub port: u16,
    /// What the connection carries.
    pub protocol: Protocol,
    /// `l7` (each HTTP request is checked) or `l4` (the whole connection is allowed).
    pub inspect: Inspect,
    /// Allow or deny.
    pub action: Action,
    /// Mode override.
    pub mode: Option<Mode>,
    /// HTTP sub-rules (only with `inspect: l7`), canonical order.
    pub http: Vec<HttpRule>,
    /// The learner saw credentials sent to this host.
    pub credentials: bool,
    /// Reviewer flags.
    pub risk: Vec<String>,
    /// Provenance.
    pub seen: Option<Seen>,
}

/// One UDP rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpRule {
    /// Stable id; default `udp:HOST:PORT`.
    pub id: String,
    /// Host pattern.
    pub host: HostPattern,
    /// UDP port.
    pub port: u16,
    /// Allow or deny.
    pub action: Action,
    /// Mode override.
    pub mode: Option<Mode>,
    /// Reviewer flags.
    pub risk: Vec<String>,
    /// Provenance.
    pub seen: Option<Seen>,
}

/// One name that may be resolved without a network or udp rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsName {
    /// Stable id; default `dns:NAME`.
    pub id: String,
    /// Name pattern.
    pub name: HostPattern,
    /// Mode override.
    pub mode: Option<Mode>,
    /// Reviewer flags.
    pub risk: Vec<String>,
    /// Provenance.
    pub seen: Option<Seen>,
}

/// One files rule (always an allow: Landlock can only grant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRule {
    /// Stable id; default `files:PATH`.
    pub id: String,
    /// Path under `/tmp/workspace`.
    pub path: WorkspacePath,
    /// `dir` (rights on everything beneath) or `file` (this file).
    pub kind: FileKind,
    /// Granted operations, sorted, unique.
    pub allow: Vec<FileOp>,
    /// Mode override.
    pub mode: Option<Mode>,
    /// Names the learned runs created or wrote there (reviewer information).
    pub observed: Vec<String>,
    /// Reviewer flags.
    pub risk: Vec<String>,
    /// Provenance.
    pub seen: Option<Seen>,
}

/// A write the kernel refused (or that fell outside the workspace): reviewer information,
/// never an allow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DeniedWrite {
    /// Path as observed (normalised).
    pub path: String,
    /// Operation.
    pub op: FileOp,
    /// Error the guest got (`EROFS`...), when known.
    pub errno: Option<String>,
    /// How many times.
    pub count: u64,
}

/// One exec rule: a real path and the other paths that led to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecRule {
    /// Stable id; default `exec:PATH`.
    pub id: String,
    /// Resolved real path.
    pub path: String,
    /// Other spellings that led to it (sorted, unique).
    pub aliases: Vec<String>,
    /// Allow or deny.
    pub action: Action,
    /// Mode override.
    pub mode: Option<Mode>,
    /// Reviewer flags.
    pub risk: Vec<String>,
    /// Provenance.
    pub seen: Option<Seen>,
}

/// TCP destinations: `connect`, `tls` and `http` decisions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetworkSection {
    /// Mode override for the section.
    pub mode: Option<Mode>,
    rules: Vec<NetworkRule>,
    #[serde(skip)]
    pub(crate) index: HostIndex,
}

/// UDP destinations: `datagram` decisions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UdpSection {
    /// Mode override for the section.
    pub mode: Option<Mode>,
    rules: Vec<UdpRule>,
    #[serde(skip)]
    pub(crate) index: HostIndex,
}

/// Names that may be resolved beyond the network and udp hosts: `dns` decisions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsSection {
    /// Mode override for the section.
    pub mode: Option<Mode>,
    names: Vec<DnsName>,
    #[serde(skip)]
    pub(crate) index: HostIndex,
}

/// Workspace writes: `file` decisions and the Landlock plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesSection {
    /// Mode override for the section.
    pub mode: Option<Mode>,
    rules: Vec<FileRule>,
    observed_denied: Vec<DeniedWrite>,
}

/// Executables: `exec` decisions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecSection {
    /// Mode override for the section.
    pub mode: Option<Mode>,
    rules: Vec<ExecRule>,
    #[serde(skip)]
    pub(crate) index: HashMap<String, Vec<usize>>,
}

fn sort_by<T, K: Ord>(mut v: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    v.sort_by_key(|a| key(a));
    v
}

impl NetworkSection {
    /// A section in canonical order (by host, port, id; sub-rules by path, method, id).
    pub fn new(mode: Option<Mode>, rules: Vec<NetworkRule>) -> Self {
        let mut rules = sort_by(rules, |r| (r.host.to_string(), r.port, r.id.clone()));
        for r in &mut rules {
            r.http.sort_by(|a, b| {
                (a.path.as_str(), &a.method, &a.id).cmp(&(b.path.as_str(), &b.method, &b.id))
            });
        }
        let index = HostIndex::build(rules.iter().map(|r| &r.host));
        NetworkSection { mode, rules, index }
    }
    /// The rules, canonical order.
    pub fn rules(&self) -> &[NetworkRule] {
        &self.rules
    }
}

impl UdpSection {
    /// A section in canonical order (by host, port, id).
    pub fn new(mode: Option<Mode>, rules: Vec<UdpRule>) -> Self {
        let rules = sort_by(rules, |r| (r.host.to_string(), r.port, r.id.clone()));
        let index = HostIndex::build(rules.iter().map(|r| &r.host));
        UdpSection { mode, rules, index }
    }
    /// The rules, canonical order.
    pub fn rules(&self) -> &[UdpRule] {
        &self.rules
    }
}

impl DnsSection {
    /// A section in canonical order (by name, id).
    pub fn new(mode: Option<Mode>, names: Vec<DnsName>) -> Self {
        let names = sort_by(names, |n| (n.name.to_string(), n.id.clone()));
        let index = HostIndex::build(names.iter().map(|n| &n.name));
        DnsSection { mode, names, index }
    }
    /// The names, canonical order.
    pub fn names(&self) -> &[DnsName] {
        &self.names
    }
}

impl FilesSection {
    /// A section in canonical order (rules by path, kind, id; denied writes by path, op).
    pub fn new(
        mode: Option<Mode>,
        rules: Vec<FileRule>,
        observed_denied: Vec<DeniedWrite>,
    ) -> Self {
        let mut rules = sort_by(rules, |r| (r.path.clone(), r.kind, r.id.clone()));
        for r in &mut rules {
            r.allow.sort();
            r.allow.dedup();
        }
        let mut observed_denied = observed_denied;
        observed_denied.sort();
        FilesSection {
            mode,
            rules,
            observed_denied,
        }
    }
    /// The rules, canonical order.
    pub fn rules(&self) -> &[FileRule] {
        &self.rules
    }
    /// Refused writes seen while learning.
    pub fn observed_denied(&self) -> &[DeniedWrite] {
        &self.observed_denied
    }
}

impl ExecSection {
    /// A section in canonical order (by path, id).
    pub fn new(mode: Option<Mode>, rules: Vec<ExecRule>) -> Self {
        let mut rules = sort_by(rules, |r| (r.path.clone(), r.id.clone()));
        let mut index: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter_mut().enumerate() {
            r.aliases.sort();
            r.aliases.dedup();
            for p in std::iter::once(&r.path).chain(&r.aliases) {
                let slot = index.entry(p.clone()).or_default();
                if !slot.contains(&i) {
                    slot.push(i);
                }
            }
        }
        ExecSection { mode, rules, index }
    }
    /// The rules, canonical order.
    pub fn rules(&self) -> &[ExecRule] {
        &self.rules
    }
}

macro_rules! eq_ignoring_index {
    ($t:ty, $field:ident) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.mode == other.mode && self.$field == other.$field
            }
        }
        impl Eq for $t {}
    };
}
eq_ignoring_index!(NetworkSection, rules);
eq_ignoring_index!(UdpSection, rules);
eq_ignoring_index!(DnsSection, names);
eq_ignoring_index!(ExecSection, rules);

/// A whole policy: default deny, plus the rules of each section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// File format version (1).
    pub version: u32,
    /// Global mode.
    pub mode: Mode,
    /// Whether the learned runs were observed completely.
    pub observation: Observation,
    /// TCP destinations.
    pub network: NetworkSection,
    /// Extra resolvable names.
    pub dns: DnsSection,
    /// UDP destinations.
    pub udp: UdpSection,
    /// Workspace writes.
    pub files: FilesSection,
    /// Executables.
    pub exec: ExecSection,
}

/// The only file format version this crate reads and writes.
pub const VERSION: u32 = 1;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            version: VERSION,
            mode: Mode::Enforce,
            observation: Observation::Complete,
            network: NetworkSection::default(),
            dns: DnsSection::default(),
            udp: UdpSection::default(),
            files: FilesSection::default(),
            exec: ExecSection::default(),
        }
    }
}

impl Policy {
    /// The same policy with the mode forced. `Report` makes every section and rule report (a
    /// dry run never refuses); `Enforce` sets the global mode only, so explicit `report`
    /// overrides on sections and rules stay.
    pub fn with_mode_override(&self, mode: Mode) -> Policy {
        let mut p = self.clone();
        p.mode = mode;
        if mode == Mode::Report {
            p.network.mode = None;
            p.dns.mode = None;
            p.udp.mode = None;
            p.files.mode = None;
            p.exec.mode = None;
            for r in &mut p.network.rules {
                r.mode = None;
                r.http.iter_mut().for_each(|h| h.mode = None);
            }
            p.udp.rules.iter_mut().for_each(|r| r.mode = None);
            p.dns.names.iter_mut().for_each(|r| r.mode = None);
            p.files.rules.iter_mut().for_each(|r| r.mode = None);
            p.exec.rules.iter_mut().for_each(|r| r.mode = None);
        }
        p
    }

    /// Whether any files rule exists (else the workspace is read-only in enforce mode).
    pub fn has_file_rules(&self) -> bool {
        !self.files.rules.is_empty()
    }

    /// Whether any exec rule exists.
    pub fn has_exec_rules(&self) -> bool {
        !self.exec.rules.is_empty()
    }

    /// The mode a decision made in `section` takes when no rule decides.
    pub(crate) fn section_mode(&self, section: Option<Mode>) -> Mode {
        section.unwrap_or(self.mode)
    }
}

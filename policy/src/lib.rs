//! idagent's policy: the typed model, its YAML file format, the pure [`evaluate`] and the
//! learner that turns observed runs into a default-deny policy. No I/O, no tokio, no clock.
//!
//! See `policy/README.md` for the file format.
#![forbid(unsafe_code)]

mod eval;
mod explain;
mod fsplan;
mod host;
mod kinds;
mod learn;
mod model;
mod parse;
mod path;
mod request;
#[cfg(test)]
mod rpc_tests;
mod yaml_out;

pub use eval::tool_rules_apply;
pub use eval::{evaluate, nearest_rule};
pub use explain::{explain, explain_json, risks, Risk};
pub use fsplan::{granted_rights, rename_rights, required_rights, FsPlan, FsRight};
pub use host::{normalize_name, HostPattern};
pub use kinds::{Action, FileKind, FileOp, Inspect, Layer, Mode, Proto, Protocol, Scheme, Verdict};
pub use learn::{Learner, Observed};
pub use model::{
    DeniedWrite, DnsName, DnsSection, ExecRule, ExecSection, FileRule, FilesSection, GrpcMatch,
    HttpRule, NetworkRule, NetworkSection, Observation, Policy, PolicyError, Seen, UdpRule,
    UdpSection, VERSION,
};
pub use path::{is_canonical_path, PathPattern, WorkspacePath, WORKSPACE};
pub use request::{
    grpc_call, Decision, OwnedRequest, OwnedRpc, Request, Rpc, DEFAULT_DENY, NONCANONICAL_PATH,
    TOOL_NOT_ALLOWED,
};

/// A request path as the learner generalises it (numeric, UUID and 16+ hex-digit segments
/// become `{id}`), for comparing runs (`idagent diff`) by the same rule; a path that cannot be
/// a pattern comes back unchanged.
pub fn generalize_path(path: &str) -> String {
    learn::generalize_path(path).map_or_else(|| path.to_owned(), |p| p.to_string())
}

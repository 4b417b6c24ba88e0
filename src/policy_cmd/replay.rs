//! A run's audit log read back as the policy requests it made: the one mapping from the typed
//! audit schema to `idagent_policy::Request`, shared by `policy learn`, `policy check` and
//! `diff`, so the three can never disagree on what a run did.
//!
//! Owns: which events are requests (and which are not: DNS over TCP framing, the explicit
//! proxy's own port, failed execs, `decision` records), and what makes a log incomplete (a
//! `gap`, an observer `notice`, torn or unknown lines, no `run_end`). Does not own deciding
//! (`idagent_policy::evaluate`) nor learning (`idagent_policy::Learner`).

use crate::audit::read::{records, Record};
use crate::audit::{EventBody, FileOp as AuditOp, Outcome};
use idagent_policy::{FileOp, OwnedRequest, Proto, Scheme};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Notices that say nothing about what was observed (teardown bookkeeping, the guest's own
/// output being cut, back-pressure, a process label forgotten).
const BENIGN_NOTICES: [&str; 11] = [
    "firewall_counters",
    "teardown",
    crate::enforce::RECONCILED_NOTICE,
    crate::enforce::EXEC_RESOLVED_NOTICE,
    crate::fswatch::export::EXPORTED_NOTICE,
    "output_cap",
    "output_dropped",
    "flow_queue_budget",
    "attribution_cap",
    "ws_events_capped",
    "ws_parse_stopped",
];

/// Why a run folder could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: no such run folder")]
    Missing { path: PathBuf },
    #[error("{path}: not a run folder (no audit.jsonl)")]
    NoLog { path: PathBuf },
    #[error(transparent)]
    Open(#[from] crate::audit::read::OpenLog),
}

/// One request a run made, with where it is in the log.
#[derive(Debug, Clone)]
pub struct Item {
    pub request: OwnedRequest,
    pub seq: u64,
    pub ts: String,
    /// An HTTP exchange that carried credentials.
    pub credentials: bool,
    /// A file write the kernel refused (read-only mount, Landlock).
    pub refused_by_kernel: bool,
    /// For an exec: the file that ran, when it is not `path` (a symlink, `/proc/self/fd/N`).
    pub real_path: Option<String>,
    /// A write to a scratch mount outside the workspace (`/dev/shm`): allowed by the mount,
    /// not persisted, and not the policy's to decide.
    pub scratch: bool,
    /// The run's policy refused it (enforce mode): the log shows the attempt, not something
    /// the program got to do, so `learn` never allows it.
    pub refused_by_policy: bool,
}

/// A run's requests and what makes its record incomplete.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    pub dir: PathBuf,
    pub run_id: String,
    pub items: Vec<Item>,
    /// Why this log is not a complete record (empty when it is).
    pub incomplete: Vec<String>,
    /// Lines that were torn or did not parse.
    pub bad_lines: u64,
    /// `decision` records in the log (from a run with `--policy`).
    pub decisions: Vec<(u64, crate::audit::DecisionEvent)>,
}

/// Reads `dir/audit.jsonl`.
pub fn load(dir: &Path) -> Result<RunLog, ReplayError> {
    if !dir.is_dir() {
        return Err(ReplayError::Missing {
            path: dir.to_owned(),
        });
    }
    let path = dir.join("audit.jsonl");
    if !path.is_file() {
        return Err(ReplayError::NoLog {
            path: dir.to_owned(),
        });
    }
    let mut log = RunLog {
        dir: dir.to_owned(),
        ..RunLog::default()
    };
    let mut flows = Flows::default();
    let mut ended = false;
    for line in records(&path)? {
        let Ok(record) = line else {
            log.bad_lines += 1;
            continue;
        };
        if log.run_id.is_empty() {
            log.run_id = record.run.to_string();
        }
        ended |= matches!(record.body, EventBody::RunEnd(_));
        log.take(record, &mut flows);
    }
    log.mark_policy_refusals();
    if log.bad_lines > 0 {
        log.incomplete.push(format!(
            "{} torn or unreadable line(s) in {}",
            log.bad_lines,
            path.display()
        ));
    }
    if !ended {
        log.incomplete.push(format!(
            "{}: no run_end (the run did not finish)",
            path.display()
        ));
    }
    Ok(log)
}

impl RunLog {
    /// Marks the requests an enforced `decision` refused. Matched by layer and request fields
    /// (a decision is written before the event of its request); TLS sessions and HTTP requests
    /// the gateway refused also say so themselves (`mode: denied`, `note: denied by policy`).
    fn mark_policy_refusals(&mut self) {
        let refused: std::collections::HashSet<(String, crate::audit::DecisionRequest)> = self
            .decisions
            .iter()
            .filter(|(_, d)| d.enforced_by.is_some())
            .map(|(_, d)| (d.layer.clone(), d.request.clone()))
            .collect();
        if refused.is_empty() {
            return;
        }
        for item in &mut self.items {
            let req = item.request.as_request();
            let key = (
                req.layer().to_string(),
                crate::enforce::request_fields(&req),
            );
            item.refused_by_policy |= refused.contains(&key);
        }
    }

    fn push(&mut self, record: &Record, request: OwnedRequest) {
        self.items.push(Item {
            request,
            seq: record.seq,
            ts: record.ts.clone(),
            credentials: false,
            refused_by_kernel: false,
            real_path: None,
            scratch: false,
            refused_by_policy: false,
        });
    }

    fn take(&mut self, record: Record, flows: &mut Flows) {
        match &record.body {
            EventBody::Gap(g) => self.incomplete.push(format!(
                "seq {}: {} event(s) lost ({})",
                record.seq, g.dropped, g.reason
            )),
            EventBody::Notice(n) if !BENIGN_NOTICES.contains(&n.what.as_ref()) => {
                self.incomplete.push(format!(
                    "seq {}: notice {}: {}",
                    record.seq, n.what, n.detail
                ))
            }
            EventBody::Unknown => self.incomplete.push(format!(
                "seq {}: an event kind this idagent does not know",
                record.seq
            )),
            EventBody::Dns(d) if !d.data.name.is_empty() && !d.data.qtype.is_empty() => {
                let request = OwnedRequest::Dns {
                    name: d.data.name.clone(),
                    qtype: d.data.qtype.to_string(),
                };
                self.push(&record, request);
            }
            EventBody::Tcp(t) if t.phase.as_ref() == "open" => {
                let Ok(dst) = t.dst.parse::<SocketAddr>() else {
                    return;
                };
                flows.open.insert(t.flow.0, (t.name.clone(), dst));
                if !crate::netdrv::is_gateway_service(dst) {
                    let request = OwnedRequest::Connect {
                        name: t.name.clone(),
                        addr: dst.ip(),
                        port: dst.port(),
                        proto: Proto::Tcp,
                    };
                    self.push(&record, request);
                }
            }
            EventBody::Tls(t) if t.mode.as_ref() != "rejected" || t.sni.is_some() => {
                let Some((name, dst)) = flows.open.get(&t.flow.0).cloned() else {
                    return;
                };
                if t.mode.as_ref() == "intercepted" {
                    flows.intercepted.insert(t.flow.0);
                }
                let waiting = flows.pending_sni.remove(&t.flow.0).unwrap_or_default();
                if t.sni.is_none() {
                    for i in waiting {
                        if let Some(OwnedRequest::Http { host, .. }) =
                            self.items.get_mut(i).map(|item| &mut item.request)
                        {
                            *host = dst.ip().to_string();
                        }
                    }
                }
                let request = OwnedRequest::Tls {
                    sni: t.sni.clone(),
                    alpn: t.alpn.iter().cloned().collect(),
                    name,
                    addr: dst.ip(),
                    port: dst.port(),
                };
                self.push(&record, request);
                if let Some(last) = self.items.last_mut() {
                    last.refused_by_policy = t.mode.as_ref() == "denied";
                }
            }
            EventBody::Tcp(t) if t.phase.as_ref() == "close" => {
                // Opaque bytes the gateway relayed (plain, or inside intercepted TLS with no
                // HTTP in it): decided live as a stream, so replayed as one.
                let Some((name, dst)) = flows.open.remove(&t.flow.0) else {
                    return;
                };
                let http = flows.http.remove(&t.flow.0);
                let intercepted = flows.intercepted.remove(&t.flow.0);
                let tls = match t.protocol.as_deref() {
                    Some("relay") => false,
                    Some("tls") if intercepted && !http => true,
                    _ => return,
                };
                let request = OwnedRequest::Stream {
                    name,
                    addr: dst.ip(),
                    port: dst.port(),
                    tls,
                };
                self.push(&record, request);
            }
            EventBody::Http(h) if h.method != "CONNECT" => {
                flows.http.insert(h.flow.0);
                let Some(url) = HttpTarget::parse(&h.url) else {
                    return;
                };
                if h.note.as_deref() == Some("misdirected") {
                    return; // refused by routing: nothing was sent anywhere
                }
                let mut url = url;
                // Decided as the gateway decides it: on a connection to a bare address (no
                // resolved name, and for HTTPS no SNI) the request is the address's, whatever
                // Host it claimed. The SNI is known only at the flow's `tls` event, which comes
                // after its requests: HTTPS requests wait for it there.
                let bare = flows
                    .open
                    .get(&h.flow.0)
                    .filter(|(name, dst)| {
                        name.is_none() && !crate::netdrv::is_gateway_service(*dst)
                    })
                    .map(|(_, dst)| dst.ip());
                if let Some(ip) = bare {
                    match url.scheme {
                        idagent_policy::Scheme::Http => url.host = ip.to_string(),
                        idagent_policy::Scheme::Https => flows
                            .pending_sni
                            .entry(h.flow.0)
                            .or_default()
                            .push(self.items.len()),
                    }
                }
                // What the gateway decided it as beyond HTTP: a gRPC call by its path and
                // content type (as `gate` does), an MCP tool call by the logged JSON-RPC.
                let content_type = h
                    .req_headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| v.as_str());
                let rpc = idagent_policy::grpc_call(
                    &h.method,
                    &url.path,
                    url.query.as_deref(),
                    content_type,
                )
                .map(|r| r.to_owned())
                .or_else(|| {
                    let rpc = h.jsonrpc.as_ref().filter(|j| j.method == "tools/call")?;
                    Some(idagent_policy::OwnedRpc::Tool {
                        tool: rpc.tool.clone(),
                    })
                });
                self.push(&record, url.request(&h.method, rpc));
                if let Some(last) = self.items.last_mut() {
                    last.credentials = !h.credentials.is_empty();
                    last.refused_by_policy = h
                        .note
                        .as_deref()
                        .is_some_and(|n| n.starts_with("denied by policy"));
                }
            }
            EventBody::Udp(u) => {
                let Ok(dst) = u.dst.parse::<SocketAddr>() else {
                    return;
                };
                let request = OwnedRequest::Datagram {
                    name: u.name.clone(),
                    addr: dst.ip(),
                    port: dst.port(),
                };
                self.push(&record, request);
            }
            EventBody::File(f) => {
                // The watcher reports a renamed directory without size or hash.
                let dir = f.op == AuditOp::Rename && f.size.is_none() && f.sha256.is_none();
                let Some(request) = file_request(f.op, &f.path, f.from.as_deref(), dir, false)
                else {
                    return;
                };
                let inside = in_workspace(&f.path);
                self.push(&record, request);
                if let Some(last) = self.items.last_mut() {
                    last.refused_by_kernel = f.outcome == Outcome::Denied;
                    last.scratch = f.outcome != Outcome::Denied && !inside;
                }
            }
            EventBody::Exec(e) if e.error.is_none() => {
                let request = OwnedRequest::Exec {
                    path: e.path.clone(),
                    argv: e.argv.clone(),
                };
                self.push(&record, request);
                if let Some(last) = self.items.last_mut() {
                    last.real_path = e.real_path.clone();
                }
            }
            EventBody::Decision(d) => self.decisions.push((record.seq, d.clone())),
            _ => {}
        }
    }
}

/// What the replay remembers of each open flow until its close.
#[derive(Debug, Default)]
struct Flows {
    /// The resolved name and destination of each open flow.
    open: HashMap<u64, (Option<String>, SocketAddr)>,
    /// Flows whose TLS was intercepted.
    intercepted: std::collections::HashSet<u64>,
    /// Flows that carried HTTP.
    http: std::collections::HashSet<u64>,
    /// HTTPS requests (item indices) on flows to a bare address, until the flow's SNI is known.
    pending_sni: HashMap<u64, Vec<usize>>,
}

/// Whether `path` (absolute, as the guest named it) is the workspace or beneath it; a path
/// with `..` segments is never counted as inside.
pub fn in_workspace(path: &str) -> bool {
    let ws = crate::GUEST_WORKSPACE;
    let beneath = path == ws
        || path
            .strip_prefix(ws)
            .is_some_and(|rest| rest.starts_with('/'));
    beneath && !path.split('/').any(|seg| seg == "..")
}

/// The policy request of a file operation on `path` — the one mapping the supervisor (live)
/// and the replay share. `from` is a rename's old path, `dir` whether a directory is renamed,
/// `creates` whether a write-open makes a new file. `None` for what is not a write.
/// Landlock's rights decide the mapping: a rename needs rights at both parents
/// (`FileRename`); symlinks and device nodes need rights no rule grants (`CreateSpecial`); a
/// hard link is a new entry (`CreateFile`; across directories Landlock also wants `refer`,
/// which this mapping does not model).
pub fn file_request(
    op: AuditOp,
    path: &str,
    from: Option<&str>,
    dir: bool,
    creates: bool,
) -> Option<OwnedRequest> {
    let op = match (op, from) {
        (AuditOp::Rename, Some(from)) => {
            return Some(OwnedRequest::FileRename {
                from: from.to_owned(),
                to: path.to_owned(),
                dir,
            })
        }
        (AuditOp::Symlink | AuditOp::Mknod, _) => FileOp::CreateSpecial,
        (AuditOp::OpenWrite | AuditOp::Creat, _) if creates => FileOp::CreateFile,
        (other, _) => file_op(other)?,
    };
    Some(OwnedRequest::FileWrite {
        path: path.to_owned(),
        op,
    })
}

/// The policy's view of a file event's operation; `None` for what is not a write.
pub fn file_op(op: AuditOp) -> Option<FileOp> {
    Some(match op {
        AuditOp::Create | AuditOp::Creat | AuditOp::Link => FileOp::CreateFile,
        AuditOp::Mknod | AuditOp::Symlink => FileOp::CreateSpecial,
        AuditOp::Modify | AuditOp::OpenWrite | AuditOp::Truncate => FileOp::Write,
        AuditOp::Delete | AuditOp::Unlink | AuditOp::Rmdir => FileOp::Remove,
        AuditOp::Rename => FileOp::Rename,
        AuditOp::Mkdir => FileOp::CreateDir,
        AuditOp::Chmod | AuditOp::Chown | AuditOp::Attrib => return None,
    })
}

/// An HTTP request's URL taken apart the one way both the gateway and the replay use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub query: Option<String>,
}

impl HttpTarget {
    /// `scheme://host[:port]/path[?query]` as the gateway logs it.
    pub fn parse(url: &str) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        let scheme = match uri.scheme_str()? {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return None,
        };
        let authority = uri.authority()?;
        let default = if scheme == Scheme::Https { 443 } else { 80 };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        Some(Self {
            scheme,
            host,
            port: authority.port_u16().unwrap_or(default),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
        })
    }

    pub fn request(&self, method: &str, rpc: Option<idagent_policy::OwnedRpc>) -> OwnedRequest {
        OwnedRequest::Http {
            scheme: self.scheme,
            host: self.host.clone(),
            port: self.port,
            method: method.to_owned(),
            path: self.path.clone(),
            query: self.query.clone(),
            rpc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_the_way_the_gateway_logs_them() {
        let t = HttpTarget::parse("https://WWW.Google.com/search?q=1").expect("parse");
        assert_eq!(
            t,
            HttpTarget {
                scheme: Scheme::Https,
                host: "www.google.com".into(),
                port: 443,
                path: "/search".into(),
                query: Some("q=1".into()),
            }
        );
        let t = HttpTarget::parse("http://[fd00::1]:8080/").expect("parse");
        assert_eq!((t.host.as_str(), t.port), ("fd00::1", 8080));
        assert!(HttpTarget::parse("ftp://x/").is_none());
        assert!(HttpTarget::parse("not a url").is_none());
    }
}

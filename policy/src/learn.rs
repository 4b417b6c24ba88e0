//! The learner: observed events of one or more runs → a default-deny [`Policy`] (global
//! `mode: enforce`; operators try it with `--mode report` first) that allows exactly what was
//! seen. Deterministic: the same observations in any order print byte-identical YAML (all
//! state is in ordered maps; provenance uses min/max).
//!
//! Generalisation is deliberately small:
//! - HTTP path segments that are all digits, a UUID, or 16+ hex characters become `{id}`;
//!   nothing else. The query becomes the sorted list of keys seen (`query: []` when none was:
//!   a learned rule allows no query keys it did not see). Never a method not seen.
//! - Never a wildcard host. An IP-literal host only for a connection made with no name (it is
//!   tagged `ip-literal`). One network rule per (host, port): `https` when TLS or an https
//!   request was seen together with HTTP, `http` for plain HTTP, `tls` for TLS alone, `tcp`
//!   otherwise; `l7` when HTTP was seen, else `l4`. One http rule per (method, path pattern).
//! - An opaque stream (`Stream`: bytes on a TCP flow that were not HTTP) needs a rule that
//!   does not inspect HTTP, so its (host, port) gets `protocol: tcp, inspect: l4` (`tls` when
//!   the stream was inside TLS, or TLS or HTTPS was also seen there). If HTTP was seen on the
//!   same (host, port) too, the rule is still that `l4` one — an `l7` rule would refuse the
//!   stream — without `http` sub-rules (they would not be enforced), and it is tagged
//!   `l4-with-http` so a reviewer sees that those requests are no longer checked.
//! - An HTTP request whose path is not canonical (`is_canonical_path`: `..`, `%2e%2e`, `//`,
//!   `;`...) never becomes a rule, and is not counted. It still keeps its (host, port) `l7`
//!   if that (host, port) has a rule from other observations (so the skip cannot turn the
//!   host into an `l4` allow-everything rule); it never creates a rule by itself.
//! - Names queried in DNS with no network or udp rule → `dns.names`.
//! - Workspace writes: a created, removed or renamed entry gives a `dir` rule on its parent
//!   with exactly the operations seen and the entry's name in `observed`; a write to a file
//!   created in the run is covered by `create_file`; to one that appeared by rename, by
//!   `write` on the parent's dir rule; to any other file, a `file` rule. Nothing outside
//!   `/tmp/workspace` is ever allowed: such writes, and those the kernel refused, go to
//!   `files.observed_denied`. So does every `create_special` (symlink, device node, FIFO,
//!   socket): Landlock never grants it.
//! - A rename (`FileRename`): to's parent gets `create_file` (`create_dir` for a directory)
//!   and from's parent `remove`, as for a create there and a remove here. Across directories
//!   both parents also get `rename` (refer), and from's parent whatever to's parent grants
//!   beyond it among the rights Landlock compares (for a file: `write`; for a directory,
//!   every right), since the kernel refuses a move that gains rights (`EXDEV`). A rename
//!   that replaces an existing `to` would also need `remove` on to's parent: not learned
//!   (the observation does not say whether `to` existed). Both paths must be in the
//!   workspace, else each outside path goes to `observed_denied`.
//! - A gRPC call (`Rpc::Grpc`) becomes a `grpc` rule for its exact service and method (never
//!   `*`), not an http rule for its path. An MCP tool call (`Rpc::Tool`) adds its tool to the
//!   `tools` list of its route's http rule: a route where a tool call was seen allows only the
//!   tools seen (its other JSON-RPC requests stay allowed); a tool call naming no tool is
//!   learned as none and marks the observation incomplete.
//! - Exec: one rule per real path, the other paths seen as `aliases`.
//! - Anything that cannot be written as a rule (a malformed host, path or method) marks the
//!   observation incomplete with a reason, rather than vanishing.

use crate::explain::{
    exec_tags, host_tags, http_tags, network_tags, program, INTERPRETERS, L4_WITH_HTTP,
};
use crate::fsplan::{granted_rights, FsRight, FILE_RIGHTS};
use crate::host::{normalize_name, HostPattern};
use crate::kinds::{Action, FileKind, FileOp, Inspect, Mode, Proto, Protocol, Scheme};
use crate::model::*;
use crate::path::{
    is_below, is_canonical_path, is_within, normalize_abs, parent, query_keys, PathPattern,
    WorkspacePath, WORKSPACE,
};
use crate::request::{is_grpc_ident, is_grpc_service, OwnedRequest, OwnedRpc, Rpc};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

mod accumulate;
pub(crate) use accumulate::generalize_path;
use accumulate::{HostAcc, SeenAcc};

/// One observed event, already converted from the audit log by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// What was asked.
    pub request: OwnedRequest,
    /// Run id.
    pub run: String,
    /// Sequence number in that run's audit log.
    pub seq: u64,
    /// Timestamp (RFC 3339, as in the audit log; compared as text).
    pub ts: String,
    /// An HTTP exchange that carried credentials.
    pub credentials: bool,
    /// A file write the read-only mount refused (EROFS): never allowed.
    pub refused_by_kernel: bool,
    /// Exec: the resolved real path in the guest, when known.
    pub real_path: Option<String>,
}

/// Builds a policy from observations; see the module docs for what it generalises.
#[derive(Debug, Default)]
pub struct Learner {
    hosts: BTreeMap<(HostPattern, u16), HostAcc>,
    udp: BTreeMap<(HostPattern, u16), SeenAcc>,
    dns: BTreeMap<String, SeenAcc>,
    files: BTreeMap<String, BTreeMap<FileOp, SeenAcc>>,
    denied: BTreeMap<(String, FileOp, Option<String>), u64>,
    /// Renames across directories: (from, to, dir) → provenance.
    cross_renames: BTreeMap<(String, String, bool), SeenAcc>,
    exec: BTreeMap<String, (BTreeSet<String>, SeenAcc, bool)>,
    reasons: BTreeSet<String>,
    /// (host, port) → an https request with a non-canonical path was seen (else plain http).
    noncanonical: BTreeMap<(HostPattern, u16), bool>,
}

impl Learner {
    /// An empty learner.
    pub fn new() -> Self {
        Learner::default()
    }

    /// Marks the observation incomplete (an audit gap, a cap hit...).
    pub fn mark_incomplete(&mut self, reason: String) {
        self.reasons.insert(reason);
    }

    /// Takes one observed event.
    pub fn observe(&mut self, o: Observed) {
        match &o.request {
            OwnedRequest::Dns { name, .. } => {
                let name = normalize_name(name).into_owned();
                if HostPattern::from_observed(&name).is_some_and(|h| !h.is_ip()) {
                    self.dns.entry(name).or_default().add(&o);
                }
            }
            OwnedRequest::Connect {
                name,
                addr,
                port,
                proto: Proto::Tcp,
            } => {
                if let Some(acc) = self.host(name.as_deref(), *addr, *port) {
                    acc.tcp = true;
                    acc.seen.add(&o);
                }
            }
            OwnedRequest::Connect {
                name,
                addr,
                port,
                proto: Proto::Udp,
            }
            | OwnedRequest::Datagram { name, addr, port } => {
                if let Some(host) = self.pattern(name.as_deref(), *addr) {
                    self.udp.entry((host, *port)).or_default().add(&o);
                }
            }
            OwnedRequest::Stream {
                name,
                addr,
                port,
                tls,
            } => {
                if let Some(acc) = self.host(name.as_deref(), *addr, *port) {
                    acc.stream = true;
                    acc.stream_tls |= *tls;
                    acc.seen.add(&o);
                }
            }
            OwnedRequest::Tls {
                sni,
                name,
                addr,
                port,
                ..
            } => {
                if let Some(acc) = self.host(sni.as_deref().or(name.as_deref()), *addr, *port) {
                    acc.tls = true;
                    acc.seen.add(&o);
                }
            }
            OwnedRequest::Http {
                scheme,
                host,
                port,
                method,
                path,
                query,
                rpc,
            } => {
                let target = (*scheme, host.as_str(), *port);
                let asked = (method.as_str(), path.as_str(), query.as_deref());
                self.http(&o, target, asked, rpc.as_ref().map(OwnedRpc::as_rpc));
            }
            OwnedRequest::FileWrite { path, op } => self.file(&o, path, *op),
            OwnedRequest::FileRename { from, to, dir } => self.rename(&o, from, to, *dir),
            OwnedRequest::Exec { path, argv } => {
                let real = o.real_path.clone().unwrap_or_else(|| path.clone());
                let inline = INTERPRETERS.contains(&program(&real))
                    && argv.iter().skip(1).any(|a| a == "-c" || a == "-e");
                let entry = self.exec.entry(real.clone()).or_default();
                if *path != real {
                    entry.0.insert(path.clone());
                }
                entry.1.add(&o);
                entry.2 |= inline;
            }
        }
    }

    fn pattern(&mut self, name: Option<&str>, addr: IpAddr) -> Option<HostPattern> {
        match name {
            Some(n) => {
                let p = HostPattern::from_observed(n);
                if p.is_none() {
                    self.reasons
                        .insert(format!("host `{n}` cannot be written as a rule"));
                }
                p
            }
            None => Some(HostPattern::Ip(addr)),
        }
    }

    fn host(&mut self, name: Option<&str>, addr: IpAddr, port: u16) -> Option<&mut HostAcc> {
        let host = self.pattern(name, addr)?;
        Some(self.hosts.entry((host, port)).or_default())
    }

    /// One HTTP request: `target` (scheme, host, port), `asked` (method, path, query) and
    /// what it was beyond HTTP.
    fn http(
        &mut self,
        o: &Observed,
        (scheme, host, port): (Scheme, &str, u16),
        (method, path, query): (&str, &str, Option<&str>),
        rpc: Option<Rpc<'_>>,
    ) {
        let Some(host) = self.pattern(Some(host), IpAddr::from([0, 0, 0, 0])) else {
            return;
        };
        if !is_canonical_path(path) {
            // Never a rule, never counted; `finish` keeps an existing rule for it l7.
            *self.noncanonical.entry((host, port)).or_default() |= scheme == Scheme::Https;
            return;
        }
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            self.reasons.insert(format!(
                "http method `{method}` cannot be written as a rule"
            ));
            return;
        }
        if let Some(Rpc::Grpc { service, method }) = rpc {
            if !is_grpc_service(service) || !is_grpc_ident(method) {
                self.reasons.insert(format!(
                    "grpc call `{service}/{method}` cannot be written as a rule"
                ));
                return;
            }
            let acc = self.hosts.entry((host, port)).or_default();
            acc.http = true;
            acc.https |= scheme == Scheme::Https;
            acc.credentials |= o.credentials;
            acc.seen.add(o);
            acc.grpc
                .entry((service.to_string(), method.to_string()))
                .or_default()
                .add(o);
            return;
        }
        let Some(pattern) = generalize_path(path) else {
            self.reasons
                .insert(format!("http path `{path}` cannot be written as a rule"));
            return;
        };
        let tool = match rpc {
            Some(Rpc::Tool(Some(t))) if !t.is_empty() && !t.chars().any(char::is_control) => {
                Some(t)
            }
            Some(Rpc::Tool(_)) => {
                // The route is learned; its tools list would not allow this call.
                self.reasons.insert(format!(
                    "an mcp tool call to `{path}` named no tool that can be written as a rule"
                ));
                None
            }
            _ => None,
        };
        let acc = self.hosts.entry((host, port)).or_default();
        acc.http = true;
        acc.https |= scheme == Scheme::Https;
        acc.credentials |= o.credentials;
        acc.seen.add(o);
        let route = acc.routes.entry((method.to_string(), pattern)).or_default();
        route
            .keys
            .extend(query.into_iter().flat_map(query_keys).map(str::to_string));
        route.seen.add(o);
        if let Some(t) = tool {
            route.tools.get_or_insert_default().insert(t.to_string());
        }
    }

    fn file(&mut self, o: &Observed, path: &str, op: FileOp) {
        let norm = normalize_abs(path);
        match norm {
            // Symlinks, device nodes, FIFOs, sockets: Landlock never grants them.
            Some(p)
                if op != FileOp::CreateSpecial
                    && !o.refused_by_kernel
                    && is_below(&p, WORKSPACE) =>
            {
                self.files
                    .entry(p)
                    .or_default()
                    .entry(op)
                    .or_default()
                    .add(o);
            }
            _ => {
                let errno = o.refused_by_kernel.then(|| "EROFS".to_string());
                let shown = norm.unwrap_or_else(|| path.to_string());
                *self.denied.entry((shown, op, errno)).or_default() += 1;
            }
        }
    }

    /// A rename: `to` is created (`create_file`, `create_dir`) and `from` removed in their
    /// parents; across directories both parents also get `rename` (refer), see `files`.
    fn rename(&mut self, o: &Observed, from: &str, to: &str, dir: bool) {
        let (nf, nt) = (normalize_abs(from), normalize_abs(to));
        let inside = |p: &Option<String>| p.as_deref().is_some_and(|p| is_below(p, WORKSPACE));
        let (Some(f), Some(t)) = (
            nf.clone().filter(|_| inside(&nf)),
            nt.clone().filter(|_| inside(&nt)),
        ) else {
            // Outside the workspace: each such path, never a rule.
            for (raw, norm) in [(from, &nf), (to, &nt)] {
                if !inside(norm) {
                    let shown = norm.clone().unwrap_or_else(|| raw.to_string());
                    *self
                        .denied
                        .entry((shown, FileOp::Rename, None))
                        .or_default() += 1;
                }
            }
            return;
        };
        if o.refused_by_kernel {
            *self
                .denied
                .entry((t, FileOp::Rename, Some("EROFS".to_string())))
                .or_default() += 1;
            return;
        }
        let create = if dir {
            FileOp::CreateDir
        } else {
            FileOp::CreateFile
        };
        self.file(o, &t, create);
        self.file(o, &f, FileOp::Remove);
        if parent(&f) != parent(&t) {
            self.cross_renames.entry((f, t, dir)).or_default().add(o);
        }
    }

    /// The learned policy.
    pub fn finish(mut self) -> Policy {
        for (key, https) in &self.noncanonical {
            if let Some(acc) = self.hosts.get_mut(key) {
                acc.http = true;
                acc.https |= *https;
            }
        }
        let mut reasons = self.reasons;
        let mut network = Vec::new();
        for ((host, port), acc) in &self.hosts {
            network.push(acc.rule(host, *port));
        }
        let mut udp = Vec::new();
        for ((host, port), seen) in &self.udp {
            udp.push(UdpRule {
                id: format!("udp:{host}:{port}"),
                host: host.clone(),
                port: *port,
                action: Action::Allow,
                mode: None,
                risk: host_tags(host).into_iter().map(str::to_string).collect(),
                seen: seen.finish(),
            });
        }
        let covered = |name: &str| {
            network.iter().any(|r| r.host.matches_name(name))
                || udp.iter().any(|r| r.host.matches_name(name))
        };
        let mut dns = Vec::new();
        for (name, seen) in &self.dns {
            if covered(name) {
                continue;
            }
            if let Some(pattern) = HostPattern::from_observed(name) {
                dns.push(DnsName {
                    id: format!("dns:{name}"),
                    name: pattern,
                    mode: None,
                    risk: vec![],
                    seen: seen.finish(),
                });
            }
        }
        let (files, denied) = files(&self.files, &self.cross_renames, self.denied, &mut reasons);
        let exec = self
            .exec
            .iter()
            .map(|(real, (aliases, seen, inline))| {
                let mut rule = ExecRule {
                    id: format!("exec:{real}"),
                    path: real.clone(),
                    aliases: aliases.iter().cloned().collect(),
                    action: Action::Allow,
                    mode: None,
                    risk: vec![],
                    seen: seen.finish(),
                };
                let mut tags = exec_tags(&rule);
                if *inline {
                    tags.push("inline-code");
                }
                rule.risk = tags.into_iter().map(str::to_string).collect();
                rule
            })
            .collect();
        Policy {
            version: VERSION,
            mode: Mode::Enforce,
            observation: if reasons.is_empty() {
                Observation::Complete
            } else {
                Observation::Incomplete {
                    reasons: reasons.into_iter().collect(),
                }
            },
            network: NetworkSection::new(None, network),
            dns: DnsSection::new(None, dns),
            udp: UdpSection::new(None, udp),
            files: FilesSection::new(None, files, denied),
            exec: ExecSection::new(None, exec),
        }
    }
}

impl HostAcc {
    fn rule(&self, host: &HostPattern, port: u16) -> NetworkRule {
        let secure = self.tls || self.https || self.stream_tls;
        let protocol = match (self.http && !self.stream, secure) {
            (true, true) => Protocol::Https,
            (true, false) => Protocol::Http,
            (false, true) => Protocol::Tls,
            (false, false) => Protocol::Tcp,
        };
        // An opaque stream needs l4; then HTTP sub-rules could not be enforced at all.
        let l7 = self.http && !self.stream;
        let mut rule = NetworkRule {
            id: format!("net:{host}:{port}"),
            host: host.clone(),
            port,
            protocol,
            inspect: if l7 { Inspect::L7 } else { Inspect::L4 },
            action: Action::Allow,
            mode: None,
            http: vec![],
            credentials: self.credentials,
            risk: vec![],
            seen: self.seen.finish(),
        };
        for ((method, pattern), route) in self.routes.iter().filter(|_| l7) {
            let mut h = HttpRule {
                id: format!("http:{host}:{port}:{method}:{pattern}"),
                method: method.clone(),
                path: pattern.0.clone(),
                grpc: None,
                tools: route.tools.as_ref().map(|t| t.iter().cloned().collect()),
                query: Some(route.keys.iter().cloned().collect()),
                action: Action::Allow,
                mode: None,
                risk: vec![],
                seen: route.seen.finish(),
            };
            h.risk = http_tags(&rule, &h)
                .into_iter()
                .map(str::to_string)
                .collect();
            rule.http.push(h);
        }
        for ((service, method), seen) in self.grpc.iter().filter(|_| l7) {
            let Ok(path) = PathPattern::parse(&format!("/{service}/{method}")) else {
                continue; // unreachable: grpc_call only yields protobuf names
            };
            let mut h = HttpRule {
                id: format!("grpc:{host}:{port}:{service}/{method}"),
                method: "POST".to_string(),
                path,
                grpc: Some(GrpcMatch {
                    service: service.clone(),
                    method: Some(method.clone()),
                }),
                tools: None,
                query: None,
                action: Action::Allow,
                mode: None,
                risk: vec![],
                seen: seen.finish(),
            };
            h.risk = http_tags(&rule, &h)
                .into_iter()
                .map(str::to_string)
                .collect();
            rule.http.push(h);
        }
        let mut tags = network_tags(&rule);
        if self.http && self.stream {
            tags.push(L4_WITH_HTTP);
        }
        rule.risk = tags.into_iter().map(str::to_string).collect();
        rule
    }
}

type Denied = BTreeMap<(String, FileOp, Option<String>), u64>;

/// Learned dir rules in the making: dir → (ops, observed names, provenance).
type Dirs<'a> = BTreeMap<&'a str, (BTreeSet<FileOp>, BTreeSet<String>, SeenAcc)>;

/// The rights the dir rules in the making grant at `path` (rules on it and its ancestors).
fn rights_at(dirs: &Dirs<'_>, path: &str) -> BTreeSet<FsRight> {
    dirs.iter()
        .filter(|(d, _)| is_within(path, d))
        .flat_map(|(_, (ops, _, _))| ops.iter())
        .flat_map(|op| granted_rights(FileKind::Dir, *op).iter().copied())
        .collect()
}

/// The operation of a dir rule granting `right` with the least else (`write` for the file
/// rights, `rename` for refer and make_reg).
fn op_granting(right: FsRight) -> Option<FileOp> {
    match right {
        FsRight::WriteFile | FsRight::Truncate => Some(FileOp::Write),
        FsRight::MakeReg | FsRight::Refer => Some(FileOp::Rename),
        FsRight::MakeDir => Some(FileOp::CreateDir),
        FsRight::RemoveFile | FsRight::RemoveDir => Some(FileOp::Remove),
        FsRight::MakeSym => None,
    }
}

/// Workspace operations by path → dir and file rules; what cannot be a rule → denied.
///
/// A rename across directories adds `rename` (refer) on both parents; and since Landlock
/// refuses to move an entry where it would gain rights (`EXDEV`), from's parent also gets
/// what to's parent grants beyond it (for a file only write_file and truncate count: `write`;
/// for a directory every right), until no rename needs more.
fn files(
    ops: &BTreeMap<String, BTreeMap<FileOp, SeenAcc>>,
    cross: &BTreeMap<(String, String, bool), SeenAcc>,
    mut denied: Denied,
    reasons: &mut BTreeSet<String>,
) -> (Vec<FileRule>, Vec<DeniedWrite>) {
    // dir path → (ops, observed names, provenance)
    let mut dirs: Dirs<'_> = BTreeMap::new();
    let mut plain_files: BTreeMap<&str, SeenAcc> = BTreeMap::new();
    for (path, by_op) in ops {
        let Some(dir) = parent(path) else { continue };
        let name = crate::path::file_name(path).to_string();
        let created = by_op.contains_key(&FileOp::CreateFile);
        let renamed = by_op.contains_key(&FileOp::Rename);
        for (op, seen) in by_op {
            if *op == FileOp::Write && !created && !renamed {
                plain_files.entry(path).or_default().merge(seen);
                continue;
            }
            let entry = dirs.entry(dir).or_default();
            // A write to a file created here is covered by create_file.
            if *op != FileOp::Write || !created {
                entry.0.insert(*op);
            }
            entry.1.insert(name.clone());
            entry.2.merge(seen);
        }
    }
    for ((from, to, _), seen) in cross {
        for dir in [parent(from), parent(to)].into_iter().flatten() {
            let entry = dirs.entry(dir).or_default();
            entry.0.insert(FileOp::Rename);
            entry.2.merge(seen);
        }
    }
    // Rights only grow and are bounded: this ends.
    loop {
        let mut changed = false;
        for (from, to, dir) in cross.keys() {
            let (Some(from_parent), Some(to_parent)) = (parent(from), parent(to)) else {
                continue;
            };
            let mut now = rights_at(&dirs, from);
            if plain_files.contains_key(from.as_str()) {
                now.extend(granted_rights(FileKind::File, FileOp::Write));
            }
            let missing: Vec<FileOp> = rights_at(&dirs, to_parent)
                .into_iter()
                .filter(|r| (*dir || FILE_RIGHTS.contains(r)) && !now.contains(r))
                .filter_map(op_granting)
                .collect();
            let entry = dirs.entry(from_parent).or_default();
            for op in missing {
                changed |= entry.0.insert(op);
            }
        }
        if !changed {
            break;
        }
    }
    let mut rules = Vec::new();
    for (dir, (allow, observed, seen)) in dirs {
        if allow.is_empty() {
            continue;
        }
        match WorkspacePath::parse(dir) {
            Ok(path) => rules.push(FileRule {
                id: format!("files:{dir}"),
                path,
                kind: FileKind::Dir,
                allow: allow.into_iter().collect(),
                mode: None,
                observed: observed.into_iter().collect(),
                risk: vec![],
                seen: seen.finish(),
            }),
            Err(e) => {
                reasons.insert(e);
            }
        }
    }
    for (file, seen) in plain_files {
        let id = if rules.iter().any(|r| r.id == format!("files:{file}")) {
            format!("files:{file}:file")
        } else {
            format!("files:{file}")
        };
        match WorkspacePath::parse(file) {
            Ok(path) => rules.push(FileRule {
                id,
                path,
                kind: FileKind::File,
                allow: vec![FileOp::Write],
                mode: None,
                observed: vec![crate::path::file_name(file).to_string()],
                risk: vec![],
                seen: seen.finish(),
            }),
            Err(_) => {
                *denied
                    .entry((file.to_string(), FileOp::Write, None))
                    .or_default() += seen.count;
            }
        }
    }
    let denied = denied
        .into_iter()
        .map(|((path, op, errno), count)| DeniedWrite {
            path,
            op,
            errno,
            count,
        })
        .collect();
    (rules, denied)
}

#[cfg(test)]
mod tests;

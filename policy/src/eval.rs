//! The one pure decision function, [`evaluate`], and [`nearest_rule`] for `policy check`.
//! Owns the matching semantics of every layer; the model is data only.
//!
//! Default deny. Among all matching rules a `deny` beats every `allow`; among rules with the
//! same action the smallest id decides, so rule order never changes the result. A decision's
//! mode is the deciding rule's `mode`, else (for HTTP sub-rules) its host rule's, else the
//! section's, else the global one; `default-deny` takes the section's mode, else the global.
//!
//! HTTP paths are matched only in canonical form ([`is_canonical_path`]): wherever an `l7`
//! rule would match method/path sub-rules, a non-canonical path matches none of them and, if
//! nothing else decides, is denied as [`NONCANONICAL_PATH`] (with the default-deny mode). An
//! opaque stream ([`Request::Stream`]) is allowed only by a rule that does not need HTTP
//! inspection (`tcp`, `tls` or `inspect: l4`).
//!
//! A `grpc` sub-rule matches only gRPC calls ([`Rpc::Grpc`]), by service and method. A
//! sub-rule with `tools` matches its endpoint as any http rule, but of the MCP tool calls
//! there ([`Rpc::Tool`]) an allow allows only listed tools and a deny denies only listed (or
//! unreadable) ones; a tool call refused that way with nothing else deciding is denied as
//! [`TOOL_NOT_ALLOWED`] (mode: that sub-rule's, else its host rule's, else the section's).
//!
//! File requests are decided on the rights table Landlock gets from `fs_plan`
//! ([`crate::granted_rights`]), so a decision is a label of what the kernel does: a
//! [`Request::FileRename`] needs [`crate::rename_rights`] at both parents and, across
//! directories, must not let the entry gain rights (Landlock's `EXDEV`); `create_special`
//! needs make_sym, which no rule grants.

use crate::fsplan::{granted_rights, rename_rights, required_rights, FsRight, FILE_RIGHTS};
use crate::host::normalize_name;
use crate::kinds::{Action, FileKind, Inspect, Layer, Mode, Proto, Protocol, Scheme, Verdict};
use crate::model::{FileRule, HttpRule, NetworkRule, Policy};
use crate::path::{
    is_below, is_canonical_path, is_within, normalize_abs, parent, query_keys, WORKSPACE,
};
use crate::request::{Decision, Request, Rpc, DEFAULT_DENY, NONCANONICAL_PATH, TOOL_NOT_ALLOWED};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The best allow and the best deny seen so far (smallest id each).
struct Best<'p> {
    allow: Option<(&'p str, Option<Mode>)>,
    deny: Option<(&'p str, Option<Mode>)>,
}

impl<'p> Best<'p> {
    fn new() -> Self {
        Best {
            allow: None,
            deny: None,
        }
    }

    fn offer(&mut self, action: Action, id: &'p str, mode: Option<Mode>) {
        let slot = match action {
            Action::Allow => &mut self.allow,
            Action::Deny => &mut self.deny,
        };
        if slot.is_none_or(|(best, _)| id < best) {
            *slot = Some((id, mode));
        }
    }

    fn decide(self, global: Mode, section: Option<Mode>, layer: Layer) -> Decision {
        let section_mode = section.unwrap_or(global);
        let (verdict, rule, mode) = match (self.deny, self.allow) {
            (Some((id, mode)), _) => (Verdict::Deny, id, mode.unwrap_or(section_mode)),
            (None, Some((id, mode))) => (Verdict::Allow, id, mode.unwrap_or(section_mode)),
            (None, None) => (Verdict::Deny, DEFAULT_DENY, section_mode),
        };
        Decision {
            verdict,
            rule: rule.to_string(),
            mode,
            layer,
        }
    }
}

/// Decides one request. Pure; never panics.
pub fn evaluate(policy: &Policy, req: &Request<'_>) -> Decision {
    let layer = req.layer();
    let global = policy.mode;
    let mut best = Best::new();
    let section = match *req {
        Request::Dns { name, .. } => {
            dns(policy, name, &mut best);
            policy.dns.mode
        }
        Request::Connect {
            name,
            addr,
            port,
            proto: Proto::Tcp,
        } => {
            for_network_hosts(policy, name, Some(addr), |r| {
                if r.port == port {
                    best.offer(r.action, &r.id, r.mode);
                }
            });
            policy.network.mode
        }
        Request::Connect {
            name,
            addr,
            port,
            proto: Proto::Udp,
        }
        | Request::Datagram { name, addr, port } => {
            udp(policy, name, addr, port, &mut best);
            policy.udp.mode
        }
        Request::Stream {
            name, addr, port, ..
        } => {
            // Opaque bytes: only a rule that never needed to see HTTP allows them.
            for_network_hosts(policy, name, Some(addr), |r| {
                if r.port == port && (r.action == Action::Deny || is_l4(r)) {
                    best.offer(r.action, &r.id, r.mode);
                }
            });
            policy.network.mode
        }
        Request::Tls {
            sni,
            name,
            addr,
            port,
            ..
        } => {
            let (name, addr) = match sni {
                Some(sni) => (Some(sni), None),
                None => (name, Some(addr)),
            };
            for_network_hosts(policy, name, addr, |r| {
                if r.port == port && r.protocol != Protocol::Http {
                    best.offer(r.action, &r.id, r.mode);
                }
            });
            policy.network.mode
        }
        Request::Http {
            scheme,
            host,
            port,
            method,
            path,
            query,
            rpc,
        } => {
            let canonical = is_canonical_path(path);
            let mut refused = false;
            let mut tool_refused: Decider<'_> = None;
            for_network_hosts(policy, Some(host), None, |r| {
                if r.port == port && carries(r.protocol, scheme) {
                    let asked = Asked {
                        method,
                        path,
                        canonical,
                        query,
                        rpc,
                    };
                    refused |= !http(r, &asked, &mut best, &mut tool_refused);
                }
            });
            if best.allow.is_none() && best.deny.is_none() {
                // Nothing decided: say why, when a reason is known.
                let section_mode = policy.network.mode.unwrap_or(global);
                let why = match tool_refused {
                    Some((_, mode)) => Some((TOOL_NOT_ALLOWED, mode.unwrap_or(section_mode))),
                    None if refused => Some((NONCANONICAL_PATH, section_mode)),
                    None => None,
                };
                if let Some((rule, mode)) = why {
                    return Decision {
                        verdict: Verdict::Deny,
                        rule: rule.to_string(),
                        mode,
                        layer,
                    };
                }
            }
            policy.network.mode
        }
        Request::FileWrite { path, op } => {
            if let Some(path) = normalize_abs(path) {
                let required = required_rights(op);
                let (granted, decider) = grants(policy, required, |r| match r.kind {
                    FileKind::File => r.path.as_str() == path,
                    FileKind::Dir => is_below(&path, r.path.as_str()),
                });
                if required.iter().all(|r| granted.contains(r)) {
                    if let Some((id, mode)) = decider {
                        best.offer(Action::Allow, id, mode);
                    }
                }
            }
            policy.files.mode
        }
        Request::FileRename { from, to, dir } => {
            if let Some((id, mode)) = rename(policy, from, to, dir) {
                best.offer(Action::Allow, id, mode);
            }
            policy.files.mode
        }
        Request::Exec { path, .. } => {
            for &i in policy.exec.index.get(path).into_iter().flatten() {
                if let Some(r) = policy.exec.rules().get(i) {
                    best.offer(r.action, &r.id, r.mode);
                }
            }
            policy.exec.mode
        }
    };
    best.decide(global, section, layer)
}

/// The deepest rule granting one of `wanted` (then the smallest id): `(id, mode)`.
type Decider<'p> = Option<(&'p str, Option<Mode>)>;

/// The rights granted by the files rules that `applies` selects, and the deciding rule: the
/// deepest of them that grants one of `wanted` (then the smallest id).
fn grants<'p>(
    policy: &'p Policy,
    wanted: &[FsRight],
    applies: impl Fn(&FileRule) -> bool,
) -> (BTreeSet<FsRight>, Decider<'p>) {
    let mut granted = BTreeSet::new();
    let mut decider: Option<(&str, &str, Option<Mode>)> = None;
    for r in policy.files.rules().iter().filter(|r| applies(r)) {
        let rights: Vec<FsRight> = r
            .allow
            .iter()
            .flat_map(|op| granted_rights(r.kind, *op))
            .copied()
            .collect();
        if rights.iter().any(|g| wanted.contains(g)) {
            let key = (r.path.as_str(), r.id.as_str());
            let better = decider.is_none_or(|(p, id, _)| {
                key.0.len() > p.len() || (key.0.len() == p.len() && key.1 < id)
            });
            if better {
                decider = Some((key.0, key.1, r.mode));
            }
        }
        granted.extend(rights);
    }
    (granted, decider.map(|(_, id, mode)| (id, mode)))
}

/// A rename as Landlock decides it (ABI >= 2): the rights of [`rename_rights`] at from's and
/// to's parent directories (a dir rule grants to its whole subtree, the directory itself
/// included); across directories, the entry must also not gain rights at its new place
/// (`EXDEV` otherwise): every right to's parent grants must already be granted where the entry
/// is now (its parents' rules and a rule on the entry itself), counting only the file rights
/// (write_file, truncate) for a regular file, all rights for a directory. Whether `to` exists
/// is not known: replacing it would also need remove on to's parent, which is not required
/// here. The deciding rule is the deepest rule at to's parent granting a needed right.
fn rename<'p>(policy: &'p Policy, from: &str, to: &str, dir: bool) -> Decider<'p> {
    let from = normalize_abs(from)?;
    let to = normalize_abs(to)?;
    if !is_below(&from, WORKSPACE) || !is_below(&to, WORKSPACE) {
        return None;
    }
    let (from_parent, to_parent) = (parent(&from)?, parent(&to)?);
    let cross = from_parent != to_parent;
    let (need_from, need_to) = rename_rights(dir, cross);
    let at_dir = |d: &str| {
        let d = d.to_string();
        move |r: &FileRule| r.kind == FileKind::Dir && is_within(&d, r.path.as_str())
    };
    let (at_to, decider) = grants(policy, need_to, at_dir(to_parent));
    let (at_from, _) = grants(policy, need_from, at_dir(from_parent));
    if !need_to.iter().all(|r| at_to.contains(r)) || !need_from.iter().all(|r| at_from.contains(r))
    {
        return None;
    }
    if cross {
        let (now, _) = grants(policy, &[], |r| match r.kind {
            FileKind::Dir => is_within(&from, r.path.as_str()),
            FileKind::File => r.path.as_str() == from,
        });
        let compared = |r: &&FsRight| dir || FILE_RIGHTS.contains(r);
        if at_to.iter().filter(compared).any(|r| !now.contains(r)) {
            return None;
        }
    }
    decider
}

/// The id of the deepest files rule sharing `path`'s directories (within the workspace).
fn near_file(policy: &Policy, path: &str) -> Option<String> {
    let path = normalize_abs(path)?;
    let depth = |a: &str, b: &str| {
        a.split('/')
            .zip(b.split('/'))
            .take_while(|(x, y)| x == y)
            .count()
    };
    let min = depth(WORKSPACE, WORKSPACE);
    policy
        .files
        .rules()
        .iter()
        .map(|r| (depth(r.path.as_str(), &path), r))
        .filter(|(d, _)| *d >= min)
        .max_by(|(da, a), (db, b)| da.cmp(db).then_with(|| b.id.cmp(&a.id)))
        .map(|(_, r)| r.id.clone())
}

/// Whether a rule of `protocol` carries HTTP of `scheme` (tcp and tls are l4: bytes pass).
fn carries(protocol: Protocol, scheme: Scheme) -> bool {
    matches!(
        (protocol, scheme),
        (Protocol::Http | Protocol::Tcp, Scheme::Http)
            | (Protocol::Https | Protocol::Tls, Scheme::Https)
    )
}

/// Whether a rule allows its connections without looking at HTTP (tcp, tls or `inspect: l4`).
fn is_l4(r: &NetworkRule) -> bool {
    r.inspect == Inspect::L4 || matches!(r.protocol, Protocol::Tcp | Protocol::Tls)
}

/// One HTTP request as the sub-rules see it.
struct Asked<'a> {
    method: &'a str,
    path: &'a str,
    canonical: bool,
    query: Option<&'a str>,
    rpc: Option<Rpc<'a>>,
}

impl Asked<'_> {
    /// Whether sub-rule `h` matches the request by method, path and query (the endpoint),
    /// before any gRPC or tools test.
    fn endpoint(&self, h: &HttpRule) -> bool {
        // Cheapest test first; the query is checked only for a matching route.
        let method_ok = h.method == "*" || h.method == self.method;
        let query_ok = || match (&h.query, self.query) {
            (None, _) | (Some(_), None) => true,
            (Some(keys), Some(q)) => {
                query_keys(q).all(|k| keys.binary_search_by(|x| x.as_str().cmp(k)).is_ok())
            }
        };
        method_ok && h.path.matches(self.path) && query_ok()
    }
}

/// What sub-rule `h` says about a request that matches its endpoint (an `http` rule) or is a
/// gRPC call (a `grpc` rule): `Some(true)` it applies, `Some(false)` it does not, `None` an
/// allow rule with tools that refused the request's tool.
fn applies(h: &HttpRule, asked: &Asked<'_>) -> Option<bool> {
    if let Some(g) = &h.grpc {
        return Some(match asked.rpc {
            Some(Rpc::Grpc { service, method }) => {
                g.service == service && g.method.as_deref().is_none_or(|m| m == method)
            }
            _ => false,
        });
    }
    if !asked.endpoint(h) {
        return Some(false);
    }
    let Some(tools) = &h.tools else {
        return Some(true);
    };
    let listed = |tool: Option<&str>| {
        tool.is_some_and(|t| tools.binary_search_by(|x| x.as_str().cmp(t)).is_ok())
    };
    match (h.action, asked.rpc) {
        (Action::Allow, Some(Rpc::Tool(tool))) => listed(tool).then_some(true),
        // Other JSON-RPC methods (and bodiless requests) go through the endpoint's rule.
        (Action::Allow, _) => Some(true),
        // A deny rule with tools denies only their calls, and calls of an unknown tool.
        (Action::Deny, Some(Rpc::Tool(tool))) => Some(tool.is_none() || listed(tool)),
        (Action::Deny, _) => Some(false),
    }
}

/// Offers what host rule `r` says about one HTTP request. `false` when the rule would have
/// matched sub-rules but the path is not canonical (then no sub-rule is consulted). An allow
/// rule with tools that matched the endpoint but not the tool goes in `tool_refused`
/// (smallest id).
fn http<'p>(
    r: &'p NetworkRule,
    asked: &Asked<'_>,
    best: &mut Best<'p>,
    tool_refused: &mut Decider<'p>,
) -> bool {
    if r.action == Action::Deny {
        best.offer(Action::Deny, &r.id, r.mode);
        return true;
    }
    if is_l4(r) {
        best.offer(Action::Allow, &r.id, r.mode);
        return true;
    }
    if !asked.canonical {
        return false;
    }
    for h in &r.http {
        match applies(h, asked) {
            Some(true) => best.offer(h.action, &h.id, h.mode.or(r.mode)),
            Some(false) => {}
            None => {
                if tool_refused.is_none_or(|(id, _)| h.id.as_str() < id) {
                    *tool_refused = Some((&h.id, h.mode.or(r.mode)));
                }
            }
        }
    }
    true
}

/// Whether deciding `req` needs the MCP tool its body names: some `l7` rule for its host has
/// a sub-rule with `tools` whose endpoint (method, path, query) the request matches. The
/// gateway then reads the body before deciding. `false` for every other request.
pub fn tool_rules_apply(policy: &Policy, req: &Request<'_>) -> bool {
    let Request::Http {
        scheme,
        host,
        port,
        method,
        path,
        query,
        rpc,
    } = *req
    else {
        return false;
    };
    let asked = Asked {
        method,
        path,
        canonical: is_canonical_path(path),
        query,
        rpc,
    };
    if !asked.canonical {
        return false;
    }
    let mut found = false;
    for_network_hosts(policy, Some(host), None, |r| {
        found |= r.port == port
            && carries(r.protocol, scheme)
            && !is_l4(r)
            && r.http
                .iter()
                .any(|h| h.tools.is_some() && h.grpc.is_none() && asked.endpoint(h));
    });
    found
}

fn for_network_hosts<'p>(
    policy: &'p Policy,
    name: Option<&str>,
    addr: Option<IpAddr>,
    mut f: impl FnMut(&'p NetworkRule),
) {
    let rules = policy.network.rules();
    let mut visit = |i: usize| {
        if let Some(r) = rules.get(i) {
            f(r);
        }
    };
    if let Some(name) = name {
        policy.network.index.for_name(name, &mut visit);
    }
    if let Some(addr) = addr {
        // An IP literal given as the name was already looked up by address.
        if name.and_then(|n| n.parse::<IpAddr>().ok()) != Some(addr) {
            policy.network.index.for_ip(addr, &mut visit);
        }
    }
}

fn udp<'p>(policy: &'p Policy, name: Option<&str>, addr: IpAddr, port: u16, best: &mut Best<'p>) {
    let rules = policy.udp.rules();
    let mut visit = |i: usize| {
        if let Some(r) = rules.get(i).filter(|r| r.port == port) {
            best.offer(r.action, &r.id, r.mode);
        }
    };
    if let Some(name) = name {
        policy.udp.index.for_name(name, &mut visit);
    }
    if name.and_then(|n| n.parse::<IpAddr>().ok()) != Some(addr) {
        policy.udp.index.for_ip(addr, &mut visit);
    }
}

/// A name may be resolved if an allowing network or udp rule names it, or `dns.names` does.
fn dns<'p>(policy: &'p Policy, name: &str, best: &mut Best<'p>) {
    let name = normalize_name(name);
    if name.parse::<IpAddr>().is_ok() {
        return;
    }
    let net = policy.network.rules();
    policy.network.index.for_name(&name, |i| {
        if let Some(r) = net.get(i).filter(|r| r.action == Action::Allow) {
            best.offer(Action::Allow, &r.id, r.mode);
        }
    });
    let udp = policy.udp.rules();
    policy.udp.index.for_name(&name, |i| {
        if let Some(r) = udp.get(i).filter(|r| r.action == Action::Allow) {
            best.offer(Action::Allow, &r.id, r.mode);
        }
    });
    let names = policy.dns.names();
    policy.dns.index.for_name(&name, |i| {
        if let Some(n) = names.get(i) {
            best.offer(Action::Allow, &n.id, n.mode);
        }
    });
}

/// The rule closest to a request: the deciding rule if one decided (a `noncanonical-path` or
/// `mcp-tool-not-allowed` denial counts as none: the host rule is named), else a rule for the same
/// host (same port first), the deepest files rule sharing the path's directories (for a rename
/// `to`'s, else `from`'s), or an exec
/// rule for a program of the same file name. `None` when nothing is close.
pub fn nearest_rule(policy: &Policy, req: &Request<'_>) -> Option<String> {
    let d = evaluate(policy, req);
    if !d.is_default_deny() && d.rule != NONCANONICAL_PATH && d.rule != TOOL_NOT_ALLOWED {
        return Some(d.rule);
    }
    match *req {
        Request::Dns { .. } => None,
        Request::Connect {
            name,
            addr,
            port,
            proto: Proto::Tcp,
        }
        | Request::Stream {
            name, addr, port, ..
        } => near_network(policy, name, Some(addr), port),
        Request::Tls {
            sni,
            name,
            addr,
            port,
            ..
        } => near_network(policy, sni.or(name), Some(addr), port),
        Request::Http { host, port, .. } => near_network(policy, Some(host), None, port),
        Request::Connect {
            name,
            addr,
            port,
            proto: Proto::Udp,
        }
        | Request::Datagram { name, addr, port } => {
            let mut found: Option<(bool, &str)> = None;
            let rules = policy.udp.rules();
            let mut visit = |i: usize| {
                if let Some(r) = rules.get(i) {
                    let key = (r.port != port, r.id.as_str());
                    if found.is_none_or(|f| key < f) {
                        found = Some(key);
                    }
                }
            };
            if let Some(name) = name {
                policy.udp.index.for_name(name, &mut visit);
            }
            policy.udp.index.for_ip(addr, &mut visit);
            found.map(|(_, id)| id.to_string())
        }
        Request::FileWrite { path, .. } => near_file(policy, path),
        Request::FileRename { from, to, .. } => {
            near_file(policy, to).or_else(|| near_file(policy, from))
        }
        Request::Exec { path, .. } => {
            let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
            let want = base(path);
            policy
                .exec
                .rules()
                .iter()
                .find(|r| {
                    std::iter::once(&r.path)
                        .chain(&r.aliases)
                        .any(|p| base(p) == want)
                })
                .map(|r| r.id.clone())
        }
    }
}

fn near_network(
    policy: &Policy,
    name: Option<&str>,
    addr: Option<IpAddr>,
    port: u16,
) -> Option<String> {
    let mut found: Option<(bool, &str)> = None;
    for_network_hosts(policy, name, addr, |r| {
        let key = (r.port != port, r.id.as_str());
        if found.is_none_or(|f| key < f) {
            found = Some(key);
        }
    });
    found.map(|(_, id)| id.to_string())
}

#[cfg(test)]
mod tests;

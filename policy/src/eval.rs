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

use crate::fsplan::{granted_rights, required_rights};
use crate::host::normalize_name;
use crate::kinds::{Action, FileKind, Inspect, Layer, Mode, Proto, Protocol, Scheme, Verdict};
use crate::model::{NetworkRule, Policy};
use crate::path::{is_below, is_canonical_path, normalize_abs, query_keys, WORKSPACE};
use crate::request::{Decision, Request, DEFAULT_DENY, NONCANONICAL_PATH};
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
        } => {
            let canonical = is_canonical_path(path);
            let mut refused = false;
            for_network_hosts(policy, Some(host), None, |r| {
                if r.port == port && carries(r.protocol, scheme) {
                    refused |= !http(r, method, path, canonical, query, &mut best);
                }
            });
            if refused && best.allow.is_none() && best.deny.is_none() {
                let mode = policy.network.mode.unwrap_or(global);
                return Decision {
                    verdict: Verdict::Deny,
                    rule: NONCANONICAL_PATH.to_string(),
                    mode,
                    layer,
                };
            }
            policy.network.mode
        }
        Request::FileWrite { path, op } => {
            if let Some(path) = normalize_abs(path) {
                let required = required_rights(op);
                let mut granted = Vec::new();
                let mut decider: Option<(&str, &str, Option<Mode>)> = None;
                for r in policy.files.rules() {
                    let applies = match r.kind {
                        FileKind::File => r.path.as_str() == path,
                        FileKind::Dir => is_below(&path, r.path.as_str()),
                    };
                    if !applies {
                        continue;
                    }
                    let rights: Vec<_> = r
                        .allow
                        .iter()
                        .flat_map(|op| granted_rights(r.kind, *op))
                        .collect();
                    if rights.iter().any(|g| required.contains(g)) {
                        let key = (r.path.as_str(), r.id.as_str());
                        // The deepest contributing rule decides (then the smallest id).
                        let better = decider.is_none_or(|(p, id, _)| {
                            key.0.len() > p.len() || (key.0.len() == p.len() && key.1 < id)
                        });
                        if better {
                            decider = Some((key.0, key.1, r.mode));
                        }
                    }
                    granted.extend(rights);
                }
                if required.iter().all(|r| granted.contains(r)) {
                    if let Some((_, id, mode)) = decider {
                        best.offer(Action::Allow, id, mode);
                    }
                }
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

/// Offers what host rule `r` says about one HTTP request. `false` when the rule would have
/// matched sub-rules but the path is not canonical (then no sub-rule is consulted).
fn http<'p>(
    r: &'p NetworkRule,
    method: &str,
    path: &str,
    canonical: bool,
    query: Option<&str>,
    best: &mut Best<'p>,
) -> bool {
    if r.action == Action::Deny {
        best.offer(Action::Deny, &r.id, r.mode);
        return true;
    }
    if is_l4(r) {
        best.offer(Action::Allow, &r.id, r.mode);
        return true;
    }
    if !canonical {
        return false;
    }
    for h in &r.http {
        // Cheapest test first; the query is checked only for a matching route.
        let method_ok = h.method == "*" || h.method == method;
        let query_ok = || match (&h.query, query) {
            (None, _) | (Some(_), None) => true,
            (Some(keys), Some(q)) => {
                query_keys(q).all(|k| keys.binary_search_by(|x| x.as_str().cmp(k)).is_ok())
            }
        };
        if method_ok && h.path.matches(path) && query_ok() {
            best.offer(h.action, &h.id, h.mode.or(r.mode));
        }
    }
    true
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

/// The rule closest to a request: the deciding rule if one decided (a `noncanonical-path`
/// denial counts as none: the host rule is named), else a rule for the same
/// host (same port first), the deepest files rule sharing the path's directories, or an exec
/// rule for a program of the same file name. `None` when nothing is close.
pub fn nearest_rule(policy: &Policy, req: &Request<'_>) -> Option<String> {
    let d = evaluate(policy, req);
    if !d.is_default_deny() && d.rule != NONCANONICAL_PATH {
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
        Request::FileWrite { path, .. } => {
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

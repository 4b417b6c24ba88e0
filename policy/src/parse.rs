//! `Policy::parse`: YAML text → typed [`Policy`], once, with `LINE:COL: what is wrong` for
//! every error, syntactic or semantic (unknown field, bad version, mode, host, port, glob,
//! a files rule outside `/tmp/workspace`, duplicate id). Owns the file schema's required and
//! default fields and the derived rule ids. Printing is `yaml_out`'s.

mod local;
mod node;

use crate::host::HostPattern;
use crate::kinds::{Action, Inspect, Mode, Protocol};
use crate::model::*;
use crate::path::PathPattern;
use crate::request::{DEFAULT_DENY, NONCANONICAL_PATH, TOOL_NOT_ALLOWED};
use local::{exec, files};
use node::{boolean, err, keyword, seq, string, strings, uint, Map, Node, Result};
use std::collections::HashMap;

impl Policy {
    /// Parses a policy file. Errors display as `LINE:COL: message` (1-based).
    pub fn parse(text: &str) -> std::result::Result<Policy, PolicyError> {
        let root = node::load(text)?;
        let mut ids = Ids::default();
        let m = Map::new(
            &root,
            "the policy",
            &[
                "version",
                "mode",
                "observation",
                "network",
                "dns",
                "udp",
                "files",
                "exec",
            ],
        )?;
        let v = m.req("version")?;
        let version = uint(v, "version")?;
        if version != u64::from(VERSION) {
            return Err(err(
                v,
                format!(
                    "unsupported policy version {version} (this idagent reads version {VERSION})"
                ),
            ));
        }
        let mode = m
            .get("mode")
            .map(mode)
            .transpose()?
            .unwrap_or(Mode::Enforce);
        let observation = m
            .get("observation")
            .map(observation)
            .transpose()?
            .unwrap_or_default();
        let network = m
            .get("network")
            .map(|n| network(n, &mut ids))
            .transpose()?
            .unwrap_or_default();
        let dns = m
            .get("dns")
            .map(|n| dns(n, &mut ids))
            .transpose()?
            .unwrap_or_default();
        let udp = m
            .get("udp")
            .map(|n| udp(n, &mut ids))
            .transpose()?
            .unwrap_or_default();
        let files = m
            .get("files")
            .map(|n| files(n, &mut ids))
            .transpose()?
            .unwrap_or_default();
        let exec = m
            .get("exec")
            .map(|n| exec(n, &mut ids))
            .transpose()?
            .unwrap_or_default();
        Ok(Policy {
            version: VERSION,
            mode,
            observation,
            network,
            dns,
            udp,
            files,
            exec,
        })
    }
}

/// Rule ids seen so far, with where.
#[derive(Default)]
struct Ids(HashMap<String, (usize, usize)>);

impl Ids {
    /// The rule's id: the `id` field, else `derived`; refused if already taken.
    fn claim(&mut self, m: &Map<'_, '_>, derived: impl FnOnce() -> String) -> Result<String> {
        let (id, at) = match m.get("id") {
            Some(n) => {
                let id = string(n, "id")?;
                let reserved = [DEFAULT_DENY, NONCANONICAL_PATH, TOOL_NOT_ALLOWED].contains(&id);
                if id.trim().is_empty() || id.chars().any(char::is_control) || reserved {
                    return Err(err(
                        n,
                        format!("bad rule id `{id}` (empty, control characters, or reserved: `{DEFAULT_DENY}`, `{NONCANONICAL_PATH}`, `{TOOL_NOT_ALLOWED}`)"),
                    ));
                }
                (id.to_string(), n)
            }
            None => (derived(), m.node()),
        };
        let e = err(at, "");
        if let Some((line, col)) = self.0.get(&id) {
            return Err(err(
                at,
                format!("duplicate rule id `{id}` (first at {line}:{col})"),
            ));
        }
        self.0.insert(id.clone(), (e.line, e.col));
        Ok(id)
    }
}

fn mode(n: &Node<'_>) -> Result<Mode> {
    keyword(n, "mode", Mode::from_keyword, Mode::expected())
}

fn opt_mode(m: &Map<'_, '_>) -> Result<Option<Mode>> {
    m.get("mode").map(mode).transpose()
}

fn action(m: &Map<'_, '_>) -> Result<Action> {
    Ok(m.get("action")
        .map(|n| keyword(n, "action", Action::from_keyword, Action::expected()))
        .transpose()?
        .unwrap_or(Action::Allow))
}

fn risk(m: &Map<'_, '_>) -> Result<Vec<String>> {
    Ok(m.get("risk")
        .map(|n| strings(n, "risk"))
        .transpose()?
        .unwrap_or_default())
}

fn port(m: &Map<'_, '_>) -> Result<u16> {
    let n = m.req("port")?;
    match uint(n, "port") {
        Ok(p) if (1..=65535).contains(&p) => {
            u16::try_from(p).map_err(|_| err(n, "port must be 1-65535"))
        }
        Ok(p) => Err(err(n, format!("bad port {p} (must be 1-65535)"))),
        Err(_) => Err(err(n, "bad port (must be an integer 1-65535)")),
    }
}

fn host(n: &Node<'_>, what: &str) -> Result<HostPattern> {
    HostPattern::parse(string(n, what)?).map_err(|e| err(n, e))
}

fn seen(m: &Map<'_, '_>) -> Result<Option<Seen>> {
    let Some(n) = m.get("seen") else {
        return Ok(None);
    };
    let s = Map::new(
        n,
        "seen",
        &["count", "runs", "first", "last", "example_seq"],
    )?;
    let mut runs = strings(s.req("runs")?, "runs")?;
    runs.sort();
    runs.dedup();
    Ok(Some(Seen {
        count: uint(s.req("count")?, "count")?,
        runs,
        first: string(s.req("first")?, "first")?.to_string(),
        last: string(s.req("last")?, "last")?.to_string(),
        example_seq: uint(s.req("example_seq")?, "example_seq")?,
    }))
}

fn observation(n: &Node<'_>) -> Result<Observation> {
    if let Ok(s) = string(n, "observation") {
        return match s {
            "complete" => Ok(Observation::Complete),
            "incomplete" => Ok(Observation::Incomplete {
                reasons: Vec::new(),
            }),
            _ => Err(err(
                n,
                format!("unknown observation `{s}` (expected complete or incomplete)"),
            )),
        };
    }
    let m = Map::new(n, "observation", &["status", "reasons"])?;
    let status = m.req("status")?;
    let reasons = m
        .get("reasons")
        .map(|r| strings(r, "reasons"))
        .transpose()?
        .unwrap_or_default();
    match string(status, "status")? {
        "incomplete" => Ok(Observation::Incomplete { reasons }),
        "complete" if reasons.is_empty() => Ok(Observation::Complete),
        "complete" => Err(err(status, "a complete observation has no reasons")),
        s => Err(err(
            status,
            format!("unknown observation status `{s}` (expected complete or incomplete)"),
        )),
    }
}

fn network(n: &Node<'_>, ids: &mut Ids) -> Result<NetworkSection> {
    let m = Map::new(n, "network", &["mode", "rules"])?;
    let mut rules = Vec::new();
    for r in m.list("rules")? {
        rules.push(network_rule(r, ids)?);
    }
    Ok(NetworkSection::new(opt_mode(&m)?, rules))
}

fn network_rule(n: &Node<'_>, ids: &mut Ids) -> Result<NetworkRule> {
    let m = Map::new(
        n,
        "a network rule",
        &[
            "id",
            "host",
            "port",
            "protocol",
            "inspect",
            "action",
            "mode",
            "http",
            "credentials",
            "risk",
            "seen",
        ],
    )?;
    let host = host(m.req("host")?, "host")?;
    let port = port(&m)?;
    let protocol = keyword(
        m.req("protocol")?,
        "protocol",
        Protocol::from_keyword,
        Protocol::expected(),
    )?;
    let inspect = match m.get("inspect") {
        Some(i) => {
            let inspect = keyword(i, "inspect", Inspect::from_keyword, Inspect::expected())?;
            if inspect == Inspect::L7 && protocol.default_inspect() == Inspect::L4 {
                return Err(err(
                    i,
                    format!("inspect: l7 needs protocol http or https (this rule is {protocol})"),
                ));
            }
            inspect
        }
        None => protocol.default_inspect(),
    };
    let id = ids.claim(&m, || format!("net:{host}:{port}"))?;
    let mut http = Vec::new();
    if let Some(h) = m.get("http") {
        let items = seq(h, "http")?;
        if inspect == Inspect::L4 && !items.is_empty() {
            let at = m.key("http").unwrap_or(h);
            return Err(err(
                at,
                "http rules need inspect: l7 (an l4 rule allows the whole connection)",
            ));
        }
        for item in items {
            http.push(http_rule(item, &host, port, ids)?);
        }
    }
    Ok(NetworkRule {
        id,
        host,
        port,
        protocol,
        inspect,
        action: action(&m)?,
        mode: opt_mode(&m)?,
        http,
        credentials: m
            .get("credentials")
            .map(|c| boolean(c, "credentials"))
            .transpose()?
            .unwrap_or(false),
        risk: risk(&m)?,
        seen: seen(&m)?,
    })
}

fn http_rule(n: &Node<'_>, host: &HostPattern, port: u16, ids: &mut Ids) -> Result<HttpRule> {
    let m = Map::new(
        n,
        "an http rule",
        &[
            "id", "method", "path", "query", "grpc", "mcp", "action", "mode", "risk", "seen",
        ],
    )?;
    if let Some(g) = m.get("grpc") {
        return grpc_rule(&m, g, host, port, ids);
    }
    let mn = m.req("method")?;
    let method = string(mn, "method")?;
    if method != "*" && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(err(
            mn,
            format!("bad method `{method}` (uppercase like GET, or *)"),
        ));
    }
    let pn = m.req("path")?;
    let path = PathPattern::parse(string(pn, "path")?).map_err(|e| err(pn, e))?;
    let query = match m.get("query") {
        Some(q) => {
            let mut keys = strings(q, "query")?;
            keys.sort();
            keys.dedup();
            Some(keys)
        }
        None => None,
    };
    let tools = match m.get("mcp") {
        Some(t) => {
            if !matches!(method, "POST" | "*") {
                return Err(err(
                    mn,
                    format!("an mcp rule is for POST (tool calls are POSTed), not {method}"),
                ));
            }
            Some(mcp_tools(t)?)
        }
        None => None,
    };
    let id = ids.claim(&m, || format!("http:{host}:{port}:{method}:{path}"))?;
    Ok(HttpRule {
        id,
        method: method.to_string(),
        path,
        grpc: None,
        tools,
        query,
        action: action(&m)?,
        mode: opt_mode(&m)?,
        risk: risk(&m)?,
        seen: seen(&m)?,
    })
}

/// `mcp: {tools: [..]}`: tool names, sorted, unique (an empty list: no tool may be called).
fn mcp_tools(n: &Node<'_>) -> Result<Vec<String>> {
    let m = Map::new(n, "mcp", &["tools"])?;
    let list = m.req("tools")?;
    let mut tools = Vec::new();
    for item in seq(list, "tools")? {
        let t = string(item, "tools")?;
        if t.is_empty() || t.chars().any(char::is_control) {
            return Err(err(
                item,
                format!("bad tool name {t:?} (empty or control characters)"),
            ));
        }
        tools.push(t.to_string());
    }
    tools.sort();
    tools.dedup();
    Ok(tools)
}

/// `- grpc: {service: pkg.Svc, method: Name | "*"}`: a POST to `/pkg.Svc/Name` that is a
/// gRPC call; `method`, `path`, `query` and `mcp` belong to plain http rules.
fn grpc_rule(
    m: &Map<'_, '_>,
    g: &Node<'_>,
    host: &HostPattern,
    port: u16,
    ids: &mut Ids,
) -> Result<HttpRule> {
    for field in ["method", "path", "query", "mcp"] {
        if let Some(k) = m.key(field) {
            return Err(err(
                k,
                format!("a grpc rule names its service and method in `grpc`; `{field}` is for http rules"),
            ));
        }
    }
    let gm = Map::new(g, "grpc", &["service", "method"])?;
    let sn = gm.req("service")?;
    let service = string(sn, "service")?;
    if !crate::request::is_grpc_service(service) {
        return Err(err(
            sn,
            format!("bad grpc service `{service}` (dot-separated protobuf names, like helloworld.Greeter)"),
        ));
    }
    let mn = gm.req("method")?;
    let method = string(mn, "method")?;
    if method != "*" && !crate::request::is_grpc_ident(method) {
        return Err(err(
            mn,
            format!("bad grpc method `{method}` (a protobuf name like SayHello, or *)"),
        ));
    }
    let path = PathPattern::parse(&format!("/{service}/{method}")).map_err(|e| err(g, e))?;
    let id = ids.claim(m, || format!("grpc:{host}:{port}:{service}/{method}"))?;
    Ok(HttpRule {
        id,
        method: "POST".to_string(),
        path,
        grpc: Some(GrpcMatch {
            service: service.to_string(),
            method: (method != "*").then(|| method.to_string()),
        }),
        tools: None,
        query: None,
        action: action(m)?,
        mode: opt_mode(m)?,
        risk: risk(m)?,
        seen: seen(m)?,
    })
}

fn udp(n: &Node<'_>, ids: &mut Ids) -> Result<UdpSection> {
    let m = Map::new(n, "udp", &["mode", "rules"])?;
    let mut rules = Vec::new();
    for r in m.list("rules")? {
        let m = Map::new(
            r,
            "a udp rule",
            &["id", "host", "port", "action", "mode", "risk", "seen"],
        )?;
        let host = host(m.req("host")?, "host")?;
        let port = port(&m)?;
        let id = ids.claim(&m, || format!("udp:{host}:{port}"))?;
        rules.push(UdpRule {
            id,
            host,
            port,
            action: action(&m)?,
            mode: opt_mode(&m)?,
            risk: risk(&m)?,
            seen: seen(&m)?,
        });
    }
    Ok(UdpSection::new(opt_mode(&m)?, rules))
}

fn dns(n: &Node<'_>, ids: &mut Ids) -> Result<DnsSection> {
    let m = Map::new(n, "dns", &["mode", "names"])?;
    let mut names = Vec::new();
    for item in m.list("names")? {
        if let Ok(s) = string(item, "name") {
            let name = HostPattern::parse(s).map_err(|e| err(item, e))?;
            let id = format!("dns:{name}");
            let e = err(item, "");
            if let Some((line, col)) = ids.0.get(&id) {
                return Err(err(
                    item,
                    format!("duplicate rule id `{id}` (first at {line}:{col})"),
                ));
            }
            ids.0.insert(id.clone(), (e.line, e.col));
            names.push(DnsName {
                id,
                name,
                mode: None,
                risk: Vec::new(),
                seen: None,
            });
            continue;
        }
        let m = Map::new(item, "a dns name", &["id", "name", "mode", "risk", "seen"])?;
        let name = host(m.req("name")?, "name")?;
        let id = ids.claim(&m, || format!("dns:{name}"))?;
        names.push(DnsName {
            id,
            name,
            mode: opt_mode(&m)?,
            risk: risk(&m)?,
            seen: seen(&m)?,
        });
    }
    Ok(DnsSection::new(opt_mode(&m)?, names))
}

#[cfg(test)]
pub(crate) mod tests;

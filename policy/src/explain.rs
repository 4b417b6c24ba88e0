//! What a reviewer reads: [`risks`] (rules that deserve a second look), [`explain`] (a text
//! page, risky rules first) and [`explain_json`]. Owns the risk vocabulary; the learner puts
//! the same tags on the rules it writes (`risk: [..]`). Decides nothing.
//!
//! Risk tags: `wildcard-host`, `ip-literal`, `write-with-credentials` (an HTTP rule for a
//! method other than GET/HEAD on a host that received credentials), `l4-http` (`inspect: l4`
//! on http/https: requests are not checked), `l4-with-http` (the learner saw HTTP and opaque
//! streams on one host and port, so wrote an `l4` rule: those HTTP requests are not checked;
//! known only from the learner's tag), `shell`, `network-tool`, `inline-code` (an
//! interpreter run with `-c`/`-e`; known only from the learner's tag).

use crate::host::HostPattern;
use crate::kinds::{Action, Inspect, Protocol};
use crate::model::{ExecRule, HttpRule, NetworkRule, Observation, Policy, Seen};
use serde::Serialize;
use std::fmt::Write as _;

/// One rule a reviewer should look at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Risk {
    /// The rule id.
    pub rule: String,
    /// Stable tag (`wildcard-host`, `shell`...).
    pub code: String,
    /// One sentence for a human.
    pub what: String,
}

/// The learner's tag for an `l4` rule written for a host and port that carried both HTTP and
/// opaque streams.
pub(crate) const L4_WITH_HTTP: &str = "l4-with-http";

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "busybox",
];
const NET_TOOLS: &[&str] = &[
    "curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "scp", "sftp", "telnet", "ftp", "rsync",
];
/// Interpreters whose `-c`/`-e` runs inline code.
pub(crate) const INTERPRETERS: &[&str] = &[
    "python", "python2", "python3", "node", "nodejs", "perl", "ruby", "php", "lua", "deno", "bun",
];

fn describe(code: &str) -> &'static str {
    match code {
        "wildcard-host" => "wildcard host: every name below it is allowed",
        "ip-literal" => "IP-literal host: reached by address, with no name to check",
        "write-with-credentials" => {
            "non-GET/HEAD requests allowed to a host that received credentials"
        }
        "l4-http" => "inspect: l4 on an http(s) rule: requests are not checked",
        L4_WITH_HTTP => {
            "HTTP and opaque streams were seen here, so the rule is l4: HTTP requests are not checked"
        }
        "shell" => "a shell may be executed",
        "network-tool" => "a network tool may be executed",
        "inline-code" => "an interpreter was run with inline code (-c/-e)",
        _ => "flagged by the learner",
    }
}

/// The program name of an exec path, version suffix dropped (`python3.11` → `python3`).
pub(crate) fn program(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    let trimmed = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    if trimmed.is_empty() || INTERPRETERS.contains(&base) {
        base
    } else if INTERPRETERS.contains(&trimmed) || trimmed == "python" {
        trimmed
    } else {
        base
    }
}

pub(crate) fn host_tags(host: &HostPattern) -> Vec<&'static str> {
    match host {
        HostPattern::Wildcard(_) => vec!["wildcard-host"],
        HostPattern::Ip(_) => vec!["ip-literal"],
        HostPattern::Exact(_) => vec![],
    }
}

pub(crate) fn network_tags(r: &NetworkRule) -> Vec<&'static str> {
    let mut tags = host_tags(&r.host);
    if r.inspect == Inspect::L4 && matches!(r.protocol, Protocol::Http | Protocol::Https) {
        tags.push("l4-http");
    }
    tags
}

pub(crate) fn http_tags(r: &NetworkRule, h: &HttpRule) -> Vec<&'static str> {
    let safe = matches!(h.method.as_str(), "GET" | "HEAD");
    if r.credentials && !safe && h.action == Action::Allow {
        vec!["write-with-credentials"]
    } else {
        vec![]
    }
}

pub(crate) fn exec_tags(r: &ExecRule) -> Vec<&'static str> {
    let names = std::iter::once(&r.path)
        .chain(&r.aliases)
        .map(|p| p.rsplit('/').next().unwrap_or(p));
    let mut tags = Vec::new();
    for name in names {
        if SHELLS.contains(&name) && !tags.contains(&"shell") {
            tags.push("shell");
        }
        if NET_TOOLS.contains(&name) && !tags.contains(&"network-tool") {
            tags.push("network-tool");
        }
    }
    tags
}

/// Every risky allow rule of the policy: computed from the rules, plus the tags stored in
/// their `risk` fields. Sorted by rule id, then tag.
pub fn risks(policy: &Policy) -> Vec<Risk> {
    let mut out = Vec::new();
    let mut add = |id: &str, computed: Vec<&'static str>, stored: &[String], action: Action| {
        if action == Action::Deny {
            return;
        }
        let mut codes: Vec<String> = computed.into_iter().map(str::to_string).collect();
        codes.extend(stored.iter().cloned());
        codes.sort();
        codes.dedup();
        for code in codes {
            out.push(Risk {
                rule: id.to_string(),
                what: describe(&code).to_string(),
                code,
            });
        }
    };
    for r in policy.network.rules() {
        add(&r.id, network_tags(r), &r.risk, r.action);
        for h in &r.http {
            add(&h.id, http_tags(r, h), &h.risk, h.action);
        }
    }
    for r in policy.udp.rules() {
        add(&r.id, host_tags(&r.host), &r.risk, r.action);
    }
    for n in policy.dns.names() {
        add(&n.id, host_tags(&n.name), &n.risk, Action::Allow);
    }
    for r in policy.files.rules() {
        add(&r.id, vec![], &r.risk, Action::Allow);
    }
    for r in policy.exec.rules() {
        add(&r.id, exec_tags(r), &r.risk, r.action);
    }
    out.sort();
    out
}

fn seen_text(s: Option<&Seen>) -> String {
    match s {
        Some(s) if s.runs.len() == 1 => format!("  seen {}x in 1 run", s.count),
        Some(s) => format!("  seen {}x in {} runs", s.count, s.runs.len()),
        None => String::new(),
    }
}

fn mode_text(m: Option<crate::Mode>) -> String {
    m.map(|m| format!(" [{m}]")).unwrap_or_default()
}

/// A text page a reviewer reads in a minute: risky rules first, then each section.
pub fn explain(policy: &Policy) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "idagent policy v{}: mode {}, default deny",
        policy.version, policy.mode
    );
    match &policy.observation {
        Observation::Complete => o.push_str("observation: complete\n"),
        Observation::Incomplete { reasons } => {
            o.push_str("observation: INCOMPLETE (the policy may be too narrow)\n");
            reasons.iter().for_each(|r| {
                let _ = writeln!(o, "  - {r}");
            });
        }
    }
    let risks = risks(policy);
    let _ = writeln!(o, "\nRISKS ({}): review these first", risks.len());
    for r in &risks {
        let _ = writeln!(o, "  ! {}  [{}] {}", r.rule, r.code, r.what);
    }
    let _ = writeln!(
        o,
        "\nNETWORK ({} rules){}",
        policy.network.rules().len(),
        mode_text(policy.network.mode)
    );
    for r in policy.network.rules() {
        let _ = writeln!(
            o,
            "  {} {}:{} {} {}{}  {}{}",
            r.action,
            r.host,
            r.port,
            r.protocol,
            r.inspect,
            mode_text(r.mode),
            r.id,
            seen_text(r.seen.as_ref())
        );
        for h in &r.http {
            let q = match &h.query {
                None if h.grpc.is_some() => String::new(),
                None => "?(any query)".to_string(),
                Some(keys) if keys.is_empty() => String::new(),
                Some(keys) => format!("?{}", keys.join("&")),
            };
            let what = match &h.grpc {
                Some(g) => format!(
                    "grpc {}/{}",
                    g.service,
                    g.method.as_deref().unwrap_or("* (every method)")
                ),
                None => format!("{} {}{q}", h.method, h.path),
            };
            let tools = match &h.tools {
                None => String::new(),
                Some(t) if t.is_empty() => " (mcp: no tool calls)".to_string(),
                Some(t) if h.action == Action::Deny => format!(" (mcp tools: {})", t.join(", ")),
                Some(t) => format!(" (mcp tools only: {})", t.join(", ")),
            };
            let _ = writeln!(
                o,
                "      {} {what}{tools}{}  {}{}",
                h.action,
                mode_text(h.mode),
                h.id,
                seen_text(h.seen.as_ref())
            );
        }
    }
    let _ = writeln!(
        o,
        "\nDNS ({} extra names){}",
        policy.dns.names().len(),
        mode_text(policy.dns.mode)
    );
    for n in policy.dns.names() {
        let _ = writeln!(
            o,
            "  allow {}  {}{}",
            n.name,
            n.id,
            seen_text(n.seen.as_ref())
        );
    }
    let _ = writeln!(
        o,
        "\nUDP ({} rules){}",
        policy.udp.rules().len(),
        mode_text(policy.udp.mode)
    );
    for r in policy.udp.rules() {
        let _ = writeln!(
            o,
            "  {} {}:{}  {}{}",
            r.action,
            r.host,
            r.port,
            r.id,
            seen_text(r.seen.as_ref())
        );
    }
    let _ = writeln!(
        o,
        "\nFILES ({} rules){}",
        policy.files.rules().len(),
        mode_text(policy.files.mode)
    );
    for r in policy.files.rules() {
        let ops: Vec<&str> = r.allow.iter().map(|a| a.as_str()).collect();
        let beneath = if r.kind == crate::FileKind::Dir {
            " (and everything beneath)"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "  {} {}{}: {}  {}{}",
            r.kind,
            r.path,
            beneath,
            ops.join(", "),
            r.id,
            seen_text(r.seen.as_ref())
        );
        if !r.observed.is_empty() {
            let _ = writeln!(o, "      observed: {}", r.observed.join(", "));
        }
    }
    for d in policy.files.observed_denied() {
        let errno = d.errno.as_deref().unwrap_or("refused");
        let _ = writeln!(
            o,
            "  refused while learning (not allowed): {} {} {} x{}",
            d.op, d.path, errno, d.count
        );
    }
    let _ = writeln!(
        o,
        "\nEXEC ({} rules){}",
        policy.exec.rules().len(),
        mode_text(policy.exec.mode)
    );
    for r in policy.exec.rules() {
        let aliases = if r.aliases.is_empty() {
            String::new()
        } else {
            format!(" (also {})", r.aliases.join(", "))
        };
        let _ = writeln!(
            o,
            "  {} {}{}  {}{}",
            r.action,
            r.path,
            aliases,
            r.id,
            seen_text(r.seen.as_ref())
        );
    }
    o
}

#[derive(Serialize)]
struct Explained<'a> {
    risks: Vec<Risk>,
    fs_plan: crate::FsPlan,
    policy: &'a Policy,
}

/// The same as [`explain`], as one JSON object: `{risks, fs_plan, policy}`.
pub fn explain_json(policy: &Policy) -> String {
    let doc = Explained {
        risks: risks(policy),
        fs_plan: policy.fs_plan(),
        policy,
    };
    serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

//! The HTML "Agent tool calls" section: MCP / JSON-RPC and gRPC calls in log order. An MCP
//! `tools/call` or a gRPC call is shown in full (the call in bold, its arguments); other
//! JSON-RPC messages (`initialize`, `tools/list`, notifications) compactly, dimmed. Every
//! value is guest-controlled and goes through the page's escaping helpers ([`super::esc`],
//! [`super::mono`]).

use super::{at, clip, esc, mono, mono_as, pill, table};
use crate::report::text::inert;
use crate::report::{RunReport, ToolCall};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Characters of a call's arguments shown in the cell (the rest is in the cell's tooltip, up
/// to what the gateway kept).
const MAX_ARGUMENT_CHARS: usize = 240;
/// Tools named in the summary line (the rest are counted).
const MAX_TOOLS_NAMED: usize = 20;

fn dim(html: String) -> String {
    format!("<span class=\"dim\">{html}</span>")
}

fn call_cell(c: &ToolCall) -> String {
    let mut cell = if c.is_invocation() {
        format!("<b>{}</b>", mono_as("tool", &c.call))
    } else {
        dim(mono(&c.call))
    };
    let mut extra = Vec::new();
    if let Some(id) = &c.id {
        extra.push(format!("id {}", esc(&inert(id))));
    }
    if let Some(n) = c.batch {
        extra.push(format!("batch of {n}"));
    }
    if let Some((up, down)) = c.grpc_messages {
        extra.push(format!("{up}↑ {down}↓ messages"));
    }
    if !extra.is_empty() {
        let _ = write!(cell, " <span class=\"dim\">({})</span>", extra.join(", "));
    }
    cell
}

fn arguments_cell(c: &ToolCall) -> String {
    match c.arguments.as_deref() {
        Some(args) => {
            let full = inert(args);
            format!(
                "<span class=\"mono argv\" title=\"{}\">{}</span>",
                esc(&full),
                esc(&clip(&full, MAX_ARGUMENT_CHARS))
            )
        }
        None => "<span class=\"dim\">—</span>".into(),
    }
}

fn outcome_cell(c: &ToolCall) -> String {
    let status = match c.http_status {
        Some(s) if s < 400 => pill("good", &format!("HTTP {s}")),
        Some(s) => pill("bad", &format!("HTTP {s}")),
        None => pill("warn", "no HTTP status"),
    };
    let class = match (c.failed, c.outcome.as_str()) {
        (true, _) => "bad",
        (false, "sent") => "dim",
        (false, _) => "good",
    };
    format!("{status} {}", pill(class, &inert(&c.outcome)))
}

fn policy_cell(c: &ToolCall) -> String {
    match c.policy.as_deref() {
        Some(p) => pill(if c.refused { "bad" } else { "warn" }, &inert(p)),
        None => "<span class=\"dim\">—</span>".into(),
    }
}

/// `3 tool calls: get_weather ×2, search ×1 · 1 gRPC call · 2 other JSON-RPC: initialize ×1 …`.
fn summary(r: &RunReport) -> String {
    let mut tools: BTreeMap<&str, u64> = BTreeMap::new();
    let mut others: BTreeMap<&str, u64> = BTreeMap::new();
    let mut grpc = 0;
    for c in &r.tool_calls {
        if c.tool_call {
            *tools.entry(&c.call).or_default() += 1;
        } else if c.is_invocation() {
            grpc += 1;
        } else {
            *others.entry(&c.call).or_default() += 1;
        }
    }
    let named = |m: &BTreeMap<&str, u64>| {
        let mut names: Vec<String> = m
            .iter()
            .take(MAX_TOOLS_NAMED)
            .map(|(name, n)| format!("{} ×{n}", mono(name)))
            .collect();
        if m.len() > MAX_TOOLS_NAMED {
            names.push(format!("+{} more", m.len() - MAX_TOOLS_NAMED));
        }
        names.join(", ")
    };
    let mut parts = Vec::new();
    let n: u64 = tools.values().sum();
    parts.push(match n {
        0 => "no MCP tool call".to_owned(),
        _ => format!("<b>{n} MCP tool call(s)</b>: {}", named(&tools)),
    });
    if grpc > 0 {
        parts.push(format!("{grpc} gRPC call(s)"));
    }
    let n: u64 = others.values().sum();
    if n > 0 {
        parts.push(format!("{n} other JSON-RPC message(s): {}", named(&others)));
    }
    parts.join(" · ")
}

/// Appends the section (a "None." line when the run made no call).
pub(super) fn section(out: &mut String, r: &RunReport) {
    let rows = r
        .tool_calls
        .iter()
        .map(|c| {
            vec![
                at(c.seq, c.at_ms),
                c.flow.map_or("—".into(), |f| f.to_string()),
                mono_as("host", &c.server),
                esc(&c.protocol),
                call_cell(c),
                arguments_cell(c),
                outcome_cell(c),
                policy_cell(c),
            ]
        })
        .collect();
    let head = [
        "#T+",
        "#Flow",
        "Server",
        "Protocol",
        "Call",
        "Arguments",
        "Outcome",
        "Policy",
    ];
    table(out, "tool-calls", "Agent tool calls", &head, rows);
    if !r.tool_calls.is_empty() {
        let _ = writeln!(out, "<p class=\"kinds\">{}</p>", summary(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_strings_are_escaped_and_arguments_cut() {
        let call = ToolCall {
            seq: 3,
            protocol: "MCP".into(),
            tool_call: true,
            call: "<script>alert(1)</script>\u{2028}".into(),
            id: Some("\"><i>".into()),
            arguments: Some(format!("{{\"q\":\"</span><b>{}\"}}", "x".repeat(1000))),
            server: "<h>".into(),
            outcome: "<u>".into(),
            policy: Some("<s>".into()),
            ..ToolCall::default()
        };
        let report = RunReport {
            tool_calls: vec![call],
            ..RunReport::default()
        };
        let mut out = String::new();
        section(&mut out, &report);
        for tag in [
            "<script>",
            "<i>",
            "</span><b>",
            "<h>",
            "<u>",
            "<s>",
            "\u{2028}",
        ] {
            assert!(!out.contains(tag), "{tag} in {out}");
        }
        assert!(
            out.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\u{2028}"),
            "{out}"
        );
        assert!(out.contains("x…"), "arguments are cut: {out}");
    }
}

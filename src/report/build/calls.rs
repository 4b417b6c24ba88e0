//! The "Agent tool calls" section: `http` records that carry `jsonrpc` (MCP's transport) or
//! `grpc` facts, one row each in log order, with their outcome in words and whether the policy
//! refused them (the gateway's `403` note, or an `http`-layer `decision` for the same flow and
//! request). Pure: no I/O.

use super::MAX_TRACKED_KEYS;
use crate::audit::{DecisionEvent, GrpcInfo, HttpEvent, JsonRpcInfo};
use crate::report::fields::url_host;
use crate::report::ToolCall;
use std::collections::{BTreeMap, VecDeque};

/// [`ToolCall::protocol`] values.
const MCP: &str = "MCP";
const JSON_RPC: &str = "JSON-RPC";
const GRPC: &str = "gRPC";

/// What a request is matched on: (flow, method, path). The query is left out: the `http`
/// record's URL has credentials redacted, the decision's query may not.
type Key = (u64, String, String);

/// Denials and would-denies of the `http` layer waiting for their `http` record (the gateway
/// decides when the request arrives and logs the exchange when it ends).
#[derive(Debug, Default)]
pub(super) struct Calls {
    pending: BTreeMap<Key, VecDeque<String>>,
    pending_len: usize,
}

impl Calls {
    /// Remembers an `http`-layer denial or would-deny for the record of its request.
    pub(super) fn decision(&mut self, d: &DecisionEvent) {
        let (Some(flow), "http") = (d.flow, d.layer.as_str()) else {
            return;
        };
        let deny = d.verdict == "deny";
        let policy = if deny && d.mode == "enforce" && !d.would_deny {
            format!("denied (rule {})", d.rule)
        } else if deny || d.would_deny {
            format!("would deny (rule {}, report mode)", d.rule)
        } else {
            return;
        };
        if self.pending_len >= MAX_TRACKED_KEYS {
            return;
        }
        let q = &d.request;
        let key = (
            flow.0,
            q.method.clone().unwrap_or_default(),
            q.path.clone().unwrap_or_default(),
        );
        self.pending.entry(key).or_default().push_back(policy);
        self.pending_len += 1;
    }

    /// The pending decision of `e`'s request, if any (taken, so every `http` record consumes
    /// the decision made for it whether or not it is a call).
    fn take_policy(&mut self, e: &HttpEvent) -> Option<String> {
        let key = (e.flow.0, e.method.clone(), url_path(&e.url).to_owned());
        let queue = self.pending.get_mut(&key)?;
        let policy = queue.pop_front();
        if queue.is_empty() {
            self.pending.remove(&key);
        }
        self.pending_len -= usize::from(policy.is_some());
        policy
    }

    /// The row of `e` when it is a JSON-RPC or gRPC call.
    pub(super) fn row(&mut self, seq: u64, at_ms: Option<i64>, e: &HttpEvent) -> Option<ToolCall> {
        let decided = self.take_policy(e);
        if e.jsonrpc.is_none() && e.grpc.is_none() {
            return None;
        }
        let note = e.note.as_deref().unwrap_or_default();
        // The gate's refusal: `403` with the note `denied by policy (rule R)`.
        let refused = e.status == Some(403) && note.starts_with("denied by policy");
        let policy = match decided {
            Some(p) => Some(p),
            None if refused => {
                let rule = note.trim_start_matches("denied by policy").trim();
                Some(format!("denied {rule}").trim_end().to_owned())
            }
            None => None,
        };
        let mut row = ToolCall {
            seq,
            at_ms,
            flow: Some(e.flow.0),
            server: url_host(&e.url).unwrap_or_default().to_owned(),
            http_status: e.status.map(u64::from),
            refused: refused || policy.as_deref().is_some_and(|p| p.starts_with("denied")),
            policy,
            ..ToolCall::default()
        };
        match (&e.grpc, &e.jsonrpc) {
            (Some(g), _) => grpc(&mut row, g),
            (None, Some(j)) => jsonrpc(&mut row, j),
            (None, None) => return None,
        }
        if row.refused {
            row.outcome = "refused by policy".into();
            row.failed = true;
        } else if e.status.is_none() {
            // The exchange failed before a response: the note says why.
            row.outcome = if note.is_empty() {
                "no response".into()
            } else {
                note.to_owned()
            };
            row.failed = true;
        }
        row.failed |= e.status.is_some_and(|s| s >= 400);
        Some(row)
    }
}

fn jsonrpc(row: &mut ToolCall, j: &JsonRpcInfo) {
    row.protocol = if is_mcp_method(&j.method) {
        MCP
    } else {
        JSON_RPC
    }
    .into();
    row.tool_call = j.method == "tools/call";
    row.call = match (&j.tool, row.tool_call) {
        (Some(tool), true) => tool.clone(),
        _ => j.method.clone(),
    };
    row.id = j.id.clone();
    row.batch = j.batch;
    row.arguments = j
        .arguments
        .as_deref()
        .map(|a| crate::redact::redact_text(a).0);
    row.error_code = j.error_code;
    row.tool_error = j.tool_error;
    (row.outcome, row.failed) = match (j.error_code, j.tool_error, j.response_messages) {
        (Some(code), _, _) => (format!("error {code}{}", error_name(code)), true),
        (None, Some(true), _) => ("tool error (isError)".into(), true),
        (None, _, Some(_)) => ("ok".into(), false),
        // A notification has no answer to wait for.
        (None, _, None) if j.id.is_none() => ("sent".into(), false),
        (None, _, None) => ("no JSON-RPC answer".into(), true),
    };
}

fn grpc(row: &mut ToolCall, g: &GrpcInfo) {
    row.protocol = GRPC.into();
    row.call = format!("{}/{}", g.service, g.method);
    row.grpc_status = g.status;
    row.grpc_message = g.message.clone();
    row.grpc_messages = Some((g.req_messages, g.resp_messages));
    (row.outcome, row.failed) = match g.status {
        Some(s) => {
            let mut text = format!("{s} {}", crate::gateway::grpc::status_name(s));
            if let Some(m) = g.message.as_deref().filter(|m| !m.is_empty()) {
                text.push_str(": ");
                text.push_str(m);
            }
            (text, s != 0)
        }
        None => ("no grpc-status (the call was cut off)".into(), true),
    };
}

/// Methods of MCP's namespace (what tells an MCP session from other JSON-RPC).
fn is_mcp_method(method: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "tools/",
        "resources/",
        "prompts/",
        "notifications/",
        "completion/",
        "logging/",
        "sampling/",
        "roots/",
        "elicitation/",
    ];
    matches!(method, "initialize" | "ping") || PREFIXES.iter().any(|p| method.starts_with(p))
}

/// ` (method not found)` for JSON-RPC 2.0's reserved codes, else nothing.
fn error_name(code: i64) -> &'static str {
    match code {
        -32700 => " (parse error)",
        -32600 => " (invalid request)",
        -32601 => " (method not found)",
        -32602 => " (invalid params)",
        -32603 => " (internal error)",
        -32099..=-32000 => " (server error)",
        _ => "",
    }
}

/// The path of an absolute URL as the gateway decides it (`http://h/mcp?x` → `/mcp`; `/` when
/// it has none); the whole text when it is no absolute URL.
fn url_path(url: &str) -> &str {
    let Some((_, rest)) = url.split_once("://") else {
        return url;
    };
    let start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let path = rest.get(start..).unwrap_or_default();
    let end = path.find(['?', '#']).unwrap_or(path.len());
    match path.get(..end) {
        Some("") | None => "/",
        Some(p) => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(crate::gateway::grpc::status_name(7), "PERMISSION_DENIED");
        assert_eq!(crate::gateway::grpc::status_name(0), "OK");
        assert_eq!(crate::gateway::grpc::status_name(16), "UNAUTHENTICATED");
        assert_eq!(crate::gateway::grpc::status_name(99), "(non-standard)");
        assert_eq!(error_name(-32601), " (method not found)");
        assert_eq!(error_name(-32001), " (server error)");
        assert_eq!(error_name(5), "");
        assert_eq!(url_path("http://mcp.test/mcp?session=1"), "/mcp");
        assert_eq!(url_path("https://h:8443"), "/");
        assert_eq!(url_path("https://h?q"), "/");
        assert!(is_mcp_method("notifications/initialized"));
        assert!(is_mcp_method("tools/list"));
        assert!(!is_mcp_method("eth_call"));
    }
}

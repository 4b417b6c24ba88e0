//! The HTTP decisions that need the request's body: MCP tool calls. An MCP `tools/call` is a
//! JSON-RPC request POSTed to the server's endpoint, and only its body names the tool, so
//! when the policy has a tools rule for a request's endpoint (`gate` answers
//! [`Gate::Inspect`]) the body is read first — at most [`MAX_DECIDED_BODY`] bytes, within
//! [`HEADER_READ_TIMEOUT`] — then decided, one `decision` per tool call, and, if allowed,
//! forwarded byte for byte from the buffer ([`GuestReqBody`]; the request tap sees the bytes
//! once, as they go upstream).
//!
//! Fails closed: a body over the cap, not complete in time, or not JSON is decided as a call
//! of an unknown tool, which no tools list allows (in report mode it is recorded and the
//! request goes through, the unread rest streamed after the buffered part). JSON object keys
//! are matched as lenient servers match them (ASCII case-insensitively, with Go's two extra
//! folds `ſ`→`s` and `K`→`k`), and a key that appears twice under such folding makes the call's
//! tool unknown, so a server cannot read a tool the gate did not. An enforced denial answers
//! `403` with a JSON-RPC error for the refused call's id. Does not own the policy's matching
//! (`idagent_policy`) nor forwarding (`super`).

use super::gate::Gate;
use super::HEADER_READ_TIMEOUT;
use crate::enforce::{Context, Denial, Permit};
use crate::gateway::{FlowMeta, Gateway};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use idagent_policy::{OwnedRequest, OwnedRpc};
use serde_json::Value;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

/// Most bytes of a request body read to decide on it (the MCP tool it calls).
pub(crate) const MAX_DECIDED_BODY: usize = 1024 * 1024;

/// JSON-RPC error code of a refused call (implementation-defined server error range).
const JSONRPC_DENIED: i64 = -32001;

/// The body a request is forwarded with: what was read to decide on it (data, then its
/// trailers), then whatever of the guest's body was not read.
#[derive(Debug)]
pub(crate) struct GuestReqBody {
    buffered: Option<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Incoming>,
}

impl GuestReqBody {
    /// The guest's body, untouched.
    pub(crate) fn streaming(body: Incoming) -> Self {
        Self {
            buffered: None,
            trailers: None,
            rest: Some(body),
        }
    }
}

impl Body for GuestReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(data) = this.buffered.take().filter(|d| !d.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(rest) = &mut this.rest {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.as_ref().is_none_or(Bytes::is_empty)
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let read = self.buffered.as_ref().map_or(0, |b| b.len() as u64);
        let Some(rest) = &self.rest else {
            return SizeHint::with_exact(read);
        };
        let left = rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(left.lower().saturating_add(read));
        if let Some(upper) = left.upper() {
            hint.set_upper(upper.saturating_add(read));
        }
        hint
    }
}

/// What reading a body to decide on it gave.
enum Read {
    /// All of it (and its trailers).
    Whole(Bytes, Option<HeaderMap>),
    /// Only `prefix`: the rest was not read, for the reason given.
    Partial(Bytes, &'static str),
    /// The guest's body failed.
    Failed(String),
}

/// Reads at most [`MAX_DECIDED_BODY`] bytes of `body` within [`HEADER_READ_TIMEOUT`].
async fn read_bounded(body: &mut Incoming) -> Read {
    const OVER: &str = "request body over the 1 MiB cap";
    if body.size_hint().lower() > MAX_DECIDED_BODY as u64 {
        return Read::Partial(Bytes::new(), OVER);
    }
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Read::Partial(buf.freeze(), "request body not complete in 10 s"),
            Ok(None) => return Read::Whole(buf.freeze(), None),
            Ok(Some(Err(e))) => return Read::Failed(e.to_string()),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                buf.extend_from_slice(&data);
                if buf.len() > MAX_DECIDED_BODY {
                    return Read::Partial(buf.freeze(), OVER);
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return Read::Whole(buf.freeze(), Some(trailers));
                }
            }
        }
    }
}

/// Decides a request `gate` left to the body (`Gate::Inspect`); any other `gated` is returned
/// as it is. Replaces `req`'s body with what must be forwarded.
pub(crate) async fn check(
    gw: &Gateway,
    meta: &FlowMeta,
    gated: Gate,
    req: &mut Request<GuestReqBody>,
) -> Gate {
    let Gate::Inspect(request) = gated else {
        return gated;
    };
    let decide = |rpc: Option<OwnedRpc>| {
        let asked = with_rpc(&request, rpc);
        let permit = gw
            .enforcer
            .check(&asked.as_request(), Context::flow(meta.id), "mcp_403");
        (permit, asked)
    };
    let Some(mut incoming) = req.body_mut().rest.take() else {
        return refusal_of(decide(None), &Value::Null, None);
    };
    if incoming.is_end_stream() {
        // No body, no tool call: the endpoint's rules decide.
        *req.body_mut() = GuestReqBody::streaming(incoming);
        return refusal_of(decide(None), &Value::Null, None);
    }
    match read_bounded(&mut incoming).await {
        Read::Failed(e) => Gate::Refuse {
            status: StatusCode::BAD_REQUEST,
            content_type: "text/plain",
            headers: HeaderMap::new(),
            body: format!("idagent gateway: request body: {e}\n"),
            note: format!("error: request body (before the policy could decide): {e}"),
        },
        Read::Partial(prefix, why) => {
            *req.body_mut() = GuestReqBody {
                buffered: Some(prefix),
                trailers: None,
                rest: Some(incoming),
            };
            let unknown = OwnedRpc::Tool { tool: None };
            refusal_of(decide(Some(unknown)), &Value::Null, Some(why))
        }
        Read::Whole(bytes, trailers) => {
            let calls = calls(&bytes);
            *req.body_mut() = GuestReqBody {
                buffered: Some(bytes),
                trailers,
                rest: None,
            };
            let Some(calls) = calls else {
                let unknown = OwnedRpc::Tool { tool: None };
                return refusal_of(decide(Some(unknown)), &Value::Null, Some("body not JSON"));
            };
            let tools: Vec<&Call> = calls.iter().filter(|c| c.tool.is_some()).collect();
            if tools.is_empty() {
                let id = calls.first().map_or(&Value::Null, |c| &c.id);
                return refusal_of(decide(None), id, None);
            }
            // Every tool call of a batch is decided (one `decision` each); the first refused
            // refuses the request.
            let mut refused = None;
            for call in tools {
                let rpc = OwnedRpc::Tool {
                    tool: call.tool.clone().flatten(),
                };
                let gate = refusal_of(decide(Some(rpc)), &call.id, None);
                if refused.is_none() && matches!(gate, Gate::Refuse { .. }) {
                    refused = Some(gate);
                }
            }
            refused.unwrap_or(Gate::Pass)
        }
    }
}

fn with_rpc(request: &OwnedRequest, rpc: Option<OwnedRpc>) -> OwnedRequest {
    let mut asked = request.clone();
    if let OwnedRequest::Http { rpc: slot, .. } = &mut asked {
        if rpc.is_some() {
            *slot = rpc;
        }
    }
    asked
}

/// `Pass`, or the JSON-RPC refusal of an enforced denial of `asked` (call `id`); `unread`
/// says why the tool could not be read.
fn refusal_of((permit, asked): (Permit, OwnedRequest), id: &Value, unread: Option<&str>) -> Gate {
    match permit {
        Permit::Allow => Gate::Pass,
        Permit::Deny(denial) => mcp_refusal(&denial, &asked, id, unread),
    }
}

/// The answer to a refused MCP request: `403` with a JSON-RPC error for the call's `id` whose
/// message names the rule (its `data` says what was asked and what to change).
fn mcp_refusal(denial: &Denial, asked: &OwnedRequest, id: &Value, unread: Option<&str>) -> Gate {
    let tool = match asked {
        OwnedRequest::Http {
            rpc: Some(OwnedRpc::Tool { tool }),
            ..
        } => Some(tool.clone()),
        _ => None,
    };
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": JSONRPC_DENIED,
            "message": format!("denied by idagent policy (rule {})", denial.rule),
            "data": {
                "layer": denial.layer,
                "request": crate::policy_cmd::describe(asked),
                "rule": denial.rule,
                "tool": tool.clone().flatten(),
                "unread": unread,
                "hint": "add the tool to the rule's mcp tools list in the policy file, or run with --mode report",
            },
        },
    });
    let what = match (tool, unread) {
        (_, Some(why)) => format!("; mcp tool unread: {why}"),
        (Some(Some(t)), None) => format!("; mcp tool {t:?}"),
        _ => String::new(),
    };
    Gate::Refuse {
        status: StatusCode::FORBIDDEN,
        content_type: "application/json",
        headers: HeaderMap::new(),
        body: body.to_string(),
        note: format!("denied by policy (rule {}{what})", denial.rule),
    }
}

/// One JSON-RPC request of a body, as far as the policy cares.
#[derive(Debug, PartialEq)]
struct Call {
    /// Its `id` (`null` for a notification).
    id: Value,
    /// `None`: not a `tools/call`; `Some(None)`: a `tools/call` whose tool cannot be read.
    tool: Option<Option<String>>,
}

/// The calls of a JSON body (one object, or a batch); `None` when it is not JSON. Elements
/// that are not objects are not calls.
fn calls(body: &[u8]) -> Option<Vec<Call>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let items = match &value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    Some(
        items
            .into_iter()
            .filter_map(Value::as_object)
            .map(|obj| {
                let id = field(obj, "id")
                    .ok()
                    .flatten()
                    .cloned()
                    .unwrap_or(Value::Null);
                let tool = match field(obj, "method") {
                    Ok(Some(m)) if m.as_str() == Some("tools/call") => Some(tool_name(obj)),
                    Ok(_) => None,
                    // Two `method`s a lenient server may read either way.
                    Err(Ambiguous) => Some(None),
                };
                Call { id, tool }
            })
            .collect(),
    )
}

/// `params.name` of a `tools/call`, if it is one unambiguous string.
fn tool_name(call: &serde_json::Map<String, Value>) -> Option<String> {
    let params = field(call, "params").ok()??.as_object()?;
    Some(field(params, "name").ok()??.as_str()?.to_owned())
}

/// A key present more than once under lenient matching.
struct Ambiguous;

/// The value of `key` matched as lenient decoders match keys (Go's `encoding/json`: ASCII
/// case-insensitive, `ſ` as `s`, the Kelvin sign as `k`).
fn field<'v>(
    obj: &'v serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<&'v Value>, Ambiguous> {
    let fold = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                '\u{17F}' => 's',
                '\u{212A}' => 'k',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    };
    let mut found = obj.iter().filter(|(k, _)| fold(k) == key).map(|(_, v)| v);
    let first = found.next();
    if found.next().is_some() {
        return Err(Ambiguous);
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(body: &str) -> Option<Vec<Option<Option<String>>>> {
        calls(body.as_bytes()).map(|c| c.into_iter().map(|c| c.tool).collect())
    }

    #[test]
    fn tool_calls_are_read_as_lenient_servers_read_them() {
        let t = |s: &str| Some(Some(s.to_owned()));
        assert_eq!(
            tools(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#),
            Some(vec![t("search")])
        );
        assert_eq!(
            tools(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#),
            Some(vec![None])
        );
        // A batch: every call.
        assert_eq!(
            tools(
                r#"[{"method":"tools/list"},{"method":"tools/call","params":{"name":"a"}},{"method":"tools/call","params":{"name":"b"}}]"#
            ),
            Some(vec![None, t("a"), t("b")])
        );
        // Keys as Go reads them: any case, and its two Unicode folds.
        assert_eq!(
            tools(r#"{"Method":"tools/call","PARAMS":{"Name":"b"}}"#),
            Some(vec![t("b")])
        );
        assert_eq!(
            tools("{\"method\":\"tools/call\",\"param\u{17F}\":{\"name\":\"b\"}}"),
            Some(vec![t("b")])
        );
        // Two keys a server may read either way: the tool is unknown.
        assert_eq!(
            tools(r#"{"method":"tools/call","params":{"name":"a","NAME":"b"}}"#),
            Some(vec![Some(None)])
        );
        assert_eq!(
            tools(r#"{"method":"ping","METHOD":"tools/call"}"#),
            Some(vec![Some(None)])
        );
        // A call naming no tool, or not by a string.
        assert_eq!(tools(r#"{"method":"tools/call"}"#), Some(vec![Some(None)]));
        assert_eq!(
            tools(r#"{"method":"tools/call","params":{"name":7}}"#),
            Some(vec![Some(None)])
        );
        assert_eq!(
            tools(r#"{"method":"tools/call","params":["a"]}"#),
            Some(vec![Some(None)])
        );
        // Not JSON at all: the caller decides it as an unknown tool.
        assert_eq!(tools("\u{feff}{}"), None);
        assert_eq!(tools(r#"{"method":"tools/call""#), None);
        // JSON that holds no call.
        assert_eq!(tools("7"), Some(vec![]));
        let ids: Vec<Value> = calls(br#"[{"id":"x","method":"a"},{"method":"b"}]"#)
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, [Value::from("x"), Value::Null]);
    }

    #[test]
    fn a_refused_tool_call_is_a_json_rpc_error_for_its_id() {
        let denial = Denial {
            layer: "http".into(),
            rule: "mcp-tool-not-allowed".into(),
        };
        let asked = OwnedRequest::Http {
            scheme: idagent_policy::Scheme::Http,
            host: "mcp.test".into(),
            port: 80,
            method: "POST".into(),
            path: "/mcp".into(),
            query: None,
            rpc: Some(OwnedRpc::Tool {
                tool: Some("rm".into()),
            }),
        };
        let Gate::Refuse {
            status,
            content_type,
            body,
            note,
            ..
        } = mcp_refusal(&denial, &asked, &Value::from(42), None)
        else {
            panic!("not a refusal");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(content_type, "application/json");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 42);
        assert_eq!(v["error"]["code"], JSONRPC_DENIED);
        assert_eq!(
            v["error"]["message"],
            "denied by idagent policy (rule mcp-tool-not-allowed)"
        );
        assert_eq!(v["error"]["data"]["tool"], "rm");
        assert_eq!(
            note,
            "denied by policy (rule mcp-tool-not-allowed; mcp tool \"rm\")"
        );
    }
}

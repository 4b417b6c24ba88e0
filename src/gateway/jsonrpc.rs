//! JSON-RPC 2.0 (and so MCP, whose streamable-HTTP transport is JSON-RPC over POST with JSON or
//! SSE answers) recognised in an HTTP exchange's captured bodies: the `http` record gets the
//! request's `method` and `id`, for `tools/call` the tool's name and (redacted) arguments, and
//! the answer's error code. Pure: bytes in, a record out; anything that is not JSON-RPC (or was
//! cut by `--capture-bytes`) is simply not recognised.

use crate::audit::JsonRpcInfo;

/// Longest argument text kept (after redaction).
const MAX_ARGUMENTS_CHARS: usize = 1024;
/// SSE events of one answer looked at.
const MAX_SSE_EVENTS: usize = 64;

/// The JSON-RPC facts of a request body, if it is one (a single call, or the first of a
/// batch, with `batch` set to its length).
pub fn from_request(body: &[u8]) -> Option<JsonRpcInfo> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let (call, batch) = match &value {
        serde_json::Value::Array(items) => (items.first()?, Some(items.len() as u64)),
        other => (other, None),
    };
    let obj = call.as_object()?;
    if obj.get("jsonrpc").and_then(|v| v.as_str()) != Some("2.0") {
        return None;
    }
    let method = obj.get("method")?.as_str()?.chars().take(256).collect();
    let mut info = JsonRpcInfo {
        method,
        id: obj.get("id").and_then(id_text),
        batch,
        ..JsonRpcInfo::default()
    };
    if info.method == "tools/call" {
        let params = obj.get("params").and_then(|p| p.as_object());
        info.tool = params
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .map(|n| n.chars().take(256).collect());
        info.arguments = params
            .and_then(|p| p.get("arguments"))
            .map(|a| cut(&a.to_string()));
    }
    Some(info)
}

/// Adds what the answer says (a JSON body or SSE `data:` lines): the error code of the
/// answer to `info.id`, and how many JSON-RPC messages the server sent.
pub fn add_response(info: &mut JsonRpcInfo, body: &[u8], content_type: Option<&str>) {
    let sse = content_type.is_some_and(|c| c.starts_with("text/event-stream"));
    let messages: Vec<serde_json::Value> = if sse {
        String::from_utf8_lossy(body)
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .take(MAX_SSE_EVENTS)
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    } else {
        match serde_json::from_slice(body) {
            Ok(serde_json::Value::Array(items)) => items,
            Ok(v) => vec![v],
            Err(_) => Vec::new(),
        }
    };
    let rpc: Vec<&serde_json::Map<String, serde_json::Value>> = messages
        .iter()
        .filter_map(|m| m.as_object())
        .filter(|m| m.get("jsonrpc").and_then(|v| v.as_str()) == Some("2.0"))
        .collect();
    if rpc.is_empty() {
        return;
    }
    info.response_messages = Some(rpc.len() as u64);
    let answer = rpc
        .iter()
        .find(|m| m.get("id").and_then(id_text) == info.id && info.id.is_some());
    if let Some(answer) = answer {
        info.error_code = answer
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(|c| c.as_i64());
        if let Some(is_error) = answer
            .get("result")
            .and_then(|r| r.get("isError"))
            .and_then(|b| b.as_bool())
        {
            // MCP reports a tool's own failure in the result, not as a JSON-RPC error.
            info.tool_error = Some(is_error);
        }
    }
}

fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.chars().take(128).collect()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_ARGUMENTS_CHARS {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_ARGUMENTS_CHARS).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_call_and_its_answer() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"Paris"}}}"#;
        let mut info = from_request(body).expect("json-rpc");
        assert_eq!(info.method, "tools/call");
        assert_eq!(info.id.as_deref(), Some("7"));
        assert_eq!(info.tool.as_deref(), Some("get_weather"));
        assert_eq!(info.arguments.as_deref(), Some(r#"{"city":"Paris"}"#));
        let sse = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"isError\":true}}\n\n";
        add_response(&mut info, sse, Some("text/event-stream"));
        assert_eq!(info.response_messages, Some(2));
        assert_eq!(info.tool_error, Some(true));
        assert_eq!(info.error_code, None);
    }

    #[test]
    fn errors_batches_and_non_rpc() {
        let mut info = from_request(
            br#"[{"jsonrpc":"2.0","id":"a","method":"initialize"},{"jsonrpc":"2.0","method":"x"}]"#,
        )
        .expect("batch");
        assert_eq!((info.method.as_str(), info.batch), ("initialize", Some(2)));
        add_response(
            &mut info,
            br#"{"jsonrpc":"2.0","id":"a","error":{"code":-32601,"message":"no"}}"#,
            Some("application/json"),
        );
        assert_eq!(info.error_code, Some(-32601));
        for not in [
            &b"{}"[..],
            br#"{"jsonrpc":"1.0","method":"x"}"#,
            br#"{"jsonrpc":"2.0"}"#,
            b"not json",
            br#"{"jsonrpc":"2.0","method":"cut"#,
            b"[]",
        ] {
            assert!(from_request(not).is_none(), "{not:?}");
        }
    }
}

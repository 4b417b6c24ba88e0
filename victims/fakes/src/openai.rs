//! The fake api.openai.com: chat completions (plain and streamed) and the model list.
//!
//! Owns: the request checks OpenAI makes first (a bearer token, a JSON body with `model` and
//! `messages`) and OpenAI-shaped answers and errors. Does not own: recording (done before this
//! module sees the request) or the SSE probe paths.
//!
//! Any non-empty bearer token is accepted: the fake proves a credential arrived, and the test
//! reads which one from the recorded request.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{chunks, full, ResBody};

/// The assistant's reply to every chat completion (streamed replies concatenate to this).
pub const OPENAI_REPLY: &str = "Hello from the idagent fake of api.openai.com.";

/// The models `GET /v1/models` lists.
pub const OPENAI_MODELS: &[&str] = &["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo"];

/// The assistant's reply to every chat completion.
pub fn openai_reply() -> &'static str {
    OPENAI_REPLY
}

const MISSING_KEY: &str = "You didn't provide an API key. You need to provide your API key in an \
    Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the \
    password field (with blank username) if you're accessing the API from your browser and are \
    prompted for a username. You can obtain an API key from \
    https://platform.openai.com/account/api-keys.";

/// The part of a chat completion request the fake looks at; other fields are accepted.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Value>,
    #[serde(default)]
    stream: bool,
}

/// The answer of the fake to a request; `seq` numbers completions (for their ids).
pub(crate) fn respond(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    seq: u64,
) -> Response<ResBody> {
    let route = (method, path);
    let known = matches!(
        route,
        (&Method::POST, "/v1/chat/completions") | (&Method::GET, "/v1/models")
    );
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {path})"),
            None,
        );
    }
    if !has_bearer_token(headers) {
        return error(StatusCode::UNAUTHORIZED, MISSING_KEY, None);
    }
    if path == "/v1/models" {
        return json_response(StatusCode::OK, &models(), seq);
    }
    let request: ChatRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("We could not parse the JSON body of your request: {e}."),
                None,
            )
        }
    };
    let id = format!("chatcmpl-idagentfake{seq:06}");
    let created = unix_now();
    if request.stream {
        return stream(&id, created, &request.model, seq);
    }
    let prompt_tokens = prompt_tokens(&request.messages);
    let completion_tokens = OPENAI_REPLY.split_whitespace().count() as u64;
    let completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": OPENAI_REPLY, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fp_idagentfake",
    });
    json_response(StatusCode::OK, &completion, seq)
}

/// `Authorization: Bearer <non-empty token>`.
fn has_bearer_token(headers: &HeaderMap) -> bool {
    headers
        .get_all(hyper::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .any(|token| !token.trim().is_empty())
}

/// A rough token count (4 bytes a token), enough for `usage` to look plausible.
fn prompt_tokens(messages: &[Value]) -> u64 {
    let bytes: usize = messages
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_str))
        .map(str::len)
        .sum();
    (bytes as u64).div_ceil(4) + 3 * messages.len() as u64
}

/// The streamed form: a role chunk, one chunk per word of the reply, a `stop` chunk, `[DONE]`.
fn stream(id: &str, created: u64, model: &str, seq: u64) -> Response<ResBody> {
    let chunk = |delta: Value, finish: Value| {
        let chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_idagentfake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    let words: Vec<&str> = OPENAI_REPLY.split_inclusive(' ').collect();
    events.extend(
        words
            .iter()
            .map(|word| chunk(json!({ "content": word }), Value::Null)),
    );
    events.push(chunk(json!({}), json!("stop")));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    openai_headers(StatusCode::OK, seq)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(chunks(events))
        .unwrap_or_else(|_| crate::server::internal_error())
}

fn models() -> Value {
    let data: Vec<Value> = OPENAI_MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_715_367_049, "owned_by": "system"}))
        .collect();
    json!({"object": "list", "data": data})
}

/// An OpenAI-style error body.
fn error(status: StatusCode, message: &str, code: Option<&str>) -> Response<ResBody> {
    let body = json!({
        "error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}
    });
    json_response(status, &body, 0)
}

fn json_response(status: StatusCode, body: &Value, seq: u64) -> Response<ResBody> {
    let mut text = body.to_string();
    text.push('\n');
    openai_headers(status, seq)
        .header("content-type", "application/json")
        .body(full(text))
        .unwrap_or_else(|_| crate::server::internal_error())
}

fn openai_headers(status: StatusCode, seq: u64) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("openai-version", "2020-10-01")
        .header("openai-processing-ms", "1")
        .header("x-request-id", format!("req_idagentfake{seq:06}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer sk-test".parse().expect("header"));
        headers
    }

    #[test]
    fn refuses_a_missing_or_empty_token() {
        let body = br#"{"model":"m","messages":[]}"#;
        let none = respond(
            &Method::POST,
            "/v1/chat/completions",
            &HeaderMap::new(),
            body,
            1,
        );
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        let mut empty = HeaderMap::new();
        empty.insert("authorization", "Bearer  ".parse().expect("header"));
        let empty = respond(&Method::POST, "/v1/chat/completions", &empty, body, 1);
        assert_eq!(empty.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn rejects_bad_json_and_unknown_paths() {
        let bad = respond(
            &Method::POST,
            "/v1/chat/completions",
            &bearer(),
            b"{not json",
            1,
        );
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let missing_model = respond(
            &Method::POST,
            "/v1/chat/completions",
            &bearer(),
            br#"{"messages":[]}"#,
            1,
        );
        assert_eq!(missing_model.status(), StatusCode::BAD_REQUEST);
        let unknown = respond(&Method::GET, "/v1/nothing", &bearer(), b"", 1);
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn prompt_tokens_grow_with_the_prompt() {
        let short = [json!({"role": "user", "content": "hi"})];
        let long = [json!({"role": "user", "content": "hi there, a longer question"})];
        assert!(prompt_tokens(&long) > prompt_tokens(&short));
    }
}

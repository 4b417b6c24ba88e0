//! gRPC facts of an HTTP exchange, for the `http` record's `grpc` field.
//!
//! gRPC is HTTP/2 with a convention: `POST /{service}/{method}`, `content-type:
//! application/grpc[+proto|+json|…]`, length-prefixed messages in the bodies and the outcome
//! in the response trailers (`grpc-status`, `grpc-message`), or in the headers of a
//! "trailers-only" response. Nothing here touches the bytes that pass; it reads what the taps
//! and headers recorded. Pure functions, so the log and the policy read calls the same way.

use crate::audit::GrpcInfo;
use http::HeaderMap;

/// Most bytes of a `grpc-message` kept (after percent-decoding).
const MAX_MESSAGE_BYTES: usize = 1024;

/// The service and method of a gRPC call, or `None` when the request is not one. What counts
/// as a call is the policy's own definition (`idagent_policy::grpc_call`: `POST`, a
/// `content-type: application/grpc…`, `/{service}/{method}` of protobuf names, no query), so the
/// log never calls a request gRPC that the policy decided as plain HTTP, or the other way.
pub fn call<'a>(
    method: &str,
    path_and_query: &'a str,
    content_type: Option<&str>,
) -> Option<(&'a str, &'a str)> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    match idagent_policy::grpc_call(method, path, query, content_type)? {
        idagent_policy::Rpc::Grpc { service, method } => Some((service, method)),
        idagent_policy::Rpc::Tool(_) => None,
    }
}

/// [`call`] for a request's head.
pub fn is_call(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> bool {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    call(method.as_str(), path, content_type).is_some()
}

/// The call's facts from its service and method ([`call`]), the response's headers and
/// trailers (lists as logged: names and escaped values) and the message counts of both bodies.
pub fn info(
    (service, method): (&str, &str),
    resp_headers: &[(String, String)],
    resp_trailers: &[(String, String)],
    req_messages: u64,
    resp_messages: u64,
) -> GrpcInfo {
    // Trailers normally; a trailers-only response (an error before any message) puts them in
    // the headers.
    let field = |name: &str| {
        resp_trailers
            .iter()
            .chain(resp_headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    GrpcInfo {
        service: service.to_owned(),
        method: method.to_owned(),
        status: field("grpc-status").and_then(|v| v.trim().parse().ok()),
        message: field("grpc-message").map(percent_decode),
        req_messages,
        resp_messages,
    }
}

/// gRPC's percent-encoding of `grpc-message` (RFC 3986 style, UTF-8), decoded lossily and cut
/// at [`MAX_MESSAGE_BYTES`].
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() && out.len() < MAX_MESSAGE_BYTES {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical name of a gRPC status code (`7` → `PERMISSION_DENIED`), for people reading
/// the report.
pub fn status_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("(non-standard)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_what_the_policy_decides_as_calls() {
        let grpc = Some("application/grpc");
        assert_eq!(
            call("POST", "/helloworld.Greeter/SayHello", grpc),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert!(call("POST", "/s.S/M", Some("application/grpc+proto")).is_some());
        assert!(call("POST", "/s.S/M", Some("application/json")).is_none());
        assert!(call("GET", "/s.S/M", grpc).is_none());
        assert!(call("POST", "/s.S/M?x=1", grpc).is_none());
        assert_eq!(call("POST", "/a/b/c", grpc), None);
        assert_eq!(call("POST", "/a", grpc), None);
        assert_eq!(call("POST", "//m", grpc), None);
    }

    #[test]
    fn status_from_trailers_or_headers() {
        let t = vec![
            ("grpc-status".to_owned(), "5".to_owned()),
            (
                "grpc-message".to_owned(),
                "no%20such%20thing%F0%9F%98%80".to_owned(),
            ),
        ];
        let i = info(("s.S", "M"), &[], &t, 1, 0);
        assert_eq!(
            (i.status, i.message.as_deref()),
            (Some(5), Some("no such thing😀"))
        );
        let h = vec![("grpc-status".to_owned(), "7".to_owned())];
        assert_eq!(info(("s.S", "M"), &h, &[], 1, 0).status, Some(7));
        assert_eq!(info(("s.S", "M"), &[], &[], 1, 0).status, None);
        assert_eq!(status_name(7), "PERMISSION_DENIED");
        // Malformed escapes are kept as they are.
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}

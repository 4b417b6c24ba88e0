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

/// Whether a request is a gRPC call (by its content type).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_grpc_content_type)
}

pub fn is_grpc_content_type(ct: &str) -> bool {
    let ct = ct.trim().to_ascii_lowercase();
    ct == "application/grpc"
        || ct.starts_with("application/grpc+")
        || ct.starts_with("application/grpc;")
}

/// `/{service}/{method}` of a gRPC path (no query; both parts non-empty).
pub fn service_method(path: &str) -> Option<(&str, &str)> {
    let path = path.split('?').next()?;
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The call's facts from its path, the response's headers and trailers (lists as logged:
/// names and escaped values) and the message counts of both bodies.
pub fn info(
    path: &str,
    resp_headers: &[(String, String)],
    resp_trailers: &[(String, String)],
    req_messages: u64,
    resp_messages: u64,
) -> GrpcInfo {
    let (service, method) = service_method(path).unwrap_or(("", ""));
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
    fn content_types() {
        assert!(is_grpc_content_type("application/grpc"));
        assert!(is_grpc_content_type("application/grpc+proto"));
        assert!(is_grpc_content_type("Application/GRPC; charset=x"));
        assert!(!is_grpc_content_type("application/grpc-web"));
        assert!(!is_grpc_content_type("application/json"));
    }

    #[test]
    fn paths() {
        assert_eq!(
            service_method("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(service_method("/a/b/c"), None);
        assert_eq!(service_method("/a"), None);
        assert_eq!(service_method("//m"), None);
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
        let i = info("/s.S/M", &[], &t, 1, 0);
        assert_eq!(
            (i.status, i.message.as_deref()),
            (Some(5), Some("no such thing😀"))
        );
        let h = vec![("grpc-status".to_owned(), "7".to_owned())];
        assert_eq!(info("/s.S/M", &h, &[], 1, 0).status, Some(7));
        assert_eq!(info("/s.S/M", &[], &[], 1, 0).status, None);
        assert_eq!(status_name(7), "PERMISSION_DENIED");
        // Malformed escapes are kept as they are.
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}

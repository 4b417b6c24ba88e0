//! The HTTP decision point: every request on a guest connection is routed and decided by its
//! own target, before anything is sent upstream.
//!
//! Owns two checks, in order: (1) the request must name what the connection really reaches —
//! its SNI, else the name the guest resolved for the address it dialled — and the port it was
//! made to, or it gets `421 Misdirected Request` (so a keep-alive or HTTP/2 connection cannot
//! carry a request for another host under the first one's name); a connection to a bare
//! address may carry any Host and is decided as that address; (2) the run's policy
//! ([`crate::enforce::Enforcer`]) decides the request, and an enforced denial gets `403` with a
//! JSON body naming the layer, the request and the rule. Explicit-proxy requests name their
//! own target in the URL and skip (1). Does not own forwarding (`super`).

use super::super::{FlowMeta, Gateway};
use crate::audit::{BlockedEvent, EventBody};
use crate::enforce::{Context, Permit};
use crate::policy_cmd::replay::HttpTarget;
use http::{HeaderMap, HeaderValue, StatusCode};

/// What the gate lets through.
#[derive(Debug)]
pub(crate) enum Gate {
    Pass,
    /// Answer the guest with this status, content type, extra headers and body; `note` goes
    /// in the `http` event.
    Refuse {
        status: StatusCode,
        content_type: &'static str,
        headers: HeaderMap,
        body: String,
        note: String,
    },
    /// Not decided yet: an MCP tools rule applies to this request, so the tool its body
    /// names decides (`body_gate`). No `decision` event has been written for it.
    Inspect(Box<idagent_policy::OwnedRequest>),
}

/// The gate for one request of `meta`'s connection. `identity` is what the connection really
/// reaches (`None` for explicit-proxy requests, whose URL names the target).
pub(crate) fn check(
    gw: &Gateway,
    meta: &FlowMeta,
    identity: Option<&str>,
    method: &str,
    url: &str,
    host: Option<&str>,
    headers: &HeaderMap,
) -> Gate {
    let policy = gw.enforcer.active();
    let target = HttpTarget::parse(url);
    let mut reached_ip = None;
    if let Some(identity) = identity {
        let claimed = host.map(normalize).unwrap_or_default();
        let real = normalize(identity);
        let real_ip = real.parse::<std::net::IpAddr>().ok();
        // A connection to a bare address (no SNI, no resolved name) may carry any Host: it is
        // decided as the address it reaches. A connection to a name serves that name only,
        // and any connection serves only the port it was made to.
        let host_ok = claimed.is_empty() || claimed == real || real_ip.is_some();
        let port_ok = target.as_ref().is_none_or(|t| t.port == meta.dst.port());
        if !(host_ok && port_ok) {
            let port = target.as_ref().map_or(meta.dst.port(), |t| t.port);
            gw.audit.emit(EventBody::Blocked(BlockedEvent {
                what: "http".into(),
                target: crate::redact::redact_text(url).0,
                reason: format!(
                    "misdirected: a request for {} on a connection to {}",
                    host_port(&claimed, port),
                    host_port(&real, meta.dst.port())
                ),
                flow: Some(meta.id),
                name: meta.name.clone(),
                datagrams: None,
                quic_dcid: None,
                repeat: Default::default(),
            }));
            return Gate::Refuse {
                status: StatusCode::MISDIRECTED_REQUEST,
                content_type: "text/plain",
                body: format!(
                    "idagent gateway: this connection reaches {}; a request for {} needs a connection of its own\n",
                    host_port(&real, meta.dst.port()),
                    host_port(&claimed, port)
                ),
                headers: HeaderMap::new(),
                note: "misdirected".into(),
            };
        }
        reached_ip = real_ip;
    }
    if !policy {
        return Gate::Pass;
    }
    // A target that is not a URL (`OPTIONS *`, a Host that is no authority) is decided as the
    // connection it is on, with a path no rule can allow: refused in enforce mode, recorded
    // and let through in report mode.
    let mut target = target.unwrap_or_else(|| HttpTarget {
        scheme: if url.starts_with("https:") {
            idagent_policy::Scheme::Https
        } else {
            idagent_policy::Scheme::Http
        },
        host: identity
            .map(normalize)
            .or_else(|| meta.name.clone())
            .unwrap_or_else(|| meta.dst.ip().to_canonical().to_string()),
        port: meta.dst.port(),
        path: "*".into(),
        query: None,
    });
    if let Some(ip) = reached_ip {
        // Decided as what it really reaches, never as the Host it claims.
        target.host = ip.to_string();
    }
    // A gRPC call is known from its head alone; an MCP tool call only from its body.
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let rpc =
        idagent_policy::grpc_call(method, &target.path, target.query.as_deref(), content_type)
            .map(|r| r.to_owned());
    let grpc = rpc.is_some();
    let request = target.request(method, rpc);
    if gw.enforcer.tool_rules_apply(&request.as_request()) {
        return Gate::Inspect(Box::new(request));
    }
    let enforced_by = if grpc { "grpc_status" } else { "http_403" };
    match gw
        .enforcer
        .check(&request.as_request(), Context::flow(meta.id), enforced_by)
    {
        Permit::Allow => Gate::Pass,
        Permit::Deny(denial) if grpc => grpc_refusal(&denial),
        Permit::Deny(denial) => Gate::Refuse {
            status: StatusCode::FORBIDDEN,
            content_type: "application/json",
            headers: HeaderMap::new(),
            body: crate::enforce::denial_body(&denial, &crate::policy_cmd::describe(&request)),
            note: format!("denied by policy (rule {})", denial.rule),
        },
    }
}

/// gRPC status `PERMISSION_DENIED`.
const GRPC_PERMISSION_DENIED: &str = "7";

/// The refusal of a gRPC call, in gRPC: HTTP 200 with a trailers-only response (`grpc-status`
/// and `grpc-message` in the headers, an empty body, so HTTP/2 sends one HEADERS frame with
/// END_STREAM), which every gRPC client reports as `PERMISSION_DENIED` with our message.
fn grpc_refusal(denial: &crate::enforce::Denial) -> Gate {
    let message = format!("denied by idagent policy (rule {})", denial.rule);
    let mut headers = HeaderMap::new();
    headers.insert(
        "grpc-status",
        HeaderValue::from_static(GRPC_PERMISSION_DENIED),
    );
    if let Ok(v) = HeaderValue::from_str(&grpc_percent_encode(&message)) {
        headers.insert("grpc-message", v);
    }
    Gate::Refuse {
        status: StatusCode::OK,
        content_type: "application/grpc",
        headers,
        body: String::new(),
        note: format!("denied by policy (rule {})", denial.rule),
    }
}

/// `grpc-message` encoding (gRPC over HTTP/2): every byte outside printable ASCII, and `%`,
/// as `%XX`.
fn grpc_percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A host as compared: lowercase, no port, no brackets, no trailing dot.
/// `host:port`, an IPv6 address bracketed (`[v6]:port`) so the port cannot be mistaken for
/// one of its groups.
fn host_port(host: &str, port: u16) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => std::net::SocketAddr::from((v6, port)).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

fn normalize(host: &str) -> String {
    let host = host.trim();
    let no_port = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        }
    };
    no_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_grpc_call_is_a_trailers_only_permission_denied() {
        let denial = crate::enforce::Denial {
            layer: "http".into(),
            rule: "default-deny é%".into(),
        };
        let Gate::Refuse {
            status,
            content_type,
            headers,
            body,
            note,
        } = grpc_refusal(&denial)
        else {
            panic!("not a refusal");
        };
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/grpc");
        assert_eq!(
            headers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );
        assert_eq!(
            headers.get("grpc-message").and_then(|v| v.to_str().ok()),
            Some("denied by idagent policy (rule default-deny %C3%A9%25)")
        );
        assert!(body.is_empty());
        assert!(note.starts_with("denied by policy (rule "), "{note}");
        // The gateway answers it with a body that is over before it starts: on HTTP/2 one
        // HEADERS frame with END_STREAM, the shape of a trailers-only response.
        let resp = super::super::plain_response(status, &body);
        assert!(http_body::Body::is_end_stream(resp.body()));
    }

    #[test]
    fn hosts_compare_without_port_case_or_dot() {
        assert_eq!(normalize("WWW.Google.com:443"), "www.google.com");
        assert_eq!(normalize("www.google.com."), "www.google.com");
        assert_eq!(normalize("[fd00::1]:80"), "fd00::1");
        assert_eq!(normalize("fd00::1"), "fd00::1");
        assert_eq!(normalize("10.0.0.1:8080"), "10.0.0.1");
    }
}

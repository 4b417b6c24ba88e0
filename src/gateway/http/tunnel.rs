//! The gateway's own answers on an HTTP connection: explicit-proxy `CONNECT` (decided, then
//! served as a flow of its own), what a connection really reaches (the identity every request
//! on it must name), and refusals that never reach an upstream. Part of `Conn`; the checks
//! themselves are `gate`'s and the enforcer's.

use super::{
    empty_body, finish_event, header_list, http_event, plain_response, Conn, GuestBody,
    UpstreamKind,
};
use crate::audit::HttpEvent;
use crate::gateway::tap::Tap;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::time::Instant;

impl Conn {
    /// `CONNECT host:port` from an explicit-proxy client: answer 200, then serve the tunnel as
    /// a new flow to that target (sniffed, intercepted and logged like any other).
    pub(super) async fn connect_tunnel(
        &self,
        mut req: Request<Incoming>,
        started: Instant,
    ) -> Response<GuestBody> {
        let authority = req.uri().authority().cloned();
        let Some(auth) = authority.filter(|_| self.meta.proxy) else {
            return plain_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is served on the proxy port only\n",
            );
        };
        let mut target = self
            .gw
            .proxy_target(&self.meta, auth.host(), auth.port_u16().unwrap_or(443))
            .await;
        let mut event = http_event(
            self,
            "CONNECT".into(),
            auth.to_string(),
            header_list(req.headers()),
        );
        // The tunnel's connect decision is made here, so a refusal is an HTTP answer the
        // client understands (403) rather than a tunnel that closes at once.
        let ctx = crate::enforce::Context::flow(target.id);
        let connect = crate::gateway::connect_request(&target);
        if let crate::enforce::Permit::Deny(d) = self.gw.enforcer.check(&connect, ctx, "http_403") {
            let body =
                crate::enforce::denial_body(&d, &crate::policy_cmd::describe(&connect.to_owned()));
            event.note = Some(format!("denied by policy (rule {})", d.rule));
            return self.refusal(
                event,
                StatusCode::FORBIDDEN,
                "application/json",
                &body,
                started,
            );
        }
        target.connect_decided = true;
        event.status = Some(200);
        event.note = Some(format!("tunnel as flow {}", target.id));
        finish_event(&self.gw, event, &Tap::new(0), &Tap::new(0), started);
        self.gw.serve_tunnel(hyper::upgrade::on(&mut req), target);
        Response::new(empty_body())
    }

    /// What this connection really reaches, which every request on it must name: the SNI
    /// (or the TLS upstream name), else the name the guest resolved, else the address.
    /// `None` for an explicit-proxy request (its URL names its target).
    pub(super) fn identity(&self, proxied: bool) -> Option<String> {
        if proxied || self.meta.proxy {
            return None;
        }
        Some(match &self.kind {
            UpstreamKind::Tls { server_name, .. } => server_name.clone(),
            UpstreamKind::Plain => self
                .meta
                .name
                .clone()
                .unwrap_or_else(|| self.meta.dst.ip().to_canonical().to_string()),
        })
    }

    /// Answers a request the gateway refuses itself (no upstream request is made) and logs
    /// its `http` event with the answer as the response body.
    pub(super) fn refusal(
        &self,
        event: HttpEvent,
        status: StatusCode,
        content_type: &'static str,
        body: &str,
        started: Instant,
    ) -> Response<GuestBody> {
        let answer = (status, content_type, http::HeaderMap::new());
        self.refusal_with(event, answer, &Tap::new(0), body, started)
    }

    /// [`Self::refusal`] with more response headers (a gRPC refusal's `grpc-status`), which
    /// the record lists as the response's, and what was read of the request (`req`).
    pub(super) fn refusal_with(
        &self,
        mut event: HttpEvent,
        (status, content_type, headers): (StatusCode, &'static str, http::HeaderMap),
        req: &Tap,
        body: &str,
        started: Instant,
    ) -> Response<GuestBody> {
        event.status = Some(status.as_u16());
        let mut resp = plain_response(status, body);
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        resp.headers_mut().extend(headers);
        event.resp_headers = header_list(resp.headers());
        let resp_tap = Tap::new(self.gw.capture_bytes);
        resp_tap.observe_all(body.as_bytes());
        finish_event(&self.gw, event, req, &resp_tap, started);
        resp
    }
}

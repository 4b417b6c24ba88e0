//! WebSockets over HTTP/2 (RFC 8441): a guest stream opened with an extended CONNECT
//! (`:method CONNECT`, `:protocol websocket`, offered by our SETTINGS_ENABLE_CONNECT_PROTOCOL)
//! is forwarded as an HTTP/1.1 `Upgrade: websocket` on a fresh upstream connection, and its
//! messages are logged exactly as an h1 upgrade's.
//!
//! Owns: recognising such a stream; its gate and its `http` record, both as the `GET` of
//! `:scheme://:authority:path` it stands for (what an h1 client would have sent, so the policy,
//! the learner and the report see one kind of WebSocket request; `version: HTTP/2`,
//! `:protocol` first in `req_headers`, `note: upgrade`); the upstream handshake (`GET path`,
//! `Host`, `Upgrade`, `Connection`, `Sec-WebSocket-Version: 13`, a fresh random
//! `Sec-WebSocket-Key`, and the guest's end-to-end headers: subprotocols, extensions, origin,
//! credentials); the guest's answer (`200` with the 101's `sec-websocket-protocol` and
//! `sec-websocket-extensions`; any other answer's status and body passed back, except a 2xx
//! that is not a switch, which becomes `502` because a 2xx to CONNECT would open the stream as
//! a WebSocket that is not one); the relay between the guest's stream and the upstream's
//! upgraded connection with `upgrade::relay`, which writes the `ws` records.
//! Does not own: frame parsing (`gateway/ws.rs`), the relay (`upgrade.rs`), the decision
//! (`gate.rs`).
//!
//! The upstream leg is always HTTP/1.1, whatever ALPN it would agree: every WebSocket server
//! speaks the h1 handshake, and forwarding as an extended CONNECT over an HTTP/2 upstream
//! (which would save a connection per WebSocket) is not done. The 101's `Sec-WebSocket-Accept`
//! is not checked (as on the h1 path, where the guest checks it): the key only proves the
//! server understood the handshake, which its `Upgrade: websocket` answer already says.

use super::upgrade;
use super::upstream::{self, Sender, UpBody};
use super::{
    empty_body, finish_event, for_upstream, gate, header_list, http_event, plain_response,
    strip_hop_by_hop, version_name, without_userinfo, Conn, GuestBody, Unanswered,
};
use crate::audit::HttpEvent;
use crate::gateway::tap::{Tap, TapBody};
use crate::gateway::FlowMeta;
use http::header::{
    CONNECTION, CONTENT_LENGTH, HOST, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;

/// Whether `req` opens an RFC 8441 WebSocket: an HTTP/2 CONNECT whose `:protocol` is
/// `websocket` (any other `:protocol`, and a plain CONNECT, are not ours).
pub(super) fn is_websocket(req: &Request<Incoming>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

impl Conn {
    /// Serves one RFC 8441 WebSocket stream: gate, upstream h1 handshake, the guest's answer,
    /// and (on a switch) the relay, spawned, which lasts as long as the WebSocket.
    pub(super) async fn websocket_h2(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        started: Instant,
    ) -> Response<GuestBody> {
        let (url, host) = self.url(req.uri(), req.headers());
        // Explicit proxy: the `:authority` names the target, as an absolute-form URL would.
        let target = match (self.meta.proxy, req.uri().authority()) {
            (true, Some(auth)) => {
                let port = auth.port_u16().unwrap_or(80);
                Some(self.gw.proxy_target(&self.meta, auth.host(), port).await)
            }
            _ => None,
        };
        let mut req_headers = vec![(":protocol".to_owned(), "websocket".to_owned())];
        req_headers.extend(header_list(req.headers()));
        let mut event = http_event(self, Method::GET.to_string(), url.clone(), req_headers);
        event.version = Some(version_name(req.version()).into());
        let identity = self.identity(target.is_some());
        let gated = gate::check(
            &self.gw,
            &self.meta,
            identity.as_deref(),
            Method::GET.as_str(),
            &url,
            host.as_deref(),
            req.headers(),
        );
        let gated = super::body_gate::without_body(&self.gw, &self.meta, gated);
        if let gate::Gate::Refuse {
            status,
            content_type,
            headers,
            body,
            note,
        } = gated
        {
            event.note = Some(note);
            let answer = (status, content_type, headers);
            return self.refusal_with(event, answer, &Tap::new(0), &body, started);
        }
        let guest_up = hyper::upgrade::on(&mut req);
        let authority = req
            .uri()
            .authority()
            .map(|a| without_userinfo(a.as_str()))
            .or_else(|| host.clone());
        let upstream_req = match self.handshake(req, authority.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                event.note = Some(format!("error: {e}"));
                finish_event(&self.gw, event, &Tap::new(0), &Tap::new(0), started);
                return plain_response(StatusCode::BAD_GATEWAY, &format!("idagent gateway: {e}\n"));
            }
        };
        let capture = self.gw.capture_bytes;
        let (req_tap, resp_tap) = (Tap::new(capture), Tap::new(capture));
        // The guest may reset the stream while the upstream is still answering: the record
        // is written all the same.
        let mut pending = Unanswered {
            conn: self,
            event: Some(event),
            req: req_tap.clone(),
            resp: resp_tap.clone(),
            started,
        };
        let meta = target.unwrap_or_else(|| self.meta.clone());
        let sent = match pending.event.as_mut() {
            Some(event) => {
                self.send_handshake(&meta, host.as_deref(), upstream_req, event)
                    .await
            }
            None => Err("no record".into()),
        };
        let Some(mut event) = pending.event.take() else {
            return plain_response(StatusCode::BAD_GATEWAY, "idagent gateway\n");
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                event.note = Some(format!("error: {e}"));
                finish_event(&self.gw, event, &req_tap, &resp_tap, started);
                return plain_response(StatusCode::BAD_GATEWAY, &format!("idagent gateway: {e}\n"));
            }
        };
        let status = resp.status();
        event.status = Some(status.as_u16());
        event.resp_headers = header_list(resp.headers());
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let upstream_up = hyper::upgrade::on(&mut resp);
            let mut up = upgrade::from_response(self.meta.id, resp.headers());
            up.known = Some(self.gw.known.clone());
            let audit = self.gw.audit.clone();
            let flow = self.meta.id;
            tokio::spawn(async move {
                // The guest's side is ready once hyper has sent the 200 below.
                match (guest_up.await, upstream_up.await) {
                    (Ok(g), Ok(u)) => {
                        upgrade::relay(TokioIo::new(g), TokioIo::new(u), up, audit).await;
                    }
                    (g, u) => debug!(
                        flow.id = %flow,
                        guest = g.is_ok(),
                        upstream = u.is_ok(),
                        "websocket stream not relayed"
                    ),
                }
            });
            event.note = Some("upgrade".into());
            finish_event(&self.gw, event, &req_tap, &resp_tap, started);
            let mut answer = Response::new(empty_body());
            for name in [SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_EXTENSIONS] {
                for value in resp.headers().get_all(&name) {
                    answer.headers_mut().append(name.clone(), value.clone());
                }
            }
            return answer;
        }
        if status.is_success() {
            event.note = Some(format!(
                "error: the upstream answered {} without switching protocols",
                status.as_u16()
            ));
            finish_event(&self.gw, event, &req_tap, &resp_tap, started);
            return plain_response(
                StatusCode::BAD_GATEWAY,
                "idagent gateway: the upstream did not switch to websocket\n",
            );
        }
        // A refusal (401, 403, 404, 426...) reaches the guest as it came, its body tapped.
        let (parts, body) = resp.into_parts();
        let gw = self.gw.clone();
        let (rq, rs) = (req_tap, resp_tap.clone());
        let body = TapBody::new(body, resp_tap)
            .on_end(move || finish_event(&gw, event, &rq, &rs, started));
        Response::from_parts(parts, body.boxed())
    }

    /// The HTTP/1.1 Upgrade request standing for the guest's extended CONNECT: its
    /// end-to-end headers, the h1 handshake's own, `Host` from `authority`.
    fn handshake(
        &self,
        req: Request<Incoming>,
        authority: Option<&str>,
    ) -> Result<Request<UpBody>, String> {
        let (parts, _) = req.into_parts();
        let mut key = [0u8; 16];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut key)
            .map_err(|_| "no randomness for Sec-WebSocket-Key".to_owned())?;
        let key =
            HeaderValue::from_str(&base64(&key)).map_err(|_| "bad Sec-WebSocket-Key".to_owned())?;
        let mut up = Request::new(empty_body());
        *up.method_mut() = Method::GET;
        *up.uri_mut() = parts.uri;
        *up.headers_mut() = parts.headers;
        let headers = up.headers_mut();
        strip_hop_by_hop(headers, false);
        for name in [
            HOST,
            CONTENT_LENGTH,
            TRANSFER_ENCODING,
            UPGRADE,
            SEC_WEBSOCKET_KEY,
            SEC_WEBSOCKET_VERSION,
        ] {
            headers.remove(name);
        }
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(SEC_WEBSOCKET_KEY, key);
        for_upstream(&mut up, false, self.scheme(), authority);
        Ok(up)
    }

    /// Sends the handshake on a fresh HTTP/1.1 connection of its own (the WebSocket keeps it
    /// for its whole life, so it is never one of the connection's pooled ones).
    async fn send_handshake(
        &self,
        meta: &FlowMeta,
        host: Option<&str>,
        req: Request<UpBody>,
        event: &mut HttpEvent,
    ) -> Result<Response<Incoming>, String> {
        let opened = upstream::open(&self.gw, meta, &self.kind, host, false)
            .await
            .map_err(|e| self.failed(e))?;
        self.note_upstream(&opened);
        event.upstream = Some(opened.addr.to_string());
        event.upstream_version = Some("HTTP/1.1".into());
        let Sender::H1(mut sender) = opened.sender else {
            return Err("upstream: unexpected HTTP/2 connection".into());
        };
        sender
            .send_request(req)
            .await
            .map_err(|e| format!("upstream: {e}"))
    }
}

/// Standard base64 with padding (RFC 4648 §4), for the 16-byte `Sec-WebSocket-Key`.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn websocket_keys_are_base64_of_sixteen_bytes() {
        // RFC 6455 §1.3's sample nonce.
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}

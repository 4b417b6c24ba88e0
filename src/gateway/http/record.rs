//! The `http` record of one exchange: built as the request arrives, completed when the
//! response body ends (or fails, or the guest abandons the request), redacted in two passes
//! (patterns, then the run's known secret values) and emitted. Part of `Conn`.

use super::{Conn, UpstreamKind};
use crate::audit::{EventBody, HttpEvent};
use crate::gateway::tap::{escape_bytes, Tap};
use crate::gateway::Gateway;
use http::HeaderMap;
use std::time::{Duration, Instant};

/// A request's record until its response head arrives. If the guest goes away first (an
/// HTTP/2 RST_STREAM, a gRPC cancel, a closed connection), hyper drops the request's future,
/// and with it the upstream request (hyper resets that stream too); the record is written
/// here, so a request the upstream may have seen is never left out of the log.
pub(super) struct Unanswered<'a> {
    pub(super) conn: &'a Conn,
    pub(super) event: Option<HttpEvent>,
    pub(super) req: Tap,
    pub(super) resp: Tap,
    pub(super) started: Instant,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.note.get_or_insert_with(|| CANCELLED_NOTE.to_owned());
            finish_event(&self.conn.gw, event, &self.req, &self.resp, self.started);
            self.conn.cancelled();
        }
    }
}

/// Streams one guest connection may abandon before their response within
/// [`CANCEL_WINDOW`]. Each abandoned stream was already sent upstream (its HEADERS, then a
/// reset), on an HTTP/2 connection shared with the run's other guest connections: a guest
/// that opens and resets streams in a loop (the "rapid reset" shape) would make the upstream
/// close that shared connection, failing everyone's streams. Past the cap the guest
/// connection is sent GOAWAY (its open streams finish) and closed with
/// [`TOO_MANY_CANCELS_REASON`]. Real clients cancel a few streams (a gRPC deadline, a page
/// navigated away), not a hundred in ten seconds.
pub const MAX_CANCELLED_STREAMS: u32 = 100;
/// The window [`MAX_CANCELLED_STREAMS`] counts in.
pub const CANCEL_WINDOW: Duration = Duration::from_secs(10);
/// The `close_reason` of a connection closed for [`MAX_CANCELLED_STREAMS`].
pub const TOO_MANY_CANCELS_REASON: &str = "too_many_cancelled_streams";

impl Conn {
    /// Counts a stream abandoned before its response; past the cap, closes the connection.
    fn cancelled(&self) {
        let Ok(mut c) = self.cancels.lock() else {
            return;
        };
        if c.0.elapsed() > CANCEL_WINDOW {
            *c = (Instant::now(), 0);
        }
        c.1 += 1;
        if c.1 == MAX_CANCELLED_STREAMS + 1 {
            self.calm_down.notify_one();
        }
    }
}

/// The `note` of a request the guest abandoned before its response head arrived.
pub const CANCELLED_NOTE: &str = "cancelled by the guest before the response";

/// Fills the body summaries into `event`, redacts, and emits it.
///
/// Two passes: the redactors fingerprint credentials by name and shape (and the run remembers
/// each value they find), then every field is scrubbed of the values the run knows — an API
/// key the request sent and the response echoes, a token an earlier exchange or an exec saw.
pub(super) fn finish_event(
    gw: &Gateway,
    mut event: HttpEvent,
    req: &Tap,
    resp: &Tap,
    started: Instant,
) {
    let (rq, rs) = (req.summary(), resp.summary());
    let known = &gw.known;
    let mut creds = Vec::new();
    let (req_body, resp_body) = known.learning(|| {
        let (url, found) = crate::redact::redact_text(&event.url);
        event.url = url;
        creds.extend(found.iter().map(|f| f.to_string()));
        event.req_trailers = rq.trailers.clone();
        event.resp_trailers = rs.trailers.clone();
        for (name, value) in event
            .req_headers
            .iter_mut()
            .chain(event.resp_headers.iter_mut())
            .chain(event.req_trailers.iter_mut())
            .chain(event.resp_trailers.iter_mut())
        {
            if let Some(redacted) = crate::redact::redact_header_detailed(name, value) {
                // Fingerprints only (not `Bearer …` or a cookie list), like the URL's and bodies'.
                creds.extend(redacted.found.iter().map(|f| f.to_string()));
                *value = redacted.value;
            } else {
                let (v, found) = crate::redact::redact_text(value);
                creds.extend(found.iter().map(|f| f.to_string()));
                *value = v;
            }
        }
        let (req_body, found) = crate::redact::redact_text(&escape_bytes(&rq.prefix));
        creds.extend(found.iter().map(|f| f.to_string()));
        let (resp_body, found) = crate::redact::redact_text(&escape_bytes(&rs.prefix));
        creds.extend(found.iter().map(|f| f.to_string()));
        (req_body, resp_body)
    });
    let mut scrub = |text: &str, cut: bool| {
        let s = known.scrub_capture(text, cut);
        creds.extend(s.found);
        s.text
    };
    event.url = scrub(&event.url, false);
    for (_, value) in event
        .req_headers
        .iter_mut()
        .chain(event.resp_headers.iter_mut())
        .chain(event.req_trailers.iter_mut())
        .chain(event.resp_trailers.iter_mut())
    {
        *value = scrub(value, false);
    }
    let req_body = scrub(&req_body, rq.bytes > rq.prefix.len() as u64);
    let resp_body = scrub(&resp_body, rs.bytes > rs.prefix.len() as u64);
    // A whole captured request body that is JSON-RPC (MCP): its method, id and tool call.
    let mut jsonrpc = (rq.bytes == rq.prefix.len() as u64)
        .then(|| crate::gateway::jsonrpc::from_request(&rq.prefix))
        .flatten();
    if let Some(info) = &mut jsonrpc {
        let content_type = event
            .resp_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.to_ascii_lowercase());
        crate::gateway::jsonrpc::add_response(info, &rs.prefix, content_type.as_deref());
        if let Some(args) = info.arguments.take() {
            // Fingerprints found here are the request body's, already in `creds`.
            info.arguments = Some(known.redact(&args, false).text);
        }
    }
    // A gRPC call (refused ones too): service and method from the path, status from the
    // (already redacted) trailers or a trailers-only answer's headers.
    let path = event
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/");
    let content_type = event
        .req_headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str());
    if let Some(call) = crate::gateway::grpc::call(&event.method, path, content_type) {
        event.grpc = Some(crate::gateway::grpc::info(
            call,
            &event.resp_headers,
            &event.resp_trailers,
            rq.messages.unwrap_or(0),
            rs.messages.unwrap_or(0),
        ));
    }
    let creds = crate::redact::distinct_secrets(creds);
    event.req_bytes = rq.bytes;
    event.resp_bytes = rs.bytes;
    event.req_sha256 = rq.sha256;
    event.resp_sha256 = rs.sha256;
    event.req_body = req_body;
    event.resp_body = resp_body;
    event.credentials = creds;
    event.jsonrpc = jsonrpc;
    if !rs.complete && event.note.is_none() && event.status.is_some() {
        event.note = Some("response incomplete".into());
    }
    event.duration_ms = started.elapsed().as_millis() as u64;
    gw.audit.emit(EventBody::Http(event));
}

/// An `http` event for a request on `conn`, before anything of the response (or where it
/// goes) is known.
pub(super) fn http_event(
    conn: &Conn,
    method: String,
    url: String,
    req_headers: Vec<(String, String)>,
) -> HttpEvent {
    // The request's credentials are known from its head on, so an exchange that ends before
    // this one (a concurrent request, an exec) is scrubbed of them too.
    conn.gw.known.learning(|| {
        crate::redact::redact_text(&url);
        for (name, value) in &req_headers {
            if crate::redact::redact_header_detailed(name, value).is_none() {
                crate::redact::redact_text(value);
            }
        }
    });
    HttpEvent {
        flow: conn.meta.id,
        upstream: None,
        sni: match &conn.kind {
            UpstreamKind::Tls { sni, .. } => sni.clone(),
            UpstreamKind::Plain => None,
        },
        method,
        url,
        status: None,
        req_headers,
        resp_headers: Vec::new(),
        req_bytes: 0,
        resp_bytes: 0,
        req_sha256: String::new(),
        resp_sha256: String::new(),
        req_body: String::new(),
        resp_body: String::new(),
        credentials: Vec::new(),
        jsonrpc: None,
        grpc: None,
        version: None,
        upstream_version: None,
        req_trailers: Vec::new(),
        resp_trailers: Vec::new(),
        note: None,
        duration_ms: 0,
    }
}

pub(super) fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), escape_bytes(v.as_bytes())))
        .collect()
}

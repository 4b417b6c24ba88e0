//! The two legs of an upgraded (101) HTTP/1.1 connection, relayed both ways.
//!
//! Owns: copying each direction with one read buffer (a write finishes before the next read,
//! so a slow reader back-pressures the writer, as `copy_bidirectional` did), feeding a
//! WebSocket upgrade's bytes to one `ws::Parser` per direction (with that direction's
//! permessage-deflate parameters, from the 101), and the `ws` events, with the per-flow cap
//! [`MAX_WS_EVENTS_PER_FLOW`]. Any other upgrade is relayed opaque. The parsers see each
//! buffer only after it was written on: they observe, and never change or hold the bytes.
//! Does not own: frame parsing (`gateway/ws.rs`), the handshake (`http.rs`).

use crate::audit::{AuditSink, EventBody, FlowId, Notice, WsEvent, WsInflate};
use crate::gateway::tap::escape_bytes;
use crate::gateway::ws::{DeflateParams, Inflated, Message, Opcode, Parser};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

/// Most `ws` events one flow writes; later messages are only counted (one notice when the cap
/// is hit, one at the flow's end with the count).
pub const MAX_WS_EVENTS_PER_FLOW: u64 = 10_000;
/// Read buffer of each direction.
const RELAY_BUFFER: usize = 16 * 1024;

/// What the relay knows of the upgrade, from the handshake.
pub struct Upgrade {
    pub flow: FlowId,
    /// The server answered `Upgrade: websocket`.
    pub websocket: bool,
    /// The server agreed permessage-deflate, with these parameters.
    pub deflate: Option<DeflateParams>,
    /// The run's known secret values: learned from and scrubbed out of message first bytes.
    pub known: Option<std::sync::Arc<crate::redact::KnownSecrets>>,
}

/// The per-flow state both directions share (they run in one task, joined).
struct Log {
    audit: AuditSink,
    known: Option<std::sync::Arc<crate::redact::KnownSecrets>>,
    flow: FlowId,
    written: AtomicU64,
    unlogged: AtomicU64,
    capped: AtomicBool,
}

impl Log {
    fn message(&self, direction: &'static str, m: Message) {
        if self.written.fetch_add(1, Ordering::Relaxed) >= MAX_WS_EVENTS_PER_FLOW {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            if !self.capped.swap(true, Ordering::Relaxed) {
                self.notice(
                    "ws_events_capped",
                    format!(
                        "flow {}: over {MAX_WS_EVENTS_PER_FLOW} WebSocket messages, the rest \
                         are only counted",
                        self.flow
                    ),
                );
            }
            return;
        }
        let text = match m.opcode {
            Opcode::Binary => escape_bytes(&m.first),
            _ => String::from_utf8_lossy(&m.first).into_owned(),
        };
        // Only a message inflated whole has `size` of the bytes `first` comes from.
        let cut = match m.inflate {
            None | Some(Inflated::Done) => (m.first.len() as u64) < m.size,
            Some(Inflated::Cut | Inflated::Error | Inflated::Skipped) => true,
        };
        let (first, mut credentials): (String, Vec<String>) = match &self.known {
            // A secret the guest sent once is scrubbed from every later message (an echo).
            Some(known) => {
                let r = known.redact(&text, cut);
                (r.text, r.found)
            }
            None => {
                let (first, found) = crate::redact::redact_text(&text);
                (first, found.iter().map(|f| f.to_string()).collect())
            }
        };
        credentials.sort();
        credentials.dedup();
        self.audit.emit(EventBody::Ws(WsEvent {
            flow: self.flow,
            direction: direction.into(),
            opcode: m.opcode.as_str().into(),
            size: m.size,
            sha256: m.sha256,
            first,
            compressed: m.compressed,
            compressed_size: m.compressed_size,
            inflate: m.inflate.map(|i| match i {
                Inflated::Done => WsInflate::Done,
                Inflated::Cut => WsInflate::Cut,
                Inflated::Error => WsInflate::Error,
                Inflated::Skipped => WsInflate::Skipped,
            }),
            inflated_size: m.inflated_size,
            code: m.close_code,
            credentials,
        }));
    }

    fn notice(&self, what: &str, detail: String) {
        self.audit.emit(EventBody::Notice(Notice {
            what: what.into(),
            detail,
        }));
    }
}

/// Relays `guest` ⇄ `upstream` until both directions end (or either fails), logging the
/// WebSocket messages of a WebSocket upgrade.
pub async fn relay<G, U>(guest: G, upstream: U, up: Upgrade, audit: AuditSink)
where
    G: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let log = Log {
        audit,
        known: up.known.clone(),
        flow: up.flow,
        written: AtomicU64::new(0),
        unlogged: AtomicU64::new(0),
        capped: AtomicBool::new(false),
    };
    if let Some(d) = up.deflate {
        debug!(flow.id = %up.flow, deflate = ?d, "websocket permessage-deflate");
    }
    // `up` carries the guest's (the client's) messages, `down` the server's.
    let parser = |sender: fn(&DeflateParams) -> _| {
        up.websocket
            .then(|| Parser::new(up.deflate.as_ref().map(sender)))
    };
    let (gr, gw) = tokio::io::split(guest);
    let (ur, uw) = tokio::io::split(upstream);
    let result = tokio::try_join!(
        pump(gr, uw, parser(DeflateParams::client), "up", &log),
        pump(ur, gw, parser(DeflateParams::server), "down", &log)
    );
    if let Err(e) = result {
        debug!(flow.id = %up.flow, error = %e, "upgrade relay ended");
    }
    let unlogged = log.unlogged.load(Ordering::Relaxed);
    if unlogged > 0 {
        log.notice(
            "ws_events_capped",
            format!(
                "flow {}: {unlogged} WebSocket message(s) not logged",
                up.flow
            ),
        );
    }
}

/// One direction: read, write it all on, then let the parser see it.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    mut parser: Option<Parser>,
    direction: &'static str,
    log: &Log,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUFFER];
    let mut messages = Vec::new();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Half-close: the peer may still answer (a close handshake).
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        if let Some(p) = parser.as_mut() {
            let fed = p.feed(&buf[..n], &mut messages);
            // The messages completed before an error come first, in wire order.
            for m in messages.drain(..) {
                log.message(direction, m);
            }
            if let Some(stop) = p.take_inflate_stop() {
                log.notice(
                    "ws_inflate_stopped",
                    format!(
                        "flow {} {direction}: {stop}; later compressed messages are logged \
                         with their wire size and sha256 only",
                        log.flow
                    ),
                );
            }
            if let Err(e) = fed {
                log.notice(
                    "ws_parse_stopped",
                    format!(
                        "flow {} {direction}: {e}; the relay goes on unlogged",
                        log.flow
                    ),
                );
                parser = None;
            }
        }
    }
}

/// The handshake's view of the upgrade: the response names `websocket`, and its extensions.
pub fn from_response(flow: FlowId, headers: &http::HeaderMap) -> Upgrade {
    let websocket = headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        });
    let deflate = DeflateParams::from_extensions(
        headers
            .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    Upgrade {
        flow,
        websocket,
        deflate,
        known: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, RunEnd, RunId};

    /// Over the per-flow cap, and then a protocol error: every byte is still relayed, the log
    /// holds exactly the cap's worth of `ws` records and the notices that say what is missing.
    #[tokio::test]
    async fn cap_and_parse_error_leave_notices_and_the_relay_goes_on() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        let log = AuditLog::create(&path, RunId::generate(), 1 << 16).expect("audit log");
        let (mut guest, guest_end) = tokio::io::duplex(1 << 16);
        let (upstream_end, mut upstream) = tokio::io::duplex(1 << 16);
        let up = Upgrade {
            flow: FlowId(7),
            websocket: true,
            deflate: None,
            known: None,
        };
        let relay = tokio::spawn(relay(guest_end, upstream_end, up, log.sink()));
        let over = 5u64;
        let mut sent: Vec<u8> = [0x81u8, 0x00].repeat((MAX_WS_EVENTS_PER_FLOW + over) as usize);
        // Opcode 3 is reserved: parsing of `up` stops here; the bytes after it still go on.
        sent.extend_from_slice(&[0x83, 0x00, 0x81, 0x01, b'x']);
        let writer = tokio::spawn(async move {
            guest.write_all(&sent).await.expect("guest write");
            guest.shutdown().await.expect("guest shutdown");
            // Keep the guest's read half open until the relay is done with it.
            let mut rest = Vec::new();
            guest.read_to_end(&mut rest).await.expect("guest read");
            sent
        });
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.expect("upstream read");
        upstream.shutdown().await.expect("upstream shutdown");
        drop(upstream);
        let sent = writer.await.expect("writer");
        assert_eq!(got, sent, "every byte is relayed");
        relay.await.expect("relay");
        log.finish(RunEnd::default()).await.expect("finish");
        let text = std::fs::read_to_string(&path).expect("read log");
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        let ws = records.iter().filter(|r| r["kind"] == "ws").count() as u64;
        assert_eq!(ws, MAX_WS_EVENTS_PER_FLOW);
        let notices: Vec<(&str, &str)> = records
            .iter()
            .filter(|r| r["kind"] == "notice")
            .map(|r| {
                (
                    r["what"].as_str().unwrap_or(""),
                    r["detail"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(notices.len(), 3, "{notices:?}");
        assert_eq!(notices[0].0, "ws_events_capped");
        assert_eq!(notices[1].0, "ws_parse_stopped");
        assert!(notices[1].1.contains("unknown opcode 0x3"), "{notices:?}");
        assert_eq!(notices[2].0, "ws_events_capped");
        assert!(
            notices[2].1.contains(&format!("{over} WebSocket")),
            "{notices:?}"
        );
    }

    /// A compressed bomb from the guest, then a normal compressed message: the relay forwards
    /// the wire bytes untouched, the bomb is logged `cut` with its inflated start, the next
    /// message `skipped` (the kept context is lost) and one `ws_inflate_stopped` notice.
    #[tokio::test]
    async fn a_deflate_bomb_is_cut_in_the_log_and_relayed_as_is() {
        use flate2::{Compress, Compression, FlushCompress};
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        let log = AuditLog::create(&path, RunId::generate(), 1 << 16).expect("audit log");
        let (mut guest, guest_end) = tokio::io::duplex(1 << 16);
        let (upstream_end, mut upstream) = tokio::io::duplex(1 << 16);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::UPGRADE, "websocket".parse().expect("value"));
        headers.insert(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            "permessage-deflate".parse().expect("value"),
        );
        let up = from_response(FlowId(9), &headers);
        assert_eq!(up.deflate, Some(DeflateParams::default()));
        let relay = tokio::spawn(relay(guest_end, upstream_end, up, log.sink()));
        let mut c = Compress::new(Compression::default(), false);
        let mut sent = Vec::new();
        for msg in [vec![b'z'; 20 << 20], b"after".to_vec()] {
            let mut payload = Vec::with_capacity(msg.len() / 100 + 64);
            c.compress_vec(&msg, &mut payload, FlushCompress::Sync)
                .expect("compress");
            payload.truncate(payload.len() - 4);
            // FIN|RSV1|text, unmasked, 64-bit length.
            sent.extend_from_slice(&[0xc1, 127]);
            sent.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            sent.extend_from_slice(&payload);
        }
        let writer = tokio::spawn(async move {
            guest.write_all(&sent).await.expect("guest write");
            guest.shutdown().await.expect("guest shutdown");
            let mut rest = Vec::new();
            guest.read_to_end(&mut rest).await.expect("guest read");
            sent
        });
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.expect("upstream read");
        upstream.shutdown().await.expect("upstream shutdown");
        drop(upstream);
        let sent = writer.await.expect("writer");
        assert_eq!(got, sent, "every byte is relayed as it was");
        relay.await.expect("relay");
        log.finish(RunEnd::default()).await.expect("finish");
        let text = std::fs::read_to_string(&path).expect("read log");
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        let ws: Vec<&serde_json::Value> = records.iter().filter(|r| r["kind"] == "ws").collect();
        assert_eq!(ws.len(), 2, "{ws:?}");
        assert_eq!(ws[0]["inflate"], "cut");
        assert_eq!(
            ws[0]["inflated_size"],
            crate::gateway::ws::MAX_INFLATE_BYTES
        );
        assert_eq!(ws[0]["size"], ws[0]["compressed_size"]);
        assert!(
            ws[0]["first"]
                .as_str()
                .is_some_and(|f| f.starts_with("zzzz")),
            "{:?}",
            ws[0]
        );
        assert_eq!(ws[1]["inflate"], "skipped");
        assert_eq!(ws[1]["first"], "");
        let notices: Vec<&serde_json::Value> =
            records.iter().filter(|r| r["kind"] == "notice").collect();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0]["what"], "ws_inflate_stopped");
    }
}

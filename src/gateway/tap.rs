//! Observing bytes as they pass: a body wrapper that counts, hashes and keeps the first N bytes
//! of an HTTP body without buffering it (SSE and chunked bodies stream through untouched), and
//! a stream wrapper that counts a connection's bytes each way.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a tap saw of one body.
#[derive(Debug, Clone)]
pub struct BodySummary {
    pub bytes: u64,
    pub sha256: String,
    pub prefix: Vec<u8>,
    /// The body ended normally (false: error, or the reader went away).
    pub complete: bool,
    /// The body's trailers (HTTP/2, chunked HTTP/1.1), names and escaped values.
    pub trailers: Vec<(String, String)>,
    /// Length-prefixed messages counted (gRPC framing), when the tap was [`Tap::framed`].
    pub messages: Option<u64>,
}

/// Counts gRPC's length-prefixed messages (1 byte flags, 4 bytes big-endian length, payload)
/// across data frames of any size; state is a few bytes whatever the guest sends.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; 5],
    have: usize,
    remaining: u64,
    count: u64,
}

impl Framing {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= take as u64;
                data = &data[take..];
                continue;
            }
            let take = (5 - self.have).min(data.len());
            self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have == 5 {
                self.count += 1;
                self.have = 0;
                let len = [
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ];
                self.remaining = u64::from(u32::from_be_bytes(len));
            }
        }
    }
}

/// Trailer fields kept per body; a guest (or upstream) sending more is cut here, in the log
/// only (the trailers themselves pass untouched).
const MAX_TRAILERS_LOGGED: usize = 64;

#[derive(Debug)]
struct TapState {
    bytes: u64,
    hasher: Sha256,
    prefix: Vec<u8>,
    cap: usize,
    done: Option<BodySummary>,
    trailers: Vec<(String, String)>,
    framing: Option<Framing>,
}

/// Shared view of a body's tap: the body side writes, the logging side reads.
#[derive(Debug, Clone)]
pub struct Tap(Arc<Mutex<TapState>>);

impl Tap {
    pub fn new(capture_bytes: usize) -> Self {
        Tap(Arc::new(Mutex::new(TapState {
            bytes: 0,
            hasher: Sha256::new(),
            prefix: Vec::new(),
            cap: capture_bytes,
            done: None,
            trailers: Vec::new(),
            framing: None,
        })))
    }

    /// Also counts the body's gRPC messages (`framed(false)` leaves the tap as it is).
    pub fn framed(self, grpc: bool) -> Self {
        if grpc {
            if let Ok(mut s) = self.0.lock() {
                s.framing = Some(Framing::default());
            }
        }
        self
    }

    fn observe_trailers(&self, trailers: &http::HeaderMap) {
        if let Ok(mut s) = self.0.lock() {
            for (name, value) in trailers.iter().take(MAX_TRAILERS_LOGGED) {
                s.trailers
                    .push((name.as_str().to_owned(), escape_bytes(value.as_bytes())));
            }
        }
    }

    fn observe(&self, data: &[u8]) {
        if let Ok(mut s) = self.0.lock() {
            s.bytes += data.len() as u64;
            s.hasher.update(data);
            let room = s.cap.saturating_sub(s.prefix.len());
            let take = room.min(data.len());
            s.prefix.extend_from_slice(&data[..take]);
            if let Some(f) = s.framing.as_mut() {
                f.feed(data);
            }
        }
    }

    /// A whole body the gateway wrote itself (a refusal): observed and complete.
    pub fn observe_all(&self, data: &[u8]) {
        self.observe(data);
        self.finish(true);
    }

    fn finish(&self, complete: bool) {
        if let Ok(mut s) = self.0.lock() {
            if s.done.is_none() {
                let hasher = std::mem::take(&mut s.hasher);
                s.done = Some(BodySummary {
                    bytes: s.bytes,
                    sha256: hex::encode(hasher.finalize()),
                    prefix: s.prefix.clone(),
                    complete,
                    trailers: std::mem::take(&mut s.trailers),
                    messages: s.framing.as_ref().map(|f| f.count),
                });
            }
        }
    }

    /// The summary so far; a body still streaming is summarised as incomplete.
    pub fn summary(&self) -> BodySummary {
        self.finish(false);
        self.0
            .lock()
            .ok()
            .and_then(|s| s.done.clone())
            .unwrap_or(BodySummary {
                bytes: 0,
                sha256: String::new(),
                prefix: Vec::new(),
                complete: false,
                trailers: Vec::new(),
                messages: None,
            })
    }
}

/// A body that reports every data frame to its [`Tap`] and calls `on_end` exactly once, when
/// the body ends, fails, or is dropped unfinished.
pub struct TapBody<B> {
    inner: B,
    tap: Tap,
    on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<B> std::fmt::Debug for TapBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapBody").finish_non_exhaustive()
    }
}

impl<B: Body> TapBody<B> {
    pub fn new(inner: B, tap: Tap) -> Self {
        // A body that is over before it starts (an HTTP/2 HEADERS frame with END_STREAM, as
        // in a gRPC trailers-only answer) is never polled by its reader: complete now.
        if inner.is_end_stream() {
            tap.finish(true);
        }
        Self {
            inner,
            tap,
            on_end: None,
        }
    }
}

impl<B> TapBody<B> {
    pub fn on_end(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.on_end = Some(Box::new(f));
        self
    }

    fn end(&mut self, complete: bool) {
        self.tap.finish(complete);
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}

impl<B> Drop for TapBody<B> {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl<B> Body for TapBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tap.observe(data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.tap.observe_trailers(trailers);
                }
                // A reader that knows the length (Content-Length) stops polling after the last
                // byte and never sees `None`: the body is complete when the inner one says so.
                if this.inner.is_end_stream() {
                    this.end(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.end(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.end(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Byte counters of one connection, guest's point of view.
#[derive(Debug, Default)]
pub struct Counters {
    /// Guest → upstream.
    pub up: AtomicU64,
    /// Upstream → guest.
    pub down: AtomicU64,
}

/// A stream that counts what is read (guest → us: up) and written (us → guest: down), and
/// first replays `prefix` (bytes already sniffed off the stream).
#[derive(Debug)]
pub struct GuestStream<S> {
    inner: S,
    prefix: Bytes,
    counters: Arc<Counters>,
}

impl<S> GuestStream<S> {
    pub fn new(inner: S, prefix: Bytes, counters: Arc<Counters>) -> Self {
        // Sniffed bytes were counted when they were read off the stream.
        Self {
            inner,
            prefix,
            counters,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuestStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counters.up.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuestStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.down.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.down.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Printable rendering of captured bytes: UTF-8 where valid, `\xNN` escapes elsewhere.
pub fn escape_bytes(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len());
    for chunk in data.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn tap_counts_hashes_and_caps_the_prefix() {
        let tap = Tap::new(4);
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        let body = TapBody::new(Full::new(Bytes::from_static(b"hello world")), tap.clone())
            .on_end(move || flag.store(true, Ordering::SeqCst));
        let collected = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&collected[..], b"hello world");
        let s = tap.summary();
        assert!(s.complete && ended.load(Ordering::SeqCst));
        assert_eq!(s.bytes, 11);
        assert_eq!(s.prefix, b"hell");
        assert_eq!(s.sha256, hex::encode(Sha256::digest(b"hello world")));
    }

    #[test]
    fn dropped_unfinished_body_still_reports() {
        let tap = Tap::new(4);
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        drop(
            TapBody::new(Full::new(Bytes::from_static(b"x")), tap.clone())
                .on_end(move || flag.store(true, Ordering::SeqCst)),
        );
        assert!(ended.load(Ordering::SeqCst));
        assert!(!tap.summary().complete);
    }

    #[test]
    fn escapes_invalid_utf8() {
        assert_eq!(escape_bytes(b"ok\xff\x00"), "ok\\xff\u{0}");
    }
}

//! What the fakes received: one [`Recorded`] per request, in arrival order.
//!
//! Owns: the record type and the bounded, thread-safe list the servers append to and tests
//! read from. Does not own: reading requests off the wire (see `server`).
//!
//! Values are kept whole — credentials included — because the point of a fake upstream is to
//! let a test prove that the real secret arrived (or did not).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

/// At most this many requests are kept; older ones are dropped first (and counted).
pub const MAX_RECORDED_REQUESTS: usize = 10_000;

/// Which fake received a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeServer {
    /// www.google.com over plain HTTP.
    GoogleHttp,
    /// www.google.com over HTTPS.
    GoogleHttps,
    /// api.openai.com over HTTPS.
    OpenAiHttps,
}

impl FakeServer {
    /// Short stable name: `google-http`, `google-https`, `openai-https`.
    pub fn name(self) -> &'static str {
        match self {
            Self::GoogleHttp => "google-http",
            Self::GoogleHttps => "google-https",
            Self::OpenAiHttps => "openai-https",
        }
    }

    /// Whether this server speaks TLS.
    pub fn tls(self) -> bool {
        !matches!(self, Self::GoogleHttp)
    }

    /// The host name this server stands in for.
    pub fn host(self) -> &'static str {
        match self {
            Self::GoogleHttp | Self::GoogleHttps => "www.google.com",
            Self::OpenAiHttps => "api.openai.com",
        }
    }
}

impl fmt::Display for FakeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One request as a fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The fake that answered.
    pub server: FakeServer,
    /// Whether the request came over TLS (same as `server.tls()`).
    pub tls: bool,
    /// The SNI the client sent, if TLS and any.
    pub sni: Option<String>,
    /// Per-fakes connection number (from 1): equal numbers mean a kept-alive connection.
    pub connection: u64,
    /// The request method, e.g. `POST`.
    pub method: String,
    /// The request target exactly as sent: `/search?q=x`, or the absolute form
    /// `http://www.google.com/` when a client talks to the fake as to a forward proxy.
    pub target: String,
    /// Path and query, e.g. `/search?q=x`, whichever form the target had.
    pub path_and_query: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Every header in arrival order, names lowercase, values in full (non-UTF-8 bytes are
    /// replaced with U+FFFD).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked, at most `MAX_BODY_BYTES`.
    pub body: Vec<u8>,
    /// The body was longer than `MAX_BODY_BYTES` (the fake answered 413).
    pub body_truncated: bool,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The shared list of recorded requests.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    inner: Mutex<RecorderInner>,
}

#[derive(Debug, Default)]
struct RecorderInner {
    requests: VecDeque<Recorded>,
    dropped: u64,
}

impl Recorder {
    pub(crate) fn push(&self, request: Recorded) {
        let mut inner = self.lock();
        if inner.requests.len() >= MAX_RECORDED_REQUESTS {
            inner.requests.pop_front();
            inner.dropped += 1;
        }
        inner.requests.push_back(request);
    }

    pub(crate) fn snapshot(&self) -> Vec<Recorded> {
        self.lock().requests.iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().requests.clear();
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> MutexGuard<'_, RecorderInner> {
        // Every mutation is a single push/pop, so a lock poisoned by a panicking test thread
        // still guards a consistent list.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: u64) -> Recorded {
        Recorded {
            server: FakeServer::GoogleHttp,
            tls: false,
            sni: None,
            connection: n,
            method: "GET".into(),
            target: "/".into(),
            path_and_query: "/".into(),
            version: "HTTP/1.1".into(),
            headers: vec![("Host".into(), "www.google.com".into())],
            body: Vec::new(),
            body_truncated: false,
        }
    }

    #[test]
    fn keeps_the_newest_up_to_the_cap() {
        let recorder = Recorder::default();
        for n in 0..(MAX_RECORDED_REQUESTS as u64 + 3) {
            recorder.push(request(n));
        }
        let all = recorder.snapshot();
        assert_eq!(all.len(), MAX_RECORDED_REQUESTS);
        assert_eq!(all.first().map(|r| r.connection), Some(3));
        assert_eq!(recorder.dropped(), 3);
    }

    #[test]
    fn header_lookup_ignores_case() {
        assert_eq!(request(1).header("host"), Some("www.google.com"));
        assert_eq!(request(1).header("cookie"), None);
    }
}

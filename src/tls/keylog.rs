//! TLS session secrets in NSS key log format, handed to whoever embeds them in the capture.
//!
//! Owns the formatting of rustls' secrets as NSS key log lines and the per-run cap on how many
//! lines are forwarded. It does not own where the lines go (a callback, in practice the pcapng
//! writer's Decryption Secrets Blocks) and never writes them to tracing: these are keys.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Key log lines forwarded per run. A TLS 1.3 handshake yields 5 lines (~0.9 KiB), TLS 1.2
/// one; this allows ~20,000 TLS 1.3 sessions (~18 MiB of secrets) before later sessions are
/// no longer decryptable in the capture (counted in [`KeyLogStats::dropped`]).
pub const DEFAULT_MAX_KEYLOG_LINES: u64 = 100_000;

/// Where formatted lines go. Called synchronously from inside the TLS handshake, so it must
/// not block (the pcap writer's `secrets` only enqueues).
pub type KeyLogCallback = Arc<dyn Fn(String) + Send + Sync>;

/// Counters of a [`KeyLogSink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLogStats {
    /// Lines handed to the callback.
    pub forwarded: u64,
    /// Lines refused because the cap was reached.
    pub dropped: u64,
}

/// A [`rustls::KeyLog`] that formats each secret as one NSS key log line
/// (`LABEL <client_random hex> <secret hex>\n`) and passes it to a callback, up to a cap.
///
/// One line per call, in the order rustls produces them, so a callback that enqueues into the
/// pcap writer places each secret before any packet the gateway writes after the handshake
/// step that produced it.
pub struct KeyLogSink {
    callback: KeyLogCallback,
    max_lines: u64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl fmt::Debug for KeyLogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLogSink")
            .field("max_lines", &self.max_lines)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl KeyLogSink {
    /// A sink forwarding at most `max_lines` lines to `callback`.
    pub fn new(max_lines: u64, callback: impl Fn(String) + Send + Sync + 'static) -> Self {
        Self {
            callback: Arc::new(callback),
            max_lines,
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Lines forwarded and dropped so far.
    pub fn stats(&self) -> KeyLogStats {
        KeyLogStats {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Formats one NSS key log line, newline-terminated.
pub fn nss_key_log_line(label: &str, client_random: &[u8], secret: &[u8]) -> String {
    format!(
        "{label} {} {}\n",
        hex::encode(client_random),
        hex::encode(secret)
    )
}

impl rustls::KeyLog for KeyLogSink {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        // Reserve a slot first so concurrent handshakes cannot overshoot the cap.
        let reserved = self
            .forwarded
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_lines).then_some(n + 1)
            });
        if reserved.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        (self.callback)(nss_key_log_line(label, client_random, secret));
    }
}

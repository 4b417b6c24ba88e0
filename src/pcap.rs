//! `RUN_DIR/traffic.pcapng`: every packet crossing the guest's `tun0`, plus the TLS secrets
//! that let Wireshark/tshark decrypt the intercepted sessions with no extra configuration.
//!
//! Owns the file (one Section Header Block, one Interface Description Block — link type RAW,
//! nanosecond timestamps, name `tun0` — then Enhanced Packet Blocks with a direction flag and
//! Decryption Secrets Blocks), the single writer thread and its bounded queue. Packets wait
//! for room when the queue is full (the writer is behind the disk): up to
//! [`PcapLimits::full_wait`] per packet, so the guest's network slows to the capture's pace
//! instead of the capture missing packets; only past that (a stuck disk) is a packet dropped
//! and counted. The packet producer is the TUN driver's own thread, so only this guest's network
//! waits. Secrets never wait (they come from the gateway's tasks). Does not own packet parsing, flows
//! or TLS (callers hand in raw IP packets and NSS key log lines, e.g. via
//! [`PcapSender::key_log`]).
//!
//! Ordering: one FIFO queue feeds one writer, so items appear in the file in the order they
//! were enqueued; in particular a `secrets` call made before a `packet` call on the same thread
//! is written before it, which is what Wireshark needs (it learns a session's keys from the
//! DSBs it has read so far).
//!
//! The file is created with `create_new` (never follows or clobbers an existing path) and mode
//! 0600: it holds session keys, so everything it decrypts is as sensitive as the traffic.

mod block;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::tls::KeyLogSink;
pub use block::{
    encode_dsb, epb_flags, DSB_BLOCK_TYPE, DSB_SECRETS_TLS_KEY_LOG, MAX_SECRETS_BLOCK_BYTES,
};
use writer::{WriterOutcome, WriterState};

/// Items (packets and secrets) waiting for the writer thread.
pub const DEFAULT_PCAP_QUEUE: usize = 16_384;
/// Bytes of packet data and secrets waiting for the writer thread: the item cap alone would
/// allow 16,384 × 64 KiB = 1 GiB.
pub const DEFAULT_PCAP_QUEUE_BYTES: usize = 64 << 20;
/// Largest `traffic.pcapng`; past it packets are counted, not written.
pub const DEFAULT_MAX_PCAP_BYTES: u64 = 4 << 30;
/// Bytes of each packet kept: a TUN packet is at most 64 KiB, so by default nothing is cut.
pub const DEFAULT_SNAPLEN: u32 = 65_535;
/// Longest a packet waits for room in a full queue before it is dropped and counted.
pub const DEFAULT_PCAP_FULL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Interface name in the IDB: the guest's TUN device.
pub const INTERFACE_NAME: &str = "tun0";

/// Which way a packet crossed `tun0`. See [`epb_flags`] for how it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the guest (read from the TUN): `epb_flags` outbound.
    FromGuest,
    /// Delivered to the guest (written to the TUN): `epb_flags` inbound.
    ToGuest,
}

/// Failures of the capture writer.
#[derive(Debug, Error)]
pub enum PcapError {
    /// Creating the capture file failed (it must not exist yet).
    #[error("create capture file {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a block failed; the writer stopped there.
    #[error("write capture file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: pcap_file::PcapError,
    },
    /// A secrets payload is larger than one DSB may carry.
    #[error("secrets of {len} bytes exceed the {max} byte block cap")]
    SecretsTooLarge { len: usize, max: usize },
    /// The writer thread could not be started.
    #[error("spawn capture writer thread")]
    SpawnWriter(#[source] std::io::Error),
    /// The writer thread panicked (a bug); the file may be truncated.
    #[error("capture writer thread panicked")]
    WriterPanicked,
}

/// Caps of one capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapLimits {
    /// Bytes kept of each packet (the EPB still records the original length); 0 keeps whole
    /// packets (pcapng: "no limit").
    pub snaplen: u32,
    /// Items the queue holds ([`DEFAULT_PCAP_QUEUE`]).
    pub queue_items: usize,
    /// Bytes the queue holds ([`DEFAULT_PCAP_QUEUE_BYTES`]).
    pub queue_bytes: usize,
    /// Largest file ([`DEFAULT_MAX_PCAP_BYTES`]).
    pub max_file_bytes: u64,
    /// Longest a packet waits for room ([`DEFAULT_PCAP_FULL_WAIT`]); zero never waits.
    pub full_wait: std::time::Duration,
}

impl Default for PcapLimits {
    fn default() -> Self {
        Self {
            snaplen: DEFAULT_SNAPLEN,
            queue_items: DEFAULT_PCAP_QUEUE,
            queue_bytes: DEFAULT_PCAP_QUEUE_BYTES,
            max_file_bytes: DEFAULT_MAX_PCAP_BYTES,
            full_wait: DEFAULT_PCAP_FULL_WAIT,
        }
    }
}

/// What a capture wrote and lost, returned by [`PcapHandle::finish`].
#[derive(Debug, Default)]
pub struct PcapStats {
    /// Enhanced Packet Blocks written.
    pub packets_written: u64,
    /// Packets not written: queue full, file cap reached, or the writer had stopped.
    pub packets_dropped: u64,
    /// Packets written shorter than they were (snaplen).
    pub packets_truncated: u64,
    /// Decryption Secrets Blocks written.
    pub secrets_blocks_written: u64,
    /// Secrets calls not written (queue full, too large, writer stopped): their TLS sessions
    /// will not decrypt.
    pub secrets_dropped: u64,
    /// Size of the file.
    pub bytes_written: u64,
    /// Whether the file reached `max_file_bytes`.
    pub file_cap_reached: bool,
    /// The write error that stopped the writer, if any.
    pub error: Option<PcapError>,
}

enum Item {
    Packet {
        dir: Direction,
        ts: Duration,
        data: Vec<u8>,
        original_len: u32,
    },
    Secrets(String),
    Finish,
}

/// Counters shared by all producers.
#[derive(Debug, Default)]
struct Shared {
    queued_bytes: AtomicUsize,
    /// The writer has stopped: nothing will make room again.
    closed: std::sync::atomic::AtomicBool,
    packets_dropped: AtomicU64,
    secrets_dropped: AtomicU64,
}

/// A cloneable, non-blocking producer handle for one capture.
#[derive(Debug, Clone)]
pub struct PcapSender {
    tx: SyncSender<Item>,
    shared: Arc<Shared>,
    limits: PcapLimits,
}

impl PcapSender {
    /// Queues one raw IP packet as it crossed `tun0` at `ts`. When the queue is full (items or
    /// bytes) it waits for room up to [`PcapLimits::full_wait`]; past that, or when the writer
    /// has stopped, the packet is counted as dropped.
    pub fn packet(&self, dir: Direction, ts: SystemTime, bytes: &[u8]) {
        let keep = self.kept_len(bytes.len());
        self.queue_packet(dir, ts, bytes[..keep].to_vec(), bytes.len());
    }

    /// [`Self::packet`] for a packet the caller no longer needs: no copy is made (the bulk
    /// direction of a download is written this way).
    pub fn packet_owned(&self, dir: Direction, ts: SystemTime, mut data: Vec<u8>) {
        let original = data.len();
        let keep = self.kept_len(original);
        if keep < original {
            // A short prefix must not pin the whole packet buffer while it waits in the queue
            // (the queue's caps count kept bytes: 16k snapped 64 KiB packets would hold 1 GiB).
            data = data[..keep].to_vec();
        }
        self.queue_packet(dir, ts, data, original);
    }

    fn kept_len(&self, len: usize) -> usize {
        match self.limits.snaplen {
            0 => len,
            snaplen => len.min(snaplen as usize),
        }
    }

    fn queue_packet(&self, dir: Direction, ts: SystemTime, data: Vec<u8>, original: usize) {
        let keep = data.len();
        let item = Item::Packet {
            dir,
            // A clock before 1970 is a host problem, not worth losing the packet over.
            ts: ts
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
            data,
            original_len: u32::try_from(original).unwrap_or(u32::MAX),
        };
        if !self.enqueue_waiting(item, keep) {
            self.shared.packets_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn enqueue_waiting(&self, mut item: Item, len: usize) -> bool {
        /// Between looks at the queue while it is full: the writer frees room in about this
        /// time (one 64 KiB packet into the page cache).
        const POLL: std::time::Duration = std::time::Duration::from_micros(50);
        let mut deadline = None;
        loop {
            item = match self.try_enqueue(item, len) {
                Ok(()) => return true,
                // A packet bigger than the whole queue never fits: no point waiting.
                Err(Some(item)) if len <= self.limits.queue_bytes => item,
                Err(_) => return false,
            };
            let until =
                *deadline.get_or_insert_with(|| std::time::Instant::now() + self.limits.full_wait);
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Queues NSS key log lines (newline-terminated) for one Decryption Secrets Block. Never
    /// blocks; a full queue or an oversized payload is counted as dropped.
    pub fn secrets(&self, nss_lines: String) {
        if nss_lines.is_empty() {
            return;
        }
        let len = nss_lines.len();
        if len > MAX_SECRETS_BLOCK_BYTES || !self.enqueue(Item::Secrets(nss_lines), len) {
            self.shared.secrets_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A [`KeyLogSink`] (for the guest-facing TLS config) that sends each line to this capture
    /// as its own DSB, so the secrets land before the packets the handshake produces next.
    pub fn key_log(&self, max_lines: u64) -> KeyLogSink {
        let sender = self.clone();
        KeyLogSink::new(max_lines, move |line| sender.secrets(line))
    }

    fn enqueue(&self, item: Item, len: usize) -> bool {
        self.try_enqueue(item, len).is_ok()
    }

    /// `Err(Some(item))`: the queue is full, try again; `Err(None)`: the writer is gone.
    fn try_enqueue(&self, item: Item, len: usize) -> Result<(), Option<Item>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(None);
        }
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > self.limits.queue_bytes {
            self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Some(item));
        }
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                match e {
                    TrySendError::Full(item) => Err(Some(item)),
                    TrySendError::Disconnected(_) => Err(None),
                }
            }
        }
    }
}

/// The capture of one run: a producer handle plus the writer thread.
#[derive(Debug)]
pub struct PcapHandle {
    sender: PcapSender,
    thread: Option<JoinHandle<WriterOutcome>>,
}

/// Creates `path` (which must not exist) and starts the writer thread with default caps and
/// the given snaplen.
pub fn spawn(path: &Path, snaplen: u32) -> Result<PcapHandle, PcapError> {
    spawn_with(
        path,
        PcapLimits {
            snaplen,
            ..PcapLimits::default()
        },
    )
}

/// Creates `path` (which must not exist), writes the section and interface headers, and
/// starts the writer thread.
pub fn spawn_with(path: &Path, limits: PcapLimits) -> Result<PcapHandle, PcapError> {
    let writer = writer::open(path, limits.snaplen)?;
    let (tx, rx) = mpsc::sync_channel(limits.queue_items.max(1));
    let shared = Arc::new(Shared::default());
    let state = WriterState::new(writer, path, shared.clone(), limits.max_file_bytes);
    let thread = std::thread::Builder::new()
        .name("pcap-writer".into())
        .spawn(move || state.run(rx))
        .map_err(PcapError::SpawnWriter)?;
    Ok(PcapHandle {
        sender: PcapSender { tx, shared, limits },
        thread: Some(thread),
    })
}

impl PcapHandle {
    /// See [`PcapSender::packet`].
    pub fn packet(&self, dir: Direction, ts: SystemTime, bytes: &[u8]) {
        self.sender.packet(dir, ts, bytes);
    }

    /// See [`PcapSender::secrets`].
    pub fn secrets(&self, nss_lines: String) {
        self.sender.secrets(nss_lines);
    }

    /// A cloneable producer for other tasks (the TUN driver, the gateway's key log).
    pub fn sender(&self) -> PcapSender {
        self.sender.clone()
    }

    /// Writes everything queued so far, flushes, closes the file and returns the counters.
    /// Items queued by other [`PcapSender`]s after this are dropped (and not counted here).
    /// Blocks until the writer is done: call it from `spawn_blocking` in async code.
    pub fn finish(mut self) -> PcapStats {
        let shared = self.sender.shared.clone();
        // A blocking send is fine here: this is teardown, and the writer is draining.
        let _ = self.sender.tx.send(Item::Finish);
        let outcome = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) | None => WriterOutcome {
                error: Some(PcapError::WriterPanicked),
                ..WriterOutcome::default()
            },
        };
        PcapStats {
            packets_written: outcome.packets_written,
            packets_dropped: shared.packets_dropped.load(Ordering::Relaxed)
                + outcome.packets_dropped,
            packets_truncated: outcome.packets_truncated,
            secrets_blocks_written: outcome.secrets_written,
            secrets_dropped: shared.secrets_dropped.load(Ordering::Relaxed)
                + outcome.secrets_dropped,
            bytes_written: outcome.bytes_written,
            file_cap_reached: outcome.file_cap_reached,
            error: outcome.error,
        }
    }
}

impl Drop for PcapHandle {
    fn drop(&mut self) {
        // Not finished explicitly: ask the writer to stop after what is queued, without
        // waiting for it (Drop never blocks). The thread flushes and exits on its own.
        if self.thread.is_some() {
            let _ = self.sender.tx.try_send(Item::Finish);
        }
    }
}

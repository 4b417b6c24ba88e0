//! The run's audit log: `RUN_DIR/audit.jsonl`, a product with a versioned schema
//! (`docs/audit-log.md`), not a by-product of tracing.
//!
//! Owns: the typed events, the single writer thread that numbers (`seq`), stamps (`ts`, `run`)
//! and appends them one line at a time, and the bounded queue in front of it. Producers
//! ([`AuditSink`]) never block on a full queue: the event is counted as dropped and the writer
//! records an explicit `gap` event before the next line, so a hole is never silent.
//! Does not own: deciding what to observe (the sandbox, supervisor and watchers do).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub mod events;
pub mod read;
pub use events::*;
pub use read::{LineError, LogRead, Record, UnknownRecord};

/// Schema version written as `v` in every record. Bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;
/// Events queued between producers and the writer before new events are dropped (and counted).
pub const DEFAULT_AUDIT_QUEUE: usize = 65_536;

/// A run identifier: `YYYYMMDDTHHMMSSZ-xxxxxx`, sortable and unique per host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A new id from the current UTC time and 24 random bits.
    pub fn generate() -> Self {
        let now = time::OffsetDateTime::now_utc();
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let stamp = now
            .format(&fmt)
            .unwrap_or_else(|_| "00000000T000000Z".into());
        let mut rnd = [0u8; 3];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd))
            .is_err()
        {
            let nanos = now.nanosecond().to_le_bytes();
            rnd.copy_from_slice(&nanos[..3]);
        }
        RunId(format!("{stamp}-{}", hex::encode(rnd)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Failure to open or write the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("open audit log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit writer thread failed: {0}")]
    Writer(String),
}

enum Msg {
    Event(Box<EventBody>),
    Close(std::sync::mpsc::Sender<BTreeMap<&'static str, u64>>),
}

/// Producer handle: cheap to clone, usable from async tasks and from blocking threads.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit::Msg")
    }
}

impl AuditSink {
    /// Queues an event without waiting. A full or closed queue counts the event as dropped;
    /// the writer turns the count into a `gap` record.
    pub fn emit(&self, body: EventBody) {
        if self.tx.try_send(Msg::Event(Box::new(body))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues an event, waiting for room: for the few events a run must never drop
    /// (`run_start`, `run_end`).
    pub async fn emit_reliable(&self, body: EventBody) {
        if self.tx.send(Msg::Event(Box::new(body))).await.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The open audit log: the writer thread plus the sink feeding it.
#[derive(Debug)]
pub struct AuditLog {
    sink: AuditSink,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    path: PathBuf,
}

impl AuditLog {
    /// Creates `path` (it must not exist: a log is never appended to by two runs) and starts the
    /// writer thread.
    pub fn create(path: &Path, run: RunId, queue: usize) -> Result<Self, AuditError> {
        // Owner-only: the log holds what the guest sent (bodies, names, fingerprints).
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            file,
            run,
            seq: 0,
            counts: BTreeMap::new(),
            dropped: dropped.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Writer(e.to_string()))?;
        Ok(Self {
            sink: AuditSink { tx, dropped },
            thread: Some(thread),
            path: path.to_owned(),
        })
    }

    pub fn sink(&self) -> AuditSink {
        self.sink.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `run_end` (its `counts` filled in by the writer), syncs the file and stops the
    /// writer. Events emitted after this are counted as dropped but have nowhere to go.
    pub async fn finish(mut self, end: RunEnd) -> Result<BTreeMap<&'static str, u64>, AuditError> {
        self.sink.emit_reliable(EventBody::RunEnd(end)).await;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.sink
            .tx
            .send(Msg::Close(done_tx))
            .await
            .map_err(|_| AuditError::Writer("writer gone before close".into()))?;
        let thread = self.thread.take();
        tokio::task::spawn_blocking(move || {
            let counts = done_rx.recv().unwrap_or_default();
            match thread.map(|t| t.join()) {
                Some(Ok(Err(e))) => Err(AuditError::Writer(e)),
                Some(Err(_)) => Err(AuditError::Writer("writer panicked".into())),
                _ => Ok(counts),
            }
        })
        .await
        .map_err(|e| AuditError::Writer(e.to_string()))?
    }
}

struct Writer {
    file: File,
    run: RunId,
    seq: u64,
    counts: BTreeMap<&'static str, u64>,
    dropped: Arc<AtomicU64>,
}

/// The envelope as written; [`Record`] is its owned, readable twin.
#[derive(Serialize)]
struct Line<'a> {
    v: u32,
    seq: u64,
    ts: String,
    run: &'a RunId,
    #[serde(flatten)]
    body: &'a EventBody,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Result<(), String> {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Event(mut body) => {
                    self.write_gap_if_any()?;
                    if let EventBody::RunEnd(end) = &mut *body {
                        end.counts = self
                            .counts
                            .iter()
                            .map(|(k, n)| ((*k).to_owned(), *n))
                            .collect();
                        *end.counts.entry("run_end".into()).or_default() += 1;
                    }
                    self.write(&body)?;
                }
                Msg::Close(done) => {
                    self.write_gap_if_any()?;
                    self.file
                        .sync_all()
                        .map_err(|e| format!("sync audit log: {e}"))?;
                    let _ = done.send(self.counts.clone());
                    return Ok(());
                }
            }
        }
        self.write_gap_if_any()?;
        self.file
            .sync_all()
            .map_err(|e| format!("sync audit log: {e}"))
    }

    fn write_gap_if_any(&mut self) -> Result<(), String> {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            self.write(&EventBody::Gap(Gap {
                dropped,
                reason: "audit queue full".into(),
            }))?;
        }
        Ok(())
    }

    fn write(&mut self, body: &EventBody) -> Result<(), String> {
        if matches!(body, EventBody::Unknown) {
            // Only a reader makes these; there is nothing to write.
            return Ok(());
        }
        self.seq += 1;
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let record = Line {
            v: SCHEMA_VERSION,
            seq: self.seq,
            ts,
            run: &self.run,
            body,
        };
        let mut line = serde_json::to_vec(&record).map_err(|e| format!("encode event: {e}"))?;
        escape_line_separators(&mut line);
        line.push(b'\n');
        // One write(2) per line on an O_APPEND-less file we alone own: a crash leaves at most a
        // torn last line, never a reordered or interleaved one.
        self.file
            .write_all(&line)
            .map_err(|e| format!("write audit log: {e}"))?;
        *self.counts.entry(body.kind()).or_default() += 1;
        Ok(())
    }
}

/// Writes U+2028 and U+2029 as `\u2028`/`\u2029`: valid JSON either way, but tools that
/// split on Unicode line breaks (and JavaScript before ES2019) would cut a record in two.
/// serde_json emits them only inside strings, so the swap never touches structure.
fn escape_line_separators(line: &mut Vec<u8>) {
    const LS: [u8; 3] = [0xE2, 0x80, 0xA8];
    const PS: [u8; 3] = [0xE2, 0x80, 0xA9];
    if !line.windows(3).any(|w| w == LS || w == PS) {
        return;
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < line.len() {
        match line.get(i..i + 3) {
            Some(w) if w == LS => {
                out.extend_from_slice(b"\\u2028");
                i += 3;
            }
            Some(w) if w == PS => {
                out.extend_from_slice(b"\\u2029");
                i += 3;
            }
            _ => {
                out.push(line[i]);
                i += 1;
            }
        }
    }
    *line = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_line_separators_are_escaped_and_read_back() {
        let body = EventBody::Notice(Notice {
            what: "test".into(),
            detail: "a\u{2028}b\u{2029}c".into(),
        });
        let mut line = serde_json::to_vec(&body).expect("encode");
        escape_line_separators(&mut line);
        let text = String::from_utf8(line).expect("utf8");
        assert!(text.contains("a\\u2028b\\u2029c"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(back["detail"], "a\u{2028}b\u{2029}c");
    }

    #[tokio::test]
    async fn seq_is_contiguous_and_gaps_are_explicit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::create(&path, RunId::generate(), 4).expect("create");
        let sink = log.sink();
        // Overfill the tiny queue from a blocking context so some events are dropped.
        for i in 0..200 {
            sink.emit(EventBody::Notice(Notice {
                what: "test".into(),
                detail: format!("{i}"),
            }));
        }
        let counts = log.finish(RunEnd::default()).await.expect("finish");
        let text = std::fs::read_to_string(&path).expect("read");
        let mut notices = 0u64;
        let mut gap_total = 0u64;
        for (expected, line) in (1u64..).zip(text.lines()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert_eq!(v["v"], SCHEMA_VERSION);
            assert_eq!(v["seq"], expected);
            match v["kind"].as_str() {
                Some("notice") => notices += 1,
                Some("gap") => gap_total += v["dropped"].as_u64().expect("dropped"),
                _ => {}
            }
        }
        assert_eq!(
            notices + gap_total,
            200,
            "every event is written or counted in a gap"
        );
        assert_eq!(counts.get("run_end"), Some(&1));
        assert!(text.lines().last().expect("last").contains("\"run_end\""));
    }
}

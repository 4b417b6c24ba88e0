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
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub mod events;
pub mod read;
mod repeat;
pub use events::*;
pub use read::{LineError, LogRead, Record, UnknownRecord};
pub use repeat::{MAX_REPEAT_KEYS, REPEAT_WINDOW};

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

    /// A run id given from outside (a pod's downward API: its uid or name): 1–128 of
    /// `[A-Za-z0-9._-]`, not starting with a dot, so it is also a safe folder name.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = !text.is_empty()
            && text.len() <= 128
            && !text.starts_with('.')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| RunId(text.to_owned()))
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

/// Largest `audit.jsonl` a run may write (`--max-audit-bytes`). Past it only the closing records
/// (`notice`, `gap`, `run_end`) are written and the guest is stopped: a record that cannot be
/// kept is never silently skipped while the guest goes on.
pub const DEFAULT_MAX_AUDIT_BYTES: u64 = 2 << 30;
/// How long the log may fail to be written (a full disk, an I/O error) before the guest is
/// stopped (fail closed, `run_end.reason = "audit_failed"`).
pub const AUDIT_FAIL_GRACE: Duration = Duration::from_secs(5);
/// Space kept allocated to the log beyond its end (`fallocate` with `KEEP_SIZE`), so the
/// closing records explaining a failure (`gap`, `notice`, `run_end`) can be written on a full
/// filesystem whoever filled it. Ordinary events stop (and are counted) when less than half of
/// it is left and it cannot be renewed: the disk is treated as full before it is.
pub const AUDIT_RESERVE_BYTES: u64 = 256 << 10;
/// How often a failing writer retries when no new event wakes it.
const RETRY_TICK: Duration = Duration::from_millis(250);

/// The writer's caps.
#[derive(Debug, Clone, Copy)]
pub struct AuditLimits {
    pub max_bytes: u64,
    pub fail_grace: Duration,
    pub reserve_bytes: u64,
}

impl Default for AuditLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_AUDIT_BYTES,
            fail_grace: AUDIT_FAIL_GRACE,
            reserve_bytes: AUDIT_RESERVE_BYTES,
        }
    }
}

/// Why the log can no longer keep up with the guest; the run stops the guest when it sees one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFailure {
    /// Writes have failed for longer than [`AuditLimits::fail_grace`].
    WriteFailed(String),
    /// [`AuditLimits::max_bytes`] was reached.
    Cap(u64),
}

impl AuditFailure {
    /// The `run_end.reason` a run stopped by this failure gets.
    pub fn reason(&self) -> &'static str {
        match self {
            AuditFailure::WriteFailed(_) => "audit_failed",
            AuditFailure::Cap(_) => "audit_cap",
        }
    }
}

impl std::fmt::Display for AuditFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditFailure::WriteFailed(e) => write!(f, "the audit log could not be written: {e}"),
            AuditFailure::Cap(n) => write!(f, "the audit log reached its cap of {n} bytes"),
        }
    }
}

enum Msg {
    Event(Box<EventBody>),
    /// Wakes a failing writer so it retries (and notices the grace running out) even when the
    /// guest has gone quiet.
    Tick,
    Close(std::sync::mpsc::Sender<BTreeMap<&'static str, u64>>),
}

/// Producer handle: cheap to clone, usable from async tasks and from blocking threads.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
    /// Repeated identical refusals are counted here instead of queued one by one.
    repeats: Arc<repeat::Repeats>,
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
        if let repeat::Admit::Write(bodies) = self.repeats.admit(body, std::time::Instant::now()) {
            for body in bodies {
                self.emit_now(body);
            }
        }
    }

    fn emit_now(&self, body: EventBody) {
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
    failure: watch::Receiver<Option<AuditFailure>>,
}

impl AuditLog {
    /// Creates `path` (it must not exist: a log is never appended to by two runs) and starts the
    /// writer thread, with the default [`AuditLimits`].
    pub fn create(path: &Path, run: RunId, queue: usize) -> Result<Self, AuditError> {
        Self::create_with(path, run, queue, AuditLimits::default())
    }

    /// [`AuditLog::create`] with explicit caps.
    pub fn create_with(
        path: &Path,
        run: RunId,
        queue: usize,
        limits: AuditLimits,
    ) -> Result<Self, AuditError> {
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
        let (fail_tx, fail_rx) = watch::channel(None);
        let writer = Writer {
            file,
            run,
            seq: 0,
            good_len: 0,
            counts: BTreeMap::new(),
            dropped: dropped.clone(),
            limits,
            reserved_to: 0,
            can_reserve: limits.reserve_bytes > 0,
            failing: None,
            restricted: None,
            restricted_lost: 0,
            failure: fail_tx,
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Writer(e.to_string()))?;
        // A weak sender: the ticker ends by itself once the log is closed and every sink gone.
        let weak = tx.downgrade();
        let _ = std::thread::Builder::new()
            .name("audit-tick".into())
            .spawn(move || loop {
                std::thread::sleep(RETRY_TICK);
                match weak.upgrade() {
                    Some(tx) if !tx.is_closed() => {
                        let _ = tx.try_send(Msg::Tick);
                    }
                    _ => return,
                }
            });
        let repeats = repeats_for(&tx, &dropped)?;
        Ok(Self {
            sink: AuditSink {
                tx,
                dropped,
                repeats,
            },
            thread: Some(thread),
            path: path.to_owned(),
            failure: fail_rx,
        })
    }

    pub fn sink(&self) -> AuditSink {
        self.sink.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves when the log can no longer keep the guest's record (write failures past the
    /// grace, or the byte cap); never resolves otherwise.
    pub fn failed(&self) -> impl std::future::Future<Output = AuditFailure> + Send + 'static {
        let mut rx = self.failure.clone();
        async move {
            loop {
                if let Some(f) = rx.borrow_and_update().clone() {
                    return f;
                }
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// The failure seen so far, if any.
    pub fn failure(&self) -> Option<AuditFailure> {
        self.failure.borrow().clone()
    }

    /// Writes `run_end` (its `counts` filled in by the writer), syncs the file and stops the
    /// writer. Events emitted after this are counted as dropped but have nowhere to go.
    pub async fn finish(mut self, end: RunEnd) -> Result<BTreeMap<&'static str, u64>, AuditError> {
        // Counted repeats are written before `run_end`, so its counts include them.
        for body in self.sink.repeats.drain() {
            self.sink.emit_reliable(body).await;
        }
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

/// Writes are failing: since when, why, and how many events were lost meanwhile.
struct Failing {
    since: Instant,
    error: String,
    lost: u64,
    signalled: bool,
}

struct Writer {
    file: File,
    run: RunId,
    seq: u64,
    /// Bytes of whole lines in the file; a failed write is cut back to here, so the log never
    /// keeps a torn line.
    good_len: u64,
    counts: BTreeMap<&'static str, u64>,
    dropped: Arc<AtomicU64>,
    limits: AuditLimits,
    /// File offset up to which blocks are allocated to the log (see [`AUDIT_RESERVE_BYTES`]).
    reserved_to: u64,
    /// False on filesystems without `fallocate`: then the log simply writes until ENOSPC.
    can_reserve: bool,
    failing: Option<Failing>,
    /// Set once the guest must be stopped: only closing records are written from then on.
    restricted: Option<&'static str>,
    restricted_lost: u64,
    failure: watch::Sender<Option<AuditFailure>>,
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

/// Records that explain the end of a run: written even after the log went restricted.
fn closing_record(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::RunStart(_) | EventBody::RunEnd(_) | EventBody::Gap(_) | EventBody::Notice(_)
    )
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Result<(), String> {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Event(mut body) => {
                    if let EventBody::RunEnd(end) = &mut *body {
                        self.flush_losses(true);
                        end.counts = self
                            .counts
                            .iter()
                            .map(|(k, n)| ((*k).to_owned(), *n))
                            .collect();
                        *end.counts.entry("run_end".into()).or_default() += 1;
                    }
                    self.record(&body);
                }
                Msg::Tick => {
                    if self.failing.is_some() {
                        self.flush_losses(false);
                    }
                }
                Msg::Close(done) => {
                    self.flush_losses(true);
                    // Give back what the reserve held beyond the last line.
                    let _ = self.file.set_len(self.good_len);
                    let synced = self.file.sync_all();
                    let _ = done.send(self.counts.clone());
                    return match (synced, &self.failing) {
                        (_, Some(f)) => Err(format!(
                            "audit log incomplete: {} event(s) could not be written ({})",
                            f.lost, f.error
                        )),
                        (Err(e), None) => Err(format!("sync audit log: {e}")),
                        (Ok(()), None) => Ok(()),
                    };
                }
            }
        }
        self.flush_losses(true);
        let _ = self.file.set_len(self.good_len);
        self.file
            .sync_all()
            .map_err(|e| format!("sync audit log: {e}"))
    }

    /// Writes one event, after whatever explains the events lost before it.
    fn record(&mut self, body: &EventBody) {
        if matches!(body, EventBody::Unknown) {
            // Only a reader makes these; there is nothing to write.
            return;
        }
        if self.restricted.is_some() && !closing_record(body) {
            self.restricted_lost += 1;
            return;
        }
        if self.restricted.is_none()
            && self.good_len.saturating_add(512) > self.limits.max_bytes
            && !closing_record(body)
        {
            self.restrict("audit log cap", AuditFailure::Cap(self.limits.max_bytes));
            self.append_event(&EventBody::Notice(Notice {
                what: "audit_cap".into(),
                detail: format!(
                    "audit.jsonl reached its cap of {} bytes; the guest is stopped and only closing records follow",
                    self.limits.max_bytes
                ),
            }));
            self.restricted_lost += 1;
            return;
        }
        if !self.flush_losses(closing_record(body)) {
            self.lose_one();
            return;
        }
        if !self.append_event(body) {
            self.lose_one();
        }
    }

    fn lose_one(&mut self) {
        if let Some(f) = &mut self.failing {
            f.lost += 1;
        }
        self.check_grace();
    }

    /// Writes the `gap` records owed (queue drops, write failures, restricted drops). False
    /// when the log still cannot be written. Outside `closing`, an outage ends only once the
    /// reserve could be renewed, so a nearly full disk gives one gap, not one per event.
    fn flush_losses(&mut self, closing: bool) -> bool {
        if self.failing.is_some() && !closing && !self.renew_reserve() {
            self.check_grace();
            return false;
        }
        if let Some(f) = &self.failing {
            let gap = EventBody::Gap(Gap {
                dropped: f.lost,
                reason: format!(
                    "audit log could not be written for {} ms: {}",
                    f.since.elapsed().as_millis(),
                    f.error
                ),
            });
            if !self.try_append(&gap) {
                self.check_grace();
                return false;
            }
            self.failing = None;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0
            && !self.append_event(&EventBody::Gap(Gap {
                dropped,
                reason: "audit queue full".into(),
            }))
        {
            if let Some(f) = &mut self.failing {
                f.lost += dropped;
            }
            return false;
        }
        if self.restricted_lost > 0 {
            let lost = self.restricted_lost;
            let gap = EventBody::Gap(Gap {
                dropped: lost,
                reason: format!(
                    "{} (only closing records are written)",
                    self.restricted.unwrap_or("restricted")
                ),
            });
            if self.append_event(&gap) {
                self.restricted_lost = 0;
            } else {
                return false;
            }
        }
        true
    }

    /// Appends, entering the failing state on an error.
    fn append_event(&mut self, body: &EventBody) -> bool {
        let ok = self.try_append(body);
        if !ok {
            self.check_grace();
        }
        ok
    }

    fn try_append(&mut self, body: &EventBody) -> bool {
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let record = Line {
            v: SCHEMA_VERSION,
            seq: self.seq + 1,
            ts,
            run: &self.run,
            body,
        };
        let Ok(mut line) = serde_json::to_vec(&record) else {
            // Our own types always encode; should one not, it is lost like a failed write.
            return self.fail("encode event".into());
        };
        escape_line_separators(&mut line);
        line.push(b'\n');
        if !closing_record(body) && !self.ensure_reserve(line.len() as u64) {
            return false;
        }
        // One write(2) per line on a file we alone own. A failed (possibly partial) write is cut
        // back to the last whole line, so the log never holds a torn record it goes on after.
        match self.file.write_all(&line) {
            Ok(()) => {
                self.seq += 1;
                self.good_len += line.len() as u64;
                *self.counts.entry(body.kind()).or_default() += 1;
                true
            }
            Err(e) => {
                let _ = self.file.set_len(self.good_len);
                let _ = self.file.seek(SeekFrom::Start(self.good_len));
                self.fail(e.to_string())
            }
        }
    }

    /// Enters (or stays in) the failing state; always false.
    fn fail(&mut self, error: String) -> bool {
        match &mut self.failing {
            Some(f) => f.error = error,
            None => {
                tracing::error!(error = %error, "audit log write failed");
                self.failing = Some(Failing {
                    since: Instant::now(),
                    error,
                    lost: 0,
                    signalled: false,
                });
            }
        }
        false
    }

    /// Past the grace, the guest must stop: say so once; the closing records go into the
    /// reserve.
    fn check_grace(&mut self) {
        let Some(f) = &mut self.failing else { return };
        if f.signalled || f.since.elapsed() < self.limits.fail_grace {
            return;
        }
        f.signalled = true;
        let error = f.error.clone();
        self.restrict("audit log write failures", AuditFailure::WriteFailed(error));
    }

    fn restrict(&mut self, why: &'static str, failure: AuditFailure) {
        if self.restricted.is_none() {
            self.restricted = Some(why);
            tracing::error!(%failure, "stopping the guest");
            self.failure.send_replace(Some(failure));
        }
    }

    /// Keeps at least half the reserve allocated past the line about to be written; false
    /// (the failing state) when the filesystem has no room to renew it.
    fn ensure_reserve(&mut self, len: u64) -> bool {
        if !self.can_reserve {
            return true;
        }
        let need = self.good_len + len + self.limits.reserve_bytes / 2;
        need <= self.reserved_to || self.renew_reserve()
    }

    /// Allocates a whole reserve past the log's end; false (the failing state) when the
    /// filesystem has no room for it.
    fn renew_reserve(&mut self) -> bool {
        if !self.can_reserve {
            return true;
        }
        let want = self.good_len + self.limits.reserve_bytes;
        let (Ok(off), Ok(n)) = (
            i64::try_from(self.good_len),
            i64::try_from(self.limits.reserve_bytes),
        ) else {
            return true;
        };
        match nix::fcntl::fallocate(
            &self.file,
            nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        ) {
            Ok(()) => {
                self.reserved_to = want;
                true
            }
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                // No preallocation here: write until the disk says no.
                self.can_reserve = false;
                true
            }
            Err(e) => self.fail(std::io::Error::from(e).to_string()),
        }
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

    #[test]
    fn a_relay_sends_each_event_as_a_typed_line_and_its_losses_last() {
        use std::io::BufRead;
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let relay = AuditSink::relay(a, 1).expect("relay");
        let sink = relay.sink();
        sink.emit(EventBody::Notice(Notice {
            what: "w".into(),
            detail: "d\u{2028}".into(),
        }));
        // The queue holds one: a burst loses some, counted.
        for _ in 0..1000 {
            sink.emit(EventBody::Notice(Notice {
                what: "burst".into(),
                detail: String::new(),
            }));
        }
        relay.finish(Duration::from_secs(5));
        let lines: Vec<EventBody> = std::io::BufReader::new(b)
            .lines()
            .map(|l| serde_json::from_str(&l.expect("line")).expect("typed"))
            .collect();
        assert!(
            matches!(&lines[0], EventBody::Notice(n) if n.what == "w" && n.detail == "d\u{2028}")
        );
        let last = lines.last().expect("last");
        assert!(
            matches!(last, EventBody::Notice(n) if n.what == RELAY_LOST_NOTICE),
            "{last:?}"
        );
        assert!(lines.len() < 1001);
    }
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

    fn blocked(i: usize) -> EventBody {
        EventBody::Blocked(BlockedEvent {
            what: "tcp".into(),
            target: format!("198.51.100.1:{i}"),
            reason: "test".into(),
            flow: None,
            name: None,
            datagrams: None,
            quic_dcid: None,
            repeat: Default::default(),
        })
    }

    /// A tiny tmpfs the test can fill: a real ENOSPC, not a fake writer.
    struct SmallFs {
        dir: tempfile::TempDir,
    }

    impl SmallFs {
        fn new(bytes: u64) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            nix::mount::mount(
                Some("idagent-test"),
                dir.path(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={bytes}").as_str()),
            )
            .expect("mount a small tmpfs (the unit tests run as root)");
            Self { dir }
        }
        fn path(&self) -> &Path {
            self.dir.path()
        }
        /// Fills the filesystem until ENOSPC; the filler is removed to free it again.
        fn fill(&self) -> PathBuf {
            let filler = self.path().join("filler");
            let mut f = File::create(&filler).expect("filler");
            let chunk = vec![0u8; 4096];
            while f.write_all(&chunk).is_ok() {}
            // The last partial block too: not even a short line may fit afterwards.
            while f.write_all(&chunk[..1]).is_ok() {}
            filler
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).expect("read log");
        assert!(text.ends_with('\n'), "no torn last line");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every line is whole JSON"))
            .collect()
    }

    fn assert_contiguous(lines: &[serde_json::Value]) {
        for (expected, v) in (1u64..).zip(lines) {
            assert_eq!(v["seq"], expected, "seq is contiguous: {v}");
        }
    }

    #[tokio::test]
    async fn a_full_disk_is_a_gap_and_the_log_goes_on() {
        let fs = SmallFs::new(256 << 10);
        let path = fs.path().join("audit.jsonl");
        let limits = AuditLimits {
            fail_grace: Duration::from_secs(30),
            reserve_bytes: 16 << 10,
            ..AuditLimits::default()
        };
        let log = AuditLog::create_with(&path, RunId::generate(), 1024, limits).expect("create");
        let sink = log.sink();
        for i in 0..10 {
            sink.emit_reliable(blocked(i)).await;
        }
        // Let the writer drain before the disk fills, so the counts below are exact.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let filler = fs.fill();
        for i in 10..60 {
            sink.emit_reliable(blocked(i)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::remove_file(filler).expect("free the disk");
        for i in 60..70 {
            sink.emit_reliable(blocked(i)).await;
        }
        assert_eq!(
            log.failure(),
            None,
            "a failure shorter than the grace stops nothing"
        );
        log.finish(RunEnd::default()).await.expect("finish");
        let lines = lines(&path);
        assert_contiguous(&lines);
        let written = lines.iter().filter(|v| v["kind"] == "blocked").count() as u64;
        let gaps: Vec<_> = lines.iter().filter(|v| v["kind"] == "gap").collect();
        assert_eq!(gaps.len(), 1, "one gap for the one outage: {gaps:?}");
        let lost = gaps[0]["dropped"].as_u64().expect("dropped");
        assert!(lost >= 1, "the outage lost events: {gaps:?}");
        assert!(
            gaps[0]["reason"]
                .as_str()
                .unwrap_or("")
                .contains("No space"),
            "the gap says why: {gaps:?}"
        );
        assert_eq!(written + lost, 70, "every event is written or counted");
        assert_eq!(lines.last().expect("last")["kind"], "run_end");
        let on_disk = std::fs::metadata(&path).expect("meta");
        assert!(
            std::os::unix::fs::MetadataExt::blocks(&on_disk) * 512 < on_disk.len() + 8192,
            "the reserve beyond the end is given back"
        );
    }

    #[tokio::test]
    async fn a_disk_that_stays_full_stops_the_run_and_still_ends_the_log() {
        let fs = SmallFs::new(256 << 10);
        let path = fs.path().join("audit.jsonl");
        let limits = AuditLimits {
            fail_grace: Duration::from_millis(500),
            reserve_bytes: 32 << 10,
            ..AuditLimits::default()
        };
        let log = AuditLog::create_with(&path, RunId::generate(), 1024, limits).expect("create");
        let sink = log.sink();
        sink.emit_reliable(blocked(0)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _filler = fs.fill();
        // More than the log's reserve lets through before it must be renewed.
        for i in 1..301 {
            sink.emit_reliable(blocked(i)).await;
        }
        // No further event: the writer's own retries notice that the grace ran out.
        let failure = tokio::time::timeout(Duration::from_secs(10), log.failed())
            .await
            .expect("the failure is signalled without new events");
        assert!(
            matches!(failure, AuditFailure::WriteFailed(_)),
            "{failure:?}"
        );
        assert_eq!(failure.reason(), "audit_failed");
        sink.emit_reliable(blocked(301)).await;
        log.finish(RunEnd {
            reason: "audit_failed".into(),
            ..RunEnd::default()
        })
        .await
        .expect("the reserve holds the closing records");
        let lines = lines(&path);
        assert_contiguous(&lines);
        let kinds: Vec<_> = lines
            .iter()
            .map(|v| v["kind"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(kinds.first(), Some(&"blocked"));
        assert_eq!(kinds.last(), Some(&"run_end"));
        assert_eq!(lines.last().expect("end")["reason"], "audit_failed");
        let lost: u64 = lines
            .iter()
            .filter(|v| v["kind"] == "gap")
            .map(|v| v["dropped"].as_u64().unwrap_or(0))
            .sum();
        let written = lines.iter().filter(|v| v["kind"] == "blocked").count() as u64;
        assert!(lost >= 1, "the outage lost events");
        assert_eq!(written + lost, 302, "every event is written or counted");
    }

    #[tokio::test]
    async fn the_byte_cap_stops_the_run_with_a_notice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let limits = AuditLimits {
            max_bytes: 8 << 10,
            ..AuditLimits::default()
        };
        let log = AuditLog::create_with(&path, RunId::generate(), 4096, limits).expect("create");
        let sink = log.sink();
        for i in 0..500 {
            sink.emit_reliable(blocked(i)).await;
        }
        let failure = tokio::time::timeout(Duration::from_secs(10), log.failed())
            .await
            .expect("the cap is signalled");
        assert_eq!(failure, AuditFailure::Cap(8 << 10));
        log.finish(RunEnd::default()).await.expect("finish");
        let len = std::fs::metadata(&path).expect("meta").len();
        assert!(len < (8 << 10) + 4096, "the log stays near its cap: {len}");
        let lines = lines(&path);
        assert_contiguous(&lines);
        assert!(lines
            .iter()
            .any(|v| v["kind"] == "notice" && v["what"] == "audit_cap"));
        let written = lines.iter().filter(|v| v["kind"] == "blocked").count() as u64;
        let lost: u64 = lines
            .iter()
            .filter(|v| v["kind"] == "gap")
            .map(|v| v["dropped"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(written + lost, 500, "every event is written or counted");
        assert_eq!(lines.last().expect("end")["kind"], "run_end");
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

/// The repeat aggregator of a sink on `tx`, with its ticker (which writes a window's count when
/// the window closes, and ends once every sender is gone).
fn repeats_for(
    tx: &mpsc::Sender<Msg>,
    dropped: &Arc<AtomicU64>,
) -> Result<Arc<repeat::Repeats>, AuditError> {
    let repeats = Arc::new(repeat::Repeats::default());
    let (weak_tx, tick_dropped) = (tx.downgrade(), dropped.clone());
    repeat::spawn_ticker(Arc::downgrade(&repeats), move |body| {
        let Some(tx) = weak_tx.upgrade() else {
            return false;
        };
        if tx.try_send(Msg::Event(Box::new(body))).is_err() {
            tick_dropped.fetch_add(1, Ordering::Relaxed);
        }
        true
    })
    .map_err(|e| AuditError::Writer(e.to_string()))?;
    Ok(repeats)
}

/// The far end of an [`AuditSink::relay`]: the thread writing its events as lines.
#[derive(Debug)]
pub struct Relay {
    sink: AuditSink,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Longest relayed line the receiving side accepts ([`crate::pod::proxy`]): an event is a few
/// KiB; a line longer than this is a broken or hostile sender.
pub const RELAY_LINE_MAX: usize = 4 << 20;
/// The notice a relay sends last when it lost records on its side.
pub const RELAY_LOST_NOTICE: &str = "pod_events_lost";

impl AuditSink {
    /// A sink whose events are not written here but sent, one JSON line each (the
    /// [`EventBody`] alone: the receiving log adds `seq`, `ts` and `run`), to `out`. The pod's
    /// agent-side observers use it to put their records into the proxy's one audit log. A write
    /// error ends the relay; later events are counted as dropped.
    pub fn relay(out: std::os::unix::net::UnixStream, queue: usize) -> Result<Relay, AuditError> {
        let (tx, mut rx) = mpsc::channel::<Msg>(queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        let thread = std::thread::Builder::new()
            .name("audit-relay".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(out);
                let mut broken = false;
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Msg::Event(body) if !broken => {
                            let mut line = match serde_json::to_vec(&body) {
                                Ok(l) if l.len() < RELAY_LINE_MAX => l,
                                _ => {
                                    lost.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                            };
                            line.push(b'\n');
                            // Flushed per event: the proxy must hold every record written
                            // before the agent (or this process) dies.
                            broken = out.write_all(&line).and_then(|()| out.flush()).is_err();
                        }
                        Msg::Event(_) => {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                        Msg::Tick => {}
                        Msg::Close(done) => {
                            // What this side lost is said on the far side's log, last.
                            let n = lost.load(Ordering::Relaxed);
                            if n > 0 && !broken {
                                let note = EventBody::Notice(Notice {
                                    what: RELAY_LOST_NOTICE.into(),
                                    detail: format!(
                                        "{n} record(s) of the agent's observers were lost before \
                                         they reached the proxy (queue full, or too large)"
                                    ),
                                });
                                if let Ok(mut line) = serde_json::to_vec(&note) {
                                    line.push(b'\n');
                                    let _ = out.write_all(&line);
                                }
                            }
                            let _ = out.flush();
                            let _ = done.send(BTreeMap::new());
                            return;
                        }
                    }
                }
            })
            .map_err(|e| AuditError::Writer(e.to_string()))?;
        let repeats = repeats_for(&tx, &dropped)?;
        Ok(Relay {
            sink: AuditSink {
                tx,
                dropped,
                repeats,
            },
            thread: Some(thread),
        })
    }

    /// Events this sink could not queue (or relay) so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Relay {
    pub fn sink(&self) -> AuditSink {
        self.sink.clone()
    }

    /// Sends what is queued (held repeats included) and stops, waiting at most `within`.
    pub fn finish(mut self, within: std::time::Duration) {
        for body in self.sink.repeats.drain() {
            self.sink.emit_now(body);
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if self.sink.tx.blocking_send(Msg::Close(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(within);
        }
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

//! The workspace watcher: every change the guest makes under `/tmp/workspace`, observed on the
//! host side of the bind mount with inotify and recorded as `file` audit events (`outcome: ok`)
//! with the guest's path, the content's sha256 and, where the supervisor saw it, the process.
//!
//! Owns: the inotify instance, the dedicated thread that reads it and hashes files, the final
//! reconciliation scan at stop (catching files still open, mmapped, written during a queue
//! overflow, below the live depth cap, or rewritten behind a restored mtime), and the export
//! of the workspace into the run folder with links and dangerous modes neutralised
//! ([`export`]). Does not own: write attempts outside the workspace (the seccomp supervisor),
//! or who did what (looked up in [`Attribution`], filled by the supervisor).
//!
//! Work the guest can make the host do is bounded: a file is hashed again only when its size,
//! mtime, ctime or inode moved; hashing draws on a per-run byte budget; remembered paths are
//! capped by count and bytes; the final scan has a deadline. Each cap is one `notice`.
//!
//! The guest controls every name and link under the directory: paths are never resolved
//! through a symlink (see `tree`), names are kept as bytes for I/O and converted lossily only
//! for the audit record, and every per-run structure has a cap.

use crate::attribution::Attribution;
use crate::audit::AuditSink;
use inotify::Inotify;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod export;
mod state;
mod tree;
mod walk;

use self::state::{Core, ScanMode};

/// Directories watched at once; deeper or later directories are seen only by rescans.
pub const DEFAULT_MAX_WATCHES: usize = 8_192;
/// Workspace paths whose state (size, mtime, hash) is remembered.
pub const DEFAULT_MAX_ENTRIES: usize = 262_144;
/// Files larger than this are reported with their size but no sha256 (and a notice).
pub const DEFAULT_MAX_HASH_BYTES: u64 = 1 << 30;
/// Bytes hashed per run, all files together; later files are recorded without sha256 (one
/// notice). Sparse files make bytes to hash cost the guest nothing.
pub const DEFAULT_HASH_BUDGET: u64 = 2 << 30;
/// Bytes of the seeded workspace hashed at start (the operator's files, not charged to the
/// guest's budget); a seeded file beyond it has no baseline hash, so a rewrite behind a
/// restored mtime shows as `attrib` with the new hash rather than `modify`.
pub const DEFAULT_SEED_HASH_BYTES: u64 = 256 << 20;
/// Bytes of workspace paths remembered (state and watches); beyond, paths are seen only by
/// the final scan (one notice).
pub const DEFAULT_MAX_STATE_BYTES: usize = 64 << 20;
/// Directory depth below the workspace that live scans and watches descend to. The final
/// scan has no depth cap.
pub const DEFAULT_MAX_DEPTH: usize = 512;
/// Entries the final scan examines before it stops (one notice).
pub const DEFAULT_FINAL_SCAN_ENTRIES: u64 = 1 << 20;
/// How long the final scan (with the hashing it does) may take when the caller gives no
/// deadline; what it did not reach is named in a notice.
pub const DEFAULT_FINAL_SCAN_TIME: Duration = Duration::from_secs(5);
/// Bytes of a symlink's target kept in its record.
pub const MAX_LINK_TARGET_BYTES: usize = 1024;
/// How long an unpaired `MOVED_FROM` waits for its `MOVED_TO` before it counts as a move out.
const MOVE_PAIR_WAIT_MS: u16 = 20;
const READ_BUF: usize = 64 << 10;

/// When a stopping watcher must be done: hashing ends at `hashing` (half the time), so the
/// final scan, which only stats, keeps the rest of the time until `scan`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StopAt {
    pub hashing: Instant,
    pub scan: Instant,
}

/// Set by [`WorkspaceWatcher::stop_by`], read by the watcher thread and by every hash in it.
pub(crate) type SharedStop = Arc<Mutex<Option<StopAt>>>;

impl StopAt {
    fn by(scan: Instant) -> Self {
        let now = Instant::now();
        Self {
            hashing: now + scan.saturating_duration_since(now) / 2,
            scan,
        }
    }

    /// The hashing deadline, if a stop was requested.
    pub(crate) fn hashing_of(shared: &SharedStop) -> Option<Instant> {
        shared.lock().ok().and_then(|s| s.map(|s| s.hashing))
    }
}

/// The caps one watcher runs with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_watches: usize,
    pub max_entries: usize,
    pub max_hash_bytes: u64,
    pub hash_budget: u64,
    pub seed_hash_bytes: u64,
    pub max_state_bytes: usize,
    pub max_depth: usize,
    pub final_scan_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_watches: DEFAULT_MAX_WATCHES,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_hash_bytes: DEFAULT_MAX_HASH_BYTES,
            hash_budget: DEFAULT_HASH_BUDGET,
            seed_hash_bytes: DEFAULT_SEED_HASH_BYTES,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            final_scan_entries: DEFAULT_FINAL_SCAN_ENTRIES,
        }
    }
}

/// What a watcher did, returned by [`WorkspaceWatcher::stop`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// `file` events emitted.
    pub events: u64,
    /// Directories watched when the watcher stopped.
    pub watched_dirs: u64,
    /// inotify queue overflows (each followed by a rescan).
    pub overflows: u64,
    /// Directories not watched because of [`Limits::max_watches`].
    pub watch_cap_hits: u64,
    /// Watches the kernel refused (e.g. its per-user limit).
    pub watch_errors: u64,
    /// Paths not remembered because of [`Limits::max_entries`].
    pub entry_cap_hits: u64,
    /// Files reported without a hash (per-file cap, run budget or deadline).
    pub hash_skipped: u64,
}

/// Failure to start watching the workspace.
#[derive(Debug, thiserror::Error)]
pub enum FsWatchError {
    #[error("open workspace directory {path}: {source}")]
    OpenRoot { path: PathBuf, source: Errno },
    #[error("create inotify instance: {0}")]
    Init(std::io::Error),
    #[error("watch workspace directory {path}: the watch could not be added")]
    WatchRoot { path: PathBuf },
    #[error("create stop pipe: {0}")]
    StopPipe(Errno),
    #[error("spawn workspace watcher thread: {0}")]
    Spawn(std::io::Error),
}

/// A running watcher. Dropping it stops the thread without waiting (and without the final
/// scan); [`WorkspaceWatcher::stop`] is the orderly end.
#[derive(Debug)]
pub struct WorkspaceWatcher {
    /// Closing it wakes the thread (POLLHUP on the read end).
    stop_tx: Option<OwnedFd>,
    /// The host side of the workspace, for [`export::finish_workspace`] after the stop.
    host_dir: PathBuf,
    /// When the stop must be done, set by [`WorkspaceWatcher::stop_by`] before waking it.
    stop_at: SharedStop,
    thread: Option<JoinHandle<WatchStats>>,
}

/// Starts watching `host_dir` (the host side of the guest's workspace) with the default
/// [`Limits`]. Watches are in place when this returns, and the tree as it is now (the seeded
/// workspace) is the silent baseline: only later changes are reported.
pub fn start(
    host_dir: &Path,
    audit: AuditSink,
    attribution: Arc<Attribution>,
) -> Result<WorkspaceWatcher, FsWatchError> {
    start_with(host_dir, audit, attribution, Limits::default())
}

/// [`start`] with explicit caps.
pub fn start_with(
    host_dir: &Path,
    audit: AuditSink,
    attribution: Arc<Attribution>,
    limits: Limits,
) -> Result<WorkspaceWatcher, FsWatchError> {
    let root = nix::fcntl::open(
        host_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| FsWatchError::OpenRoot {
        path: host_dir.to_owned(),
        source,
    })?;
    let inotify = Inotify::init().map_err(FsWatchError::Init)?;
    let stop_at: SharedStop = Arc::new(Mutex::new(None));
    let mut core = Core::new(root, inotify.watches(), audit, attribution, limits);
    core.stop = Some(stop_at.clone());
    let started = Instant::now();
    core.scan(Path::new(""), ScanMode::Seed);
    tracing::info!(
        fswatch.dirs = core.watched_dirs(),
        fswatch.entries = core.entries(),
        fswatch.seed_hashed = limits.seed_hash_bytes - core.seed_left(),
        fswatch.ms = started.elapsed().as_millis() as u64,
        "workspace baseline recorded"
    );
    if core.watched_dirs() == 0 {
        return Err(FsWatchError::WatchRoot {
            path: host_dir.to_owned(),
        });
    }
    let (stop_rx, stop_tx) = nix::unistd::pipe().map_err(FsWatchError::StopPipe)?;
    let shared = stop_at.clone();
    let thread = std::thread::Builder::new()
        .name("fswatch".into())
        .spawn(move || run(core, inotify, stop_rx, shared))
        .map_err(FsWatchError::Spawn)?;
    Ok(WorkspaceWatcher {
        stop_tx: Some(stop_tx),
        host_dir: host_dir.to_owned(),
        stop_at,
        thread: Some(thread),
    })
}

impl WorkspaceWatcher {
    /// The host directory being watched.
    pub fn host_dir(&self) -> &Path {
        &self.host_dir
    }

    /// Reads the events still queued, reconciles the tree with what was reported (files
    /// changed without a close event are reported as modified, with their hash) and returns
    /// the stats, within [`DEFAULT_FINAL_SCAN_TIME`]. Call it once the guest has exited.
    pub async fn stop(self) -> WatchStats {
        self.stop_by(Instant::now() + DEFAULT_FINAL_SCAN_TIME).await
    }

    /// [`WorkspaceWatcher::stop`] ending by `deadline`: hashing (also of a file being hashed
    /// now) stops halfway there, the final scan at `deadline`.
    pub async fn stop_by(mut self, deadline: Instant) -> WatchStats {
        if let Ok(mut d) = self.stop_at.lock() {
            *d = Some(StopAt::by(deadline));
        }
        drop(self.stop_tx.take());
        let Some(thread) = self.thread.take() else {
            return WatchStats::default();
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(stats)) => stats,
            _ => WatchStats::default(),
        }
    }
}

/// The watcher thread: read events until stopped, then drain and reconcile.
fn run(mut core: Core, mut inotify: Inotify, stop_rx: OwnedFd, stop_at: SharedStop) -> WatchStats {
    let mut buf = vec![0u8; READ_BUF];
    let mut batch = 0u64;
    loop {
        let timeout = if core.has_pending() {
            PollTimeout::from(MOVE_PAIR_WAIT_MS)
        } else {
            PollTimeout::NONE
        };
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop_rx.as_fd(), PollFlags::POLLIN),
        ];
        let ready = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "poll on inotify failed");
                break;
            }
        };
        if fds[1].any().unwrap_or(false) {
            break;
        }
        if ready == 0 {
            core.flush_pending(u64::MAX); // no MOVED_TO came: moved out
            continue;
        }
        batch += 1;
        if !read_available(&mut inotify, &mut buf, &mut core, batch) {
            break;
        }
        core.flush_pending(batch);
    }
    let stop = stop_at
        .lock()
        .ok()
        .and_then(|d| *d)
        .unwrap_or_else(|| StopAt::by(Instant::now() + DEFAULT_FINAL_SCAN_TIME));
    core.deadline = Some(stop.hashing);
    batch += 1;
    read_available(&mut inotify, &mut buf, &mut core, batch);
    core.flush_pending(u64::MAX);
    core.final_scan(stop.scan);
    let mut stats = core.stats.clone();
    stats.watched_dirs = core.watched_dirs() as u64;
    stats
}

/// Handles every queued event; false when the inotify descriptor failed.
fn read_available(inotify: &mut Inotify, buf: &mut [u8], core: &mut Core, batch: u64) -> bool {
    loop {
        match inotify.read_events(buf) {
            Ok(events) => {
                for ev in events {
                    core.handle(&ev.wd, ev.mask, ev.cookie, ev.name, batch);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "read inotify failed");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The watcher's state: which host directories are watched, what every workspace path looked
//! like when last seen, and the translation of inotify events into `file` audit events.
//!
//! Owns: the watch-descriptor → directory map, the per-path state (bounded by
//! `max_entries`), pairing of `MOVED_FROM`/`MOVED_TO` by cookie, and the reconciliation scan
//! used at start (silent), after a queue overflow and at stop. Does not own: the thread, the
//! inotify read loop (see `fswatch`) or opening guest paths safely (see `tree`).

use super::tree::{self, Hashed, Kind, Seen};
use super::{Limits, WatchStats};
use crate::attribution::Attribution;
use crate::audit::{AuditSink, EventBody, FileEvent, FileOp, Notice, Outcome};
use inotify::{EventMask, WatchDescriptor, WatchMask, Watches};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::ops::Bound;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What is known about one workspace path.
#[derive(Debug, Clone)]
enum Entry {
    File(FileState),
    Dir,
    /// Symlink, FIFO, socket or device: reported once when it appears.
    Other,
}

#[derive(Debug, Clone)]
struct FileState {
    seen: Option<Seen>,
    sha256: Option<String>,
    /// Reported (or present at start). A new file is reported at its first close-after-write.
    announced: bool,
    /// Last reported by a scan: a close-write that shows the very same content is the same
    /// change seen twice, not a new one.
    from_scan: bool,
}

/// A `MOVED_FROM` waiting for its `MOVED_TO`.
#[derive(Debug)]
struct PendingMove {
    cookie: u32,
    rel: PathBuf,
    is_dir: bool,
    batch: u64,
}

/// Whether a scan reports what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanMode {
    /// Record the tree as the baseline (the seeded workspace at start): no events.
    Seed,
    /// Report differences from the recorded state.
    Report,
}

pub(super) struct Core {
    root: OwnedFd,
    watches: Watches,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    entries: BTreeMap<PathBuf, Entry>,
    pending: Vec<PendingMove>,
    audit: AuditSink,
    attribution: Arc<Attribution>,
    limits: Limits,
    /// Caps already announced by a notice.
    noticed: Vec<&'static str>,
    pub(super) stats: WatchStats,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("fswatch::Core")
            .field("dirs", &self.dirs.len())
            .field("entries", &self.entries.len())
            .finish()
    }
}

mod scan;

const WATCH_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

impl Core {
    pub(super) fn new(
        root: OwnedFd,
        watches: Watches,
        audit: AuditSink,
        attribution: Arc<Attribution>,
        limits: Limits,
    ) -> Self {
        Self {
            root,
            watches,
            dirs: HashMap::new(),
            entries: BTreeMap::new(),
            pending: Vec::new(),
            audit,
            attribution,
            limits,
            noticed: Vec::new(),
            stats: WatchStats::default(),
        }
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(super) fn watched_dirs(&self) -> usize {
        self.dirs.len()
    }

    /// Applies one inotify event read in read batch `batch`.
    pub(super) fn handle(
        &mut self,
        wd: &WatchDescriptor,
        mask: EventMask,
        cookie: u32,
        name: Option<&OsStr>,
        batch: u64,
    ) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            self.stats.overflows += 1;
            self.notice(
                "inotify_overflow",
                "the inotify queue overflowed; workspace changes reconciled by a rescan".into(),
            );
            self.flush_pending(u64::MAX);
            self.scan(Path::new(""), ScanMode::Report);
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            self.dirs.remove(wd);
            return;
        }
        let (Some(dir), Some(name)) = (self.dirs.get(wd), name) else {
            return; // events on a watched directory itself are reported by its parent
        };
        let rel = dir.join(name);
        let is_dir = mask.contains(EventMask::ISDIR);
        if mask.contains(EventMask::CREATE) {
            if is_dir {
                self.new_dir(&rel);
            } else {
                self.created(&rel);
            }
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            self.closed_after_write(&rel);
        } else if mask.contains(EventMask::DELETE) {
            self.removed(&rel, is_dir);
        } else if mask.contains(EventMask::MOVED_FROM) {
            self.pending.push(PendingMove {
                cookie,
                rel,
                is_dir,
                batch,
            });
        } else if mask.contains(EventMask::MOVED_TO) {
            match self.pending.iter().position(|p| p.cookie == cookie) {
                Some(i) => {
                    let from = self.pending.remove(i);
                    self.renamed(&from.rel, &rel, is_dir);
                }
                None => self.moved_in(&rel, is_dir),
            }
        }
    }

    /// Unpaired `MOVED_FROM`s read before batch `before`: the entry left the workspace.
    pub(super) fn flush_pending(&mut self, before: u64) {
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.batch < before);
        self.pending = keep;
        for p in old {
            self.unwatch_subtree(&p.rel);
            self.removed(&p.rel, p.is_dir);
        }
    }

    fn created(&mut self, rel: &Path) {
        let Ok(st) = tree::lstat_beneath(&self.root, rel) else {
            return; // already gone: its delete event follows
        };
        match tree::kind_of(&st) {
            // A plain new file is reported when its writer closes it, with its final hash.
            // A second hard link gets no close event: report it now.
            Kind::File if st.st_nlink <= 1 => {
                if !self.entries.contains_key(rel) {
                    self.insert(rel, Entry::File(FileState::unannounced()));
                }
            }
            Kind::File => self.report_file(rel, FileOp::Create, false),
            Kind::Dir => self.new_dir(rel),
            Kind::Symlink | Kind::Other => {
                if !matches!(self.entries.get(rel), Some(Entry::Other)) {
                    let size = u64::try_from(st.st_size).ok();
                    self.insert(rel, Entry::Other);
                    self.emit(FileOp::Create, rel, None, size, None);
                }
            }
        }
    }

    fn closed_after_write(&mut self, rel: &Path) {
        let op = match self.entries.get(rel) {
            Some(Entry::File(f)) if f.announced => FileOp::Modify,
            Some(Entry::File(_)) | None => FileOp::Create,
            Some(Entry::Dir | Entry::Other) => FileOp::Modify,
        };
        self.report_file(rel, op, true);
    }

    /// Hashes `rel` and reports it as `op`, updating its state. With `dedup`, a change already
    /// reported by a scan (same inode, size, mtime and hash) is not reported again.
    fn report_file(&mut self, rel: &Path, op: FileOp, dedup: bool) {
        let hashed = tree::hash_beneath(&self.root, rel, self.limits.max_hash_bytes).ok();
        if let (true, Some(h), Some(Entry::File(f))) = (dedup, &hashed, self.entries.get_mut(rel)) {
            if f.from_scan && f.seen.as_ref() == Some(&h.seen) && f.sha256 == h.sha256 {
                f.from_scan = false;
                return;
            }
        }
        self.record_file(rel, hashed.as_ref(), false);
        match hashed {
            Some(h) => self.emit(op, rel, None, Some(h.size), h.sha256),
            // Gone (renamed or deleted) before it could be read: the next event says where.
            None => self.emit(op, rel, None, None, None),
        }
    }

    fn record_file(&mut self, rel: &Path, h: Option<&Hashed>, from_scan: bool) {
        if let Some(h) = h {
            if h.sha256.is_none() {
                self.stats.hash_skipped += 1;
                self.notice(
                    "fswatch_hash_skipped",
                    format!(
                        "{} is {} bytes, over the {}-byte hashing cap",
                        self.guest_path(rel),
                        h.size,
                        self.limits.max_hash_bytes
                    ),
                );
            }
        }
        let state = FileState {
            seen: h.map(|h| h.seen.clone()),
            sha256: h.and_then(|h| h.sha256.clone()),
            announced: true,
            from_scan,
        };
        self.insert(rel, Entry::File(state));
    }

    fn removed(&mut self, rel: &Path, is_dir: bool) {
        self.remove_subtree(rel);
        let op = if is_dir {
            FileOp::Rmdir
        } else {
            FileOp::Delete
        };
        self.emit(op, rel, None, None, None);
    }

    fn renamed(&mut self, from: &Path, to: &Path, is_dir: bool) {
        // Move the state of the whole subtree, then the watched directories' paths.
        let moved: Vec<(PathBuf, Entry)> = self
            .subtree_keys(from)
            .into_iter()
            .filter_map(|k| {
                let e = self.entries.remove(&k)?;
                let suffix = k.strip_prefix(from).ok()?;
                Some((
                    if suffix.as_os_str().is_empty() {
                        to.to_owned()
                    } else {
                        to.join(suffix)
                    },
                    e,
                ))
            })
            .collect();
        self.remove_subtree(to); // a replaced target
        for (k, e) in moved {
            self.insert(&k, e);
        }
        for path in self.dirs.values_mut() {
            if let Ok(suffix) = path.strip_prefix(from) {
                *path = if suffix.as_os_str().is_empty() {
                    to.to_owned()
                } else {
                    to.join(suffix)
                };
            }
        }
        let (mut size, mut sha) = (None, None);
        if !is_dir {
            match self.entries.get(to) {
                Some(Entry::File(f)) if f.sha256.is_some() => {
                    size = f.seen.as_ref().map(|s| s.size);
                    sha = f.sha256.clone();
                }
                // Content never hashed (renamed before it could be read): hash it under the
                // new name so the content is still on record.
                Some(Entry::File(f)) if f.announced => {
                    if let Ok(h) = tree::hash_beneath(&self.root, to, self.limits.max_hash_bytes) {
                        self.record_file(to, Some(&h), false);
                        size = Some(h.size);
                        sha = h.sha256;
                    }
                }
                _ => {}
            }
        }
        self.emit(FileOp::Rename, to, Some(from), size, sha);
    }

    fn moved_in(&mut self, rel: &Path, is_dir: bool) {
        if is_dir {
            self.new_dir(rel);
        } else {
            self.entries.remove(rel);
            self.created(rel);
            if let Some(Entry::File(f)) = self.entries.get(rel) {
                if !f.announced {
                    // No close event will come for a file moved in: report it now.
                    self.report_file(rel, FileOp::Create, false);
                }
            }
        }
    }

    /// A directory appeared: report it, watch it, and report what was created in it before
    /// the watch landed.
    fn new_dir(&mut self, rel: &Path) {
        if !matches!(self.entries.get(rel), Some(Entry::Dir)) {
            self.insert(rel, Entry::Dir);
            self.emit(FileOp::Mkdir, rel, None, None, None);
        }
        self.scan(rel, ScanMode::Report);
    }

    fn subtree_keys(&self, rel: &Path) -> Vec<PathBuf> {
        // Paths compare component-wise, so a subtree is one contiguous range.
        self.entries
            .range::<Path, _>((Bound::Included(rel), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(rel))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn remove_subtree(&mut self, rel: &Path) {
        for k in self.subtree_keys(rel) {
            self.entries.remove(&k);
        }
    }

    fn insert(&mut self, rel: &Path, e: Entry) {
        if self.entries.len() >= self.limits.max_entries && !self.entries.contains_key(rel) {
            self.stats.entry_cap_hits += 1;
            self.cap_notice("fswatch_state_cap", self.limits.max_entries);
            return;
        }
        self.entries.insert(rel.to_owned(), e);
    }

    fn guest_path(&self, rel: &Path) -> String {
        if rel.as_os_str().is_empty() {
            crate::GUEST_WORKSPACE.to_owned()
        } else {
            format!("{}/{}", crate::GUEST_WORKSPACE, rel.to_string_lossy())
        }
    }

    fn emit(
        &mut self,
        op: FileOp,
        rel: &Path,
        from: Option<&Path>,
        size: Option<u64>,
        sha256: Option<String>,
    ) {
        let path = self.guest_path(rel);
        let from = from.map(|f| self.guest_path(f));
        let actor = self
            .attribution
            .lookup(&path)
            .or_else(|| from.as_deref().and_then(|f| self.attribution.lookup(f)));
        self.stats.events += 1;
        self.audit.emit(EventBody::File(FileEvent {
            op,
            path,
            requested: None,
            outcome: Outcome::Ok,
            errno: None,
            size,
            sha256,
            from,
            pid: actor.as_ref().map(|a| a.pid),
            exe: actor.map(|a| a.exe),
            syscall: None,
        }));
    }

    fn notice(&self, what: &str, detail: String) {
        self.audit.emit(EventBody::Notice(Notice {
            what: what.into(),
            detail,
        }));
    }

    /// One notice per cap per run: a guest hammering a cap must not flood the log.
    fn cap_notice(&mut self, what: &'static str, cap: usize) {
        if self.noticed.contains(&what) {
            return;
        }
        self.noticed.push(what);
        self.notice(
            what,
            format!("cap of {cap} reached; changes beyond it are seen only by rescans"),
        );
    }
}

impl FileState {
    fn unannounced() -> Self {
        Self {
            seen: None,
            sha256: None,
            announced: false,
            from_scan: false,
        }
    }
}

fn depth_of(rel: &Path) -> usize {
    rel.components().count()
}

//! The watcher's state: which host directories are watched, what every workspace path looked
//! like when last seen, and the translation of inotify events into `file` audit events.
//!
//! Owns: the watch-descriptor → directory map, the per-path state (bounded by
//! `max_entries`), pairing of `MOVED_FROM`/`MOVED_TO` by cookie, and the reconciliation scan
//! used at start (silent), after a queue overflow and at stop. Does not own: the thread, the
//! inotify read loop (see `fswatch`) or opening guest paths safely (see `tree`).

use super::tree::{self, Kind, Seen};
use super::{Limits, WatchStats};
use crate::attribution::Attribution;
use crate::audit::{AuditSink, EventBody, FileEvent, FileNode, FileOp, Notice, Outcome};
use inotify::{EventMask, WatchDescriptor, WatchMask, Watches};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::ops::Bound;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A recorded state is trusted to reveal a later write only once its ctime is this much older
/// than the moment it was recorded: timestamps tick at the kernel's coarse clock, so a write in
/// the same tick would leave size, mtime and ctime unchanged ("racily clean", as git says).
const SETTLE: Duration = Duration::from_millis(100);

/// What is known about one workspace path.
#[derive(Debug, Clone)]
enum Entry {
    File(FileState),
    /// `watched`: a watch was added when a scan listed it, so a later `CREATE` for it needs
    /// no rescan (what makes a deep chain linear, not cubic). `mode`: its permission bits.
    Dir {
        watched: bool,
        mode: u32,
    },
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
    /// `seen` was recorded well after its ctime (see [`SETTLE`]): an unchanged `seen` means
    /// unchanged content, so the file need not be hashed again.
    settled: bool,
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
    /// What is left of the run's hashed-bytes budget ([`Limits::hash_budget`]).
    hash_left: u64,
    /// What is left for hashing the seeded workspace at start ([`Limits::seed_hash_bytes`]).
    seed_left: u64,
    /// Bytes of the paths held in `entries` and `dirs` (capped by [`Limits::max_state_bytes`]).
    state_bytes: usize,
    /// Set when stopping: hashing ends there.
    pub(super) deadline: Option<Instant>,
    /// The stop request, seen by a hash already running when it comes.
    pub(super) stop: Option<super::SharedStop>,
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

mod meta;
mod scan;

use self::meta::{mode_node, settled, special_node};

const WATCH_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB)
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
            hash_left: limits.hash_budget,
            seed_left: limits.seed_hash_bytes,
            limits,
            state_bytes: 0,
            deadline: None,
            stop: None,
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

    /// Workspace paths remembered.
    pub(super) fn entries(&self) -> usize {
        self.entries.len()
    }

    /// What is left of [`Limits::seed_hash_bytes`].
    pub(super) fn seed_left(&self) -> u64 {
        self.seed_left
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
            if let Some(p) = self.dirs.remove(wd) {
                self.release_state(&p);
            }
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
        } else if mask.contains(EventMask::ATTRIB) {
            self.attrib(&rel);
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
                    self.insert(rel, Entry::Other);
                    let node = match tree::open_parent(&self.root, rel) {
                        Ok((dir, name)) => special_node(&dir, name, &st),
                        Err(_) => FileNode::default(),
                    };
                    let size = u64::try_from(st.st_size).ok().map(|s| (s, None));
                    self.emit_node(FileOp::Create, rel, None, size, node);
                }
            }
        }
    }

    fn closed_after_write(&mut self, rel: &Path) {
        let op = match self.entries.get(rel) {
            Some(Entry::File(f)) if f.announced => {
                // Opened for writing and closed without a change: nothing to hash again.
                let unchanged = f.settled
                    && tree::lstat_beneath(&self.root, rel)
                        .is_ok_and(|st| f.seen.as_ref() == Some(&Seen::of(&st)));
                if unchanged {
                    return;
                }
                FileOp::Modify
            }
            Some(Entry::File(_)) | None => FileOp::Create,
            Some(Entry::Dir { .. } | Entry::Other) => FileOp::Modify,
        };
        self.report_file(rel, op, true);
    }

    /// Hashes `rel` and reports it as `op`, updating its state. With `dedup`, a change already
    /// reported by a scan (same inode, size, mtime and hash) is not reported again.
    fn report_file(&mut self, rel: &Path, op: FileOp, dedup: bool) {
        let hashed = self.hash(rel, None);
        if let (true, Some(h), Some(Entry::File(f))) = (dedup, &hashed, self.entries.get_mut(rel)) {
            if f.from_scan && f.seen.as_ref() == Some(&h.seen) && f.sha256 == h.sha256 {
                f.from_scan = false;
                return;
            }
        }
        self.record_file(rel, hashed.as_ref(), false);
        match hashed {
            Some(h) => {
                let node = if op == FileOp::Create {
                    mode_node(h.seen.mode)
                } else {
                    FileNode::default()
                };
                self.emit_node(op, rel, None, Some((h.size, h.sha256)), node);
            }
            // Gone (renamed or deleted) before it could be read: the next event says where.
            None => self.emit(op, rel, None, None, None),
        }
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
                let e = self.forget(&k)?;
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
        let (mut grew, mut shrank) = (0usize, 0usize);
        for path in self.dirs.values_mut() {
            if let Ok(suffix) = path.strip_prefix(from) {
                let new = if suffix.as_os_str().is_empty() {
                    to.to_owned()
                } else {
                    to.join(suffix)
                };
                shrank += path.as_os_str().len();
                grew += new.as_os_str().len();
                *path = new;
            }
        }
        self.state_bytes = (self.state_bytes + grew).saturating_sub(shrank);
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
                    if let Some(h) = self.hash(to, None) {
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
            self.forget(rel);
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
        match self.entries.get(rel) {
            // Already listed and watched by the scan of an ancestor created just before it.
            Some(Entry::Dir { watched: true, .. }) => return,
            Some(Entry::Dir { .. }) => {}
            _ => {
                let mode = tree::lstat_beneath(&self.root, rel).map_or(0, |st| st.st_mode & 0o7777);
                self.insert(
                    rel,
                    Entry::Dir {
                        watched: false,
                        mode,
                    },
                );
                self.emit_node(FileOp::Mkdir, rel, None, None, mode_node(mode));
            }
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
            self.forget(&k);
        }
    }

    fn forget(&mut self, rel: &Path) -> Option<Entry> {
        let e = self.entries.remove(rel)?;
        self.state_bytes = self.state_bytes.saturating_sub(rel.as_os_str().len());
        Some(e)
    }

    fn insert(&mut self, rel: &Path, e: Entry) {
        if let Some(slot) = self.entries.get_mut(rel) {
            *slot = e;
            return;
        }
        if self.entries.len() >= self.limits.max_entries {
            self.stats.entry_cap_hits += 1;
            self.cap_notice("fswatch_state_cap", self.limits.max_entries);
            return;
        }
        if !self.charge_state(rel) {
            return;
        }
        self.entries.insert(rel.to_owned(), e);
    }

    /// Adds the bytes of a remembered path to the state, false (and one notice) over the cap.
    pub(super) fn charge_state(&mut self, rel: &Path) -> bool {
        let len = rel.as_os_str().len();
        if self.state_bytes.saturating_add(len) > self.limits.max_state_bytes {
            self.stats.entry_cap_hits += 1;
            self.cap_notice("fswatch_state_bytes_cap", self.limits.max_state_bytes);
            return false;
        }
        self.state_bytes += len;
        true
    }

    pub(super) fn release_state(&mut self, rel: &Path) {
        self.state_bytes = self.state_bytes.saturating_sub(rel.as_os_str().len());
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
        let content = size.map(|s| (s, sha256));
        self.emit_node(op, rel, from, content, FileNode::default());
    }

    /// [`Core::emit`] with the entry's type, target or mode.
    pub(super) fn emit_node(
        &mut self,
        op: FileOp,
        rel: &Path,
        from: Option<&Path>,
        content: Option<(u64, Option<String>)>,
        node: FileNode,
    ) {
        let (size, sha256) = content.map_or((None, None), |(s, h)| (Some(s), h));
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
            node,
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
    /// A file of the seeded workspace: known, silent until it changes.
    fn seeded(seen: Seen) -> Self {
        Self {
            settled: settled(&seen),
            seen: Some(seen),
            announced: true,
            ..Self::unannounced()
        }
    }

    fn unannounced() -> Self {
        Self {
            seen: None,
            sha256: None,
            announced: false,
            from_scan: false,
            settled: false,
        }
    }
}

fn depth_of(rel: &Path) -> usize {
    rel.components().count()
}

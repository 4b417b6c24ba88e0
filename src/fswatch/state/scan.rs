//! Scanning part of the watcher state: walking a subtree from directory descriptors (see
//! `walk`), watching each directory before listing it (live scans), and reporting what
//! differs from the recorded state. Owns nothing of its own: it is `Core`'s walk, split out
//! for size.

use super::{depth_of, mode_node, special_node, Core, Entry, FileState, ScanMode, WATCH_MASK};
use crate::audit::FileOp;
use crate::fswatch::tree::{self, Change, Kind, Seen};
use crate::fswatch::walk::{self, Cut, Step, Visitor, WalkLimits};
use inotify::WatchDescriptor;
use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

impl Core {
    /// Walks the subtree at `rel` (a directory) without following symlinks, down to the live
    /// depth cap: watches every directory (before listing it, so nothing created after is
    /// missed), records every entry and, in `Report` mode, reports what differs.
    pub(in crate::fswatch) fn scan(&mut self, rel: &Path, mode: ScanMode) {
        let Ok(fd) = tree::open_beneath(&self.root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        else {
            return; // removed meanwhile: its delete event follows
        };
        let limits = WalkLimits {
            deadline: None,
            max_entries: u64::MAX,
        };
        let max_depth = Some(self.limits.max_depth);
        let mut pass = Pass::new(self, mode, max_depth, true);
        walk::walk(fd, rel, depth_of(rel), limits, &mut pass);
        pass.sweep(rel);
    }

    /// The reconciliation at stop: the whole tree at any depth (what the exported workspace
    /// will contain), without adding watches, until `deadline` or
    /// [`Limits::final_scan_entries`](crate::fswatch::Limits); a cut is one notice.
    pub(in crate::fswatch) fn final_scan(&mut self, deadline: Instant) {
        let started = Instant::now();
        let Ok(fd) = tree::open_beneath(&self.root, Path::new(""), OFlag::O_RDONLY) else {
            return;
        };
        let limits = WalkLimits {
            deadline: Some(deadline),
            max_entries: self.limits.final_scan_entries,
        };
        let mut pass = Pass::new(self, ScanMode::Report, None, false);
        let w = walk::walk(fd, Path::new(""), 0, limits, &mut pass);
        pass.sweep(Path::new(""));
        let Some(cut) = w.cut else { return };
        let why = match cut {
            Cut::Deadline => format!(
                "stop deadline reached after {} ms",
                started.elapsed().as_millis()
            ),
            Cut::EntryCap => format!("cap of {} entries reached", self.limits.final_scan_entries),
            Cut::Lost(e) => format!("a directory could not be reopened ({e})"),
        };
        let at = self.guest_path(w.cut_at.as_deref().unwrap_or(Path::new("")));
        self.notice(
            "fswatch_final_scan_cut",
            format!(
                "final workspace scan cut short: {why}; examined {} entries in {} directories, \
                 {} listed entries not examined, first unfinished directory {at}",
                w.entries, w.dirs, w.left
            ),
        );
    }

    /// Adds an inotify watch on the open directory `fd` (through `/proc/self/fd`, so the path
    /// cannot be swapped for a symlink between the check and the watch).
    fn watch(&mut self, rel: &Path, fd: &OwnedFd) -> bool {
        if self.dirs.len() >= self.limits.max_watches {
            self.stats.watch_cap_hits += 1;
            self.cap_notice("fswatch_watch_cap", self.limits.max_watches);
            return false;
        }
        let magic = format!("/proc/self/fd/{}", fd.as_raw_fd());
        match self.watches.add(&magic, WATCH_MASK) {
            Ok(wd) => {
                if self.dirs.get(&wd).map(PathBuf::as_path) != Some(rel) {
                    if !self.charge_state(rel) {
                        let _ = self.watches.remove(wd);
                        return false;
                    }
                    if let Some(old) = self.dirs.insert(wd, rel.to_owned()) {
                        self.release_state(&old);
                    }
                }
                true
            }
            Err(e) => {
                // ENOSPC: the kernel's per-user watch limit (fs.inotify.max_user_watches).
                self.stats.watch_errors += 1;
                if self.stats.watch_errors == 1 {
                    self.notice(
                        "fswatch_watch_failed",
                        format!("{}: {e}", self.guest_path(rel)),
                    );
                }
                false
            }
        }
    }

    pub(super) fn unwatch_subtree(&mut self, rel: &Path) {
        let wds: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(_, p)| p.starts_with(rel))
            .map(|(wd, _)| wd.clone())
            .collect();
        for wd in wds {
            if let Some(p) = self.dirs.remove(&wd) {
                self.release_state(&p);
            }
            let _ = self.watches.remove(wd);
        }
    }

    /// The baseline of a seeded file, hashed while [`Limits::seed_hash_bytes`] lasts so that a
    /// later rewrite behind a restored mtime shows as a content change.
    fn seed_file(&mut self, dir: &OwnedFd, name: &OsStr, st: &FileStat) -> FileState {
        let seen = Seen::of(st);
        let mut budget = tree::HashBudget {
            max_file: self.limits.max_hash_bytes,
            left: self.seed_left,
            deadline: None,
            stop: None,
        };
        let sha256 = if seen.size <= budget.left.min(budget.max_file) {
            tree::open_regular_at(dir, name)
                .and_then(|fd| tree::hash_fd(fd, &mut budget))
                .ok()
                .and_then(|h| h.sha256)
        } else {
            None
        };
        self.seed_left = budget.left;
        FileState {
            sha256,
            ..FileState::seeded(seen)
        }
    }

    fn rescanned_file(&mut self, rel: &Path, dir: &OwnedFd, name: &OsStr, st: &FileStat) {
        let known = match self.entries.get(rel) {
            Some(Entry::File(f)) if f.announced => Some((f.seen.clone(), f.settled)),
            _ => None,
        };
        match known {
            Some((Some(old), settled)) => {
                if settled && old.change_to(&Seen::of(st)) == Change::None {
                    return; // nothing moved since it was hashed: no need to read it again
                }
                self.rescanned(rel, Some((dir, name)), &old);
            }
            Some((None, _)) | None => {
                let op = if known.is_some() {
                    FileOp::Modify
                } else {
                    FileOp::Create
                };
                let hashed = self.hash(rel, Some((dir, name)));
                self.record_file(rel, hashed.as_ref(), true);
                let mode = st.st_mode & 0o7777;
                let content = hashed.map_or((u64::try_from(st.st_size).unwrap_or(0), None), |h| {
                    (h.size, h.sha256)
                });
                self.emit_node(op, rel, None, Some(content), mode_node(mode));
            }
        }
    }
}

/// One scan: the visitor of the walk, and what it saw for the sweep of vanished entries.
struct Pass<'a> {
    core: &'a mut Core,
    mode: ScanMode,
    /// Live scans stop at the depth cap; the final scan has none.
    max_depth: Option<usize>,
    watch: bool,
    /// Known paths seen by this scan (only known ones: the sets stay within the state cap).
    seen: HashSet<PathBuf>,
    /// Known directories (and the start) listed completely.
    listed: HashSet<PathBuf>,
}

impl<'a> Pass<'a> {
    fn new(core: &'a mut Core, mode: ScanMode, max_depth: Option<usize>, watch: bool) -> Self {
        Self {
            core,
            mode,
            max_depth,
            watch,
            seen: HashSet::new(),
            listed: HashSet::new(),
        }
    }

    /// Reports as removed the known entries under `start` that the scan did not see in a
    /// directory it listed completely; one pass over the known subtree, not one per
    /// directory (which made deep chains quadratic).
    fn sweep(self, start: &Path) {
        if self.mode != ScanMode::Report {
            return;
        }
        let mut removed_dir: Option<PathBuf> = None;
        for k in self.core.subtree_keys(start) {
            if k == start
                || self.seen.contains(&k)
                || removed_dir.as_ref().is_some_and(|d| k.starts_with(d))
                || !k.parent().is_some_and(|p| self.listed.contains(p))
            {
                continue;
            }
            let is_dir = matches!(self.core.entries.get(&k), Some(Entry::Dir { .. }));
            self.core.removed(&k, is_dir);
            if is_dir {
                removed_dir = Some(k);
            }
        }
    }
}

impl Visitor for Pass<'_> {
    fn enter(&mut self, rel: &Path, fd: &OwnedFd, _depth: usize) {
        if self.watch && self.core.watch(rel, fd) {
            if let Some(Entry::Dir { watched, .. }) = self.core.entries.get_mut(rel) {
                *watched = true;
            }
        }
    }

    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
        depth: usize,
    ) -> Step {
        let kind = tree::kind_of(st);
        let mode = st.st_mode & 0o7777;
        let core = &mut *self.core;
        match (self.mode, kind) {
            (ScanMode::Seed, Kind::File) => {
                let state = core.seed_file(dir, name, st);
                core.insert(rel, Entry::File(state));
            }
            (ScanMode::Seed, Kind::Dir) => core.insert(
                rel,
                Entry::Dir {
                    watched: false,
                    mode,
                },
            ),
            (ScanMode::Seed, _) => core.insert(rel, Entry::Other),
            (ScanMode::Report, Kind::File) => core.rescanned_file(rel, dir, name, st),
            (ScanMode::Report, Kind::Dir) => match core.entries.get_mut(rel) {
                Some(Entry::Dir { mode: old, .. }) => {
                    if *old != mode {
                        *old = mode;
                        core.emit_node(FileOp::Chmod, rel, None, None, mode_node(mode));
                    }
                }
                _ => {
                    let e = Entry::Dir {
                        watched: false,
                        mode,
                    };
                    core.insert(rel, e);
                    core.emit_node(FileOp::Mkdir, rel, None, None, mode_node(mode));
                }
            },
            (ScanMode::Report, _) => {
                if !matches!(core.entries.get(rel), Some(Entry::Other)) {
                    core.insert(rel, Entry::Other);
                    let size = u64::try_from(st.st_size).unwrap_or(0);
                    let node = special_node(dir, name, st);
                    core.emit_node(FileOp::Create, rel, None, Some((size, None)), node);
                }
            }
        }
        if self.mode == ScanMode::Report && self.core.entries.contains_key(rel) {
            self.seen.insert(rel.to_owned());
        }
        if kind != Kind::Dir {
            return Step::Skip;
        }
        match self.max_depth {
            Some(max) if depth > max => {
                self.core.cap_notice("fswatch_depth_cap", max);
                Step::Skip
            }
            _ => Step::Descend,
        }
    }

    fn leave(&mut self, rel: &Path, complete: bool) {
        let known = rel.as_os_str().is_empty() || self.core.entries.contains_key(rel);
        if complete && known && self.mode == ScanMode::Report {
            self.listed.insert(rel.to_owned());
        }
    }
}

//! Scanning part of the watcher state: walking a subtree without following symlinks,
//! watching each directory before listing it, and reporting what differs from the recorded
//! state. Owns nothing of its own: it is `Core`'s walk, split out for size.

use super::{depth_of, Core, Entry, FileState, ScanMode, WATCH_MASK};
use crate::audit::FileOp;
use crate::fswatch::tree::{self, Kind, Seen};
use inotify::WatchDescriptor;
use nix::fcntl::OFlag;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

impl Core {
    /// Walks the subtree at `rel` (a directory) without following symlinks: watches every
    /// directory (before listing it, so nothing created after is missed), records every
    /// entry and, in `Report` mode, reports what differs from the recorded state.
    pub(in crate::fswatch) fn scan(&mut self, rel: &Path, mode: ScanMode) {
        let mut stack = vec![(rel.to_owned(), depth_of(rel))];
        while let Some((dir, depth)) = stack.pop() {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
            let Ok(fd) = tree::open_beneath(&self.root, &dir, flags) else {
                continue; // removed meanwhile: its delete event follows
            };
            self.watch(&dir, &fd);
            let listed = self.list(&dir, fd, mode);
            if mode == ScanMode::Report {
                let gone: Vec<(PathBuf, bool)> = self
                    .subtree_keys(&dir)
                    .into_iter()
                    .filter(|k| k.parent() == Some(dir.as_path()) && !listed.contains_key(k))
                    .map(|k| {
                        let is_dir = matches!(self.entries.get(&k), Some(Entry::Dir));
                        (k, is_dir)
                    })
                    .collect();
                for (k, is_dir) in gone {
                    self.removed(&k, is_dir);
                }
            }
            for (child, kind) in listed {
                if kind == Kind::Dir {
                    if depth + 1 > self.limits.max_depth {
                        self.cap_notice("fswatch_depth_cap", self.limits.max_depth);
                        continue;
                    }
                    stack.push((child, depth + 1));
                }
            }
        }
    }

    /// Lists one directory, records (and in `Report` mode reports) each entry.
    fn list(&mut self, dir: &Path, fd: OwnedFd, mode: ScanMode) -> BTreeMap<PathBuf, Kind> {
        let mut listed = BTreeMap::new();
        // Listed through the open descriptor, so the directory cannot be swapped meanwhile.
        let Ok(rd) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
            return listed;
        };
        let names: Vec<OsString> = rd.filter_map(Result::ok).map(|e| e.file_name()).collect();
        for name in names {
            let name = name.as_os_str();
            let child = dir.join(name);
            let Ok(st) =
                nix::sys::stat::fstatat(&fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let kind = tree::kind_of(&st);
            listed.insert(child.clone(), kind);
            match (mode, kind) {
                (ScanMode::Seed, Kind::File) => {
                    let state = FileState {
                        seen: Some(Seen::of(&st)),
                        ..FileState::unannounced()
                    };
                    self.insert(
                        &child,
                        Entry::File(FileState {
                            announced: true,
                            ..state
                        }),
                    );
                }
                (ScanMode::Seed, Kind::Dir) => self.insert(&child, Entry::Dir),
                (ScanMode::Seed, _) => self.insert(&child, Entry::Other),
                (ScanMode::Report, Kind::File) => self.rescanned_file(&child, &fd, name, &st),
                (ScanMode::Report, Kind::Dir) => {
                    if !matches!(self.entries.get(&child), Some(Entry::Dir)) {
                        self.insert(&child, Entry::Dir);
                        self.emit(FileOp::Mkdir, &child, None, None, None);
                    }
                }
                (ScanMode::Report, _) => {
                    if !matches!(self.entries.get(&child), Some(Entry::Other)) {
                        self.insert(&child, Entry::Other);
                        self.emit(
                            FileOp::Create,
                            &child,
                            None,
                            u64::try_from(st.st_size).ok(),
                            None,
                        );
                    }
                }
            }
        }
        listed
    }

    fn rescanned_file(
        &mut self,
        rel: &Path,
        dir: &OwnedFd,
        name: &OsStr,
        st: &nix::sys::stat::FileStat,
    ) {
        let op = match self.entries.get(rel) {
            Some(Entry::File(f)) if f.announced => {
                if f.seen.as_ref() == Some(&Seen::of(st)) {
                    return;
                }
                FileOp::Modify
            }
            _ => FileOp::Create,
        };
        let hashed = tree::open_regular_at(dir, name)
            .and_then(|fd| tree::hash_fd(fd, self.limits.max_hash_bytes))
            .ok();
        self.record_file(rel, hashed.as_ref(), true);
        let (size, sha) = hashed.map_or((u64::try_from(st.st_size).ok(), None), |h| {
            (Some(h.size), h.sha256)
        });
        self.emit(op, rel, None, size, sha);
    }

    /// Adds an inotify watch on the open directory `fd` (through `/proc/self/fd`, so the path
    /// cannot be swapped for a symlink between the check and the watch).
    fn watch(&mut self, rel: &Path, fd: &OwnedFd) {
        if self.dirs.len() >= self.limits.max_watches {
            self.stats.watch_cap_hits += 1;
            self.cap_notice("fswatch_watch_cap", self.limits.max_watches);
            return;
        }
        let magic = format!("/proc/self/fd/{}", fd.as_raw_fd());
        match self.watches.add(&magic, WATCH_MASK) {
            Ok(wd) => {
                self.dirs.insert(wd, rel.to_owned());
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
            self.dirs.remove(&wd);
            let _ = self.watches.remove(wd);
        }
    }
}

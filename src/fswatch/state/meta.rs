//! Content and metadata part of the watcher state: hashing within the run's budget and the
//! stop deadline, telling a content change from a metadata one (`modify`, `chmod`, `attrib`),
//! and the `type`/`target`/`mode` of records. Owns nothing of its own: it is `Core`'s, split
//! out for size.

use super::{Core, Entry, FileState, SETTLE};
use crate::audit::{FileNode, FileOp};
use crate::fswatch::tree::{self, Change, HashBudget, HashSkip, Hashed, Kind, Seen};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

impl Core {
    /// Metadata of `rel` changed (chmod, xattr, owner, link count, timestamps): a `chmod` when
    /// the mode moved, a `modify` when the content changed behind a restored mtime, else an
    /// `attrib`. A file not yet reported carries its mode on its `create`.
    pub(super) fn attrib(&mut self, rel: &Path) {
        let Ok(st) = tree::lstat_beneath(&self.root, rel) else {
            return;
        };
        let now = Seen::of(&st);
        match (tree::kind_of(&st), self.entries.get_mut(rel)) {
            (Kind::Dir, Some(Entry::Dir { mode, .. })) if *mode != now.mode => {
                *mode = now.mode;
                self.emit_node(FileOp::Chmod, rel, None, None, mode_node(now.mode));
            }
            (Kind::File, Some(Entry::File(f))) if f.announced => {
                let Some(old) = f.seen.clone() else { return };
                match old.change_to(&now) {
                    Change::None => {}
                    Change::Metadata { .. } => self.rescanned(rel, None, &old),
                    Change::Content => {
                        // Being written: the content is reported at close or by the final
                        // scan; the mode change is reported now, the rest stays to compare.
                        if old.mode != now.mode {
                            if let Some(s) = f.seen.as_mut() {
                                s.mode = now.mode;
                            }
                            self.emit_node(FileOp::Chmod, rel, None, None, mode_node(now.mode));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Re-examines a known file whose `seen` moved from `old` (dir fd and name when a scan
    /// has them): hashes it within the budget and reports a `modify` when the content
    /// changed, a `chmod` when the mode did, an `attrib` when neither is visible.
    pub(super) fn rescanned(&mut self, rel: &Path, at: Option<(&OwnedFd, &OsStr)>, old: &Seen) {
        let old_sha = match self.entries.get(rel) {
            Some(Entry::File(f)) => f.sha256.clone(),
            _ => None,
        };
        let Some(h) = self.hash(rel, at) else { return };
        let content = match (&h.sha256, &old_sha) {
            (Some(new), Some(old)) => new != old,
            // Without both hashes only the stat can tell.
            _ => old.change_to(&h.seen) == Change::Content,
        };
        let mode_moved = old.mode != h.seen.mode;
        let moved = old.change_to(&h.seen) != Change::None;
        self.record_file(rel, Some(&h), at.is_some());
        if !content && !mode_moved && !moved {
            return; // re-read only because its state was too fresh to trust: unchanged
        }
        if content {
            let node = if mode_moved {
                mode_node(h.seen.mode)
            } else {
                FileNode::default()
            };
            self.emit_node(
                FileOp::Modify,
                rel,
                None,
                Some((h.size, h.sha256.clone())),
                node,
            );
        }
        if mode_moved {
            self.emit_node(FileOp::Chmod, rel, None, None, mode_node(h.seen.mode));
        } else if !content {
            self.emit_node(
                FileOp::Attrib,
                rel,
                None,
                Some((h.size, h.sha256)),
                FileNode::default(),
            );
        }
    }

    /// Hashes `rel` (from `at` when given) within the run's budget and the stop deadline.
    pub(super) fn hash(&mut self, rel: &Path, at: Option<(&OwnedFd, &OsStr)>) -> Option<Hashed> {
        let mut budget = HashBudget {
            max_file: self.limits.max_hash_bytes,
            left: self.hash_left,
            deadline: self.deadline,
            stop: self.stop.clone(),
        };
        let h = match at {
            Some((dir, name)) => {
                tree::open_regular_at(dir, name).and_then(|fd| tree::hash_fd(fd, &mut budget))
            }
            None => tree::hash_beneath(&self.root, rel, &mut budget),
        };
        self.hash_left = budget.left;
        h.ok()
    }

    pub(super) fn record_file(&mut self, rel: &Path, h: Option<&Hashed>, from_scan: bool) {
        if let Some(skip) = h.and_then(|h| h.skipped) {
            self.stats.hash_skipped += 1;
            self.hash_skip_notice(rel, skip, h.map_or(0, |h| h.size));
        }
        let settled = h.is_some_and(|h| settled(&h.seen));
        let state = FileState {
            seen: h.map(|h| h.seen.clone()),
            sha256: h.and_then(|h| h.sha256.clone()),
            announced: true,
            from_scan,
            settled,
        };
        self.insert(rel, Entry::File(state));
    }

    /// One notice per reason per run: a guest making many files unhashable must not flood
    /// the log. Each file's own record still says `size` without `sha256`.
    pub(super) fn hash_skip_notice(&mut self, rel: &Path, skip: HashSkip, size: u64) {
        let (what, why) = match skip {
            HashSkip::TooBig => (
                "fswatch_hash_skipped",
                format!(
                    "over the {}-byte per-file hashing cap",
                    self.limits.max_hash_bytes
                ),
            ),
            HashSkip::Budget => (
                "fswatch_hash_budget",
                format!(
                    "the run's hashing budget of {} bytes is spent",
                    self.limits.hash_budget
                ),
            ),
            HashSkip::Deadline => (
                "fswatch_hash_deadline",
                "the watcher's stop deadline passed while hashing".to_owned(),
            ),
        };
        if self.noticed.contains(&what) {
            return;
        }
        self.noticed.push(what);
        let path = self.guest_path(rel);
        self.notice(
            what,
            format!("{path} ({size} bytes) and files after it are recorded without sha256: {why}"),
        );
    }
}

/// The `mode` of a create, mkdir or chmod record.
pub(super) fn mode_node(mode: u32) -> FileNode {
    FileNode {
        mode: Some(tree::mode_string(mode)),
        ..FileNode::default()
    }
}

/// Type (and for a symlink its target, read from `dir`) of a special entry `name`.
pub(super) fn special_node(dir: &OwnedFd, name: &OsStr, st: &nix::sys::stat::FileStat) -> FileNode {
    use crate::audit::FileType;
    use nix::sys::stat::SFlag;
    let file_type = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFLNK => FileType::Symlink,
        SFlag::S_IFIFO => FileType::Fifo,
        SFlag::S_IFSOCK => FileType::Socket,
        SFlag::S_IFCHR | SFlag::S_IFBLK => FileType::Device,
        _ => FileType::Other,
    };
    let target = (file_type == FileType::Symlink)
        .then(|| tree::link_target(dir, name, crate::fswatch::MAX_LINK_TARGET_BYTES))
        .flatten();
    FileNode {
        file_type: Some(file_type),
        target,
        mode: (file_type != FileType::Symlink).then(|| tree::mode_string(st.st_mode)),
    }
}

/// Whether `seen`, recorded now, is old enough to be trusted (see [`SETTLE`]).
pub(super) fn settled(seen: &Seen) -> bool {
    let ctime = SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(seen.ctime.0).unwrap_or(0),
            u32::try_from(seen.ctime.1).unwrap_or(0),
        );
    SystemTime::now()
        .duration_since(ctime)
        .is_ok_and(|age| age > SETTLE)
}

//! Walking a guest-controlled tree from directory descriptors, at any depth.
//!
//! Owns: the iterative depth-first walk (no recursion on the stack, no path ever handed to the
//! kernel, so no `PATH_MAX` limit), opening every child with `O_NOFOLLOW | O_DIRECTORY` from
//! its parent's descriptor, and the bounded descriptor stack: only the deepest
//! [`MAX_OPEN_LEVELS`] directories stay open; an ancestor closed to stay under the process's
//! descriptor limit is reopened through `..` of its child and checked by device and inode (a
//! swapped directory ends the walk instead of walking somewhere else). Does not own: what a
//! walk does with the entries (the [`Visitor`]: the watcher's scan, the export).

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Directory descriptors a walk keeps open at once (per tree); deeper walks reopen ancestors.
pub const MAX_OPEN_LEVELS: usize = 64;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

struct Frame {
    fd: Option<OwnedFd>,
    dev: u64,
    ino: u64,
}

/// The open directories from a walk's start down to where it is; the top is always open.
pub struct DirStack {
    frames: Vec<Frame>,
}

impl DirStack {
    pub fn new(root: OwnedFd) -> Result<Self, Errno> {
        let mut s = Self { frames: Vec::new() };
        s.push(root)?;
        Ok(s)
    }

    /// The deepest directory, open. `None` only once the start itself was popped.
    pub fn top(&self) -> Option<&OwnedFd> {
        self.frames.last().and_then(|f| f.fd.as_ref())
    }

    /// Enters `fd` (a child of the top), closing the ancestor that falls out of the window.
    pub fn push(&mut self, fd: OwnedFd) -> Result<(), Errno> {
        let st = fstat(&fd)?;
        self.frames.push(Frame {
            fd: Some(fd),
            dev: st.st_dev,
            ino: st.st_ino,
        });
        if let Some(old) = self
            .frames
            .len()
            .checked_sub(MAX_OPEN_LEVELS + 1)
            .and_then(|i| self.frames.get_mut(i))
        {
            old.fd = None;
        }
        Ok(())
    }

    /// Leaves the top directory; reopens its parent through `..` if it had been closed.
    pub fn pop(&mut self) -> Result<(), Errno> {
        let Some(child) = self.frames.pop() else {
            return Ok(());
        };
        let Some(parent) = self.frames.last_mut() else {
            return Ok(());
        };
        if parent.fd.is_none() {
            let child_fd = child.fd.ok_or(Errno::EBADF)?;
            let fd = openat(&child_fd, "..", DIR_FLAGS, Mode::empty())?;
            let st = fstat(&fd)?;
            if (st.st_dev, st.st_ino) != (parent.dev, parent.ino) {
                return Err(Errno::ESTALE); // moved while the walk was below it
            }
            parent.fd = Some(fd);
        }
        Ok(())
    }
}

/// Whether the walk enters a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Skip,
    Descend,
}

/// What a walk does at each directory and entry.
pub trait Visitor {
    /// The directory `rel` (the start first) was opened as `fd`, before it is listed.
    fn enter(&mut self, rel: &Path, fd: &OwnedFd, depth: usize);
    /// One entry `name` (path `rel`, `lstat` as `st`) of the open directory `dir`.
    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
        depth: usize,
    ) -> Step;
    /// Done with directory `rel`; `complete` when every entry of it was visited.
    fn leave(&mut self, rel: &Path, complete: bool);
}

/// Bounds of one walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    pub deadline: Option<Instant>,
    /// Entries (of any type) examined before the walk stops.
    pub max_entries: u64,
}

/// Why a walk stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Deadline,
    EntryCap,
    /// A directory could not be reopened (or was swapped): the rest of the tree is unknown.
    Lost(Errno),
}

/// What a walk covered.
#[derive(Debug, Clone, Default)]
pub struct Walked {
    pub dirs: u64,
    pub entries: u64,
    pub cut: Option<Cut>,
    /// Entries listed but not examined because of the cut.
    pub left: u64,
    /// The first directory the cut left unfinished.
    pub cut_at: Option<PathBuf>,
}

/// Walks the tree below `start` (open directory at path `start_rel`, depth `start_depth`).
pub fn walk(
    start: OwnedFd,
    start_rel: &Path,
    start_depth: usize,
    limits: WalkLimits,
    v: &mut impl Visitor,
) -> Walked {
    let mut w = Walked::default();
    let mut stack = match DirStack::new(start) {
        Ok(s) => s,
        Err(e) => {
            w.cut = Some(Cut::Lost(e));
            return w;
        }
    };
    let mut rel = start_rel.to_path_buf();
    let mut levels: Vec<Vec<OsString>> = Vec::new();
    if let Some(top) = stack.top() {
        v.enter(&rel, top, start_depth);
        levels.push(list(top, limits.max_entries, &mut w));
        w.dirs = 1;
    }
    while let Some(names) = levels.last_mut() {
        let Some(name) = names.pop() else {
            levels.pop();
            v.leave(&rel, true);
            if levels.is_empty() {
                break;
            }
            rel.pop();
            if let Err(e) = stack.pop() {
                w.cut = Some(Cut::Lost(e));
                break;
            }
            continue;
        };
        if limits.deadline.is_some_and(|d| Instant::now() >= d) {
            names.push(name);
            w.cut = Some(Cut::Deadline);
            break;
        }
        if w.entries >= limits.max_entries {
            names.push(name);
            w.cut = Some(Cut::EntryCap);
            break;
        }
        w.entries += 1;
        let Some(top) = stack.top() else { break };
        let Ok(st) = fstatat(top, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue; // removed meanwhile
        };
        rel.push(&name);
        let depth = start_depth + levels.len();
        let step = v.entry(top, &name, &rel, &st, depth);
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if step == Step::Descend && is_dir {
            if let Ok(fd) = openat(top, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
                if let Err(e) = stack.push(fd) {
                    rel.pop();
                    w.cut = Some(Cut::Lost(e));
                    break;
                }
                if let Some(top) = stack.top() {
                    v.enter(&rel, top, depth);
                    let remaining = limits.max_entries.saturating_sub(w.entries);
                    levels.push(list(top, remaining, &mut w));
                    w.dirs += 1;
                }
                continue;
            }
        }
        rel.pop();
    }
    if w.cut.is_some() {
        w.left = levels.iter().map(|l| l.len() as u64).sum();
        w.cut_at = Some(rel.clone());
        for _ in 0..levels.len() {
            v.leave(&rel, false);
            rel.pop();
        }
    }
    w
}

/// The names in the open directory `fd`, at most `cap` of them (then the walk is cut).
fn list(fd: &OwnedFd, cap: u64, w: &mut Walked) -> Vec<OsString> {
    // Listed through the open descriptor, so the directory cannot be swapped meanwhile.
    let Ok(rd) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for e in rd.filter_map(Result::ok) {
        if names.len() as u64 >= cap {
            w.cut.get_or_insert(Cut::EntryCap);
            break;
        }
        names.push(e.file_name());
    }
    names
}

/// Opens the start of a walk. The path is the caller's, not the guest's (it may be a
/// `/proc/self/fd/N` link to a held directory, so it is followed); below it nothing is.
pub fn open_dir(dir: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(dir, DIR_FLAGS.difference(OFlag::O_NOFOLLOW), Mode::empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    struct Collect(Vec<(PathBuf, usize)>, u64);

    impl Visitor for Collect {
        fn enter(&mut self, _: &Path, _: &OwnedFd, _: usize) {}
        fn entry(&mut self, _: &OwnedFd, _: &OsStr, rel: &Path, _: &FileStat, d: usize) -> Step {
            self.0.push((rel.to_owned(), d));
            Step::Descend
        }
        fn leave(&mut self, _: &Path, complete: bool) {
            self.1 += u64::from(complete);
        }
    }

    /// Makes a chain of `n` directories `d/d/d/...` below `root` with a file at the bottom,
    /// from descriptors (the path is longer than `PATH_MAX`).
    pub(crate) fn deep_chain(root: &Path, n: usize, name: &str) {
        let mut fd = open_dir(root).expect("open root");
        for _ in 0..n {
            let _ = nix::sys::stat::mkdirat(&fd, name, Mode::from_bits_truncate(0o755));
            fd = openat(&fd, name, DIR_FLAGS, Mode::empty()).expect("open level");
        }
        let f = openat(
            &fd,
            "bottom",
            OFlag::O_WRONLY | OFlag::O_CREAT,
            Mode::from_bits_truncate(0o644),
        )
        .expect("create bottom");
        nix::unistd::write(&f, b"deep").expect("write bottom");
    }

    #[test]
    fn walks_below_path_max_and_past_the_descriptor_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = "x".repeat(40);
        let levels = MAX_OPEN_LEVELS * 3; // ~7.8 KB of path, over PATH_MAX
        deep_chain(dir.path(), levels, &name);
        std::os::unix::fs::symlink("/", dir.path().join("root-link")).expect("symlink");
        let mut c = Collect(Vec::new(), 0);
        let limits = WalkLimits {
            deadline: None,
            max_entries: u64::MAX,
        };
        let w = walk(
            open_dir(dir.path()).expect("open"),
            Path::new(""),
            0,
            limits,
            &mut c,
        );
        assert_eq!(w.cut, None);
        assert_eq!(w.dirs, levels as u64 + 1);
        assert_eq!(c.1, levels as u64 + 1, "every directory left complete");
        let bottom =
            c.0.iter()
                .find(|(p, _)| p.ends_with("bottom"))
                .expect("bottom");
        assert_eq!(bottom.1, levels + 1);
        assert!(bottom.0.as_os_str().len() > 4096);
        // The symlink is an entry, never entered.
        assert!(c.0.iter().any(|(p, _)| p == Path::new("root-link")));
        assert!(!c.0.iter().any(|(p, _)| p.starts_with("root-link/etc")));

        let mut c = Collect(Vec::new(), 0);
        let capped = WalkLimits {
            deadline: None,
            max_entries: 10,
        };
        let w = walk(
            open_dir(dir.path()).expect("open"),
            Path::new(""),
            0,
            capped,
            &mut c,
        );
        assert_eq!(w.cut, Some(Cut::EntryCap));
        assert!(c.0.len() <= 10);
        let past = WalkLimits {
            deadline: Some(Instant::now()),
            max_entries: u64::MAX,
        };
        let w = walk(
            open_dir(dir.path()).expect("open"),
            Path::new(""),
            0,
            past,
            &mut c,
        );
        assert_eq!((w.cut, w.entries, w.left), (Some(Cut::Deadline), 0, 2));
    }
}

//! Guest-controlled host paths, opened without ever following a symlink, and file hashing.
//!
//! Owns: resolving a path relative to the workspace root one component at a time with
//! `O_NOFOLLOW` (a guest symlink such as `a -> /etc` must never make the host read or watch its
//! own `/etc`), `lstat` beneath the root, and streaming sha256 with a byte cap.
//! Does not own: deciding what a change means (see `state`).

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

/// What a file looked like when it was last examined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    /// (seconds, nanoseconds) of the last modification: the guest can set it (`touch -r`).
    pub mtime: (i64, i64),
    /// (seconds, nanoseconds) of the last inode change: userspace cannot set it, so a content
    /// change with a restored mtime still moves it.
    pub ctime: (i64, i64),
    pub ino: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl Seen {
    pub fn of(st: &FileStat) -> Self {
        Self {
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
            ino: st.st_ino,
            mode: st.st_mode & 0o7777,
        }
    }

    /// How `now` differs from `self`, the state last recorded.
    pub fn change_to(&self, now: &Seen) -> Change {
        if self.size != now.size || self.mtime != now.mtime || self.ino != now.ino {
            Change::Content
        } else if self.ctime != now.ctime || self.mode != now.mode {
            // Metadata only, or content rewritten with the mtime restored: only a hash tells.
            Change::Metadata {
                mode: self.mode != now.mode,
            }
        } else {
            Change::None
        }
    }
}

/// The result of comparing two [`Seen`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// Size, mtime or inode moved: the content changed.
    Content,
    /// Only the ctime (and maybe the mode) moved; `mode` says whether the mode did.
    Metadata {
        mode: bool,
    },
}

/// Permission bits as the audit log writes them: 4 octal digits.
pub fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// The kind of a directory entry, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// FIFO, socket or device node.
    Other,
}

pub fn kind_of(st: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// A hashed file: `sha256` is `None` when `skipped` says why.
#[derive(Debug, Clone)]
pub struct Hashed {
    pub seen: Seen,
    pub size: u64,
    pub sha256: Option<String>,
    pub skipped: Option<HashSkip>,
}

/// Why a file was recorded without a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashSkip {
    /// Larger than the per-file cap.
    TooBig,
    /// The run's hashed-bytes budget is spent.
    Budget,
    /// The scan's deadline passed while hashing.
    Deadline,
}

/// How much a hash may cost: a per-file cap, what is left of the run's byte budget, and an
/// optional deadline.
#[derive(Debug)]
pub struct HashBudget {
    pub max_file: u64,
    pub left: u64,
    pub deadline: Option<std::time::Instant>,
    /// A stop requested while hashing brings its own, earlier deadline.
    pub stop: Option<super::SharedStop>,
}

impl HashBudget {
    /// No budget or deadline: for tests and one-off hashes.
    #[cfg(test)]
    pub fn per_file(max_file: u64) -> Self {
        Self {
            max_file,
            left: u64::MAX,
            deadline: None,
            stop: None,
        }
    }
}

/// Opens the directory that contains `rel` (the root itself for a one-component path) as an
/// `O_PATH` descriptor, refusing symlinks at every step. Returns it with the last component.
pub fn open_parent<'a>(root: &OwnedFd, rel: &'a Path) -> Result<(OwnedFd, &'a OsStr), Errno> {
    let mut comps = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => comps.push(n),
            // Names from inotify and readdir never contain these; refuse rather than resolve.
            _ => return Err(Errno::EINVAL),
        }
    }
    let last = comps.pop().ok_or(Errno::EINVAL)?;
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut cur = openat(root, ".", dir_flags, Mode::empty())?;
    for c in comps {
        cur = openat(&cur, c, dir_flags, Mode::empty())?;
    }
    Ok((cur, last))
}

/// Opens `rel` beneath `root` with `flags` plus `O_NOFOLLOW`; the empty path is the root.
pub fn open_beneath(root: &OwnedFd, rel: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if rel.as_os_str().is_empty() {
        return openat(root, ".", flags, Mode::empty());
    }
    let (parent, name) = open_parent(root, rel)?;
    openat(&parent, name, flags, Mode::empty())
}

/// `lstat` of `rel` beneath `root`.
pub fn lstat_beneath(root: &OwnedFd, rel: &Path) -> Result<FileStat, Errno> {
    let (parent, name) = open_parent(root, rel)?;
    fstatat(&parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// Opens a regular file for hashing: no symlink, no blocking on a FIFO.
pub fn open_regular_at(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    openat(dir, name, flags, Mode::empty())
}

/// Hashes an open file, streaming, within `budget` (whose `left` is charged with the bytes
/// read). Anything but a regular file is refused.
pub fn hash_fd(fd: OwnedFd, budget: &mut HashBudget) -> Result<Hashed, Errno> {
    let st = fstat(&fd)?;
    if kind_of(&st) != Kind::File {
        return Err(Errno::EINVAL);
    }
    let seen = Seen::of(&st);
    let skip = if seen.size > budget.max_file {
        Some(HashSkip::TooBig)
    } else if seen.size > budget.left {
        Some(HashSkip::Budget)
    } else {
        None
    };
    if let Some(skip) = skip {
        return Ok(Hashed {
            size: seen.size,
            seen,
            sha256: None,
            skipped: Some(skip),
        });
    }
    let cap = budget.max_file.min(budget.left);
    let mut file = std::fs::File::from(fd).take(cap.saturating_add(1));
    let mut hasher = Sha256::new();
    // No larger than the file needs (plus the read that sees its end): a seed of many small
    // files would otherwise zero 64 KiB per file.
    let want = usize::try_from(seen.size.saturating_add(1)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; want.clamp(4 << 10, 64 << 10)];
    let mut total = 0u64;
    let mut skipped = None;
    loop {
        let stop = budget.stop.as_ref().and_then(super::StopAt::hashing_of);
        let now = std::time::Instant::now();
        if budget.deadline.is_some_and(|d| now >= d) || stop.is_some_and(|d| now >= d) {
            skipped = Some(HashSkip::Deadline);
            break;
        }
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(buf.get(..n).unwrap_or_default());
                total = total.saturating_add(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }
    budget.left = budget.left.saturating_sub(total);
    // The file grew past the cap while being read: no hash rather than a partial one.
    if skipped.is_none() && total > cap {
        skipped = Some(if total > budget.max_file {
            HashSkip::TooBig
        } else {
            HashSkip::Budget
        });
    }
    let sha256 = skipped.is_none().then(|| hex::encode(hasher.finalize()));
    Ok(Hashed {
        seen,
        size: total.max(u64::try_from(st.st_size).unwrap_or(0)),
        sha256,
        skipped,
    })
}

/// Hashes `rel` beneath `root`.
pub fn hash_beneath(root: &OwnedFd, rel: &Path, budget: &mut HashBudget) -> Result<Hashed, Errno> {
    let (parent, name) = open_parent(root, rel)?;
    hash_fd(open_regular_at(&parent, name)?, budget)
}

/// A symlink's target, read with `readlinkat` (never followed), lossy and cut to `cap` bytes.
pub fn link_target(dir: &OwnedFd, name: &OsStr, cap: usize) -> Option<String> {
    let target = nix::fcntl::readlinkat(dir, name).ok()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
    Some(String::from_utf8_lossy(bytes.get(..cap.min(bytes.len()))?).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"host secret").expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a")).expect("symlink");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("s"))
            .expect("symlink");
        let root = nix::fcntl::open(
            dir.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .expect("open root");
        let mut b = HashBudget::per_file(1 << 20);
        assert!(hash_beneath(&root, Path::new("a/secret"), &mut b).is_err());
        assert!(hash_beneath(&root, Path::new("s"), &mut b).is_err());
        assert_eq!(
            link_target(&root, OsStr::new("s"), 5).as_deref(),
            Some(&outside.path().to_string_lossy()[..5])
        );
        assert_eq!(
            lstat_beneath(&root, Path::new("s")).map(|s| kind_of(&s)),
            Ok(Kind::Symlink)
        );
        assert!(open_beneath(&root, Path::new("../x"), OFlag::O_RDONLY).is_err());
    }

    #[test]
    fn hash_is_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"hello").expect("write");
        let root = nix::fcntl::open(
            dir.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .expect("open root");
        let h = hash_beneath(&root, Path::new("f"), &mut HashBudget::per_file(5)).expect("hash");
        assert_eq!(
            h.sha256.as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        let h = hash_beneath(&root, Path::new("f"), &mut HashBudget::per_file(4)).expect("hash");
        assert_eq!(
            (h.size, h.sha256, h.skipped),
            (5, None, Some(HashSkip::TooBig))
        );
        // The run's budget is charged per byte read; a file over what is left is not read.
        let mut b = HashBudget {
            max_file: 100,
            left: 7,
            deadline: None,
            stop: None,
        };
        assert!(hash_beneath(&root, Path::new("f"), &mut b)
            .expect("hash")
            .sha256
            .is_some());
        assert_eq!(b.left, 2);
        let h = hash_beneath(&root, Path::new("f"), &mut b).expect("hash");
        assert_eq!((h.sha256, h.skipped), (None, Some(HashSkip::Budget)));
        assert_eq!(b.left, 2);
    }

    #[test]
    fn ctime_and_mode_are_compared() {
        let base = Seen {
            size: 4,
            mtime: (10, 0),
            ctime: (10, 0),
            ino: 7,
            mode: 0o644,
        };
        assert_eq!(base.change_to(&base.clone()), Change::None);
        // Rewritten in place with the mtime restored (`touch -r`): only ctime moved.
        let restored = Seen {
            ctime: (11, 5),
            ..base.clone()
        };
        assert_eq!(base.change_to(&restored), Change::Metadata { mode: false });
        let setuid = Seen {
            ctime: (11, 5),
            mode: 0o4755,
            ..base.clone()
        };
        assert_eq!(base.change_to(&setuid), Change::Metadata { mode: true });
        let grown = Seen {
            size: 5,
            ..base.clone()
        };
        assert_eq!(base.change_to(&grown), Change::Content);
        let swapped = Seen { ino: 8, ..base };
        assert_eq!(swapped.change_to(&restored), Change::Content);
        assert_eq!(mode_string(0o104755), "4755");
    }
}

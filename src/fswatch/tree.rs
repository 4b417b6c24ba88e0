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
    /// (seconds, nanoseconds) of the last modification.
    pub mtime: (i64, i64),
    pub ino: u64,
}

impl Seen {
    pub fn of(st: &FileStat) -> Self {
        Self {
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ino: st.st_ino,
        }
    }
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

/// A hashed file: `sha256` is `None` when the file was larger than the cap.
#[derive(Debug, Clone)]
pub struct Hashed {
    pub seen: Seen,
    pub size: u64,
    pub sha256: Option<String>,
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

/// Hashes an open file, streaming, up to `cap` bytes. Anything but a regular file is refused.
pub fn hash_fd(fd: OwnedFd, cap: u64) -> Result<Hashed, Errno> {
    let st = fstat(&fd)?;
    if kind_of(&st) != Kind::File {
        return Err(Errno::EINVAL);
    }
    let seen = Seen::of(&st);
    if seen.size > cap {
        return Ok(Hashed {
            size: seen.size,
            seen,
            sha256: None,
        });
    }
    let mut file = std::fs::File::from(fd).take(cap.saturating_add(1));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
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
    // The file grew past the cap while being read: no hash rather than a partial one.
    let sha256 = (total <= cap).then(|| hex::encode(hasher.finalize()));
    Ok(Hashed {
        seen,
        size: total,
        sha256,
    })
}

/// Hashes `rel` beneath `root`.
pub fn hash_beneath(root: &OwnedFd, rel: &Path, cap: u64) -> Result<Hashed, Errno> {
    let (parent, name) = open_parent(root, rel)?;
    hash_fd(open_regular_at(&parent, name)?, cap)
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
        assert!(hash_beneath(&root, Path::new("a/secret"), 1 << 20).is_err());
        assert!(hash_beneath(&root, Path::new("s"), 1 << 20).is_err());
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
        let h = hash_beneath(&root, Path::new("f"), 5).expect("hash");
        assert_eq!(
            h.sha256.as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        let h = hash_beneath(&root, Path::new("f"), 4).expect("hash");
        assert_eq!((h.size, h.sha256), (5, None));
    }
}

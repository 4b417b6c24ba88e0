//! Resolving a path the way the kernel will for a guest process: symlinks followed inside the
//! guest's root (`openat2` with `RESOLVE_IN_ROOT` on `/proc/<pid>/root`), and the process's
//! own magic links (`/proc/self/root`, `/proc/self/cwd`, `/proc/self/fd/N`, `/dev/fd/N`,
//! `/dev/std*`), which `RESOLVE_IN_ROOT` refuses to cross, mapped to what they point at.
//!
//! Observation only: the kernel resolves the path again after we did (a guest thread can swap
//! the buffer, or a symlink, in between), so a resolved path can make a record wrong, never
//! let a call through. `None` when the path cannot be resolved from here (a magic link reached
//! through a symlink, a descriptor that is not a file); the caller keeps the text.
//! Also reads a path argument out of guest memory and joins it to the cwd or dirfd
//! ([`read_path`]). Does not own: the memory reads themselves (`procfs::GuestMem`).

use super::procfs::{self, GuestMem};
use super::syscalls::PathArg;
use crate::audit::FileOp;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Symlinks followed by hand for a dangling last component (the kernel's own limit is 40;
/// each step here is an `openat2` that already follows every symlink before the last).
const MAX_DANGLING_HOPS: usize = 8;

/// The path `written` names for guest process `pid` (host pid of the calling thread), as the
/// guest sees it, resolved as the kernel resolves it: `follow_last` says whether a symlink in
/// the last component is followed (`open` without `O_NOFOLLOW`, `chmod`, `truncate`) or is
/// itself the object (`unlink`, `rename`, `mkdir`, `symlink`). A last component that does not
/// exist yet (a file being created) is joined to its resolved parent; a dangling symlink there
/// is followed to where the file would be created.
pub(super) fn resolve_in_guest(pid: u32, written: &str, follow_last: bool) -> Option<String> {
    let root = std::fs::File::open(format!("/proc/{pid}/root")).ok()?;
    let mut path = unmagic(pid, written)?;
    for _ in 0..MAX_DANGLING_HOPS {
        if let Some(real) = open_real(&root, &path, follow_last) {
            return Some(real);
        }
        let trimmed = path.trim_end_matches('/');
        let (parent, name) = trimmed.rsplit_once('/')?;
        if name.is_empty() || name == "." || name == ".." {
            return None;
        }
        let parent = open_real(&root, if parent.is_empty() { "/" } else { parent }, true)?;
        let joined = format!("{}/{name}", parent.trim_end_matches('/'));
        if !follow_last {
            return Some(joined);
        }
        // The last component may be a dangling symlink: an `O_CREAT` open creates its target.
        match dangling_target(&root, &joined) {
            Some(target) if target.starts_with('/') => path = unmagic(pid, &target)?,
            Some(target) => path = format!("{}/{target}", parent.trim_end_matches('/')),
            None => return Some(joined),
        }
    }
    None
}

/// Replaces a leading magic link of the process's own (`/proc/self/…`, `/dev/fd/…`) by the
/// guest path it points at, read from the host's `/proc/<pid>`. Other paths are unchanged.
fn unmagic(pid: u32, path: &str) -> Option<String> {
    let own = ["/proc/self/", "/proc/thread-self/"]
        .iter()
        .find_map(|p| path.strip_prefix(p).map(str::to_owned))
        .or_else(|| path.strip_prefix("/dev/fd/").map(|r| format!("fd/{r}")))
        .or_else(|| {
            [
                ("/dev/stdin", "fd/0"),
                ("/dev/stdout", "fd/1"),
                ("/dev/stderr", "fd/2"),
            ]
            .iter()
            .find_map(|(dev, fd)| {
                path.strip_prefix(dev)
                    .filter(|r| r.is_empty() || r.starts_with('/'))
                    .map(|r| format!("{fd}{r}"))
            })
        });
    let Some(rest) = own else {
        return Some(path.to_owned());
    };
    let (link, tail) = match rest.split_once('/') {
        Some(("fd", r)) => match r.split_once('/') {
            Some((n, t)) => (format!("fd/{n}"), t.to_owned()),
            None => (format!("fd/{r}"), String::new()),
        },
        Some((l, t)) => (l.to_owned(), t.to_owned()),
        None => (rest.clone(), String::new()),
    };
    let base = match link.as_str() {
        "root" => "/".to_owned(),
        "cwd" | "exe" => procfs::read_link(pid, &link).ok()?,
        l if l.starts_with("fd/") => procfs::read_link(pid, l).ok()?,
        // Any other file of the process's own /proc is a kernel interface, not a file.
        _ => return None,
    };
    // `pipe:[12]`, `socket:[3]`, `anon_inode:…`: not a path in any mount.
    if !base.starts_with('/') {
        return None;
    }
    Some(if tail.is_empty() {
        base
    } else {
        format!("{}/{tail}", base.trim_end_matches('/'))
    })
}

/// The real path of `path` opened inside `root`, as the guest sees it.
fn open_real(root: &std::fs::File, path: &str, follow_last: bool) -> Option<String> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !follow_last {
        flags |= OFlag::O_NOFOLLOW;
    }
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(root, path, how).ok()?;
    fd_path(&fd)
}

/// Our descriptor's path, printed relative to the guest's root (its mount namespace is not
/// ours, so the kernel stops at that root).
fn fd_path(fd: &OwnedFd) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The contents of `path` when it is a symlink (inside `root`), else `None`.
fn dangling_target(root: &std::fs::File, path: &str) -> Option<String> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(root, path, how).ok()?;
    let target = nix::fcntl::readlinkat(&fd, "").ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// One path argument as read.
pub(super) struct Seen {
    /// The absolute path by its text (joined to the cwd or dirfd, `.` and `..` removed), or
    /// what the argument is when it is no path (`pipe:[1]`, a symlink's contents).
    pub lexical: String,
    /// Whether `lexical` is an absolute path.
    pub is_path: bool,
    /// The absolute text to resolve as the kernel will (`..` after a symlink is the symlink
    /// target's parent, so it is not removed by text); `None` when there is nothing left to
    /// resolve (an fd's own path) or nothing to resolve at all.
    pub written: Option<String>,
}

/// Whether `op` follows a symlink in the path's last component (`flags_value` as for
/// [`super::syscalls::file_op`]): opens without `O_NOFOLLOW` (and not `O_CREAT|O_EXCL`), `creat`,
/// `truncate`, `chmod`, `chown` do; calls that change the name itself do not.
pub(super) fn follows_last(op: FileOp, flags_value: u64) -> bool {
    let has = |f: i32| flags_value & f as u64 != 0;
    match op {
        FileOp::OpenWrite => {
            let exclusive = has(libc::O_CREAT) && has(libc::O_EXCL);
            !(has(libc::O_NOFOLLOW) || exclusive)
        }
        FileOp::Creat | FileOp::Truncate | FileOp::Chmod | FileOp::Chown => true,
        _ => false,
    }
}

/// Reads one path argument and joins it to the guest's cwd or dirfd (read from
/// `/proc/<pid>/cwd` and `fd/N`, which are real paths already).
pub(super) fn read_path(
    mem: &GuestMem,
    pid: u32,
    args: &[u64; 6],
    which: PathArg,
) -> io::Result<Seen> {
    let fd_link = |fd: u64| -> io::Result<String> {
        // dirfds and fds are C ints: the kernel ignores the upper half.
        let fd = fd as u32 as i32;
        if fd == libc::AT_FDCWD {
            procfs::read_link(pid, "cwd")
        } else {
            procfs::read_link(pid, &format!("fd/{fd}"))
        }
    };
    let (base, rel) = match which {
        PathArg::Raw(i) => {
            return mem.read_cstr(super::arg(args, i)).map(|text| Seen {
                lexical: text,
                is_path: false,
                written: None,
            })
        }
        PathArg::Fd(i) => (fd_link(super::arg(args, i))?, String::new()),
        PathArg::At { dirfd, path } => {
            let rel = mem.read_cstr(super::arg(args, path))?;
            if rel.starts_with('/') {
                (String::new(), rel)
            } else {
                let dirfd = dirfd.map_or(libc::AT_FDCWD as u32 as u64, |d| super::arg(args, d));
                (fd_link(dirfd)?, rel)
            }
        }
    };
    let written = match (base.as_str(), rel.as_str()) {
        (_, "") => None,
        ("", rel) => Some(rel.to_owned()),
        (b, rel) if b.starts_with('/') => Some(format!("{}/{rel}", b.trim_end_matches('/'))),
        _ => None,
    };
    Ok(match procfs::resolve(Some(&base), &rel) {
        Some(p) => Seen {
            lexical: p,
            is_path: true,
            written,
        },
        None => Seen {
            lexical: if rel.is_empty() {
                base
            } else {
                format!("{base}/{rel}")
            },
            is_path: false,
            written: None,
        },
    })
}

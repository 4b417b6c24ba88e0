//! What the supervisor learns about a guest process from the host's `/proc/<pid>`: its
//! memory (syscall string and pointer arguments), `status` (guest pid, parent, uid),
//! `mountinfo` (which mount holds a path, and whether it is read-only) and the `cwd`, `exe` and
//! `fd/<n>` links (paths as the guest sees them).
//!
//! Parsers are pure functions over text and never panic on odd input; readers are thin. Does not
//! own: deciding what to emit (the parent module).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Longest path or argument string read from guest memory (`PATH_MAX`).
pub(super) const MAX_STRING: usize = 4096;
/// Most argv entries read for one exec.
pub(super) const MAX_ARGV: usize = 256;
/// Most argv entries counted for `argc` (the kernel's argument space, 2 MiB by default, holds
/// at most 256 Ki pointers).
pub(super) const MAX_ARGC_COUNTED: usize = 1 << 18;

/// An exec's argument vector as kept for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Argv {
    pub args: Vec<String>,
    /// The real number of arguments (counted up to [`MAX_ARGC_COUNTED`]).
    pub argc: usize,
    /// Entries or bytes were cut to the caps.
    pub truncated: bool,
}
const PAGE: u64 = 4096;

/// A guest process's memory, opened once per notification.
#[derive(Debug)]
pub(super) struct GuestMem(File);

impl GuestMem {
    pub(super) fn open(pid: u32) -> io::Result<Self> {
        File::open(format!("/proc/{pid}/mem")).map(Self)
    }

    /// A NUL-terminated string at `addr`, read page by page so a string that ends just before
    /// an unmapped page is still read; at most [`MAX_STRING`] bytes.
    pub(super) fn read_cstr(&self, addr: u64) -> io::Result<String> {
        self.read_cstr_capped(addr).map(|(s, _)| s)
    }

    /// [`GuestMem::read_cstr`], and whether the string went on past [`MAX_STRING`].
    fn read_cstr_capped(&self, addr: u64) -> io::Result<(String, bool)> {
        if addr == 0 {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < MAX_STRING {
            let to_page_end = PAGE - at % PAGE;
            let want = (to_page_end as usize).min(MAX_STRING - out.len());
            let mut buf = vec![0u8; want];
            let n = self.0.read_at(&mut buf, at)?;
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::EFAULT));
            }
            if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..end]);
                return Ok((String::from_utf8_lossy(&out).into_owned(), false));
            }
            out.extend_from_slice(&buf[..n]);
            at = at
                .checked_add(n as u64)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        }
        // Exactly MAX_STRING bytes and its NUL: nothing was cut.
        let mut next = [0u8; 1];
        let ends_here = self
            .0
            .read_at(&mut next, at)
            .is_ok_and(|n| n == 1 && next[0] == 0);
        // Longer than PATH_MAX: the kernel refuses such a path (ENAMETOOLONG); keep the prefix.
        Ok((String::from_utf8_lossy(&out).into_owned(), !ends_here))
    }

    pub(super) fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        self.0.read_exact_at(&mut buf, addr)?;
        Ok(u64::from_ne_bytes(buf))
    }

    /// The NULL-terminated argv array at `addr`: at most [`MAX_ARGV`] entries of at most
    /// [`MAX_STRING`] bytes (a NULL array is empty, as Linux treats it), with the real count
    /// (up to [`MAX_ARGC_COUNTED`]) and whether anything was cut.
    pub(super) fn read_argv(&self, addr: u64) -> io::Result<Argv> {
        let mut argv = Argv::default();
        if addr == 0 {
            return Ok(argv);
        }
        for i in 0..MAX_ARGV as u64 {
            let ptr = self.read_u64(addr.wrapping_add(i * 8))?;
            if ptr == 0 {
                argv.argc = argv.args.len();
                return Ok(argv);
            }
            let (arg, cut) = self.read_cstr_capped(ptr)?;
            argv.truncated |= cut;
            argv.args.push(arg);
        }
        // More entries than kept: count the rest, a page of pointers per read.
        let mut count = MAX_ARGV;
        let mut page = [0u8; PAGE as usize];
        'count: while count < MAX_ARGC_COUNTED {
            let at = addr.wrapping_add(count as u64 * 8);
            let n = self.0.read_at(&mut page, at)?;
            if n < 8 {
                break;
            }
            for ptr in page[..n - n % 8].chunks_exact(8) {
                if ptr.iter().all(|b| *b == 0) {
                    break 'count;
                }
                count += 1;
            }
        }
        argv.argc = count;
        argv.truncated |= count > MAX_ARGV;
        Ok(argv)
    }
}

/// `readlink(/proc/<pid>/<what>)` as a string (lossy UTF-8).
pub(super) fn read_link(pid: u32, what: &str) -> io::Result<String> {
    std::fs::read_link(format!("/proc/{pid}/{what}")).map(|p| p.to_string_lossy().into_owned())
}

/// The fields of `/proc/<pid>/status` the audit log needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Status {
    /// Pid in each pid namespace, outermost first (`NSpid:`).
    pub nspid: Vec<i32>,
    /// The thread group's (process's) pid in each pid namespace (`NStgid:`): differs from
    /// `nspid` for a thread that is not the leader.
    pub nstgid: Vec<i32>,
    /// Parent's pid in the reader's namespace (`PPid:`).
    pub ppid: Option<i32>,
    /// Real uid (`Uid:`).
    pub uid: Option<u32>,
}

impl Status {
    pub(super) fn read(pid: u32) -> io::Result<Self> {
        std::fs::read_to_string(format!("/proc/{pid}/status")).map(|t| Self::parse(&t))
    }

    pub(super) fn parse(text: &str) -> Self {
        let mut s = Status::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let mut fields = value.split_whitespace();
            match key {
                "NSpid" => s.nspid = fields.filter_map(|f| f.parse().ok()).collect(),
                "NStgid" => s.nstgid = fields.filter_map(|f| f.parse().ok()).collect(),
                "PPid" => s.ppid = fields.next().and_then(|f| f.parse().ok()),
                "Uid" => s.uid = fields.next().and_then(|f| f.parse().ok()),
                _ => {}
            }
        }
        s
    }

    /// The pid as the process's own (innermost) namespace sees it.
    pub(super) fn guest_pid(&self) -> Option<i32> {
        self.nspid.last().copied()
    }

    /// The process's pid (its thread group's) as its own namespace sees it; the thread's pid
    /// when the kernel did not say.
    pub(super) fn guest_tgid(&self) -> Option<i32> {
        self.nstgid.last().copied().or_else(|| self.guest_pid())
    }

    /// The process's pid in the outermost (our) namespace.
    pub(super) fn host_tgid(&self) -> Option<u32> {
        self.nstgid.first().and_then(|p| u32::try_from(*p).ok())
    }
}

/// The parent's pid as the child's namespace sees it: the parent's innermost pid when it lives
/// at the same namespace depth (a parent is always in the same or an outer namespace, so equal
/// depth means the same one), else 0 (the guest's PID 1, whose parent is outside).
pub(super) fn guest_ppid(child: &Status, parent: &Status) -> i32 {
    if !child.nspid.is_empty() && parent.nspid.len() == child.nspid.len() {
        parent.guest_pid().unwrap_or(0)
    } else {
        0
    }
}

/// One line of `mountinfo`: where it is mounted and whether writes there fail with `EROFS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    pub point: String,
    pub read_only: bool,
}

/// Parses `/proc/<pid>/mountinfo` (mount points as that process sees them, in mount order).
/// Malformed lines are skipped.
pub(super) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mount_line).collect()
}

fn parse_mount_line(line: &str) -> Option<Mount> {
    // id parent maj:min root point options [optional...] - fstype source super-options
    let fields: Vec<&str> = line.split(' ').collect();
    let point = fields.get(4)?;
    let options = fields.get(5)?;
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let super_options = fields.get(sep + 3).copied().unwrap_or("");
    let has_ro = |opts: &str| opts.split(',').any(|o| o == "ro");
    Some(Mount {
        point: unescape_octal(point),
        read_only: has_ro(options) || has_ro(super_options),
    })
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash in mountinfo.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let digits = b.get(i + 1..i + 4);
        match digits {
            Some(d) if b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path`: the longest mount point that is `path` or one of its ancestors;
/// among equal points the last (topmost) one.
pub(super) fn mount_for<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| is_within(path, &m.point))
        .fold(None, |best: Option<&Mount>, m| match best {
            Some(b) if b.point.len() > m.point.len() => Some(b),
            _ => Some(m),
        })
}

/// Whether `path` is `dir` or below it, component-wise (`/a/bc` is not within `/a/b`).
pub(crate) fn is_within(path: &str, dir: &str) -> bool {
    if dir == "/" {
        return path.starts_with('/');
    }
    let dir = dir.trim_end_matches('/');
    match path.strip_prefix(dir) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Joins `rel` onto the absolute directory `base` (ignored when `rel` is absolute) and removes
/// `.`, `..` and repeated slashes lexically. `None` when there is no absolute base to join to
/// (e.g. `base` is `pipe:[123]`).
pub(super) fn resolve(base: Option<&str>, rel: &str) -> Option<String> {
    let joined = if rel.starts_with('/') {
        rel.to_owned()
    } else {
        let base = base.filter(|b| b.starts_with('/'))?;
        if rel.is_empty() {
            base.to_owned()
        } else {
            format!("{base}/{rel}")
        }
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Device nodes and kernel interfaces on writable mounts: writing `/dev/null` or `/proc/self/…`
/// is not a file write. `/dev/shm` and `/dev/mqueue` hold real, guest-created objects.
pub(super) fn is_pseudo(path: &str) -> bool {
    if is_within(path, "/dev/shm") || is_within(path, "/dev/mqueue") {
        return false;
    }
    is_within(path, "/dev") || is_within(path, "/proc") || is_within(path, "/sys")
}

#[cfg(test)]
#[path = "procfs_tests.rs"]
mod tests;

/// Whether absolute `path` exists in the filesystem of guest process `pid`, resolved the way
/// the guest would (symlinks stay inside its root: `RESOLVE_IN_ROOT`). `None` when unknowable.
/// The real path (symlinks resolved as the kernel resolves them for `pid`, inside its root) of
/// the file `path` names for `pid`, as the guest sees it; `None` when it cannot be opened.
/// `/proc/self/…` and `/dev/fd/…` name the caller's own files, so they are resolved through
/// the host's view of `pid` (`/proc/<pid>/…`): an exec of `/proc/self/fd/3` is an exec of
/// whatever that descriptor is.
pub fn real_path_in_guest(pid: u32, path: &str) -> Option<String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let own = path
        .strip_prefix("/proc/self/")
        .or_else(|| path.strip_prefix("/proc/thread-self/"))
        .map(|rest| format!("/proc/{pid}/{rest}"))
        .or_else(|| {
            path.strip_prefix("/dev/fd/")
                .map(|rest| format!("/proc/{pid}/fd/{rest}"))
        });
    let fd: std::os::fd::OwnedFd = match own {
        Some(host_path) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(host_path)
            .ok()?
            .into(),
        None => {
            let root = std::fs::File::open(format!("/proc/{pid}/root")).ok()?;
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT);
            openat2(&root, path, how).ok()?
        }
    };
    // Our descriptor's path, printed relative to the guest's root (its mount namespace is not
    // ours, so the kernel stops at that root).
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether `path` is a directory for `pid` (inside its root; symlinks not followed at the
/// end, as rename does not follow them). `false` when it cannot be told.
pub fn is_dir_in_guest(pid: u32, path: &str) -> bool {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let Ok(root) = std::fs::File::open(format!("/proc/{pid}/root")) else {
        return false;
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(&root, path, how)
        .ok()
        .and_then(|fd| nix::sys::stat::fstat(&fd).ok())
        .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

pub fn exists_in_guest(pid: u32, path: &str) -> Option<bool> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let root = std::fs::File::open(format!("/proc/{pid}/root")).ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(&root, path, how) {
        Ok(_) => Some(true),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => Some(false),
        Err(_) => None,
    }
}

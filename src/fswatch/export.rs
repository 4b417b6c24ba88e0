//! The exported workspace: what the guest left, copied into the run folder so that a reviewer
//! who opens, follows or runs it on the host (often as root) touches nothing but copies.
//!
//! Owns: [`export`], which copies a tree walking from directory descriptors (see `walk`) and
//! never following a link (the sandbox calls it on the held tmpfs workspace), and
//! [`finish_workspace`], which replaces a workspace that is a plain directory with its export
//! in place. The neutralisations:
//! - a symlink becomes a regular 0600 file `NAME.idagent-symlink` holding the link's target
//!   bytes (so `cat` shows where it pointed, and nothing follows it);
//! - setuid, setgid and sticky bits and group/other write bits are stripped from every mode;
//! - FIFOs, sockets and device nodes are not copied;
//! - hard links become separate files (the reviewer editing one cannot change another);
//! - sparse files stay sparse (holes are not copied as data).
//!
//! Each kind is counted in one `workspace_exported` notice; the watcher's `file` records name
//! each entry. Does not own: the live workspace's mount, or watching it (see `fswatch`).

use super::walk::{self, Cut, DirStack, Step, Visitor, WalkLimits};
use crate::audit::{AuditSink, EventBody, Notice};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::Whence;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Appended to a symlink's name for the regular file that holds its target.
pub const SYMLINK_SUFFIX: &str = ".idagent-symlink";
/// Where [`finish_workspace`] builds the export, beside the workspace, before the swap.
pub const STAGING_DIR: &str = ".workspace-export";
/// Data bytes copied at most (holes are free); files beyond are copied empty.
pub const MAX_EXPORT_BYTES: u64 = 8 << 30;
/// Entries examined at most.
pub const MAX_EXPORT_ENTRIES: u64 = 1 << 20;
/// The `what` of the one summary notice of an export (bookkeeping, not an observation).
pub const EXPORTED_NOTICE: &str = "workspace_exported";
/// Paths named as examples in the summary notice.
const EXAMPLES: usize = 5;
/// Mode bits never exported: setuid, setgid, sticky, group and other write.
const UNSAFE_BITS: u32 = 0o7022;
const COPY_CHUNK: usize = 256 << 10;

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub files: u64,
    pub dirs: u64,
    /// Data bytes copied.
    pub bytes: u64,
    /// Symlinks written as `NAME.idagent-symlink` files.
    pub symlinks: u64,
    /// FIFOs, sockets and device nodes left out.
    pub specials: u64,
    /// Entries whose mode lost setuid/setgid/sticky or group/other write bits.
    pub modes_stripped: u64,
    /// Files with more than one link, exported as separate copies.
    pub hard_links: u64,
    /// Entries that could not be copied (named in the notice's examples).
    pub errors: u64,
    /// Why the export stopped early, if it did.
    pub cut: Option<String>,
    /// A few guest paths of neutralised entries, for the notice and the report.
    pub examples: Vec<String>,
}

/// The export could not start; the source is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("open workspace {path}: {source}")]
    OpenSource { path: PathBuf, source: Errno },
    #[error("create export directory {path}: {source}")]
    CreateDest { path: PathBuf, source: Errno },
    #[error("replace workspace {path} with its export: {source}")]
    Swap {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Copies the tree at `src` into the new directory `dst` (which must not exist), neutralised
/// as the module says, until `deadline`; writes one `workspace_exported` notice to `sink`.
pub fn export(
    src: &Path,
    dst: &Path,
    sink: &AuditSink,
    deadline: Instant,
) -> Result<ExportSummary, ExportError> {
    let src_fd = walk::open_dir(src).map_err(|source| ExportError::OpenSource {
        path: src.to_owned(),
        source,
    })?;
    let create = |source| ExportError::CreateDest {
        path: dst.to_owned(),
        source,
    };
    nix::unistd::mkdir(dst, Mode::from_bits_truncate(0o700)).map_err(create)?;
    let dst_fd = walk::open_dir(dst).map_err(create)?;
    let root_mode = fstat(&src_fd).map_or(0o755, |st| st.st_mode & 0o7777);
    let mut ex = Exporter {
        dst: DirStack::new(dst_fd).map_err(create)?,
        next_dst: None,
        modes: vec![root_mode],
        bytes_left: MAX_EXPORT_BYTES,
        deadline,
        sum: ExportSummary::default(),
    };
    let limits = WalkLimits {
        deadline: Some(deadline),
        max_entries: MAX_EXPORT_ENTRIES,
    };
    let w = walk::walk(src_fd, Path::new(""), 0, limits, &mut ex);
    if let Some(cut) = w.cut {
        let at = guest_path(w.cut_at.as_deref().unwrap_or(Path::new("")));
        let why = match cut {
            Cut::Deadline => "the export deadline passed".to_owned(),
            Cut::EntryCap => format!("the cap of {MAX_EXPORT_ENTRIES} entries was reached"),
            Cut::Lost(e) => format!("a directory could not be reopened ({e})"),
        };
        ex.sum.cut.get_or_insert(format!(
            "{why}; {} listed entries not exported, first unfinished directory {at}",
            w.left
        ));
    }
    let sum = ex.sum;
    sink.emit(EventBody::Notice(Notice {
        what: EXPORTED_NOTICE.into(),
        detail: summary_detail(&sum),
    }));
    Ok(sum)
}

/// Replaces the live `workspace` with its neutralised export: export to [`STAGING_DIR`]
/// beside it, remove the original, rename the export into its place. When the original
/// cannot be removed it is kept beside the export as `.workspace-unexported` with mode 0000.
pub fn finish_workspace(
    workspace: &Path,
    sink: &AuditSink,
    deadline: Instant,
) -> Result<ExportSummary, ExportError> {
    let parent = workspace.parent().unwrap_or(Path::new("."));
    let staging = parent.join(STAGING_DIR);
    let sum = export(workspace, &staging, sink, deadline)?;
    let swap = |source| ExportError::Swap {
        path: workspace.to_owned(),
        source,
    };
    if let Err(e) = std::fs::remove_dir_all(workspace) {
        let kept = parent.join(".workspace-unexported");
        std::fs::rename(workspace, &kept).map_err(swap)?;
        let _ = nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &kept,
            Mode::empty(),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        );
        sink.emit(EventBody::Notice(Notice {
            what: "workspace_export_leftover".into(),
            detail: format!(
                "the original workspace could not be removed ({e}); kept as {} with mode 0000",
                kept.display()
            ),
        }));
    }
    std::fs::rename(&staging, workspace).map_err(swap)?;
    Ok(sum)
}

fn summary_detail(s: &ExportSummary) -> String {
    let mut d = format!(
        "{} files ({} bytes), {} directories; {} symlinks written as *{SYMLINK_SUFFIX} files, \
         {} modes stripped of setuid/setgid/sticky/group-or-other write, {} hard-linked files \
         copied separately, {} fifos/sockets/devices left out, {} errors",
        s.files, s.bytes, s.dirs, s.symlinks, s.modes_stripped, s.hard_links, s.specials, s.errors
    );
    if !s.examples.is_empty() {
        d.push_str(&format!("; e.g. {}", s.examples.join(", ")));
    }
    if let Some(cut) = &s.cut {
        d.push_str(&format!("; cut short: {cut}"));
    }
    d
}

fn guest_path(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        crate::GUEST_WORKSPACE.to_owned()
    } else {
        format!("{}/{}", crate::GUEST_WORKSPACE, rel.to_string_lossy())
    }
}

struct Exporter {
    /// The export's directories, in step with the walk's.
    dst: DirStack,
    /// The directory just created for the entry the walk is about to enter.
    next_dst: Option<OwnedFd>,
    /// Source modes of the directories entered, applied (made safe) when each is left.
    modes: Vec<u32>,
    bytes_left: u64,
    deadline: Instant,
    sum: ExportSummary,
}

impl Exporter {
    fn example(&mut self, rel: &Path, what: &str) {
        if self.sum.examples.len() < EXAMPLES {
            self.sum
                .examples
                .push(format!("{} ({what})", guest_path(rel)));
        }
    }

    /// Strips the unsafe bits from `mode`, counting (and naming) the entry when it had any.
    fn safe_mode(&mut self, rel: &Path, mode: u32) -> Mode {
        if mode & UNSAFE_BITS != 0 {
            self.sum.modes_stripped += 1;
            self.example(rel, &format!("mode {:04o}", mode & 0o7777));
        }
        Mode::from_bits_truncate(mode & 0o777 & !UNSAFE_BITS)
    }

    fn failed(&mut self, rel: &Path, e: Errno) {
        self.sum.errors += 1;
        self.example(rel, &format!("not exported: {e}"));
    }

    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
    ) -> Result<(), Errno> {
        let src = super::tree::open_regular_at(dir, name)?;
        let out = self.create(name.to_owned())?;
        if st.st_nlink > 1 {
            self.sum.hard_links += 1;
        }
        let size = st.st_size;
        let copied = copy_sparse(&src, &out, &mut self.bytes_left, self.deadline);
        self.sum.bytes += copied.bytes;
        if let Some(why) = copied.cut {
            self.sum
                .cut
                .get_or_insert(format!("{why} while copying {}", guest_path(rel)));
        }
        nix::unistd::ftruncate(&out, if copied.cut.is_some() { 0 } else { size })?;
        fchmod(&out, self.safe_mode(rel, st.st_mode & 0o7777))?;
        self.sum.files += 1;
        copied.error.map_or(Ok(()), Err)
    }

    fn symlink(&mut self, dir: &OwnedFd, name: &OsStr, rel: &Path) -> Result<(), Errno> {
        let target = nix::fcntl::readlinkat(dir, name)?;
        let mut file_name = name.to_owned();
        file_name.push(SYMLINK_SUFFIX);
        let out = self.create(file_name)?;
        write_all(&out, target.as_bytes())?;
        self.sum.symlinks += 1;
        let shown = String::from_utf8_lossy(target.as_bytes());
        let shown: String = shown.chars().take(80).collect();
        self.example(rel, &format!("symlink to {shown}"));
        Ok(())
    }

    /// A new 0600 file in the current export directory; never follows or reuses an entry.
    fn create(&mut self, name: OsString) -> Result<OwnedFd, Errno> {
        let dir = self.dst.top().ok_or(Errno::EBADF)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        openat(
            dir,
            name.as_os_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )
    }
}

impl Visitor for Exporter {
    fn enter(&mut self, _rel: &Path, fd: &OwnedFd, _depth: usize) {
        if let Some(next) = self.next_dst.take() {
            if self.dst.push(next).is_ok() {
                self.modes
                    .push(fstat(fd).map_or(0o755, |st| st.st_mode & 0o7777));
            }
        }
    }

    fn entry(&mut self, dir: &OwnedFd, name: &OsStr, rel: &Path, st: &FileStat, _: usize) -> Step {
        let result = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => {
                let made = self.dst.top().ok_or(Errno::EBADF).and_then(|top| {
                    mkdirat(top, name, Mode::from_bits_truncate(0o700))?;
                    openat(
                        top,
                        name,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                });
                match made {
                    Ok(fd) => {
                        self.next_dst = Some(fd);
                        self.sum.dirs += 1;
                        return Step::Descend;
                    }
                    Err(e) => Err(e),
                }
            }
            SFlag::S_IFREG => self.file(dir, name, rel, st),
            SFlag::S_IFLNK => self.symlink(dir, name, rel),
            _ => {
                self.sum.specials += 1;
                self.example(rel, "special file left out");
                Ok(())
            }
        };
        if let Err(e) = result {
            self.failed(rel, e);
        }
        Step::Skip
    }

    fn leave(&mut self, rel: &Path, _complete: bool) {
        let mode = self.modes.pop().unwrap_or(0o755);
        let safe = self.safe_mode(rel, mode);
        if let Some(top) = self.dst.top() {
            // The owner keeps access so the export can be read and removed.
            let _ = fchmod(top, safe | Mode::S_IRWXU);
        }
        if !rel.as_os_str().is_empty() {
            if let Err(e) = self.dst.pop() {
                self.failed(rel, e);
            }
        }
    }
}

struct Copied {
    bytes: u64,
    cut: Option<&'static str>,
    error: Option<Errno>,
}

/// Copies the data extents of `src` to `dst` (holes stay holes), within `left` bytes and the
/// deadline. The caller sets the final length with `ftruncate`.
fn copy_sparse(src: &OwnedFd, dst: &OwnedFd, left: &mut u64, deadline: Instant) -> Copied {
    let mut c = Copied {
        bytes: 0,
        cut: None,
        error: None,
    };
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut off: i64 = 0;
    loop {
        let start = match nix::unistd::lseek(src, off, Whence::SeekData) {
            Ok(s) => s,
            Err(Errno::ENXIO) => return c, // no data after `off`
            Err(e) => {
                c.error = Some(e);
                return c;
            }
        };
        let end = match nix::unistd::lseek(src, start, Whence::SeekHole) {
            Ok(e) => e,
            Err(e) => {
                c.error = Some(e);
                return c;
            }
        };
        let mut pos = start;
        while pos < end {
            if Instant::now() >= deadline {
                c.cut = Some("the export deadline passed");
                return c;
            }
            let want = usize::try_from(end - pos)
                .unwrap_or(COPY_CHUNK)
                .min(COPY_CHUNK);
            if (want as u64) > *left {
                c.cut = Some("the export byte cap was reached");
                return c;
            }
            let Some(chunk) = buf.get_mut(..want) else {
                return c;
            };
            let n = match nix::sys::uio::pread(src, chunk, pos) {
                Ok(0) => return c, // shrank meanwhile
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    c.error = Some(e);
                    return c;
                }
            };
            if let Err(e) = pwrite_all(dst, buf.get(..n).unwrap_or_default(), pos) {
                c.error = Some(e);
                return c;
            }
            pos += n as i64;
            c.bytes += n as u64;
            *left -= n as u64;
        }
        off = end;
    }
}

fn pwrite_all(fd: &OwnedFd, mut data: &[u8], mut pos: i64) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::sys::uio::pwrite(fd, data, pos) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => {
                data = data.get(n..).unwrap_or_default();
                pos += n as i64;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_all(fd: &OwnedFd, data: &[u8]) -> Result<(), Errno> {
    pwrite_all(fd, data, 0)
}

#[cfg(test)]
mod tests;

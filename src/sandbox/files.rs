//! Host-side file chores of a run: seeding the workspace (owned by the guest user), and copying the guest's
//! output to the terminal and the run folder.
//!
//! The output copy owns two protections of the operator: each stream is capped in bytes
//! (`stdout.log`, `stderr.log` and the terminal alike, one `output_cap` notice when reached,
//! one `output_dropped` notice with the count at the end), and when idagent's own stream is a
//! terminal the guest's control characters are shown escaped ([`TermEscaper`]) so a guest
//! cannot retitle the window, clear the screen or write the clipboard (OSC 52). The logs keep
//! the raw bytes.

use crate::audit::{AuditSink, EventBody, Notice};
use crate::runtime::Output;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Notice when a stream reaches its cap.
pub(crate) const OUTPUT_CAP_NOTICE: &str = "output_cap";
/// Notice at the end with the bytes dropped after the cap.
pub(crate) const OUTPUT_DROPPED_NOTICE: &str = "output_dropped";

/// One of the guest's streams on its way to our terminal and its log.
struct Stream {
    name: &'static str,
    log: Option<tokio::fs::File>,
    /// `Some` when our own stream is a terminal.
    escaper: Option<TermEscaper>,
    kept: u64,
    dropped: u64,
}

impl Stream {
    /// Writes what of `data` fits under `cap` to the log and `term`; the rest is counted.
    async fn write(
        &mut self,
        data: &[u8],
        term: &mut (dyn AsyncWrite + Unpin + Send),
        cap: u64,
        audit: Option<&AuditSink>,
    ) {
        let room = usize::try_from(cap.saturating_sub(self.kept)).unwrap_or(usize::MAX);
        let (keep, over) = data.split_at(data.len().min(room));
        if !keep.is_empty() {
            self.kept += keep.len() as u64;
            if let Some(f) = &mut self.log {
                let _ = f.write_all(keep).await;
            }
            let _ = match &mut self.escaper {
                Some(e) => term.write_all(e.escape(keep).as_bytes()).await,
                None => term.write_all(keep).await,
            };
            let _ = term.flush().await;
        }
        if !over.is_empty() {
            if self.dropped == 0 {
                let detail = format!(
                    "{} reached its cap of {cap} bytes: the rest is dropped from {}.log and the terminal",
                    self.name, self.name
                );
                match audit {
                    Some(audit) => audit.emit(EventBody::Notice(Notice {
                        what: OUTPUT_CAP_NOTICE.into(),
                        detail,
                    })),
                    None => eprintln!("idagent: {detail}"),
                }
            }
            self.dropped += over.len() as u64;
        }
    }

    async fn finish(
        &mut self,
        term: &mut (dyn AsyncWrite + Unpin + Send),
        audit: Option<&AuditSink>,
    ) {
        if let Some(rest) = self.escaper.as_mut().map(TermEscaper::finish) {
            let _ = term.write_all(rest.as_bytes()).await;
            let _ = term.flush().await;
        }
        if self.dropped > 0 {
            let detail = format!(
                "{}: {} bytes dropped after the cap ({} kept)",
                self.name, self.dropped, self.kept
            );
            match audit {
                Some(audit) => audit.emit(EventBody::Notice(Notice {
                    what: OUTPUT_DROPPED_NOTICE.into(),
                    detail,
                })),
                None => eprintln!("idagent: {detail}"),
            }
        }
    }
}

/// Copies the guest's output to our stdout/stderr and to `stdout.log`/`stderr.log`, at most
/// `cap` bytes of each stream.
pub(crate) async fn forward_output(
    mut rx: tokio::sync::mpsc::Receiver<Output>,
    run_dir: PathBuf,
    audit: Option<AuditSink>,
    cap: u64,
) {
    let open = |name: &str| {
        let path = run_dir.join(name);
        // Owner-only: the guest's output is as sensitive as the log.
        async move {
            tokio::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .await
                .ok()
        }
    };
    let stream = |name, log, tty: bool| Stream {
        name,
        log,
        escaper: tty.then(TermEscaper::default),
        kept: 0,
        dropped: 0,
    };
    let mut out = stream(
        "stdout",
        open("stdout.log").await,
        std::io::stdout().is_terminal(),
    );
    let mut err = stream(
        "stderr",
        open("stderr.log").await,
        std::io::stderr().is_terminal(),
    );
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    while let Some(chunk) = rx.recv().await {
        match &chunk {
            Output::Stdout(d) => out.write(d, &mut stdout, cap, audit.as_ref()).await,
            Output::Stderr(d) => err.write(d, &mut stderr, cap, audit.as_ref()).await,
        }
    }
    out.finish(&mut stdout, audit.as_ref()).await;
    err.finish(&mut stderr, audit.as_ref()).await;
}

/// Makes guest output inert for a terminal: C0 controls but `\n` and `\t`, DEL and C1
/// controls (U+0080–U+009F) become visible `\x1b` / `\u{9b}`, bytes that are not UTF-8 become
/// `\xNN`; valid text passes unchanged, also when a character is split across chunks.
#[derive(Debug, Default)]
pub(super) struct TermEscaper {
    /// The start of a character cut by the chunk's end (at most 3 bytes).
    pending: Vec<u8>,
}

impl TermEscaper {
    pub(super) fn escape(&mut self, data: &[u8]) -> String {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(data);
        let mut out = String::with_capacity(input.len());
        let mut rest = input.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    push_visible(&mut out, text);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    push_visible(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                        Some(n) => {
                            let (bad, next) = after.split_at(n.min(after.len()));
                            for b in bad {
                                out.push_str(&format!("\\x{b:02x}"));
                            }
                            rest = next;
                        }
                    }
                }
            }
        }
        out
    }

    /// A character still cut at the end of the stream, as `\xNN`.
    pub(super) fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
            .iter()
            .map(|b| format!("\\x{b:02x}"))
            .collect()
    }
}

fn push_visible(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            '\u{80}'..='\u{9f}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            _ => out.push(c),
        }
    }
}

/// What [`seed_tree`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Seeded {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
}

/// Copies the tree at `from` into the open directory `to`, every entry owned by `uid:gid`:
/// regular files (data and permission bits), directories and symlinks; FIFOs, sockets and
/// devices are left out. One pass: each entry is created relative to its parent's descriptor
/// and owned through the descriptor it was created with (no second walk to chown, no path
/// resolved twice), and file data moves through one reused buffer: a read and a write for a
/// small file, where `std::io::copy` spent two `statx`, a `copy_file_range` that fails across
/// filesystems and two `sendfile`s.
///
/// The seed is the operator's, not the guest's, but names are still created with
/// `O_EXCL | O_NOFOLLOW` so nothing in the workspace is written through a link. Each level
/// of the tree holds two descriptors while below it: a seed deeper than the process's
/// descriptor limit fails with `EMFILE` rather than being half copied silently.
pub(super) fn seed_tree(from: &Path, to: &OwnedFd, uid: u32, gid: u32) -> std::io::Result<Seeded> {
    let src = nix::fcntl::open(from, DIR_FLAGS.difference(OFlag::O_NOFOLLOW), Mode::empty())?;
    let mut seeded = Seeded::default();
    let mut buf = vec![0u8; COPY_BUF];
    copy_dir(&src, to, (uid, gid), &mut buf, &mut seeded)?;
    Ok(seeded)
}

/// The buffer file data is copied through.
const COPY_BUF: usize = 256 << 10;

/// Copies what `src` holds to `dst` (both at offset 0); returns the bytes.
fn copy_data(src: OwnedFd, dst: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match nix::unistd::read(&src, buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut chunk = buf.get(..n).unwrap_or_default();
        while !chunk.is_empty() {
            match nix::unistd::write(dst, chunk) {
                Ok(w) => chunk = chunk.get(w..).unwrap_or_default(),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        total += n as u64;
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn copy_dir(
    src: &OwnedFd,
    dst: &OwnedFd,
    owner: (u32, u32),
    buf: &mut [u8],
    seeded: &mut Seeded,
) -> std::io::Result<()> {
    use nix::sys::stat::{fchmod, fstat, mkdirat};
    use nix::unistd::{fchown, fchownat, symlinkat};
    let uid = Some(nix::unistd::Uid::from_raw(owner.0));
    let gid = Some(nix::unistd::Gid::from_raw(owner.1));
    // Listed in full first (the kind comes from the directory itself, no stat per entry),
    // so the listing's descriptor is closed before descending.
    let entries: Vec<(OsString, std::fs::FileType)> =
        std::fs::read_dir(format!("/proc/self/fd/{}", src.as_raw_fd()))?
            .map(|e| e.and_then(|e| Ok((e.file_name(), e.file_type()?))))
            .collect::<std::io::Result<_>>()?;
    for (name, kind) in entries {
        let name = name.as_os_str();
        if kind.is_dir() {
            // Created with the default mode, as `create_dir` did: the seed's own directory
            // modes are not carried over.
            mkdirat(dst, name, Mode::from_bits_truncate(0o777))?;
            let d = nix::fcntl::openat(dst, name, DIR_FLAGS, Mode::empty())?;
            fchown(&d, uid, gid)?;
            let s = nix::fcntl::openat(src, name, DIR_FLAGS, Mode::empty())?;
            seeded.dirs += 1;
            copy_dir(&s, &d, owner, buf, seeded)?;
        } else if kind.is_symlink() {
            let target = nix::fcntl::readlinkat(src, name)?;
            symlinkat(target.as_os_str(), dst, name)?;
            fchownat(dst, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            seeded.links += 1;
        } else if kind.is_file() {
            let s = nix::fcntl::openat(
                src,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let mode = Mode::from_bits_truncate(fstat(&s)?.st_mode & 0o7777);
            let d = nix::fcntl::openat(
                dst,
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )?;
            seeded.bytes += copy_data(s, d.as_fd(), buf)?;
            // Mode, then owner: as a copy followed by a chown did, the kernel clears the
            // setuid/setgid bits when the owner changes.
            fchmod(&d, mode)?;
            fchown(&d, uid, gid)?;
            seeded.files += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TermEscaper;

    #[test]
    fn controls_are_shown_and_text_is_kept() {
        let mut e = TermEscaper::default();
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}]52;c;ZXZpbA==\u{7}ok\r\n\tdel\u{7f} csi\u{9b}31m é日\n";
        let out = e.escape(hostile.as_bytes());
        assert_eq!(
            out,
            "\\x1b]0;pwned\\x07\\x1b[2J\\x1b]52;c;ZXZpbA==\\x07ok\\x0d\n\tdel\\x7f csi\\u{9b}31m é日\n"
        );
        assert!(!out.bytes().any(|b| b < 0x20 && b != b'\n' && b != b'\t'));
        assert_eq!(e.finish(), "");
    }

    #[test]
    fn characters_split_across_chunks_stay_whole() {
        let text = "aé日😀z";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut e = TermEscaper::default();
            let (a, b) = bytes.split_at(cut);
            let out = e.escape(a) + &e.escape(b) + &e.finish();
            assert_eq!(out, text, "cut at {cut}");
        }
        // Byte by byte, too; a C1 control split in two is still escaped.
        let mut e = TermEscaper::default();
        let out: String = "x\u{9b}y".bytes().map(|b| e.escape(&[b])).collect();
        assert_eq!(out, "x\\u{9b}y");
    }

    #[test]
    fn invalid_bytes_are_shown_and_a_cut_end_is_flushed() {
        let mut e = TermEscaper::default();
        assert_eq!(e.escape(b"a\xffb\xe6\x97"), "a\\xffb");
        assert_eq!(e.finish(), "\\xe6\\x97");
        assert_eq!(e.escape(b"\xe6x"), "\\xe6x");
    }
}

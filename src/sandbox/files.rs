//! Host-side file chores of a run: seeding and owning the workspace, and copying the guest's
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
use std::io::IsTerminal;
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
        audit: &AuditSink,
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
                audit.emit(EventBody::Notice(Notice {
                    what: OUTPUT_CAP_NOTICE.into(),
                    detail: format!(
                        "{} reached its cap of {cap} bytes: the rest is dropped from {}.log and the terminal",
                        self.name, self.name
                    ),
                }));
            }
            self.dropped += over.len() as u64;
        }
    }

    async fn finish(&mut self, term: &mut (dyn AsyncWrite + Unpin + Send), audit: &AuditSink) {
        if let Some(rest) = self.escaper.as_mut().map(TermEscaper::finish) {
            let _ = term.write_all(rest.as_bytes()).await;
            let _ = term.flush().await;
        }
        if self.dropped > 0 {
            audit.emit(EventBody::Notice(Notice {
                what: OUTPUT_DROPPED_NOTICE.into(),
                detail: format!(
                    "{}: {} bytes dropped after the cap ({} kept)",
                    self.name, self.dropped, self.kept
                ),
            }));
        }
    }
}

/// Copies the guest's output to our stdout/stderr and to `stdout.log`/`stderr.log`, at most
/// `cap` bytes of each stream.
pub(super) async fn forward_output(
    mut rx: tokio::sync::mpsc::Receiver<Output>,
    run_dir: PathBuf,
    audit: AuditSink,
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
            Output::Stdout(d) => out.write(d, &mut stdout, cap, &audit).await,
            Output::Stderr(d) => err.write(d, &mut stderr, cap, &audit).await,
        }
    }
    out.finish(&mut stdout, &audit).await;
    err.finish(&mut stderr, &audit).await;
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

pub(super) fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir(&dest)?;
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

pub(super) fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
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

//! Host-side file chores of a run: seeding and owning the workspace, and copying the guest's
//! output to the terminal and the run folder.

use crate::runtime::Output;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Copies the guest's output to our stdout/stderr and to `stdout.log`/`stderr.log`.
pub(super) async fn forward_output(mut rx: tokio::sync::mpsc::Receiver<Output>, run_dir: PathBuf) {
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
    let (mut out_log, mut err_log) = (open("stdout.log").await, open("stderr.log").await);
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    while let Some(chunk) = rx.recv().await {
        let (data, term, log) = match &chunk {
            Output::Stdout(d) => (
                d,
                &mut stdout as &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
                &mut out_log,
            ),
            Output::Stderr(d) => (
                d,
                &mut stderr as &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
                &mut err_log,
            ),
        };
        let _ = term.write_all(data).await;
        let _ = term.flush().await;
        if let Some(f) = log {
            let _ = f.write_all(data).await;
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

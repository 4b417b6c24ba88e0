//! End-to-end test of the watcher against the real kernel (needs root: the proc connector
//! requires CAP_NET_ADMIN).

use super::*;
use crate::audit::{AuditLog, RunEnd, RunId};
use std::io::Write;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_child_exit_code_and_root_signal() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the proc connector needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::create(&path, RunId::generate(), 1024).expect("audit log");

    // The shell waits for a line before doing anything, so the watcher is subscribed first.
    let mut root = Command::new("sh")
        .args(["-c", "read x; sh -c 'exit 7'; kill -TERM $$"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let pid = i32::try_from(root.id()).expect("pid fits");
    let watcher = start(pid, pid, log.sink(), None).expect("start watcher");
    root.stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write go");
    let status = tokio::task::spawn_blocking(move || root.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
    let stats = tokio::task::spawn_blocking(move || watcher.stop())
        .await
        .expect("join");
    assert!(stats.root_exited, "{stats:?}");
    log.finish(RunEnd::default()).await.expect("finish");

    let text = std::fs::read_to_string(&path).expect("read log");
    let exits: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "exit")
        .collect();
    assert!(
        exits
            .iter()
            .any(|e| e["code"] == 7 && e["pid"] != pid && e["exe"].is_string()),
        "{text}"
    );
    assert!(
        exits.iter().any(|e| e["signal"] == 15 && e["pid"] == pid),
        "{text}"
    );
    assert_eq!(exits.len(), 2, "{text}");
}

//! The export against a real tree on the real filesystem, its notice read back from a log.

use super::*;
use crate::audit::{AuditLog, RunEnd, RunId};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

fn log(dir: &Path) -> AuditLog {
    AuditLog::create(&dir.join("audit.jsonl"), RunId::generate(), 1024).expect("audit log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_modes_specials_and_deep_chains_are_neutralised() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ws = tmp.path().join("workspace");
    std::fs::create_dir(&ws).expect("mkdir");
    for (name, target) in [
        ("shadow", "/etc/shadow"),
        ("root", "/"),
        ("rep", "../report.html"),
    ] {
        std::os::unix::fs::symlink(target, ws.join(name)).expect("symlink");
    }
    std::fs::write(ws.join("suid"), b"#!/bin/sh\n").expect("write");
    std::fs::set_permissions(ws.join("suid"), std::fs::Permissions::from_mode(0o6777))
        .expect("chmod");
    std::fs::create_dir(ws.join("open")).expect("mkdir");
    std::fs::set_permissions(ws.join("open"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod dir");
    std::fs::write(ws.join("open/a"), b"shared").expect("write");
    std::fs::hard_link(ws.join("open/a"), ws.join("b")).expect("link");
    nix::unistd::mkfifo(&ws.join("fifo"), Mode::from_bits_truncate(0o644)).expect("mkfifo");
    let sparse = std::fs::File::create(ws.join("sparse")).expect("create");
    sparse.set_len(1 << 30).expect("truncate");
    let levels = walk::MAX_OPEN_LEVELS * 2 + 10;
    crate::fswatch::walk::tests::deep_chain(&ws, levels, &"d".repeat(30));

    let audit = log(tmp.path());
    let dst = tmp.path().join("export");
    let sum = export(
        &ws,
        &dst,
        &audit.sink(),
        Instant::now() + Duration::from_secs(60),
    )
    .expect("export");
    audit.finish(RunEnd::default()).await.expect("finish");

    assert_eq!(
        (
            sum.symlinks,
            sum.specials,
            sum.hard_links,
            sum.errors,
            sum.cut.clone()
        ),
        (3, 1, 2, 0, None),
        "{sum:?}"
    );
    assert_eq!(sum.modes_stripped, 2, "{sum:?}");
    assert_eq!(sum.dirs, levels as u64 + 1);
    // Links are files holding their target; nothing in the export is a link.
    let shadow = dst.join("shadow.idagent-symlink");
    let meta = std::fs::symlink_metadata(&shadow).expect("link file");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(&shadow).expect("read"), b"/etc/shadow");
    assert_eq!(
        std::fs::read(dst.join("rep.idagent-symlink")).expect("read"),
        b"../report.html"
    );
    assert!(!dst.join("shadow").exists() && std::fs::symlink_metadata(dst.join("root")).is_err());
    assert_eq!(
        std::fs::metadata(dst.join("suid")).expect("suid").mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(dst.join("open")).expect("dir").mode() & 0o7777,
        0o755
    );
    assert!(std::fs::symlink_metadata(dst.join("fifo")).is_err());
    // Hard links are two files now.
    let (a, b) = (
        std::fs::metadata(dst.join("open/a")).expect("a"),
        std::fs::metadata(dst.join("b")).expect("b"),
    );
    assert_ne!(a.ino(), b.ino());
    assert_eq!(std::fs::read(dst.join("b")).expect("b"), b"shared");
    // Sparse stays sparse: a GiB of length, (almost) nothing on disk.
    let sp = std::fs::metadata(dst.join("sparse")).expect("sparse");
    assert_eq!(sp.len(), 1 << 30);
    assert!(
        sp.blocks() < 64,
        "sparse file copied as data: {} blocks",
        sp.blocks()
    );
    // The deep chain's bottom, found by walking the export from descriptors.
    let mut fd = walk::open_dir(&dst).expect("open export");
    for _ in 0..levels {
        fd = openat(
            &fd,
            "d".repeat(30).as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .expect("level");
    }
    let bottom = openat(&fd, "bottom", OFlag::O_RDONLY, Mode::empty()).expect("bottom");
    let mut buf = [0u8; 8];
    assert_eq!(nix::unistd::read(&bottom, &mut buf), Ok(4));

    let text = std::fs::read_to_string(tmp.path().join("audit.jsonl")).expect("log");
    let notices: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("workspace_exported"))
        .collect();
    assert_eq!(notices.len(), 1, "{text}");
    assert!(notices[0].contains("3 symlinks"), "{}", notices[0]);
    assert!(
        notices[0].contains("symlink to /etc/shadow"),
        "{}",
        notices[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_deadline_cuts_the_export_with_a_reason_and_finish_swaps() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ws = tmp.path().join("workspace");
    std::fs::create_dir(&ws).expect("mkdir");
    std::fs::write(ws.join("f"), b"x").expect("write");
    let audit = log(tmp.path());
    let sum = export(&ws, &tmp.path().join("e"), &audit.sink(), Instant::now()).expect("export");
    assert!(
        sum.cut.as_deref().is_some_and(|c| c.contains("deadline")),
        "{sum:?}"
    );
    assert!(
        export(&ws, &tmp.path().join("e"), &audit.sink(), Instant::now()).is_err(),
        "the destination must be new"
    );

    std::os::unix::fs::symlink("/", ws.join("up")).expect("symlink");
    let sum = finish_workspace(&ws, &audit.sink(), Instant::now() + Duration::from_secs(30))
        .expect("finish");
    assert_eq!(sum.symlinks, 1);
    assert!(ws.join("up.idagent-symlink").is_file());
    assert!(std::fs::symlink_metadata(ws.join("up")).is_err());
    assert!(!tmp.path().join(STAGING_DIR).exists());
    audit.finish(RunEnd::default()).await.expect("finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_directory_exports_through_its_proc_fd_path() {
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().expect("tempdir");
    let ws = tmp.path().join("workspace");
    std::fs::create_dir(&ws).expect("mkdir");
    std::fs::write(ws.join("f"), b"held").expect("write");
    let held = walk::open_dir(&ws).expect("hold");
    let src = PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
    let audit = log(tmp.path());
    let dst = tmp.path().join("out");
    let sum = export(
        &src,
        &dst,
        &audit.sink(),
        Instant::now() + Duration::from_secs(30),
    )
    .expect("export");
    assert_eq!((sum.files, sum.errors), (1, 0));
    assert_eq!(std::fs::read(dst.join("f")).expect("read"), b"held");
    audit.finish(RunEnd::default()).await.expect("finish");
}

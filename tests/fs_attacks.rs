//! Issue 9, workspace: a hostile guest tries to leave files unrecorded (below the watcher's
//! depth cap, behind a restored mtime, metadata only), to make the host hash or walk for
//! minutes, and to plant symlinks and setuid files for the reviewer of the run folder. Each
//! test plays the guest in a real container and reads what a reviewer reads: the audit log,
//! the exported workspace and `report.html`.

mod common;
use common::*;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use serde_json::Value;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// sha256 of 1 GiB of zeros (a sparse file's content).
const SHA_1G_ZEROS: &str = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14";
/// Teardown must end well within this; a generous bound, not a speed test.
const TEARDOWN_BOUND_MS: u64 = 120_000;

fn file_ev<'a>(run: &'a Run, op: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    run.of_kind("file")
        .filter(move |e| e["op"] == op && e["outcome"] == "ok")
}

fn notices<'a>(run: &'a Run, what: &'a str) -> Vec<&'a Value> {
    run.of_kind("notice")
        .filter(|e| e["what"] == what)
        .collect()
}

fn run_end(run: &Run) -> &Value {
    run.events.last().expect("run_end")
}

fn open_dir(p: &Path) -> OwnedFd {
    nix::fcntl::open(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).expect("open dir")
}

/// Every entry of the exported tree (depth-first, from descriptors, never following links):
/// asserts none is a symlink, a special file, or has a dangerous mode.
fn assert_export_is_inert(root: &Path) -> u64 {
    let mut stack = vec![open_dir(root)];
    let mut n = 0;
    while let Some(parent) = stack.pop() {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&parent);
        let names: Vec<_> = std::fs::read_dir(format!("/proc/self/fd/{raw}"))
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        for name in names {
            n += 1;
            let st = nix::sys::stat::fstatat(
                &parent,
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .expect("lstat");
            let fmt = st.st_mode & libc::S_IFMT;
            assert!(
                fmt == libc::S_IFREG || fmt == libc::S_IFDIR,
                "{name:?} in the export is not a file or directory ({:o})",
                st.st_mode
            );
            assert_eq!(
                st.st_mode & 0o7022,
                0,
                "{name:?} kept mode {:o}",
                st.st_mode
            );
            if fmt == libc::S_IFDIR {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
                stack.push(openat(&parent, name.as_os_str(), flags, Mode::empty()).expect("open"));
            }
        }
    }
    n
}

#[test]
fn a_file_below_the_depth_cap_is_recorded_and_exported() {
    // 600 levels of 8-byte names: below the live cap (512) and over PATH_MAX (5.4 KB).
    let script = r#"
import os
os.chdir('/tmp/workspace')
for i in range(600):
    os.mkdir('levelxxx')
    os.chdir('levelxxx')
with open('bottom', 'w') as f:
    f.write('deep secret\n')
"#;
    let run = idagent_run(&["--image", GUEST_IMAGE, "--", "python3", "-c", script]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let data = b"deep secret\n";
    let bottom = file_ev(&run, "create")
        .find(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/bottom")))
        .unwrap_or_else(|| panic!("deep file not recorded\n{}", run.explain()));
    assert_eq!(bottom["sha256"], sha256_hex(data));
    let path = bottom["path"].as_str().unwrap_or_default();
    assert_eq!(path.matches("/levelxxx").count(), 600, "{path}");
    // Every level recorded exactly once, live or by the final scan.
    let mut mkdirs: Vec<&str> = file_ev(&run, "mkdir")
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(mkdirs.len(), 600, "{}", run.explain());
    mkdirs.sort_unstable();
    mkdirs.dedup();
    assert_eq!(mkdirs.len(), 600);
    assert_eq!(notices(&run, "fswatch_depth_cap").len(), 1);
    assert!(notices(&run, "fswatch_final_scan_cut").is_empty());
    let end = run_end(&run);
    assert_eq!(end["reason"], "exited");
    assert!(
        end["duration_ms"]
            .as_u64()
            .is_some_and(|d| d < TEARDOWN_BOUND_MS),
        "{end}"
    );

    // The exported workspace holds it, reachable from descriptors.
    let mut fd = open_dir(&run.run_dir().join("workspace"));
    for _ in 0..600 {
        fd = openat(
            &fd,
            "levelxxx",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .expect("level in export");
    }
    let f = openat(&fd, "bottom", OFlag::O_RDONLY, Mode::empty()).expect("bottom in export");
    let mut buf = [0u8; 64];
    let n = nix::unistd::read(&f, &mut buf).expect("read");
    assert_eq!(buf.get(..n), Some(&data[..]));
}

#[test]
fn a_seeded_file_rewritten_through_a_hard_link_with_its_mtime_restored_is_a_modify() {
    let seed = tempfile::tempdir().expect("seed");
    std::fs::write(seed.path().join("seed.txt"), b"original content").expect("seed");
    let script = r#"
import os
ws = '/tmp/workspace'
st = os.stat(ws + '/seed.txt')
os.link(ws + '/seed.txt', ws + '/.h')
with open(ws + '/.h', 'r+') as f:
    f.write('EVIL content!!!!')
os.utime(ws + '/seed.txt', ns=(st.st_atime_ns, st.st_mtime_ns))
os.unlink(ws + '/.h')
after = os.stat(ws + '/seed.txt')
print(after.st_mtime_ns == st.st_mtime_ns and after.st_size == st.st_size)
"#;
    let run = idagent_run(&[
        "--workspace",
        seed.path().to_str().expect("utf-8 path"),
        "--image",
        GUEST_IMAGE,
        "--",
        "python3",
        "-c",
        script,
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert_eq!(run.stdout().trim(), "True", "size and mtime were restored");
    let evil = sha256_hex(b"EVIL content!!!!");
    assert!(
        file_ev(&run, "modify")
            .any(|e| e["path"] == "/tmp/workspace/seed.txt" && e["sha256"] == evil),
        "{}",
        run.explain()
    );
    assert_eq!(
        std::fs::read(run.run_dir().join("workspace/seed.txt")).expect("exported"),
        b"EVIL content!!!!"
    );
}

#[test]
fn chmod_setuid_world_writable_and_xattr_changes_are_recorded() {
    let seed = tempfile::tempdir().expect("seed");
    for f in ["tool", "notes"] {
        std::fs::write(seed.path().join(f), b"#!/bin/sh\necho hi\n").expect("seed");
    }
    std::fs::create_dir(seed.path().join("drop")).expect("seed dir");
    let script = "chmod 4755 /tmp/workspace/tool && chmod 0777 /tmp/workspace/drop && \
         python3 -c \"import os; os.setxattr('/tmp/workspace/notes', 'user.note', b'hi')\"";
    let run = idagent_run(&[
        "--workspace",
        seed.path().to_str().expect("utf-8 path"),
        "--image",
        GUEST_IMAGE,
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let chmod = |p: &str| {
        file_ev(&run, "chmod")
            .find(|e| e["path"] == format!("/tmp/workspace/{p}"))
            .unwrap_or_else(|| panic!("no chmod of {p}\n{}", run.explain()))
    };
    assert_eq!(chmod("tool")["mode"], "4755");
    assert_eq!(chmod("drop")["mode"], "0777");
    let attrib = file_ev(&run, "attrib")
        .find(|e| e["path"] == "/tmp/workspace/notes")
        .unwrap_or_else(|| panic!("xattr change not recorded\n{}", run.explain()));
    assert_eq!(attrib["sha256"], sha256_hex(b"#!/bin/sh\necho hi\n"));
    assert!(
        !file_ev(&run, "modify").any(|e| e["path"] == "/tmp/workspace/notes"),
        "metadata is not content"
    );
    // Exported without the bits; the report says what was there.
    let ws = run.run_dir().join("workspace");
    assert_eq!(
        std::fs::metadata(ws.join("tool")).expect("tool").mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(ws.join("drop")).expect("drop").mode() & 0o7777,
        0o755
    );
    assert_export_is_inert(&ws);
    let html = std::fs::read_to_string(run.run_dir().join("report.html")).expect("report");
    assert!(
        html.contains("/tmp/workspace/tool mode 4755"),
        "no warning in report.html"
    );
    assert!(html.contains("/tmp/workspace/drop mode 0777"));
}

#[test]
fn sparse_gigabyte_files_are_bounded_by_the_hash_budget() {
    let script = "for i in 1 2 3 4 5 6 7 8; do truncate -s 1G /tmp/workspace/s$i || exit 1; done";
    let run = idagent_run(&["--image", GUEST_IMAGE, "--", "sh", "-c", script]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let mut hashed = 0;
    for i in 1..=8 {
        let path = format!("/tmp/workspace/s{i}");
        let recs: Vec<&Value> = run.of_kind("file").filter(|e| e["path"] == path).collect();
        assert!(!recs.is_empty(), "{path} not recorded\n{}", run.explain());
        assert!(recs.iter().all(|e| e["size"] == 1u64 << 30), "{recs:?}");
        if let Some(sha) = recs.iter().find_map(|e| e["sha256"].as_str()) {
            assert_eq!(sha, SHA_1G_ZEROS);
            hashed += 1;
        }
    }
    // 2 GiB of budget: at most two hashed, the rest recorded by size, and one notice per
    // reason (budget spent, or the stop deadline reached while still hashing).
    assert!(hashed <= 2, "{hashed} GiB hashed\n{}", run.explain());
    let budget = notices(&run, "fswatch_hash_budget").len();
    let deadline = notices(&run, "fswatch_hash_deadline").len();
    assert!(budget <= 1 && deadline <= 1, "{}", run.explain());
    assert!(
        budget + deadline >= 1,
        "unhashed files without a notice\n{}",
        run.explain()
    );
    let end = run_end(&run);
    assert!(
        end["duration_ms"]
            .as_u64()
            .is_some_and(|d| d < TEARDOWN_BOUND_MS),
        "{end}"
    );
    // The export keeps them sparse.
    for i in 1..=8 {
        let m = std::fs::metadata(run.run_dir().join(format!("workspace/s{i}"))).expect("export");
        assert_eq!(m.len(), 1 << 30);
        assert!(m.blocks() < 64, "s{i} exported as {} blocks", m.blocks());
    }
}

#[test]
fn guest_symlinks_are_recorded_with_targets_and_neutralised_in_the_export() {
    let script = "cd /tmp/workspace && ln -s /etc/shadow shadow && ln -s / root && \
         ln -s ../report.html rep && mkdir d && ln -s /root d/home && mkfifo pipe";
    let run = idagent_run(&["--image", GUEST_IMAGE, "--", "sh", "-c", script]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    for (name, target) in [
        ("shadow", "/etc/shadow"),
        ("root", "/"),
        ("rep", "../report.html"),
        ("d/home", "/root"),
    ] {
        let e = file_ev(&run, "create")
            .find(|e| e["path"] == format!("/tmp/workspace/{name}"))
            .unwrap_or_else(|| panic!("{name} not recorded\n{}", run.explain()));
        assert_eq!(
            (e["type"].as_str(), e["target"].as_str()),
            (Some("symlink"), Some(target))
        );
    }
    let fifo = file_ev(&run, "create")
        .find(|e| e["path"] == "/tmp/workspace/pipe")
        .expect("fifo recorded");
    assert_eq!(fifo["type"], "fifo");

    let ws = run.run_dir().join("workspace");
    assert_eq!(
        std::fs::read(ws.join("shadow.idagent-symlink")).expect("link file"),
        b"/etc/shadow"
    );
    assert_eq!(
        std::fs::read(ws.join("d/home.idagent-symlink")).expect("link file"),
        b"/root"
    );
    assert_eq!(
        std::fs::symlink_metadata(ws.join("rep.idagent-symlink"))
            .expect("link file")
            .mode()
            & 0o7777,
        0o600
    );
    assert!(
        std::fs::symlink_metadata(ws.join("pipe")).is_err(),
        "fifo exported"
    );
    assert_eq!(
        assert_export_is_inert(&ws),
        5,
        "4 link files and the directory"
    );
    let exported = notices(&run, "workspace_exported");
    assert_eq!(exported.len(), 1, "{}", run.explain());
    let detail = exported[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("4 symlinks") && detail.contains("1 fifos"),
        "{detail}"
    );
    let html = std::fs::read_to_string(run.run_dir().join("report.html")).expect("report");
    assert!(html.contains("class=\"warnings\""));
    assert!(
        html.contains("/tmp/workspace/shadow → /etc/shadow"),
        "no warning in report.html"
    );
}

//! Tests against the real kernel: inotify on a temp dir, a real audit log read back.

use super::*;
use crate::attribution::Actor;
use crate::audit::{AuditLog, RunEnd, RunId};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

struct Fixture {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    log_path: PathBuf,
    log: AuditLog,
    attribution: Arc<Attribution>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = dir.path().join("workspace");
    std::fs::create_dir(&ws).expect("mkdir workspace");
    let log_path = dir.path().join("audit.jsonl");
    let log = AuditLog::create(&log_path, RunId::generate(), 4096).expect("audit log");
    Fixture {
        _dir: dir,
        ws,
        log_path,
        log,
        attribution: Arc::new(Attribution::default()),
    }
}

impl Fixture {
    fn start(&self, limits: Limits) -> WorkspaceWatcher {
        start_with(&self.ws, self.log.sink(), self.attribution.clone(), limits).expect("start")
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (polling the log the writer flushes per line) until a record matches.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = self.records().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.records()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    async fn finish(self, w: WorkspaceWatcher) -> (WatchStats, Vec<Value>) {
        let stats = w.stop().await;
        self.log.finish(RunEnd::default()).await.expect("finish");
        let recs = std::fs::read_to_string(&self.log_path)
            .expect("read log")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (stats, recs)
    }
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn file_op(v: &Value, op: &str, path: &str) -> bool {
    v["kind"] == "file" && v["op"] == op && v["path"] == format!("/tmp/workspace/{path}")
}

fn files(recs: &[Value]) -> Vec<(String, String)> {
    recs.iter()
        .filter(|v| v["kind"] == "file")
        .map(|v| {
            (
                v["op"].as_str().unwrap_or("").into(),
                v["path"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_modify_rename_mkdir_delete() {
    let fx = fixture();
    let w = fx.start(Limits::default());
    std::fs::write(fx.ws.join("a.txt"), b"hello").expect("write");
    let v = fx.wait_for("create", |v| file_op(v, "create", "a.txt"));
    assert_eq!(v["sha256"], sha(b"hello"));
    assert_eq!(v["size"], 5);
    assert_eq!(v["outcome"], "ok");

    std::fs::write(fx.ws.join("a.txt"), b"world!").expect("rewrite");
    let v = fx.wait_for("modify", |v| file_op(v, "modify", "a.txt"));
    assert_eq!(v["sha256"], sha(b"world!"));

    std::fs::rename(fx.ws.join("a.txt"), fx.ws.join("b.txt")).expect("rename");
    let v = fx.wait_for("rename", |v| file_op(v, "rename", "b.txt"));
    assert_eq!(v["from"], "/tmp/workspace/a.txt");

    std::fs::create_dir(fx.ws.join("d")).expect("mkdir");
    std::fs::write(fx.ws.join("d/f"), b"inner").expect("write inner");
    let v = fx.wait_for("create in new dir", |v| file_op(v, "create", "d/f"));
    assert_eq!(v["sha256"], sha(b"inner"));

    std::fs::remove_file(fx.ws.join("b.txt")).expect("rm");
    std::fs::remove_file(fx.ws.join("d/f")).expect("rm inner");
    std::fs::remove_dir(fx.ws.join("d")).expect("rmdir");
    let (_, recs) = fx.finish(w).await;
    let ops = files(&recs);
    let ws = |p: &str| format!("/tmp/workspace/{p}");
    let expected = [
        ("create", ws("a.txt")),
        ("modify", ws("a.txt")),
        ("rename", ws("b.txt")),
        ("mkdir", ws("d")),
        ("create", ws("d/f")),
        ("delete", ws("b.txt")),
        ("delete", ws("d/f")),
        ("rmdir", ws("d")),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(o, p)| ((*o).into(), p.clone()))
        .collect();
    assert_eq!(ops, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_seeded_files_and_unclosed_writes() {
    let fx = fixture();
    std::fs::write(fx.ws.join("seed.txt"), b"seeded").expect("seed");
    let w = fx.start(Limits::default());
    fx.attribution.record(
        "/tmp/workspace/seed.txt",
        Actor {
            pid: 42,
            exe: "/usr/bin/python3".into(),
        },
    );
    std::fs::write(fx.ws.join("seed.txt"), b"changed").expect("rewrite seed");
    let v = fx.wait_for("modify seed", |v| file_op(v, "modify", "seed.txt"));
    assert_eq!(
        (v["pid"].clone(), v["exe"].clone()),
        (42.into(), "/usr/bin/python3".into())
    );

    // Written and never closed before the watcher stops: the final scan reports it.
    let mut open = std::fs::File::create(fx.ws.join("open.bin")).expect("create");
    std::io::Write::write_all(&mut open, b"still open").expect("write");
    let (_, recs) = fx.finish(w).await;
    drop(open);
    assert!(
        !recs.iter().any(|v| file_op(v, "create", "seed.txt")),
        "no event for seeded files"
    );
    let v = recs
        .iter()
        .find(|v| file_op(v, "create", "open.bin"))
        .expect("final scan reports the unclosed file");
    assert_eq!(v["sha256"], sha(b"still open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_hostile_names_moves_and_deep_trees() {
    let fx = fixture();
    let outside = fx.ws.parent().expect("parent").join("outside.txt");
    std::fs::write(&outside, b"moved in").expect("write outside");
    let w = fx.start(Limits::default());
    std::os::unix::fs::symlink("/etc/passwd", fx.ws.join("link")).expect("symlink");
    std::os::unix::fs::symlink(".", fx.ws.join("loop")).expect("symlink loop");
    let hostile = std::ffi::OsStr::from_bytes(b"bad\nname\xff");
    std::fs::write(fx.ws.join(hostile), b"x").expect("hostile name");
    std::fs::rename(&outside, fx.ws.join("in.txt")).expect("move in");
    std::fs::create_dir_all(fx.ws.join("p/q/r/s")).expect("mkdir -p");
    std::fs::write(fx.ws.join("p/q/r/s/deep"), b"deep").expect("deep");
    // Events are handled as they come: the rename must land after the create was seen.
    fx.wait_for("deep create", |v| file_op(v, "create", "p/q/r/s/deep"));
    std::fs::rename(fx.ws.join("p"), fx.ws.join("P")).expect("rename dir");
    std::fs::write(fx.ws.join("P/q/r/s/deep"), b"deeper").expect("rewrite deep");
    let (_, recs) = fx.finish(w).await;

    let link = recs
        .iter()
        .find(|v| file_op(v, "create", "link"))
        .expect("symlink create");
    assert_eq!(link["size"], "/etc/passwd".len());
    assert_eq!(
        (link["type"].clone(), link["target"].clone()),
        ("symlink".into(), "/etc/passwd".into())
    );
    assert!(
        link.get("sha256").is_none(),
        "links are not followed: {link}"
    );
    assert!(recs.iter().any(|v| file_op(v, "create", "loop")));
    assert!(recs
        .iter()
        .any(|v| file_op(v, "create", "bad\nname\u{fffd}")));
    let moved = recs
        .iter()
        .find(|v| file_op(v, "create", "in.txt"))
        .expect("moved in");
    assert_eq!(moved["sha256"], sha(b"moved in"));
    let r = recs
        .iter()
        .find(|v| file_op(v, "rename", "P"))
        .expect("dir rename");
    assert_eq!(r["from"], "/tmp/workspace/p");
    let m = recs
        .iter()
        .find(|v| file_op(v, "modify", "P/q/r/s/deep"))
        .unwrap_or_else(|| panic!("watch follows the renamed dir: {recs:#?}"));
    assert_eq!(m["sha256"], sha(b"deeper"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cap_is_noticed_and_final_scan_still_sees_files() {
    let fx = fixture();
    let w = fx.start(Limits {
        max_watches: 2,
        ..Limits::default()
    });
    for d in ["a", "b", "c"] {
        std::fs::create_dir(fx.ws.join(d)).expect("mkdir");
        std::fs::write(fx.ws.join(d).join("f"), d).expect("write");
    }
    let (stats, recs) = fx.finish(w).await;
    let notices = recs
        .iter()
        .filter(|v| v["kind"] == "notice" && v["what"] == "fswatch_watch_cap")
        .count();
    assert_eq!(notices, 1);
    assert!(stats.watch_cap_hits >= 1);
    for d in ["a", "b", "c"] {
        assert!(
            recs.iter().any(|v| file_op(v, "create", &format!("{d}/f"))),
            "{d}/f"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_out_is_a_delete() {
    let fx = fixture();
    std::fs::write(fx.ws.join("leaving"), b"bye").expect("seed");
    let w = fx.start(Limits::default());
    let away = fx.ws.parent().expect("parent").join("away");
    std::fs::rename(fx.ws.join("leaving"), &away).expect("move out");
    fx.wait_for("delete", |v| file_op(v, "delete", "leaving"));
    let (_, recs) = fx.finish(w).await;
    assert_eq!(
        files(&recs),
        vec![("delete".into(), "/tmp/workspace/leaving".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chmod_xattr_and_a_rewrite_behind_a_restored_mtime_are_recorded() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    for f in ["seed.txt", "x", "g"] {
        std::fs::write(fx.ws.join(f), b"original content").expect("seed");
    }
    std::fs::create_dir(fx.ws.join("d")).expect("seed dir");
    let w = fx.start(Limits::default());
    // Same size, mtime put back: only the ctime tells.
    let st = std::fs::metadata(fx.ws.join("seed.txt")).expect("stat");
    std::fs::hard_link(fx.ws.join("seed.txt"), fx.ws.join(".h")).expect("link");
    std::fs::write(fx.ws.join(".h"), b"EVIL content!!!!").expect("rewrite via link");
    std::fs::File::options()
        .write(true)
        .open(fx.ws.join("seed.txt"))
        .and_then(|f| f.set_modified(st.modified().expect("mtime")))
        .expect("restore mtime");
    std::fs::remove_file(fx.ws.join(".h")).expect("unlink");
    std::fs::set_permissions(fx.ws.join("x"), std::fs::Permissions::from_mode(0o4755))
        .expect("setuid");
    std::fs::set_permissions(fx.ws.join("d"), std::fs::Permissions::from_mode(0o777))
        .expect("chmod dir");
    xattr_set(&fx.ws.join("g"));
    let v = fx.wait_for("chmod", |v| file_op(v, "chmod", "x"));
    assert_eq!(v["mode"], "4755");
    let (_, recs) = fx.finish(w).await;
    // The modify carries the new content; later records (the link count dropping) agree.
    let evil = sha(b"EVIL content!!!!");
    assert!(
        recs.iter()
            .any(|v| file_op(v, "modify", "seed.txt") && v["sha256"] == evil),
        "{recs:#?}"
    );
    assert!(recs
        .iter()
        .filter(|v| v["path"] == "/tmp/workspace/seed.txt" && v["sha256"].is_string())
        .all(|v| v["sha256"] == evil));
    assert!(
        recs.iter()
            .any(|v| file_op(v, "chmod", "d") && v["mode"] == "0777"),
        "{recs:#?}"
    );
    let g = recs
        .iter()
        .find(|v| file_op(v, "attrib", "g"))
        .expect("xattr is an attrib");
    assert_eq!(g["sha256"], sha(b"original content"));
    assert!(!recs
        .iter()
        .any(|v| file_op(v, "modify", "x") || file_op(v, "modify", "g")));
}

/// Sets a `user.` extended attribute (through python3: the crate forbids `unsafe` here).
fn xattr_set(path: &Path) {
    let st = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, sys; os.setxattr(sys.argv[1], 'user.note', b'hi')",
        ])
        .arg(path)
        .status()
        .expect("run python3");
    assert!(st.success(), "setxattr failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_budget_state_bytes_and_depth_caps_are_notices_and_the_final_scan_sees_all() {
    let fx = fixture();
    let w = fx.start(Limits {
        hash_budget: 10,
        max_state_bytes: 200,
        max_depth: 3,
        ..Limits::default()
    });
    crate::fswatch::walk::tests::deep_chain(&fx.ws, 8, "c");
    fx.wait_for("depth cap", |v| v["what"] == "fswatch_depth_cap");
    for i in 0..4 {
        std::fs::write(fx.ws.join(format!("f{i}")), b"12345").expect("write");
    }
    for i in 0..20 {
        std::fs::write(
            fx.ws.join(format!("long-name-to-fill-the-state-{i:02}")),
            b"x",
        )
        .expect("write");
    }
    let (_, recs) = fx.finish(w).await;
    let notices = |what: &str| {
        recs.iter()
            .filter(|v| v["kind"] == "notice" && v["what"] == what)
            .count()
    };
    assert_eq!(notices("fswatch_hash_budget"), 1, "{recs:#?}");
    assert_eq!(notices("fswatch_state_bytes_cap"), 1);
    assert_eq!(notices("fswatch_depth_cap"), 1);
    let hashed = (0..4)
        .filter(|i| {
            recs.iter()
                .any(|v| file_op(v, "create", &format!("f{i}")) && v["sha256"].is_string())
        })
        .count();
    assert!(
        hashed <= 2,
        "budget of 10 bytes hashed {hashed} 5-byte files"
    );
    for i in 0..4 {
        let c = recs
            .iter()
            .find(|v| file_op(v, "create", &format!("f{i}")))
            .expect("every file recorded");
        assert_eq!(c["size"], 5);
    }
    for i in 0..20 {
        let name = format!("long-name-to-fill-the-state-{i:02}");
        assert!(recs.iter().any(|v| file_op(v, "create", &name)), "{name}");
    }
    let bottom = format!("{}bottom", "c/".repeat(8));
    assert!(
        recs.iter().any(|v| file_op(v, "create", &bottom)),
        "below the depth cap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_scan_deadline_is_a_notice() {
    let fx = fixture();
    let w = fx.start(Limits::default());
    std::fs::create_dir(fx.ws.join("d")).expect("mkdir");
    let stats = w.stop_by(Instant::now()).await;
    let _ = stats;
    fx.log.finish(RunEnd::default()).await.expect("finish");
    let recs: Vec<Value> = std::fs::read_to_string(&fx.log_path)
        .expect("log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let cut = recs
        .iter()
        .find(|v| v["what"] == "fswatch_final_scan_cut")
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert!(
        cut["detail"]
            .as_str()
            .is_some_and(|d| d.contains("deadline")),
        "{cut}"
    );
}

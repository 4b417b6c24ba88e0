//! The guest against the host's disk and CPU: the audit log survives a full filesystem (a gap,
//! then the record goes on), a disk that stays full or a log at its cap stops the guest (fail
//! closed), the workspace has a size of its own, and `--cpus` reaches the guest's cgroup.
//! Real engine, real tmpfs filesystems made by the test; no wall-clock limits asserted.

mod common;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small tmpfs the test fills from the host side, as anything else on the machine could.
struct SmallFs {
    dir: Option<tempfile::TempDir>,
}

impl SmallFs {
    fn new(bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "idagent-test",
            ])
            .arg(dir.path())
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mount a test tmpfs (the tests run as root)");
        Self { dir: Some(dir) }
    }
    fn path(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..1]).is_ok() {}
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
            drop(dir);
        }
    }
}

/// Starts `idagent run` with its run folder at `run_dir`, not waiting.
fn spawn_run(run_dir: &Path, args: &[&str]) -> Child {
    ensure_image();
    Command::new(IDAGENT)
        .arg("run")
        .arg("--run-dir")
        .arg(run_dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start idagent")
}

fn finish(child: Child, dir: tempfile::TempDir) -> Run {
    let out = child.wait_with_output().expect("wait idagent");
    let events = read_audit(&dir.path().join("run").join("audit.jsonl"));
    let run = Run { dir, out, events };
    check_audit_invariants(&run);
    assert_no_leftovers(&run.run_id());
    run
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn wait_for_lines(path: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines_in(path) < n {
        assert!(Instant::now() < deadline, "the run never logged {n} lines");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until `path` has not grown for a second.
fn wait_until_still(path: &Path) {
    let size = || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut since) = (size(), Instant::now());
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
        let now = size();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// Unique names, so no two refusals are alike (nothing to aggregate): one `dns` event each.
/// One socket for all queries: one UDP flow, however long the loop.
fn dns_loop(seconds: u32) -> String {
    format!(
        r#"
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
def query(name, qid):
    head = struct.pack(">HHHHHH", qid & 0xffff, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return head + labels + b"\x00" + struct.pack(">HH", 1, 1)
end = time.time() + {seconds}
i = 0
while time.time() < end:
    i += 1
    s.sendto(query(f"n{{i}}.unmapped.example", i), ("10.77.0.1", 53))
    try:
        s.recv(512)
    except OSError:
        pass
print("DONE", i, flush=True)
"#
    )
}

#[test]
fn a_full_disk_is_a_gap_and_the_record_goes_on() {
    let fs = SmallFs::new(48 << 20);
    // The run folder lives on the small filesystem; `Run` owns a tempdir inside it.
    let dir = tempfile::tempdir_in(fs.path()).expect("tempdir");
    let run_dir = dir.path().join("run");
    let script = dns_loop(12);
    let child = spawn_run(
        &run_dir,
        &[
            "--offline",
            "--image",
            GUEST_IMAGE,
            "--",
            "python3",
            "-c",
            &script,
        ],
    );
    let log = run_dir.join("audit.jsonl");
    wait_for_lines(&log, 40);
    let filler = fs.fill();
    // The log's reserve takes a little more; once it stops growing the writer is refusing
    // ordinary events. Free the disk well within the grace.
    wait_until_still(&log);
    std::fs::remove_file(filler).expect("free the disk");
    let run = finish(child, dir);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let end = run.events.last().expect("end");
    assert_eq!(end["reason"], "exited", "{}", run.explain());
    let gaps: Vec<&Value> = run
        .of_kind("gap")
        .filter(|g| g["reason"].as_str().unwrap_or("").contains("No space"))
        .collect();
    assert!(
        !gaps.is_empty(),
        "the outage is an explicit gap\n{}",
        run.explain()
    );
    let gap_seq = gaps[0]["seq"].as_u64().expect("seq");
    let after = run
        .of_kind("dns")
        .filter(|e| e["seq"].as_u64().unwrap_or(0) > gap_seq)
        .count();
    assert!(
        after > 0,
        "the record goes on after the gap\n{}",
        run.explain()
    );
    assert!(run.stdout().contains("DONE"), "the guest ran to its end");
}

#[test]
fn a_disk_that_stays_full_stops_the_guest_and_the_log_still_ends() {
    let fs = SmallFs::new(48 << 20);
    let dir = tempfile::tempdir_in(fs.path()).expect("tempdir");
    let run_dir = dir.path().join("run");
    let script = dns_loop(90);
    let child = spawn_run(
        &run_dir,
        &[
            "--offline",
            "--timeout",
            "150",
            "--image",
            GUEST_IMAGE,
            "--",
            "python3",
            "-c",
            &script,
        ],
    );
    wait_for_lines(&run_dir.join("audit.jsonl"), 40);
    let _filler = fs.fill();
    let run = finish(child, dir);
    assert_eq!(run.code(), Some(2), "{}", run.explain());
    let end = run.events.last().expect("end");
    assert_eq!(end["reason"], "audit_failed", "{}", run.explain());
    assert!(
        run.of_kind("notice").any(|n| n["what"] == "audit_failed"),
        "{}",
        run.explain()
    );
    assert!(
        run.of_kind("gap")
            .any(|g| g["dropped"].as_u64().unwrap_or(0) > 0),
        "what could not be written is counted\n{}",
        run.explain()
    );
    assert!(
        !run.stdout().contains("DONE"),
        "the guest was stopped, not left to run unrecorded"
    );
}

#[test]
fn the_audit_cap_stops_the_guest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    let script = dns_loop(90);
    let child = spawn_run(
        &run_dir,
        &[
            "--offline",
            "--max-audit-bytes",
            "1m",
            "--timeout",
            "150",
            "--image",
            GUEST_IMAGE,
            "--",
            "python3",
            "-c",
            &script,
        ],
    );
    let run = finish(child, dir);
    assert_eq!(run.code(), Some(2), "{}", run.stderr());
    assert_eq!(run.events.last().expect("end")["reason"], "audit_cap");
    assert!(run.of_kind("notice").any(|n| n["what"] == "audit_cap"));
    let size = std::fs::metadata(run.run_dir().join("audit.jsonl"))
        .expect("log")
        .len();
    assert!(
        size < (1 << 20) + (256 << 10),
        "the log stays near its cap: {size}"
    );
    assert!(!run.stdout().contains("DONE"));
}

#[test]
fn the_workspace_has_a_size_and_cpus_reach_the_cgroup() {
    let run = idagent_run(&[
        "--offline",
        "--workspace-size",
        "4m",
        "--cpus",
        "0.5",
        "--image",
        GUEST_IMAGE,
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/tmp/workspace/big bs=1M count=16 2>/dev/null; echo dd=$?; \
         df -k /tmp/workspace | tail -1; \
         cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let out = run.stdout();
    assert!(
        out.contains("dd=1"),
        "the write past the size fails in the guest: {out}"
    );
    // cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`, over the default 100 ms period.
    assert!(out.contains("50000"), "half a CPU: {out}");
    let start = &run.events[0];
    assert_eq!(start["limits"]["workspace_bytes"], 4 << 20);
    assert_eq!(start["limits"]["cpus"], 0.5);
    // What was written (up to the size) is recorded and exported, no more.
    let exported = std::fs::metadata(run.run_dir().join("workspace/big"))
        .expect("exported")
        .len();
    assert!(exported <= 4 << 20, "{exported}");
    assert!(
        run.of_kind("file")
            .any(|f| f["path"] == "/tmp/workspace/big"),
        "{}",
        run.explain()
    );
}

#[test]
fn a_seed_larger_than_the_workspace_is_one_clear_error() {
    let seed = tempfile::tempdir().expect("seed");
    std::fs::write(seed.path().join("big"), vec![7u8; 3 << 20]).expect("seed file");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(IDAGENT)
        .arg("run")
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .arg("--workspace")
        .arg(seed.path())
        .args([
            "--workspace-size",
            "1m",
            "--offline",
            "--image",
            GUEST_IMAGE,
            "--",
            "true",
        ])
        .output()
        .expect("idagent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("larger than --workspace-size"), "{err}");
    let events = read_audit(&dir.path().join("run/audit.jsonl"));
    assert_eq!(
        events.last().map(|e| e["kind"].clone()),
        Some("run_end".into())
    );
    let run_id = events[0]["run"].as_str().expect("run").to_owned();
    assert_no_leftovers(&run_id);
}

#[test]
fn many_lookups_each_from_a_new_socket_keep_resolving() {
    // glibc opens a new socket (a new UDP flow) per lookup; the flow table must not fill with
    // finished lookups and stop name resolution (it did at 1,024 within a minute).
    let script = r#"
import socket, collections
codes = collections.Counter()
for i in range(1400):
    try:
        socket.getaddrinfo(f"l{i}.unmapped.example", 80, socket.AF_INET)
        codes["ok"] += 1
    except socket.gaierror as e:
        codes[e.errno] += 1
print("CODES", dict(codes), flush=True)
"#;
    let run = offline_python(&[], script);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let line = run
        .stdout()
        .lines()
        .find(|l| l.starts_with("CODES"))
        .map(str::to_owned)
        .unwrap_or_default();
    // EAI_NONAME (-2) is the refusal's NXDOMAIN; EAI_AGAIN (-3) would be a lookup that timed out.
    assert_eq!(line, "CODES {-2: 1400}", "{}", run.stdout());
    assert!(
        !run.of_kind("notice").any(|n| n["what"] == "netstack_cap"
            && n["detail"].as_str().unwrap_or("").contains("udp flow")),
        "{}",
        run.explain()
    );
}

//! Many runs, one view: `policy learn`, `diff` and `report --summary` over a tree of run
//! folders (what a cluster's volume collects), built from the committed reference captures.
//! Needs no container: the captures are real runs' audit logs.

use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;
use common::idagent;
const CAPTURES: [&str; 3] = ["python-scrape", "node-openai", "go-escape"];

fn capture_log(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("captures")
        .join(name)
        .join("audit.jsonl");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes capture `name`'s log into `dir` as a run of its own: every mention of the
/// capture's run id becomes `run_id` (the learner counts runs by id).
fn copy_run(name: &str, dir: &Path, run_id: &str) {
    let log = capture_log(name);
    let first: Value =
        serde_json::from_str(log.lines().next().expect("test fixture")).expect("test fixture");
    let old = first["run"].as_str().expect("test fixture");
    std::fs::create_dir_all(dir).expect("test fixture");
    std::fs::write(dir.join("audit.jsonl"), log.replace(old, run_id)).expect("test fixture");
}

/// 20 runs (the three captures in turn) spread over depths 1 to 4, plus two traps a hostile
/// tree could hold: a symlink to a run outside the tree, and a log inside a run folder (a
/// guest's workspace). Returns the run folders in creation order.
fn build_tree(root: &Path, outside: &Path) -> Vec<PathBuf> {
    let mut runs = Vec::new();
    for i in 0..20 {
        let dir = match i % 4 {
            0 => root.join(format!("run-{i:02}")),
            1 => root.join(format!("ns-a/pod-{i:02}")),
            2 => root.join(format!("ns-b/node-{}/pod-{i:02}", i % 3)),
            _ => root.join(format!("ns-b/deep/er/still/pod-{i:02}")),
        };
        copy_run(CAPTURES[i % 3], &dir, &format!("20261201T000000Z-{i:06x}"));
        runs.push(dir);
    }
    // What the traps hold differs from every real run, so reading either changes the policy.
    let evil = capture_log("python-scrape").replace("www.google.com", "evil.example");
    std::fs::create_dir_all(outside.join("elsewhere")).expect("test fixture");
    std::fs::write(outside.join("elsewhere/audit.jsonl"), &evil).expect("test fixture");
    std::os::unix::fs::symlink(outside.join("elsewhere"), root.join("ns-a/linked"))
        .expect("test fixture");
    std::fs::create_dir_all(runs[0].join("workspace")).expect("test fixture");
    std::fs::write(runs[0].join("workspace/audit.jsonl"), &evil).expect("test fixture");
    runs
}

fn learn(args: &[&Path], out: &Path) -> String {
    let mut argv: Vec<&str> = vec!["policy", "learn"];
    argv.extend(args.iter().map(|p| p.to_str().expect("test fixture")));
    argv.extend(["-o", out.to_str().expect("test fixture")]);
    let o = idagent(&argv);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(out).expect("test fixture")
}

#[test]
fn learn_over_a_tree_equals_learn_over_the_runs_listed() {
    let t = tempfile::tempdir().expect("test fixture");
    let (root, outside) = (t.path().join("tree"), t.path().join("outside"));
    let runs = build_tree(&root, &outside);
    let from_tree = learn(&[&root], &t.path().join("tree.yaml"));
    // Listed one by one, in another order: the policy does not depend on it.
    let mut listed: Vec<&Path> = runs.iter().map(PathBuf::as_path).collect();
    listed.reverse();
    listed.rotate_left(7);
    let from_list = learn(&listed, &t.path().join("list.yaml"));
    assert_eq!(from_tree, from_list);
    assert!(from_tree.contains("learned from 20 runs"), "{from_tree}");
    for host in ["www.google.com", "api.openai.com"] {
        assert!(from_tree.contains(host), "{host} missing:\n{from_tree}");
    }
    assert!(
        !from_tree.contains("evil.example"),
        "a trap was read:\n{from_tree}"
    );

    let o = idagent(&[
        "policy",
        "learn",
        root.to_str().expect("test fixture"),
        "-o",
        "-",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("1 symlink(s) in the searched folders not followed"),
        "{stderr}"
    );
    // `policy check` takes trees too: the learned policy lets its own runs through.
    let o = idagent(&[
        "policy",
        "check",
        t.path().join("tree.yaml").to_str().expect("test fixture"),
        root.to_str().expect("test fixture"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn a_folder_without_runs_is_an_error() {
    let t = tempfile::tempdir().expect("test fixture");
    std::fs::create_dir_all(t.path().join("a/b")).expect("test fixture");
    let o = idagent(&[
        "policy",
        "learn",
        t.path().to_str().expect("test fixture"),
        "-o",
        "-",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("no run folder below it"), "{stderr}");
}

#[test]
fn one_run_collected_twice_is_one_run_and_said() {
    let t = tempfile::tempdir().expect("tempdir");
    for copy in ["node-1/pod", "node-2/pod"] {
        copy_run(
            "node-openai",
            &t.path().join(copy),
            "20261201T000000Z-d0b1e0",
        );
    }
    let o = idagent(&[
        "policy",
        "learn",
        t.path().to_str().expect("utf-8"),
        "-o",
        "-",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("learned from 1 run)"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("hold the same run (20261201T000000Z-d0b1e0); counted as one run"),
        "{stderr}"
    );
}

fn diff_json(a: &Path, b: &Path) -> (Option<i32>, Value) {
    let o = idagent(&[
        "diff",
        a.to_str().expect("test fixture"),
        b.to_str().expect("test fixture"),
        "--format",
        "json",
    ]);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code(), v)
}

fn kind<'a>(d: &'a Value, name: &str, side: &str) -> Vec<&'a str> {
    d["kinds"]
        .as_array()
        .expect("test fixture")
        .iter()
        .find(|k| k["kind"] == name)
        .expect("test fixture")[side]
        .as_array()
        .expect("test fixture")
        .iter()
        .map(|v| v.as_str().expect("test fixture"))
        .collect()
}

#[test]
fn diff_compares_the_union_of_each_trees_runs() {
    let t = tempfile::tempdir().expect("test fixture");
    // Before: python-scrape and node-openai, 4 runs; after: the same plus go-escape, 6 runs.
    let (before, after) = (t.path().join("before"), t.path().join("after"));
    for (i, name) in CAPTURES.iter().enumerate() {
        for copy in 0..2 {
            let id = format!("20261201T000000Z-{i}{copy}0000");
            if i < 2 {
                copy_run(name, &before.join(format!("{name}/{copy}")), &id);
            }
            copy_run(name, &after.join(format!("v2/{name}-{copy}")), &id);
        }
    }
    let (code, d) = diff_json(&before, &after);
    assert_eq!(code, Some(1), "{d}");
    assert_eq!(
        (d["runs_a"].as_u64(), d["runs_b"].as_u64()),
        (Some(4), Some(6))
    );
    // go-escape's refused writes are new; nothing the first two did is gone.
    let denied = kind(&d, "denied", "new");
    assert!(
        denied.iter().any(|w| w.contains("/etc/idagent-escape")),
        "{d}"
    );
    for k in ["dns", "destination", "http", "file", "exec", "denied"] {
        assert!(kind(&d, k, "gone").is_empty(), "{k} gone: {d}");
    }
    // A tree against itself: nothing new.
    let (code, d) = diff_json(&after, &after);
    assert_eq!(code, Some(0), "{d}");
    // A tree against one of its runs: what the other captures did is gone.
    let (code, d) = diff_json(&after, &after.join("v2/go-escape-0"));
    assert_eq!(code, Some(0), "{d}");
    assert!(kind(&d, "dns", "gone").contains(&"www.google.com"), "{d}");
    let text = idagent(&[
        "diff",
        before.to_str().expect("test fixture"),
        after.to_str().expect("test fixture"),
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .next()
            .expect("test fixture")
            .contains("(4 runs) →"),
        "{text}"
    );
}

#[test]
fn report_summary_is_one_table_over_the_tree() {
    let t = tempfile::tempdir().expect("test fixture");
    let (root, outside) = (t.path().join("tree"), t.path().join("outside"));
    build_tree(&root, &outside);
    let o = idagent(&[
        "report",
        "--summary",
        root.to_str().expect("test fixture"),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).expect("test fixture");
    let runs = s["runs"].as_array().expect("test fixture");
    assert_eq!(runs.len(), 20);
    let folders: Vec<&str> = runs
        .iter()
        .map(|r| r["folder"].as_str().expect("test fixture"))
        .collect();
    let mut sorted = folders.clone();
    sorted.sort();
    assert_eq!(folders, sorted, "runs are in path order");
    assert!(!folders
        .iter()
        .any(|f| f.contains("workspace") || f.contains("linked")));
    assert_eq!(s["totals"]["runs"], 20);
    assert_eq!(s["totals"]["exited_zero"], 20);
    // i % 3 == 0 for 7 of 0..20: python-scrape, one google request each.
    let google = s["destinations"]
        .as_array()
        .expect("test fixture")
        .iter()
        .find(|d| d["destination"] == "www.google.com")
        .expect("www.google.com");
    assert_eq!(google["runs"], 7, "{google}");
    assert_eq!(google["requests"], 7, "{google}");
    // go-escape (6 of 20) has six refused writes each.
    assert_eq!(s["totals"]["writes_denied"], 36, "{}", s["totals"]);
    let escape = s["denials"]
        .as_array()
        .expect("test fixture")
        .iter()
        .find(|d| d["target"] == "/etc/idagent-escape")
        .expect("/etc/idagent-escape");
    assert_eq!(
        (escape["count"].as_u64(), escape["runs"].as_u64()),
        (Some(6), Some(6))
    );
    assert!(s["notices"][0]
        .as_str()
        .expect("test fixture")
        .contains("symlink"));

    let o = idagent(&["report", "--summary", root.to_str().expect("test fixture")]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("20 run(s), 20 exited 0"), "{text}");
    assert!(text.contains("ns-b/deep/er/still/pod-03"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("TOTAL")),
        "{text}"
    );
    assert!(text.lines().all(|l| l.chars().count() < 120), "{text}");
}

#[test]
fn report_summary_escapes_guest_strings() {
    let t = tempfile::tempdir().expect("test fixture");
    let dir = t.path().join("one");
    copy_run("python-scrape", &dir, "20261201T000000Z-e5c000");
    // A name the guest chose, carrying a terminal escape (as JSON writes it).
    let log = std::fs::read_to_string(dir.join("audit.jsonl")).expect("test fixture");
    let hostile = log.replace("www.google.com", "www.google.com\\u001b[2J");
    std::fs::write(dir.join("audit.jsonl"), hostile).expect("test fixture");
    let o = idagent(&[
        "report",
        "--summary",
        t.path().to_str().expect("test fixture"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("www.google.com\\u{1b}[2J"), "{text}");
}

//! `idagent export --format ocsf` over the committed reference captures (real runs' logs):
//! the OCSF classes per audit kind, `type_uid`, valid JSON on every line, credentials only as
//! fingerprints, and the error paths. Needs no container.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

const IDAGENT: &str = env!("CARGO_BIN_EXE_idagent");
const CAPTURES: [&str; 3] = ["python-scrape", "node-openai", "go-escape"];

fn capture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("captures")
        .join(name)
}

fn export(dir: &Path) -> Output {
    std::process::Command::new(IDAGENT)
        .args(["export", "--format", "ocsf"])
        .arg(dir)
        .output()
        .expect("run idagent")
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn captures_map_to_their_classes() {
    let mut seen = std::collections::BTreeSet::new();
    for name in CAPTURES {
        let out = export(&capture(name));
        assert!(out.status.success(), "{name}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("skipped (no OCSF class)"), "{stderr}");
        assert!(stderr.contains("run_start 1"), "{stderr}");
        let ev = events(&out);
        assert!(!ev.is_empty(), "{name}");
        for e in &ev {
            let kind = e["unmapped"]["kind"].as_str().expect("kind");
            let class = e["class_uid"].as_u64().expect("class_uid");
            let want = match kind {
                "dns" => 4003,
                "tcp" | "tls" | "udp" | "blocked" => 4001,
                "http" => 4002,
                "file" => 1001,
                "exec" | "exec_ran" | "exit" => 1007,
                "decision" => 2004,
                other => panic!("{name}: unexpected kind {other} exported"),
            };
            assert_eq!(class, want, "{name}: {e}");
            assert_eq!(e["category_uid"].as_u64(), Some(class / 1000));
            let activity = e["activity_id"].as_u64().expect("activity_id");
            assert_eq!(e["type_uid"].as_u64(), Some(class * 100 + activity), "{e}");
            assert!(e["time"].as_i64().expect("time") > 1_700_000_000_000, "{e}");
            assert_eq!(e["metadata"]["version"], "1.1.0");
            assert_eq!(e["metadata"]["product"]["name"], "idagent");
            let run = e["metadata"]["correlation_uid"].as_str().expect("run");
            assert!(e["metadata"]["uid"]
                .as_str()
                .expect("uid")
                .starts_with(&format!("{run}:")));
            assert!(e["severity_id"].is_u64() && e["status_id"].is_u64(), "{e}");
            seen.insert(kind.to_owned());
        }
    }
    for kind in ["dns", "tcp", "tls", "http", "file", "exec", "exit"] {
        assert!(seen.contains(kind), "no {kind} exported: {seen:?}");
    }
}

#[test]
fn http_facts_and_credentials_only_as_fingerprints() {
    let out = export(&capture("node-openai"));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // The key node-openai sent against the fakes (`idagent audit`'s made-up key).
    assert!(
        !text.contains("sk-idagent-audit-0000000000000000DEMO"),
        "{text}"
    );
    let ev = events(&out);
    let http = ev
        .iter()
        .find(|e| e["class_uid"] == 4002)
        .expect("an http event");
    assert_eq!(http["activity_id"], 6, "POST");
    assert_eq!(http["http_request"]["http_method"], "POST");
    assert_eq!(http["http_request"]["url"]["hostname"], "api.openai.com");
    assert_eq!(http["http_request"]["url"]["path"], "/v1/chat/completions");
    assert_eq!(http["http_response"]["code"], 200);
    assert_eq!(
        http["unmapped"]["credentials"],
        serde_json::json!(["bearer:…DEMO:sha256=06713bce"])
    );
    assert!(http["dst_endpoint"]["ip"].is_string(), "{http}");
}

#[test]
fn output_file_torn_line_and_missing_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    let mut log = std::fs::read_to_string(capture("go-escape").join("audit.jsonl")).expect("log");
    let lines = log.lines().count();
    log.push_str("{\"v\":1,\"seq\":99,\"kind\":\"fi");
    std::fs::write(run.join("audit.jsonl"), log).expect("write");
    let file = tmp.path().join("out.jsonl");
    let out = std::process::Command::new(IDAGENT)
        .args(["export", "--format", "ocsf", "-o"])
        .arg(&file)
        .arg(&run)
        .output()
        .expect("run idagent");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let torn = format!("line {} is torn", lines + 1);
    assert!(stderr.contains(&torn), "{stderr}");
    let written = std::fs::read_to_string(&file).expect("output");
    assert!(written.lines().count() > 5);
    for l in written.lines() {
        serde_json::from_str::<Value>(l).expect("valid JSON");
    }

    let missing = tmp.path().join("nothing-here");
    let out = export(&missing);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit.jsonl"));
}

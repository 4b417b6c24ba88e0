//! Milestone 3 acceptance: the three victims, in three languages, that know nothing about
//! idagent, judged by what a user sees — the audit log, the run's workspace, the pcapng read
//! back by tshark, the files on the host and in the image — and `idagent audit`'s verdict.

mod common;
use common::*;
use idagent_fakes::{start_blocking, FakeServer, FakesHandle};
use serde_json::Value;

const KEY: &str = "sk-proj-idagent-e2e-5a4b3c2d1e0f9a8bQRST";

fn fakes() -> (tempfile::TempDir, FakesHandle) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = start_blocking(dir.path()).expect("start fakes");
    (dir, fakes)
}

fn victim(fakes: &FakesHandle, name: &str, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec!["--offline".into()];
    args.extend(fakes.idagent_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("victims/{name}"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    idagent_run(&refs)
}

#[test]
fn python_scrape_is_logged_and_its_file_kept() {
    let (_dir, fakes) = fakes();
    let run = victim(&fakes, "python-scrape", &[]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let get = run
        .of_kind("http")
        .find(|e| e["method"] == "GET" && e["url"] == "https://www.google.com/")
        .unwrap_or_else(|| panic!("no GET https://www.google.com/\n{}", run.explain()));
    assert_eq!(get["status"], 200);
    let answers: Vec<&str> = run
        .of_kind("dns")
        .filter(|e| e["name"] == "www.google.com")
        .flat_map(|e| e["answers"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let tcp = run
        .of_kind("tcp")
        .find(|e| e["flow"] == get["flow"] && e["phase"] == "open")
        .expect("tcp open of the request's flow");
    assert_eq!(tcp["name"], "www.google.com");
    let dst_ip = tcp["dst"]
        .as_str()
        .expect("dst")
        .rsplit_once(':')
        .expect("port")
        .0
        .trim_matches(['[', ']']);
    assert!(
        answers.contains(&dst_ip),
        "flow went to {dst_ip}, dns answered {answers:?}"
    );
    // The page in the run's workspace is byte for byte what the fake served.
    let saved =
        std::fs::read(run.run_dir().join("workspace/google.html")).expect("google.html kept");
    assert_eq!(saved, idagent_fakes::google_html());
    assert!(run
        .of_kind("file")
        .any(|e| e["path"] == "/tmp/workspace/google.html"
            && e["outcome"] == "ok"
            && e["sha256"] == sha256_hex(idagent_fakes::google_html())));
    assert_eq!(
        tshark(
            &run.run_dir().join("traffic.pcapng"),
            &["http.request.method", "http.request.full_uri"],
            "http.request"
        ),
        ["GET https://www.google.com/"]
    );
    // `idagent report` summarises the run for a person.
    let report = std::process::Command::new(IDAGENT)
        .arg("report")
        .arg(run.run_dir())
        .output()
        .expect("idagent report");
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        text.contains("https://www.google.com/") && text.contains("/tmp/workspace/google.html"),
        "{text}"
    );
    // The run's report.html renders in a real browser and shows the victim's request.
    let page = run.run_dir().join("report.html");
    assert!(page.exists(), "no report.html");
    if std::env::var("IDAGENT_SKIP_BROWSER").as_deref() != Ok("1") {
        assert!(
            chromium().is_some(),
            "chromium missing (apt-get install -y chromium, or IDAGENT_SKIP_BROWSER=1)"
        );
        let dom = run_chromium(&page, &["--dump-dom"]);
        assert!(
            dom.contains("https://www.google.com/") && dom.contains("google.html"),
            "report.html lacks the request"
        );
    }
}

#[test]
fn node_openai_is_logged_with_its_body_and_only_a_fingerprint_of_the_key() {
    let (_dir, fakes) = fakes();
    let env = format!("OPENAI_API_KEY={KEY}");
    let run = victim(&fakes, "node-openai", &["--env", &env]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    assert!(
        run.stdout().contains(idagent_fakes::OPENAI_REPLY),
        "{}",
        run.explain()
    );
    let post = run
        .of_kind("http")
        .find(|e| e["method"] == "POST" && e["url"] == "https://api.openai.com/v1/chat/completions")
        .unwrap_or_else(|| panic!("no POST chat completion\n{}", run.explain()));
    assert_eq!(post["status"], 200);
    let body: Value = serde_json::from_str(post["req_body"].as_str().expect("req_body"))
        .expect("captured body is the JSON");
    assert!(
        body["messages"].is_array() && body["model"].is_string(),
        "{body}"
    );
    // The fake received the real key; the log has only its fingerprint.
    let got = fakes.requests_to(FakeServer::OpenAiHttps);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let audit = std::fs::read_to_string(run.run_dir().join("audit.jsonl")).expect("audit");
    assert!(
        !audit.contains(KEY) && !audit.contains(&KEY[8..]),
        "the key leaked into the log"
    );
    assert!(
        post["credentials"].as_array().is_some_and(|c| c
            .iter()
            .any(|f| f.as_str().is_some_and(|f| f.contains("…QRST:sha256=")))),
        "{post}"
    );
    assert_eq!(
        tshark(
            &run.run_dir().join("traffic.pcapng"),
            &["http.request.method", "http.request.full_uri"],
            "http.request"
        ),
        ["POST https://api.openai.com/v1/chat/completions"]
    );
}

#[test]
fn node_openai_without_a_key_says_so() {
    let (_dir, fakes) = fakes();
    let run = victim(&fakes, "node-openai", &[]);
    assert_eq!(run.code(), Some(2), "{}", run.explain());
    assert!(
        run.stderr().contains("OPENAI_API_KEY is not set"),
        "{}",
        run.explain()
    );
    assert!(fakes.requests().is_empty());
}

#[test]
fn go_escape_is_refused_outside_and_allowed_inside() {
    let (_dir, fakes) = fakes();
    let run = victim(&fakes, "go-escape", &[]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    for path in [
        "/etc/idagent-escape",
        "/usr/local/bin/idagent-escape",
        "/idagent-escape",
    ] {
        assert!(
            run.of_kind("file")
                .any(|e| e["path"] == path && e["outcome"] == "denied" && e["errno"] == "EROFS"),
            "{path} not denied\n{}",
            run.explain()
        );
        assert!(
            !std::path::Path::new(path).exists(),
            "{path} exists on the host"
        );
    }
    assert!(run
        .of_kind("file")
        .any(|e| e["path"] == "/tmp/workspace/go-escape.txt" && e["outcome"] == "ok"));
    let image = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", GUEST_IMAGE, "sh", "-c", "ls /etc/idagent-escape /usr/local/bin/idagent-escape /idagent-escape 2>/dev/null | wc -l"])
        .output()
        .expect("docker run");
    assert_eq!(
        String::from_utf8_lossy(&image.stdout).trim(),
        "0",
        "escape files in the image"
    );
}

#[test]
fn idagent_audit_prints_pass() {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("audit");
    let out = std::process::Command::new(IDAGENT)
        .args(["audit", "--run-root"])
        .arg(&root)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("idagent audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("VERDICT: PASS"), "{stdout}");
    for line in [
        "GET     200  https://www.google.com/",
        "POST    200  https://api.openai.com/v1/chat/completions",
        "/etc/idagent-escape",
    ] {
        assert!(stdout.contains(line), "missing {line:?}\n{stdout}");
    }
    let verdict: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("verdict.json")).expect("verdict.json"),
    )
    .expect("json");
    assert_eq!(verdict["pass"], true);
    for v in ["python-scrape", "node-openai", "go-escape"] {
        let events = read_audit(&root.join(v).join("audit.jsonl"));
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1));
        }
        assert_no_leftovers(events[0]["run"].as_str().expect("run id"));
    }
}

//! `idagent audit`: the multi-language audit of the client's brief, and its verdict.
//!
//! Owns: running the three victims (Python, Node.js, Go) one after another — against the
//! hermetic fakes by default, or the real services with `--real` — and judging their audit
//! logs against the success criterion: *the gateway logs the Python and Node.js network
//! requests, and the container runtime blocks the Go binary's write outside /tmp/workspace*.
//! The judging is pure ([`judge`]) over the typed records a run wrote; nothing here trusts a victim's
//! own output. Does not own: running a guest (`sandbox`) or serving fakes (`idagent-fakes`).

use crate::audit::{EventBody, FileEvent, Outcome, Record};
use serde::Serialize;

/// The three victims, in the order they run.
pub const VICTIMS: [Victim; 3] = [Victim::PythonScrape, Victim::NodeOpenai, Victim::GoEscape];

/// Writes the Go victim must be refused (from victims/go-escape).
pub const GO_OUTSIDE_PATHS: [&str; 3] = [
    "/etc/idagent-escape",
    "/usr/local/bin/idagent-escape",
    "/idagent-escape",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Victim {
    PythonScrape,
    NodeOpenai,
    GoEscape,
}

impl Victim {
    pub fn dir_name(self) -> &'static str {
        match self {
            Victim::PythonScrape => "python-scrape",
            Victim::NodeOpenai => "node-openai",
            Victim::GoEscape => "go-escape",
        }
    }

    /// What the criterion asks of this victim, in words.
    pub fn expectation(self) -> &'static str {
        match self {
            Victim::PythonScrape => "gateway logs GET https://www.google.com/ (200)",
            Victim::NodeOpenai => {
                "gateway logs POST https://api.openai.com/v1/chat/completions (200)"
            }
            Victim::GoEscape => {
                "runtime refuses every write outside /tmp/workspace (EROFS), logged as denied"
            }
        }
    }
}

/// One logged HTTP exchange, as the verdict shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub status: Option<u64>,
}

/// One file event, as the verdict shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileLine {
    pub op: String,
    pub path: String,
    pub detail: String,
}

/// What one victim did and whether it meets its part of the criterion.
#[derive(Debug, Clone, Serialize)]
pub struct VictimVerdict {
    pub victim: Victim,
    pub run_dir: String,
    pub exit_code: Option<i64>,
    pub requests: Vec<Request>,
    pub files_written: Vec<FileLine>,
    pub writes_denied: Vec<FileLine>,
    pub pass: bool,
    /// Why it failed, when it did.
    pub reasons: Vec<String>,
}

/// Judges one victim's audit records. Pure.
pub fn judge(victim: Victim, run_dir: &str, events: &[Record]) -> VictimVerdict {
    let files = || {
        events.iter().filter_map(|r| match &r.body {
            EventBody::File(f) => Some(f),
            _ => None,
        })
    };
    let requests: Vec<Request> = events
        .iter()
        .filter_map(|r| match &r.body {
            EventBody::Http(h) => Some(Request {
                method: h.method.clone(),
                url: h.url.clone(),
                status: h.status.map(u64::from),
            }),
            _ => None,
        })
        .collect();
    let files_written: Vec<FileLine> = files()
        .filter(|f| f.outcome == Outcome::Ok && f.path.starts_with(crate::GUEST_WORKSPACE))
        .map(file_line)
        .collect();
    let writes_denied: Vec<FileLine> = files()
        .filter(|f| f.outcome == Outcome::Denied)
        .map(file_line)
        .collect();
    let exit_code = events.iter().rev().find_map(|r| match &r.body {
        EventBody::RunEnd(end) => Some(end.exit_code),
        _ => None,
    });
    let exit_code = exit_code.flatten();
    let mut reasons = Vec::new();
    let has_request = |method: &str, url: &str| {
        requests
            .iter()
            .any(|r| r.method == method && r.url == url && r.status == Some(200))
    };
    match victim {
        Victim::PythonScrape => {
            if !has_request("GET", "https://www.google.com/") {
                reasons.push("no GET https://www.google.com/ with status 200 in the log".into());
            }
        }
        Victim::NodeOpenai => {
            if !has_request("POST", "https://api.openai.com/v1/chat/completions") {
                reasons.push(
                    "no POST https://api.openai.com/v1/chat/completions with status 200 in the log"
                        .into(),
                );
            }
        }
        Victim::GoEscape => {
            for path in GO_OUTSIDE_PATHS {
                let denied = writes_denied
                    .iter()
                    .any(|f| f.path == path && f.detail.starts_with("EROFS"));
                if !denied {
                    reasons.push(format!("no denied (EROFS) write of {path} in the log"));
                }
            }
            let escaped = files().any(|f| {
                f.outcome == Outcome::Ok
                    && !f.path.starts_with(crate::GUEST_WORKSPACE)
                    && !f.path.starts_with("/dev/")
            });
            if escaped {
                reasons.push("a write outside /tmp/workspace was allowed".into());
            }
        }
    }
    if events.is_empty() {
        reasons.push("no audit log".into());
    }
    VictimVerdict {
        victim,
        run_dir: run_dir.to_owned(),
        exit_code,
        requests,
        files_written,
        writes_denied,
        pass: reasons.is_empty(),
        reasons,
    }
}

fn file_line(f: &FileEvent) -> FileLine {
    let detail = match f.outcome {
        Outcome::Denied => format!(
            "{} by {}",
            f.errno.as_deref().unwrap_or("denied"),
            f.exe.as_deref().unwrap_or("?")
        ),
        Outcome::Ok => match (f.size, &f.sha256) {
            (Some(size), Some(sha)) => {
                format!("{size} B sha256 {}", sha.get(..12).unwrap_or(sha))
            }
            (Some(size), None) => format!("{size} B"),
            _ => String::new(),
        },
    };
    FileLine {
        op: serde_json::to_string(&f.op)
            .map(|s| s.trim_matches('"').to_owned())
            .unwrap_or_default(),
        path: f.path.clone(),
        detail,
    }
}

/// The whole audit: PASS only if every victim passes.
#[derive(Debug, Clone, Serialize)]
pub struct AuditVerdict {
    pub victims: Vec<VictimVerdict>,
    pub pass: bool,
    /// `fakes` or `real`.
    pub upstreams: String,
}

impl AuditVerdict {
    pub fn new(victims: Vec<VictimVerdict>, upstreams: &str) -> Self {
        let pass = victims.len() == VICTIMS.len() && victims.iter().all(|v| v.pass);
        Self {
            victims,
            pass,
            upstreams: upstreams.to_owned(),
        }
    }

    /// The table a reviewer reads in the terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "\nidagent audit — Milestone 3 verdict (upstreams: {})\n",
            self.upstreams
        ));
        out.push_str(
            "criterion: the gateway logs the Python and Node.js network requests, and the\n",
        );
        out.push_str(
            "           container runtime blocks the Go binary's write outside /tmp/workspace\n",
        );
        for v in &self.victims {
            out.push_str(&format!(
                "\n== {} — {} (exit {}) — {}\n   run: {}\n",
                v.victim.dir_name(),
                if v.pass { "PASS" } else { "FAIL" },
                v.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                v.victim.expectation(),
                v.run_dir
            ));
            out.push_str("   network requests:\n");
            if v.requests.is_empty() {
                out.push_str("     (none)\n");
            }
            for r in &v.requests {
                let status = r
                    .status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into());
                out.push_str(&format!(
                    "     {:<7} {:<4} {}\n",
                    r.method,
                    status,
                    clip(&r.url, 90)
                ));
            }
            out.push_str("   files written:\n");
            if v.files_written.is_empty() {
                out.push_str("     (none)\n");
            }
            for f in &v.files_written {
                out.push_str(&format!(
                    "     {:<8} {:<48} {}\n",
                    f.op,
                    clip(&f.path, 48),
                    f.detail
                ));
            }
            out.push_str("   writes denied:\n");
            if v.writes_denied.is_empty() {
                out.push_str("     (none)\n");
            }
            for f in &v.writes_denied {
                out.push_str(&format!(
                    "     {:<10} {:<40} {}\n",
                    f.op,
                    clip(&f.path, 40),
                    f.detail
                ));
            }
            for reason in &v.reasons {
                out.push_str(&format!("   ✗ {reason}\n"));
            }
        }
        out.push_str(&format!(
            "\nVERDICT: {}\n",
            if self.pass { "PASS" } else { "FAIL" }
        ));
        out
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A record from the JSON of its body (as the writer would have written it).
    fn rec(body: serde_json::Value) -> Record {
        let mut line = json!({"v": 1, "seq": 1, "ts": "2026-01-01T00:00:00Z", "run": "r"});
        if let (Some(l), Some(b)) = (line.as_object_mut(), body.as_object()) {
            l.extend(b.clone());
        }
        serde_json::from_value(line).expect("a valid record")
    }

    fn http(method: &str, url: &str, status: u64) -> Record {
        rec(
            json!({"kind": "http", "flow": 1, "method": method, "url": url, "status": status,
            "req_headers": [], "resp_headers": [], "req_bytes": 0, "resp_bytes": 0,
            "req_sha256": "", "resp_sha256": "", "req_body": "", "resp_body": "",
            "duration_ms": 1}),
        )
    }

    fn file(op: &str, path: &str, outcome: &str) -> Record {
        rec(json!({"kind": "file", "op": op, "path": path, "outcome": outcome}))
    }

    fn denied(path: &str) -> Record {
        rec(
            json!({"kind": "file", "op": "open_write", "path": path, "outcome": "denied", "errno": "EROFS", "exe": "/opt/victims/go-escape/go-escape"}),
        )
    }

    #[test]
    fn python_passes_only_with_the_logged_request() {
        let ok = [
            http("GET", "https://www.google.com/", 200),
            rec(json!({"kind": "run_end", "exit_code": 0})),
        ];
        assert!(judge(Victim::PythonScrape, "r", &ok).pass);
        let wrong_status = [http("GET", "https://www.google.com/", 502)];
        assert!(!judge(Victim::PythonScrape, "r", &wrong_status).pass);
        assert!(!judge(Victim::PythonScrape, "r", &[]).pass);
    }

    #[test]
    fn node_needs_the_chat_completion() {
        let ok = [http(
            "POST",
            "https://api.openai.com/v1/chat/completions",
            200,
        )];
        assert!(judge(Victim::NodeOpenai, "r", &ok).pass);
        let get = [http(
            "GET",
            "https://api.openai.com/v1/chat/completions",
            200,
        )];
        assert!(!judge(Victim::NodeOpenai, "r", &get).pass);
    }

    #[test]
    fn go_needs_every_outside_write_denied_and_none_allowed() {
        let mut events: Vec<Record> = GO_OUTSIDE_PATHS.iter().map(|p| denied(p)).collect();
        events.push(rec(json!({"kind": "file", "op": "create", "path": "/tmp/workspace/go-escape.txt", "outcome": "ok", "size": 3, "sha256": "abc"})));
        let v = judge(Victim::GoEscape, "r", &events);
        assert!(v.pass, "{:?}", v.reasons);
        assert_eq!(v.files_written.len(), 1);
        events.push(file("open_write", "/etc/passwd", "ok"));
        assert!(!judge(Victim::GoEscape, "r", &events).pass);
        let missing = [denied("/etc/idagent-escape")];
        assert_eq!(judge(Victim::GoEscape, "r", &missing).reasons.len(), 2);
    }

    #[test]
    fn audit_passes_only_when_all_three_pass() {
        let pass = |victim| VictimVerdict {
            victim,
            run_dir: String::new(),
            exit_code: Some(0),
            requests: vec![],
            files_written: vec![],
            writes_denied: vec![],
            pass: true,
            reasons: vec![],
        };
        let all = AuditVerdict::new(VICTIMS.iter().map(|v| pass(*v)).collect(), "fakes");
        assert!(all.pass && all.render().contains("VERDICT: PASS"));
        let two = AuditVerdict::new(
            vec![pass(Victim::PythonScrape), pass(Victim::GoEscape)],
            "fakes",
        );
        assert!(!two.pass);
    }
}

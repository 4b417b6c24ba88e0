//! The policy runs of the interceptor bench: a generated policy of 1,000 HTTP rules (100 hosts ×
//! 10 paths) in enforce mode that allows the bench's own request, and the check that a run under
//! it allowed every request (its `decision` events).
//!
//! Owns: the policy text and reading the run's audit log. Does not own: running idagent or
//! the report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Hosts × paths per host of the generated policy.
const HOSTS: usize = 100;
const PATHS: usize = 10;
/// Where `name` sits among the generated hosts (in the middle, not first).
const BENCH_HOST_AT: usize = 57;

/// Writes the 1,000-rule policy to `dir/policy.yaml` and returns its path. Network is
/// enforced; exec and files are in report mode (the bench measures the HTTP decision, not the
/// guest's programs). `name`:443 `GET path` is one of the 1,000 rules, the last of its host.
pub fn write(dir: &Path, name: &str, path: &str) -> std::io::Result<PathBuf> {
    let text = generate(name, path);
    let file = dir.join("policy.yaml");
    std::fs::write(&file, text)?;
    Ok(file)
}

fn generate(name: &str, bench_path: &str) -> String {
    let mut y = String::from("version: 1\nmode: enforce\nnetwork:\n  rules:\n");
    for h in 0..HOSTS {
        let host = if h == BENCH_HOST_AT {
            name.to_owned()
        } else {
            format!("svc{h}.example.com")
        };
        let _ = write!(
            y,
            "    - host: {host}\n      port: 443\n      protocol: https\n      inspect: l7\n      http:\n"
        );
        for p in 0..PATHS {
            let (method, path) = match p {
                _ if h == BENCH_HOST_AT && p == PATHS - 1 => ("GET", bench_path.to_owned()),
                0 => ("GET", format!("/api/v{h}/items")),
                1 => ("GET", format!("/api/v{h}/items/{{id}}")),
                2 => ("POST", format!("/api/v{h}/items")),
                3 => ("PUT", format!("/api/v{h}/items/{{id}}")),
                4 => ("DELETE", format!("/api/v{h}/items/{{id}}")),
                5 => ("GET", format!("/api/v{h}/users/{{id}}/orders/{{order}}")),
                6 => ("GET", format!("/static/{h}/**")),
                7 => ("GET", format!("/small{h}")),
                _ => ("GET", format!("/health/{p}")),
            };
            let _ = writeln!(y, "        - {{method: {method}, path: \"{path}\"}}");
        }
    }
    y.push_str("exec:\n  mode: report\n  rules: []\nfiles:\n  mode: report\n  rules: []\n");
    y
}

/// The `decision` events of one run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Decisions {
    /// `http` decisions that allowed.
    pub http_allowed: u64,
    /// Network decisions (dns, connect, tls, http, datagram) that denied, in any mode.
    pub net_denied: u64,
    /// Decisions of any layer that refused something (`enforced_by` set).
    pub enforced: u64,
    /// Exec and file decisions that would deny (their sections are in report mode).
    pub report_denied: u64,
    pub total: u64,
}

/// Counts the `decision` events in `run_dir/audit.jsonl`.
pub fn decisions(run_dir: &Path) -> std::io::Result<Decisions> {
    let text = std::fs::read_to_string(run_dir.join("audit.jsonl"))?;
    let mut d = Decisions::default();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if e["kind"] != "decision" {
            continue;
        }
        d.total += 1;
        let net = !matches!(e["layer"].as_str(), Some("exec" | "file"));
        let deny = e["verdict"] == "deny";
        d.net_denied += u64::from(net && deny);
        d.report_denied += u64::from(!net && deny);
        d.enforced += u64::from(e.get("enforced_by").is_some_and(|v| !v.is_null()));
        d.http_allowed += u64::from(e["layer"] == "http" && e["verdict"] == "allow");
    }
    Ok(d)
}

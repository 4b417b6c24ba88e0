//! `idagent report --summary DIR`: one view over every run under a folder (what a cluster's
//! volume or log pipeline collects): a row per run, the destinations all runs contacted, the
//! denials and blocked attempts, and a totals row.
//!
//! Owns folding many [`RunReport`]s into a [`Summary`] and its text rendering. Each run is
//! read by the one-run report ([`super::load`]) and dropped once folded, so memory is that of
//! the largest run plus the aggregate tables (each at most [`MAX_ROWS`] rows; the rest are
//! counted in [`Summary::omitted`]). Does not own finding the runs
//! (`policy_cmd::tree`: sorted, symlinks not followed, capped) nor reading a log. Guest
//! strings are made inert by the text report's table writer.

use super::text::{fit_line, inert, table};
use super::timeline::fmt_duration;
use super::{ReportError, RunReport, MAX_ROWS};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// Version of the [`Summary`] JSON shape (`--summary --format json`).
pub const SUMMARY_SCHEMA_VERSION: u32 = 1;

/// [`DenialRow::kind`]s, in output order.
const DENIAL_KINDS: [&str; 4] = ["denied", "would_deny", "blocked", "write_denied"];

/// Every run under one folder (the `--summary --format json` output).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// [`SUMMARY_SCHEMA_VERSION`].
    pub summary_version: u32,
    /// The folder searched.
    pub root: String,
    /// One row per run folder, in path order.
    pub runs: Vec<RunRow>,
    pub totals: Totals,
    /// Every destination any run contacted, most runs first.
    pub destinations: Vec<DestinationRow>,
    /// Policy denials, would-be denials (report mode), blocked attempts and writes the
    /// filesystem refused, in that order, each most often first.
    pub denials: Vec<DenialRow>,
    /// From the search (symlinks not followed) and the runs' logs (warnings per run).
    pub notices: Vec<String>,
    /// Rows left out of `destinations` / `denials` over [`MAX_ROWS`].
    pub omitted: BTreeMap<String, u64>,
}

/// One run.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunRow {
    pub run: Option<String>,
    /// The run folder, relative to the searched folder.
    pub folder: String,
    pub started: Option<String>,
    pub exit_code: Option<i64>,
    pub end_reason: Option<String>,
    pub duration_ms: Option<u64>,
    pub destinations: u64,
    pub requests: u64,
    pub files_written: u64,
    pub execs: u64,
    /// Requests the policy refused (enforce mode), counting repeats.
    pub denied: u64,
    /// Requests the policy would have refused (report mode), counting repeats.
    pub would_deny: u64,
    /// Attempts idagent refused without a policy (SSRF guard, offline, …), counting repeats.
    pub blocked: u64,
    /// Writes the read-only filesystem (or Landlock) refused.
    pub writes_denied: u64,
    /// Problems with the log itself (torn line, `seq` hole, no `run_end`).
    pub warnings: u64,
}

/// The sums over all runs; `destinations` counts distinct destinations.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub runs: u64,
    pub exited_zero: u64,
    pub duration_ms: u64,
    pub destinations: u64,
    pub requests: u64,
    pub files_written: u64,
    pub execs: u64,
    pub denied: u64,
    pub would_deny: u64,
    pub blocked: u64,
    pub writes_denied: u64,
    pub warnings: u64,
}

/// One destination over all runs.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DestinationRow {
    /// The DNS name, or the addresses of a name-less destination.
    pub destination: String,
    /// Runs that contacted it.
    pub runs: u64,
    pub dns_queries: u64,
    pub flows: u64,
    pub requests: u64,
    /// Runs in which something to it was blocked.
    pub blocked_in: u64,
}

/// One kind of refusal over all runs.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DenialRow {
    /// `denied`, `would_deny`, `blocked` or `write_denied`.
    pub kind: &'static str,
    /// The policy layer, or what was blocked.
    pub what: String,
    /// The request, or the blocked target.
    pub target: String,
    /// The rule that decided, or why it was blocked.
    pub reason: String,
    pub count: u64,
    pub runs: u64,
}

#[derive(Default)]
struct Acc<T> {
    row: T,
    runs: BTreeSet<usize>,
}

/// Reads every run under `root` (see `policy_cmd::tree::find_runs`) into one [`Summary`].
pub fn load_summary(root: &Path) -> Result<Summary, ReportError> {
    let set = crate::policy_cmd::tree::find_runs(&[root.to_owned()])?;
    let mut s = Summary {
        summary_version: SUMMARY_SCHEMA_VERSION,
        root: root.display().to_string(),
        notices: set.notices,
        ..Summary::default()
    };
    let mut dests: BTreeMap<String, Acc<DestinationRow>> = BTreeMap::new();
    let mut denials: BTreeMap<(&'static str, String, String, String), Acc<DenialRow>> =
        BTreeMap::new();
    for (i, dir) in set.runs.iter().enumerate() {
        let r = super::load(dir)?;
        if !r.warnings.is_empty() {
            s.notices.push(format!(
                "{}: {} warning(s) about the log (see idagent report {})",
                relative(root, dir),
                r.warnings.len(),
                dir.display()
            ));
        }
        fold_destinations(&r, i, &mut dests, &mut s.omitted);
        fold_denials(&r, i, &mut denials, &mut s.omitted);
        s.runs.push(run_row(root, dir, &r));
    }
    s.destinations = finish(dests, |d| d.destination.clone());
    s.denials = finish(denials, |d| d.target.clone());
    // Grouped as the one-run report orders them (enforced denials first), then most often
    // first; stable, so equal counts keep `finish`'s order (most runs, then target).
    s.denials.sort_by_key(|d| {
        (
            DENIAL_KINDS.iter().position(|k| *k == d.kind),
            std::cmp::Reverse(d.count),
        )
    });
    s.totals = totals(&s);
    Ok(s)
}

fn relative(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_owned(),
        Ok(p) => p.display().to_string(),
        Err(_) => dir.display().to_string(),
    }
}

fn run_row(root: &Path, dir: &Path, r: &RunReport) -> RunRow {
    let rows = |n: usize, table: &str| n as u64 + r.omitted.get(table).copied().unwrap_or(0);
    let sum = |rows: &[super::DecisionRow]| rows.iter().map(|d| d.count).sum();
    RunRow {
        run: r.run.clone(),
        folder: relative(root, dir),
        started: r.started.clone(),
        exit_code: r.exit_code,
        end_reason: r.end_reason.clone(),
        duration_ms: r.duration_ms,
        destinations: rows(r.destinations.len(), "destinations"),
        requests: rows(r.requests.len(), "requests"),
        files_written: rows(r.files_written.len(), "files_written"),
        execs: rows(r.processes.len(), "processes"),
        denied: sum(&r.decisions.denied),
        would_deny: sum(&r.decisions.would_deny),
        blocked: r.blocked.iter().map(|b| b.count).sum(),
        writes_denied: rows(r.writes_denied.len(), "writes_denied"),
        warnings: r.warnings.len() as u64,
    }
}

/// `key`'s row (a default one the first time), with run `run` counted in it; `None`, and
/// one more row counted in `omitted[table]`, when the table already holds [`MAX_ROWS`].
fn entry<'a, K: Ord, T: Default>(
    map: &'a mut BTreeMap<K, Acc<T>>,
    key: K,
    run: usize,
    omitted: &mut BTreeMap<String, u64>,
    table: &str,
) -> Option<&'a mut T> {
    if !map.contains_key(&key) && map.len() >= MAX_ROWS {
        *omitted.entry(table.to_owned()).or_default() += 1;
        return None;
    }
    let acc = map.entry(key).or_default();
    acc.runs.insert(run);
    Some(&mut acc.row)
}

fn fold_destinations(
    r: &RunReport,
    run: usize,
    map: &mut BTreeMap<String, Acc<DestinationRow>>,
    omitted: &mut BTreeMap<String, u64>,
) {
    for d in &r.destinations {
        let key = d.name.clone().unwrap_or_else(|| d.addresses.join(" "));
        let Some(row) = entry(map, key.clone(), run, omitted, "destinations") else {
            continue;
        };
        row.destination = key;
        row.dns_queries += d.dns_queries;
        row.flows += d.tcp_flows + d.udp_flows;
        row.requests += d.requests;
        // A run's report has one row per destination, so each run adds at most one here.
        row.blocked_in += u64::from(d.blocked || !d.blocked_reasons.is_empty());
    }
}

type DenialKey = (&'static str, String, String, String);

fn fold_denials(
    r: &RunReport,
    run: usize,
    map: &mut BTreeMap<DenialKey, Acc<DenialRow>>,
    omitted: &mut BTreeMap<String, u64>,
) {
    let decisions = [
        ("denied", &r.decisions.denied),
        ("would_deny", &r.decisions.would_deny),
    ];
    let rows = decisions
        .into_iter()
        .flat_map(|(kind, rows)| {
            rows.iter()
                .map(move |d| (kind, &d.layer, &d.request, &d.rule, d.count))
        })
        .chain(
            r.blocked
                .iter()
                .map(|b| ("blocked", &b.what, &b.target, &b.reason, b.count)),
        );
    let writes = r.writes_denied.iter().map(|w| {
        let errno = w.errno.clone().unwrap_or_default();
        ("write_denied", w.op.clone(), w.path.clone(), errno, 1)
    });
    let rows = rows
        .map(|(k, w, t, r, n)| (k, w.clone(), t.clone(), r.clone(), n))
        .chain(writes);
    for (kind, what, target, reason, count) in rows {
        let key = (kind, what.clone(), target.clone(), reason.clone());
        let Some(row) = entry(map, key, run, omitted, "denials") else {
            continue;
        };
        if row.kind.is_empty() {
            *row = DenialRow {
                kind,
                what,
                target,
                reason,
                ..DenialRow::default()
            };
        }
        row.count += count;
    }
}

/// Rows with their run counts, most runs first, then by `name`.
fn finish<K, T: RunCount>(map: BTreeMap<K, Acc<T>>, name: impl Fn(&T) -> String) -> Vec<T> {
    let mut rows: Vec<T> = map
        .into_values()
        .map(|mut a| {
            a.row.set_runs(a.runs.len() as u64);
            a.row
        })
        .collect();
    rows.sort_by(|a, b| b.runs().cmp(&a.runs()).then_with(|| name(a).cmp(&name(b))));
    rows
}

trait RunCount {
    fn set_runs(&mut self, n: u64);
    fn runs(&self) -> u64;
}

impl RunCount for DestinationRow {
    fn set_runs(&mut self, n: u64) {
        self.runs = n;
    }
    fn runs(&self) -> u64 {
        self.runs
    }
}

impl RunCount for DenialRow {
    fn set_runs(&mut self, n: u64) {
        self.runs = n;
    }
    fn runs(&self) -> u64 {
        self.runs
    }
}

fn totals(s: &Summary) -> Totals {
    let mut t = Totals {
        runs: s.runs.len() as u64,
        destinations: s.destinations.len() as u64 + s.omitted.get("destinations").unwrap_or(&0),
        ..Totals::default()
    };
    for r in &s.runs {
        t.exited_zero += u64::from(r.exit_code == Some(0));
        t.duration_ms += r.duration_ms.unwrap_or(0);
        t.requests += r.requests;
        t.files_written += r.files_written;
        t.execs += r.execs;
        t.denied += r.denied;
        t.would_deny += r.would_deny;
        t.blocked += r.blocked;
        t.writes_denied += r.writes_denied;
        t.warnings += r.warnings;
    }
    t
}

impl Summary {
    /// Pretty JSON, with a trailing newline.
    pub fn to_json(&self) -> String {
        // Plain structs of strings and numbers: serializing cannot fail.
        let mut out = serde_json::to_string_pretty(self).unwrap_or_default();
        out.push('\n');
        out
    }
}

/// `2026-12-01T15:43:46.18Z` → `2026-12-01T15:43:46Z` (the table's column; JSON keeps all).
fn to_seconds(ts: &str) -> String {
    match ts.get(..19) {
        Some(s) if ts.len() > 19 => format!("{s}Z"),
        _ => ts.to_owned(),
    }
}

fn result(r: &RunRow) -> String {
    match (&r.end_reason, r.exit_code) {
        (Some(reason), Some(code)) => format!("{reason} {code}"),
        (Some(reason), None) => reason.clone(),
        (None, _) => "no run_end".to_owned(),
    }
}

/// The summary as plain text for a terminal (lines under 120 characters).
pub fn render_summary_text(s: &Summary) -> String {
    let mut out = String::new();
    let t = &s.totals;
    let _ = writeln!(
        out,
        "{}",
        fit_line(&format!(
            "idagent summary — {}: {} run(s), {} exited 0",
            inert(&s.root),
            t.runs,
            t.exited_zero
        ))
    );
    for n in &s.notices {
        out.push_str(&fit_line(&format!("  NOTICE      {}", inert(n))));
        out.push('\n');
    }
    runs_text(&mut out, s);
    counts_text(&mut out, s);
    destinations_text(&mut out, s);
    denials_text(&mut out, s);
    for (what, n) in &s.omitted {
        let _ = writeln!(out, "\n  {n} more row(s) of {what} not shown (MAX_ROWS)");
    }
    out
}

/// Which runs, when, how they ended: the first half of the per-run table (the counts are
/// the second, so each fits a terminal line).
fn runs_text(out: &mut String, s: &Summary) {
    let _ = write!(out, "\nRuns ({})\n", s.runs.len());
    let t = &s.totals;
    let mut rows: Vec<Vec<String>> = s
        .runs
        .iter()
        .map(|r| {
            vec![
                r.run.clone().unwrap_or_else(|| "—".into()),
                r.started.as_deref().map_or("—".into(), to_seconds),
                result(r),
                r.duration_ms.map_or("—".into(), fmt_duration),
                r.folder.clone(),
            ]
        })
        .collect();
    let first = s.runs.iter().filter_map(|r| r.started.as_deref()).min();
    rows.push(vec![
        "TOTAL".into(),
        first.map_or(String::new(), to_seconds),
        format!("{}/{} exit 0", t.exited_zero, t.runs),
        fmt_duration(t.duration_ms),
        format!("{} run(s)", t.runs),
    ]);
    let cols = [
        ("RUN", 32),
        ("STARTED", 20),
        ("RESULT", 16),
        ("DURATION", 10),
        ("FOLDER", 0),
    ];
    table(out, &cols, &rows);
}

/// What each run did, and the totals.
fn counts_text(out: &mut String, s: &Summary) {
    let _ = write!(out, "\nPer run ({})\n", s.runs.len());
    let count_row = |run: String, c: [u64; 9]| {
        std::iter::once(run)
            .chain(c.iter().map(u64::to_string))
            .collect::<Vec<_>>()
    };
    let mut rows: Vec<Vec<String>> = s
        .runs
        .iter()
        .map(|r| {
            count_row(
                r.run.clone().unwrap_or_else(|| "—".into()),
                [
                    r.destinations,
                    r.requests,
                    r.files_written,
                    r.execs,
                    r.denied,
                    r.would_deny,
                    r.blocked,
                    r.writes_denied,
                    r.warnings,
                ],
            )
        })
        .collect();
    let t = &s.totals;
    rows.push(count_row(
        "TOTAL".into(),
        [
            t.destinations,
            t.requests,
            t.files_written,
            t.execs,
            t.denied,
            t.would_deny,
            t.blocked,
            t.writes_denied,
            t.warnings,
        ],
    ));
    let cols = [
        ("RUN", 32),
        ("DESTINATIONS", 12),
        ("REQUESTS", 8),
        ("FILES", 8),
        ("EXECS", 8),
        ("DENIED", 8),
        ("WOULD DENY", 10),
        ("BLOCKED", 8),
        ("WRITES DENIED", 13),
        ("WARNINGS", 0),
    ];
    table(out, &cols, &rows);
}

fn destinations_text(out: &mut String, s: &Summary) {
    let _ = write!(out, "\nDestinations ({})\n", s.destinations.len());
    if s.destinations.is_empty() {
        out.push_str("  none\n");
        return;
    }
    let rows: Vec<Vec<String>> = s
        .destinations
        .iter()
        .map(|d| {
            vec![
                d.runs.to_string(),
                d.dns_queries.to_string(),
                d.flows.to_string(),
                d.requests.to_string(),
                d.blocked_in.to_string(),
                d.destination.clone(),
            ]
        })
        .collect();
    let cols = [
        ("RUNS", 6),
        ("DNS", 6),
        ("FLOWS", 6),
        ("REQS", 6),
        ("BLOCKED IN", 10),
        ("DESTINATION", 0),
    ];
    table(out, &cols, &rows);
}

fn denials_text(out: &mut String, s: &Summary) {
    let _ = write!(
        out,
        "\nDenials and blocked attempts ({})\n",
        s.denials.len()
    );
    if s.denials.is_empty() {
        out.push_str("  none\n");
        return;
    }
    let rows: Vec<Vec<String>> = s
        .denials
        .iter()
        .map(|d| {
            vec![
                d.kind.to_owned(),
                d.count.to_string(),
                d.runs.to_string(),
                d.what.clone(),
                d.reason.clone(),
                d.target.clone(),
            ]
        })
        .collect();
    let cols = [
        ("KIND", 12),
        ("COUNT", 6),
        ("RUNS", 5),
        ("WHAT", 12),
        ("RULE / REASON", 30),
        ("TARGET", 0),
    ];
    table(out, &cols, &rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// Writes a log for run `run` into `dir`: `bodies` are records without the envelope.
    fn log(dir: &Path, run: &str, bodies: &[String]) {
        std::fs::create_dir_all(dir).expect("test fixture");
        let mut f = std::fs::File::create(dir.join("audit.jsonl")).expect("test fixture");
        for (i, body) in bodies.iter().enumerate() {
            let body = body.trim_start_matches('{');
            let ts = format!("2026-01-01T00:00:{:02}.5Z", i);
            let envelope = format!(r#""v":1,"run":"{run}","seq":{},"ts":"{ts}""#, i + 1);
            writeln!(f, "{{{envelope},{body}").expect("test fixture");
        }
    }

    fn start() -> String {
        r#"{"kind":"run_start","idagent_version":"0.1.0","image":"img","command":["sh"],"user":"1","workspace":"/tmp/workspace","limits":{"memory_bytes":1,"pids":1,"timeout_secs":null},"offline":false,"container":"c"}"#.to_owned()
    }

    fn deny(mode: &str, would: bool) -> String {
        let enforced = if mode == "enforce" {
            r#","enforced_by":"tcp_reset""#
        } else {
            ""
        };
        format!(
            r#"{{"kind":"decision","layer":"connect","verdict":"deny","mode":"{mode}","rule":"default-deny","would_deny":{would}{enforced},"request":{{"addr":"10.1.2.3","port":443,"proto":"tcp"}}}}"#
        )
    }

    fn end(code: i64) -> String {
        format!(
            r#"{{"kind":"run_end","exit_code":{code},"reason":"exited","duration_ms":1500,"counts":{{}}}}"#
        )
    }

    #[test]
    fn folds_runs_denials_and_totals() {
        let t = tempfile::tempdir().expect("test fixture");
        let root = t.path();
        let (d, w) = (deny("enforce", false), deny("report", true));
        log(
            &root.join("b/enforced"),
            "run-b",
            &[start(), d.clone(), d, end(1)],
        );
        log(&root.join("a"), "run-a", &[start(), w.clone(), end(0)]);
        // No run_end: the row says so, and the log's warning is a notice.
        log(&root.join("c/x/cut"), "run-c", &[start(), w]);
        let s = load_summary(root).expect("test fixture");
        let folders: Vec<&str> = s.runs.iter().map(|r| r.folder.as_str()).collect();
        assert_eq!(folders, ["a", "b/enforced", "c/x/cut"]);
        assert_eq!(s.runs[1].denied, 2);
        assert_eq!(s.runs[1].exit_code, Some(1));
        assert_eq!(s.runs[0].would_deny, 1);
        assert_eq!(result(&s.runs[2]), "no run_end");
        let t = &s.totals;
        assert_eq!(
            (t.runs, t.exited_zero, t.denied, t.would_deny),
            (3, 1, 2, 2)
        );
        assert_eq!(t.duration_ms, 3000);
        let kinds: Vec<(&str, u64, u64)> = s
            .denials
            .iter()
            .map(|d| (d.kind, d.count, d.runs))
            .collect();
        assert_eq!(kinds, [("denied", 2, 1), ("would_deny", 2, 2)]);
        assert!(
            s.notices.iter().any(|n| n.starts_with("c/x/cut: ")),
            "{:?}",
            s.notices
        );
        let text = render_summary_text(&s);
        assert!(text.contains("3 run(s), 1 exited 0"), "{text}");
        assert!(text.contains("1/3 exit 0"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).expect("test fixture");
        assert_eq!(json["summary_version"], SUMMARY_SCHEMA_VERSION);
    }

    #[test]
    fn table_columns_keep_whole_seconds() {
        assert_eq!(
            to_seconds("2026-12-01T15:43:46.18015985Z"),
            "2026-12-01T15:43:46Z"
        );
        assert_eq!(to_seconds("2026-12-01T15:43:46Z"), "2026-12-01T15:43:46Z");
        assert_eq!(to_seconds("short"), "short");
    }
}

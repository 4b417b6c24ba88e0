//! The terminal rendering of a [`RunReport`]: a header block, then one aligned table per
//! section. Guest strings are made inert first (control and bidi characters escaped), and
//! every line is kept under [`MAX_LINE_CHARS`].

use super::timeline::{fmt_bytes, fmt_duration, fmt_exit, fmt_offset};
use super::RunReport;
use std::fmt::Write as _;

/// Longest line written (characters).
const MAX_LINE_CHARS: usize = 119;
/// Width of the label column of the header block.
const LABEL: usize = 12;

/// `s` with control characters, bidirectional overrides and the Unicode line and paragraph
/// separators escaped, so guest text cannot move the cursor, recolour the terminal, reorder
/// what the reviewer reads or break a one-line cell.
pub(super) fn inert(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to `max` characters, the last one `…` when cut.
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` cut to the longest line written (callers make guest text [`inert`] first).
pub(super) fn fit_line(s: &str) -> String {
    fit(s, MAX_LINE_CHARS)
}

/// Appends an aligned table: `cols` are (title, widest allowed); the last column takes what
/// is left of the line.
pub(super) fn table(out: &mut String, cols: &[(&str, usize)], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| inert(c)).collect())
        .collect();
    let mut widths: Vec<usize> = cols.iter().map(|(t, _)| t.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let last = cols.len().saturating_sub(1);
    let mut used = 2;
    for (i, (w, (_, max))) in widths.iter_mut().zip(cols).enumerate() {
        if i == last {
            *w = (*w).min(MAX_LINE_CHARS.saturating_sub(used)).max(8);
        } else {
            *w = (*w).min(*max);
            used += *w + 2;
        }
    }
    let titles: Vec<String> = cols.iter().map(|(t, _)| (*t).to_owned()).collect();
    for row in std::iter::once(&titles).chain(&rows) {
        let mut line = String::from("  ");
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            let cell = fit(cell, *w);
            if i == last {
                line.push_str(&cell);
            } else {
                let pad = w.saturating_sub(cell.chars().count());
                line.push_str(&cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(fit(line.trim_end(), MAX_LINE_CHARS).as_str());
        out.push('\n');
    }
}

fn section(out: &mut String, title: &str, n: usize) {
    let _ = write!(out, "\n{title} ({n})\n");
    if n == 0 {
        out.push_str("  none\n");
    }
}

fn header_line(out: &mut String, label: &str, value: &str) {
    let line = format!("  {label:<LABEL$}{}", inert(value));
    out.push_str(&fit(&line, MAX_LINE_CHARS));
    out.push('\n');
}

/// A word list as a shell-like line (arguments with spaces quoted).
pub(super) fn join_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains([' ', '\t', '\n', '"', '\'']) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("—").to_owned()
}

fn header(out: &mut String, r: &RunReport) {
    let _ = writeln!(
        out,
        "idagent run report — {}",
        inert(r.run.as_deref().unwrap_or("unknown run"))
    );
    let mut image = or_dash(r.image.as_deref());
    if let Some(v) = &r.idagent_version {
        image.push_str(&format!("   (idagent {v}"));
        if let Some(u) = &r.user {
            image.push_str(&format!(", user {u}"));
        }
        if r.offline == Some(true) {
            image.push_str(", offline");
        }
        image.push(')');
    }
    header_line(out, "image", &image);
    header_line(out, "command", &join_argv(&r.command));
    header_line(out, "started", &or_dash(r.started.as_deref()));
    header_line(out, "ended", &or_dash(r.ended.as_deref()));
    if let Some(ms) = r.duration_ms {
        header_line(out, "duration", &fmt_duration(ms));
    }
    let result = match (&r.end_reason, r.exit_code) {
        (Some(reason), Some(code)) => format!("{reason}, exit code {code}"),
        (Some(reason), None) => format!("{reason}, no exit code"),
        (None, _) => "unknown: no run_end record".into(),
    };
    header_line(out, "result", &result);
    let counts: Vec<String> = r
        .headline()
        .iter()
        .map(|(label, n)| format!("{n} {label}"))
        .collect();
    header_line(out, "summary", &counts.join(" · "));
    for w in &r.warnings {
        header_line(out, "WARNING", w);
    }
}

/// The report as plain text for a terminal (no colours, lines under 120 characters).
pub fn render_text(r: &RunReport) -> String {
    let mut out = String::new();
    header(&mut out, r);
    tool_calls(&mut out, r);

    section(&mut out, "Destinations", r.destinations.len());
    if !r.destinations.is_empty() {
        let rows: Vec<Vec<String>> = r
            .destinations
            .iter()
            .map(|d| {
                let ports: Vec<String> = d.ports.iter().map(u16::to_string).collect();
                vec![
                    d.name.clone().unwrap_or_else(|| "(address)".into()),
                    d.verdict.clone(),
                    d.addresses.join(" "),
                    ports.join(","),
                    format!("{}", d.tcp_flows + d.udp_flows),
                    format!("{}", d.requests),
                    format!("{}/{}", fmt_bytes(d.bytes_up), fmt_bytes(d.bytes_down)),
                    if d.tls_modes.is_empty() {
                        d.protocols.join(",")
                    } else {
                        format!("{} ({})", d.protocols.join(","), d.tls_modes.join(","))
                    },
                    d.blocked_reasons.join("; "),
                ]
            })
            .collect();
        let cols = [
            ("DESTINATION", 28),
            ("VERDICT", 14),
            ("ADDRESSES", 22),
            ("PORTS", 9),
            ("FLOWS", 5),
            ("REQS", 4),
            ("UP/DOWN", 19),
            ("PROTOCOLS", 20),
            ("REASON", 0),
        ];
        table(&mut out, &cols, &rows);
    }

    section(&mut out, "Requests", r.requests.len());
    if !r.requests.is_empty() {
        let rows: Vec<Vec<String>> = r
            .requests
            .iter()
            .map(|q| {
                vec![
                    fmt_offset(q.at_ms),
                    q.method.clone(),
                    q.status.map_or("—".into(), |s| s.to_string()),
                    q.url.clone(),
                    fmt_bytes(q.req_bytes),
                    fmt_bytes(q.resp_bytes),
                    q.duration_ms.map_or("—".into(), |d| format!("{d} ms")),
                    q.credentials.len().to_string(),
                    q.note.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let cols = [
            ("T+", 9),
            ("METHOD", 7),
            ("STATUS", 6),
            ("URL", 44),
            ("UP", 9),
            ("DOWN", 9),
            ("TIME", 8),
            ("CREDS", 5),
            ("NOTE", 0),
        ];
        table(&mut out, &cols, &rows);
    }

    files(&mut out, r);
    processes(&mut out, r);
    decisions(&mut out, r);
    blocked_and_credentials(&mut out, r);
    out
}

/// MCP / JSON-RPC and gRPC calls in log order; the outcome starts with the HTTP status and
/// ends with the policy's word, if it had one.
fn tool_calls(out: &mut String, r: &RunReport) {
    section(out, "Agent tool calls", r.tool_calls.len());
    if r.tool_calls.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = r
        .tool_calls
        .iter()
        .map(|c| {
            let status = c.http_status.map_or("—".into(), |s| s.to_string());
            // A refusal's outcome is the policy's word (`denied (rule R)`).
            let outcome = match &c.policy {
                Some(p) if c.refused => format!("{status} {p}"),
                Some(p) => format!("{status} {}; {p}", c.outcome),
                None => format!("{status} {}", c.outcome),
            };
            vec![
                fmt_offset(c.at_ms),
                c.protocol.clone(),
                c.server.clone(),
                c.call.clone(),
                outcome,
                c.arguments.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let cols = [
        ("T+", 9),
        ("PROTO", 8),
        ("SERVER", 20),
        ("CALL", 28),
        ("OUTCOME", 36),
        ("ARGUMENTS", 0),
    ];
    table(out, &cols, &rows);
}

/// Denials first, then would-denies, then allows per layer; only for runs with decisions.
fn decisions(out: &mut String, r: &RunReport) {
    let d = &r.decisions;
    if d.is_empty() {
        return;
    }
    let cols = [
        ("LAYER", 8),
        ("COUNT", 5),
        ("REQUEST", 56),
        ("RULE", 24),
        ("ENFORCED BY", 0),
    ];
    let tables = [
        ("Decisions: denied", &d.denied),
        ("Decisions: would deny (report mode)", &d.would_deny),
    ];
    for (title, rows) in tables {
        section(out, title, rows.len());
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                vec![
                    row.layer.clone(),
                    row.count.to_string(),
                    row.request.clone(),
                    row.rule.clone(),
                    or_dash(row.enforced_by.as_deref()),
                ]
            })
            .collect();
        if !rows.is_empty() {
            table(out, &cols, &rows);
        }
    }
    let total: u64 = d.allowed.values().sum();
    section(
        out,
        "Decisions: allowed",
        usize::try_from(total).unwrap_or(usize::MAX),
    );
    if total > 0 {
        let per_layer: Vec<String> = d.allowed.iter().map(|(l, n)| format!("{l} {n}")).collect();
        let line = format!("  by layer: {}", inert(&per_layer.join(", ")));
        let _ = writeln!(out, "{}", fit(&line, MAX_LINE_CHARS));
    }
}

fn process_of(pid: Option<i64>, exe: Option<&str>) -> String {
    match (pid, exe) {
        (Some(pid), Some(exe)) => format!("{pid} {exe}"),
        (None, Some(exe)) => exe.to_owned(),
        (Some(pid), None) => pid.to_string(),
        (None, None) => "—".into(),
    }
}

fn files(out: &mut String, r: &RunReport) {
    section(out, "Files written", r.files_written.len());
    if !r.files_written.is_empty() {
        let rows: Vec<Vec<String>> = r
            .files_written
            .iter()
            .map(|f| {
                let path = match &f.from {
                    Some(from) => format!("{from} → {}", f.path),
                    None => f.path.clone(),
                };
                vec![
                    fmt_offset(f.at_ms),
                    f.op.clone(),
                    path,
                    f.size.map_or("—".into(), fmt_bytes),
                    f.sha256.as_deref().map_or("—".into(), |h| fit(h, 13)),
                    process_of(f.pid, f.exe.as_deref()),
                ]
            })
            .collect();
        let cols = [
            ("T+", 9),
            ("OP", 7),
            ("PATH", 48),
            ("SIZE", 9),
            ("SHA256", 13),
            ("PROCESS", 0),
        ];
        table(out, &cols, &rows);
    }

    section(out, "Writes denied", r.writes_denied.len());
    if !r.writes_denied.is_empty() {
        let rows: Vec<Vec<String>> = r
            .writes_denied
            .iter()
            .map(|d| {
                vec![
                    fmt_offset(d.at_ms),
                    d.op.clone(),
                    d.path.clone(),
                    or_dash(d.errno.as_deref()),
                    or_dash(d.syscall.as_deref()),
                    process_of(d.pid, d.exe.as_deref()),
                ]
            })
            .collect();
        let cols = [
            ("T+", 9),
            ("OP", 10),
            ("PATH", 48),
            ("ERRNO", 6),
            ("SYSCALL", 10),
            ("PROCESS", 0),
        ];
        table(out, &cols, &rows);
    }
}

fn processes(out: &mut String, r: &RunReport) {
    section(out, "Processes", r.processes.len());
    if r.processes.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = r
        .processes
        .iter()
        .map(|p| {
            vec![
                fmt_offset(p.at_ms),
                p.pid.map_or("?".into(), |x| x.to_string()),
                p.ppid.map_or("?".into(), |x| x.to_string()),
                fmt_exit(p),
                p.path.clone(),
                join_argv(&p.argv),
            ]
        })
        .collect();
    let cols = [
        ("T+", 9),
        ("PID", 7),
        ("PPID", 7),
        ("EXIT", 9),
        ("PATH", 28),
        ("ARGV", 0),
    ];
    table(out, &cols, &rows);
}

fn blocked_and_credentials(out: &mut String, r: &RunReport) {
    section(out, "Blocked", r.blocked.len());
    if !r.blocked.is_empty() {
        let rows: Vec<Vec<String>> = r
            .blocked
            .iter()
            .map(|b| {
                vec![
                    b.what.clone(),
                    b.count.to_string(),
                    b.target.clone(),
                    b.reason.clone(),
                ]
            })
            .collect();
        table(
            out,
            &[("WHAT", 5), ("COUNT", 5), ("TARGET", 56), ("REASON", 0)],
            &rows,
        );
    }

    section(out, "Credentials seen", r.credentials.len());
    if !r.credentials.is_empty() {
        let rows: Vec<Vec<String>> = r
            .credentials
            .iter()
            .map(|c| {
                let mut seen = c.locations.join("; ");
                if c.locations_omitted > 0 {
                    seen.push_str(&format!("; +{} more", c.locations_omitted));
                }
                vec![c.fingerprint.clone(), c.occurrences.to_string(), seen]
            })
            .collect();
        table(
            out,
            &[("FINGERPRINT", 44), ("SEEN", 4), ("WHERE", 0)],
            &rows,
        );
        let kinds: Vec<String> = r
            .credential_kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let kinds = format!("  by kind: {}", inert(&kinds.join(", ")));
        let _ = writeln!(out, "{}", fit(&kinds, MAX_LINE_CHARS));
    }

    if !r.notices.is_empty() {
        section(out, "Notices", r.notices.len());
        let rows: Vec<Vec<String>> = r
            .notices
            .iter()
            .map(|n| vec![fmt_offset(n.at_ms), n.what.clone(), n.detail.clone()])
            .collect();
        table(out, &[("T+", 9), ("WHAT", 24), ("DETAIL", 0)], &rows);
    }
}

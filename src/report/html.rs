//! The HTML rendering: one self-contained page (inline CSS, one small inline script that only
//! filters the timeline; no external assets, no network). This is an XSS boundary: every value
//! from the log goes through [`esc`], and a Content-Security-Policy allows no network access
//! and no script but ours (by hash), so a missed escape still could not run or fetch anything.

mod calls;
mod decisions;
mod timeline;

pub use timeline::Timeline;

use super::assets::{CSS, SCRIPT};
use super::text::{inert, join_argv};
use super::timeline::{fmt_bytes, fmt_duration, fmt_exit, fmt_offset};
use super::RunReport;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// `s` escaped for HTML text and quoted attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let kept: String = s.chars().take(max).collect();
    format!("{kept} … ({} more characters)", s.chars().count() - max)
}

/// `s` cut to `max` characters, `…` marking the cut (the full text is in the raw JSON).
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_owned(),
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A table: `head` are column titles (a leading `#` makes the column numeric); every cell
/// is already HTML.
fn table(out: &mut String, id: &str, title: &str, head: &[&str], rows: Vec<Vec<String>>) {
    let _ = write!(
        out,
        "<section id=\"{id}\"><h2>{title} <span class=\"count\">{}</span></h2>",
        rows.len()
    );
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">None.</p></section>\n");
        return;
    }
    out.push_str("<div class=\"scroll\"><table><thead><tr>");
    for h in head {
        match h.strip_prefix('#') {
            Some(h) => {
                let _ = write!(out, "<th class=\"num\">{h}</th>");
            }
            None => {
                let _ = write!(out, "<th>{h}</th>");
            }
        }
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for (cell, h) in row.iter().zip(head) {
            let class = if h.starts_with('#') {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{cell}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div></section>\n");
}

/// Guest text in monospace, control characters made visible.
fn mono(s: &str) -> String {
    mono_as("", s)
}

/// [`mono`] with an extra CSS class (`host`, `fp`, `url`, `argv`).
fn mono_as(class: &str, s: &str) -> String {
    format!("<span class=\"mono {class}\">{}</span>", esc(&inert(s)))
}

fn at(seq: u64, at_ms: Option<i64>) -> String {
    format!("<a href=\"#e{seq}\">{}</a>", esc(&fmt_offset(at_ms)))
}

fn opt_text(s: Option<&str>) -> String {
    s.map_or("<span class=\"dim\">—</span>".into(), esc)
}

fn pill(class: &str, text: &str) -> String {
    format!("<span class=\"pill {class}\">{}</span>", esc(text))
}

fn header(out: &mut String, r: &RunReport) {
    let run = r.run.as_deref().unwrap_or("unknown run");
    let (class, result) = match (r.end_reason.as_deref(), r.exit_code) {
        (Some("exited"), Some(0)) => ("good", "exited, exit code 0".to_owned()),
        (Some(reason), Some(code)) => ("bad", format!("{reason}, exit code {code}")),
        (Some(reason), None) => ("bad", format!("{reason}, no exit code")),
        (None, _) => ("warn", "incomplete: no run_end record".to_owned()),
    };
    let _ = write!(
        out,
        "<header class=\"top\"><div class=\"brand\">idagent · run report</div>\
         <h1 class=\"mono\">{}</h1><div class=\"result {class}\">{}{}</div>",
        esc(run),
        esc(&result),
        r.duration_ms
            .map_or(String::new(), |ms| format!(" · {}", esc(&fmt_duration(ms))))
    );
    out.push_str("<dl class=\"meta\">");
    let offline = match r.offline {
        Some(true) => "offline",
        Some(false) => "online",
        None => "—",
    };
    for (label, value) in [
        ("image", mono(r.image.as_deref().unwrap_or("—"))),
        ("command", mono(&cut(&join_argv(&r.command), 2000))),
        ("user", opt_text(r.user.as_deref())),
        ("network", esc(offline)),
        ("started", opt_text(r.started.as_deref())),
        ("ended", opt_text(r.ended.as_deref())),
        ("idagent", opt_text(r.idagent_version.as_deref())),
    ] {
        let _ = write!(out, "<dt>{label}</dt><dd>{value}</dd>");
    }
    out.push_str("</dl><div class=\"cards\">");
    for (label, n) in r.headline() {
        let alert = matches!(label, "blocked" | "writes denied" | "credentials") && n > 0;
        let anchor = label.replace(' ', "-");
        let _ = write!(
            out,
            "<a class=\"card{}\" href=\"#{anchor}\"><b>{n}</b><span>{label}</span></a>",
            if alert { " alert" } else { "" }
        );
    }
    out.push_str("</div>");
    if !r.warnings.is_empty() {
        out.push_str("<ul class=\"warnings\">");
        for w in &r.warnings {
            let _ = write!(out, "<li>{}</li>", esc(w));
        }
        out.push_str("</ul>");
    }
    out.push_str("</header>\n");
}

fn network(out: &mut String, r: &RunReport) {
    let rows = r
        .destinations
        .iter()
        .map(|d| {
            let ports: Vec<String> = d.ports.iter().map(u16::to_string).collect();
            vec![
                mono_as("host", d.name.as_deref().unwrap_or("(address)")),
                mono(&d.addresses.join(" ")),
                esc(&ports.join(", ")),
                d.dns_queries.to_string(),
                (d.tcp_flows + d.udp_flows).to_string(),
                d.requests.to_string(),
                esc(&fmt_bytes(d.bytes_up)),
                esc(&fmt_bytes(d.bytes_down)),
                esc(&d.protocols.join(", ")),
                esc(&d.tls_modes.join(", ")),
                format!(
                    "{} {}",
                    pill(
                        match d.verdict.as_str() {
                            "allowed" => "good",
                            "blocked" => "bad",
                            _ => "warn",
                        },
                        &d.verdict
                    ),
                    esc(&d.blocked_reasons.join("; "))
                ),
            ]
        })
        .collect();
    let head = [
        "Destination",
        "Addresses",
        "Ports",
        "#DNS",
        "#Flows",
        "#Reqs",
        "#Up",
        "#Down",
        "Protocols",
        "TLS",
        "Verdict",
    ];
    table(out, "destinations", "Destinations", &head, rows);

    let rows = r
        .requests
        .iter()
        .map(|q| {
            let status = match q.status {
                Some(s) if s < 400 => pill("good", &s.to_string()),
                Some(s) => pill("bad", &s.to_string()),
                None => pill("warn", "none"),
            };
            let creds: Vec<String> = q.credentials.iter().map(|c| mono_as("fp", c)).collect();
            vec![
                at(q.seq, q.at_ms),
                format!("<b>{}</b>", esc(&q.method)),
                mono_as("url", &q.url),
                status,
                esc(&fmt_bytes(q.req_bytes)),
                esc(&fmt_bytes(q.resp_bytes)),
                q.duration_ms.map_or("—".into(), |d| format!("{d} ms")),
                creds.join("<br>"),
                opt_text(q.note.as_deref()),
            ]
        })
        .collect();
    let head = [
        "#T+",
        "Method",
        "URL",
        "Status",
        "#Up",
        "#Down",
        "#Time",
        "Credentials",
        "Note",
    ];
    table(out, "requests", "Requests", &head, rows);
}

fn process_cell(pid: Option<i64>, exe: Option<&str>) -> String {
    let pid = pid.map_or(String::new(), |p| format!("{p} "));
    format!("{}{}", esc(&pid), mono(exe.unwrap_or("")))
}

fn files(out: &mut String, r: &RunReport) {
    let rows = r
        .files_written
        .iter()
        .map(|f| {
            let path = match &f.from {
                Some(from) => format!("{} → {}", mono(from), mono(&f.path)),
                None => mono(&f.path),
            };
            vec![
                at(f.seq, f.at_ms),
                esc(&f.op),
                path,
                f.size.map_or("—".into(), |s| esc(&fmt_bytes(s))),
                f.sha256.as_deref().map_or("—".into(), |h| {
                    format!(
                        "<span class=\"mono hash\" title=\"{}\">{}…</span>",
                        esc(h),
                        esc(&h.chars().take(12).collect::<String>())
                    )
                }),
                process_cell(f.pid, f.exe.as_deref()),
            ]
        })
        .collect();
    let head = ["#T+", "Op", "Path", "#Size", "SHA-256", "Process"];
    table(out, "files-written", "Files written", &head, rows);

    let rows = r
        .writes_denied
        .iter()
        .map(|d| {
            vec![
                at(d.seq, d.at_ms),
                esc(&d.op),
                mono(&d.path),
                d.errno.as_deref().map_or("—".into(), |e| pill("bad", e)),
                opt_text(d.syscall.as_deref()),
                process_cell(d.pid, d.exe.as_deref()),
            ]
        })
        .collect();
    let head = ["#T+", "Op", "Path", "Errno", "Syscall", "Process"];
    table(out, "writes-denied", "Writes denied", &head, rows);
}

fn processes(out: &mut String, r: &RunReport) {
    let rows = r
        .processes
        .iter()
        .map(|p| {
            let exit = fmt_exit(p);
            let exit = match (p.exit_code, &p.error) {
                (Some(0), None) => pill("good", &exit),
                (_, Some(_)) => pill("dim", &exit),
                (Some(_), None) => pill("bad", &exit),
                _ if p.exit_signal.is_some() => pill("bad", &exit),
                _ => esc(&exit),
            };
            vec![
                at(p.seq, p.at_ms),
                p.pid.map_or("?".into(), |x| x.to_string()),
                p.ppid.map_or("?".into(), |x| x.to_string()),
                exit,
                mono_as("path", &p.path),
                mono_as("argv", &cut(&join_argv(&p.argv), 4000)),
            ]
        })
        .collect();
    let head = ["#T+", "#PID", "#PPID", "Exit", "Path", "Argv"];
    table(out, "processes", "Processes", &head, rows);
}

fn blocked_and_credentials(out: &mut String, r: &RunReport) {
    let rows = r
        .blocked
        .iter()
        .map(|b| {
            vec![
                format!("<a href=\"#e{}\">{}</a>", b.seq, esc(&b.what)),
                mono(&b.target),
                esc(&b.reason),
                b.count.to_string(),
            ]
        })
        .collect();
    table(
        out,
        "blocked",
        "Blocked",
        &["What", "Target", "Reason", "#Count"],
        rows,
    );

    let rows = r
        .credentials
        .iter()
        .map(|c| {
            let mut seen: Vec<String> = c.locations.iter().map(|l| mono(l)).collect();
            if c.locations_omitted > 0 {
                seen.push(format!("+{} more", c.locations_omitted));
            }
            vec![
                mono_as("fp", &c.fingerprint),
                esc(&c.kind),
                c.occurrences.to_string(),
                seen.join("<br>"),
            ]
        })
        .collect();
    table(
        out,
        "credentials",
        "Credentials seen",
        &["Fingerprint", "Kind", "#Records", "Seen in"],
        rows,
    );
    if !r.credential_kinds.is_empty() {
        let kinds: Vec<String> = r
            .credential_kinds
            .iter()
            .map(|(k, n)| format!("{} {n}", esc(k)))
            .collect();
        let _ = writeln!(out, "<p class=\"kinds\">By kind: {}</p>", kinds.join(" · "));
    }

    let rows = r
        .notices
        .iter()
        .map(|n| vec![at(n.seq, n.at_ms), mono(&n.what), esc(&n.detail)])
        .collect();
    table(out, "notices", "Notices", &["#T+", "What", "Detail"], rows);
}

/// The report and its timeline as one self-contained HTML page.
pub fn render_html(report: &RunReport, tl: &Timeline) -> String {
    let script_hash = base64(&Sha256::digest(SCRIPT.as_bytes()));
    let mut out = String::with_capacity(64 * 1024 + tl.rows_len());
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; base-uri 'none'; \
         form-action 'none'\">\n<meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>idagent report · {}</title>\n<style>{CSS}</style></head><body>\n",
        esc(report.run.as_deref().unwrap_or("unknown run"))
    );
    header(&mut out, report);
    out.push_str(
        "<nav><a href=\"#tool-calls\">Tool calls</a><a href=\"#destinations\">Destinations</a><a href=\"#requests\">Requests</a>\
         <a href=\"#files-written\">Files written</a><a href=\"#writes-denied\">Writes denied</a>\
         <a href=\"#processes\">Processes</a><a href=\"#decisions\">Decisions</a>\
         <a href=\"#blocked\">Blocked</a>\
         <a href=\"#credentials\">Credentials</a><a href=\"#notices\">Notices</a>\
         <a href=\"#timeline\">Timeline</a></nav>\n<main>\n",
    );
    // First: what an AI agent called is what its reviewer looks for first.
    calls::section(&mut out, report);
    network(&mut out, report);
    files(&mut out, report);
    processes(&mut out, report);
    decisions::section(&mut out, report);
    blocked_and_credentials(&mut out, report);
    timeline::section(&mut out, tl);
    let _ = write!(
        out,
        "</main><footer>Generated by idagent from audit.jsonl. Every value above comes from the \
         guest and is shown as text.</footer>\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}

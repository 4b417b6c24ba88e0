//! The HTML timeline: one row per record (kind, T+, a one-line summary and the record's JSON),
//! rendered while the log is read so no parsed record is kept. Every value goes through
//! [`super::esc`]; summaries and raw JSON are redacted again and clipped.

use super::{clip, cut, esc};
use crate::audit::{EventBody, Outcome, Record};
use crate::report::fields::parse_ts;
use crate::report::text::inert;
use crate::report::timeline::{fmt_offset, summary};
use crate::report::MAX_TIMELINE_EVENTS;
use std::fmt::Write as _;

/// Characters of raw JSON shown per timeline event.
const MAX_RAW_CHARS: usize = 16 * 1024;
/// Characters of a timeline summary line.
const MAX_SUMMARY_CHARS: usize = 180;

/// The HTML timeline, built while the log is read: the rows of the first
/// [`MAX_TIMELINE_EVENTS`] events are rendered at once (each clipped), so no parsed event is
/// held and memory stays bounded whatever the size of the log.
#[derive(Debug, Default)]
pub struct Timeline {
    rows: String,
    shown: usize,
    total: usize,
    kinds: std::collections::BTreeSet<String>,
    /// The first record's time (`run_start` in an idagent log): T+ is counted from it.
    start_ns: Option<i128>,
}

/// Distinct kinds offered in the timeline's filter.
const MAX_TIMELINE_KINDS: usize = 64;

impl Timeline {
    /// Bytes of rendered rows (to size the page).
    pub(super) fn rows_len(&self) -> usize {
        self.rows.len()
    }

    /// Adds one record, in log order.
    pub fn push(&mut self, e: &Record) {
        self.total += 1;
        if self.start_ns.is_none() {
            self.start_ns = parse_ts(&e.ts);
        }
        if self.kinds.len() < MAX_TIMELINE_KINDS {
            self.kinds.insert(e.kind().to_owned());
        }
        if self.shown < MAX_TIMELINE_EVENTS {
            timeline_row(&mut self.rows, e, self.start_ns);
            self.shown += 1;
        }
    }
}

/// Appends the timeline section.
pub(super) fn section(out: &mut String, tl: &Timeline) {
    let _ = write!(
        out,
        "<section id=\"timeline\"><h2>Timeline <span class=\"count\">{}</span></h2>\
         <div class=\"filters\"><input id=\"tl-q\" type=\"search\" placeholder=\"Filter events…\">\
         <select id=\"tl-kind\"><option value=\"\">all kinds</option>",
        tl.total
    );
    for k in &tl.kinds {
        let _ = write!(out, "<option value=\"{0}\">{0}</option>", esc(k));
    }
    out.push_str("</select><span id=\"tl-shown\" class=\"dim\"></span></div>");
    if tl.shown < tl.total {
        let _ = write!(
            out,
            "<p class=\"note\">Showing the first {} of {} events; the rest are in audit.jsonl.</p>",
            tl.shown, tl.total
        );
    }
    out.push_str(
        "<div class=\"scroll\"><table id=\"tl\"><thead><tr><th class=\"num\">T+</th>\
         <th class=\"num\">Seq</th><th>Kind</th><th>Event</th></tr></thead><tbody>\n",
    );
    out.push_str(&tl.rows);
    out.push_str("</tbody></table></div></section>\n");
}

fn timeline_row(out: &mut String, e: &Record, start_ns: Option<i128>) {
    let kind = e.kind();
    let seq = Some(e.seq);
    let at_ms = parse_ts(&e.ts)
        .zip(start_ns)
        .and_then(|(t, s)| i64::try_from((t - s).div_euclid(1_000_000)).ok());
    let badge = match &e.body {
        EventBody::File(f) if f.outcome == Outcome::Denied => "denied",
        EventBody::Decision(d) if d.verdict == "deny" && !d.would_deny => "denied",
        EventBody::Blocked(_) | EventBody::Gap(_) => "bad",
        EventBody::ExecRan(r) if r.mismatch => "bad",
        _ => kind,
    };
    let badge: String = badge
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let (line, _) = crate::redact::redact_text(&inert(&summary(e)));
    let raw = match &e.unknown {
        Some(u) => serde_json::to_string_pretty(&u.raw),
        None => serde_json::to_string_pretty(e),
    }
    .unwrap_or_default();
    let (raw, _) = crate::redact::redact_text(&cut(&raw, MAX_RAW_CHARS));
    let _ = writeln!(
        out,
        "<tr{} data-kind=\"{}\"><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td><span class=\"k k-{badge}\">{}</span></td><td><details><summary>{}</summary>\
         <pre>{}</pre></details></td></tr>",
        seq.map_or(String::new(), |s| format!(" id=\"e{s}\"")),
        esc(kind),
        esc(&fmt_offset(at_ms)),
        seq.map_or("?".into(), |s| s.to_string()),
        esc(kind),
        esc(&clip(&line, MAX_SUMMARY_CHARS)),
        esc(&raw),
    );
}

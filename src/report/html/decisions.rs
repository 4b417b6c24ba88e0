//! The HTML "Decisions" section: enforced denials, then would-denies (report mode), then the
//! allows per layer. Every value is guest-controlled and goes through the page's escaping
//! helpers ([`super::esc`], [`super::mono`]).

use super::{esc, mono, pill, table};
use crate::report::{DecisionRow, RunReport};
use std::fmt::Write as _;

fn rows(rows: &[DecisionRow]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|d| {
            vec![
                format!("<a href=\"#e{}\">{}</a>", d.seq, esc(&d.layer)),
                mono(&d.request),
                mono(&d.rule),
                d.enforced_by
                    .as_deref()
                    .map_or("<span class=\"dim\">—</span>".into(), |e| pill("bad", e)),
                d.count.to_string(),
            ]
        })
        .collect()
}

/// Appends the section; nothing for a run without decisions (no `--policy`).
pub(super) fn section(out: &mut String, r: &RunReport) {
    let d = &r.decisions;
    if d.is_empty() {
        return;
    }
    let head = ["Layer", "Request", "Rule", "Enforced by", "#Count"];
    out.push_str("<section id=\"decisions\"><h2>Decisions</h2>\n");
    table(out, "decisions-denied", "Denied", &head, rows(&d.denied));
    table(
        out,
        "decisions-would-deny",
        "Would deny (report mode)",
        &head,
        rows(&d.would_deny),
    );
    let allowed = d
        .allowed
        .iter()
        .map(|(layer, n)| vec![esc(layer), n.to_string()])
        .collect();
    table(
        out,
        "decisions-allowed",
        "Allowed",
        &["Layer", "#Decisions"],
        allowed,
    );
    let _ = writeln!(out, "</section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Decisions;

    #[test]
    fn guest_strings_are_escaped() {
        let row = DecisionRow {
            seq: 4,
            layer: "http<".into(),
            request: "GET https://x/<script>alert(1)</script>".into(),
            rule: "r\"1".into(),
            enforced_by: Some("<b>".into()),
            count: 2,
        };
        let report = RunReport {
            decisions: Decisions {
                denied: vec![row.clone()],
                would_deny: vec![row],
                allowed: [("dns<i>".to_string(), 3)].into_iter().collect(),
            },
            ..RunReport::default()
        };
        let mut out = String::new();
        section(&mut out, &report);
        assert!(!out.contains("<script>"), "{out}");
        assert!(!out.contains("<b>") && !out.contains("<i>"), "{out}");
        assert!(out.contains("&lt;script&gt;"));
        let denied = out.find("Denied").unwrap_or(usize::MAX);
        let would = out.find("Would deny").unwrap_or(0);
        let allowed = out.find("Allowed").unwrap_or(0);
        assert!(denied < would && would < allowed, "{out}");
    }
}

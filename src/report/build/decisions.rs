//! The decisions section: `decision` records folded into enforced denials, would-denies (report
//! mode) and a count of allows per layer. Identical rows (layer, request, rule, enforcement)
//! are aggregated with a count. Pure: no I/O.

use super::MAX_TRACKED_KEYS;
use crate::audit::{DecisionEvent, DecisionRequest};
use crate::report::{DecisionRow, Decisions as DecisionsReport, MAX_ROWS};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// (layer, request line, rule, enforced_by).
type Key = (String, String, String, Option<String>);

#[derive(Debug, Default)]
pub(super) struct Decisions {
    denied: BTreeMap<Key, (u64, u64)>,
    would_deny: BTreeMap<Key, (u64, u64)>,
    allowed: BTreeMap<String, u64>,
}

impl Decisions {
    /// Folds one decision; `false` when its row is new and the table is at its cap.
    pub(super) fn push(&mut self, seq: u64, d: &DecisionEvent) -> bool {
        let deny = d.verdict == "deny";
        let table = if deny && d.mode == "enforce" && !d.would_deny {
            &mut self.denied
        } else if deny || d.would_deny {
            &mut self.would_deny
        } else {
            let layer = if d.verdict == "allow" {
                d.layer.clone()
            } else {
                format!("{} ({})", d.layer, d.verdict)
            };
            *self.allowed.entry(layer).or_default() += 1;
            return true;
        };
        let (line, _) = crate::redact::redact_text(&request_line(&d.layer, &d.request));
        let key = (d.layer.clone(), line, d.rule.clone(), d.enforced_by.clone());
        if table.len() >= MAX_TRACKED_KEYS && !table.contains_key(&key) {
            return false;
        }
        table.entry(key).or_insert((seq, 0)).1 += 1;
        true
    }

    pub(super) fn finish(self) -> DecisionsReport {
        DecisionsReport {
            denied: rows(self.denied),
            would_deny: rows(self.would_deny),
            allowed: self.allowed,
        }
    }
}

/// Rows in order of first occurrence, at most [`MAX_ROWS`].
fn rows(table: BTreeMap<Key, (u64, u64)>) -> Vec<DecisionRow> {
    let mut rows: Vec<DecisionRow> = table
        .into_iter()
        .map(
            |((layer, request, rule, enforced_by), (seq, count))| DecisionRow {
                seq,
                layer,
                request,
                rule,
                enforced_by,
                count,
            },
        )
        .collect();
    rows.sort_by_key(|r| r.seq);
    rows.truncate(MAX_ROWS);
    rows
}

/// `addr:port`, bracketing IPv6 addresses.
fn host_port(host: &str, port: Option<u16>) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// The request in one line: `GET https://www.google.com:443/other`, `dns api.openai.com A`,
/// `exec /bin/sh`, `create_dir /tmp/workspace/.ssh`, `connect 10.1.2.3:443`.
pub(in crate::report) fn request_line(layer: &str, q: &DecisionRequest) -> String {
    let name = q.name.as_deref().or(q.addr.as_deref()).unwrap_or_default();
    let mut line = match layer {
        "dns" => format!("dns {name} {}", q.qtype.as_deref().unwrap_or_default()),
        "http" => format!(
            "{} {}://{}{}{}",
            q.method.as_deref().unwrap_or("?"),
            q.scheme.as_deref().unwrap_or("http"),
            host_port(name, q.port),
            q.path.as_deref().unwrap_or_default(),
            q.query
                .as_deref()
                .map_or(String::new(), |query| format!("?{query}"))
        ),
        "exec" => format!(
            "exec {}",
            q.path
                .as_deref()
                .or(q.argv.first().map(String::as_str))
                .unwrap_or_default()
        ),
        "file" => format!(
            "{} {}",
            q.op.as_deref().unwrap_or("file"),
            q.path.as_deref().unwrap_or_default()
        ),
        "connect" | "datagram" => {
            let mut s = format!("{layer} ");
            // `udp` is worth saying for a connect; a datagram is always udp.
            if let Some(proto) = q
                .proto
                .as_deref()
                .filter(|p| layer == "connect" && *p != "tcp")
            {
                let _ = write!(s, "{proto} ");
            }
            s.push_str(&host_port(name, q.port));
            if let (Some(n), Some(a)) = (&q.name, &q.addr) {
                if n != a {
                    let _ = write!(s, " ({a})");
                }
            }
            s
        }
        "tls" => {
            let sni = q.sni.as_deref().or(q.name.as_deref()).unwrap_or_default();
            format!("tls {}", host_port(sni, q.port))
        }
        other => {
            let fields = [&q.name, &q.addr, &q.op, &q.method, &q.path];
            let mut s = other.to_owned();
            for f in fields.into_iter().flatten() {
                let _ = write!(s, " {f}");
            }
            s
        }
    };
    if layer == "tls" && !q.alpn.is_empty() {
        let _ = write!(line, " alpn {}", q.alpn.join(","));
    }
    line.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> DecisionRequest {
        DecisionRequest::default()
    }

    #[test]
    fn one_line_per_layer() {
        let http = DecisionRequest {
            name: Some("www.google.com".into()),
            port: Some(443),
            scheme: Some("https".into()),
            method: Some("GET".into()),
            path: Some("/other".into()),
            ..req()
        };
        assert_eq!(
            request_line("http", &http),
            "GET https://www.google.com:443/other"
        );
        let dns = DecisionRequest {
            name: Some("api.openai.com".into()),
            qtype: Some("A".into()),
            ..req()
        };
        assert_eq!(request_line("dns", &dns), "dns api.openai.com A");
        let exec = DecisionRequest {
            path: Some("/bin/sh".into()),
            argv: vec!["sh".into(), "-c".into()],
            ..req()
        };
        assert_eq!(request_line("exec", &exec), "exec /bin/sh");
        let file = DecisionRequest {
            op: Some("create_dir".into()),
            path: Some("/tmp/workspace/.ssh".into()),
            ..req()
        };
        assert_eq!(
            request_line("file", &file),
            "create_dir /tmp/workspace/.ssh"
        );
        let connect = DecisionRequest {
            addr: Some("10.1.2.3".into()),
            port: Some(443),
            proto: Some("tcp".into()),
            ..req()
        };
        assert_eq!(request_line("connect", &connect), "connect 10.1.2.3:443");
        let v6 = DecisionRequest {
            name: Some("example.com".into()),
            addr: Some("fd00::1".into()),
            port: Some(53),
            proto: Some("udp".into()),
            ..req()
        };
        assert_eq!(
            request_line("connect", &v6),
            "connect udp example.com:53 (fd00::1)"
        );
        assert_eq!(
            request_line("datagram", &v6),
            "datagram example.com:53 (fd00::1)"
        );
    }

    fn decision(verdict: &str, mode: &str, would_deny: bool, path: &str) -> DecisionEvent {
        DecisionEvent {
            layer: "file".into(),
            verdict: verdict.into(),
            mode: mode.into(),
            rule: "default-deny".into(),
            would_deny,
            enforced_by: (mode == "enforce" && verdict == "deny").then(|| "landlock".into()),
            request: DecisionRequest {
                op: Some("write".into()),
                path: Some(path.into()),
                ..req()
            },
            flow: None,
            pid: Some(3),
        }
    }

    #[test]
    fn denials_would_denies_and_allows_are_apart_and_aggregated() {
        let mut d = Decisions::default();
        d.push(5, &decision("deny", "enforce", false, "/etc/b"));
        d.push(2, &decision("deny", "enforce", false, "/etc/a"));
        d.push(7, &decision("deny", "enforce", false, "/etc/a"));
        d.push(8, &decision("deny", "report", true, "/etc/a"));
        d.push(9, &decision("allow", "enforce", false, "/tmp/x"));
        d.push(10, &decision("allow", "report", false, "/tmp/y"));
        let r = d.finish();
        let denied: Vec<_> = r
            .denied
            .iter()
            .map(|r| (r.request.as_str(), r.count, r.seq))
            .collect();
        assert_eq!(denied, [("write /etc/a", 2, 2), ("write /etc/b", 1, 5)]);
        assert_eq!(r.would_deny.len(), 1);
        assert_eq!(r.would_deny[0].enforced_by, None);
        assert_eq!(r.allowed.get("file"), Some(&2));
    }
}

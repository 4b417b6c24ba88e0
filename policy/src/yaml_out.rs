//! `Policy::to_yaml`: our own deterministic emitter. The same policy always prints the same
//! bytes (sections sort their rules on construction; optional fields are printed only when
//! set, always in the same order), and the output parses back to an equal policy. Owns
//! scalar quoting: plain only when unambiguous, else a JSON string (valid YAML).

use crate::explain::risks;
use crate::kinds::{Action, Inspect};
use crate::model::{Observation, Policy, Seen};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Whether `s` may be written as a plain scalar (and still read back as this string).
fn plain_ok(s: &str, flow: bool) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let keyword = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
    );
    (first.is_ascii_alphabetic() || first == '/')
        && !keyword
        && !s.ends_with(':')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '/' | '_' | '-' | '@' | '+')
                || (c == ':' && !flow)
        })
}

fn scalar(s: &str) -> String {
    if plain_ok(s, false) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
    }
}

fn flow_scalar(s: &str) -> String {
    if plain_ok(s, true) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
    }
}

fn flow_list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| flow_scalar(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

fn seen_flow(s: &Seen) -> String {
    format!(
        "{{count: {}, runs: {}, first: {}, last: {}, example_seq: {}}}",
        s.count,
        flow_list(&s.runs),
        flow_scalar(&s.first),
        flow_scalar(&s.last),
        s.example_seq
    )
}

/// Writes the optional fields every rule may carry, at `pad` indentation.
fn common(
    out: &mut String,
    pad: &str,
    action: Option<Action>,
    mode: Option<crate::Mode>,
    risk: &[String],
) {
    if action == Some(Action::Deny) {
        let _ = writeln!(out, "{pad}action: deny");
    }
    if let Some(m) = mode {
        let _ = writeln!(out, "{pad}mode: {m}");
    }
    if !risk.is_empty() {
        let _ = writeln!(out, "{pad}risk: {}", flow_list(risk));
    }
}

fn seen_line(out: &mut String, pad: &str, seen: Option<&Seen>) {
    if let Some(s) = seen {
        let _ = writeln!(out, "{pad}seen: {}", seen_flow(s));
    }
}

fn section_head(out: &mut String, name: &str, mode: Option<crate::Mode>, list: &str, empty: bool) {
    let _ = writeln!(out, "{name}:");
    if let Some(m) = mode {
        let _ = writeln!(out, "  mode: {m}");
    }
    let _ = writeln!(out, "  {list}:{}", if empty { " []" } else { "" });
}

impl Policy {
    /// The policy as YAML: deterministic, human-readable, parses back to an equal policy.
    /// A header comment counts the learned runs and lists the risky rules.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        let _ = writeln!(out, "version: {}", self.version);
        let _ = writeln!(out, "mode: {}", self.mode);
        match &self.observation {
            Observation::Complete => out.push_str("observation: complete\n"),
            Observation::Incomplete { reasons } => {
                out.push_str("observation:\n  status: incomplete\n");
                let _ = writeln!(
                    out,
                    "  reasons:{}",
                    if reasons.is_empty() { " []" } else { "" }
                );
                for r in reasons {
                    let _ = writeln!(out, "    - {}", scalar(r));
                }
            }
        }
        self.network_yaml(&mut out);
        let names = self.dns.names();
        section_head(&mut out, "dns", self.dns.mode, "names", names.is_empty());
        for n in names {
            let _ = writeln!(out, "    - id: {}", scalar(&n.id));
            let _ = writeln!(out, "      name: {}", scalar(&n.name.to_string()));
            common(&mut out, "      ", None, n.mode, &n.risk);
            seen_line(&mut out, "      ", n.seen.as_ref());
        }
        let udp = self.udp.rules();
        section_head(&mut out, "udp", self.udp.mode, "rules", udp.is_empty());
        for r in udp {
            let _ = writeln!(out, "    - id: {}", scalar(&r.id));
            let _ = writeln!(out, "      host: {}", scalar(&r.host.to_string()));
            let _ = writeln!(out, "      port: {}", r.port);
            common(&mut out, "      ", Some(r.action), r.mode, &r.risk);
            seen_line(&mut out, "      ", r.seen.as_ref());
        }
        self.files_yaml(&mut out);
        let exec = self.exec.rules();
        section_head(&mut out, "exec", self.exec.mode, "rules", exec.is_empty());
        for r in exec {
            let _ = writeln!(out, "    - id: {}", scalar(&r.id));
            let _ = writeln!(out, "      path: {}", scalar(&r.path));
            if !r.aliases.is_empty() {
                let _ = writeln!(out, "      aliases: {}", flow_list(&r.aliases));
            }
            common(&mut out, "      ", Some(r.action), r.mode, &r.risk);
            seen_line(&mut out, "      ", r.seen.as_ref());
        }
        out
    }

    fn header(&self, out: &mut String) {
        let mut runs = BTreeSet::new();
        self.for_each_seen(|s| runs.extend(s.runs.iter().cloned()));
        match runs.len() {
            0 => out.push_str("# idagent policy\n"),
            1 => out.push_str("# idagent policy (learned from 1 run)\n"),
            n => {
                let _ = writeln!(out, "# idagent policy (learned from {n} runs)");
            }
        }
        let risks = risks(self);
        if !risks.is_empty() {
            let _ = writeln!(out, "# review first ({} risky):", risks.len());
            for r in risks {
                let what = r.what.replace('\n', " ");
                let _ = writeln!(out, "#   {}: {what}", r.rule);
            }
        }
    }

    fn network_yaml(&self, out: &mut String) {
        let rules = self.network.rules();
        section_head(out, "network", self.network.mode, "rules", rules.is_empty());
        for r in rules {
            let _ = writeln!(out, "    - id: {}", scalar(&r.id));
            let _ = writeln!(out, "      host: {}", scalar(&r.host.to_string()));
            let _ = writeln!(out, "      port: {}", r.port);
            let _ = writeln!(out, "      protocol: {}", r.protocol);
            let _ = writeln!(out, "      inspect: {}", r.inspect);
            common(out, "      ", Some(r.action), r.mode, &r.risk);
            if r.credentials {
                out.push_str("      credentials: true\n");
            }
            if r.inspect == Inspect::L7 && !r.http.is_empty() {
                out.push_str("      http:\n");
            }
            for h in &r.http {
                let _ = writeln!(out, "        - id: {}", scalar(&h.id));
                if let Some(g) = &h.grpc {
                    let _ = writeln!(
                        out,
                        "          grpc: {{service: {}, method: {}}}",
                        flow_scalar(&g.service),
                        flow_scalar(g.method.as_deref().unwrap_or("*"))
                    );
                } else {
                    let _ = writeln!(out, "          method: {}", scalar(&h.method));
                    let _ = writeln!(out, "          path: {}", scalar(h.path.as_str()));
                }
                if let Some(q) = &h.query {
                    let _ = writeln!(out, "          query: {}", flow_list(q));
                }
                if let Some(tools) = &h.tools {
                    let _ = writeln!(out, "          mcp: {{tools: {}}}", flow_list(tools));
                }
                common(out, "          ", Some(h.action), h.mode, &h.risk);
                seen_line(out, "          ", h.seen.as_ref());
            }
            seen_line(out, "      ", r.seen.as_ref());
        }
    }

    fn files_yaml(&self, out: &mut String) {
        let rules = self.files.rules();
        section_head(out, "files", self.files.mode, "rules", rules.is_empty());
        for r in rules {
            let _ = writeln!(out, "    - id: {}", scalar(&r.id));
            let _ = writeln!(out, "      path: {}", scalar(r.path.as_str()));
            let _ = writeln!(out, "      kind: {}", r.kind);
            let _ = writeln!(
                out,
                "      allow: {}",
                flow_list(r.allow.iter().map(|o| o.as_str()))
            );
            if !r.observed.is_empty() {
                let _ = writeln!(out, "      observed: {}", flow_list(&r.observed));
            }
            common(out, "      ", None, r.mode, &r.risk);
            seen_line(out, "      ", r.seen.as_ref());
        }
        let denied = self.files.observed_denied();
        let _ = writeln!(
            out,
            "  observed_denied:{}",
            if denied.is_empty() { " []" } else { "" }
        );
        for d in denied {
            let errno = d
                .errno
                .as_deref()
                .map(|e| format!(", errno: {}", flow_scalar(e)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    - {{path: {}, op: {}{errno}, count: {}}}",
                flow_scalar(&d.path),
                d.op,
                d.count
            );
        }
    }

    /// Calls `f` on the provenance of every rule.
    pub(crate) fn for_each_seen(&self, mut f: impl FnMut(&Seen)) {
        for r in self.network.rules() {
            r.seen.iter().for_each(&mut f);
            r.http
                .iter()
                .filter_map(|h| h.seen.as_ref())
                .for_each(&mut f);
        }
        self.udp
            .rules()
            .iter()
            .filter_map(|r| r.seen.as_ref())
            .for_each(&mut f);
        self.dns
            .names()
            .iter()
            .filter_map(|r| r.seen.as_ref())
            .for_each(&mut f);
        self.files
            .rules()
            .iter()
            .filter_map(|r| r.seen.as_ref())
            .for_each(&mut f);
        self.exec
            .rules()
            .iter()
            .filter_map(|r| r.seen.as_ref())
            .for_each(&mut f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_conservative() {
        assert_eq!(scalar("www.google.com"), "www.google.com");
        assert_eq!(scalar("net:www.google.com:443"), "net:www.google.com:443");
        assert_eq!(flow_scalar("net:a:443"), "\"net:a:443\"");
        assert_eq!(scalar("*.google.com"), "\"*.google.com\"");
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("443"), "\"443\"");
        assert_eq!(scalar("/users/{id}"), "\"/users/{id}\"");
        assert_eq!(scalar("a b"), "\"a b\"");
        assert_eq!(scalar(""), "\"\"");
    }
}

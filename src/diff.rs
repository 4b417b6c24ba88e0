//! `idagent diff RUN_A RUN_B`: what a program did in one run that it did not in the other — a
//! CI gate for "the agent's behaviour changed after a dependency update".
//!
//! Owns the behaviour sets compared (DNS names, destinations, HTTP method + path, workspace
//! files, execs, denials) and their rendering. Requests come from the same replay as `policy
//! learn`, and HTTP paths are generalised by the same rule as the learner
//! (`idagent_policy::generalize_path`), so two runs of one program that differ only in ids
//! compare equal. Does not own reading the log (`policy_cmd::replay`).
//!
//! Either side may be a tree of run folders (`policy_cmd::tree`): a side's behaviour is then
//! the union of what its runs did, so `diff old-version/ new-version/` says what any run of
//! the new version did that no run of the old one did (and what no new run does any more).
//! How many runs each side held is in the output (`runs_a`, `runs_b`).

use crate::policy_cmd::replay::{self, RunLog};
use idagent_policy::OwnedRequest;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The kinds of behaviour compared, in output order.
const KINDS: [&str; 6] = ["dns", "destination", "http", "file", "exec", "denied"];

/// One kind's differences.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KindDiff {
    pub kind: &'static str,
    pub new: Vec<String>,
    pub gone: Vec<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub a: String,
    pub b: String,
    /// Run folders read on each side (1 for a run folder, more for a tree).
    pub runs_a: usize,
    pub runs_b: usize,
    pub kinds: Vec<KindDiff>,
}

impl Diff {
    /// Anything in B that A did not do.
    pub fn has_new(&self) -> bool {
        self.kinds.iter().any(|k| !k.new.is_empty())
    }

    pub fn render_text(&self) -> String {
        let side = |path: &str, n: usize| match n {
            1 => path.to_owned(),
            n => format!("{path} ({n} runs)"),
        };
        let mut out = format!(
            "idagent diff {} → {}\n",
            side(&self.a, self.runs_a),
            side(&self.b, self.runs_b)
        );
        for k in &self.kinds {
            for item in &k.new {
                out.push_str(&format!("+ {:<12} {item}\n", k.kind));
            }
            for item in &k.gone {
                out.push_str(&format!("- {:<12} {item}\n", k.kind));
            }
        }
        let (new, gone) = self
            .kinds
            .iter()
            .fold((0, 0), |(n, g), k| (n + k.new.len(), g + k.gone.len()));
        out.push_str(&format!("{new} new, {gone} gone\n"));
        out
    }
}

/// Why a diff could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
    #[error(transparent)]
    Tree(#[from] crate::policy_cmd::tree::TreeError),
}

/// Compares the runs in `a` and `b` (each a run folder or a tree of them).
pub fn diff(a: &Path, b: &Path) -> Result<Diff, DiffError> {
    let (sa, runs_a) = side(a)?;
    let (sb, runs_b) = side(b)?;
    let kinds = KINDS
        .iter()
        .enumerate()
        .map(|(i, kind)| KindDiff {
            kind,
            new: sb[i].difference(&sa[i]).cloned().collect(),
            gone: sa[i].difference(&sb[i]).cloned().collect(),
        })
        .collect();
    Ok(Diff {
        a: a.display().to_string(),
        b: b.display().to_string(),
        runs_a,
        runs_b,
        kinds,
    })
}

/// The union of the behaviour of the runs under `path`, and how many there were. Runs are
/// read one at a time; only the sets are kept.
fn side(path: &Path) -> Result<(Vec<BTreeSet<String>>, usize), DiffError> {
    let dirs = crate::policy_cmd::run_folders("diff", &[PathBuf::from(path)])?;
    let mut sets = vec![BTreeSet::new(); KINDS.len()];
    for dir in &dirs {
        for (all, one) in sets.iter_mut().zip(behaviour(&replay::load(dir)?)) {
            all.extend(one);
        }
    }
    Ok((sets, dirs.len()))
}

/// One set per entry of [`KINDS`].
fn behaviour(log: &RunLog) -> Vec<BTreeSet<String>> {
    let mut sets = vec![BTreeSet::new(); KINDS.len()];
    for item in &log.items {
        let (kind, text) = match &item.request {
            OwnedRequest::Dns { name, .. } => (0, name.to_ascii_lowercase()),
            OwnedRequest::Connect {
                name, addr, port, ..
            } => (
                1,
                match name {
                    Some(n) => format!("tcp {n}:{port}"),
                    None => format!("tcp {}", std::net::SocketAddr::new(*addr, *port)),
                },
            ),
            OwnedRequest::Datagram { name, addr, port } => (
                1,
                match name {
                    Some(n) => format!("udp {n}:{port}"),
                    None => format!("udp {}", std::net::SocketAddr::new(*addr, *port)),
                },
            ),
            OwnedRequest::Tls { .. } | OwnedRequest::Stream { .. } => continue,
            OwnedRequest::Http {
                scheme,
                host,
                port,
                method,
                path,
                ..
            } => {
                let scheme = scheme.as_str();
                let path = idagent_policy::generalize_path(path);
                (2, format!("{method} {scheme}://{host}:{port}{path}"))
            }
            OwnedRequest::FileWrite { path, op } if item.refused_by_kernel => {
                (5, format!("{op} {path}"))
            }
            OwnedRequest::FileWrite { path, op } => (3, format!("{op} {path}")),
            OwnedRequest::FileRename { from, to, .. } if item.refused_by_kernel => {
                (5, format!("rename {from} -> {to}"))
            }
            OwnedRequest::FileRename { from, to, .. } => (3, format!("rename {from} -> {to}")),
            OwnedRequest::Exec { path, .. } => (4, path.clone()),
        };
        sets[kind].insert(text);
    }
    for (_, d) in &log.decisions {
        if d.verdict == "deny" {
            let r = &d.request;
            let what = [
                r.method.as_deref(),
                r.name.as_deref(),
                r.addr.as_deref(),
                r.path.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            sets[5].insert(format!("{} {what} (rule {})", d.layer, d.rule));
        }
    }
    sets
}

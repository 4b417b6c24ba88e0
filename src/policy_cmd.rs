//! `idagent policy learn|check|explain`: from audit logs to a reviewed policy file.
//!
//! Owns the three commands' bodies and their output. `learn` feeds every request of one or
//! more runs (read by [`replay`]) to `idagent_policy::Learner`; `check` replays them through
//! `idagent_policy::evaluate` and lists what would be denied; `explain` renders a policy for a
//! reviewer. Does not own the policy model, its file format or its semantics (the
//! `idagent-policy` crate), nor running under a policy (`enforce`, `sandbox`).

pub mod replay;
pub mod tree;

use idagent_policy::{evaluate, Learner, Mode, Observed, Policy};
use std::path::{Path, PathBuf};

/// Why a policy command could not run (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum PolicyCmdError {
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    #[error(transparent)]
    Diff(#[from] crate::diff::DiffError),
    #[error("read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `file:line:col: what is wrong`.
    #[error("{path}:{source}")]
    Parse {
        path: PathBuf,
        source: idagent_policy::PolicyError,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads and parses a policy file; errors are `path:line:col: what is wrong`.
pub fn load_policy(path: &Path) -> Result<Policy, PolicyCmdError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyCmdError::Read {
        path: path.to_owned(),
        source,
    })?;
    Policy::parse(&text).map_err(|source| PolicyCmdError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The run folders of `paths` (each a run folder or a tree of them, see [`tree`]), with
/// the walk's notices said on stderr under `cmd`'s name.
pub fn run_folders(cmd: &str, paths: &[PathBuf]) -> Result<Vec<PathBuf>, tree::TreeError> {
    let set = tree::find_runs(paths)?;
    for notice in &set.notices {
        eprintln!("idagent: {cmd}: {notice}");
    }
    Ok(set.runs)
}

/// `policy learn RUN_DIR|TREE... -o FILE`: writes the learned policy (or prints it with
/// `-o -`). Incompleteness is said on stderr, one line per reason, and in the file. Runs
/// are read one at a time, so a tree of many costs the memory of its largest log.
pub fn learn(runs: &[PathBuf], out: &Path) -> Result<(), PolicyCmdError> {
    let dirs = run_folders("policy learn", runs)?;
    let mut learner = Learner::new();
    // The learner counts runs by id; two folders with one id (a log collected twice) are
    // one run to it, which the operator should hear about.
    let mut ids: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    for dir in &dirs {
        let log = replay::load(dir)?;
        match ids.get(&log.run_id) {
            Some(first) => eprintln!(
                "idagent: policy learn: {} and {} hold the same run ({}); counted as one run",
                first.display(),
                dir.display(),
                log.run_id
            ),
            None => {
                ids.insert(log.run_id.clone(), dir.clone());
            }
        }
        for reason in &log.incomplete {
            eprintln!("idagent: policy learn: observation incomplete: {reason}");
            learner.mark_incomplete(format!("{}: {reason}", log.run_id));
        }
        if log.bad_lines > 0 {
            eprintln!(
                "idagent: policy learn: skipped {} torn or unknown line(s) in {}",
                log.bad_lines,
                log.dir.display()
            );
        }
        let refused = log.items.iter().filter(|i| i.refused_by_policy).count();
        if refused > 0 {
            eprintln!(
                "idagent: policy learn: {refused} request(s) in {} were refused by the run's policy; they are not learned",
                log.dir.display()
            );
        }
        for item in log
            .items
            .iter()
            .filter(|i| !i.refused_by_policy && !i.scratch)
        {
            learner.observe(Observed {
                request: item.request.clone(),
                run: log.run_id.clone(),
                seq: item.seq,
                ts: item.ts.clone(),
                credentials: item.credentials,
                refused_by_kernel: item.refused_by_kernel,
                real_path: item.real_path.clone(),
            });
        }
    }
    let yaml = learner.finish().to_yaml();
    if out == Path::new("-") {
        print!("{yaml}");
        return Ok(());
    }
    std::fs::write(out, yaml).map_err(|source| PolicyCmdError::Write {
        path: out.to_owned(),
        source,
    })?;
    eprintln!(
        "idagent: policy learned from {} run(s) written to {}",
        dirs.len(),
        out.display()
    );
    Ok(())
}

/// One request a policy denies, for `policy check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Violation {
    pub run: String,
    pub seq: u64,
    pub layer: String,
    pub request: String,
    pub rule: String,
    pub nearest: Option<String>,
}

/// `policy check POLICY RUN_DIR...`: every event of the runs the policy would deny, whatever
/// its mode (a check answers "would this policy let these runs through?").
pub fn check(policy: &Path, runs: &[PathBuf]) -> Result<Vec<Violation>, PolicyCmdError> {
    let policy = load_policy(policy)?.with_mode_override(Mode::Enforce);
    let mut out = Vec::new();
    for dir in &run_folders("policy check", runs)? {
        let log = replay::load(dir)?;
        for item in &log.items {
            // An exec is decided on the file that ran, as the supervisor decides it live.
            let real = match (&item.request, &item.real_path) {
                (idagent_policy::OwnedRequest::Exec { argv, .. }, Some(real)) => {
                    Some(idagent_policy::OwnedRequest::Exec {
                        path: real.clone(),
                        argv: argv.clone(),
                    })
                }
                _ => None,
            };
            let req = real.as_ref().unwrap_or(&item.request).as_request();
            if item.refused_by_kernel || item.scratch {
                // Writes the read-only root refused stay refused; no policy can allow them.
                continue;
            }
            let decision = evaluate(&policy, &req);
            if decision.is_deny() {
                out.push(Violation {
                    run: log.run_id.clone(),
                    seq: item.seq,
                    layer: decision.layer.to_string(),
                    request: describe(&item.request),
                    rule: decision.rule.clone(),
                    nearest: idagent_policy::nearest_rule(&policy, &req),
                });
            }
        }
    }
    Ok(out)
}

/// The text `policy check` prints for its violations.
pub fn render_violations(violations: &[Violation]) -> String {
    let mut out = String::new();
    for v in violations {
        let nearest = v
            .nearest
            .as_deref()
            .map(|n| format!(" (nearest rule: {n})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "deny {:<8} {}  [{} seq {}] rule {}{nearest}\n",
            v.layer, v.request, v.run, v.seq, v.rule
        ));
    }
    out.push_str(&format!(
        "{} event(s) the policy would deny\n",
        violations.len()
    ));
    out
}

/// A request in one line, as `check`, `diff` and the report show it.
pub fn describe(req: &idagent_policy::OwnedRequest) -> String {
    use idagent_policy::OwnedRequest as R;
    match req {
        R::Dns { name, qtype } => format!("dns {name} {qtype}"),
        R::Connect {
            name, addr, port, ..
        } => match name {
            Some(n) => format!(
                "connect {n}:{port} ({})",
                std::net::SocketAddr::new(*addr, *port)
            ),
            None => format!("connect {}", std::net::SocketAddr::new(*addr, *port)),
        },
        R::Tls {
            sni, addr, port, ..
        } => format!(
            "tls sni={} to {}",
            sni.as_deref().unwrap_or("-"),
            std::net::SocketAddr::new(*addr, *port)
        ),
        R::Http {
            scheme,
            host,
            port,
            method,
            path,
            query,
            rpc,
        } => {
            let scheme = scheme.as_str();
            let query = query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let rpc = match rpc {
                Some(idagent_policy::OwnedRpc::Grpc { service, method }) => {
                    format!(" (grpc {service}/{method})")
                }
                Some(idagent_policy::OwnedRpc::Tool { tool: Some(t) }) => {
                    format!(" (mcp tool {t})")
                }
                Some(idagent_policy::OwnedRpc::Tool { tool: None }) => {
                    " (mcp tool call, tool unread)".to_owned()
                }
                None => String::new(),
            };
            format!("{method} {scheme}://{host}:{port}{path}{query}{rpc}")
        }
        R::Stream {
            name,
            addr,
            port,
            tls,
        } => format!(
            "{} stream to {}{}",
            if *tls { "tls" } else { "tcp" },
            std::net::SocketAddr::new(*addr, *port),
            name.as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        R::Datagram { name, addr, port } => format!(
            "udp {}{}",
            std::net::SocketAddr::new(*addr, *port),
            name.as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        R::FileWrite { path, op } => format!("{op} {path}"),
        R::FileRename { from, to, .. } => format!("rename {from} -> {to}"),
        R::Exec { path, .. } => format!("exec {path}"),
    }
}

/// `idagent policy …` from the command line: the exit code (0 ok; `check`: 1 if anything
/// would be denied), or an error for exit code 2.
pub fn command(cmd: crate::cli::PolicyCommand) -> Result<u8, PolicyCmdError> {
    use crate::cli::{PolicyCommand, ReportFormat};
    match cmd {
        PolicyCommand::Learn(a) => learn(&a.runs, &a.output).map(|()| 0),
        PolicyCommand::Check(a) => {
            let violations = check(&a.policy, &a.runs)?;
            match a.format {
                ReportFormat::Text => print!("{}", render_violations(&violations)),
                ReportFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&violations).unwrap_or_default()
                ),
            }
            Ok(u8::from(!violations.is_empty()))
        }
        PolicyCommand::Explain(a) => {
            let policy = load_policy(&a.policy)?;
            match a.format {
                ReportFormat::Text => print!("{}", idagent_policy::explain(&policy)),
                ReportFormat::Json => println!("{}", idagent_policy::explain_json(&policy)),
            }
            Ok(0)
        }
    }
}

/// `idagent diff A B`: exit 1 when B did anything A did not.
pub fn diff_command(args: crate::cli::DiffArgs) -> Result<u8, PolicyCmdError> {
    let d = crate::diff::diff(&args.run_a, &args.run_b)?;
    match args.format {
        crate::cli::ReportFormat::Text => print!("{}", d.render_text()),
        crate::cli::ReportFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default())
        }
    }
    Ok(u8::from(d.has_new()))
}

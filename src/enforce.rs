//! The one enforcer of a run: the policy, its mode and the audit sink, injected into every
//! decision point — the DNS service (`dns`), the SYN gate and the UDP path (`netdrv`), the
//! gateway's TLS and HTTP handlers, and the seccomp supervisor (file and exec labels).
//!
//! Owns: calling the pure `idagent_policy::evaluate` once per request, writing the one
//! `decision` event of that request, and telling the caller whether to refuse. Does not own
//! the refusal itself (each decision point refuses in its own protocol: NXDOMAIN, a RST, a TLS
//! alert, a 403, an ICMP unreachable; files and execs are refused by Landlock in the guest
//! kernel, never here) nor routing: the upstream map, `--offline` and the SSRF guard are
//! evaluated by `upstream` and are never widened by a policy.
//!
//! Without a policy ([`Enforcer::disabled`]) every check allows and writes nothing, so a run
//! without `--policy` logs exactly what it logged before.

use crate::audit::{AuditSink, DecisionEvent, DecisionRequest, EventBody, FlowId};
use idagent_policy::{evaluate, Decision, Mode, Policy, Request};

/// Where a decision belongs in the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context {
    pub flow: Option<FlowId>,
    pub pid: Option<i32>,
}

impl Context {
    pub fn flow(flow: FlowId) -> Self {
        Self {
            flow: Some(flow),
            pid: None,
        }
    }
    pub fn pid(pid: i32) -> Self {
        Self {
            flow: None,
            pid: Some(pid),
        }
    }
}

/// What a decision point does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead (allowed, or denied in report mode: the denial is only recorded).
    Allow,
    /// Refuse it, in the decision point's own protocol.
    Deny(Denial),
}

/// An enforced denial, with what an agent's error message should tell its operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub layer: String,
    pub rule: String,
}

/// The run's enforcer (see the module docs).
#[derive(Debug)]
pub struct Enforcer {
    /// `None`: no policy. Behind a lock only so that [`Enforcer::refine`] can make the exec
    /// rules name real files once the guest's filesystem exists; every decision takes an
    /// uncontended read lock.
    policy: Option<std::sync::RwLock<Policy>>,
    audit: AuditSink,
    /// The run's known secret values, scrubbed from decision records like from every other.
    known: std::sync::OnceLock<std::sync::Arc<crate::redact::KnownSecrets>>,
}

impl Enforcer {
    /// No policy: everything is allowed and no `decision` event is written.
    pub fn disabled(audit: AuditSink) -> Self {
        Self {
            policy: None,
            audit,
            known: std::sync::OnceLock::new(),
        }
    }

    /// Decides by `policy` (its modes already resolved by the caller's `--mode`).
    pub fn new(policy: Policy, audit: AuditSink) -> Self {
        Self {
            policy: Some(std::sync::RwLock::new(policy)),
            audit,
            known: std::sync::OnceLock::new(),
        }
    }

    /// Shares the run's registry of known secret values (once).
    pub fn set_known(&self, known: std::sync::Arc<crate::redact::KnownSecrets>) {
        let _ = self.known.set(known);
    }

    /// Whether a policy is in force (report or enforce).
    pub fn active(&self) -> bool {
        self.policy.is_some()
    }

    /// Replaces the policy by `f(policy)` (before the guest's command starts: see
    /// [`reconcile_exec`]). Returns what `f` noted.
    pub fn refine(&self, f: impl FnOnce(&Policy) -> (Policy, Vec<String>)) -> Vec<String> {
        let Some(lock) = &self.policy else {
            return Vec::new();
        };
        let mut guard = lock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (refined, notes) = f(&guard);
        *guard = refined;
        notes
    }

    fn evaluate(&self, req: &Request<'_>) -> Option<Decision> {
        let lock = self.policy.as_ref()?;
        let policy = lock
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(evaluate(&policy, req))
    }

    /// Whether deciding `req` (an HTTP request) needs the MCP tool its body names
    /// ([`idagent_policy::tool_rules_apply`]): the gateway then reads the body first. Writes
    /// nothing.
    pub fn tool_rules_apply(&self, req: &Request<'_>) -> bool {
        let Some(lock) = &self.policy else {
            return false;
        };
        let policy = lock
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idagent_policy::tool_rules_apply(&policy, req)
    }

    /// Decides `req`, writes its `decision` event, and says whether to refuse it.
    /// `enforced_by` names how the caller refuses (`nxdomain`, `tcp_reset`, …); it is written
    /// only when the denial is enforced.
    pub fn check(&self, req: &Request<'_>, ctx: Context, enforced_by: &'static str) -> Permit {
        match self.label(req, ctx, enforced_by) {
            Some(decision) if decision.enforced() => Permit::Deny(Denial {
                layer: decision.layer.to_string(),
                rule: decision.rule,
            }),
            _ => Permit::Allow,
        }
    }

    /// Decides `req` for labelling only (files and execs: Landlock in the guest refuses, this
    /// process never does) and returns the decision; writes the `decision` event.
    pub fn label(
        &self,
        req: &Request<'_>,
        ctx: Context,
        enforced_by: &'static str,
    ) -> Option<Decision> {
        let decision = self.evaluate(req)?;
        let mut event = decision_event(&decision, req, ctx, enforced_by);
        if let Some(k) = self.known.get() {
            let r = &mut event.request;
            r.path = r.path.take().map(|p| k.scrub(&p).text);
            r.query = r.query.take().map(|q| k.scrub(&q).text);
            r.tool = r.tool.take().map(|t| k.scrub(&t).text);
            r.argv = r.argv.iter().map(|a| k.scrub(a).text).collect();
        }
        self.audit.emit(EventBody::Decision(event));
        Some(decision)
    }
}

/// Makes the exec rules name the files Landlock will grant: Landlock grants by inode (opening a
/// rule's path follows its symlinks), and the supervisor labels an exec by the real path of
/// what runs, so every rule path and alias gets its real path (`resolve`, inside the guest's
/// root) added as an alias. Returns the run's policy and one line per addition.
pub fn reconcile_exec(
    policy: &Policy,
    resolve: impl Fn(&str) -> Option<String>,
) -> (Policy, Vec<String>) {
    use idagent_policy::ExecSection;
    let mut notes = Vec::new();
    let mut rules = Vec::new();
    for rule in policy.exec.rules() {
        let mut rule = rule.clone();
        let known: Vec<String> = std::iter::once(rule.path.clone())
            .chain(rule.aliases.iter().cloned())
            .collect();
        for p in known.iter().filter(|p| p.starts_with('/')) {
            if let Some(real) = resolve(p) {
                if !known.contains(&real) && !rule.aliases.contains(&real) {
                    notes.push(format!("exec rule {}: {p} is {real}", rule.id));
                    rule.aliases.push(real);
                }
            }
        }
        rules.push(rule);
    }
    if notes.is_empty() {
        return (policy.clone(), notes);
    }
    let mut out = policy.clone();
    out.exec = ExecSection::new(policy.exec.mode, rules);
    (out, notes)
}

/// The `decision` event for `decision` on `req`.
pub fn decision_event(
    decision: &Decision,
    req: &Request<'_>,
    ctx: Context,
    enforced_by: &'static str,
) -> DecisionEvent {
    DecisionEvent {
        layer: decision.layer.to_string(),
        verdict: decision.verdict.to_string(),
        mode: match decision.mode {
            Mode::Report => "report".into(),
            Mode::Enforce => "enforce".into(),
        },
        rule: decision.rule.clone(),
        would_deny: decision.would_deny(),
        enforced_by: decision.enforced().then(|| enforced_by.to_owned()),
        request: request_fields(req),
        flow: ctx.flow,
        pid: ctx.pid,
    }
}

/// The request's fields as the `decision` event writes them.
pub fn request_fields(req: &Request<'_>) -> DecisionRequest {
    let mut r = DecisionRequest::default();
    match req {
        Request::Dns { name, qtype } => {
            r.name = Some((*name).to_owned());
            r.qtype = Some((*qtype).to_owned());
        }
        Request::Connect {
            name,
            addr,
            port,
            proto,
        } => {
            r.name = name.map(str::to_owned);
            r.addr = Some(addr.to_string());
            r.port = Some(*port);
            r.proto = Some(proto.as_str().to_owned());
        }
        Request::Tls {
            sni,
            alpn,
            name,
            addr,
            port,
        } => {
            r.sni = sni.map(str::to_owned);
            r.alpn = alpn.to_vec();
            r.name = name.map(str::to_owned);
            r.addr = Some(addr.to_string());
            r.port = Some(*port);
        }
        Request::Http {
            scheme,
            host,
            port,
            method,
            path,
            query,
            rpc,
        } => {
            r.scheme = Some(scheme.as_str().to_owned());
            r.name = Some((*host).to_owned());
            r.port = Some(*port);
            r.method = Some((*method).to_owned());
            // Decisions are read by people too: the same fingerprints as the `http` record.
            r.path = Some(crate::redact::redact_text(path).0);
            r.query = query.map(|q| crate::redact::redact_text(q).0);
            match rpc {
                Some(idagent_policy::Rpc::Grpc { service, method }) => {
                    r.grpc = Some(format!("{service}/{method}"));
                }
                Some(idagent_policy::Rpc::Tool(tool)) => {
                    r.tool = Some(crate::redact::redact_text(tool.unwrap_or_default()).0);
                }
                None => {}
            }
        }
        Request::Stream {
            name,
            addr,
            port,
            tls,
        } => {
            r.name = name.map(str::to_owned);
            r.addr = Some(addr.to_string());
            r.port = Some(*port);
            r.proto = Some(if *tls { "tls-stream" } else { "tcp-stream" }.to_owned());
        }
        Request::Datagram { name, addr, port } => {
            r.name = name.map(str::to_owned);
            r.addr = Some(addr.to_string());
            r.port = Some(*port);
            r.proto = Some("udp".into());
        }
        Request::FileWrite { path, op } => {
            r.path = Some((*path).to_owned());
            r.op = Some(op.to_string());
        }
        Request::FileRename { from, to, dir } => {
            r.path = Some((*to).to_owned());
            r.from = Some((*from).to_owned());
            r.op = Some(if *dir { "rename_dir" } else { "rename" }.to_owned());
        }
        Request::Exec { path, argv } => {
            r.path = Some((*path).to_owned());
            r.argv = crate::redact::redact_argv(argv);
        }
    }
    r
}

/// The JSON body of a `403` for a denied HTTP request: what was refused, by which rule, and
/// what to change, so an agent's error message tells its operator.
pub fn denial_body(denial: &Denial, request: &str) -> String {
    serde_json::json!({
        "error": "denied by idagent policy",
        "layer": denial.layer,
        "request": request,
        "rule": denial.rule,
        "hint": "add a rule that allows this request to the policy file, or run with --mode report",
    })
    .to_string()
}

/// The policy of `--policy FILE [--mode M]`, parsed once before anything starts; `None`
/// without `--policy`. `--mode report` makes every rule report-only (a dry run never
/// refuses); `--mode enforce` sets the global mode (explicit per-section or per-rule `report`
/// stays report).
pub fn load_run_policy(
    args: &crate::cli::PolicyArgs,
) -> Result<Option<Policy>, crate::policy_cmd::PolicyCmdError> {
    let Some(path) = &args.policy else {
        return Ok(None);
    };
    let policy = crate::policy_cmd::load_policy(path)?;
    Ok(Some(match args.mode {
        Some(crate::cli::ModeArg::Report) => policy.with_mode_override(Mode::Report),
        Some(crate::cli::ModeArg::Enforce) => policy.with_mode_override(Mode::Enforce),
        None => policy,
    }))
}

/// The guest's scratch shared-memory tmpfs, writable whatever the files rules say.
pub const SCRATCH_SHM: &str = "/dev/shm";

/// Why a run cannot enforce its policy.
#[derive(Debug, thiserror::Error)]
pub enum EnforceSetupError {
    #[error(
        "this kernel has no usable Landlock (ABI {found:?}, need {need} or later), so --mode enforce with file or exec rules cannot be enforced; run with --mode report"
    )]
    NoLandlock { found: Option<u32>, need: u32 },
    #[error("landlock plan path {path:?}: {reason}")]
    Path { path: String, reason: String },
    #[error(
        "policy rule {rule} decides HTTPS requests one by one (inspect: l7), which --tls passthrough cannot see; use --tls intercept, inspect: l4, or --mode report"
    )]
    Uninspectable { rule: String },
}

/// What a reviewer should hear before an enforced run with this policy starts: sections that
/// are enforced but allow nothing (default deny is meant, but an empty `exec` section means the
/// command itself cannot start).
pub fn enforcement_warnings(policy: &Policy) -> Vec<String> {
    let fs = policy.fs_plan();
    let mut out = Vec::new();
    if fs.exec_mode == Mode::Enforce && policy.exec.rules().is_empty() {
        out.push(
            "the policy has no exec rules: in enforce mode every exec is refused, the command's own included (add exec rules, or `exec: {mode: report}`)".to_owned(),
        );
    }
    if fs.files_mode == Mode::Enforce && policy.files.rules().is_empty() {
        out.push(
            "the policy has no files rules: in enforce mode nothing may be created or written in /tmp/workspace".to_owned(),
        );
    }
    out
}

/// Refuses a policy whose enforced HTTPS method/path rules the run could not see: with
/// `--tls passthrough` the gateway never reads the HTTP inside TLS, so such a rule would be
/// enforced as "any request" without saying so.
pub fn check_inspection(
    policy: &Policy,
    tls: crate::gateway::TlsMode,
) -> Result<(), EnforceSetupError> {
    use idagent_policy::{Inspect, Protocol};
    if tls != crate::gateway::TlsMode::Passthrough {
        return Ok(());
    }
    let section = policy.network.mode.unwrap_or(policy.mode);
    let blind = policy.network.rules().iter().find(|r| {
        r.protocol == Protocol::Https
            && r.inspect == Inspect::L7
            && r.mode.unwrap_or(section) == Mode::Enforce
    });
    match blind {
        Some(rule) => Err(EnforceSetupError::Uninspectable {
            rule: rule.id.clone(),
        }),
        None => Ok(()),
    }
}

/// The Landlock plan guest init applies for `policy`: `None` when neither its file rules nor
/// its exec rules are enforced (no policy, or report mode), so nothing is restricted. Checks
/// that the running kernel can enforce it.
pub fn landlock_plan(
    policy: Option<&Policy>,
) -> Result<Option<idagent_guest::landlock::Plan>, EnforceSetupError> {
    use idagent_guest::landlock::{self as ll, PlanPath, Right, Rights, WriteRule};
    let Some(policy) = policy else {
        return Ok(None);
    };
    let fs = policy.fs_plan();
    let handle_files = fs.files_mode == Mode::Enforce;
    let handle_exec = fs.exec_mode == Mode::Enforce;
    if !handle_files && !handle_exec {
        return Ok(None);
    }
    let found = ll::abi_version();
    if found.is_none_or(|abi| abi < ll::MIN_ABI) {
        return Err(EnforceSetupError::NoLandlock {
            found,
            need: ll::MIN_ABI,
        });
    }
    let path = |p: &str| {
        PlanPath::new(p).map_err(|e| EnforceSetupError::Path {
            path: p.to_owned(),
            reason: e.to_string(),
        })
    };
    let mut plan = ll::Plan {
        handle_files,
        handle_exec,
        ..ll::Plan::default()
    };
    if handle_files {
        // The scratch tmpfs is not the policy's to decide (it is not persisted, nor readable
        // from the host; its writes are logged as `file` events `ok`), and runtimes need it
        // (POSIX semaphores, shared memory).
        plan.writes.push(WriteRule {
            path: path(SCRATCH_SHM)?,
            rights: [
                Right::MakeReg,
                Right::MakeDir,
                Right::WriteFile,
                Right::Truncate,
                Right::RemoveFile,
                Right::RemoveDir,
            ]
            .into_iter()
            .collect(),
        });
        for (p, rights) in &fs.write_rules {
            let rights: Rights = rights
                .iter()
                .map(|r| match r {
                    idagent_policy::FsRight::WriteFile => Right::WriteFile,
                    idagent_policy::FsRight::Truncate => Right::Truncate,
                    idagent_policy::FsRight::MakeReg => Right::MakeReg,
                    idagent_policy::FsRight::MakeDir => Right::MakeDir,
                    idagent_policy::FsRight::RemoveFile => Right::RemoveFile,
                    idagent_policy::FsRight::RemoveDir => Right::RemoveDir,
                    idagent_policy::FsRight::Refer => Right::Refer,
                    idagent_policy::FsRight::MakeSym => Right::MakeSym,
                })
                .collect();
            plan.writes.push(WriteRule {
                path: path(p)?,
                rights,
            });
        }
    }
    if handle_exec {
        for p in &fs.exec_paths {
            // Bare names (`python3`) are aliases for the record; the kernel needs paths. Paths
            // through a process's own descriptors (`/proc/self/fd/N`) mean nothing to init.
            if p.starts_with('/') && !p.starts_with("/proc/") && !p.starts_with("/dev/fd/") {
                plan.execs.push(path(p)?);
            }
        }
    }
    Ok(Some(plan))
}

/// The `notice` of a file rule changed by [`reconcile_files`] (not an observation gap).
pub const RECONCILED_NOTICE: &str = "policy_files_reconciled";
/// The `notice` of an exec rule given its real path by [`reconcile_exec`].
pub const EXEC_RESOLVED_NOTICE: &str = "policy_exec_resolved";

/// Makes the policy's file rules say exactly what Landlock will enforce in this run, so a
/// `decision` never claims a refusal the kernel does not make: Landlock grants on inodes that
/// exist when the guest starts, so a `dir` rule whose directory is not in the (seeded)
/// workspace yet is granted at its nearest existing ancestor — and widened to it here too — and
/// a `file` rule whose file does not exist grants nothing and is dropped. `workspace` is the
/// host side of `/tmp/workspace`. Returns the run's policy and one line per change.
pub fn reconcile_files(policy: &Policy, workspace: &std::path::Path) -> (Policy, Vec<String>) {
    use idagent_policy::{FileKind, FilesSection, WorkspacePath};
    let mut notes = Vec::new();
    let mut rules = Vec::new();
    for rule in policy.files.rules() {
        let guest = rule.path.as_str();
        let host_of = |p: &str| {
            let rel = p
                .strip_prefix(crate::GUEST_WORKSPACE)
                .unwrap_or("")
                .trim_start_matches('/');
            workspace.join(rel)
        };
        if host_of(guest).exists() {
            rules.push(rule.clone());
            continue;
        }
        match rule.kind {
            FileKind::File => notes.push(format!(
                "files rule {} dropped: {guest} does not exist when the run starts (a file rule grants writing an existing file)",
                rule.id
            )),
            FileKind::Dir => {
                let mut at = guest;
                while let Some((parent, _)) = at.rsplit_once('/') {
                    at = parent;
                    if at.len() <= crate::GUEST_WORKSPACE.len() || host_of(at).exists() {
                        break;
                    }
                }
                let at = if at.len() < crate::GUEST_WORKSPACE.len() {
                    crate::GUEST_WORKSPACE
                } else {
                    at
                };
                let Ok(path) = WorkspacePath::parse(at) else {
                    continue;
                };
                notes.push(format!(
                    "files rule {} granted at {at}: {guest} does not exist when the run starts, and the kernel grants on what exists (its whole subtree)",
                    rule.id
                ));
                let mut widened = rule.clone();
                widened.path = path;
                rules.push(widened);
            }
        }
    }
    if notes.is_empty() {
        return (policy.clone(), notes);
    }
    let mut out = policy.clone();
    out.files = FilesSection::new(
        policy.files.mode,
        rules,
        policy.files.observed_denied().to_vec(),
    );
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use idagent_policy::{FileOp, Verdict};

    #[test]
    fn file_rules_say_what_the_kernel_will_enforce() {
        let policy = Policy::parse(
            "version: 1\nmode: enforce\nfiles:\n  rules:\n    - path: /tmp/workspace/out/deep\n      kind: dir\n      allow: [create_file]\n    - path: /tmp/workspace/seed.txt\n      kind: file\n      allow: [write]\n",
        )
        .expect("parse");
        let ws = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(ws.path().join("out")).expect("mkdir");
        let (run, notes) = reconcile_files(&policy, ws.path());
        assert_eq!(notes.len(), 2, "{notes:?}");
        let paths: Vec<&str> = run.files.rules().iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/tmp/workspace/out"]);
        // Landlock grants create_file beneath /tmp/workspace/out: so does the decision.
        let req = Request::FileWrite {
            path: "/tmp/workspace/out/x.txt",
            op: FileOp::CreateFile,
        };
        assert_eq!(evaluate(&run, &req).verdict, Verdict::Allow);
        let req = Request::FileWrite {
            path: "/tmp/workspace/seed.txt",
            op: FileOp::Write,
        };
        assert_eq!(evaluate(&run, &req).verdict, Verdict::Deny);
        // Nothing missing: nothing changes.
        std::fs::create_dir(ws.path().join("out/deep")).expect("mkdir");
        std::fs::write(ws.path().join("seed.txt"), b"x").expect("write");
        let (same, notes) = reconcile_files(&policy, ws.path());
        assert!(notes.is_empty());
        assert_eq!(same, policy);
    }
}

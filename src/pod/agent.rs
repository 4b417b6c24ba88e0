//! The pod's agent-side observers: started by `idagent guest-init --pod` (PID 1 of the agent
//! container's own pid namespace) after the command is forked and before it may exec.
//!
//! They are the observers `run` starts on the host — the seccomp supervisor (on the listener
//! init kept), the workspace watcher (on `/tmp/workspace`, this container's own mount) and,
//! with exec rules enforced, the loader guard — writing into a relay sink whose records go,
//! typed, to the proxy's event socket; the proxy puts them into the run's one audit log.
//! Exits are init's `EXIT` reports, which go to the proxy over the control socket.
//!
//! Why here and not in the proxy: see `pod` (reading the app's memory takes its uid or a
//! capability; init has the uid, the proxy has neither).

use crate::attribution::Attribution;
use crate::audit::{AuditSink, EventBody, Notice};
use crate::{enforce, fswatch, procevents, supervisor, GUEST_WORKSPACE};
use idagent_guest::init::PodStart;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the final workspace scan and the last relayed records may take once the command
/// has exited (init exits after it; the proxy is waiting for both).
pub const FINISH_WITHIN: Duration = Duration::from_secs(30);

/// The notice the agent's init sends when the kernel gave the command no seccomp listener.
pub const SECCOMP_MISSING_NOTICE: &str = "observer_missing_seccomp";

/// The hook `guest-init --pod` calls ([`idagent_guest::init::PodHook`]).
pub fn start(pod: PodStart) -> Result<Box<dyn FnOnce()>, String> {
    let relay = AuditSink::relay(pod.events, crate::audit::DEFAULT_AUDIT_QUEUE)
        .map_err(|e| format!("event relay: {e}"))?;
    let sink = relay.sink();
    let policy_path = pod.ctl_dir.join(super::POLICY_FILE);
    let policy = match policy_path.is_file() {
        true => Some(
            crate::policy_cmd::load_policy(&policy_path)
                .map_err(|e| format!("the proxy's policy: {e}"))?,
        ),
        false => None,
    };
    let enforcer = Arc::new(match &policy {
        Some(p) => enforce::Enforcer::new(p.clone(), sink.clone()),
        None => enforce::Enforcer::disabled(sink.clone()),
    });
    // Exec rules get the real paths Landlock granted, as `run` refines them.
    let me = std::process::id();
    for detail in enforcer
        .refine(|p| enforce::reconcile_exec(p, |path| supervisor::real_path_in_guest(me, path)))
    {
        sink.emit(EventBody::Notice(Notice {
            what: enforce::EXEC_RESOLVED_NOTICE.into(),
            detail,
        }));
    }
    // The run's secrets as this container was given them: scrubbed from exec records.
    let known = Arc::new(crate::redact::KnownSecrets::new(None));
    // vars_os: a variable that is not UTF-8 must not stop the observers (vars() would panic).
    known.learn_env(
        &std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect(),
    );
    let attribution = Arc::new(Attribution::default());
    let sup = match pod.listener {
        Ok(listener) => Some(
            supervisor::spawn(
                listener,
                sink.clone(),
                attribution.clone(),
                enforcer.clone(),
                // No proc connector in a pod: each process's exit_group is its exit record.
                supervisor::SupervisorOptions { exits: true },
            )
            .map_err(|e| format!("supervisor: {e}"))?,
        ),
        Err(reason) => {
            // Said once, first: the proxy turns it into run_end's `observation`.
            sink.emit(EventBody::Notice(Notice {
                what: SECCOMP_MISSING_NOTICE.into(),
                detail: format!(
                    "no seccomp user notification in this kernel ({reason}): execs, write \
                     attempts outside the workspace and exit_group are not observed; the \
                     workspace watcher and init's exit reports still are"
                ),
            }));
            None
        }
    };
    if let Some(sup) = &sup {
        sup.exec_confirm().set_known(known);
        if policy
            .as_ref()
            .is_some_and(|p| p.fs_plan().exec_mode == idagent_policy::Mode::Enforce)
        {
            let guard = procevents::ExecGuard {
                enforcer: Some(enforcer),
                confirm: Some(sup.exec_confirm()),
            };
            sup.exec_confirm()
                .set_guard(Box::new(move |pid, exe, guest| {
                    guard.check(pid, exe, guest)
                }));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("pod-observers")
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let watcher = rt
        .block_on(async {
            fswatch::start(
                std::path::Path::new(GUEST_WORKSPACE),
                sink.clone(),
                attribution,
            )
        })
        .map_err(|e| format!("workspace watcher: {e}"))?;
    Ok(Box::new(move || {
        let deadline = Instant::now() + FINISH_WITHIN;
        rt.block_on(async {
            let _ = tokio::time::timeout_at(deadline.into(), watcher.stop_by(deadline)).await;
        });
        // The supervisor stays: init (filtered itself) is alive until it exits, and its last
        // records are queued already.
        drop(sup);
        drop(sink);
        relay.finish(Duration::from_secs(5));
        rt.shutdown_timeout(Duration::from_millis(100));
    }))
}

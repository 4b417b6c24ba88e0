//! idagent as a pod: the same data plane as `idagent run`, assembled from containers that an
//! orchestrator (Kubernetes, or `idagent run --topology pod` on Docker) creates, with no Docker
//! API and no capability in the long-running parts.
//!
//! The pod, in start order (each a container sharing the pod's network namespace):
//! 1. `net-init` (one-shot, root with `NET_ADMIN` only, [`netinit`]): creates [`netns::TUN_NAME`]
//!    as a persistent device owned by [`PROXY_UID`], makes it the only default route (IPv4 and
//!    IPv6) for every uid but the proxy's, and installs the in-namespace netfilter rules
//!    (`guest/pod-netfilter*.rules`): nothing but the proxy's uid leaves by another interface.
//! 2. `proxy` (long-running, uid [`PROXY_UID`], no capability, read-only root, [`proxy`]):
//!    attaches to that TUN and runs the stack, DNS, gateway, pcap, audit writer and policy —
//!    `net::build` and `netdrv::spawn`, as `run` does. It writes the run CA, the Landlock plan
//!    and the policy into the control volume, binds the control and event sockets there and
//!    then says it is ready ([`READY_FILE`]).
//! 3. `agent` (uid ≠ [`PROXY_UID`], no capability, read-only root): its entrypoint is
//!    `idagent guest-init --pod` ([`agent`]), PID 1 of the agent's own pid namespace. It forks
//!    the command, which installs the seccomp filter and hands its listener back to PID 1
//!    (PID 1 itself stays unfiltered: its observers' own syscalls must not wait on them); the
//!    supervisor and the workspace watcher run in this PID 1 (the only process that can read
//!    the app's memory without a capability: same uid, its ancestor), and every record they
//!    make is sent, typed, to the proxy over the event socket; the proxy writes them into the
//!    run's one audit log. Exits are init's
//!    `EXIT` reports over the control socket, as on Docker without the proc connector.
//!
//! Why the listener stays in the agent container (the one departure from `run`, where the
//! host holds it): the supervisor reads syscall arguments from `/proc/<pid>/mem`, which takes
//! the target's uid or `CAP_SYS_PTRACE`. The proxy must have a uid of its own — its uid is
//! what lets its upstream dials leave by the pod's real interface, and what keeps the app from
//! signalling or tracing it — and must hold no capability. PID 1 of the agent's pid namespace
//! can read its descendants (same uid, ancestor: it also passes Yama's `ptrace_scope=1`), and
//! the app cannot kill it (a pid namespace's init ignores signals from inside it), trace it or
//! read its memory (it is not dumpable). See README "Kubernetes" for the trust argument.

pub mod agent;
pub mod docker;
pub mod netinit;
pub mod proxy;

/// The proxy's uid and gid. Net-init exempts this uid from the TUN route; nothing else may
/// run as it (the proxy refuses an agent that does).
pub const PROXY_UID: u32 = 7700;
pub const PROXY_GID: u32 = 7700;

/// Where the pod's shared control volume is mounted in the proxy (read-write).
pub const PROXY_CTL_DIR: &str = "/idagent/ctl";
/// Where the run folders go in the proxy: `RUNS_DIR/<run-id>/audit.jsonl`, ….
pub const PROXY_RUNS_DIR: &str = "/idagent/runs";
/// Where the proxy's configuration (policy, upstream map, CA, run id) is mounted.
pub const PROXY_CONFIG_DIR: &str = "/idagent/config";
/// Where the same control volume is mounted in the agent (read-only).
pub const AGENT_CTL_DIR: &str = "/.idagent/ctl";
/// Where idagent's static binary is in the agent (a read-only volume).
pub const AGENT_BIN: &str = "/.idagent/bin/idagent";
/// In the control volume: the control socket (hello, GO, exit reports).
pub const CTL_SOCK: &str = "ctl.sock";
/// In the control volume: the event socket (the agent's observers' records).
pub const EVENTS_SOCK: &str = "events.sock";
/// In the control volume: written last by the proxy, when the agent may start.
pub const READY_FILE: &str = "ready";
/// In the control volume: written by the proxy once its run is recorded; a sidecar restarted
/// after it finds it and only waits to be stopped.
pub const DONE_FILE: &str = "done";
/// In the control volume: why the orchestrator stopped the agent (`timeout`, `interrupted`),
/// written before it does; the proxy's `run_end.reason`.
pub const STOP_FILE: &str = "stop-reason";
/// In the control volume: the Landlock plan (when the policy has file or exec rules).
pub const LANDLOCK_PLAN: &str = "landlock.plan";
/// In the control volume: the run's policy as the proxy resolved it (the agent's observers
/// label their records with it).
pub const POLICY_FILE: &str = "policy.yaml";
/// In the control volume: the combined CA bundle (system roots + run CA) and the run CA alone.
pub const CA_BUNDLE: &str = "ca/ca-bundle.crt";
pub const CA_ONLY: &str = "ca/ca.pem";

/// The agent container's entrypoint; the command follows.
pub fn agent_entrypoint() -> Vec<String> {
    vec![
        AGENT_BIN.to_owned(),
        "guest-init".to_owned(),
        "--pod".to_owned(),
        "--ctl".to_owned(),
        format!("{AGENT_CTL_DIR}/{CTL_SOCK}"),
        "--".to_owned(),
    ]
}

/// The agent's environment: `env` plus the CA trust variables, pointing into the control
/// volume (the system bundle path is also covered by a mount of [`CA_BUNDLE`] over it).
pub fn agent_env(
    env: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let mut env = env.clone();
    env.entry("HOME".into())
        .or_insert_with(|| crate::GUEST_WORKSPACE.into());
    let bundle = format!("{AGENT_CTL_DIR}/{CA_BUNDLE}");
    let ca_only = format!("{AGENT_CTL_DIR}/{CA_ONLY}");
    for (k, v) in crate::net::ca_env() {
        let v = if v == crate::net::GUEST_CA_ONLY {
            ca_only.clone()
        } else {
            bundle.clone()
        };
        env.entry(k.into()).or_insert(v);
    }
    env
}

/// `idagent net-init`'s arguments in the pod.
pub fn net_init_args() -> Vec<String> {
    vec![
        "net-init".to_owned(),
        "--proxy-uid".to_owned(),
        PROXY_UID.to_string(),
    ]
}

/// Where the proxy finds files named by `run`'s options (a ConfigMap in Kubernetes).
pub const PROXY_UPSTREAM_MAP: &str = "/idagent/config/upstream-map.txt";
pub const PROXY_UPSTREAM_CA: &str = "/idagent/config/upstream-ca.pem";
pub const PROXY_POLICY: &str = "/idagent/config/policy.yaml";
pub const PROXY_MODE: &str = "/idagent/config/mode";
pub const PROXY_RUN_ID: &str = "/idagent/podinfo/run-id";

/// Which of the proxy's configuration files exist (under [`PROXY_CONFIG_DIR`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyFiles {
    /// `policy.yaml`.
    pub policy: bool,
    /// `mode` (`report` or `enforce`), overriding the policy file's.
    pub mode: bool,
    /// `upstream-map.txt`: every map entry, one a line.
    pub upstream_map: bool,
    /// `upstream-ca.pem`.
    pub upstream_ca: bool,
}

/// `idagent proxy`'s arguments (after the binary) for `cfg`, the one place both the Kubernetes
/// manifest and the Docker pod take them from: the same meaning as `run`'s options.
pub fn proxy_args(cfg: &crate::config::RunConfig, files: ProxyFiles) -> Vec<String> {
    let mut c: Vec<String> = [
        "proxy",
        "--ctl",
        PROXY_CTL_DIR,
        "--out",
        PROXY_RUNS_DIR,
        "--run-id-file",
        PROXY_RUN_ID,
    ]
    .map(str::to_owned)
    .to_vec();
    let mut flag = |name: &str, value: Option<String>| {
        c.push(format!("--{name}"));
        c.extend(value);
    };
    if files.policy {
        flag("policy", Some(PROXY_POLICY.into()));
        if files.mode {
            flag("mode-file", Some(PROXY_MODE.into()));
        }
    }
    if files.upstream_map {
        flag("upstream-map-file", Some(PROXY_UPSTREAM_MAP.into()));
    }
    if files.upstream_ca {
        flag("upstream-ca", Some(PROXY_UPSTREAM_CA.into()));
    }
    let net = &cfg.net;
    if net.offline {
        flag("offline", None);
    }
    if net.allow_private {
        flag("allow-private", None);
    }
    if net.tls != crate::gateway::TlsMode::Intercept {
        flag("tls", Some("passthrough".into()));
    }
    if net.http1_only {
        flag("http1-only", None);
    }
    if net.capture_bytes != crate::gateway::DEFAULT_CAPTURE_BYTES {
        flag("capture-bytes", Some(net.capture_bytes.to_string()));
    }
    if net.snaplen != 0 {
        flag("snaplen", Some(net.snaplen.to_string()));
    }
    flag("max-audit-bytes", Some(cfg.max_audit_bytes.to_string()));
    flag("agent-image", Some(cfg.image.clone()));
    flag("agent-user", Some(cfg.user.clone()));
    c.push("--".into());
    c.extend(cfg.command.iter().cloned());
    c
}

//! One run, start to end: the lifecycle of a sealed guest.
//!
//! Owns: the order of things (run folder → audit log → container → sealed network → observers
//! → go → wait → teardown) and making teardown happen on every path, error or not. Does not
//! own: any mechanism (each lives in its module: `runtime`, `netns`, `supervisor`, `fswatch`,
//! `procevents`, `net`, `netdrv`).

use crate::attribution::Attribution;
use crate::audit::{
    AuditLog, AuditSink, EventBody, Limits, Notice, Observation, RunEnd, RunId, RunStart,
};
use crate::config::{user_ids, RunConfig};
use crate::runtime::{self, Bind, ContainerRuntime, ContainerSpec};
use crate::{fswatch, net, netdrv, netns, procevents, supervisor, GUEST_WORKSPACE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, info_span, warn, Instrument};

pub(crate) mod exits;
pub(crate) mod files;
pub mod workspace;
use files::forward_output;

/// Where idagent's own binary appears in the guest (it is the guest's PID 1).
pub const GUEST_INIT_PATH: &str = "/.idagent/idagent";
/// Where the control socket's folder appears in the guest.
pub const GUEST_CTL_DIR: &str = "/.idagent/ctl";
/// Host folder for per-run control sockets and generated /etc files (not part of the capture).
pub const HOST_CTL_ROOT: &str = "/run/idagent";
/// The Landlock plan's file name in the control folder (guest: under [`GUEST_CTL_DIR`]).
pub const LANDLOCK_PLAN: &str = "landlock.plan";
/// How long the guest init gets to connect back after the container starts.
pub const INIT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long teardown may take once the guest is gone: draining observers, the watcher's final
/// scan, closing the capture, exporting the workspace. A step still running at the deadline is
/// left behind (its thread ends with the process) and named in a `teardown_deadline` notice.
pub const TEARDOWN_DEADLINE: Duration = Duration::from_secs(60);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i64),
    Timeout,
    Interrupted,
    /// The audit log could not keep the record (`audit_failed`, `audit_cap`): the guest was
    /// stopped, fail closed.
    AuditFailed(&'static str),
}

impl Ending {
    /// idagent's own exit code: the guest's, or the conventional ones for timeout (124) and
    /// interruption (130); 2 (idagent's own failure) when the log could not keep the record.
    pub fn exit_code(self) -> i32 {
        match self {
            Ending::Exited(c) => c.clamp(0, 255) as i32,
            Ending::Timeout => 124,
            Ending::Interrupted => 130,
            Ending::AuditFailed(_) => 2,
        }
    }
}

/// What the caller learns from a finished run.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: RunId,
    pub run_dir: PathBuf,
    pub ending: Ending,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("create run folder {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("guest init: {0}")]
    Ctl(#[from] idagent_guest::ctl::CtlError),
    #[error("guest init connected from pid {got:?}, expected the container's pid {expected}")]
    WrongPeer { got: Option<i32>, expected: i32 },
    #[error(transparent)]
    Net(#[from] net::NetSetupError),
    #[error("start observer {what}: {reason}")]
    Observer { what: &'static str, reason: String },
    #[error(transparent)]
    Enforce(#[from] crate::enforce::EnforceSetupError),
    #[error(transparent)]
    Workspace(#[from] workspace::WorkspaceError),
    #[error("this host cannot run a guest: {0}")]
    Precondition(String),
}

/// Per-run resources that teardown must release, filled in as setup progresses.
#[derive(Default)]
struct Live {
    container: Option<String>,
    net: Option<netns::GuestNs>,
    tun_stop: Option<tokio::sync::watch::Sender<bool>>,
    tun_task: Option<tokio::task::JoinHandle<std::io::Result<netdrv::DriverStats>>>,
    pcap: Option<crate::pcap::PcapHandle>,
    supervisor: Option<supervisor::SupervisorHandle>,
    fswatch: Option<fswatch::WorkspaceWatcher>,
    procs: Option<procevents::ProcWatcher>,
    output_task: Option<tokio::task::JoinHandle<()>>,
    init_reports: Option<std::thread::JoinHandle<Option<i64>>>,
}

/// Runs `cfg` to completion in a sealed guest. The image must exist.
pub async fn run<R: ContainerRuntime>(rt: &R, cfg: &RunConfig) -> Result<RunOutcome, SandboxError> {
    let run_id = RunId::generate();
    let span = info_span!("run", run.id = %run_id);
    run_inner(rt, cfg, run_id).instrument(span).await
}

async fn run_inner<R: ContainerRuntime>(
    rt: &R,
    cfg: &RunConfig,
    run_id: RunId,
) -> Result<RunOutcome, SandboxError> {
    let started = Instant::now();
    // Checked before anything exists: what can fail stops the run here, with nothing to
    // clean up; what only narrows observation is said in run_start.
    let mut observation = preflight(cfg)?;
    let run_dir = cfg
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("captures").join(run_id.as_str()));
    let ctl_dir = PathBuf::from(HOST_CTL_ROOT).join(run_id.as_str());
    let seeded = prepare_dirs(cfg, &run_dir, &ctl_dir)?;
    // The run's policy says what the kernel will enforce on the workspace as seeded (the seed
    // is what the guest's tmpfs will hold when the command starts).
    let (policy, reconciled) = match &cfg.policy {
        Some(p) => {
            let (p, notes) = crate::enforce::reconcile_files(p, &seeded);
            (Some(p), notes)
        }
        None => (None, Vec::new()),
    };
    let landlock = crate::enforce::landlock_plan(policy.as_ref())?;
    if let Some(plan) = &landlock {
        let path = ctl_dir.join(LANDLOCK_PLAN);
        std::fs::write(&path, plan.render())
            .map_err(|source| SandboxError::RunDir { path, source })?;
    }
    observation.landlock = landlock.is_some();
    let audit = AuditLog::create_with(
        &run_dir.join("audit.jsonl"),
        run_id.clone(),
        crate::audit::DEFAULT_AUDIT_QUEUE,
        crate::audit::AuditLimits {
            max_bytes: cfg.max_audit_bytes,
            ..Default::default()
        },
    )?;
    let sink = audit.sink();
    let name = format!("idagent-{run_id}");
    sink.emit_reliable(EventBody::RunStart(RunStart {
        idagent_version: env!("CARGO_PKG_VERSION").into(),
        image: cfg.image.clone(),
        command: run_start_command(cfg),
        user: cfg.user.clone(),
        workspace: GUEST_WORKSPACE.into(),
        limits: Limits {
            memory_bytes: cfg.memory_bytes,
            pids: cfg.pids,
            cpus: Some(cfg.cpus),
            workspace_bytes: Some(cfg.workspace_bytes),
            audit_bytes: Some(cfg.max_audit_bytes),
            timeout_secs: cfg.timeout.map(|t| t.as_secs()),
        },
        offline: cfg.net.offline,
        container: name.clone(),
        observation: Some(observation.clone()),
    }))
    .await;
    for detail in reconciled {
        sink.emit(EventBody::Notice(Notice {
            what: crate::enforce::RECONCILED_NOTICE.into(),
            detail,
        }));
    }

    let mut live = Live::default();
    let mut ws = None;
    let result = setup_and_wait(
        rt,
        cfg,
        &observation,
        audit.failed(),
        policy.as_ref(),
        &run_id,
        &name,
        &run_dir,
        &ctl_dir,
        &sink,
        &mut live,
        &mut ws,
    )
    .await;
    let deadline = Instant::now() + TEARDOWN_DEADLINE;
    let end = teardown(rt, &mut live, &sink, deadline).await;
    // The watcher's final scan is done: now the workspace can be copied out and unmounted.
    let ws_sink = sink.clone();
    let ws_dst = run_dir.join("workspace");
    let ws_problems = match ws {
        Some(ws) => tokio::task::spawn_blocking(move || ws.finish(&ws_dst, &ws_sink, deadline))
            .await
            .unwrap_or_else(|e| vec![format!("workspace export task: {e}")]),
        None => Vec::new(),
    };
    for problem in ws_problems {
        notice(&sink, "workspace", problem);
    }
    let _ = std::fs::remove_dir_all(&ctl_dir);
    let (ending, reason) = match &result {
        Ok(Ending::Exited(_)) => (result.as_ref().ok().copied(), "exited"),
        Ok(Ending::Timeout) => (Some(Ending::Timeout), "timeout"),
        Ok(Ending::Interrupted) => (Some(Ending::Interrupted), "interrupted"),
        Ok(Ending::AuditFailed(reason)) => (result.as_ref().ok().copied(), *reason),
        Err(e) => {
            sink.emit(EventBody::Notice(Notice {
                what: "run_error".into(),
                detail: e.to_string(),
            }));
            (None, "error")
        }
    };
    audit
        .finish(RunEnd {
            exit_code: match ending {
                Some(Ending::Exited(c)) => Some(c),
                _ => None,
            },
            reason: reason.into(),
            duration_ms: started.elapsed().as_millis() as u64,
            observation: Some(observation),
            ..end
        })
        .await?;
    // The reviewer's page, from the finished log; a failure here loses nothing (the log is
    // complete) and is reported on stderr only.
    if let Err(e) = crate::report::write_html(&run_dir) {
        warn!(error = %e, "report.html not written");
    }
    let ending = result?;
    Ok(RunOutcome {
        run_id,
        run_dir,
        ending,
    })
}

/// What must hold before anything of the run exists, and what this host lets the run
/// observe. Errors here leave nothing to clean up.
fn preflight(cfg: &RunConfig) -> Result<Observation, SandboxError> {
    // Creating namespaces' devices, entering the guest's netns and reading its /proc need root.
    if !nix::unistd::geteuid().is_root() {
        return Err(SandboxError::Precondition(
            "idagent run needs root on the host (it creates the guest's TUN and firewall)".into(),
        ));
    }
    // A kernel that cannot enforce the policy's file and exec rules stops the run.
    crate::enforce::landlock_plan(cfg.policy.as_ref())?;
    // The supervisor is a seccomp user-notification listener (Linux 5.0+); without it the
    // guest's init would fail after the container exists.
    if !seccomp_notify_available() {
        return Err(SandboxError::Precondition(
            "the kernel has no seccomp user notification (Linux 5.0 or later is needed)".into(),
        ));
    }
    // The guest's only network is a TUN device we create in its namespace.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| SandboxError::Precondition(format!("open /dev/net/tun: {e}")))?;
    for tool in ["ip", "iptables-restore", "ip6tables-restore"] {
        if !crate::netns::tool_exists(tool) {
            return Err(SandboxError::Precondition(format!(
                "`{tool}` is not installed (apt-get install iproute2 iptables)"
            )));
        }
    }
    let mut obs = Observation {
        seccomp: true,
        fswatch: true,
        ..Observation::default()
    };
    match procevents::probe() {
        Ok(()) => {
            obs.proc_connector = true;
            obs.exits = "proc_connector".into();
        }
        Err(e) => {
            warn!(error = %e, "proc connector unavailable: exits come from init and seccomp");
            obs.exits = "init+seccomp".into();
            obs.missing.push(format!(
                "proc connector ({e}; it answers only in the initial network namespace): exits \
                 come from the guest's init and each process's exit_group; a process killed by \
                 a signal and reaped by its own parent has no exit record"
            ));
        }
    }
    Ok(obs)
}

#[allow(unsafe_code)] // one seccomp(2) query with a plain-data out-parameter
fn seccomp_notify_available() -> bool {
    // struct seccomp_notif_sizes: three u16.
    let mut sizes = [0u16; 3];
    const SECCOMP_GET_NOTIF_SIZES: libc::c_ulong = 3;
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes exactly a seccomp_notif_sizes (6 bytes) to the
    // pointer, which points at a live 6-byte buffer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_NOTIF_SIZES,
            0 as libc::c_ulong,
            sizes.as_mut_ptr(),
        )
    };
    rc == 0 && sizes[0] > 0
}

/// Creates the run folder, the workspace (seeded, owned by the guest user) and the control
/// folder with the guest's /etc files. Returns the workspace path.
fn prepare_dirs(cfg: &RunConfig, run_dir: &Path, ctl_dir: &Path) -> Result<PathBuf, SandboxError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SandboxError::RunDir { path, source }
    };
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    // The run folder holds what the guest did and sent: owner (root) only.
    std::fs::set_permissions(run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io(run_dir))?;
    // The exported workspace appears here at the end; a folder already there is another
    // run's and must not be mixed with this one.
    let exported = run_dir.join("workspace");
    if exported.symlink_metadata().is_ok() {
        return Err(SandboxError::RunDir {
            path: exported,
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    let etc = ctl_dir.join("etc");
    std::fs::create_dir_all(&etc).map_err(io(&etc))?;
    // Lets `idagent gc` tell a live run's folder from a dead one's.
    std::fs::write(ctl_dir.join("owner"), std::process::id().to_string()).map_err(io(ctl_dir))?;
    let hostname = GUEST_HOSTNAME;
    let files = [
        ("hostname", format!("{hostname}\n")),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{hostname}\n"),
        ),
        (
            "resolv.conf",
            format!("# idagent: every DNS query goes to the gateway, whatever resolver is named\nnameserver {}\noptions edns0\n", netns::GATEWAY_V4),
        ),
    ];
    for (file, text) in files {
        std::fs::write(etc.join(file), text).map_err(io(&etc))?;
    }
    // What the workspace holds when the command starts: the seed, or nothing.
    Ok(match &cfg.workspace_seed {
        Some(seed) => seed.clone(),
        None => {
            let empty = ctl_dir.join("empty-workspace");
            std::fs::create_dir_all(&empty).map_err(io(&empty))?;
            empty
        }
    })
}

#[allow(clippy::too_many_arguments)] // the run's context, threaded once through setup
async fn setup_and_wait<R: ContainerRuntime>(
    rt: &R,
    cfg: &RunConfig,
    observation: &Observation,
    audit_failed: impl std::future::Future<Output = crate::audit::AuditFailure>,
    policy: Option<&idagent_policy::Policy>,
    run_id: &RunId,
    name: &str,
    run_dir: &Path,
    ctl_dir: &Path,
    sink: &AuditSink,
    live: &mut Live,
    ws: &mut Option<workspace::Workspace>,
) -> Result<Ending, SandboxError> {
    let sock = ctl_dir.join("ctl.sock");
    let ctl = idagent_guest::ctl::CtlServer::bind(&sock)?;
    let pcap_path = cfg
        .pcap
        .clone()
        .unwrap_or_else(|| run_dir.join("traffic.pcapng"));
    let enforcer = Arc::new(match policy {
        Some(policy) => crate::enforce::Enforcer::new(policy.clone(), sink.clone()),
        None => crate::enforce::Enforcer::disabled(sink.clone()),
    });
    // With exec rules enforced, a program that still got to run through the dynamic loader
    // (a path swapped after the supervisor read it) is stopped right after its exec: Landlock
    // cannot refuse that route, the loader must stay executable.
    let mut exec_guard = procevents::ExecGuard {
        enforcer: policy
            .is_some_and(|p| p.fs_plan().exec_mode == idagent_policy::Mode::Enforce)
            .then(|| enforcer.clone()),
        confirm: None,
    };
    let mut icpt = net::build(
        &cfg.net,
        run_id,
        sink.clone(),
        Some(&pcap_path),
        enforcer.clone(),
    )?;
    // One registry for the run: the gateway's, also given what the guest is handed (secret-named
    // `--env`/manifest variables, the command's credentials) and the supervisor's argv.
    let known = icpt.gateway.known.clone();
    enforcer.set_known(known.clone());
    known.learn_env(&cfg.env);
    known.learning(|| crate::redact::redact_argv(&cfg.command));
    let mut spec = container_spec(cfg, run_id, name, ctl_dir)?;
    if let Some(ca) = &icpt.ca {
        // The guest trusts the run CA without writing its read-only root: a combined bundle
        // mounted over the system bundle, and the variables common runtimes read.
        let (bundle, ca_only) = net::write_ca_files(ca, &ctl_dir.join("ca"))?;
        spec.binds.push(Bind {
            host: bundle,
            guest: net::GUEST_CA_BUNDLE.into(),
            read_only: true,
        });
        spec.binds.push(Bind {
            host: ca_only,
            guest: net::GUEST_CA_ONLY.into(),
            read_only: true,
        });
        for (k, v) in net::ca_env() {
            spec.env.entry(k.into()).or_insert_with(|| v.into());
        }
    }
    let id = rt.create(&spec).await?;
    live.container = Some(id.clone());

    let (out_tx, out_rx) = tokio::sync::mpsc::channel(256);
    rt.attach(&id, out_tx).await?;
    live.output_task = Some(tokio::spawn(forward_output(
        out_rx,
        run_dir.to_owned(),
        Some(sink.clone()),
        cfg.max_output_bytes,
    )));
    rt.start(&id).await?;
    let pid = rt.init_pid(&id).await?;
    info!(container.id = %id, init.pid = pid, "guest started");
    // Init is parked until GO: the workspace is ours to open and seed.
    let opened = workspace::Workspace::open(pid)?;
    if let Some(seed) = &cfg.workspace_seed {
        let (uid, gid) = user_ids(&cfg.user);
        opened.seed(seed, uid, gid)?;
    }
    let workspace = opened.path().to_owned();
    *ws = Some(opened);

    // Seal the network before the app exists: the init is parked waiting for our GO.
    let net = netns::seal(pid)?;
    let mut setup = net.describe();
    setup.ca_sha256 = icpt.ca.as_ref().map(|ca| ca.fingerprint_sha256());
    sink.emit(EventBody::NetSetup(setup));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let device = net_device(live, net)?;
    let parts = netdrv::DriverParts {
        gateway: icpt.gateway.clone(),
        dns: icpt.dns.clone(),
        pcap: icpt.pcap.as_ref().map(|p| p.sender()),
        audit: sink.clone(),
    };
    live.pcap = icpt.pcap.take();
    live.tun_task = Some(netdrv::spawn(device, parts, stop_rx));
    live.tun_stop = Some(stop_tx);

    let conn = tokio::task::spawn_blocking(move || {
        let conn = ctl.accept_init(INIT_CONNECT_TIMEOUT);
        // Unlink at once: the app, started later, must find no socket to talk to.
        let _ = std::fs::remove_file(ctl.path());
        conn
    })
    .await
    .map_err(|e| observer("ctl", e))??;
    // The listener moves to the supervisor; no duplicate may stay behind, or a stopped
    // supervisor would leave the guest hanging instead of failing its syscalls.
    let idagent_guest::ctl::InitConn {
        listener,
        hello,
        peer_pid,
        mut reply,
    } = conn;
    if peer_pid.is_some_and(|p| p != pid) {
        reply.abort("unexpected peer");
        return Err(SandboxError::WrongPeer {
            got: peer_pid,
            expected: pid,
        });
    }
    // The guest's filesystem exists now: exec rules get the real paths Landlock will grant.
    for detail in enforcer.refine(|p| {
        crate::enforce::reconcile_exec(p, |path| {
            supervisor::real_path_in_guest(pid.unsigned_abs(), path)
        })
    }) {
        sink.emit(EventBody::Notice(Notice {
            what: crate::enforce::EXEC_RESOLVED_NOTICE.into(),
            detail,
        }));
    }
    let attribution = Arc::new(Attribution::default());
    let options = supervisor::SupervisorOptions {
        // Without the proc connector, each process's exit_group is its exit record.
        exits: cfg.seccomp_exits || !observation.proc_connector,
    };
    let sup = supervisor::spawn(
        listener,
        sink.clone(),
        attribution.clone(),
        enforcer,
        options,
    )
    .map_err(|e| observer("supervisor", e))?;
    // Before GO: the guest's first exec is already scrubbed of the run's known values.
    sup.exec_confirm().set_known(known);
    // The proc connector's exec events confirm what an exec ran sooner than the supervisor's
    // own look at /proc (both write one `exec_ran` between them).
    exec_guard.confirm = Some(sup.exec_confirm());
    if !observation.proc_connector && exec_guard.enforcer.is_some() {
        // No proc connector to report execs: the supervisor's own confirmation stops a loader
        // exec that got past the syscall refusal, from /proc/<pid>/exe as well.
        let guard = exec_guard.clone();
        sup.exec_confirm()
            .set_guard(Box::new(move |pid, exe, guest| {
                guard.check(pid, exe, guest)
            }));
    }
    live.supervisor = Some(sup);
    let observers = (|| {
        live.fswatch = Some(
            fswatch::start(&workspace, sink.clone(), attribution)
                .map_err(|e| observer("fswatch", e))?,
        );
        if observation.proc_connector {
            live.procs = Some(
                procevents::start(pid, hello.guest_pid, sink.clone(), Some(exec_guard))
                    .map_err(|e| observer("procevents", e))?,
            );
        } else {
            // Without the proc connector, init's reports are how orphans' and the
            // command's exits are recorded.
            let reader = reply.reports().map_err(|e| observer("init reports", e))?;
            live.init_reports = Some(exits::spawn(reader, sink.clone()));
        }
        Ok::<_, SandboxError>(())
    })();
    if let Err(e) = observers {
        reply.abort(&e.to_string());
        return Err(e);
    }
    reply.go()?;
    info!("guest command started");

    let timeout = async {
        match cfg.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| observer("signals", e))?;
    let ending = tokio::select! {
        code = rt.wait(&id) => Ending::Exited(code?),
        failure = audit_failed => {
            warn!(%failure, "the audit log cannot keep the record: stopping the guest");
            sink.emit(EventBody::Notice(Notice {
                what: failure.reason().into(),
                detail: format!("{failure}; the guest is stopped"),
            }));
            Ending::AuditFailed(failure.reason())
        }
        _ = timeout => Ending::Timeout,
        _ = tokio::signal::ctrl_c() => Ending::Interrupted,
        _ = sigterm.recv() => Ending::Interrupted,
    };
    if !matches!(ending, Ending::Exited(_)) {
        warn!(?ending, "stopping guest");
        rt.kill(&id).await?;
        let _ = rt.wait(&id).await;
    }
    Ok(ending)
}

fn observer(what: &'static str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Observer {
        what,
        reason: e.to_string(),
    }
}

/// `run_start.command`: credentials redacted by their shape, and the values of secret-named
/// variables given to the guest wherever they appear in it (`sh -c 'curl -H "x: $T"'` written
/// out). Its own registry: the run's is built with the interceptor, after `run_start`.
fn run_start_command(cfg: &RunConfig) -> Vec<String> {
    let known = crate::redact::KnownSecrets::new(None);
    known.learn_env(&cfg.env);
    known.redact_argv(&cfg.command)
}

/// Moves the TUN device out for the driver; the namespace handle stays for teardown.
fn net_device(live: &mut Live, net: netns::GuestNet) -> Result<tun::Device, SandboxError> {
    let (device, rest) = net.split();
    live.net = Some(rest);
    Ok(device)
}

/// The guest's hostname: the container's UTS name, `/etc/hostname` and the `127.0.1.1` line of
/// `/etc/hosts` agree, so `gethostbyname(gethostname())` never becomes a DNS query.
const GUEST_HOSTNAME: &str = "idagent-guest";

fn container_spec(
    cfg: &RunConfig,
    run_id: &RunId,
    name: &str,
    ctl_dir: &Path,
) -> Result<ContainerSpec, SandboxError> {
    let exe = std::env::current_exe().map_err(|source| SandboxError::RunDir {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let bind = |host: PathBuf, guest: &str, read_only| Bind {
        host,
        guest: guest.to_owned(),
        read_only,
    };
    let etc = ctl_dir.join("etc");
    let mut entrypoint = vec![
        GUEST_INIT_PATH.to_owned(),
        "guest-init".to_owned(),
        "--ctl".to_owned(),
        format!("{GUEST_CTL_DIR}/ctl.sock"),
    ];
    // The plan is written before the container exists (run_inner) when the policy enforces
    // file or exec rules; init applies it in the command's process just before the exec.
    if ctl_dir.join(LANDLOCK_PLAN).is_file() {
        entrypoint.push("--landlock".to_owned());
        entrypoint.push(format!("{GUEST_CTL_DIR}/{LANDLOCK_PLAN}"));
    }
    entrypoint.push("--".to_owned());
    entrypoint.shrink_to_fit();
    let mut env = cfg.env.clone();
    env.entry("HOME".into())
        .or_insert_with(|| GUEST_WORKSPACE.into());
    Ok(ContainerSpec {
        name: name.to_owned(),
        image: cfg.image.clone(),
        entrypoint,
        cmd: cfg.command.clone(),
        env,
        user: cfg.user.clone(),
        workdir: GUEST_WORKSPACE.into(),
        binds: vec![
            bind(exe, GUEST_INIT_PATH, true),
            bind(ctl_dir.to_owned(), GUEST_CTL_DIR, true),
            bind(etc.join("hosts"), "/etc/hosts", true),
            bind(etc.join("hostname"), "/etc/hostname", true),
            bind(etc.join("resolv.conf"), "/etc/resolv.conf", true),
        ],
        memory_bytes: cfg.memory_bytes,
        pids: cfg.pids,
        nano_cpus: (cfg.cpus * 1e9) as i64,
        tmpfs: BTreeMap::from([(GUEST_WORKSPACE.to_owned(), {
            let (uid, gid) = user_ids(&cfg.user);
            workspace::tmpfs_options(cfg.workspace_bytes, uid, gid)
        })]),
        labels: BTreeMap::from([
            (runtime::LABEL.to_owned(), "1".to_owned()),
            (runtime::LABEL_RUN.to_owned(), run_id.to_string()),
            (
                runtime::LABEL_OWNER_PID.to_owned(),
                std::process::id().to_string(),
            ),
        ]),
        hostname: GUEST_HOSTNAME.to_owned(),
        network: "none".to_owned(),
        cap_add: Vec::new(),
        devices: Vec::new(),
        sysctls: BTreeMap::new(),
    })
}

/// Releases everything in `live`, in the order that loses no event: observers drain first,
/// then the namespace (after its counters are read), then the container.
async fn teardown<R: ContainerRuntime>(
    rt: &R,
    live: &mut Live,
    sink: &AuditSink,
    deadline: Instant,
) -> RunEnd {
    let mut end = RunEnd::default();
    // Each step gets what is left of the deadline; one that overruns is named, not awaited.
    let bounded = |step: &'static str| {
        let sink = sink.clone();
        move |late: bool| {
            if late {
                notice(
                    &sink,
                    "teardown_deadline",
                    format!("{step} was still running at the teardown deadline ({TEARDOWN_DEADLINE:?}) and was cut short"),
                );
            }
        }
    };
    let left = || deadline.saturating_duration_since(Instant::now());
    if let Some(id) = &live.container {
        // Whatever state we are in, the guest must be gone before observers close.
        if let Err(e) = rt.kill(id).await {
            notice(sink, "teardown", e);
        }
        let _ = rt.wait(id).await;
    }
    if let Some(procs) = live.procs.take() {
        let late = tokio::time::timeout(left(), tokio::task::spawn_blocking(move || procs.stop()))
            .await
            .is_err();
        bounded("the process watcher's drain")(late);
    }
    if let Some(reports) = live.init_reports.take() {
        let late = tokio::time::timeout(
            left(),
            tokio::task::spawn_blocking(move || {
                let _ = reports.join();
            }),
        )
        .await
        .is_err();
        bounded("reading init's exit reports")(late);
    }
    if let Some(sup) = live.supervisor.take() {
        let late = tokio::time::timeout(left(), tokio::task::spawn_blocking(move || sup.join()))
            .await
            .is_err();
        bounded("the supervisor's drain")(late);
    }
    if let Some(w) = live.fswatch.take() {
        let late = tokio::time::timeout(left(), w.stop()).await.is_err();
        bounded("the workspace watcher's final scan")(late);
    }
    if let Some(stop) = live.tun_stop.take() {
        let _ = stop.send(true);
    }
    if let Some(task) = live.tun_task.take() {
        let res = tokio::time::timeout(left(), task).await;
        bounded("the network driver's stop")(res.is_err());
        if let Ok(Ok(Ok(stats))) = res {
            end.tun_packets_in = stats.packets_in;
            end.tun_packets_out = stats.packets_out;
            end.tun_packets_dropped = stats.dropped;
        }
    }
    if let Some(pcap) = live.pcap.take() {
        let res =
            tokio::time::timeout(left(), tokio::task::spawn_blocking(move || pcap.finish())).await;
        bounded("closing the capture")(res.is_err());
        if let Ok(Ok(stats)) = res {
            end.pcap_packets = Some(stats.packets_written);
            end.pcap_packets_dropped = Some(stats.packets_dropped);
        }
    }
    if let Some(net) = live.net.take() {
        match tokio::task::spawn_blocking(move || net.firewall_drops()).await {
            Ok(Ok(n)) => end.firewall_packets_dropped = Some(n),
            Ok(Err(e)) => notice(sink, "firewall_counters", e),
            Err(e) => notice(sink, "firewall_counters", e),
        }
    }
    if let Some(id) = live.container.take() {
        if let Err(e) = rt.remove(&id).await {
            notice(sink, "teardown", e);
        }
    }
    if let Some(task) = live.output_task.take() {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    end
}

fn notice(sink: &AuditSink, what: &str, e: impl std::fmt::Display) {
    warn!(what, error = %e, "teardown step failed");
    sink.emit(EventBody::Notice(Notice {
        what: what.into(),
        detail: e.to_string(),
    }));
}

/// Removes control folders of runs whose idagent process is gone.
pub fn gc_ctl_dirs() {
    let Ok(entries) = std::fs::read_dir(HOST_CTL_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let owner = std::fs::read_to_string(entry.path().join("owner"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        // A folder without its owner file yet may belong to a run being set up right now.
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(300))
            .unwrap_or(true);
        let dead = match owner {
            Some(pid) => !runtime::process_is_idagent(pid),
            None => !young,
        };
        if dead {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

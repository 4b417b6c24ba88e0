//! `idagent run --topology pod`: the Kubernetes pod topology built with the Docker engine, to
//! prove the pod's data plane on one machine. Docker plays the kubelet; every container is the
//! one `idagent k8s manifest` describes:
//!
//! | container | joins | uid | capabilities | lives |
//! |---|---|---|---|---|
//! | holder (`idagent pause`) | `--pod-network` | 65534 | none | the whole run (owns the namespaces) |
//! | net-init | holder's netns | 0 | `NET_ADMIN` only, `/dev/net/tun` | one-shot, before the others |
//! | proxy | holder's netns | 7700 | none, `/dev/net/tun` | until the agent is gone |
//! | agent | holder's netns, own pid ns | `--user` | none | the command |
//!
//! The host process only creates and removes containers and folders: it holds no TUN, reads
//! no packet and writes no audit record (the proxy does, into the bound run folder).

use crate::audit::RunId;
use crate::config::{user_ids, RunConfig};
use crate::runtime::{self, Bind, ContainerRuntime, ContainerSpec};
use crate::sandbox::{Ending, RunOutcome, HOST_CTL_ROOT};
use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The infrastructure containers' image (it has `ip` and `iptables`; idagent itself is
/// bind-mounted, as in `run`).
pub const POD_IMAGE: &str = crate::config::GUEST_IMAGE;
/// How long the proxy may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long the proxy may take to finish the log after the agent is gone.
const PROXY_FINISH_WITHIN: Duration = Duration::from_secs(120);

/// `idagent pause`: the holder's process (Kubernetes' pause container): keeps the pod's
/// namespaces alive, reaps, exits on SIGTERM/SIGINT.
pub fn pause() -> ! {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
    }
    let _ = set.thread_block();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
                    .is_ok_and(|s| s.pid().is_some())
                {}
            }
            Ok(_) => std::process::exit(0),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Containers of one pod run, removed on every path.
#[derive(Default)]
struct Pod {
    containers: Vec<String>,
}

/// Runs `cfg` in the pod topology on Docker, to completion.
pub async fn run(
    rt: &crate::runtime::docker::DockerRuntime,
    cfg: &RunConfig,
) -> anyhow::Result<RunOutcome> {
    if cfg.workspace_seed.is_some() {
        bail!("--workspace is not supported with --topology pod yet (the agent's workspace volume starts empty)");
    }
    if cfg.pcap.is_some() {
        bail!(
            "--pcap is not supported with --topology pod (the capture is RUN_DIR/traffic.pcapng)"
        );
    }
    let (uid, _) = user_ids(&cfg.user);
    if uid == super::PROXY_UID {
        bail!(
            "--user {}: that is the proxy's uid, whose traffic leaves by the pod's real \
             interface; run the agent as another uid",
            cfg.user
        );
    }
    let run_id = RunId::generate();
    let run_dir = cfg
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("captures").join(run_id.as_str()));
    let host = PathBuf::from(HOST_CTL_ROOT).join(run_id.as_str());
    // The proxy dials from the pod's namespace, which does not have the host's loopback: map
    // targets there are served on a network of the run's own, relayed to the host's loopback.
    std::fs::create_dir_all(&host).with_context(|| format!("create {}", host.display()))?;
    let bridged = host.join("upstream-map.bridged");
    let (cfg, bridge) = match LoopbackBridge::for_run(rt, cfg, &run_id, &bridged).await {
        Ok(Some((cfg, bridge))) => (std::borrow::Cow::Owned(cfg), Some(bridge)),
        Ok(None) => (std::borrow::Cow::Borrowed(cfg), None),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&host);
            return Err(e);
        }
    };
    let cfg = cfg.as_ref();
    let dirs = match PodDirs::create(&host, &run_dir, &run_id, cfg) {
        Ok(d) => d,
        Err(e) => {
            if let Some(b) = bridge {
                b.remove(rt).await;
            }
            let _ = std::fs::remove_dir_all(&host);
            return Err(e);
        }
    };
    let mut pod = Pod::default();
    let result = drive(rt, cfg, &run_id, &dirs, &mut pod).await;
    for id in pod.containers.iter().rev() {
        let _ = rt.kill(id).await;
        if let Err(e) = rt.remove(id).await {
            warn!(container = %id, error = %e, "remove pod container");
        }
    }
    let _ = std::fs::remove_dir_all(&host);
    if let Some(b) = bridge {
        b.remove(rt).await;
    }
    let ending = result?;
    Ok(RunOutcome {
        run_id,
        run_dir,
        ending,
    })
}

/// Map targets on the host's loopback, made reachable from a pod: a [`ServiceNet`] of the
/// run's own is the pod network, and for each such target a relay listens at the service
/// container's address (in its namespace) and connects to the target on the host's loopback.
/// The pod's agent cannot reach the relays (they are on the pod's real interface); the proxy
/// reaches them as it would a cluster service. Every target is the operator's own mapping.
struct LoopbackBridge {
    net: ServiceNet,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

impl LoopbackBridge {
    /// With loopback targets in `cfg`'s map: the bridge, and `cfg` with its map rewritten into
    /// `map_file` (one entry a line).
    async fn for_run(
        rt: &crate::runtime::docker::DockerRuntime,
        cfg: &RunConfig,
        run_id: &RunId,
        map_file: &Path,
    ) -> anyhow::Result<Option<(RunConfig, LoopbackBridge)>> {
        if cfg.net.upstream_map.is_empty() && cfg.net.upstream_map_file.is_none() {
            return Ok(None);
        }
        let map =
            crate::k8s::upstream_map(&cfg.net.upstream_map, cfg.net.upstream_map_file.as_deref())
                .map_err(|e| anyhow!("{e}"))?;
        let loopback: std::collections::BTreeSet<std::net::SocketAddr> = map
            .map_targets
            .iter()
            .copied()
            .filter(|t| t.ip().is_loopback())
            .collect();
        if loopback.is_empty() {
            return Ok(None);
        }
        if cfg.pod_network != "bridge" {
            bail!(
                "--upstream-map target {} is a loopback address, which a pod on --pod-network {} \
                 does not share with the host; serve it on that network instead",
                loopback.first().map(|t| t.to_string()).unwrap_or_default(),
                cfg.pod_network
            );
        }
        let net = ServiceNet::create(rt, run_id).await?;
        let mut bridge = LoopbackBridge {
            relays: Vec::new(),
            net,
        };
        let mut moved = BTreeMap::new();
        for target in loopback {
            match relay_into(&bridge.net.netns(), bridge.net.ip, target) {
                Ok((at, task)) => {
                    moved.insert(target, at);
                    bridge.relays.push(task);
                }
                Err(e) => {
                    bridge.remove(rt).await;
                    return Err(e.context(format!("relay to {target}")));
                }
            }
        }
        // The same entries, their loopback targets replaced by the relays' addresses.
        let mut text = String::from("# idagent: the run's map, loopback targets relayed\n");
        for line in map.upstream_map.lines().map(str::trim) {
            match line.rsplit_once('=') {
                Some((key, target)) if !line.starts_with('#') => {
                    let target = target
                        .parse::<std::net::SocketAddr>()
                        .ok()
                        .and_then(|t| moved.get(&t))
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| target.to_owned());
                    text.push_str(&format!("{key}={target}\n"));
                }
                _ => {}
            }
        }
        if let Err(e) = std::fs::write(map_file, text) {
            bridge.remove(rt).await;
            return Err(anyhow!("write {}: {e}", map_file.display()));
        }
        let mut cfg = cfg.clone();
        cfg.net.upstream_map = Vec::new();
        cfg.net.upstream_map_file = Some(map_file.to_owned());
        cfg.pod_network = bridge.net.network.clone();
        info!(relayed = moved.len(), network = %cfg.pod_network, "loopback upstreams relayed into the pod network");
        Ok(Some((cfg, bridge)))
    }

    async fn remove(self, rt: &crate::runtime::docker::DockerRuntime) {
        for r in &self.relays {
            r.abort();
        }
        self.net.remove(rt).await;
    }
}

/// A TCP relay listening at `ip:0` inside the namespace `netns` (a listening socket stays in
/// the namespace it was made in), connecting each accepted stream to `target` from this
/// process's namespace.
fn relay_into(
    netns: &Path,
    ip: std::net::IpAddr,
    target: std::net::SocketAddr,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let ns = std::fs::File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    let listener = std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        std::net::TcpListener::bind((ip, 0))
    })
    .join()
    .map_err(|_| anyhow!("relay bind thread panicked"))??;
    listener.set_nonblocking(true)?;
    let at = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    Ok((at, task))
}

/// Host folders bound into the pod's containers.
struct PodDirs {
    /// The control volume: proxy rw, agent ro.
    ctl: PathBuf,
    /// The proxy's configuration (policy, upstream map, CA) and its run id.
    config: PathBuf,
    podinfo: PathBuf,
    run_dir: PathBuf,
    resolv_conf: PathBuf,
}

impl PodDirs {
    fn create(
        host: &Path,
        run_dir: &Path,
        run_id: &RunId,
        cfg: &RunConfig,
    ) -> anyhow::Result<Self> {
        let mk = |p: &Path, mode: u32, owner: Option<u32>| -> anyhow::Result<()> {
            std::fs::create_dir_all(p).with_context(|| format!("create {}", p.display()))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", p.display()))?;
            if let Some(uid) = owner {
                std::os::unix::fs::chown(p, Some(uid), Some(super::PROXY_GID))
                    .with_context(|| format!("chown {}", p.display()))?;
            }
            Ok(())
        };
        let dirs = PodDirs {
            ctl: host.join("ctl"),
            config: host.join("config"),
            podinfo: host.join("podinfo"),
            run_dir: run_dir.to_owned(),
            resolv_conf: host.join("resolv.conf"),
        };
        mk(host, 0o755, None)?;
        std::fs::write(host.join("owner"), std::process::id().to_string())?;
        mk(&dirs.ctl, 0o755, Some(super::PROXY_UID))?;
        mk(&dirs.config, 0o755, None)?;
        mk(&dirs.podinfo, 0o755, None)?;
        if run_dir.join("audit.jsonl").symlink_metadata().is_ok() {
            bail!("{} already holds a run", run_dir.display());
        }
        mk(run_dir, 0o700, Some(super::PROXY_UID))?;
        std::fs::write(dirs.podinfo.join("run-id"), run_id.as_str())?;
        std::fs::write(
            &dirs.resolv_conf,
            format!(
                "# idagent: every DNS query goes to the proxy, whatever resolver is named\nnameserver {}\noptions edns0\n",
                crate::netns::GATEWAY_V4
            ),
        )?;
        std::fs::set_permissions(&dirs.resolv_conf, std::fs::Permissions::from_mode(0o644))?;
        let copy = |src: &Path, name: &str| -> anyhow::Result<()> {
            std::fs::copy(src, dirs.config.join(name))
                .with_context(|| format!("copy {}", src.display()))?;
            std::fs::set_permissions(
                dirs.config.join(name),
                std::fs::Permissions::from_mode(0o644),
            )?;
            Ok(())
        };
        // One map file, as the manifest's ConfigMap has it: the `--upstream-map` values, then
        // the file's lines.
        if !cfg.net.upstream_map.is_empty() || cfg.net.upstream_map_file.is_some() {
            let map = crate::k8s::upstream_map(
                &cfg.net.upstream_map,
                cfg.net.upstream_map_file.as_deref(),
            )
            .map_err(|e| anyhow!("{e}"))?;
            let path = dirs.config.join("upstream-map.txt");
            std::fs::write(&path, map.upstream_map)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
        if let Some(f) = &cfg.net.upstream_ca {
            copy(f, "upstream-ca.pem")?;
        }
        if let Some(p) = &cfg.policy {
            let path = dirs.config.join("policy.yaml");
            std::fs::write(&path, p.to_yaml())?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(dirs)
    }
}

fn labels(run_id: &RunId, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (runtime::LABEL.to_owned(), "1".to_owned()),
        (runtime::LABEL_RUN.to_owned(), run_id.to_string()),
        (
            runtime::LABEL_OWNER_PID.to_owned(),
            std::process::id().to_string(),
        ),
        (runtime::LABEL_POD_ROLE.to_owned(), role.to_owned()),
    ])
}

fn base_spec(run_id: &RunId, role: &str, image: &str) -> anyhow::Result<ContainerSpec> {
    let exe = std::env::current_exe().context("locate idagent's own binary")?;
    Ok(ContainerSpec {
        name: format!("idagent-{run_id}-{role}"),
        image: image.to_owned(),
        entrypoint: vec![super::AGENT_BIN.to_owned()],
        cmd: Vec::new(),
        env: BTreeMap::new(),
        user: "65534:65534".into(),
        workdir: "/".into(),
        binds: vec![Bind {
            host: exe,
            guest: super::AGENT_BIN.into(),
            read_only: true,
        }],
        memory_bytes: 256 << 20,
        pids: 256,
        nano_cpus: 0,
        tmpfs: BTreeMap::new(),
        labels: labels(run_id, role),
        hostname: String::new(),
        network: String::new(),
        cap_add: Vec::new(),
        devices: Vec::new(),
        sysctls: BTreeMap::new(),
    })
}

async fn drive<R: ContainerRuntime>(
    rt: &R,
    cfg: &RunConfig,
    run_id: &RunId,
    dirs: &PodDirs,
    pod: &mut Pod,
) -> anyhow::Result<Ending> {
    // 1. The holder: the pod's namespaces, on the pod network.
    let mut holder = base_spec(run_id, "holder", POD_IMAGE)?;
    holder.cmd = vec!["pause".into()];
    holder.network = cfg.pod_network.clone();
    holder.hostname = "idagent-pod".into();
    holder.sysctls = BTreeMap::from([
        ("net.ipv6.conf.all.disable_ipv6".to_owned(), "0".to_owned()),
        (
            "net.ipv6.conf.default.disable_ipv6".to_owned(),
            "0".to_owned(),
        ),
    ]);
    let holder_id = rt.create(&holder).await?;
    pod.containers.push(holder_id.clone());
    rt.start(&holder_id).await?;
    let joined = format!("container:{holder_id}");

    // 2. net-init: NET_ADMIN only, one-shot.
    let mut init = base_spec(run_id, "net-init", POD_IMAGE)?;
    init.cmd = super::net_init_args();
    init.network = joined.clone();
    init.user = "0:0".into();
    init.cap_add = vec!["NET_ADMIN".into()];
    init.devices = vec!["/dev/net/tun".into()];
    let init_id = rt.create(&init).await?;
    pod.containers.push(init_id.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    rt.attach(&init_id, tx).await?;
    rt.start(&init_id).await?;
    let code = rt.wait(&init_id).await?;
    let mut said = String::new();
    while let Ok(chunk) = rx.try_recv() {
        let (runtime::Output::Stdout(d) | runtime::Output::Stderr(d)) = chunk;
        said.push_str(&String::from_utf8_lossy(&d));
    }
    // One-shot: the container holding NET_ADMIN is gone before anything else starts.
    if rt.remove(&init_id).await.is_ok() {
        pod.containers.retain(|c| *c != init_id);
    }
    if code != 0 {
        bail!("net-init failed (exit {code}): {}", said.trim());
    }
    info!(output = %said.trim(), "net-init done");

    // 3. The proxy: no capability, its own uid.
    let mut proxy = base_spec(run_id, "proxy", POD_IMAGE)?;
    // The policy is written with its mode resolved (`--mode` applied): no mode file.
    let args = super::proxy_args(
        cfg,
        super::ProxyFiles {
            policy: cfg.policy.is_some(),
            mode: false,
            upstream_map: dirs.config.join("upstream-map.txt").is_file(),
            upstream_ca: cfg.net.upstream_ca.is_some(),
        },
    );
    proxy.cmd = args;
    proxy.network = joined.clone();
    proxy.user = format!("{}:{}", super::PROXY_UID, super::PROXY_GID);
    proxy.devices = vec!["/dev/net/tun".into()];
    proxy.memory_bytes = 1 << 30;
    proxy.pids = 512;
    proxy.env = BTreeMap::from([(
        "IDAGENT_LOG".to_owned(),
        std::env::var("IDAGENT_LOG").unwrap_or_else(|_| "warn".into()),
    )]);
    let bind = |host: &Path, guest: &str, ro| Bind {
        host: host.to_owned(),
        guest: guest.to_owned(),
        read_only: ro,
    };
    proxy.binds.extend([
        bind(&dirs.ctl, super::PROXY_CTL_DIR, false),
        bind(&dirs.config, super::PROXY_CONFIG_DIR, true),
        bind(&dirs.podinfo, "/idagent/podinfo", true),
        bind(
            &std::path::absolute(&dirs.run_dir)?,
            &format!("{}/{run_id}", super::PROXY_RUNS_DIR),
            false,
        ),
    ]);
    let proxy_id = rt.create(&proxy).await?;
    pod.containers.push(proxy_id.clone());
    let (ptx, prx) = tokio::sync::mpsc::channel(256);
    rt.attach(&proxy_id, ptx).await?;
    let proxy_out = tokio::spawn(relay_proxy_output(prx));
    rt.start(&proxy_id).await?;
    let ready = dirs.ctl.join(super::READY_FILE);
    let deadline = Instant::now() + READY_WITHIN;
    while !ready.is_file() {
        if Instant::now() > deadline {
            bail!("the proxy did not get ready within {READY_WITHIN:?}");
        }
        if let Ok(code) = tokio::time::timeout(Duration::from_millis(50), rt.wait(&proxy_id)).await
        {
            bail!(
                "the proxy exited ({}) before it was ready",
                code.map(|c| c.to_string())
                    .unwrap_or_else(|e| e.to_string())
            );
        }
    }

    // 4. The agent: no capability, its own pid namespace, guest-init --pod as PID 1.
    let (uid, gid) = user_ids(&cfg.user);
    let mut agent = base_spec(run_id, "agent", &cfg.image)?;
    agent.entrypoint = super::agent_entrypoint();
    agent.cmd = cfg.command.clone();
    agent.env = super::agent_env(&cfg.env);
    agent.user = cfg.user.clone();
    agent.workdir = crate::GUEST_WORKSPACE.into();
    agent.network = joined;
    agent.memory_bytes = cfg.memory_bytes;
    agent.pids = cfg.pids;
    agent.nano_cpus = (cfg.cpus * 1e9) as i64;
    agent.tmpfs = BTreeMap::from([(
        crate::GUEST_WORKSPACE.to_owned(),
        crate::sandbox::workspace::tmpfs_options(cfg.workspace_bytes, uid, gid),
    )]);
    agent
        .binds
        .push(bind(&dirs.ctl, super::AGENT_CTL_DIR, true));
    // Docker gives a container on a user-defined network its embedded resolver (127.0.0.11,
    // on loopback); the agent's resolver is idagent's, as in a cluster (where it is the
    // cluster DNS, reached through the TUN).
    agent
        .binds
        .push(bind(&dirs.resolv_conf, "/etc/resolv.conf", true));
    let bundle = dirs.ctl.join(super::CA_BUNDLE);
    if bundle.is_file() {
        agent
            .binds
            .push(bind(&bundle, crate::net::GUEST_CA_BUNDLE, true));
    }
    let agent_id = rt.create(&agent).await?;
    pod.containers.push(agent_id.clone());
    let (atx, arx) = tokio::sync::mpsc::channel(256);
    rt.attach(&agent_id, atx).await?;
    let agent_out = tokio::spawn(crate::sandbox::files::forward_output(
        arx,
        dirs.run_dir.clone(),
        None,
        cfg.max_output_bytes,
    ));
    rt.start(&agent_id).await?;
    info!(run.id = %run_id, "pod agent started");
    let timeout = async {
        match cfg.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("signals")?;
    let ending = tokio::select! {
        code = rt.wait(&agent_id) => Ending::Exited(code?),
        _ = timeout => Ending::Timeout,
        _ = tokio::signal::ctrl_c() => Ending::Interrupted,
        _ = sigterm.recv() => Ending::Interrupted,
    };
    if !matches!(ending, Ending::Exited(_)) {
        // Said to the proxy before the agent goes, so run_end names why (it sees only the
        // agent's init hanging up).
        let why = if ending == Ending::Timeout {
            "timeout"
        } else {
            "interrupted"
        };
        let _ = std::fs::write(dirs.ctl.join(super::STOP_FILE), why);
        rt.kill(&agent_id).await?;
        let _ = rt.wait(&agent_id).await;
    }
    // The agent's init is gone: the proxy drains, writes run_end and report.html, and exits.
    match tokio::time::timeout(PROXY_FINISH_WITHIN, rt.wait(&proxy_id)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(code)) => warn!(code, "the proxy exited with an error"),
        Ok(Err(e)) => warn!(error = %e, "waiting for the proxy"),
        Err(_) => {
            warn!("the proxy did not finish in time: stopping it");
            rt.kill(&proxy_id).await?;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), agent_out).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), proxy_out).await;
    if !dirs.run_dir.join("audit.jsonl").is_file() {
        return Err(anyhow!("the proxy wrote no audit log"));
    }
    Ok(ending)
}

/// The proxy's own diagnostics (never the guest's bytes) go to our stderr, a line at a time.
/// Chunks are joined first: the engine hands over each write, and one `eprintln!` of the
/// proxy's is several writes (stderr is unbuffered), so a line can arrive in pieces.
async fn relay_proxy_output(mut rx: tokio::sync::mpsc::Receiver<runtime::Output>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let emit = |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        if !line.trim().is_empty() {
            eprintln!("idagent: proxy: {}", line.trim_end());
        }
    };
    while let Some(chunk) = rx.recv().await {
        let (buf, d) = match chunk {
            runtime::Output::Stdout(d) => (&mut out, d),
            runtime::Output::Stderr(d) => (&mut err, d),
        };
        buf.extend_from_slice(&d);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            emit(&buf[..end]);
            buf.drain(..=end);
        }
        // A proxy that never ends a line must not grow this without bound.
        if buf.len() > 64 << 10 {
            emit(buf);
            buf.clear();
        }
    }
    emit(&out);
    emit(&err);
}

/// A cluster network for hermetic pod runs, made with the engine: an internal Docker network
/// (no route out of the host) with one "service" container on it, whose network namespace the
/// caller's fake upstreams listen in. The pods' holders join the network, so the proxy reaches
/// the fakes the way it reaches a cluster service: by the pod's real interface.
#[derive(Debug)]
pub struct ServiceNet {
    pub network: String,
    pub service: String,
    /// The service container's address on the network.
    pub ip: std::net::IpAddr,
    pid: i32,
}

impl ServiceNet {
    pub async fn create(
        rt: &crate::runtime::docker::DockerRuntime,
        run_id: &RunId,
    ) -> anyhow::Result<Self> {
        let network = format!("idagent-net-{run_id}");
        let labels: std::collections::HashMap<String, String> =
            labels(run_id, "network").into_iter().collect();
        rt.client()
            .create_network(bollard::models::NetworkCreateRequest {
                name: network.clone(),
                internal: Some(true),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .with_context(|| format!("create network {network}"))?;
        let made = async {
            let mut spec = base_spec(run_id, "upstreams", POD_IMAGE)?;
            spec.cmd = vec!["pause".into()];
            spec.network = network.clone();
            let id = rt.create(&spec).await?;
            rt.start(&id).await?;
            let pid = rt.init_pid(&id).await?;
            let info = rt.client().inspect_container(&id, None).await?;
            let ip = info
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|mut n| n.remove(&network))
                .and_then(|e| e.ip_address)
                .and_then(|ip| ip.parse().ok())
                .ok_or_else(|| anyhow!("the service container has no address on {network}"))?;
            Ok::<_, anyhow::Error>((id, pid, ip))
        }
        .await;
        match made {
            Ok((service, pid, ip)) => Ok(ServiceNet {
                network,
                service,
                ip,
                pid,
            }),
            Err(e) => {
                let _ = rt.client().remove_network(&network).await;
                Err(e)
            }
        }
    }

    /// The service container's network namespace, for `setns(2)`.
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    pub async fn remove(self, rt: &crate::runtime::docker::DockerRuntime) {
        let _ = rt.kill(&self.service).await;
        let _ = rt.remove(&self.service).await;
        if let Err(e) = rt.client().remove_network(&self.network).await {
            warn!(network = %self.network, error = %e, "remove network");
        }
    }
}

/// Removes pod networks (label `idagent`) whose idagent process is gone — after their
/// containers, which `runtime::gc` removes first. Returns the names removed.
pub async fn gc_networks(rt: &crate::runtime::docker::DockerRuntime) -> Vec<String> {
    let filters: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::from([("label".to_owned(), vec![runtime::LABEL.to_owned()])]);
    let opts = bollard::query_parameters::ListNetworksOptionsBuilder::default()
        .filters(&filters)
        .build();
    let Ok(list) = rt.client().list_networks(Some(opts)).await else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for net in list {
        let labels = net.labels.unwrap_or_default();
        let alive = labels
            .get(runtime::LABEL_OWNER_PID)
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(runtime::process_is_idagent);
        if let (false, Some(name)) = (alive, net.name) {
            if rt.client().remove_network(&name).await.is_ok() {
                removed.push(name);
            }
        }
    }
    removed
}

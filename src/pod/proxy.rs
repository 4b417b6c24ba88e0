//! `idagent proxy`: the pod's sidecar. No capability, non-root (the uid net-init exempted),
//! read-only root. The same parts as `idagent run` — `net::build` (policy, DNS, run CA,
//! gateway, pcap), `netdrv::spawn` on the TUN, one `Enforcer`, one audit log — assembled
//! without a container runtime: the TUN is net-init's persistent device, the guest's init
//! connects over the shared control volume, and the agent's observers send their records
//! over the event socket.
//!
//! Order: TUN (a pod without net-init's device is a setup failure: one line, exit 2, no run
//! folder) → run folder and audit log (`run_start`) → interceptor → CA files, policy and
//! Landlock plan into the control volume → control and event sockets → `ready` → the agent's
//! hello (its uid checked) and event connection → sockets unlinked → `GO` → until the agent's
//! init hangs up (or SIGTERM, or the log failing: then the network is cut) → drain → `run_end`
//! → `report.html`.

use crate::audit::{
    AuditLog, AuditSink, EventBody, Limits, Notice, Observation, RunEnd, RunId, RunStart,
};
use crate::cli::ProxyArgs;
use crate::{enforce, net, netdrv, netns, GUEST_WORKSPACE};
use anyhow::{anyhow, bail, Context};
use idagent_guest::ctl::CtlServer;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long the proxy waits for the agent container to start and connect (an image pull on a
/// cluster node can take minutes).
pub const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(600);
/// After the hello, the agent's event connection follows at once.
const EVENTS_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Once the agent's init has hung up, how long its last records may take to arrive.
const DRAIN_WITHIN: Duration = Duration::from_secs(45);

/// `idagent proxy`.
pub async fn command(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    if args.check_ready {
        let ready = args.ctl.join(super::READY_FILE).is_file();
        return Ok(if ready {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        bail!(
            "idagent proxy must run as the uid net-init exempted (default {}), not root: root's \
             own dials would be routed into its own TUN",
            super::PROXY_UID
        );
    }
    let run_id = match &args.run_id_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read run id {}", path.display()))?;
            RunId::parse(text.trim()).ok_or_else(|| {
                anyhow!(
                    "run id in {}: want 1-128 of [A-Za-z0-9._-], got {:?}",
                    path.display(),
                    text.trim()
                )
            })?
        }
        None => RunId::generate(),
    };
    let mut policy_args = args.policy.clone();
    if let Some(path) = &args.mode_file {
        let mode = std::fs::read_to_string(path)
            .with_context(|| format!("read mode {}", path.display()))?;
        policy_args.mode = Some(match mode.trim() {
            "report" => crate::cli::ModeArg::Report,
            "enforce" => crate::cli::ModeArg::Enforce,
            other => bail!(
                "mode in {}: want report or enforce, got {other:?}",
                path.display()
            ),
        });
    }
    let policy = enforce::load_run_policy(&policy_args)?;
    // A sidecar restarted after its run was written (Kubernetes restarts a native sidecar
    // that exits while the pod is still completing): the run is over, nothing to record.
    if args.ctl.join(super::DONE_FILE).is_file() {
        eprintln!("idagent proxy: this pod's run is finished; waiting to be stopped");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("signals")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return Ok(ExitCode::SUCCESS);
    }
    let max_audit_bytes = crate::config::parse_size(&args.max_audit_bytes)
        .map_err(|e| anyhow!("--max-audit-bytes: {e}"))?
        .max(0) as u64;
    // Before the run folder: without net-init's TUN there is no run to record, and a proxy
    // restarted in a loop must not leave a folder per attempt.
    let device = super::netinit::attach_tun().map_err(|e| anyhow!(e))?;
    let run_dir = fresh_run_dir(&args.out, &run_id)?;
    let started = Instant::now();
    let ctl = &args.ctl;
    // What the kernel will enforce in the agent: the workspace starts empty in a pod.
    let empty = ctl.join("empty-workspace");
    std::fs::create_dir_all(&empty).with_context(|| format!("create {}", empty.display()))?;
    let (policy, reconciled) = match &policy {
        Some(p) => {
            let (p, notes) = enforce::reconcile_files(p, &empty);
            (Some(p), notes)
        }
        None => (None, Vec::new()),
    };
    let landlock = enforce::landlock_plan(policy.as_ref())?;
    let observation = Observation {
        seccomp: true,
        fswatch: true,
        proc_connector: false,
        exits: "init+seccomp".into(),
        landlock: landlock.is_some(),
        missing: vec![
            "proc connector (a pod is not the initial network namespace): exits come from the \
             agent's init and each process's exit_group"
                .into(),
            "workspace export: the agent's files stay in its volume; the log has every change \
             with its sha256"
                .into(),
        ],
    };
    let audit = AuditLog::create_with(
        &run_dir.join("audit.jsonl"),
        run_id.clone(),
        crate::audit::DEFAULT_AUDIT_QUEUE,
        crate::audit::AuditLimits {
            max_bytes: max_audit_bytes,
            ..Default::default()
        },
    )?;
    let sink = audit.sink();
    sink.emit_reliable(EventBody::RunStart(RunStart {
        idagent_version: env!("CARGO_PKG_VERSION").into(),
        image: args.agent_image.clone(),
        command: {
            let known = crate::redact::KnownSecrets::new(None);
            known.redact_argv(&args.agent_command)
        },
        user: args.agent_user.clone(),
        workspace: GUEST_WORKSPACE.into(),
        // The agent's memory, pids and CPU limits are the pod spec's (0: not this process's
        // to know).
        limits: Limits {
            memory_bytes: 0,
            pids: 0,
            timeout_secs: None,
            cpus: None,
            workspace_bytes: None,
            audit_bytes: Some(max_audit_bytes),
        },
        offline: args.net.offline,
        container: format!("pod:{run_id}"),
        observation: Some(observation.clone()),
    }))
    .await;
    for detail in reconciled {
        sink.emit(EventBody::Notice(Notice {
            what: enforce::RECONCILED_NOTICE.into(),
            detail,
        }));
    }
    let degraded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let result = serve(
        &args,
        device,
        &run_id,
        &run_dir,
        policy,
        landlock,
        &audit,
        &sink,
        degraded.clone(),
    )
    .await;
    // What the agent's init said did not run (gVisor: no seccomp user notification).
    let mut observation = observation;
    for missing in degraded.lock().map(|d| d.clone()).unwrap_or_default() {
        observation.seccomp = false;
        observation.missing.push(missing);
    }
    let (end, ending) = match result {
        Ok(done) => done,
        Err(e) => {
            sink.emit(EventBody::Notice(Notice {
                what: "run_error".into(),
                detail: format!("{e:#}"),
            }));
            (RunEnd::default(), Err(e))
        }
    };
    let (exit_code, reason) = match &ending {
        Ok(Ending::Exited(code)) => (*code, "exited"),
        Ok(Ending::AgentLost) => (None, "agent_lost"),
        Ok(Ending::Interrupted) => (None, "interrupted"),
        Ok(Ending::Timeout) => (None, "timeout"),
        Ok(Ending::AuditFailed(r)) => (None, *r),
        Err(_) => (None, "error"),
    };
    audit
        .finish(RunEnd {
            exit_code,
            reason: reason.into(),
            duration_ms: started.elapsed().as_millis() as u64,
            observation: Some(observation),
            ..end
        })
        .await?;
    if let Err(e) = crate::report::write_html(&run_dir) {
        warn!(error = %e, "report.html not written");
    }
    eprintln!(
        "idagent proxy: run {run_id}: {reason}; log in {}",
        run_dir.display()
    );
    if ending.is_ok() {
        let _ = std::fs::write(args.ctl.join(super::DONE_FILE), run_id.as_str());
    }
    ending.map(|_| ExitCode::SUCCESS)
}

enum Ending {
    Exited(Option<i64>),
    AgentLost,
    Interrupted,
    Timeout,
    AuditFailed(&'static str),
}

/// What the orchestrator said before it stopped the agent ([`super::STOP_FILE`]), if anything.
fn stopped_because(ctl: &Path) -> Option<Ending> {
    let text = std::fs::read_to_string(ctl.join(super::STOP_FILE)).ok()?;
    match text.trim() {
        "timeout" => Some(Ending::Timeout),
        "interrupted" => Some(Ending::Interrupted),
        _ => None,
    }
}

/// `OUT/<run-id>`, created 0700; a folder already holding a log (the sidecar restarted) gets a
/// sibling `OUT/<run-id>.N` rather than a second log in one file.
fn fresh_run_dir(out: &Path, run_id: &RunId) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    for n in 0..100u32 {
        let dir = match n {
            0 => out.join(run_id.as_str()),
            n => out.join(format!("{run_id}.{n}")),
        };
        if dir.join("audit.jsonl").symlink_metadata().is_ok() {
            continue;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", dir.display()))?;
        return Ok(dir);
    }
    bail!("{}: 100 run folders of this run id already", out.display())
}

/// Files the agent reads from the control volume: world-readable (it runs as another uid).
fn publish(path: &Path) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Writes `text` at `path` for the agent to read, or removes what an earlier run left there.
fn place(path: &Path, text: Option<String>) -> anyhow::Result<()> {
    match text {
        Some(text) => {
            std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
            publish(path)
        }
        None => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    args: &ProxyArgs,
    device: tun::Device,
    run_id: &RunId,
    run_dir: &Path,
    policy: Option<idagent_policy::Policy>,
    landlock: Option<idagent_guest::landlock::Plan>,
    audit: &AuditLog,
    sink: &AuditSink,
    degraded: Arc<std::sync::Mutex<Vec<String>>>,
) -> anyhow::Result<(RunEnd, anyhow::Result<Ending>)> {
    let ctl = &args.ctl;
    for stale in [
        super::READY_FILE,
        super::CTL_SOCK,
        super::EVENTS_SOCK,
        super::STOP_FILE,
    ] {
        let _ = std::fs::remove_file(ctl.join(stale));
    }
    let enforcer = Arc::new(match &policy {
        Some(p) => enforce::Enforcer::new(p.clone(), sink.clone()),
        None => enforce::Enforcer::disabled(sink.clone()),
    });
    let pcap_path = run_dir.join("traffic.pcapng");
    let mut icpt = net::build(
        &args.net,
        run_id,
        sink.clone(),
        Some(&pcap_path),
        enforcer.clone(),
    )?;
    enforcer.set_known(icpt.gateway.known.clone());
    if let Some(ca) = &icpt.ca {
        let (bundle, ca_only) = net::write_ca_files(ca, &ctl.join("ca"))?;
        std::fs::set_permissions(ctl.join("ca"), PermissionsExt::from_mode(0o755))
            .context("chmod ca")?;
        publish(&bundle)?;
        publish(&ca_only)?;
    }
    place(
        &ctl.join(super::POLICY_FILE),
        policy.as_ref().map(|p| p.to_yaml()),
    )?;
    place(
        &ctl.join(super::LANDLOCK_PLAN),
        landlock.as_ref().map(|plan| plan.render()),
    )?;
    let mut setup = crate::audit::NetSetup {
        tun: netns::TUN_NAME.into(),
        mtu: u32::from(netns::TUN_MTU),
        guest_addrs: vec![
            format!("{}/{}", netns::GUEST_V4, netns::PREFIX_V4),
            format!("{}/{}", netns::GUEST_V6, netns::PREFIX_V6),
        ],
        gateway_addrs: vec![netns::GATEWAY_V4.to_string(), netns::GATEWAY_V6.to_string()],
        routes: routes_seen(),
        rules_sha256: {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(super::netinit::rules(
                super::netinit::POD_RULES_V4,
                nix::unistd::geteuid().as_raw(),
            ));
            h.update(super::netinit::rules(
                super::netinit::POD_RULES_V6,
                nix::unistd::geteuid().as_raw(),
            ));
            hex::encode(h.finalize())
        },
        ca_sha256: None,
    };
    setup.ca_sha256 = icpt.ca.as_ref().map(|ca| ca.fingerprint_sha256());
    sink.emit(EventBody::NetSetup(setup));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let parts = netdrv::DriverParts {
        gateway: icpt.gateway.clone(),
        dns: icpt.dns.clone(),
        pcap: icpt.pcap.as_ref().map(|p| p.sender()),
        audit: sink.clone(),
    };
    let pcap = icpt.pcap.take();
    let tun_task = netdrv::spawn(device, parts, stop_rx);
    let ctl_srv = CtlServer::bind(&ctl.join(super::CTL_SOCK))?;
    let ev_srv = CtlServer::bind(&ctl.join(super::EVENTS_SOCK))?;
    let ready = ctl.join(super::READY_FILE);
    std::fs::write(&ready, run_id.as_str()).context("write ready")?;
    publish(&ready)?;
    info!(run.id = %run_id, "proxy ready: waiting for the agent");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("signals")?;
    let me = nix::unistd::geteuid().as_raw();
    let accepted = tokio::task::spawn_blocking(move || {
        let conn = ctl_srv.accept_pod(AGENT_CONNECT_TIMEOUT);
        let events = conn
            .as_ref()
            .ok()
            .map(|_| ev_srv.accept_stream(EVENTS_CONNECT_TIMEOUT));
        // Unlinked at once: the app, started after GO, must find no socket to talk to.
        let _ = std::fs::remove_file(ctl_srv.path());
        let _ = std::fs::remove_file(ev_srv.path());
        (conn, events)
    });
    let (conn, events) = tokio::select! {
        r = accepted => r.context("accept task")?,
        _ = sigterm.recv() => {
            let end = stop_network(stop_tx, tun_task, pcap).await;
            return Ok((end, Ok(Ending::Interrupted)));
        }
    };
    let mut conn = conn?;
    let events = events.ok_or_else(|| anyhow!("no event connection"))??;
    if conn.peer_uid == Some(me) {
        conn.reply.abort("the agent runs as the proxy's uid");
        bail!(
            "the agent connected as uid {me}, the proxy's own: its traffic would be exempt from \
             the TUN; run the agent as another uid"
        );
    }
    let reports = conn.reports().context("init reports")?;
    let reports = crate::sandbox::exits::spawn(reports, sink.clone());
    let relayed = spawn_event_reader(events, sink.clone(), degraded);
    conn.reply.go()?;
    info!("agent started");
    let both = tokio::task::spawn_blocking(move || {
        let code = reports.join().ok().flatten();
        let relayed = relayed.join().unwrap_or(0);
        (code, relayed)
    });
    let audit_failed = audit.failed();
    let ending = tokio::select! {
        r = both => match (stopped_because(ctl), r) {
            (Some(why), _) => why,
            (None, Ok((Some(code), _))) => Ending::Exited(Some(code)),
            (None, _) => Ending::AgentLost,
        },
        failure = audit_failed => {
            sink.emit(EventBody::Notice(Notice {
                what: failure.reason().into(),
                detail: format!("{failure}; the agent's network is cut (the proxy cannot stop it)"),
            }));
            Ending::AuditFailed(failure.reason())
        }
        _ = sigterm.recv() => Ending::Interrupted,
        _ = tokio::signal::ctrl_c() => Ending::Interrupted,
    };
    // Keep the connection (and the dead-man switch) until here: dropping it tells init the
    // proxy is gone.
    drop(conn);
    let end = stop_network(stop_tx, tun_task, pcap).await;
    Ok((end, Ok(ending)))
}

async fn stop_network(
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<netdrv::DriverStats>>,
    pcap: Option<crate::pcap::PcapHandle>,
) -> RunEnd {
    let mut end = RunEnd::default();
    let _ = stop.send(true);
    if let Ok(Ok(Ok(stats))) = tokio::time::timeout(DRAIN_WITHIN, task).await {
        end.tun_packets_in = stats.packets_in;
        end.tun_packets_out = stats.packets_out;
        end.tun_packets_dropped = stats.dropped;
    }
    if let Some(pcap) = pcap {
        if let Ok(Ok(stats)) = tokio::time::timeout(
            DRAIN_WITHIN,
            tokio::task::spawn_blocking(move || pcap.finish()),
        )
        .await
        {
            end.pcap_packets = Some(stats.packets_written);
            end.pcap_packets_dropped = Some(stats.packets_dropped);
        }
    }
    end
}

/// The routes this namespace has, as far as an unprivileged process can read them
/// (`/proc/net/route` and `/proc/net/ipv6_route`: the main tables, no policy rules), for
/// `net_setup`. net-init's container log has the whole setup.
fn routes_seen() -> Vec<String> {
    let mut routes = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        routes.extend(text.lines().skip(1).filter_map(parse_route_v4));
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        routes.extend(text.lines().filter_map(parse_route_v6));
    }
    routes
}

fn route_line(dst: String, bits: u32, iface: &str) -> String {
    if bits == 0 {
        format!("default dev {iface}")
    } else {
        format!("{dst}/{bits} dev {iface}")
    }
}

/// One line of `/proc/net/route`: `Iface Destination Gateway Flags … Mask …` (hex, host order).
fn parse_route_v4(line: &str) -> Option<String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (iface, dst, mask) = (f.first()?, f.get(1)?, f.get(7)?);
    let dst = u32::from_str_radix(dst, 16).ok()?;
    let mask = u32::from_str_radix(mask, 16).ok()?;
    let dst = std::net::Ipv4Addr::from(dst.swap_bytes());
    Some(route_line(dst.to_string(), mask.count_ones(), iface))
}

/// One line of `/proc/net/ipv6_route`: `dst plen src plen next-hop metric refs use flags iface`;
/// loopback and multicast routes are left out.
fn parse_route_v6(line: &str) -> Option<String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (dst, plen, iface) = (f.first()?, f.get(1)?, f.get(9)?);
    let dst = u128::from_str_radix(dst, 16).ok()?;
    let bits = u32::from_str_radix(plen, 16).ok()?;
    let dst = std::net::Ipv6Addr::from(dst);
    if *iface == "lo" || dst.is_multicast() {
        return None;
    }
    Some(route_line(dst.to_string(), bits, iface))
}

/// Kinds the agent's observers make; anything else on the event socket (a forged `run_end`, a
/// `dns` record) is refused and counted.
fn relayable(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::Exec(_)
            | EventBody::ExecRan(_)
            | EventBody::Exit(_)
            | EventBody::File(_)
            | EventBody::Decision(_)
            | EventBody::Notice(_)
    )
}

/// Reads the agent's records (one JSON [`EventBody`] a line, bounded) into the run's log until
/// the agent's init closes the socket. Returns how many were written.
fn spawn_event_reader(
    stream: std::os::unix::net::UnixStream,
    sink: AuditSink,
    degraded: Arc<std::sync::Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<u64> {
    std::thread::Builder::new()
        .name("pod-events".into())
        .spawn(move || {
            let mut reader = std::io::BufReader::new(stream);
            let (mut n, mut refused) = (0u64, 0u64);
            let mut line = Vec::new();
            loop {
                line.clear();
                let got = std::io::Read::take(&mut reader, crate::audit::RELAY_LINE_MAX as u64)
                    .read_until(b'\n', &mut line);
                match got {
                    Ok(0) | Err(_) => break,
                    Ok(_) if !line.ends_with(b"\n") => {
                        refused += 1;
                        break;
                    }
                    Ok(_) => match serde_json::from_slice::<EventBody>(&line) {
                        Ok(body) if relayable(&body) => {
                            if let EventBody::Notice(n) = &body {
                                if n.what == super::agent::SECCOMP_MISSING_NOTICE {
                                    if let Ok(mut d) = degraded.lock() {
                                        d.push(n.detail.clone());
                                    }
                                }
                            }
                            sink.emit(body);
                            n += 1;
                        }
                        _ => refused += 1,
                    },
                }
            }
            if refused > 0 {
                sink.emit(EventBody::Notice(Notice {
                    what: "pod_events_refused".into(),
                    detail: format!(
                        "{refused} record(s) from the agent's observers were malformed or of a \
                         kind they do not make, and were not written"
                    ),
                }));
            }
            n
        })
        .unwrap_or_else(|_| std::thread::spawn(|| 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agent_observers_kinds_are_relayed() {
        let line = |json: &str| serde_json::from_str::<EventBody>(json).expect(json);
        assert!(relayable(&line(
            r#"{"kind":"notice","what":"x","detail":"y"}"#
        )));
        assert!(relayable(&line(r#"{"kind":"exit","pid":3,"code":0}"#)));
        // A forged end, network or setup record is the proxy's to write, never the agent's.
        assert!(!relayable(&EventBody::RunEnd(RunEnd::default())));
        assert!(!relayable(&line(
            r#"{"kind":"blocked","what":"dns","target":"x","reason":"offline"}"#
        )));
    }

    #[test]
    fn routes_are_read_from_procfs_lines() {
        assert_eq!(
            parse_route_v4("tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0"),
            Some("default dev tun0".into())
        );
        assert_eq!(
            parse_route_v4("eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0"),
            Some("172.17.0.0/16 dev eth0".into())
        );
        let v6 = "fd000077000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001     tun0";
        assert_eq!(parse_route_v6(v6), Some("fd00:77::/64 dev tun0".into()));
        let lo = "00000000000000000000000000000001 80 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo";
        assert_eq!(parse_route_v6(lo), None);
        assert_eq!(parse_route_v4("garbage"), None);
    }

    #[test]
    fn run_ids_from_files_are_folder_safe() {
        assert!(RunId::parse("3f2a9c1e-7b4d-4e8a-9c2b-1d5e6f7a8b9c").is_some());
        for bad in ["", ".", "..", "../x", "a/b", "a b", "x\n", &"a".repeat(129)] {
            assert!(RunId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_restarted_sidecar_starts_a_second_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = RunId::parse("r1").expect("id");
        let first = fresh_run_dir(dir.path(), &id).expect("first");
        assert_eq!(first, dir.path().join("r1"));
        std::fs::write(first.join("audit.jsonl"), "").expect("write");
        let second = fresh_run_dir(dir.path(), &id).expect("second");
        assert_eq!(second, dir.path().join("r1.1"));
    }
}

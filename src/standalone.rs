//! `idagent gateway --listen ADDR`: the gateway alone on a host, the topology of the original
//! brief. An iptables `REDIRECT` rule sends a client's connections to the listener; the
//! original destination comes from `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6).
//! Connections made straight to the listener (no REDIRECT) are explicit-proxy clients.
//!
//! Owns: the command's run (its audit log, policy and stop conditions), the accept loop and
//! the original-destination lookup. Everything else is the same `Gateway::serve_flow` the
//! sandbox uses, so the audit events are the same.

use crate::gateway::Gateway;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Why `idagent gateway` could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayCmdError {
    #[error("bad --timeout {value:?}: {reason}")]
    Timeout { value: String, reason: String },
    #[error(transparent)]
    Policy(#[from] crate::policy_cmd::PolicyCmdError),
    #[error(transparent)]
    Enforce(#[from] crate::enforce::EnforceSetupError),
    #[error("create {path}: {source}")]
    RunDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Net(#[from] crate::net::NetSetupError),
    #[error("gateway: {0}")]
    Serve(std::io::Error),
}

/// `idagent gateway`: the standalone gateway until Ctrl-C, SIGTERM or `--timeout`, with its
/// own audit log (and policy, when given).
pub async fn run_command(args: crate::cli::GatewayArgs) -> Result<(), GatewayCmdError> {
    use crate::audit::{AuditLog, EventBody, Limits, RunEnd, RunId, RunStart};
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| {
            crate::config::parse_duration(t).map_err(|reason| GatewayCmdError::Timeout {
                value: t.to_owned(),
                reason,
            })
        })
        .transpose()?;
    // Parsed before anything starts: a bad policy file is one line and exit 2.
    let policy = crate::enforce::load_run_policy(&args.policy)?;
    if let Some(p) = &policy {
        crate::enforce::check_inspection(p, args.net.tls)?;
    }
    let run_id = RunId::generate();
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("captures").join(run_id.as_str()));
    std::fs::create_dir_all(&run_dir)
        .and_then(|()| {
            std::fs::set_permissions(
                &run_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
        })
        .map_err(|source| GatewayCmdError::RunDir {
            path: run_dir.clone(),
            source,
        })?;
    let listener =
        TcpListener::bind(args.listen)
            .await
            .map_err(|source| GatewayCmdError::Listen {
                addr: args.listen,
                source,
            })?;
    let audit_path = run_dir.join("audit.jsonl");
    let audit = AuditLog::create(
        &audit_path,
        run_id.clone(),
        crate::audit::DEFAULT_AUDIT_QUEUE,
    )?;
    let started = std::time::Instant::now();
    audit
        .sink()
        .emit_reliable(EventBody::RunStart(RunStart {
            observation: None,
            idagent_version: env!("CARGO_PKG_VERSION").into(),
            image: String::new(),
            command: vec!["gateway".into(), "--listen".into(), args.listen.to_string()],
            user: String::new(),
            workspace: String::new(),
            limits: Limits {
                memory_bytes: 0,
                pids: 0,
                cpus: None,
                workspace_bytes: None,
                audit_bytes: None,
                timeout_secs: timeout.map(|t| t.as_secs()),
            },
            offline: args.net.offline,
            container: String::new(),
        }))
        .await;
    let enforcer = Arc::new(match policy {
        Some(p) => crate::enforce::Enforcer::new(p, audit.sink()),
        None => crate::enforce::Enforcer::disabled(audit.sink()),
    });
    let icpt = crate::net::build(&args.net, &run_id, audit.sink(), None, enforcer)?;
    eprintln!(
        "idagent: gateway on {}; audit log {}",
        args.listen,
        audit_path.display()
    );
    let served = serve(listener, icpt.gateway.clone(), stop_signal(timeout)).await;
    // Give flows in progress a moment to log their close.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    audit
        .finish(RunEnd {
            reason: if served.is_ok() {
                "interrupted".into()
            } else {
                "error".into()
            },
            duration_ms: started.elapsed().as_millis() as u64,
            ..RunEnd::default()
        })
        .await?;
    served.map_err(GatewayCmdError::Serve)
}

/// Resolves at Ctrl-C, SIGTERM, or after `timeout`.
async fn stop_signal(timeout: Option<std::time::Duration>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
        _ = deadline => {}
    }
}

/// Most connections served at once; over it, new ones wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Accepts until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_CONNECTIONS));
    let local = listener.local_addr()?;
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            _ = &mut stop => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut stop => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let dst = original_dst(&stream).unwrap_or(local);
        let mut meta = gw.open_flow(peer, dst);
        // Not redirected: the client dialled us on purpose, as its HTTP(S) proxy.
        meta.proxy = dst == local || (dst.port() == local.port() && local.ip().is_unspecified());
        let gw = gw.clone();
        tokio::spawn(async move {
            gw.serve_flow(stream, meta).await;
            drop(permit);
        });
    }
}

/// The destination the client dialled before netfilter redirected it.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    match stream.local_addr().ok()? {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst).ok().map(|a| {
            SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            ))
        }),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst).ok().map(|a| {
            SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }),
    }
}

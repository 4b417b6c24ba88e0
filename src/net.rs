//! Assembling one run's interceptor from its options: policy, DNS, TLS (per-run CA whose key
//! never leaves this process), the gateway, and the pcapng writer the TLS key log feeds.
//!
//! Owns: turning `NetArgs` into these parts and the guest's CA trust files. Does not own: any
//! packet or flow handling (`netdrv`, `gateway`).

use crate::audit::{AuditSink, RunId};
use crate::cli::NetArgs;
use crate::dns::DnsService;
use crate::gateway::{intercept::TlsContext, Gateway, TlsMode};
use crate::pcap::{PcapHandle, PcapSender};
use crate::tls::{KeyLogSink, RunCa, DEFAULT_MAX_KEYLOG_LINES};
use crate::upstream::{Policy, UpstreamMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the guest's CA bundles are mounted, and the variables that point tools at them.
pub const GUEST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
pub const GUEST_CA_ONLY: &str = "/.idagent/ca/idagent-ca.pem";
/// The host bundle the combined guest bundle starts from.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum NetSetupError {
    #[error("bad --upstream-map {0}")]
    Map(String),
    #[error("read --upstream-ca {path}: {reason}")]
    UpstreamCa { path: PathBuf, reason: String },
    #[error("tls setup: {0}")]
    Tls(String),
    #[error("dns setup: {0}")]
    Dns(String),
    #[error("pcap {path}: {reason}")]
    Pcap { path: PathBuf, reason: String },
    #[error("write ca files in {path}: {source}")]
    CaFiles {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The parts of one run's interceptor.
pub struct Interceptor {
    pub gateway: Arc<Gateway>,
    pub dns: Arc<DnsService>,
    pub pcap: Option<PcapHandle>,
    pub ca: Option<Arc<RunCa>>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor").finish_non_exhaustive()
    }
}

/// The policy of `args` (upstream map from flags and file).
pub fn policy(args: &NetArgs) -> Result<Policy, NetSetupError> {
    let mut map = UpstreamMap::from_entries(args.upstream_map.iter())
        .map_err(|e| NetSetupError::Map(e.to_string()))?;
    if let Some(file) = &args.upstream_map_file {
        map.add_file(file)
            .map_err(|e| NetSetupError::Map(e.to_string()))?;
    }
    Ok(Policy {
        offline: args.offline,
        allow_private: args.allow_private,
        map,
    })
}

/// Builds the interceptor; `pcap_path` None: no capture (standalone gateway).
pub fn build(
    args: &NetArgs,
    run: &RunId,
    audit: AuditSink,
    pcap_path: Option<&Path>,
    enforcer: Arc<crate::enforce::Enforcer>,
) -> Result<Interceptor, NetSetupError> {
    let policy = policy(args)?;
    let dns = Arc::new(
        DnsService::new(policy.clone())
            .map_err(|e| NetSetupError::Dns(e.to_string()))?
            .with_enforcer(enforcer.clone()),
    );
    let pcap = pcap_path
        .map(|p| {
            crate::pcap::spawn(p, args.snaplen).map_err(|e| NetSetupError::Pcap {
                path: p.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let upstream_ca = args
        .upstream_ca
        .as_ref()
        .map(|p| {
            std::fs::read(p).map_err(|e| NetSetupError::UpstreamCa {
                path: p.clone(),
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let (tls, ca) = match args.tls {
        TlsMode::Intercept => {
            let ca = Arc::new(RunCa::generate(run).map_err(|e| NetSetupError::Tls(e.to_string()))?);
            let keylog = Arc::new(key_log(pcap.as_ref().map(PcapHandle::sender)));
            let ctx = TlsContext::new(ca.clone(), keylog.clone(), upstream_ca.as_deref())
                .map_err(|e| NetSetupError::Tls(e.to_string()))?
                .with_http1_only(args.http1_only);
            (Some(ctx), Some(ca))
        }
        TlsMode::Passthrough => (None, None),
    };
    let gateway = Gateway::new(
        audit,
        Arc::new(policy),
        dns.names(),
        args.capture_bytes,
        args.tls,
        tls,
        enforcer,
    );
    gateway.set_http1_only(args.http1_only);
    Ok(Interceptor {
        gateway,
        dns,
        pcap,
        ca,
    })
}

/// The key log feeds the capture's Decryption Secrets Blocks (or nowhere without a capture).
fn key_log(pcap: Option<PcapSender>) -> KeyLogSink {
    match pcap {
        Some(sender) => sender.key_log(DEFAULT_MAX_KEYLOG_LINES),
        None => KeyLogSink::new(DEFAULT_MAX_KEYLOG_LINES, |_| {}),
    }
}

/// Writes the guest's trust files into `dir`: `ca.pem` (the run CA alone, for
/// `NODE_EXTRA_CA_CERTS`) and `ca-bundle.crt` (the host's bundle plus the run CA, mounted over
/// the guest's system bundle and named by `SSL_CERT_FILE` & co.). Returns (bundle, ca) paths.
pub fn write_ca_files(ca: &RunCa, dir: &Path) -> Result<(PathBuf, PathBuf), NetSetupError> {
    let io = |source| NetSetupError::CaFiles {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let pem = ca.cert_pem();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &pem).map_err(io)?;
    let mut bundle = std::fs::read_to_string(HOST_CA_BUNDLE).unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(&pem);
    let bundle_path = dir.join("ca-bundle.crt");
    std::fs::write(&bundle_path, bundle).map_err(io)?;
    Ok((bundle_path, ca_path))
}

/// Environment that makes common runtimes trust the bundle without touching the read-only
/// root: OpenSSL/Python/curl read `SSL_CERT_FILE`, requests `REQUESTS_CA_BUNDLE`, curl
/// `CURL_CA_BUNDLE`, Node adds `NODE_EXTRA_CA_CERTS` to its built-in roots, gRPC's C core
/// (grpcio, grpc-node native) reads `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` instead of any of them.
pub fn ca_env() -> [(&'static str, &'static str); 5] {
    [
        ("SSL_CERT_FILE", GUEST_CA_BUNDLE),
        ("REQUESTS_CA_BUNDLE", GUEST_CA_BUNDLE),
        ("CURL_CA_BUNDLE", GUEST_CA_BUNDLE),
        ("NODE_EXTRA_CA_CERTS", GUEST_CA_ONLY),
        ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", GUEST_CA_BUNDLE),
    ]
}

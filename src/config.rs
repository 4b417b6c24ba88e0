//! Validated run configuration: the second stage after [`crate::cli`]. Every value here is
//! parsed and checked; every failure is a [`ConfigError`] that names the bad value.

use crate::cli::RunArgs;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The image idagent builds from Dockerfile.guest.
pub const GUEST_IMAGE: &str = "idagent-guest:latest";
/// Name of the run manifest inside a victim directory.
pub const MANIFEST_FILE: &str = "idagent.toml";

/// A run manifest (`idagent.toml` in a victim directory).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Image to run; defaults to the guest image.
    #[serde(default)]
    pub image: Option<String>,
    /// Command and arguments (exec form, no shell).
    pub command: Vec<String>,
    /// Environment for the guest; `--env` adds to and overrides it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("bad TARGET {target}: {reason}")]
    Target { target: String, reason: String },
    #[error("read manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("bad --env {0:?}: expected KEY=VALUE")]
    Env(String),
    #[error("bad --{flag} {value:?}: {reason}")]
    Value {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("nothing to run: give a victim directory TARGET, or --image IMAGE -- CMD...")]
    NoCommand,
    #[error("workspace seed {0} is not a directory")]
    Workspace(PathBuf),
    /// `policy.yaml:LINE:COL: what is wrong`, or a file that cannot be read.
    #[error(transparent)]
    Policy(#[from] crate::policy_cmd::PolicyCmdError),
    #[error(transparent)]
    Enforce(#[from] crate::enforce::EnforceSetupError),
}

/// Bytes of each of `stdout.log` and `stderr.log` (and of each stream on the terminal).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 << 20;

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workspace_seed: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub user: String,
    pub memory_bytes: i64,
    pub pids: i64,
    /// CPUs for the guest (Docker NanoCpus / 1e9).
    pub cpus: f64,
    /// Size of the guest's workspace tmpfs.
    pub workspace_bytes: u64,
    /// The audit log's byte cap.
    pub max_audit_bytes: u64,
    pub run_dir: Option<PathBuf>,
    pub net: crate::cli::NetArgs,
    /// Where the pcapng goes (default `RUN_DIR/traffic.pcapng`).
    pub pcap: Option<PathBuf>,
    pub context: Option<PathBuf>,
    /// The policy every decision point asks, its modes resolved with `--mode`.
    pub policy: Option<idagent_policy::Policy>,
    /// The seccomp supervisor writes `exit` events from `exit_group` (`--seccomp-exits`).
    pub seccomp_exits: bool,
    /// Bytes kept of each of the guest's stdout and stderr.
    pub max_output_bytes: u64,
    /// One sealed container, or the pod topology (`--topology pod`).
    pub topology: crate::cli::Topology,
    /// With the pod topology: the Docker network of the pod's real interface.
    pub pod_network: String,
}

impl RunConfig {
    pub fn from_args(args: RunArgs) -> Result<Self, ConfigError> {
        let (image, mut command, mut env) = match (&args.image, &args.target) {
            (Some(image), None) => (image.clone(), Vec::new(), BTreeMap::new()),
            (Some(_), Some(t)) => return Err(ConfigError::Target {
                target: t.clone(),
                reason:
                    "give either a victim directory or --image, not both (put the command after --)"
                        .into(),
            }),
            (None, Some(t)) => {
                let m = load_manifest(Path::new(t))?;
                (
                    m.image.unwrap_or_else(|| GUEST_IMAGE.to_owned()),
                    m.command,
                    m.env,
                )
            }
            (None, None) => return Err(ConfigError::NoCommand),
        };
        command.extend(args.args);
        if command.is_empty() {
            return Err(ConfigError::NoCommand);
        }
        for kv in &args.env {
            let (k, v) = kv
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ConfigError::Env(kv.clone()))?;
            env.insert(k.to_owned(), v.to_owned());
        }
        if let Some(dir) = &args.workspace {
            if !dir.is_dir() {
                return Err(ConfigError::Workspace(dir.clone()));
            }
        }
        let timeout = args
            .timeout
            .as_deref()
            .map(|t| parse_duration(t).map_err(|reason| value_err("timeout", t, reason)))
            .transpose()?;
        let memory_bytes =
            parse_bytes(&args.memory).map_err(|r| value_err("memory", &args.memory, r))?;
        if args.pids < 8 {
            return Err(value_err(
                "pids",
                &args.pids.to_string(),
                "must be at least 8".into(),
            ));
        }
        validate_user(&args.user).map_err(|r| value_err("user", &args.user, r))?;
        let cpus = parse_cpus(&args.cpus).map_err(|r| value_err("cpus", &args.cpus, r))?;
        let workspace_bytes = parse_size(&args.workspace_size)
            .map_err(|r| value_err("workspace-size", &args.workspace_size, r))
            .and_then(|b| {
                if b < MIN_WORKSPACE_BYTES {
                    Err(value_err(
                        "workspace-size",
                        &args.workspace_size,
                        format!("must be at least {MIN_WORKSPACE_BYTES} bytes"),
                    ))
                } else {
                    Ok(b as u64)
                }
            })?;
        let max_audit_bytes = parse_size(&args.max_audit_bytes)
            .map_err(|r| value_err("max-audit-bytes", &args.max_audit_bytes, r))
            .and_then(|b| {
                if b < MIN_AUDIT_BYTES {
                    Err(value_err(
                        "max-audit-bytes",
                        &args.max_audit_bytes,
                        format!("must be at least {MIN_AUDIT_BYTES} bytes"),
                    ))
                } else {
                    Ok(b as u64)
                }
            })?;
        let policy = crate::enforce::load_run_policy(&args.policy)?;
        if let Some(p) = &policy {
            crate::enforce::check_inspection(p, args.net.tls)?;
            for warning in crate::enforce::enforcement_warnings(p) {
                eprintln!("idagent: warning: {warning}");
            }
        }
        Ok(Self {
            image,
            command,
            env,
            workspace_seed: args.workspace,
            timeout,
            user: args.user,
            memory_bytes,
            pids: args.pids,
            cpus,
            workspace_bytes,
            max_audit_bytes,
            run_dir: args.run_dir,
            net: args.net,
            pcap: None,
            context: args.context,
            policy,
            seccomp_exits: args.seccomp_exits,
            max_output_bytes: args.max_output_bytes,
            topology: args.topology,
            pod_network: args.pod_network,
        })
    }
}

impl RunConfig {
    /// A victim's manifest with default limits (what `idagent audit` runs).
    pub fn for_victim(
        dir: &Path,
        net: crate::cli::NetArgs,
        run_dir: PathBuf,
        extra_env: BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let m = load_manifest(dir)?;
        let mut env = m.env;
        env.extend(extra_env);
        Ok(Self {
            image: m.image.unwrap_or_else(|| GUEST_IMAGE.to_owned()),
            command: m.command,
            env,
            workspace_seed: None,
            timeout: Some(Duration::from_secs(300)),
            user: "65534:65534".into(),
            memory_bytes: 1 << 30,
            pids: 512,
            cpus: DEFAULT_CPUS,
            workspace_bytes: DEFAULT_WORKSPACE_BYTES,
            max_audit_bytes: crate::audit::DEFAULT_MAX_AUDIT_BYTES,
            run_dir: Some(run_dir),
            net,
            pcap: None,
            context: None,
            policy: None,
            seccomp_exits: false,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            topology: crate::cli::Topology::Docker,
            pod_network: "bridge".into(),
        })
    }
}

/// The guest's CPU share when `--cpus` is not given.
pub const DEFAULT_CPUS: f64 = 1.0;
/// `--workspace-size` when not given: the same as the default `--memory`, which bounds it too.
pub const DEFAULT_WORKSPACE_BYTES: u64 = 1 << 30;
const MIN_WORKSPACE_BYTES: i64 = 1 << 20;
const MIN_AUDIT_BYTES: i64 = 1 << 20;

fn parse_cpus(text: &str) -> Result<f64, String> {
    let cpus: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of CPUs, e.g. 1 or 0.5".to_string())?;
    let host = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if !(0.01..=host).contains(&cpus) {
        return Err(format!("must be between 0.01 and the host's {host} CPUs"));
    }
    Ok(cpus)
}

fn value_err(flag: &'static str, value: &str, reason: String) -> ConfigError {
    ConfigError::Value {
        flag,
        value: value.to_owned(),
        reason,
    }
}

fn load_manifest(dir: &Path) -> Result<Manifest, ConfigError> {
    let target = dir.display().to_string();
    if !dir.is_dir() {
        return Err(ConfigError::Target {
            target,
            reason: "not a directory (a victim directory holds an idagent.toml; for an image use --image IMAGE -- CMD...)".into(),
        });
    }
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Target {
        target: target.clone(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let m: Manifest = toml::from_str(&text).map_err(|e| ConfigError::Manifest {
        path: path.clone(),
        reason: e.message().to_owned(),
    })?;
    if m.command.is_empty() {
        return Err(ConfigError::Manifest {
            path,
            reason: "command is empty".into(),
        });
    }
    Ok(m)
}

/// `90`, `90s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "expected seconds, or a number with s, m or h".to_string())?;
    if n == 0 {
        return Err("must be positive".into());
    }
    Ok(Duration::from_secs(n.saturating_mul(mul)))
}

/// `1048576`, `512k`, `512m`, `2g`.
/// A memory size for the engine: at least 16m, which a container needs to start.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let bytes = parse_size(s)?;
    if bytes < (16 << 20) {
        return Err("must be at least 16m".into());
    }
    Ok(bytes)
}

/// Bytes, or a number with a k, m or g suffix.
pub fn parse_size(s: &str) -> Result<i64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let (num, mul) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1i64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        _ => (lower.as_str(), 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| "expected bytes, or a number with k, m or g".to_string())?;
    let bytes = n.checked_mul(mul).ok_or("too large")?;
    if bytes < 0 {
        return Err("must not be negative".into());
    }
    Ok(bytes)
}

fn validate_user(user: &str) -> Result<(), String> {
    let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    match user.split_once(':') {
        Some((u, g)) if ok(u) && ok(g) => Ok(()),
        None if ok(user) => Ok(()),
        _ => Err("expected numeric uid or uid:gid (names depend on the image)".into()),
    }
}

/// uid and gid of a validated `--user` value (gid defaults to uid).
pub fn user_ids(user: &str) -> (u32, u32) {
    let mut parts = user.split(':').map(|p| p.parse::<u32>().unwrap_or(65534));
    let uid = parts.next().unwrap_or(65534);
    (uid, parts.next().unwrap_or(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("0").is_err());
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert!(parse_bytes("1k").is_err());
        assert!(parse_bytes("99999999999g").is_err());
    }

    #[test]
    fn users() {
        assert!(validate_user("65534:65534").is_ok());
        assert!(validate_user("0").is_ok());
        assert!(validate_user("root").is_err());
        assert_eq!(user_ids("1000"), (1000, 1000));
        assert_eq!(user_ids("1000:50"), (1000, 50));
    }
}

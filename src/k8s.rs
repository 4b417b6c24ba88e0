//! `idagent k8s manifest`: the Kubernetes objects that run a target as the pod of
//! [`crate::pod`] (net-init, proxy, agent), validated exactly as `run` validates its options
//! ([`RunConfig::from_args`]).
//!
//! Output, one YAML stream, in the order to apply it (the wall exists before the pod):
//! 1. a Secret `<name>-idagent-env` with the `--env` values (only with `--env`);
//! 2. a ConfigMap `<name>-idagent`: the policy file, the mode, the upstream map, the CA;
//! 3. a NetworkPolicy `<name>-idagent`: no ingress, egress no wider than the policy's L3/L4
//!    projection ([`egress`]);
//! 4. the pod, as an agent-sandbox `SandboxTemplate`, a `Pod` or a `Job`.
//!
//! [`manifest`] reads the files the options name; [`build`] is pure.

pub mod egress;
pub mod yaml;

use crate::cli::{K8sKind, K8sManifestArgs, ModeArg};
use crate::config::{ConfigError, RunConfig};
use crate::pod;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

/// The SandboxTemplate's API group and version, as kubernetes-sigs/agent-sandbox defines it:
/// the core `Sandbox` is in `agents.x-k8s.io`, the template (with `SandboxClaim` and
/// `SandboxWarmPool`) in the extensions group, `extensions.agents.x-k8s.io/v1alpha1`
/// (docs/api.md of that project). Its `spec.podTemplate` is `{metadata: {labels,
/// annotations}, spec: PodSpec}`; `spec.networkPolicy` is `{ingress, egress}`.
pub const SANDBOX_TEMPLATE_API: &str = "extensions.agents.x-k8s.io/v1alpha1";
/// The label every object carries and the NetworkPolicy selects on.
pub const LABEL: &str = "idagent.dev/sandbox";
/// Where idagent's binary is in the idagent image.
pub const IMAGE_BIN: &str = "/usr/local/bin/idagent";
/// Where the downward API volume (the run id) is mounted in the proxy.
pub const PODINFO_DIR: &str = "/idagent/podinfo";
/// Where the install step copies the binary (the `idagent-bin` volume, mounted read-only at
/// the directory of [`pod::AGENT_BIN`] in the agent).
const INSTALL_DIR: &str = "/idagent-bin";
/// Longest `--name`: the Secret's suffix must still fit a 63-character label value.
const MAX_NAME: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--user {user}: {reason}")]
    User { user: String, reason: String },
    #[error("bad --name {0:?}: expected a DNS label (lowercase letters, digits and '-', at most {MAX_NAME} characters, starting and ending with a letter or digit)")]
    Name(String),
    #[error("--env {0}: a Secret key may hold only letters, digits, '-', '_' and '.'")]
    EnvKey(String),
    #[error("read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("bad upstream map: {0}")]
    Map(String),
    #[error("--{flag} has no meaning in a manifest: {why}")]
    Unsupported {
        flag: &'static str,
        why: &'static str,
    },
}

/// The contents of the ConfigMap, read from the files the options name.
#[derive(Debug, Clone, Default)]
pub struct ConfigFiles {
    /// `--policy`'s text.
    pub policy: Option<String>,
    /// `--mode`.
    pub mode: Option<ModeArg>,
    /// The upstream map as one file: the `--upstream-map` values, then the file's lines.
    pub upstream_map: String,
    /// The map's targets.
    pub map_targets: Vec<SocketAddr>,
    /// `--upstream-ca`'s PEM.
    pub upstream_ca: Option<String>,
}

/// Everything [`build`] needs, validated.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: K8sKind,
    pub name: String,
    pub namespace: String,
    pub idagent_image: String,
    pub runtime_class: Option<String>,
    pub cfg: RunConfig,
    /// Keys of `cfg.env` that came from `--env`: they go into the Secret.
    pub secret_keys: BTreeSet<String>,
    pub files: ConfigFiles,
}

/// Validates `args` as `run` does, reads the files they name and builds the manifests.
pub fn manifest(args: K8sManifestArgs) -> Result<String, K8sError> {
    let run = &args.run;
    if run.workspace.is_some() {
        return Err(K8sError::Unsupported {
            flag: "workspace",
            why: "a host folder cannot be copied into a pod (bake it into the image)",
        });
    }
    if run.run_dir.is_some() {
        return Err(K8sError::Unsupported {
            flag: "run-dir",
            why: "the proxy writes the run under its idagent-runs volume, named by the pod's uid",
        });
    }
    let name = match &args.name {
        Some(n) => valid_name(n)?,
        None => default_name(run.target.as_deref(), run.image.as_deref()),
    };
    // The keys --env sets (later values win, as in `run`).
    let secret_keys: BTreeSet<String> = run
        .env
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
        .filter(|k| !k.is_empty())
        .collect();
    let policy_path = run.policy.policy.clone();
    let mode = run.policy.mode;
    let net = run.net.clone();
    let cfg = RunConfig::from_args(args.run)?;
    let files = ConfigFiles {
        policy: policy_path.as_deref().map(read_text).transpose()?,
        mode,
        upstream_ca: net.upstream_ca.as_deref().map(read_pem).transpose()?,
        ..upstream_map(&net.upstream_map, net.upstream_map_file.as_deref())?
    };
    build(&Spec {
        kind: args.kind,
        name,
        namespace: args.namespace,
        idagent_image: args.idagent_image,
        runtime_class: args.runtime_class,
        cfg,
        secret_keys,
        files,
    })
}

fn read_text(path: &Path) -> Result<String, K8sError> {
    std::fs::read_to_string(path).map_err(|e| K8sError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn read_pem(path: &Path) -> Result<String, K8sError> {
    let text = read_text(path)?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(K8sError::Read {
            path: path.display().to_string(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(text)
}

/// The map as the proxy will read it (`--upstream-map-file`), validated as `run` does.
pub(crate) fn upstream_map(
    entries: &[String],
    file: Option<&Path>,
) -> Result<ConfigFiles, K8sError> {
    let mut map = crate::upstream::UpstreamMap::from_entries(entries)
        .map_err(|e| K8sError::Map(e.to_string()))?;
    let mut text = String::new();
    if !entries.is_empty() {
        text.push_str("# from --upstream-map\n");
        for e in entries {
            text.push_str(e.trim());
            text.push('\n');
        }
    }
    if let Some(path) = file {
        let body = read_text(path)?;
        map.add_file_text(path, &body)
            .map_err(|e| K8sError::Map(e.to_string()))?;
        text.push_str(&format!("# from {}\n", path.display()));
        text.push_str(&body);
        if !body.ends_with('\n') {
            text.push('\n');
        }
    }
    let mut map_targets: Vec<SocketAddr> = map.targets().collect();
    map_targets.sort();
    map_targets.dedup();
    Ok(ConfigFiles {
        upstream_map: text,
        map_targets,
        ..ConfigFiles::default()
    })
}

fn valid_name(name: &str) -> Result<String, K8sError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    ok.then(|| name.to_owned())
        .ok_or_else(|| K8sError::Name(name.to_owned()))
}

/// A DNS label from the victim directory's name or the image's repository name.
pub fn default_name(target: Option<&str>, image: Option<&str>) -> String {
    let raw = match (target, image) {
        (Some(t), _) => Path::new(t)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        (None, Some(img)) => {
            let last = img.rsplit('/').next().unwrap_or(img);
            let last = last.split('@').next().unwrap_or(last);
            last.split(':').next().unwrap_or(last).to_owned()
        }
        (None, None) => String::new(),
    };
    let mut name: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(MAX_NAME);
    let name = name.trim_matches('-');
    if name.is_empty() {
        "idagent".into()
    } else {
        name.to_owned()
    }
}

/// uid and gid for the agent container from a validated `--user`; refuses the ones that would
/// undo the pod's isolation.
pub fn agent_ids(user: &str) -> Result<(u32, u32), K8sError> {
    let (uid, gid) = crate::config::user_ids(user);
    let refuse = |reason: String| {
        Err(K8sError::User {
            user: user.to_owned(),
            reason,
        })
    };
    if uid == pod::PROXY_UID {
        return refuse(format!(
            "uid {uid} is the proxy's: net-init lets that uid alone leave by the pod's real interface, so an agent running as it would bypass idagent; choose another uid"
        ));
    }
    if uid == 0 {
        return refuse(
            "uid 0 is root: the agent must not run as root (runAsNonRoot; root could undo the TUN route in the shared network namespace given any capability); choose another uid"
                .into(),
        );
    }
    if gid == pod::PROXY_GID {
        return refuse(format!(
            "gid {gid} is the proxy's group, which owns the pod's TUN device; choose another gid"
        ));
    }
    Ok((uid, gid))
}

fn secret_name(name: &str) -> String {
    format!("{name}-idagent-env")
}

fn config_name(name: &str) -> String {
    format!("{name}-idagent")
}

fn labels(name: &str) -> Value {
    json!({ LABEL: name })
}

fn metadata(spec: &Spec, name: String) -> Value {
    json!({"name": name, "namespace": spec.namespace, "labels": labels(&spec.name)})
}

/// The multi-document YAML for `spec`. Pure.
pub fn build(spec: &Spec) -> Result<String, K8sError> {
    for key in &spec.secret_keys {
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(K8sError::EnvKey(key.clone()));
        }
    }
    let ids = agent_ids(&spec.cfg.user)?;
    let mut docs = Vec::new();
    if let Some(secret) = secret(spec) {
        docs.push(yaml::document(
            &[
                "The --env values, out of the pod spec (the agent reads them through",
                "secretKeyRef). Base64 is not encryption: apply this document on its own, keep it",
                "out of version control, or replace it with your secret manager's (same name, same keys).",
            ],
            &secret,
            &[],
        ));
    }
    docs.push(yaml::document(
        &["The proxy's configuration, mounted read-only at /idagent/config."],
        &config_map(spec),
        &[],
    ));
    let egress = egress::project(
        spec.cfg.policy.as_ref(),
        spec.cfg.net.offline,
        spec.cfg.net.allow_private,
        &spec.files.map_targets,
    );
    docs.push(yaml::document(
        &[
            "The L3/L4 wall. idagent decides each DNS name, connection, TLS session and HTTP",
            "request (L7) by the policy; this NetworkPolicy only keeps the pod from reaching",
            "any address or port that policy could never allow, should the proxy fail. It has no",
            "names: a name-based rule opens its port to every public address.",
        ],
        &network_policy(spec, &egress),
        &[],
    ));
    let (header, carrier) = carrier(spec, ids, &egress);
    docs.push(yaml::document(&header, &carrier, POD_COMMENTS));
    Ok(docs.iter().map(|d| format!("---\n{d}")).collect::<String>())
}

fn secret(spec: &Spec) -> Option<Value> {
    if spec.secret_keys.is_empty() {
        return None;
    }
    let data: serde_json::Map<String, Value> = spec
        .secret_keys
        .iter()
        .filter_map(|k| {
            let v = spec.cfg.env.get(k)?;
            Some((
                k.clone(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
            ))
        })
        .collect();
    Some(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(spec, secret_name(&spec.name)),
        "type": "Opaque",
        "data": data,
    }))
}

fn config_map(spec: &Spec) -> Value {
    let f = &spec.files;
    let mut data = serde_json::Map::new();
    if let Some(p) = &f.policy {
        data.insert(pod::POLICY_FILE.into(), p.clone().into());
    }
    if let Some(m) = f.mode {
        let m = match m {
            ModeArg::Report => "report",
            ModeArg::Enforce => "enforce",
        };
        data.insert("mode".into(), m.into());
    }
    if !f.upstream_map.is_empty() {
        data.insert("upstream-map.txt".into(), f.upstream_map.clone().into());
    }
    if let Some(ca) = &f.upstream_ca {
        data.insert("upstream-ca.pem".into(), ca.clone().into());
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec, config_name(&spec.name)),
        "data": data,
    })
}

fn network_policy(spec: &Spec, egress: &egress::Egress) -> Value {
    let mut meta = metadata(spec, config_name(&spec.name));
    meta["annotations"] = json!({
        "idagent.dev/egress": egress::reason(spec.cfg.policy.as_ref(), spec.cfg.net.offline),
        "idagent.dev/layers": "idagent decides L7 (names, TLS, HTTP requests); this is the L3/L4 wall under it",
    });
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": labels(&spec.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress::egress_rules(egress),
        },
    })
}

/// Comments on the pod's fields (by key, at the first occurrence).
const POD_COMMENTS: yaml::Comments<'static> = &[
    (
        "shareProcessNamespace",
        "Explicitly false: the agent's guest-init must be PID 1 of a pid namespace of its own.\nThat is what lets it read the app's memory without a capability (same uid, its\nancestor), and what keeps the app from killing it (init ignores signals from inside).",
    ),
    (
        "initContainers",
        "In order: copy idagent into the agent's volume (no capability, seconds); net-init\n(NET_ADMIN, one-shot, before anything else); the proxy (a native sidecar: no capability,\nthe whole pod life; the agent starts only when its startup probe passes).",
    ),
    (
        "seccompProfile",
        "RuntimeDefault (Pod Security \"restricted\" asks for it): it allows seccomp(2), and\nguest-init's own filter stacks on top. Older runtimes' default profiles lack the Landlock\nsyscalls: guest-init then reports Landlock missing and run_start's observation field\nrecords it (use a Localhost profile that allows them).",
    ),
    (
        "runAsUser",
        "Never 0 and never 7700 (the proxy's uid, the only one net-init routes around the TUN).",
    ),
    (
        "env",
        "The --env values come from the Secret, never in clear here.",
    ),
    (
        "subPath",
        "The CA bundle (system roots + the run's CA) over the system bundle. It exists when the\nagent starts: the proxy writes it before its startup probe passes.",
    ),
    (
        "restartPolicy",
        "Always on an init container makes it a native sidecar (Kubernetes 1.29+): it runs\nbeside the agent and is stopped after the agent exits (so a Job completes).",
    ),
    (
        "volumes",
        "idagent-runs is where the proxy writes the run (audit.jsonl, report, capture) under the\npod's uid: an emptyDir here, gone with the pod. Replace it with a PersistentVolumeClaim,\nor ship it with a log collector, to keep the runs.",
    ),
];

fn carrier(spec: &Spec, ids: (u32, u32), egress: &egress::Egress) -> (Vec<&'static str>, Value) {
    let timeout = spec.cfg.timeout.map(|t| t.as_secs().max(1));
    let pod_meta = json!({"labels": labels(&spec.name)});
    match spec.kind {
        K8sKind::SandboxTemplate => {
            let mut pod = pod_spec(spec, ids);
            if let Some(t) = timeout {
                pod["activeDeadlineSeconds"] = t.into();
            }
            let header = vec![
                "agent-sandbox's SandboxTemplate (extensions.agents.x-k8s.io/v1alpha1, from",
                "kubernetes-sigs/agent-sandbox): a SandboxClaim or SandboxWarmPool makes sandboxes",
                "of this pod. spec.networkPolicy repeats the NetworkPolicy above: left out, the",
                "controller would manage a default policy of its own, and NetworkPolicies add up.",
            ];
            let doc = json!({
                "apiVersion": SANDBOX_TEMPLATE_API,
                "kind": "SandboxTemplate",
                "metadata": metadata(spec, spec.name.clone()),
                "spec": {
                    "podTemplate": {"metadata": pod_meta, "spec": pod},
                    "networkPolicyManagement": "Managed",
                    "networkPolicy": {"ingress": [], "egress": egress::egress_rules(egress)},
                },
            });
            (header, doc)
        }
        K8sKind::Pod => {
            let mut pod = pod_spec(spec, ids);
            if let Some(t) = timeout {
                pod["activeDeadlineSeconds"] = t.into();
            }
            let mut meta = metadata(spec, spec.name.clone());
            meta["labels"] = labels(&spec.name);
            let doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod});
            (
                vec!["The run as one Pod (--timeout is its activeDeadlineSeconds)."],
                doc,
            )
        }
        K8sKind::Job => {
            let mut job = json!({
                "backoffLimit": 0,
                "template": {"metadata": pod_meta, "spec": pod_spec(spec, ids)},
            });
            if let Some(t) = timeout {
                job["activeDeadlineSeconds"] = t.into();
            }
            let doc = json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": metadata(spec, spec.name.clone()),
                "spec": job,
            });
            (
                vec![
                    "The run as a Job: one try (a run is not retried), --timeout is its deadline.",
                ],
                doc,
            )
        }
    }
}

/// The container hardening every step shares; `caps` are added after dropping ALL.
fn hardening(uid: u32, gid: u32, caps: &[&str]) -> Value {
    let mut caps_v = json!({"drop": ["ALL"]});
    if !caps.is_empty() {
        caps_v["add"] = json!(caps);
    }
    json!({
        "runAsUser": uid,
        "runAsGroup": gid,
        "runAsNonRoot": uid != 0,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": caps_v,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn mount(name: &str, path: &str, read_only: bool) -> Value {
    json!({"name": name, "mountPath": path, "readOnly": read_only})
}

/// The proxy's command line (see `idagent proxy --help`): [`pod::proxy_args`], as the Docker
/// pod runs it.
pub fn proxy_command(spec: &Spec) -> Vec<String> {
    let f = &spec.files;
    let mut c = vec![IMAGE_BIN.to_owned()];
    c.extend(pod::proxy_args(
        &spec.cfg,
        pod::ProxyFiles {
            policy: f.policy.is_some(),
            mode: f.mode.is_some(),
            upstream_map: !f.upstream_map.is_empty(),
            upstream_ca: f.upstream_ca.is_some(),
        },
    ));
    c
}

fn agent_env(spec: &Spec) -> Vec<Value> {
    pod::agent_env(&spec.cfg.env)
        .into_iter()
        .map(|(k, v)| {
            if spec.secret_keys.contains(&k) {
                json!({"name": k, "valueFrom": {"secretKeyRef": {
                    "name": secret_name(&spec.name), "key": k, "optional": false}}})
            } else {
                json!({"name": k, "value": v})
            }
        })
        .collect()
}

fn pod_spec(spec: &Spec, (uid, gid): (u32, u32)) -> Value {
    let cfg = &spec.cfg;
    let tun = mount("dev-net-tun", "/dev/net/tun", false);
    let install = json!({
        "name": "idagent-install",
        "image": spec.idagent_image,
        "command": ["cp", IMAGE_BIN, format!("{INSTALL_DIR}/idagent")],
        "securityContext": hardening(pod::PROXY_UID, pod::PROXY_GID, &[]),
        "volumeMounts": [mount("idagent-bin", INSTALL_DIR, false)],
    });
    let mut net_init_cmd = vec![IMAGE_BIN.to_owned()];
    net_init_cmd.extend(pod::net_init_args());
    let net_init = json!({
        "name": "idagent-net-init",
        "image": spec.idagent_image,
        "command": net_init_cmd,
        "securityContext": hardening(0, 0, &["NET_ADMIN"]),
        "volumeMounts": [tun.clone()],
    });
    let proxy = json!({
        "name": "idagent-proxy",
        "image": spec.idagent_image,
        "restartPolicy": "Always",
        "command": proxy_command(spec),
        "securityContext": hardening(pod::PROXY_UID, pod::PROXY_GID, &[]),
        "startupProbe": {
            "exec": {"command": [IMAGE_BIN, "proxy", "--check-ready", "--ctl", pod::PROXY_CTL_DIR]},
            "periodSeconds": 1,
            "failureThreshold": 60,
        },
        "volumeMounts": [
            mount("idagent-ctl", pod::PROXY_CTL_DIR, false),
            mount("idagent-config", pod::PROXY_CONFIG_DIR, true),
            mount("podinfo", PODINFO_DIR, true),
            mount("idagent-runs", pod::PROXY_RUNS_DIR, false),
            tun,
        ],
    });
    let mut command = pod::agent_entrypoint();
    command.extend(cfg.command.iter().cloned());
    let bin_dir = Path::new(pod::AGENT_BIN)
        .parent()
        .map_or_else(|| "/.idagent/bin".to_owned(), |p| p.display().to_string());
    let millicpus = ((cfg.cpus * 1000.0).round() as i64).max(1);
    let agent = json!({
        "name": "agent",
        "image": cfg.image,
        "command": command,
        "env": agent_env(spec),
        "securityContext": hardening(uid, gid, &[]),
        "resources": {"limits": {
            "memory": cfg.memory_bytes.to_string(),
            "cpu": format!("{millicpus}m"),
        }},
        "volumeMounts": [
            mount("idagent-bin", &bin_dir, true),
            mount("idagent-ctl", pod::AGENT_CTL_DIR, true),
            {"name": "idagent-ctl", "mountPath": crate::net::GUEST_CA_BUNDLE,
             "subPath": pod::CA_BUNDLE, "readOnly": true},
            mount("workspace", crate::GUEST_WORKSPACE, false),
        ],
    });
    let mut pod = json!({
        "shareProcessNamespace": false,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "hostNetwork": false,
        "hostPID": false,
        "hostIPC": false,
        "restartPolicy": "Never",
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [install, net_init, proxy],
        "containers": [agent],
        "volumes": [
            {"name": "idagent-bin", "emptyDir": {}},
            {"name": "idagent-ctl", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "idagent-config", "configMap": {"name": config_name(&spec.name)}},
            {"name": "podinfo", "downwardAPI": {"items": [
                {"path": "run-id", "fieldRef": {"fieldPath": "metadata.uid"}}]}},
            {"name": "idagent-runs", "emptyDir": {}},
            {"name": "dev-net-tun", "hostPath": {"path": "/dev/net/tun", "type": "CharDevice"}},
            {"name": "workspace", "emptyDir": {"medium": "Memory",
                "sizeLimit": cfg.workspace_bytes.to_string()}},
        ],
    });
    if let Some(rc) = &spec.runtime_class {
        pod["runtimeClassName"] = rc.clone().into();
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, K8sCommand};
    use clap::Parser;

    fn args(extra: &[&str]) -> K8sManifestArgs {
        let mut argv = vec!["idagent", "k8s", "manifest"];
        argv.extend(extra);
        match Cli::parse_from(argv).command {
            Command::K8s {
                command: K8sCommand::Manifest(a),
            } => *a,
            _ => unreachable!("k8s manifest parses as K8s"),
        }
    }

    /// The manifest's proxy and net-init commands are what `idagent` itself parses (a flag
    /// renamed in one place and not the other would fail here, not in a cluster).
    #[test]
    fn the_pods_commands_parse_as_idagent_commands() {
        use clap::Parser;
        let mut s = spec(&[
            "--image",
            "img",
            "--offline",
            "--upstream-map",
            "a.example:443=10.1.2.3:443",
            "--",
            "node",
            "x.js",
        ]);
        s.files.policy = Some("version: 1\n".into());
        s.files.mode = Some(ModeArg::Enforce);
        let argv = proxy_command(&s);
        let cli = crate::cli::Cli::try_parse_from(&argv).expect("proxy command parses");
        match cli.command {
            crate::cli::Command::Proxy(p) => {
                assert!(p.net.offline);
                assert!(p.policy.policy.is_some() && p.mode_file.is_some());
                assert_eq!(p.agent_command, ["node", "x.js"]);
            }
            other => panic!("{other:?}"),
        }
        let mut argv = vec!["idagent".to_owned()];
        argv.extend(pod::net_init_args());
        let cli = crate::cli::Cli::try_parse_from(&argv).expect("net-init parses");
        assert!(
            matches!(cli.command, crate::cli::Command::NetInit(a) if a.proxy_uid == pod::PROXY_UID)
        );
    }

    fn spec(extra: &[&str]) -> Spec {
        let a = args(extra);
        let secret_keys = a
            .run
            .env
            .iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
            .collect();
        Spec {
            kind: a.kind,
            name: "t".into(),
            namespace: a.namespace,
            idagent_image: a.idagent_image,
            runtime_class: a.runtime_class,
            cfg: RunConfig::from_args(a.run).expect("config"),
            secret_keys,
            files: ConfigFiles::default(),
        }
    }

    #[test]
    fn refuses_the_proxy_uid_root_and_the_proxy_group() {
        for user in ["7700", "7700:1000", "0", "0:0", "1000:7700"] {
            let err = agent_ids(user).expect_err(user).to_string();
            assert!(err.starts_with(&format!("--user {user}: ")), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert_eq!(agent_ids("65534:65534").expect("ok"), (65534, 65534));
        assert_eq!(agent_ids("1000").expect("ok"), (1000, 1000));
        let err =
            build(&spec(&["--user", "7700", "--image", "x", "--", "true"])).expect_err("refused");
        assert!(err.to_string().contains("proxy's"), "{err}");
    }

    #[test]
    fn env_values_go_to_the_secret_never_into_the_pod() {
        let s = spec(&[
            "--image",
            "img",
            "--env",
            "OPENAI_API_KEY=sk-very-secret",
            "--",
            "true",
        ]);
        let out = build(&s).expect("build");
        assert!(!out.contains("sk-very-secret"), "{out}");
        let b64 = base64::engine::general_purpose::STANDARD.encode("sk-very-secret");
        assert!(out.contains(&format!("OPENAI_API_KEY: \"{b64}\"")), "{out}");
        assert!(out.contains("name: t-idagent-env"), "{out}");
        let env = agent_env(&s);
        let key = env
            .iter()
            .find(|e| e["name"] == "OPENAI_API_KEY")
            .expect("env");
        assert_eq!(
            key["valueFrom"]["secretKeyRef"],
            json!({"name": "t-idagent-env", "key": "OPENAI_API_KEY", "optional": false})
        );
        // idagent's own variables stay plain.
        assert!(env
            .iter()
            .any(|e| e["name"] == "SSL_CERT_FILE" && e["value"].is_string()));
        // No --env: no Secret at all.
        let out = build(&spec(&["--image", "img", "--", "true"])).expect("build");
        assert!(!out.contains("kind: Secret"), "{out}");
        let mut bad = spec(&["--image", "img", "--", "true"]);
        bad.secret_keys.insert("A B".into());
        assert!(matches!(build(&bad), Err(K8sError::EnvKey(_))));
    }

    #[test]
    fn proxy_command_carries_the_options_given() {
        let mut s = spec(&[
            "--image",
            "img",
            "--offline",
            "--http1-only",
            "--tls",
            "passthrough",
            "--user",
            "1000:1000",
            "--max-audit-bytes",
            "16m",
            "--",
            "node",
            "x.js",
        ]);
        s.files.policy = Some("version: 1\n".into());
        s.files.mode = Some(ModeArg::Report);
        let c = proxy_command(&s).join(" ");
        assert_eq!(
            c,
            "/usr/local/bin/idagent proxy --ctl /idagent/ctl --out /idagent/runs --run-id-file /idagent/podinfo/run-id --policy /idagent/config/policy.yaml --mode-file /idagent/config/mode --offline --tls passthrough --http1-only --max-audit-bytes 16777216 --agent-image img --agent-user 1000:1000 -- node x.js"
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            default_name(Some("victims/node-openai"), None),
            "node-openai"
        );
        assert_eq!(default_name(None, Some("ghcr.io/a/My_App:1.2")), "my-app");
        assert_eq!(default_name(None, Some("--")), "idagent");
        assert!(valid_name("ok-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(MAX_NAME + 1)] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pod_shape() {
        let s = spec(&[
            "--image",
            "img",
            "--runtime-class",
            "kata",
            "--cpus",
            "0.5",
            "--",
            "true",
        ]);
        let pod = pod_spec(&s, (65534, 65534));
        assert_eq!(pod["shareProcessNamespace"], false);
        assert_eq!(pod["runtimeClassName"], "kata");
        let names: Vec<&str> = pod["initContainers"]
            .as_array()
            .expect("inits")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["idagent-install", "idagent-net-init", "idagent-proxy"]
        );
        let net_init = &pod["initContainers"][1]["securityContext"];
        assert_eq!(net_init["capabilities"]["add"], json!(["NET_ADMIN"]));
        assert_eq!(net_init["runAsUser"], 0);
        let proxy = &pod["initContainers"][2];
        assert_eq!(proxy["restartPolicy"], "Always");
        assert_eq!(proxy["securityContext"]["runAsUser"], pod::PROXY_UID);
        assert!(proxy["securityContext"]["capabilities"]
            .get("add")
            .is_none());
        let agent = &pod["containers"][0];
        assert_eq!(agent["resources"]["limits"]["cpu"], "500m");
        assert_eq!(agent["command"][0], pod::AGENT_BIN);
        assert_eq!(
            agent["command"].as_array().expect("cmd").last(),
            Some(&json!("true"))
        );
    }
}

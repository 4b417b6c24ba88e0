//! Raw command-line arguments (clap). Nothing here is validated beyond clap's parsing; the
//! second stage, [`crate::config`], turns these into typed values and clear errors.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// idagent — run an untrusted program in a sealed container and audit everything it does.
#[derive(Debug, Parser)]
#[command(name = "idagent", version, about, long_about = None)]
pub struct Cli {
    /// Docker Engine socket (also DOCKER_HOST); Podman's Docker-compatible socket works too.
    #[arg(
        long,
        global = true,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker_host: String,
    /// Log filter for idagent's own diagnostics on stderr (the audit log is separate).
    #[arg(long, global = true, env = "IDAGENT_LOG", default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run TARGET (a victim directory with an idagent.toml, or --image IMAGE -- CMD...) in a
    /// sealed guest and write its audit log.
    Run(Box<RunArgs>),
    /// Build the guest image (idagent-guest:<version> and :latest).
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// A run that writes its packet capture to --pcap FILE (same options as `run`).
    Capture(Box<CaptureArgs>),
    /// The gateway alone on a host: serve connections that an iptables REDIRECT rule sends to
    /// --listen (original destination from SO_ORIGINAL_DST), and explicit-proxy requests.
    Gateway(Box<GatewayArgs>),
    /// The multi-language audit: run the Python, Node.js and Go victims (against local fakes
    /// unless --real) and print the verdict against the success criterion. Exit 0 on PASS.
    Audit(AuditArgs),
    /// Summarise one run: destinations, requests, files, denied writes, processes, credentials
    /// (with --summary: every run under a folder, one table).
    Report(ReportArgs),
    /// Audit → enforce: learn a default-deny policy from runs, check it, explain it.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// What RUN_B did that RUN_A did not (and what it no longer does): DNS names,
    /// destinations, HTTP method + path, files, execs, denials. Exit 1 if anything is new.
    /// Either side may be a folder of runs: the union of what they did.
    Diff(DiffArgs),
    /// Write a run's audit log in another schema for a log pipeline (OCSF v1.1.0 JSON Lines;
    /// see docs/ocsf.md).
    Export(ExportArgs),
    /// Remove leftovers (containers labelled by idagent whose run is no longer alive; a pod
    /// whose agent or proxy still runs is kept until they end, unless --all).
    Gc(GcArgs),
    /// Pod step 1 (one-shot, NET_ADMIN only): create the persistent TUN owned by the proxy's
    /// uid in this network namespace, make it the only default route for every other uid, and
    /// install the in-namespace firewall. See README "Kubernetes".
    NetInit(NetInitArgs),
    /// Pod step 2 (the sidecar, no capabilities, non-root): attach to net-init's TUN and run
    /// the stack, DNS, gateway, pcap, audit log and policy for the agent container.
    Proxy(Box<ProxyArgs>),
    /// Kubernetes: manifests for running a target as a pod (agent-sandbox or plain Pod/Job).
    K8s {
        #[command(subcommand)]
        command: K8sCommand,
    },
    /// A pod's holder process (the namespaces' keeper, like Kubernetes' pause): sleeps until
    /// SIGTERM and reaps. Internal.
    #[command(hide = true)]
    Pause,
    /// Internal: PID 1 inside the guest. Not for direct use.
    #[command(hide = true, name = "guest-init")]
    GuestInit,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Merge runs' audit logs into a default-deny policy that allows exactly what they did.
    Learn(PolicyLearnArgs),
    /// Replay runs through a policy; list every event it would deny. Exit 0 only if none.
    Check(PolicyCheckArgs),
    /// What a policy allows, risky rules first.
    Explain(PolicyExplainArgs),
}

#[derive(Debug, Args)]
pub struct PolicyLearnArgs {
    /// Run folders (each holding audit.jsonl), or folders searched recursively for them
    /// (sorted; symlinks not followed).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where the policy goes (`-` for stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct PolicyCheckArgs {
    /// The policy file.
    pub policy: PathBuf,
    /// Run folders to replay, or folders searched recursively for them.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
}

#[derive(Debug, Args)]
pub struct PolicyExplainArgs {
    /// The policy file.
    pub policy: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier run folder, or a folder of runs (their union).
    pub run_a: PathBuf,
    /// The later run folder, or a folder of runs (their union).
    pub run_b: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
}

/// Running under a policy, shared by `run`, `capture` and `gateway`.
#[derive(Debug, Args, Clone, Default)]
pub struct PolicyArgs {
    /// Decide every DNS query, connection, TLS session, HTTP request, datagram, file write and
    /// exec by this policy file (see `idagent policy learn`).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// `report`: refuse nothing the run would not refuse without a policy, log every
    /// would-be denial; `enforce`: refuse what the policy denies. Default: the file's mode.
    #[arg(long, value_enum, requires = "policy")]
    pub mode: Option<ModeArg>,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Report,
    Enforce,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build Dockerfile.guest; bootstraps a Debian base offline when no registry answers.
    Build(ImageBuildArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// The source checkout holding Dockerfile.guest, guest/ and victims/.
    #[arg(long, env = "IDAGENT_SOURCE")]
    pub context: Option<PathBuf>,
    /// Skip trying to pull the base image; bootstrap it with mmdebstrap directly.
    #[arg(long)]
    pub bootstrap: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A victim directory containing idagent.toml. Omit it when using --image.
    pub target: Option<String>,
    /// Run any image instead of a victim directory; the command follows `--`.
    #[arg(long)]
    pub image: Option<String>,
    /// Arguments: appended to the manifest's command, or the whole command with --image.
    #[arg(last = true)]
    pub args: Vec<String>,
    /// Environment variable for the guest (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Seed /tmp/workspace with a copy of this host folder.
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// Stop the guest after this long (e.g. 90, 90s, 5m).
    #[arg(long)]
    pub timeout: Option<String>,
    /// User (uid[:gid]) the guest runs as.
    #[arg(long, default_value = "65534:65534")]
    pub user: String,
    /// Memory limit (bytes, or with k/m/g suffix).
    #[arg(long, default_value = "1g")]
    pub memory: String,
    /// Maximum number of processes in the guest.
    #[arg(long, default_value_t = 512)]
    pub pids: i64,
    /// CPUs the guest may use (fractions allowed, e.g. 0.5).
    #[arg(long, default_value = "1")]
    pub cpus: String,
    /// Size of /tmp/workspace, a tmpfs of its own (bytes, or with k/m/g suffix); what the
    /// guest writes there counts against --memory too.
    #[arg(long, default_value = "1g")]
    pub workspace_size: String,
    /// Largest audit.jsonl; at the cap the guest is stopped (run_end reason `audit_cap`).
    #[arg(long, default_value = "2g")]
    pub max_audit_bytes: String,
    /// Where the run's audit log, capture and workspace go (default captures/<run-id>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The source checkout, used to build the guest image when it is missing.
    #[arg(long, env = "IDAGENT_SOURCE")]
    pub context: Option<PathBuf>,
    /// Record process exits from seccomp-observed `exit_group` (the fallback where the proc
    /// connector is missing); hidden: for tests until the fallback is chosen automatically.
    #[arg(long, hide = true)]
    pub seccomp_exits: bool,
    /// Bytes kept of each of the guest's stdout and stderr (stdout.log/stderr.log and the
    /// terminal); past it the rest is dropped, with a notice.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_OUTPUT_BYTES)]
    pub max_output_bytes: u64,
    /// `docker`: one sealed container set up from the host; `pod`: the Kubernetes pod
    /// topology built with the Docker engine (see README "Kubernetes").
    #[arg(long, value_enum, default_value = "docker")]
    pub topology: Topology,
    /// With --topology pod: the Docker network the pod's real interface is on.
    #[arg(long, default_value = "bridge", value_name = "NETWORK")]
    pub pod_network: String,
}

/// Network interception options, shared by `run`, `capture` and `gateway`.
#[derive(Debug, Args, Clone)]
pub struct NetArgs {
    /// Hermetic mode: every upstream dial that is not mapped is refused (and logged); unmapped
    /// names get NXDOMAIN.
    #[arg(long)]
    pub offline: bool,
    /// Send HOST[:PORT] to ADDR:PORT instead (repeatable), e.g. api.openai.com=127.0.0.1:8443.
    #[arg(long = "upstream-map", value_name = "HOST[:PORT]=ADDR:PORT")]
    pub upstream_map: Vec<String>,
    /// Read more --upstream-map entries from FILE (one per line, # comments).
    #[arg(long, value_name = "FILE")]
    pub upstream_map_file: Option<PathBuf>,
    /// Also trust this CA (PEM) when verifying upstream TLS servers.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Allow dials to loopback, private, link-local and metadata addresses without a map entry.
    #[arg(long)]
    pub allow_private: bool,
    /// Bytes of each HTTP body (and of each direction of other flows) kept in the audit log.
    #[arg(long, default_value_t = 65536)]
    pub capture_bytes: usize,
    /// TLS handling: intercept (log the HTTP inside) or passthrough (log SNI only).
    #[arg(long, value_enum, default_value = "intercept")]
    pub tls: crate::gateway::TlsMode,
    /// Speak HTTP/1.1 only, on both legs. By default a guest that offers HTTP/2 (ALPN h2, or
    /// h2c by prior knowledge) speaks it, each stream forwarded as a stream over an HTTP/2
    /// upstream connection where the upstream agrees h2; with this flag a guest that offers
    /// only h2 is refused in the handshake (logged).
    #[arg(long)]
    pub http1_only: bool,
    /// Accepted for older scripts: HTTP/2 is the default now (see --http1-only).
    #[arg(long, hide = true)]
    pub http2: bool,
    /// Bytes kept of each packet in the pcapng (0: whole packets).
    #[arg(long, default_value_t = 0)]
    pub snaplen: u32,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Also stop and remove what live runs and orphaned pods still use.
    #[arg(long)]
    pub all: bool,
}

/// Where a run's containers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Topology {
    /// One sealed container, its network and observers set up from the host (root).
    #[default]
    Docker,
    /// The Kubernetes pod topology on Docker: holder, net-init (NET_ADMIN only), proxy (no
    /// capabilities), agent — the same containers `idagent k8s manifest` describes.
    Pod,
}

#[derive(Debug, Args)]
pub struct NetInitArgs {
    /// The proxy's uid: owner of the TUN, and the one uid whose traffic leaves by the pod's
    /// real interface.
    #[arg(long, default_value_t = crate::pod::PROXY_UID)]
    pub proxy_uid: u32,
    /// The proxy's gid (group owner of the TUN).
    #[arg(long, default_value_t = crate::pod::PROXY_GID)]
    pub proxy_gid: u32,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The pod's shared control volume: sockets, CA files, Landlock plan, ready file.
    #[arg(long, default_value = crate::pod::PROXY_CTL_DIR)]
    pub ctl: PathBuf,
    /// The run folder is created in here, named by the run id: OUT/<run-id>/audit.jsonl, ….
    #[arg(long, default_value = crate::pod::PROXY_RUNS_DIR)]
    pub out: PathBuf,
    /// File holding the run id (Kubernetes: the downward API's metadata.uid); default: a new
    /// id.
    #[arg(long, value_name = "FILE")]
    pub run_id_file: Option<PathBuf>,
    /// File holding the policy's mode (`report` or `enforce`); it overrides --mode.
    #[arg(long, value_name = "FILE", requires = "policy")]
    pub mode_file: Option<PathBuf>,
    /// Largest audit.jsonl; at the cap the network is cut (run_end reason `audit_cap`).
    #[arg(long, default_value = "2g")]
    pub max_audit_bytes: String,
    /// The agent's image, as run_start records it.
    #[arg(long, default_value = "")]
    pub agent_image: String,
    /// The agent's uid[:gid], as run_start records it; an agent connecting with the proxy's
    /// own uid is refused.
    #[arg(long, default_value = "")]
    pub agent_user: String,
    /// Exit 0 when the proxy using --ctl is ready for the agent, 1 otherwise (a startup probe).
    #[arg(long)]
    pub check_ready: bool,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The agent's command, as run_start records it.
    #[arg(last = true)]
    pub agent_command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Print the manifests that run TARGET as a pod: a SandboxTemplate (agent-sandbox,
    /// agents.x-k8s.io) or a plain Pod / Job, its ConfigMap and a NetworkPolicy no wider than
    /// the policy's L3/L4 projection. Same options as `run`.
    Manifest(Box<K8sManifestArgs>),
}

/// Which object carries the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum K8sKind {
    SandboxTemplate,
    Pod,
    Job,
}

#[derive(Debug, Args)]
pub struct K8sManifestArgs {
    /// The object that carries the pod.
    #[arg(long, value_enum, default_value = "sandbox-template")]
    pub kind: K8sKind,
    /// Name of the objects (default: from the target).
    #[arg(long)]
    pub name: Option<String>,
    /// Namespace of the objects.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Image holding idagent at /usr/local/bin/idagent (the init, net-init and proxy steps).
    #[arg(long, default_value = "idagent:latest")]
    pub idagent_image: String,
    /// RuntimeClass of the pod (e.g. kata, gvisor); default: the cluster's.
    #[arg(long)]
    pub runtime_class: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Where the pcapng capture goes.
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address to listen on (the REDIRECT target), e.g. 127.0.0.1:5000.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: std::net::SocketAddr,
    /// Where the audit log goes (default captures/<run-id>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Stop after this long (e.g. 90, 90s, 5m); default: until Ctrl-C or SIGTERM.
    #[arg(long)]
    pub timeout: Option<String>,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Reach the real www.google.com and api.openai.com (needs internet and a real key).
    #[arg(long)]
    pub real: bool,
    /// Where the three runs go (default captures/audit-<id>).
    #[arg(long)]
    pub run_root: Option<PathBuf>,
    /// The key node-openai sends (against the fakes a made-up test key is used by default).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_key: Option<String>,
    /// The source checkout holding victims/ (and Dockerfile.guest).
    #[arg(long, env = "IDAGENT_SOURCE")]
    pub context: Option<PathBuf>,
    /// `pod`: run each victim in the Kubernetes pod topology on Docker, the fakes on an
    /// internal network of their own (see README "Kubernetes").
    #[arg(long, value_enum, default_value = "docker")]
    pub topology: Topology,
    /// Run the victims under this policy (e.g. one `policy learn` made from an earlier audit).
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run folder (holding audit.jsonl); with --summary, a folder searched recursively
    /// for run folders.
    pub run_dir: PathBuf,
    /// One table over every run under RUN_DIR: per run, destinations, denials, totals.
    #[arg(long)]
    pub summary: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run folder (holding audit.jsonl).
    pub run_dir: PathBuf,
    /// Output schema.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Where the export goes (default stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// OCSF v1.1.0, one event per line.
    Ocsf,
}

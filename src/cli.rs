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
    /// Remove leftovers (containers labelled by idagent whose run is no longer alive).
    Gc,
    /// Internal: PID 1 inside the guest. Not for direct use.
    #[command(hide = true, name = "guest-init")]
    GuestInit,
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
    /// Where the run's audit log, capture and workspace go (default captures/<run-id>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Hermetic mode: no upstream dial leaves the machine unless mapped (interceptor milestone).
    #[arg(long)]
    pub offline: bool,
    /// The source checkout, used to build the guest image when it is missing.
    #[arg(long, env = "IDAGENT_SOURCE")]
    pub context: Option<PathBuf>,
}

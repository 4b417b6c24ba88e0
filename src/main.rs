//! The composition root: parse arguments, start tracing, run one command, map the outcome to
//! an exit code. Every setup failure is one line on stderr and exit code 2.

use anyhow::Context;
use clap::Parser;
use idagent::cli::{Cli, Command, ImageCommand};
use idagent::config::{RunConfig, GUEST_IMAGE};
use idagent::runtime::{self, docker::DockerRuntime, ContainerRuntime, RuntimeError};
use idagent::{image, sandbox};
use std::process::ExitCode;

/// Exit code for every failure of idagent itself (bad input, missing prerequisite).
const EXIT_SETUP: u8 = 2;

fn main() -> ExitCode {
    // PID 1 inside the guest: no runtime, no threads, before anything else.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "guest-init")
    {
        idagent_guest::init::main_with(Some(idagent::pod::agent::start));
    }
    let cli = Cli::parse();
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::anyhow!("start async runtime: {e}"), None),
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err((e, hint)) => fail(&e, hint),
    }
}

fn fail(e: &anyhow::Error, hint: Option<String>) -> ExitCode {
    let hint = hint.map(|h| format!(" (hint: {h})")).unwrap_or_default();
    eprintln!("idagent: error: {e:#}{hint}");
    ExitCode::from(EXIT_SETUP)
}

type Failure = (anyhow::Error, Option<String>);

async fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::GuestInit => Err((
            anyhow::anyhow!("guest-init runs only as the guest's PID 1"),
            None,
        )),
        Command::Pause => idagent::pod::docker::pause(),
        Command::NetInit(args) => idagent::pod::netinit::command(&args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| (e.into(), None)),
        Command::Proxy(args) => idagent::pod::proxy::command(*args)
            .await
            .map_err(|e| (e, None)),
        Command::K8s {
            command: idagent::cli::K8sCommand::Manifest(args),
        } => match idagent::k8s::manifest(*args) {
            Ok(text) => {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err((e.into(), None)),
        },
        Command::Gc(args) => {
            require_root()?;
            let rt = connect(&cli.docker_host).await?;
            let removed = runtime::gc(&rt, args.all).await.map_err(runtime_failure)?;
            idagent::sandbox::gc_ctl_dirs();
            let networks = idagent::pod::docker::gc_networks(&rt).await;
            println!(
                "idagent: removed {} leftover container(s) and {} network(s)",
                removed.len(),
                networks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Image {
            command: ImageCommand::Build(args),
        } => {
            let rt = connect(&cli.docker_host).await?;
            let ctx =
                image::resolve_context(args.context.as_deref()).map_err(|e| (e.into(), None))?;
            image::build(&rt, &ctx, args.bootstrap)
                .await
                .map_err(|e| (e.into(), Some("see the build output above".to_owned())))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gateway(args) => idagent::standalone::run_command(*args)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| {
                let hint = matches!(e, idagent::standalone::GatewayCmdError::Listen { .. })
                    .then(|| "is the port in use?".to_owned());
                (e.into(), hint)
            }),
        Command::Capture(args) => {
            let args = *args;
            let mut cfg = run_config(args.run)?;
            cfg.pcap = Some(args.pcap);
            run(&cli.docker_host, cfg).await
        }
        Command::Run(args) => run(&cli.docker_host, run_config(*args)?).await,
        Command::Audit(args) => audit(&cli.docker_host, args).await,
        Command::Report(args) => report(args),
        Command::Export(args) => export(args),
        Command::Policy { command } => idagent::policy_cmd::command(command)
            .map(ExitCode::from)
            .map_err(|e| (e.into(), None)),
        Command::Diff(args) => idagent::policy_cmd::diff_command(args)
            .map(ExitCode::from)
            .map_err(|e| (e.into(), None)),
    }
}

fn run_config(args: idagent::cli::RunArgs) -> Result<RunConfig, Failure> {
    RunConfig::from_args(args).map_err(|e| {
        let hint = "idagent run victims/NAME, or idagent run --image IMAGE -- CMD...";
        (e.into(), Some(hint.to_owned()))
    })
}

async fn run(docker_host: &str, cfg: RunConfig) -> Result<ExitCode, Failure> {
    require_root()?;
    let rt = connect(docker_host).await?;
    let stale = runtime::gc(&rt, false).await.map_err(runtime_failure)?;
    if !stale.is_empty() {
        tracing::warn!(
            count = stale.len(),
            "removed leftover containers of dead runs"
        );
    }
    sandbox::gc_ctl_dirs();
    ensure_image(&rt, &cfg).await?;
    let outcome = match cfg.topology {
        idagent::cli::Topology::Docker => sandbox::run(&rt, &cfg).await.context("run failed"),
        idagent::cli::Topology::Pod => idagent::pod::docker::run(&rt, &cfg)
            .await
            .context("pod run failed"),
    }
    .map_err(|e| (e, None))?;
    eprintln!(
        "idagent: run {} ended ({:?}); audit log {}",
        outcome.run_id,
        outcome.ending,
        outcome.run_dir.join("audit.jsonl").display()
    );
    Ok(ExitCode::from(outcome.ending.exit_code() as u8))
}

async fn connect(host: &str) -> Result<DockerRuntime, Failure> {
    DockerRuntime::connect(host).await.map_err(runtime_failure)
}

fn runtime_failure(e: RuntimeError) -> Failure {
    let hint = match &e {
        RuntimeError::Unreachable { .. } => {
            Some("start dockerd, or point --docker-host / DOCKER_HOST at its socket".to_owned())
        }
        _ => None,
    };
    (e.into(), hint)
}

/// The host side needs root: it enters the guest's namespaces, creates the TUN, reads guest
/// memory for syscall arguments and listens to the kernel's process events.
fn require_root() -> Result<(), Failure> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    // CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21).
    let needed = (1u64 << 12) | (1 << 19) | (1 << 21);
    if cap_eff & needed != needed {
        return Err((
            anyhow::anyhow!(
                "idagent needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_SYS_PTRACE) on the host"
            ),
            Some("run it with sudo".to_owned()),
        ));
    }
    Ok(())
}

async fn ensure_image(rt: &DockerRuntime, cfg: &RunConfig) -> Result<(), Failure> {
    if rt.image_exists(&cfg.image).await.map_err(runtime_failure)? {
        return Ok(());
    }
    let is_guest = cfg.image == GUEST_IMAGE || cfg.image == image::versioned_tag();
    if !is_guest {
        return Err((
            anyhow::anyhow!("image {} is not present", cfg.image),
            Some(format!("docker pull {} (or docker load) first", cfg.image)),
        ));
    }
    eprintln!("idagent: {} is missing; building it", cfg.image);
    let ctx = image::resolve_context(cfg.context.as_deref()).map_err(|e| {
        (
            e.into(),
            Some("build it with `idagent image build --context DIR`".to_owned()),
        )
    })?;
    image::build(rt, &ctx, false).await.map_err(|e| {
        (
            anyhow::Error::from(e).context(format!(
                "image {} is missing and cannot be built",
                cfg.image
            )),
            None,
        )
    })?;
    Ok(())
}

/// `idagent report RUN_DIR`: the human (or JSON) summary of one run; with `--summary`, of
/// every run under the folder.
fn report(args: idagent::cli::ReportArgs) -> Result<ExitCode, Failure> {
    if args.summary {
        let summary = idagent::report::load_summary(&args.run_dir).map_err(|e| (e.into(), None))?;
        match args.format {
            idagent::cli::ReportFormat::Text => {
                print!("{}", idagent::report::render_summary_text(&summary))
            }
            idagent::cli::ReportFormat::Json => print!("{}", summary.to_json()),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = idagent::report::load(&args.run_dir).map_err(|e| {
        let hint = "give a run folder holding audit.jsonl, e.g. captures/<run-id>";
        (e.into(), Some(hint.to_owned()))
    })?;
    match args.format {
        idagent::cli::ReportFormat::Text => print!("{}", idagent::report::render_text(&report)),
        idagent::cli::ReportFormat::Json => print!("{}", report.to_json()),
    }
    Ok(ExitCode::SUCCESS)
}

/// `idagent export --format ocsf RUN_DIR [-o FILE]`: the log as OCSF JSON Lines. Lines that do
/// not read and kinds without a mapping are a note on stderr, not a failure (exit 0).
fn export(args: idagent::cli::ExportArgs) -> Result<ExitCode, Failure> {
    let idagent::cli::ExportFormat::Ocsf = args.format;
    let log = idagent::export::open(&args.run_dir).map_err(|e| {
        let hint = "give a run folder holding audit.jsonl, e.g. captures/<run-id>";
        (e.into(), Some(hint.to_owned()))
    })?;
    let stats = match &args.output {
        None => {
            let stdout = std::io::stdout();
            idagent::export::export_ocsf(log, &mut std::io::BufWriter::new(stdout.lock()))
        }
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| (anyhow::anyhow!("create {}: {e}", path.display()), None))?;
            idagent::export::export_ocsf(log, &mut std::io::BufWriter::new(file))
        }
    }
    .map_err(|e| (e.into(), None))?;
    eprint!("{}", idagent::export::render_note(&stats));
    Ok(ExitCode::SUCCESS)
}

/// Test key sent by node-openai to the fake api.openai.com when no real key is given.
const FAKE_OPENAI_KEY: &str = "sk-idagent-audit-0000000000000000DEMO";

/// `idagent audit`: the three victims, one after another, and the Milestone 3 verdict.
async fn audit(docker_host: &str, args: idagent::cli::AuditArgs) -> Result<ExitCode, Failure> {
    use idagent::verdict::{judge, AuditVerdict, VICTIMS};
    require_root()?;
    let rt = connect(docker_host).await?;
    runtime::gc(&rt, false).await.map_err(runtime_failure)?;
    sandbox::gc_ctl_dirs();
    idagent::pod::docker::gc_networks(&rt).await;
    let context = image::resolve_context(args.context.as_deref()).map_err(|e| (e.into(), None))?;
    let root = args.run_root.clone().unwrap_or_else(|| {
        std::path::PathBuf::from("captures")
            .join(format!("audit-{}", idagent::audit::RunId::generate()))
    });
    std::fs::create_dir_all(&root)
        .map_err(|e| (anyhow::anyhow!("create {}: {e}", root.display()), None))?;
    let root = std::fs::canonicalize(&root).map_err(|e| (anyhow::anyhow!("{e}"), None))?;
    let mut net = idagent::cli::NetArgs {
        offline: !args.real,
        upstream_map: Vec::new(),
        upstream_map_file: None,
        upstream_ca: None,
        allow_private: false,
        capture_bytes: idagent::gateway::DEFAULT_CAPTURE_BYTES,
        tls: idagent::gateway::TlsMode::Intercept,
        http1_only: false,
        http2: false,
        snaplen: 0,
    };
    let pod = args.topology == idagent::cli::Topology::Pod;
    let service = match (pod, args.real) {
        (true, true) => {
            return Err((
                anyhow::anyhow!("--real with --topology pod is not supported"),
                Some("the pod audit runs against the fakes on an internal network".into()),
            ))
        }
        (true, false) => {
            let rt = connect(docker_host).await?;
            let id = idagent::audit::RunId::generate();
            Some(
                idagent::pod::docker::ServiceNet::create(&rt, &id)
                    .await
                    .map_err(|e| (e, None))?,
            )
        }
        (false, _) => None,
    };
    let policy = idagent::enforce::load_run_policy(&args.policy).map_err(|e| (e.into(), None))?;
    let fakes = if args.real {
        None
    } else {
        let listen = match &service {
            Some(s) => idagent_fakes::Listen {
                ip: s.ip,
                netns: Some(s.netns()),
            },
            None => idagent_fakes::Listen::default(),
        };
        let fakes = idagent_fakes::start_on(&root.join("fakes"), &listen)
            .await
            .map_err(|e| (anyhow::anyhow!("start the fake upstreams: {e}"), None))?;
        net.upstream_map = fakes.upstream_map_args();
        net.upstream_ca = Some(fakes.ca_pem_path.clone());
        Some(fakes)
    };
    let key = match (&args.openai_key, args.real) {
        (Some(k), _) => k.clone(),
        (None, false) => FAKE_OPENAI_KEY.to_owned(),
        (None, true) => {
            return Err((
                anyhow::anyhow!("--real needs an OpenAI key"),
                Some("set OPENAI_API_KEY or pass --openai-key".to_owned()),
            ))
        }
    };
    let mut verdicts = Vec::new();
    for victim in VICTIMS {
        let run_dir = root.join(victim.dir_name());
        let env = match victim {
            idagent::verdict::Victim::NodeOpenai => {
                std::collections::BTreeMap::from([("OPENAI_API_KEY".to_owned(), key.clone())])
            }
            _ => Default::default(),
        };
        let mut cfg = RunConfig::for_victim(
            &context.join("victims").join(victim.dir_name()),
            net.clone(),
            run_dir.clone(),
            env,
        )
        .map_err(|e| (e.into(), None))?;
        cfg.policy = policy.clone();
        if let Some(s) = &service {
            cfg.topology = idagent::cli::Topology::Pod;
            cfg.pod_network = s.network.clone();
        }
        ensure_image(&rt, &cfg).await?;
        eprintln!("idagent: audit: running {} …", victim.dir_name());
        let ran = match cfg.topology {
            idagent::cli::Topology::Docker => {
                sandbox::run(&rt, &cfg).await.map_err(anyhow::Error::from)
            }
            idagent::cli::Topology::Pod => idagent::pod::docker::run(&rt, &cfg).await,
        };
        if let Err(e) = ran {
            eprintln!("idagent: audit: {} failed to run: {e:#}", victim.dir_name());
        }
        let events = read_events(&run_dir.join("audit.jsonl"));
        verdicts.push(judge(victim, &run_dir.display().to_string(), &events));
    }
    if let Some(f) = fakes {
        f.shutdown().await;
    }
    if let Some(s) = service {
        s.remove(&rt).await;
    }
    let verdict = AuditVerdict::new(verdicts, if args.real { "real" } else { "fakes" });
    println!("{}", verdict.render());
    if let Ok(json) = serde_json::to_string_pretty(&verdict) {
        let _ = std::fs::write(root.join("verdict.json"), json);
    }
    Ok(if verdict.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The records of a victim's log that parse (none when it has no log: the verdict says so).
fn read_events(path: &std::path::Path) -> Vec<idagent::audit::Record> {
    idagent::audit::read::read_log(path).map_or_else(|_| Vec::new(), |log| log.records)
}

/// Keeps the data path's buffers (256 KiB flow chunks, 64 KiB packets) on the heap. glibc
/// serves allocations over 128 KiB with a fresh mmap and returns them with munmap, so every
/// chunk of a bulk transfer cost a page fault per 4 KiB page plus an munmap; a fixed 4 MiB
/// threshold lets freed chunks be reused warm (measured: idagent CPU per GB of raw TCP bulk
/// 1.04 s -> 0.64 s; a 192 KiB threshold with 128 KiB chunks measured 0.8-0.9 s). Returns are
/// ignored: the defaults only cost speed.
#[allow(unsafe_code)] // OS tunable: glibc's mallopt(3), which has no safe wrapper
fn tune_allocator() {
    const THRESHOLD: libc::c_int = 4 << 20;
    const _: () = assert!(idagent::netdrv::flow::MAX_CHUNK < THRESHOLD as usize);
    // SAFETY: mallopt only changes allocator tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * THRESHOLD);
    }
}

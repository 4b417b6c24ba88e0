//! Interceptor bench (`cargo bench --bench interceptor`): the same static client program against
//! the same host-side servers, (a) directly on host loopback, (b) from a plain Docker container
//! on the default bridge, and (c) from an idagent guest through the TUN, the userspace stack and
//! the intercepting gateway (`--offline`, `bench.test` mapped to the host servers), with full
//! packet capture and with `--snaplen 96` (idagent has no switch that turns the capture off).
//! Then the HTTPS keep-alive measurement alone, in idagent runs without and with a generated
//! policy of 1,000 HTTP rules in enforce mode (`interceptor/policy.rs`), interleaved; every
//! request of a policy run must be allowed, or the bench fails. A last idagent run holds 1,000
//! keep-alive connections open and reads idagent's RSS. The seeding rows time `idagent run`'s
//! set-up (start to the guest's first instruction) with an empty seed and with a 10,000-file
//! seed, interleaved in the same run. The HTTP/2 and gRPC rows (`interceptor/http2.rs`)
//! measure HTTP/2 keep-alive latency, 8 concurrent streams and gRPC unary calls directly on
//! loopback and through an idagent guest.
//!
//! Prints one table (value and ratio to (a)) plus PASS/BELOW per floor of the issue, and writes
//! it as markdown to `target/bench-interceptor.md`. The floors are reported, never asserted.
//!
//! Owns: the cases, their processes and containers (always removed, also on error), and the
//! report. The client is this very binary in `client` mode (`interceptor/client.rs`); the
//! servers are in `interceptor/server.rs`. Network reach: host loopback, the docker bridge
//! gateway (case b only) and addresses inside the guests.
//!
//! Environment: `IDAGENT_BENCH_BULK_MIB` (default 256), `IDAGENT_BENCH_BULK_REPS` (5),
//! `IDAGENT_BENCH_REQUESTS` (2000),
//! `IDAGENT_BENCH_CONN_SECS` (3), `IDAGENT_BENCH_CONNS` (1000), `IDAGENT_BENCH_POLICY_REPS` (3
//! pairs of runs without/with the policy), `IDAGENT_BENCH_SEED_REPS` (3 pairs of runs with an
//! empty and a 10,000-file seed), `IDAGENT_BENCH_MODE=seed` to run only those pairs, and
//! `IDAGENT_BENCH_MODE=bulk` to run only the bulk
//! downloads (no latency, connection, policy or held-connection cases) or
//! `IDAGENT_BENCH_MODE=policy` to run only the idagent HTTPS keep-alive pairs without/with the
//! policy, `IDAGENT_BENCH_MODE=h2` to run only the HTTP/2 and gRPC rows (they take
//! `IDAGENT_BENCH_REQUESTS` and `IDAGENT_BENCH_CONN_SECS` too).

#[path = "interceptor/client.rs"]
mod client;
#[path = "interceptor/h2.rs"]
mod h2;
#[path = "interceptor/http2.rs"]
mod http2;
#[path = "interceptor/policy.rs"]
mod policy;
#[path = "interceptor/report.rs"]
mod report;
#[path = "interceptor/seeding.rs"]
mod seeding;
#[path = "interceptor/server.rs"]
mod server;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use report::{CaseResult, PolicyRuns, Rss};
use serde_json::Value;

type BoxError = Box<dyn std::error::Error>;

const IDAGENT: &str = env!("CARGO_BIN_EXE_idagent");
const GUEST_IMAGE: &str = "idagent-guest:latest";
/// The docker default bridge's gateway address: case (b) only.
const BRIDGE_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
/// The client's name inside the workspace and the bridge container.
const CLIENT_FILE: &str = "bench-client";
/// The port the guest dials for the raw TCP bulk server (mapped to the host listener).
const RAW_PORT: u16 = 7000;
/// Longest any one case may run before it is stopped.
const CASE_DEADLINE: Duration = Duration::from_secs(600);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        std::process::exit(client::main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("serve") {
        // For profiling by hand: the same servers on loopback until killed.
        if let Err(e) = serve_forever() {
            eprintln!("interceptor bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run() {
        eprintln!("interceptor bench: {e}");
        std::process::exit(1);
    }
}

fn serve_forever() -> Result<(), BoxError> {
    let tls = server::tls_setup()?.config;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let s = server::start(Ipv4Addr::LOCALHOST.into(), tls).await?;
        println!(
            "http {} https {} h2 {} tcp {}",
            s.http, s.https, s.h2, s.tcp
        );
        std::future::pending::<()>().await;
        Ok(())
    })
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `suite` (everything), `bulk` (the bulk downloads only), `policy` (the idagent HTTPS
/// keep-alive runs without/with the policy only), `seed` (the seeding pairs only) or `h2`
/// (the HTTP/2 and gRPC rows only), from `IDAGENT_BENCH_MODE`.
fn mode() -> &'static str {
    match std::env::var("IDAGENT_BENCH_MODE").as_deref() {
        Ok("bulk") => "bulk",
        Ok("policy") => "policy",
        Ok("seed") => "seed",
        Ok("h2") => "h2",
        _ => "suite",
    }
}

/// The client options every case shares.
fn client_opts() -> Vec<String> {
    let bulk = env_num("IDAGENT_BENCH_BULK_MIB", 256) << 20;
    [
        ("--name", server::NAME.to_owned()),
        ("--bulk-bytes", bulk.to_string()),
        (
            "--bulk-reps",
            env_num("IDAGENT_BENCH_BULK_REPS", 5).to_string(),
        ),
        (
            "--requests",
            env_num("IDAGENT_BENCH_REQUESTS", 2000).to_string(),
        ),
        (
            "--conn-secs",
            env_num("IDAGENT_BENCH_CONN_SECS", 3).to_string(),
        ),
        ("--conns", env_num("IDAGENT_BENCH_CONNS", 1000).to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_owned(), v])
    .collect()
}

fn run() -> Result<(), BoxError> {
    let image = Command::new("docker")
        .args(["image", "inspect", GUEST_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !image.success() {
        return Err(format!("{GUEST_IMAGE} is missing: run `idagent image build` first").into());
    }
    let tmp = tempfile::tempdir()?;
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws)?;
    std::fs::copy(std::env::current_exe()?, ws.join(CLIENT_FILE))?;
    let bench_tls = server::tls_setup()?;
    let tls = bench_tls.config.clone();
    let ca_path = ws.join("ca.pem");
    std::fs::write(&ca_path, &bench_tls.ca_pem)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let local = rt.block_on(server::start(Ipv4Addr::LOCALHOST.into(), tls.clone()))?;
    let client = ws.join(CLIENT_FILE);
    let opts = client_opts();

    let guest = GuestCase {
        tmp: tmp.path(),
        ws: &ws,
        ca: &ca_path,
        http_port: local.http.port(),
        https_port: local.https.port(),
        tcp_port: local.tcp.port(),
        opts: &opts,
    };
    if mode() == "seed" {
        eprintln!("== (c) idagent guest, set-up with an empty and a 10,000-file seed");
        let seeding = seeding::measure(tmp.path(), env_num("IDAGENT_BENCH_SEED_REPS", 3))?;
        return write_section(&seeding.render(), "bench-interceptor-seed.md", false);
    }
    if mode() == "policy" {
        eprintln!("== (c) idagent guest, HTTPS keep-alive without/with the 1,000-rule policy");
        let c_full = CaseResult {
            policy: Some(guest.policy_pairs()?),
            ..CaseResult::default()
        };
        drop(local);
        let cases = [("(c) idagent, full pcap", c_full)];
        return write_report(&cases, &Rss::default(), None, "bench-interceptor-policy.md");
    }
    if mode() == "h2" {
        let rows = http2::measure(&guest, &bench_tls, local.h2);
        drop(local);
        return write_section(&rows.render(), "bench-interceptor-h2.md", false);
    }

    eprintln!("== (a) host loopback");
    let mut cmd = Command::new(&client);
    cmd.arg("client").arg(mode()).args(&opts);
    cmd.args([
        "--http",
        &local.http.to_string(),
        "--https",
        &local.https.to_string(),
        "--tcp",
        &local.tcp.to_string(),
    ]);
    cmd.arg("--ca").arg(&ca_path);
    let a = CaseResult::from_events(&drive(cmd, None, |_, _| {})?.events);

    eprintln!("== (b) plain container on the default bridge");
    let b = {
        let bridge = rt.block_on(server::start(IpAddr::V4(BRIDGE_GATEWAY), tls))?;
        let name = format!("idagent-bench-{}", std::process::id());
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "--name", &name, "--network", "bridge"]);
        cmd.args(["--user", "65534:65534", "-v"]);
        cmd.arg(format!("{}:/bench:ro", ws.display()));
        cmd.args([
            GUEST_IMAGE,
            &format!("/bench/{CLIENT_FILE}"),
            "client",
            mode(),
        ]);
        cmd.args(&opts);
        cmd.args([
            "--http",
            &bridge.http.to_string(),
            "--https",
            &bridge.https.to_string(),
            "--tcp",
            &bridge.tcp.to_string(),
        ]);
        cmd.args(["--ca", "/bench/ca.pem"]);
        let out = drive(cmd, Some(name), |_, _| {})?;
        drop(bridge); // the bridge-gateway listeners live for this case only
        CaseResult::from_events(&out.events)
    };

    eprintln!("== (c) idagent guest, full pcap");
    let mut c_full = guest.suite("c-full", 0)?;
    eprintln!("== (c) idagent guest, pcap snaplen 96");
    let c_snap = guest.suite("c-snap96", 96)?;
    if mode() == "suite" {
        eprintln!("== (c) idagent guest, HTTPS keep-alive without/with the 1,000-rule policy");
        c_full.policy = Some(guest.policy_pairs()?);
    }
    eprintln!("== (c) idagent guest, held connections");
    let rss = if mode() == "suite" {
        guest.hold()?
    } else {
        Rss::default()
    };
    let h2_rows = (mode() == "suite").then(|| http2::measure(&guest, &bench_tls, local.h2));
    drop(local);
    let seeding = if mode() == "suite" {
        eprintln!("== (c) idagent guest, set-up with an empty and a 10,000-file seed");
        Some(seeding::measure(
            tmp.path(),
            env_num("IDAGENT_BENCH_SEED_REPS", 3),
        )?)
    } else {
        None
    };

    let cases = [
        ("(a) host loopback", a),
        ("(b) docker bridge", b),
        ("(c) idagent, full pcap", c_full),
        ("(c) idagent, snaplen 96", c_snap),
    ];
    let disk = disk_write_gbps(tmp.path()).ok();
    write_report(&cases, &rss, disk, "bench-interceptor.md")?;
    if let Some(rows) = h2_rows {
        write_section(&rows.render(), "bench-interceptor.md", true)?;
    }
    match seeding {
        Some(s) => write_section(&s.render(), "bench-interceptor.md", true),
        None => Ok(()),
    }
}

/// Prints `text` and writes it to `target/FILE`, after what is there when `append`.
fn write_section(text: &str, file: &str, append: bool) -> Result<(), BoxError> {
    use std::io::Write;
    println!("\n{text}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let md = target.join(file);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&md)?;
    write!(f, "\n{text}")?;
    eprintln!("wrote {}", md.display());
    Ok(())
}

/// Prints the report and writes it to `target/FILE`.
fn write_report(
    cases: &[(&str, CaseResult)],
    rss: &Rss,
    disk: Option<f64>,
    file: &str,
) -> Result<(), BoxError> {
    let text = report::render(cases, rss, disk);
    println!("\n{text}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let md = target.join(file);
    std::fs::write(&md, text)?;
    eprintln!("wrote {}", md.display());
    Ok(())
}

/// Sustained write speed (Gbit/s) of the filesystem the run folders are on: 1 GiB written and
/// synced. A full pcap of a long bulk transfer cannot outrun it once the page cache's dirty
/// allowance is used up, since the capture waits for the disk rather than drop packets.
fn disk_write_gbps(dir: &Path) -> std::io::Result<f64> {
    use std::io::Write;
    let path = dir.join("disk-probe");
    let block = vec![0x5au8; 1 << 20];
    let _ = Command::new("sync").status();
    let t0 = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for _ in 0..1024 {
        f.write_all(&block)?;
    }
    f.sync_all()?;
    let secs = t0.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(8.0 * 1024.0 * 1024.0 * 1024.0 / secs / 1e9)
}

/// What one client process printed, and idagent's memory seen while it ran.
struct Outcome {
    events: Vec<Value>,
    /// Largest VmHWM (KiB) read from the process while it ran (idagent runs only).
    hwm_kib: Option<u64>,
}

/// Runs `cmd` (stdout piped, stderr passed through), feeds each `BENCH` event to `on_event`
/// with the process id, and stops it after [`CASE_DEADLINE`]. A non-zero exit is an error.
fn drive(
    mut cmd: Command,
    container: Option<String>,
    mut on_event: impl FnMut(&Value, u32),
) -> Result<Outcome, BoxError> {
    cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    let mut guard = Guard {
        child: cmd.spawn()?,
        container,
    };
    let pid = guard.child.id();
    let stdout = guard.child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + CASE_DEADLINE;
    let mut out = Outcome {
        events: Vec::new(),
        hwm_kib: None,
    };
    loop {
        if Instant::now() > deadline {
            return Err(format!("case did not finish within {CASE_DEADLINE:?}").into());
        }
        if let Some(hwm) = proc_status_kib(pid, "VmHWM:") {
            out.hwm_kib = out.hwm_kib.max(Some(hwm));
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => match line.find("BENCH ") {
                Some(at) => {
                    let event: Value = serde_json::from_str(&line[at + 6..])?;
                    eprintln!("   {event}");
                    on_event(&event, pid);
                    out.events.push(event);
                }
                None => eprintln!("   | {line}"),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = guard.child.wait()?;
    if !status.success() {
        return Err(format!("client process exited with {status}").into());
    }
    Ok(out)
}

/// A numeric field of the run's `run_end` event (the last line of `audit.jsonl`).
fn run_end_field(run_dir: &Path, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(run_dir.join("audit.jsonl")).ok()?;
    let last: Value = serde_json::from_str(text.lines().last()?).ok()?;
    (last["kind"] == "run_end").then(|| last[field].as_u64())?
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Stops a still-running child (SIGTERM, so idagent tears its guest down, then SIGKILL after
/// 30 s) and removes its container, whatever path left the case.
struct Guard {
    child: Child,
    container: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(name) = &self.container {
            let _ = Command::new("docker")
                .args(["rm", "-f", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The guest shell's first lines: `$ip` is the address the guest resolves for `bench.test`.
fn resolve() -> String {
    format!(
        "ip=$(getent ahostsv4 {name} | head -n1 | cut -d' ' -f1)\n\
         [ -n \"$ip\" ] || {{ echo 'no address for {name}' >&2; exit 3; }}\n",
        name = server::NAME
    )
}

/// The idagent runs of case (c).
struct GuestCase<'a> {
    tmp: &'a Path,
    ws: &'a Path,
    ca: &'a Path,
    http_port: u16,
    https_port: u16,
    tcp_port: u16,
    opts: &'a [String],
}

impl GuestCase<'_> {
    /// `idagent run --offline …` with `bench.test` mapped to the host servers, running the
    /// client in MODE against the address the guest resolves for `bench.test`; with
    /// `--policy POLICY --mode enforce` when a policy is given.
    fn command(&self, run_dir: &Path, snaplen: u32, mode: &str, policy: Option<&Path>) -> Command {
        let script = format!(
            "{}exec /tmp/workspace/{CLIENT_FILE} client {mode} \"$@\" \
             --http \"$ip:80\" --https \"$ip:443\" --tcp \"$ip:{RAW_PORT}\" --ca \"$SSL_CERT_FILE\"",
            resolve()
        );
        self.command_with(run_dir, snaplen, policy, &[], &script, self.opts)
    }

    /// `idagent run` as in [`Self::command`] with `extra` flags after the common ones, running
    /// `sh -c SCRIPT bench-client ARGS…` in the guest.
    fn command_with(
        &self,
        run_dir: &Path,
        snaplen: u32,
        policy: Option<&Path>,
        extra: &[String],
        script: &str,
        args: &[String],
    ) -> Command {
        let mut cmd = Command::new(IDAGENT);
        cmd.arg("run").arg("--run-dir").arg(run_dir);
        if let Some(policy) = policy {
            cmd.arg("--policy").arg(policy).args(["--mode", "enforce"]);
        }
        cmd.args([
            "--offline",
            "--timeout",
            "9m",
            "--snaplen",
            &snaplen.to_string(),
        ]);
        cmd.arg("--upstream-map")
            .arg(format!("{}:80=127.0.0.1:{}", server::NAME, self.http_port));
        cmd.arg("--upstream-map").arg(format!(
            "{}:443=127.0.0.1:{}",
            server::NAME,
            self.https_port
        ));
        cmd.arg("--upstream-map").arg(format!(
            "{}:{RAW_PORT}=127.0.0.1:{}",
            server::NAME,
            self.tcp_port
        ));
        cmd.arg("--upstream-ca").arg(self.ca);
        cmd.arg("--workspace").arg(self.ws);
        cmd.args(extra);
        cmd.args(["--image", GUEST_IMAGE, "--", "sh", "-c", script]);
        cmd.arg("bench-client").args(args);
        cmd
    }

    fn suite(&self, label: &str, snaplen: u32) -> Result<CaseResult, BoxError> {
        let run_dir = self.tmp.join(label);
        let out = drive(
            self.command(&run_dir, snaplen, mode(), None),
            None,
            |_, _| {},
        )?;
        let mut result = CaseResult::from_events(&out.events);
        result.idagent_hwm_kib = out.hwm_kib;
        result.pcap_bytes = std::fs::metadata(run_dir.join("traffic.pcapng"))
            .ok()
            .map(|m| m.len());
        result.pcap_dropped = run_end_field(&run_dir, "pcap_packets_dropped");
        // The capture of a bulk run is large: free the disk before the next case, and flush
        // what is dirty so the next case does not share the CPU with the writeback.
        let _ = std::fs::remove_dir_all(&run_dir);
        let _ = Command::new("sync").status();
        Ok(result)
    }

    /// The HTTPS keep-alive measurement alone (full pcap), `IDAGENT_BENCH_POLICY_REPS` times
    /// without and then with the generated 1,000-rule policy in enforce mode, interleaved so
    /// both sides see the same machine load. Fails if a policy run denied anything on the
    /// network, refused anything, or decided fewer `http` requests than it sent.
    fn policy_pairs(&self) -> Result<PolicyRuns, BoxError> {
        let policy = policy::write(self.tmp, server::NAME, client::SMALL_PATH)?;
        let mut runs = PolicyRuns::default();
        for rep in 0..env_num("IDAGENT_BENCH_POLICY_REPS", 3).max(1) {
            for with_policy in [false, true] {
                let label = format!(
                    "c-https-{}-{rep}",
                    ["bare", "policy"][usize::from(with_policy)]
                );
                let run_dir = self.tmp.join(&label);
                let cmd = self.command(&run_dir, 0, "https", with_policy.then_some(&*policy));
                let out =
                    drive(cmd, None, |_, _| {}).map_err(|e| match policy::decisions(&run_dir) {
                        Ok(d) if with_policy => format!(
                            "{label}: {e} ({} network denials, {} refusals in its audit log)",
                            d.net_denied, d.enforced
                        ),
                        _ => format!("{label}: {e}"),
                    })?;
                let lat = CaseResult::from_events(&out.events)
                    .lat_https
                    .ok_or_else(|| format!("{label}: no lat_https result"))?;
                let sent = out
                    .events
                    .iter()
                    .find(|e| e["metric"] == "lat_https")
                    .and_then(|e| e["n"].as_u64())
                    .unwrap_or(0)
                    + client::WARMUP_REQUESTS as u64;
                let d = policy::decisions(&run_dir)?;
                let _ = std::fs::remove_dir_all(&run_dir);
                if !with_policy {
                    if d.total != 0 {
                        return Err(format!(
                            "{label}: {} decision events without a policy",
                            d.total
                        )
                        .into());
                    }
                    runs.bare.push(lat);
                    continue;
                }
                eprintln!(
                    "   {label}: {} decisions, {} http allowed of {sent} sent, {} network denied, \
                     {} enforced, {} exec/file would-deny (report mode)",
                    d.total, d.http_allowed, d.net_denied, d.enforced, d.report_denied
                );
                if d.net_denied != 0 || d.enforced != 0 || d.http_allowed < sent {
                    return Err(format!(
                        "{label}: the policy did not allow every request: {} network denials, \
                         {} refusals, {} http allowed of {sent} sent",
                        d.net_denied, d.enforced, d.http_allowed
                    )
                    .into());
                }
                runs.with_policy.push(lat);
                runs.requests += sent;
                runs.decisions += d.total;
                runs.http_allowed += d.http_allowed;
                runs.report_denied += d.report_denied;
            }
        }
        Ok(runs)
    }

    fn hold(&self) -> Result<Rss, BoxError> {
        let run_dir = self.tmp.join("c-hold");
        let mut rss = Rss::default();
        let out = drive(
            self.command(&run_dir, 0, "hold", None),
            None,
            |event, pid| {
                match event["metric"].as_str() {
                    Some("hold_start") => rss.idle_kib = proc_status_kib(pid, "VmRSS:"),
                    Some("hold_ready") => {
                        rss.conns = event["conns"].as_u64();
                        // Let the last flows settle, then read current and peak.
                        std::thread::sleep(Duration::from_millis(1500));
                        rss.held_kib = proc_status_kib(pid, "VmRSS:");
                        rss.hwm_kib = proc_status_kib(pid, "VmHWM:");
                    }
                    Some("hold_end") => rss.alive = event["alive"].as_u64(),
                    _ => {}
                }
            },
        )?;
        rss.hwm_kib = rss.hwm_kib.max(out.hwm_kib);
        let _ = std::fs::remove_dir_all(&run_dir);
        Ok(rss)
    }
}

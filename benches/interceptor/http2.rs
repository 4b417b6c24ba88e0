//! The HTTP/2 and gRPC rows of the interceptor bench, each measured directly on host loopback
//! and through an idagent guest (full pcap) in the same run:
//! - HTTP/2 keep-alive p50/p99 and 8 concurrent streams on one connection (small requests/s
//!   and bulk Gbit/s): the bench's own client in `h2` mode (`interceptor/h2.rs`, hyper over
//!   rustls, ALPN `h2` only) against the host's ALPN-`h2` listener (`interceptor/server.rs`);
//! - gRPC unary calls/s: Debian's python3-grpcio on both ends (`interceptor/grpc_bench.py`), the
//!   server on host loopback with the bench CA's leaf.
//!
//! A row that cannot be measured (the gateway cannot carry gRPC yet, say) is printed as
//! `FAILED: reason` and the bench goes on. There is no floor in the issue for these rows, so
//! the section shows the ratio to direct only. `--http2` is passed to `idagent run` only when
//! its `--help` lists it, so the same bench measures the gateway before and after HTTP/2
//! became its default.
//!
//! Owns: the gRPC server process (stopped when dropped), the four runs, the section's text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::{drive, env_num, resolve, server, GuestCase, CLIENT_FILE, IDAGENT};

/// The port the guest dials for the host's ALPN-`h2` listener.
const H2_PORT: u16 = 8443;
/// The port the guest dials for the gRPC server.
const GRPC_PORT: u16 = 50051;
const GRPC_SCRIPT: &str = include_str!("grpc_bench.py");
const GRPC_FILE: &str = "grpc_bench.py";
/// Debian's Python, whose dist-packages hold python3-grpcio (host and guest image alike).
const PYTHON: &str = "/usr/bin/python3";
/// Body length of one request of the 8-stream bulk loop.
const BULK_BYTES: u64 = 4 << 20;

/// One side's rows: a value, or why it could not be measured.
#[derive(Debug, Clone)]
pub struct Side {
    /// (p50, p99) µs.
    lat: Result<(f64, f64), String>,
    streams_rps: Result<f64, String>,
    bulk_gbps: Result<f64, String>,
    grpc_cps: Result<f64, String>,
    /// `http` records of the idagent runs by (guest leg, upstream leg) HTTP version.
    versions: BTreeMap<(String, String), u64>,
    /// `http` records with gRPC facts, and how many of them carried `grpc-status` 0.
    grpc_records: (u64, u64),
}

impl Default for Side {
    fn default() -> Self {
        let not_run = || "not run".to_owned();
        Self {
            lat: Err(not_run()),
            streams_rps: Err(not_run()),
            bulk_gbps: Err(not_run()),
            grpc_cps: Err(not_run()),
            versions: BTreeMap::new(),
            grpc_records: (0, 0),
        }
    }
}

impl Side {
    /// Folds the `h2` client's events (or the error that ended its process) into the rows.
    fn h2_from(&mut self, out: Result<Vec<Value>, String>) {
        let events = match out {
            Ok(events) => events,
            Err(e) => {
                (self.lat, self.streams_rps, self.bulk_gbps) =
                    (Err(e.clone()), Err(e.clone()), Err(e));
                return;
            }
        };
        let error = events
            .iter()
            .find(|e| e["metric"] == "h2_error")
            .map(|e| e["error"].as_str().unwrap_or("?").to_owned())
            .unwrap_or_else(|| "no result".to_owned());
        let find = |metric: &str| events.iter().find(|e| e["metric"] == metric);
        let f = |e: &Value, k: &str| e[k].as_f64().unwrap_or(0.0);
        self.lat = find("lat_h2")
            .map(|e| (f(e, "p50_us"), f(e, "p99_us")))
            .ok_or_else(|| error.clone());
        self.streams_rps = find("h2_streams")
            .map(|e| f(e, "ok") / f(e, "secs").max(1e-9))
            .ok_or_else(|| error.clone());
        self.bulk_gbps = find("h2_bulk")
            .map(|e| f(e, "bytes") * 8.0 / f(e, "secs").max(1e-9) / 1e9)
            .ok_or(error);
    }

    fn grpc_from(&mut self, out: Result<Vec<Value>, String>) {
        self.grpc_cps = out.and_then(|events| {
            let e = events
                .iter()
                .find(|e| e["metric"] == "grpc_unary")
                .ok_or("no result")?;
            if let Some(err) = e["error"].as_str() {
                return Err(err.to_owned());
            }
            let (ok, secs) = (e["ok"].as_f64(), e["secs"].as_f64());
            match (ok, secs) {
                (Some(ok), Some(secs)) if ok > 0.0 && secs > 0.0 => Ok(ok / secs),
                _ => Err(format!("no calls completed: {e}")),
            }
        });
    }

    /// Counts the `http` records of a finished idagent run.
    fn audit_from(&mut self, run_dir: &Path) {
        let Ok(text) = std::fs::read_to_string(run_dir.join("audit.jsonl")) else {
            return;
        };
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if e["kind"] != "http" {
                continue;
            }
            let v = |k: &str| e[k].as_str().unwrap_or("–").to_owned();
            *self
                .versions
                .entry((v("version"), v("upstream_version")))
                .or_default() += 1;
            if e["grpc"].is_object() {
                self.grpc_records.0 += 1;
                self.grpc_records.1 += u64::from(e["grpc"]["status"].as_u64() == Some(0));
            }
        }
    }
}

/// Both sides, and whether `--http2` was passed.
#[derive(Debug, Default)]
pub struct Rows {
    direct: Side,
    idagent: Side,
    http2_flag: bool,
    requests: usize,
    secs: f64,
}

/// The gRPC server on host loopback; stopped (stdin closed, then killed) when dropped.
struct GrpcServer {
    child: Child,
    port: u16,
}

impl GrpcServer {
    /// Writes the script into the workspace (the guest runs it too) and the leaf into `tmp`,
    /// then waits up to 30 s for the server's `PORT n` line.
    fn start(tmp: &Path, ws: &Path, tls: &server::BenchTls) -> Result<Self, String> {
        let err = |e: std::io::Error| e.to_string();
        std::fs::write(ws.join(GRPC_FILE), GRPC_SCRIPT).map_err(err)?;
        let (cert, key) = (tmp.join("grpc-leaf.pem"), tmp.join("grpc-leaf.key"));
        std::fs::write(&cert, &tls.leaf_pem).map_err(err)?;
        std::fs::write(&key, &tls.key_pem).map_err(err)?;
        let mut child = Command::new(PYTHON)
            .arg(ws.join(GRPC_FILE))
            .arg("serve")
            .args([&cert, &key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{PYTHON}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Self { child, port: 0 };
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        match line.trim().strip_prefix("PORT ").map(str::parse::<u16>) {
            Some(Ok(port)) if port != 0 => {
                // Its log (none unless it fails) goes to the bench's stderr.
                std::thread::spawn(move || {
                    for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                        eprintln!("   grpc server | {l}");
                    }
                });
                server.port = port;
                Ok(server)
            }
            _ => {
                let _ = server.child.kill();
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
                let last = text.lines().last().unwrap_or("no PORT line").to_owned();
                Err(format!("the gRPC server did not start: {last}"))
            }
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when `idagent run --help` lists `--http2` (HTTP/2 towards the guest is opt-in there).
fn http2_flag() -> bool {
    let Ok(out) = Command::new(IDAGENT).args(["run", "--help"]).output() else {
        return false;
    };
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        l.trim_start()
            .strip_prefix("--http2")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
    })
}

/// The events of a finished client process, or why it failed.
fn events(cmd: Command) -> Result<Vec<Value>, String> {
    drive(cmd, None, |_, _| {})
        .map(|o| o.events)
        .map_err(|e| e.to_string())
}

/// Runs the four measurements: direct, then through idagent, for HTTP/2 and then gRPC.
/// `h2_addr` is the host's ALPN-`h2` listener on loopback.
pub fn measure(
    guest: &GuestCase<'_>,
    tls: &server::BenchTls,
    h2_addr: std::net::SocketAddr,
) -> Rows {
    let requests = env_num("IDAGENT_BENCH_REQUESTS", 2000) as usize;
    let secs = env_num("IDAGENT_BENCH_CONN_SECS", 3) as f64;
    let mut rows = Rows {
        http2_flag: http2_flag(),
        requests,
        secs,
        ..Rows::default()
    };
    let client_args: Vec<String> = [
        ("--name", server::NAME.to_owned()),
        ("--requests", requests.to_string()),
        ("--conn-secs", secs.to_string()),
        ("--h2-bulk-bytes", BULK_BYTES.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_owned(), v])
    .collect();
    let mut extra: Vec<String> = Vec::new();
    if rows.http2_flag {
        extra.push("--http2".into());
    }

    eprintln!("== HTTP/2: (a) host loopback, direct");
    let mut cmd = Command::new(guest.ws.join(CLIENT_FILE));
    cmd.args(["client", "h2"]).args(&client_args);
    cmd.arg("--h2").arg(h2_addr.to_string());
    cmd.arg("--ca").arg(guest.ca);
    rows.direct.h2_from(events(cmd));

    eprintln!("== HTTP/2: (c) idagent guest, full pcap");
    let run_dir = guest.tmp.join("c-h2");
    let mut flags = extra.clone();
    flags.push("--upstream-map".into());
    flags.push(format!(
        "{}:{H2_PORT}=127.0.0.1:{}",
        server::NAME,
        h2_addr.port()
    ));
    let script = format!(
        "{}exec /tmp/workspace/{CLIENT_FILE} client h2 \"$@\" --h2 \"$ip:{H2_PORT}\" \
         --ca \"$SSL_CERT_FILE\"",
        resolve()
    );
    let cmd = guest.command_with(&run_dir, 0, None, &flags, &script, &client_args);
    rows.idagent.h2_from(events(cmd));
    rows.idagent.audit_from(&run_dir);
    let _ = std::fs::remove_dir_all(&run_dir);

    match GrpcServer::start(guest.tmp, guest.ws, tls) {
        Err(e) => {
            rows.direct.grpc_cps = Err(e.clone());
            rows.idagent.grpc_cps = Err(e);
        }
        Ok(grpc) => {
            eprintln!("== gRPC: (a) host loopback, direct");
            let mut cmd = Command::new(PYTHON);
            cmd.arg(guest.ws.join(GRPC_FILE)).arg("client");
            cmd.arg(format!("127.0.0.1:{}", grpc.port));
            cmd.arg(server::NAME).arg(guest.ca).arg(secs.to_string());
            rows.direct.grpc_from(events(cmd));

            eprintln!("== gRPC: (c) idagent guest, full pcap");
            let run_dir = guest.tmp.join("c-grpc");
            let mut flags = extra;
            flags.push("--upstream-map".into());
            flags.push(format!(
                "{}:{GRPC_PORT}=127.0.0.1:{}",
                server::NAME,
                grpc.port
            ));
            let script = format!(
                "{}exec {PYTHON} /tmp/workspace/{GRPC_FILE} client \"$ip:{GRPC_PORT}\" {} \
                 \"$SSL_CERT_FILE\" {secs}",
                resolve(),
                server::NAME
            );
            let cmd = guest.command_with(&run_dir, 0, None, &flags, &script, &[]);
            rows.idagent.grpc_from(events(cmd));
            rows.idagent.audit_from(&run_dir);
            let _ = std::fs::remove_dir_all(&run_dir);
        }
    }
    rows
}

type Metric = fn(&Side) -> Result<f64, String>;

const ROWS: [(&str, Metric); 5] = [
    ("HTTP/2 keep-alive p50, µs (one connection)", |s| {
        s.lat.clone().map(|l| l.0)
    }),
    ("HTTP/2 keep-alive p99, µs", |s| s.lat.clone().map(|l| l.1)),
    (
        "HTTP/2 8 streams on one connection, GET /small, requests/s",
        |s| s.streams_rps.clone(),
    ),
    ("HTTP/2 8 streams, 4 MiB bodies, Gbit/s", |s| {
        s.bulk_gbps.clone()
    }),
    (
        "gRPC unary calls/s (one channel, sequential, 64-byte echo)",
        |s| s.grpc_cps.clone(),
    ),
];

/// A cell: the value with its ratio to direct, or `FAILED: reason` (`|` kept out of the table).
fn cell(v: &Result<f64, String>, base: &Result<f64, String>) -> String {
    match (v, base) {
        (Ok(v), Ok(b)) if *b > 0.0 => format!("{v:.2} ({:.2}×)", v / b),
        (Ok(v), _) => format!("{v:.2}"),
        (Err(e), _) => format!("FAILED: {}", e.replace('|', "/").replace('\n', " ")),
    }
}

impl Rows {
    /// The section as markdown.
    pub fn render(&self) -> String {
        let mut t = String::from("## HTTP/2 and gRPC\n\n");
        let _ = writeln!(
            t,
            "Direct = the same client on host loopback; idagent = the client in a guest, full \
             pcap, `bench.test:{H2_PORT}`/`:{GRPC_PORT}` mapped to the host servers{}. \
             HTTP/2: the bench's hyper client, ALPN `h2` only, {} sequential requests after a \
             warm-up, then 8 concurrent streams for {} s each. gRPC: python3-grpcio on both \
             ends. No floor in the issue: ratios to direct only.\n",
            if self.http2_flag {
                "; `idagent run --http2`, since this idagent's `--help` lists it (HTTP/2 is \
                 opt-in there)"
            } else {
                "; no flag: this idagent's `--help` lists no `--http2`, HTTP/2 is its default"
            },
            self.requests,
            self.secs,
        );
        let _ = writeln!(
            t,
            "| measurement | (a) host loopback, direct | (c) idagent, full pcap |\n|---|---|---|"
        );
        for (label, metric) in ROWS {
            let base = metric(&self.direct);
            let _ = writeln!(
                t,
                "| {label} | {} | {} |",
                cell(&base, &base),
                cell(&metric(&self.idagent), &base)
            );
        }
        let legs: Vec<String> = self
            .idagent
            .versions
            .iter()
            .map(|((guest, up), n)| format!("{n} guest {guest} → upstream {up}"))
            .collect();
        let _ = writeln!(
            t,
            "\n`http` records of the idagent runs: {}; with gRPC facts: {} ({} with \
             `grpc-status` 0).",
            if legs.is_empty() {
                "none".to_owned()
            } else {
                legs.join(", ")
            },
            self.idagent.grpc_records.0,
            self.idagent.grpc_records.1,
        );
        t
    }
}

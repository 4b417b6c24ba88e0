//! Shared helpers for the end-to-end tests: they drive the real `idagent` binary against the
//! real Docker engine and kernel, then read what a user would read (audit log, files, exit
//! code) and check that nothing was left behind.
#![allow(dead_code)] // each test binary uses a different subset

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

pub const IDAGENT: &str = env!("CARGO_BIN_EXE_idagent");
pub const GUEST_IMAGE: &str = "idagent-guest:latest";

static IMAGE: Once = Once::new();

/// Builds the guest image once per test binary if it is missing.
pub fn ensure_image() {
    IMAGE.call_once(|| {
        let present = Command::new("docker")
            .args(["image", "inspect", GUEST_IMAGE])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            let st = Command::new(IDAGENT)
                .args(["image", "build", "--context", env!("CARGO_MANIFEST_DIR")])
                .status()
                .expect("start idagent image build");
            assert!(st.success(), "idagent image build failed");
        }
    });
}

/// `idagent ARGS...` from the source checkout (victim folders resolve), to its end.
pub fn idagent(args: &[&str]) -> Output {
    Command::new(IDAGENT)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("start idagent")
}

/// A command's exit code, stdout and stderr, for an assertion message.
pub fn output_text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A finished run: its folder, output and parsed audit log.
pub struct Run {
    pub dir: tempfile::TempDir,
    pub out: Output,
    pub events: Vec<Value>,
}

impl Run {
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| e["kind"] == kind)
    }
    pub fn run_id(&self) -> String {
        self.events
            .first()
            .and_then(|e| e["run"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
    /// The `RESULT {json}` line a guest script printed.
    pub fn result(&self) -> Value {
        let line = self
            .stdout()
            .lines()
            .find_map(|l| l.strip_prefix("RESULT ").map(str::to_owned))
            .unwrap_or_else(|| panic!("no RESULT\n{}", self.explain()));
        serde_json::from_str(&line).expect("RESULT is json")
    }
    /// Everything a reviewer needs when an assertion fails.
    pub fn explain(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- audit\n{}",
            self.code(),
            self.stdout(),
            self.stderr(),
            self.events
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

/// Runs `idagent run ARGS` with a fresh run folder, then checks the audit log's invariants and
/// that the run left nothing behind.
pub fn idagent_run(args: &[&str]) -> Run {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    let out = Command::new(IDAGENT)
        .arg("run")
        .arg("--run-dir")
        .arg(&run_dir)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("start idagent");
    let events = read_audit(&run_dir.join("audit.jsonl"));
    let run = Run { dir, out, events };
    check_audit_invariants(&run);
    assert_no_leftovers(&run.run_id());
    run
}

/// `idagent run --offline [EXTRA] --image GUEST_IMAGE -- python3 -c SCRIPT`.
pub fn offline_python(extra: &[&str], script: &str) -> Run {
    let mut args = vec!["--offline"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--image", GUEST_IMAGE, "--", "python3", "-c", script]);
    idagent_run(&args)
}

pub fn read_audit(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// `seq` contiguous from 1; `v`, `ts`, `run`, `kind` on every record; `run_start` first and
/// `run_end` last.
pub fn check_audit_invariants(run: &Run) {
    assert!(!run.events.is_empty(), "empty audit log\n{}", run.explain());
    for (i, e) in run.events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64(),
            Some(i as u64 + 1),
            "seq hole at line {}\n{}",
            i + 1,
            run.explain()
        );
        assert_eq!(e["v"], 1);
        assert!(
            e["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
            "ts not UTC RFC 3339: {e}"
        );
        assert!(e["kind"].is_string() && e["run"].is_string());
    }
    assert_eq!(run.events[0]["kind"], "run_start", "{}", run.explain());
    assert_eq!(
        run.events.last().map(|e| e["kind"].clone()),
        Some("run_end".into()),
        "{}",
        run.explain()
    );
}

/// No container, control folder, TUN or process of this run remains.
pub fn assert_no_leftovers(run_id: &str) {
    assert!(!run_id.is_empty());
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=idagent.run={run_id}"),
        ])
        .output()
        .expect("docker ps");
    if !out.stdout.is_empty() {
        let listing = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label=idagent.run={run_id}"),
            ])
            .args(["--format", "{{.ID}} {{.Names}} {{.Status}} {{.Labels}}"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("container of run {run_id} left behind: {listing}");
    }
    assert!(
        !Path::new("/run/idagent").join(run_id).exists(),
        "control folder of run {run_id} left behind"
    );
    let links = Command::new("ip")
        .args(["-o", "link", "show", "type", "tun"])
        .output()
        .expect("ip link");
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("tun0"),
        "a tun0 device appeared in the host namespace"
    );
    let ps = Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps");
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&format!("idagent-{run_id}")),
        "a process of run {run_id} is still alive"
    );
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Debian's Chromium, if installed.
pub fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium (killed after 60 s) on `page` with `args`; returns stdout.
pub fn run_chromium(page: &Path, args: &[&str]) -> String {
    let browser = chromium().expect("chromium present");
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("timeout")
        .args(["--kill-after=5", "60"])
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("start chromium under timeout(1)");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tshark -r PCAP -Y FILTER -T fields -e F...`, one line per packet, fields space-separated.
pub fn tshark(pcap: &std::path::Path, fields: &[&str], filter: &str) -> Vec<String> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(["-Y", filter, "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.replace('\t', " "))
        .collect()
}

/// A test CA and one leaf for the test's names, as PEM files in `dir`.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Upstream servers of the test's own (TLS on loopback) present the leaf; idagent trusts the
/// CA through `--upstream-ca`.
pub fn pki(dir: &Path, names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "idagent e2e test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let out = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("leaf.pem"),
        key: dir.join("leaf-key.pem"),
    };
    std::fs::write(&out.ca, ca.pem()).expect("write ca");
    std::fs::write(&out.cert, leaf.pem()).expect("write leaf");
    std::fs::write(&out.key, leaf_key.serialize_pem()).expect("write key");
    out
}

/// A rustls server config presenting `pki`'s leaf, offering `alpn`.
pub fn tls_server_config(pki: &Pki, alpn: &[&[u8]]) -> rustls::ServerConfig {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &std::fs::read(&pki.cert).expect("cert")[..])
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = rustls_pemfile::private_key(&mut &std::fs::read(&pki.key).expect("key")[..])
        .expect("key")
        .expect("a key");
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Runs `idagent run ARGS` like `idagent_run`, sampling the idagent process's resident memory
/// (VmRSS, KiB) every `every`; returns the run and the largest sample.
pub fn run_sampling_rss(args: &[&str], every: std::time::Duration) -> (Run, u64) {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    let child = std::process::Command::new(IDAGENT)
        .arg("run")
        .arg("--run-dir")
        .arg(&run_dir)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start idagent");
    let status = format!("/proc/{}/status", child.id());
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut max = 0u64;
        while done_rx.recv_timeout(every).is_err() {
            let rss = std::fs::read_to_string(&status)
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:").map(str::to_owned))
                })
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            max = max.max(rss.unwrap_or(0));
        }
        max
    });
    let out = child.wait_with_output().expect("wait for idagent");
    let _ = done_tx.send(());
    let max_rss = sampler.join().expect("sampler");
    let events = read_audit(&run_dir.join("audit.jsonl"));
    let run = Run { dir, out, events };
    check_audit_invariants(&run);
    assert_no_leftovers(&run.run_id());
    (run, max_rss)
}

/// WebSocket test servers: reads one frame (server side: client frames are masked, but masking is not required);
/// `None` at EOF.
pub fn ws_read_frame(s: &mut impl std::io::Read) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut key = [0u8; 4];
    if h[1] & 0x80 != 0 {
        s.read_exact(&mut key).ok()?;
    }
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    s.read_exact(&mut payload).ok()?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    Some((h[0], payload))
}

/// WebSocket test servers: writes a frame unmasked (server → client), with the FIN bit and
/// opcode given.
pub fn ws_write_frame(s: &mut impl std::io::Write, b0: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut out = vec![b0];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    s.write_all(&out)?;
    s.flush()
}

//! The seeding rows of the interceptor bench: how much a 10,000-file workspace seed (small
//! files in 500 directories and a few larger ones, the shape of an SDK with its
//! dependencies) adds to `idagent run`'s set-up, against an empty seed, in pairs interleaved
//! so both sides see the same machine load.
//!
//! Set-up is measured from just before `idagent run` is spawned to the guest command's first
//! instruction: the guest prints `date +%s%N`, and the container shares the host's clock.
//! Owns: the seed it writes, the run folders (removed after each run) and the section's text.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{BoxError, GUEST_IMAGE, IDAGENT};

const DIRS: usize = 500;
const FILES: usize = 10_000;
const LARGE_FILES: usize = 5;
const LARGE_BYTES: usize = 4 << 20;

/// The medians of the runs of each side.
pub struct Seeding {
    reps: u64,
    seed_bytes: u64,
    empty: Side,
    seeded: Side,
}

#[derive(Default)]
struct Side {
    /// Spawn to the guest command's first instruction, ms, one per run.
    setup_ms: Vec<f64>,
    /// Spawn to idagent's exit (with the final scan and the export of the workspace), ms.
    total_ms: Vec<f64>,
}

/// Runs `reps` pairs of `idagent run` (empty seed, then the 10,000-file seed) under `tmp`.
pub fn measure(tmp: &Path, reps: u64) -> Result<Seeding, BoxError> {
    let empty = tmp.join("seed-empty");
    let big = tmp.join("seed-10k");
    std::fs::create_dir_all(&empty)?;
    let seed_bytes = write_seed(&big)?;
    let mut s = Seeding {
        reps: reps.max(1),
        seed_bytes,
        empty: Side::default(),
        seeded: Side::default(),
    };
    for rep in 0..s.reps {
        for (label, seed) in [("empty", &empty), ("10k", &big)] {
            let run_dir = tmp.join(format!("c-seed-{label}-{rep}"));
            let (setup, total) = run_once(&run_dir, seed)?;
            let _ = std::fs::remove_dir_all(&run_dir);
            eprintln!("   seed {label} #{rep}: set-up {setup:.0} ms, whole run {total:.0} ms");
            let side = if label == "empty" {
                &mut s.empty
            } else {
                &mut s.seeded
            };
            side.setup_ms.push(setup);
            side.total_ms.push(total);
        }
    }
    let _ = std::fs::remove_dir_all(&big);
    Ok(s)
}

/// Writes the seed; returns its bytes.
fn write_seed(root: &Path) -> Result<u64, BoxError> {
    let mut bytes = 0u64;
    let dir_of = |d: usize| root.join(format!("node_modules/pkg{:02}/mod{d:03}", d / 25));
    for d in 0..DIRS {
        std::fs::create_dir_all(dir_of(d))?;
    }
    for i in 0..FILES - LARGE_FILES {
        let len = 1 + (i * 7919) % 8192;
        let data: Vec<u8> = (0..len).map(|k| (k ^ i) as u8).collect();
        std::fs::write(dir_of(i % DIRS).join(format!("f{i:05}.js")), &data)?;
        bytes += len as u64;
    }
    std::fs::create_dir_all(root.join("lib"))?;
    for i in 0..LARGE_FILES {
        let data: Vec<u8> = (0..LARGE_BYTES)
            .map(|k| (k % 251) as u8 ^ i as u8)
            .collect();
        std::fs::write(root.join(format!("lib/big{i}.bin")), &data)?;
        bytes += LARGE_BYTES as u64;
    }
    Ok(bytes)
}

/// One `idagent run --workspace SEED -- sh -c 'date +%s%N'`: (set-up, whole run) in ms.
fn run_once(run_dir: &Path, seed: &Path) -> Result<(f64, f64), BoxError> {
    let mut cmd = Command::new(IDAGENT);
    cmd.arg("run")
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--offline");
    cmd.arg("--workspace").arg(seed);
    cmd.args(["--image", GUEST_IMAGE, "--", "sh", "-c", "date +%s%N"]);
    cmd.stdin(Stdio::null()).stderr(Stdio::inherit());
    let wall = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let t0 = Instant::now();
    let out = cmd.output()?;
    let total = t0.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        return Err(format!("seeding run exited with {}", out.status).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let guest_ns: u128 = text
        .trim()
        .parse()
        .map_err(|e| format!("guest printed {text:?}, not a time: {e}"))?;
    let setup = guest_ns.saturating_sub(wall.as_nanos()) as f64 / 1e6;
    Ok((setup, total))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

impl Seeding {
    pub fn render(&self) -> String {
        let mut t = String::from("## Seeding the workspace\n\n");
        let _ = writeln!(
            t,
            "`idagent run --offline --workspace SEED -- sh -c 'date +%s%N'`, {} interleaved pairs; \
             set-up is from spawning idagent to the guest command's first instruction. The seed: \
             {FILES} files in {DIRS} directories ({LARGE_FILES} of {} MiB), {:.1} MiB.\n",
            self.reps,
            LARGE_BYTES >> 20,
            self.seed_bytes as f64 / f64::from(1u32 << 20)
        );
        let _ = writeln!(
            t,
            "| measurement | empty seed | 10,000-file seed | added by the seed |\n|---|---|---|---|"
        );
        for (label, pick) in [
            (
                "set-up to the guest command, ms (median)",
                (|s| &s.setup_ms) as fn(&Side) -> &Vec<f64>,
            ),
            ("whole run incl. final scan and export, ms (median)", |s| {
                &s.total_ms
            }),
        ] {
            let (a, b) = (median(pick(&self.empty)), median(pick(&self.seeded)));
            let _ = writeln!(t, "| {label} | {a:.0} | {b:.0} | {:.0} |", b - a);
        }
        let added = median(&self.seeded.setup_ms) - median(&self.empty.setup_ms);
        let verdict = if added < 1000.0 { "PASS" } else { "BELOW" };
        let _ = writeln!(
            t,
            "\n{verdict}: a 10,000-file seed adds {added:.0} ms to set-up (floor: under 1,000 ms)."
        );
        t
    }
}

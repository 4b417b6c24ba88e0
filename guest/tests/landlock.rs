//! `landlock::apply` against the running kernel. Landlock is per process and irreversible, so
//! the test re-runs this test binary as a child (`IDAGENT_LANDLOCK_CHILD_DIR` set, one test
//! selected), which applies a plan and checks what the kernel then allows; the parent asserts
//! on the child's exit code and shows its report.
//!
//! Also runs unchanged inside a container (the binary is static): copy it with `/bin/true`,
//! `/bin/sh`, the loader and libc into a `docker import`ed image and run it with
//! `--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges`.

use idagent_guest::landlock::{self, Plan, PlanPath, Right, Rights, WriteRule};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Command;

const CHILD_ENV: &str = "IDAGENT_LANDLOCK_CHILD_DIR";
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

#[test]
fn apply_enforces_writes_and_execs() {
    let Some(abi) = landlock::abi_version() else {
        eprintln!("SKIPPED: Landlock is not available in this kernel");
        return;
    };
    assert!(abi >= landlock::MIN_ABI, "landlock ABI {abi}");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for sub in ["allowed", "regonly", "outside"] {
        std::fs::create_dir(d.join(sub)).expect("mkdir");
    }
    std::fs::write(d.join("outside/existing.txt"), "old").expect("write");
    std::fs::write(d.join("outside/granted.txt"), "old").expect("write");
    std::os::unix::fs::symlink("/bin/true", d.join("true-alias")).expect("symlink");

    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args([
            "child_applies_plan_and_checks",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, d)
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed: {:?}", out.status);
    assert!(stdout.contains("landlock checks passed"), "{stdout}");
    // The domain was the child's only: this process can still write anywhere it could.
    std::fs::write(d.join("outside/existing.txt"), "parent").expect("parent unrestricted");
}

/// The child half; a no-op unless started by the test above.
#[test]
fn child_applies_plan_and_checks() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let failures = checks(Path::new(&dir));
    if failures == 0 {
        println!("landlock checks passed");
    }
    std::process::exit(i32::from(failures > 0));
}

fn path(p: impl AsRef<Path>) -> PlanPath {
    PlanPath::new(p.as_ref()).expect("absolute")
}

fn rights(list: &[Right]) -> Rights {
    list.iter().copied().collect()
}

/// Applies the plan, runs every check, prints one line each; the number of failures.
fn checks(d: &Path) -> u32 {
    let write = |p: &Path, r: &[Right]| WriteRule {
        path: path(p),
        rights: rights(r),
    };
    let plan = Plan {
        handle_files: true,
        handle_exec: true,
        writes: vec![
            write(
                &d.join("allowed"),
                &[Right::MakeReg, Right::WriteFile, Right::Truncate],
            ),
            write(&d.join("regonly"), &[Right::MakeReg]),
            write(
                &d.join("outside/granted.txt"),
                &[Right::WriteFile, Right::MakeDir],
            ),
            write(&d.join("allowed/not/yet"), &[Right::MakeDir]),
        ],
        execs: vec![path(d.join("true-alias")), path("/nonexistent/prog")],
    };
    // Through the file format, as init gets it.
    let plan = Plan::parse(&plan.render()).expect("round trip");
    let applied = match landlock::apply(&plan) {
        Ok(a) => a,
        Err(e) => {
            println!("FAIL apply: {e}");
            return 1;
        }
    };
    println!("applied: {applied:?}");
    let mut failures = 0;
    let mut check = |name: &str, ok: bool, detail: String| {
        println!("{} {name}: {detail}", if ok { "ok  " } else { "FAIL" });
        failures += u32::from(!ok);
    };
    let denied = |r: &std::io::Result<()>| r.as_ref().err().and_then(|e| e.raw_os_error());
    let eacces = Some(libc::EACCES);

    check(
        "restricted",
        applied.restricted,
        format!("abi {}", applied.abi),
    );
    let granted: Vec<_> = applied
        .writes
        .iter()
        .map(|w| (&w.granted_at, w.rights))
        .collect();
    check(
        "file rule keeps only file rights",
        granted.contains(&(&d.join("outside/granted.txt"), rights(&[Right::WriteFile]))),
        format!("{granted:?}"),
    );
    check(
        "missing path granted at nearest ancestor",
        granted.contains(&(&d.join("allowed"), rights(&[Right::MakeDir]))),
        format!("{granted:?}"),
    );
    check(
        "missing exec skipped",
        applied.missing_execs == [Path::new("/nonexistent/prog")],
        format!("{:?}", applied.missing_execs),
    );
    if Path::new(LOADER).exists() {
        check(
            "loader granted",
            !applied.loaders.is_empty(),
            format!("{:?}", applied.loaders),
        );
    }

    let r = std::fs::write(d.join("allowed/new.txt"), "x");
    check("create file in allowed dir", r.is_ok(), format!("{r:?}"));
    let r = std::fs::create_dir(d.join("regonly/sub"));
    check(
        "mkdir where only make_reg",
        denied(&r) == eacces,
        format!("{r:?}"),
    );
    let r = OpenOptions::new()
        .write(true)
        .open(d.join("outside/existing.txt"))
        .map(drop);
    check(
        "write existing file outside rules",
        denied(&r) == eacces,
        format!("{r:?}"),
    );
    let r = std::fs::remove_file(d.join("outside/existing.txt"));
    check(
        "remove file outside rules",
        denied(&r) == eacces,
        format!("{r:?}"),
    );
    let r = std::fs::read_to_string(d.join("outside/existing.txt")).map(drop);
    check("read stays free", r.is_ok(), format!("{r:?}"));
    let r = OpenOptions::new()
        .write(true)
        .open(d.join("outside/granted.txt"))
        .and_then(|mut f| f.write_all(b"new"));
    check(
        "write file granted by a file rule",
        r.is_ok(),
        format!("{r:?}"),
    );
    let r = std::fs::write(d.join("outside/granted.txt"), "new");
    check(
        "O_TRUNC without truncate",
        denied(&r) == eacces,
        format!("{r:?}"),
    );
    let r = OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .and_then(|mut f| f.write_all(b"x"));
    check("/dev/null writable", r.is_ok(), format!("{r:?}"));
    // Our stdout is the parent's pipe: pipes are outside every file hierarchy, so reopening
    // one through /proc/self/fd needs no rule.
    let r = OpenOptions::new()
        .write(true)
        .open("/proc/self/fd/1")
        .and_then(|mut f| f.write_all(b"(via /proc/self/fd/1)\n"));
    check("reopen stdout pipe", r.is_ok(), format!("{r:?}"));
    let r = OpenOptions::new()
        .write(true)
        .open("/proc/self/comm")
        .map(drop);
    check(
        "procfs write needs a rule",
        denied(&r) == eacces,
        format!("{r:?}"),
    );

    let r = Command::new("/bin/true").status();
    let ok = r.as_ref().is_ok_and(|s| s.success());
    check(
        "exec /bin/true (listed via a symlink)",
        ok,
        format!("{r:?}"),
    );
    let sh_is_true = same_file("/bin/sh", "/bin/true");
    let r = Command::new("/bin/sh").args(["-c", "exit 0"]).status();
    let errno = r.as_ref().err().and_then(|e| e.raw_os_error());
    check(
        "exec /bin/sh (not listed)",
        sh_is_true || errno == eacces,
        format!("{r:?}"),
    );
    if Path::new(LOADER).exists() {
        // The documented hole: the loader is executable, so it can run an unlisted program.
        let r = Command::new(LOADER)
            .args(["/bin/sh", "-c", "exit 7"])
            .status();
        let ran = r.as_ref().is_ok_and(|s| s.code() == Some(7));
        check("ld.so /bin/sh runs (known limit)", ran, format!("{r:?}"));
    }
    failures
}

fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

//! Kernel enforcement of the guest's file writes and execs with Landlock.
//!
//! Owns: the [`Plan`] (typed rules and their text file, in `landlock/plan.rs`) and [`apply`], which turns
//! a plan into a Landlock ruleset and restricts the calling process. Guest init calls `apply`
//! in its forked child, after restoring the signal mask and just before it execs the command,
//! so the command and every descendant run inside the domain; PID 1 itself stays unrestricted
//! (it execs nothing else). Does not own: choosing the rules (the host writes the plan), nor
//! observing attempts (the seccomp supervisor).
//!
//! # Plan file
//!
//! UTF-8 text, one directive per line; blank lines and `#` comments (to the end of the line)
//! are ignored. The first directive must be the header `idagent-landlock 1`. Then, in any
//! order:
//!
//! ```text
//! idagent-landlock 1
//! handle-files            # write-class rights are handled: default-deny for writes
//! handle-exec             # execute is handled: default-deny for execs
//! write /tmp/workspace make_reg,make_dir,write_file,truncate,remove_file,remove_dir,refer
//! write /dev/shm make_reg,write_file,truncate,remove_file
//! exec /usr/bin/python3.11
//! ```
//!
//! - `handle-files`, `handle-exec`: at most once each, no argument.
//! - `write PATH RIGHTS`: `RIGHTS` is a comma-separated, non-empty list without repeats of
//!   `write_file, truncate, make_reg, make_dir, make_sym, make_fifo, make_sock, make_char,
//!   make_block, remove_file, remove_dir, refer`. Needs `handle-files`.
//! - `exec PATH`: needs `handle-exec`.
//! - `PATH` is absolute, without `.` or `..` components; any byte may be written `%XX`
//!   (hex), and every byte outside printable ASCII, `%` and `#` must be ([`Plan::render`]
//!   does). So whitespace, newlines and non-UTF-8 names survive the trip.
//!
//! Anything else is a [`PlanError`] naming the line.
//!
//! # What `apply` builds
//!
//! - Handled rights: with `handle-files`, exactly the twelve rights above (never `IOCTL_DEV`,
//!   so terminals keep their ioctls; never `READ_FILE`/`READ_DIR`: reading stays free); with
//!   `handle-exec`, `EXECUTE`. A plan with neither restricts nothing ([`Applied::restricted`]
//!   is false).
//! - Always, with `handle-files`: `write_file, truncate` beneath `/dev` (`/dev/null`,
//!   `/dev/tty`, `/dev/pts/*`). That does not let anything be created in `/dev/shm`: that
//!   takes a `write /dev/shm ...` line in the plan.
//! - `write PATH RIGHTS`: PATH is opened `O_PATH` (following symlinks). A directory gets
//!   RIGHTS on its whole subtree; a non-directory only the file rights among RIGHTS
//!   (`write_file`, `truncate`). A PATH that does not exist is granted at its nearest existing
//!   ancestor, i.e. on that ancestor's whole subtree: Landlock rules attach to existing inodes
//!   and are inherited downwards, that is the kernel's granularity ([`GrantedWrite`] tells
//!   where each grant landed).
//! - `exec PATH`: `EXECUTE` on that file (following symlinks, so an alias grants its real
//!   inode; a directory is an error, it would grant a subtree). Missing paths are skipped and
//!   listed in [`Applied::missing_execs`]. With `handle-exec`, `EXECUTE` is also granted on
//!   every dynamic loader present (`/lib*/ld-*.so*`, `/usr/lib/*/ld-linux*`): the kernel opens a
//!   dynamic executable's ELF interpreter with exec intent and Landlock checks it.
//! - **The exec of the command itself is checked**: guest init's child is inside the domain
//!   when it calls execvp, so the host must list the command (as init resolves it through
//!   `PATH`) in an `exec` line, and likewise every program of an exec chain: a `#!` script
//!   and its interpreter, `env` in `#!/usr/bin/env python3`, and so on.
//! - Every step uses [`CompatLevel::HardRequirement`]: a kernel lacking a needed right
//!   (Landlock ABI below [`MIN_ABI`]) fails, it never silently enforces less; `restrict_self`
//!   must report [`RulesetStatus::FullyEnforced`].
//!
//! # Guarantees and limits
//!
//! Enforced by the kernel, for the process and all its descendants, irreversibly: creating,
//! removing, renaming and linking entries, per directory subtree; opening an existing file for
//! writing and truncating it (`O_TRUNC`, `truncate(2)`), per file or subtree; executing, per
//! file. Denials are `EACCES` (`EXDEV` for some cross-directory renames and links under
//! `refer`). This covers every mounted file system, `/proc` and `/sys` included (writing
//! `/proc/self/*` needs a rule); pipes and sockets are outside every hierarchy, so reopening
//! one through `/proc/self/fd/N` or `/dev/stdout` needs none.
//!
//! Not enforced:
//! - a name-level rule inside a directory where creating is allowed (Landlock has no "only
//!   `*.py` in `/tmp/workspace`"; a `make_reg` there allows any name);
//! - writes through descriptors opened before `apply` (stdin, stdout, stderr), and `mmap` of
//!   an already open file: mapping a readable file `PROT_EXEC` is not an exec;
//! - **running a program through the dynamic loader**: `/lib64/ld-linux-x86-64.so.2 /bin/sh`
//!   executes only the loader, which then maps `/bin/sh` itself. The loader must be executable
//!   for every dynamic program, so Landlock does NOT close this route; the host closes it
//!   another way (observing execs of the loader with the seccomp supervisor);
//! - metadata changes (`chmod`, `chown`, `utimes`, xattrs) of existing files, reads of any
//!   kind, network access and ioctls.
//!
//! Verified (`tests/landlock.rs`, also run as a static binary inside a Docker 20.10 container
//! with the default seccomp profile, `--read-only --cap-drop ALL --security-opt
//! no-new-privileges`, Linux 6.18, ABI 7): every denial above is `EACCES`, the loader route
//! stays open.

#![allow(unsafe_code)] // OS module: one landlock_create_ruleset(2) call to read the ABI version

mod plan;

pub use plan::{
    PathError, Plan, PlanError, PlanErrorKind, PlanPath, Right, Rights, WriteRule, HEADER,
};

use landlock::{
    make_bitflags, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetError, RulesetStatus,
};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Lowest Landlock ABI `apply` accepts: 3 (Linux 6.2) is the first with `truncate`.
pub const MIN_ABI: u32 = 3;
/// Loaders granted `EXECUTE` by name, before the directory scan.
const KNOWN_LOADERS: [&str; 2] = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"];

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The running kernel's Landlock ABI.
    pub abi: u32,
    /// Whether the process is now in a Landlock domain (false for a plan that handles nothing).
    pub restricted: bool,
    /// Write grants, the implicit `/dev` one first.
    pub writes: Vec<GrantedWrite>,
    /// `exec` paths granted.
    pub execs: Vec<PathBuf>,
    /// `exec` paths that did not exist, skipped.
    pub missing_execs: Vec<PathBuf>,
    /// Dynamic loaders granted `EXECUTE`.
    pub loaders: Vec<PathBuf>,
}

/// One write grant: where it was asked for, where it landed, what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedWrite {
    pub requested: PathBuf,
    /// `requested`, or its nearest existing ancestor.
    pub granted_at: PathBuf,
    /// The rights granted; only file rights on a non-directory, and empty when none of the
    /// requested rights applies there (then no rule was added).
    pub rights: Rights,
}

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock is not available in this kernel")]
    Unavailable,
    #[error("landlock ABI {abi} is too old (need {MIN_ABI} or later)")]
    AbiTooOld { abi: u32 },
    #[error("plan has `{directive}` rules without `{needs}`")]
    NotHandled {
        directive: &'static str,
        needs: &'static str,
    },
    #[error("build ruleset: {0}")]
    Ruleset(#[source] RulesetError),
    #[error("open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("exec rule {} names a directory", path.display())]
    ExecDirectory { path: PathBuf },
    #[error("add rule for {}: {source}", path.display())]
    AddRule { path: PathBuf, source: RulesetError },
    #[error("restrict self: {0}")]
    Restrict(#[source] RulesetError),
    #[error("ruleset not fully enforced: {0}")]
    NotEnforced(String),
}

/// The running kernel's Landlock ABI version; `None` when Landlock is not built in or not
/// enabled at boot (the host checks this, and [`MIN_ABI`], before starting a container).
pub fn abi_version() -> Option<u32> {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) reads no memory
    // and creates no fd: it only returns the ABI version or -1 with errno.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    u32::try_from(v).ok().filter(|v| *v > 0)
}

/// Builds the plan's ruleset and restricts the calling process with it (irreversibly; see the
/// module docs). Call it in the process that is about to exec the sandboxed command.
pub fn apply(plan: &Plan) -> Result<Applied, LandlockError> {
    let abi = abi_version().ok_or(LandlockError::Unavailable)?;
    if abi < MIN_ABI {
        return Err(LandlockError::AbiTooOld { abi });
    }
    if !plan.handle_files && !plan.writes.is_empty() {
        return Err(LandlockError::NotHandled {
            directive: "write",
            needs: "handle-files",
        });
    }
    if !plan.handle_exec && !plan.execs.is_empty() {
        return Err(LandlockError::NotHandled {
            directive: "exec",
            needs: "handle-exec",
        });
    }
    let mut applied = Applied {
        abi,
        restricted: false,
        writes: Vec::new(),
        execs: Vec::new(),
        missing_execs: Vec::new(),
        loaders: Vec::new(),
    };
    let mut handled = BitFlags::<AccessFs>::EMPTY;
    if plan.handle_files {
        handled |= access(Rights::ALL);
    }
    if plan.handle_exec {
        handled |= AccessFs::Execute;
    }
    if handled.is_empty() {
        return Ok(applied);
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(handled)
        .and_then(Ruleset::create)
        .map_err(LandlockError::Ruleset)?;
    if plan.handle_files {
        if Path::new("/dev").exists() {
            ruleset = grant_write(ruleset, Path::new("/dev"), Rights::FILE, &mut applied)?;
        }
        for rule in &plan.writes {
            ruleset = grant_write(ruleset, rule.path.as_path(), rule.rights, &mut applied)?;
        }
    }
    if plan.handle_exec {
        ruleset = grant_execs(ruleset, plan, &mut applied)?;
    }
    let status = ruleset.restrict_self().map_err(LandlockError::Restrict)?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(LandlockError::NotEnforced(format!("{:?}", status.ruleset)));
    }
    applied.restricted = true;
    Ok(applied)
}

fn access(rights: Rights) -> BitFlags<AccessFs> {
    rights
        .iter()
        .map(|r| match r {
            Right::WriteFile => AccessFs::WriteFile,
            Right::Truncate => AccessFs::Truncate,
            Right::MakeReg => AccessFs::MakeReg,
            Right::MakeDir => AccessFs::MakeDir,
            Right::MakeSym => AccessFs::MakeSym,
            Right::MakeFifo => AccessFs::MakeFifo,
            Right::MakeSock => AccessFs::MakeSock,
            Right::MakeChar => AccessFs::MakeChar,
            Right::MakeBlock => AccessFs::MakeBlock,
            Right::RemoveFile => AccessFs::RemoveFile,
            Right::RemoveDir => AccessFs::RemoveDir,
            Right::Refer => AccessFs::Refer,
        })
        .fold(BitFlags::EMPTY, |acc, a| acc | a)
}

/// Opens `path` with `O_PATH`, following symlinks. `Ok(None)` when it does not exist.
fn open_path(path: &Path) -> Result<Option<File>, LandlockError> {
    match File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(source) => Err(LandlockError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn is_dir(file: &File, path: &Path) -> Result<bool, LandlockError> {
    file.metadata()
        .map(|m| m.is_dir())
        .map_err(|source| LandlockError::Open {
            path: path.to_path_buf(),
            source,
        })
}

fn add_rule(
    ruleset: RulesetCreated,
    file: File,
    access: BitFlags<AccessFs>,
    path: &Path,
) -> Result<RulesetCreated, LandlockError> {
    ruleset
        .add_rule(PathBeneath::new(file, access))
        .map_err(|source| LandlockError::AddRule {
            path: path.to_path_buf(),
            source,
        })
}

/// Grants `rights` at `requested`, or at its nearest existing ancestor.
fn grant_write(
    ruleset: RulesetCreated,
    requested: &Path,
    rights: Rights,
    applied: &mut Applied,
) -> Result<RulesetCreated, LandlockError> {
    let mut at = requested;
    let file = loop {
        if let Some(file) = open_path(at)? {
            break file;
        }
        match at.parent() {
            Some(parent) => at = parent,
            // Only reached if even `/` cannot be found; nothing to grant then.
            None => return Ok(ruleset),
        }
    };
    let rights = if is_dir(&file, at)? {
        rights
    } else {
        rights.intersection(Rights::FILE)
    };
    applied.writes.push(GrantedWrite {
        requested: requested.to_path_buf(),
        granted_at: at.to_path_buf(),
        rights,
    });
    if rights.is_empty() {
        return Ok(ruleset);
    }
    add_rule(ruleset, file, access(rights), at)
}

/// Grants `EXECUTE` on the plan's exec files and on every dynamic loader present.
fn grant_execs(
    mut ruleset: RulesetCreated,
    plan: &Plan,
    applied: &mut Applied,
) -> Result<RulesetCreated, LandlockError> {
    let execute = make_bitflags!(AccessFs::{Execute});
    for path in plan.execs.iter().map(PlanPath::as_path) {
        let Some(file) = open_path(path)? else {
            applied.missing_execs.push(path.to_path_buf());
            continue;
        };
        if is_dir(&file, path)? {
            return Err(LandlockError::ExecDirectory {
                path: path.to_path_buf(),
            });
        }
        ruleset = add_rule(ruleset, file, execute, path)?;
        applied.execs.push(path.to_path_buf());
    }
    let mut seen = Vec::new();
    for path in loader_candidates() {
        // A loader that vanished or cannot be opened just is not granted.
        let Ok(Some(file)) = open_path(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if !meta.is_file() || seen.contains(&(meta.dev(), meta.ino())) {
            continue;
        }
        seen.push((meta.dev(), meta.ino()));
        ruleset = add_rule(ruleset, file, execute, &path)?;
        applied.loaders.push(path);
    }
    Ok(ruleset)
}

/// The known loader paths, then `/lib*/ld-*.so*` and `/usr/lib/*/ld-linux*`.
fn loader_candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = KNOWN_LOADERS.iter().map(PathBuf::from).collect();
    for lib in entries(Path::new("/"), |n| n.starts_with("lib")) {
        out.extend(entries(&lib, |n| n.starts_with("ld-") && n.contains(".so")));
    }
    for dir in entries(Path::new("/usr/lib"), |_| true) {
        out.extend(entries(&dir, |n| n.starts_with("ld-linux")));
    }
    out
}

/// Entries of `dir` whose (UTF-8) name passes `keep`; an unreadable directory has none.
fn entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .map(|e| e.path())
        .collect();
    names.sort();
    names
}

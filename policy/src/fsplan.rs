//! What Landlock must allow in enforce mode ([`FsPlan`]) and the one table mapping file
//! operations to Landlock rights. `eval` uses the same table, so a report-mode decision on a
//! file write is exactly what the kernel would enforce. Owns no I/O: the guest side applies
//! the plan (and grants a dir rule whose path does not exist yet on its nearest existing
//! ancestor, which it documents).

use crate::kinds::{Action, FileKind, FileOp, Mode};
use crate::model::Policy;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A Landlock filesystem right (`LANDLOCK_ACCESS_FS_*`) the plan can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsRight {
    /// `WRITE_FILE`.
    WriteFile,
    /// `TRUNCATE`.
    Truncate,
    /// `MAKE_REG`.
    MakeReg,
    /// `MAKE_DIR`.
    MakeDir,
    /// `REMOVE_FILE`.
    RemoveFile,
    /// `REMOVE_DIR`.
    RemoveDir,
    /// `REFER` (rename or link across directories).
    Refer,
    /// `MAKE_SYM`.
    MakeSym,
}

use FsRight::*;

/// The rights a files rule grants for one allowed operation.
///
/// A dir rule: `create_file` → make_reg + write_file + truncate (a file you create you must be
/// able to write); `create_dir` → make_dir; `remove` → remove_file + remove_dir; `rename` →
/// refer + make_reg + remove_file; `write` → write_file + truncate. A file rule: `write` →
/// write_file + truncate (Landlock grants nothing else on a file). `create_special` grants
/// nothing: the rights for symlinks, device nodes, FIFOs and sockets are never granted (and
/// the parser refuses a rule that lists it).
pub fn granted_rights(kind: FileKind, op: FileOp) -> &'static [FsRight] {
    match (kind, op) {
        (_, FileOp::CreateSpecial) => &[],
        (FileKind::Dir, FileOp::CreateFile) => &[MakeReg, WriteFile, Truncate],
        (FileKind::Dir, FileOp::CreateDir) => &[MakeDir],
        (FileKind::Dir, FileOp::Remove) => &[RemoveFile, RemoveDir],
        (FileKind::Dir, FileOp::Rename) => &[Refer, MakeReg, RemoveFile],
        (_, FileOp::Write) => &[WriteFile, Truncate],
        (FileKind::File, _) => &[],
    }
}

/// The rights one operation needs on its path (`create_special`: make_sym, which no rule
/// grants, so it is always denied).
pub fn required_rights(op: FileOp) -> &'static [FsRight] {
    match op {
        FileOp::CreateSpecial => &[MakeSym],
        FileOp::CreateFile => &[MakeReg],
        FileOp::CreateDir => &[MakeDir],
        FileOp::Write => &[WriteFile],
        FileOp::Remove => &[RemoveFile],
        FileOp::Rename => &[Refer, MakeReg, RemoveFile],
    }
}

/// The rights a rename needs, as `(on from's parent, on to's parent)`, Landlock's rule: a
/// regular file needs remove_file on from's parent and make_reg on to's parent; a directory
/// (`dir`) remove_dir and make_dir; and when the parents differ (`cross_dir`), refer on both.
///
/// Not included: replacing an existing `to` also needs remove_file (remove_dir) on to's
/// parent, whether that entry exists is not known to the policy. A cross-directory rename is
/// further refused (`EXDEV`) when the entry would gain rights at its new place; `evaluate`
/// checks that as well.
pub fn rename_rights(dir: bool, cross_dir: bool) -> (&'static [FsRight], &'static [FsRight]) {
    match (dir, cross_dir) {
        (false, false) => (&[RemoveFile], &[MakeReg]),
        (false, true) => (&[RemoveFile, Refer], &[MakeReg, Refer]),
        (true, false) => (&[RemoveDir], &[MakeDir]),
        (true, true) => (&[RemoveDir, Refer], &[MakeDir, Refer]),
    }
}

/// The rights Landlock compares for a regular file moved to another directory (`ACCESS_FILE`
/// among the rights the plan can grant): it may not have more of them at its new place.
pub(crate) const FILE_RIGHTS: &[FsRight] = &[WriteFile, Truncate];

/// What the guest's Landlock ruleset must allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsPlan {
    /// Mode of the files section (global if absent).
    pub files_mode: Mode,
    /// Mode of the exec section (global if absent).
    pub exec_mode: Mode,
    /// Absolute path → rights beneath it (dir) or on it (file), sorted by path.
    pub write_rules: Vec<(String, Vec<FsRight>)>,
    /// Absolute paths that may be executed: allowed exec rule paths and aliases (relative
    /// aliases such as `python3` are left out: Landlock needs a path), minus denied ones.
    pub exec_paths: Vec<String>,
}

impl Policy {
    /// The Landlock plan of this policy.
    pub fn fs_plan(&self) -> FsPlan {
        let mut write: BTreeMap<String, BTreeSet<FsRight>> = BTreeMap::new();
        for rule in self.files.rules() {
            let rights = write.entry(rule.path.as_str().to_string()).or_default();
            for op in &rule.allow {
                rights.extend(granted_rights(rule.kind, *op).iter().copied());
            }
        }
        let mut allowed = BTreeSet::new();
        let mut denied = BTreeSet::new();
        for rule in self.exec.rules() {
            let set = if rule.action == Action::Deny {
                &mut denied
            } else {
                &mut allowed
            };
            for p in std::iter::once(&rule.path).chain(&rule.aliases) {
                if p.starts_with('/') {
                    set.insert(p.clone());
                }
            }
        }
        FsPlan {
            files_mode: self.section_mode(self.files.mode),
            exec_mode: self.section_mode(self.exec.mode),
            write_rules: write
                .into_iter()
                .filter(|(_, r)| !r.is_empty())
                .map(|(p, r)| (p, r.into_iter().collect()))
                .collect(),
            exec_paths: allowed.difference(&denied).cloned().collect(),
        }
    }
}

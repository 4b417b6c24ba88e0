//! The table of notified syscalls: for each x86_64 syscall number the filter reports, its name,
//! where its path, fd and flag arguments sit, and which audit [`FileOp`] it maps to.
//!
//! Pure data and pure functions; reading the arguments is the caller's job. Must stay in step
//! with `idagent_guest::filter::NOTIFIED_SYSCALLS` (a test checks).

use crate::audit::FileOp;

/// Where one path-like argument of a syscall comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathArg {
    /// A string at `path`, relative to the fd in arg `dirfd` (or to the cwd when `None` or
    /// `AT_FDCWD`); an empty string with a dirfd names the dirfd itself (`AT_EMPTY_PATH`).
    At { dirfd: Option<usize>, path: usize },
    /// The file open on the fd in this argument.
    Fd(usize),
    /// A string taken as is, not a path to resolve (a symlink's contents).
    Raw(usize),
}

/// Which argument, if any, decides the operation or whether it is a write at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flags {
    None,
    /// `open`/`openat` flags in this argument: only write flags make it an event.
    Open(usize),
    /// `openat2`: a pointer to `struct open_how`, whose first u64 is the flags.
    OpenHow(usize),
    /// `unlinkat` flags: `AT_REMOVEDIR` makes it an rmdir.
    Unlink(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Exec {
        target: PathArg,
        argv: usize,
    },
    File {
        op: FileOp,
        flags: Flags,
        target: PathArg,
        /// The second path: the old name of a rename or link, the contents of a symlink.
        from: Option<PathArg>,
        /// Whether `from` is changed too (renames), so it counts for the workspace and mount
        /// decisions.
        from_changes: bool,
    },
    /// `exit_group(code)`: the process is about to end with this code (arg index).
    Exit {
        code: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Spec {
    pub name: &'static str,
    pub call: Call,
}

const CWD_0: PathArg = PathArg::At {
    dirfd: None,
    path: 0,
};
const CWD_1: PathArg = PathArg::At {
    dirfd: None,
    path: 1,
};
const AT_0_1: PathArg = PathArg::At {
    dirfd: Some(0),
    path: 1,
};
const AT_2_3: PathArg = PathArg::At {
    dirfd: Some(2),
    path: 3,
};

const fn file(name: &'static str, op: FileOp, target: PathArg) -> Spec {
    Spec {
        name,
        call: Call::File {
            op,
            flags: Flags::None,
            target,
            from: None,
            from_changes: false,
        },
    }
}

const fn flagged(name: &'static str, op: FileOp, flags: Flags, target: PathArg) -> Spec {
    Spec {
        name,
        call: Call::File {
            op,
            flags,
            target,
            from: None,
            from_changes: false,
        },
    }
}

const fn two(name: &'static str, op: FileOp, from: PathArg, target: PathArg) -> Spec {
    Spec {
        name,
        call: Call::File {
            op,
            flags: Flags::None,
            target,
            from: Some(from),
            from_changes: matches!(op, FileOp::Rename),
        },
    }
}

/// The spec of syscall `nr` (x86_64 numbering), or `None` for a syscall the filter does not
/// report.
pub(super) fn lookup(nr: i64) -> Option<Spec> {
    use FileOp::*;
    let spec = match nr {
        libc::SYS_execve => Spec {
            name: "execve",
            call: Call::Exec {
                target: CWD_0,
                argv: 1,
            },
        },
        libc::SYS_execveat => Spec {
            name: "execveat",
            call: Call::Exec {
                target: AT_0_1,
                argv: 2,
            },
        },
        libc::SYS_exit_group => Spec {
            name: "exit_group",
            call: Call::Exit { code: 0 },
        },
        libc::SYS_open => flagged("open", OpenWrite, Flags::Open(1), CWD_0),
        libc::SYS_openat => flagged("openat", OpenWrite, Flags::Open(2), AT_0_1),
        libc::SYS_openat2 => flagged("openat2", OpenWrite, Flags::OpenHow(2), AT_0_1),
        libc::SYS_creat => file("creat", Creat, CWD_0),
        libc::SYS_mkdir => file("mkdir", Mkdir, CWD_0),
        libc::SYS_mkdirat => file("mkdirat", Mkdir, AT_0_1),
        libc::SYS_rmdir => file("rmdir", Rmdir, CWD_0),
        libc::SYS_unlink => file("unlink", Unlink, CWD_0),
        libc::SYS_unlinkat => flagged("unlinkat", Unlink, Flags::Unlink(2), AT_0_1),
        libc::SYS_rename => two("rename", Rename, CWD_0, CWD_1),
        libc::SYS_renameat => two("renameat", Rename, AT_0_1, AT_2_3),
        libc::SYS_renameat2 => two("renameat2", Rename, AT_0_1, AT_2_3),
        libc::SYS_link => two("link", Link, CWD_0, CWD_1),
        libc::SYS_linkat => two("linkat", Link, AT_0_1, AT_2_3),
        libc::SYS_symlink => two("symlink", Symlink, PathArg::Raw(0), CWD_1),
        libc::SYS_symlinkat => two(
            "symlinkat",
            Symlink,
            PathArg::Raw(0),
            PathArg::At {
                dirfd: Some(1),
                path: 2,
            },
        ),
        libc::SYS_chmod => file("chmod", Chmod, CWD_0),
        libc::SYS_fchmod => file("fchmod", Chmod, PathArg::Fd(0)),
        libc::SYS_fchmodat => file("fchmodat", Chmod, AT_0_1),
        libc::SYS_fchmodat2 => file("fchmodat2", Chmod, AT_0_1),
        libc::SYS_chown => file("chown", Chown, CWD_0),
        libc::SYS_fchown => file("fchown", Chown, PathArg::Fd(0)),
        libc::SYS_lchown => file("lchown", Chown, CWD_0),
        libc::SYS_fchownat => file("fchownat", Chown, AT_0_1),
        libc::SYS_truncate => file("truncate", Truncate, CWD_0),
        libc::SYS_ftruncate => file("ftruncate", Truncate, PathArg::Fd(0)),
        libc::SYS_mknod => file("mknod", Mknod, CWD_0),
        libc::SYS_mknodat => file("mknodat", Mknod, AT_0_1),
        _ => return None,
    };
    Some(spec)
}

/// The operation a file call performs given its flag value (`flags_value` is the argument or,
/// for `openat2`, `open_how.flags`); `None` when it is not a write at all (a read-only open,
/// which only `openat2` can deliver since the filter checks the others).
pub(super) fn file_op(op: FileOp, flags: Flags, flags_value: u64) -> Option<FileOp> {
    match flags {
        Flags::None => Some(op),
        Flags::Open(_) | Flags::OpenHow(_) => {
            (flags_value & u64::from(idagent_guest::filter::WRITE_FLAGS) != 0).then_some(op)
        }
        Flags::Unlink(_) => Some(if flags_value & libc::AT_REMOVEDIR as u64 != 0 {
            FileOp::Rmdir
        } else {
            FileOp::Unlink
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notified_syscall_has_a_spec() {
        for &nr in idagent_guest::filter::NOTIFIED_SYSCALLS {
            assert!(
                lookup(nr).is_some(),
                "syscall {nr} is notified but has no spec"
            );
        }
        for nr in [libc::SYS_open, libc::SYS_openat] {
            assert!(lookup(nr).is_some());
        }
        assert_eq!(lookup(libc::SYS_read), None);
        assert_eq!(lookup(452).map(|s| s.name), Some("fchmodat2"));
        assert_eq!(
            lookup(libc::SYS_exit_group).map(|s| s.call),
            Some(Call::Exit { code: 0 })
        );
    }

    #[test]
    fn op_mapping() {
        let op_of = |nr: i64, value: u64| match lookup(nr).map(|s| s.call) {
            Some(Call::File { op, flags, .. }) => file_op(op, flags, value),
            _ => None,
        };
        let w = libc::O_WRONLY as u64;
        assert_eq!(op_of(libc::SYS_openat, w), Some(FileOp::OpenWrite));
        assert_eq!(op_of(libc::SYS_openat2, libc::O_RDONLY as u64), None);
        assert_eq!(
            op_of(libc::SYS_openat2, (libc::O_CREAT | libc::O_EXCL) as u64),
            Some(FileOp::OpenWrite)
        );
        assert_eq!(op_of(libc::SYS_creat, 0), Some(FileOp::Creat));
        assert_eq!(op_of(libc::SYS_unlinkat, 0), Some(FileOp::Unlink));
        assert_eq!(
            op_of(libc::SYS_unlinkat, libc::AT_REMOVEDIR as u64),
            Some(FileOp::Rmdir)
        );
        assert_eq!(op_of(libc::SYS_mkdirat, 0), Some(FileOp::Mkdir));
        assert_eq!(op_of(libc::SYS_renameat2, 0), Some(FileOp::Rename));
        assert_eq!(op_of(libc::SYS_lchown, 0), Some(FileOp::Chown));
        assert_eq!(op_of(libc::SYS_ftruncate, 0), Some(FileOp::Truncate));
        assert_eq!(op_of(libc::SYS_mknodat, 0), Some(FileOp::Mknod));
        assert_eq!(op_of(libc::SYS_execve, 0), None, "exec is not a file op");
    }

    #[test]
    fn argument_layouts() {
        let rename = lookup(libc::SYS_renameat2).expect("spec");
        match rename.call {
            Call::File {
                target,
                from,
                from_changes,
                ..
            } => {
                assert_eq!(target, AT_2_3);
                assert_eq!(from, Some(AT_0_1));
                assert!(from_changes);
            }
            other => panic!("{other:?}"),
        }
        match lookup(libc::SYS_symlinkat).map(|s| s.call) {
            Some(Call::File {
                target,
                from,
                from_changes,
                ..
            }) => {
                assert_eq!(
                    target,
                    PathArg::At {
                        dirfd: Some(1),
                        path: 2
                    }
                );
                assert_eq!(from, Some(PathArg::Raw(0)));
                assert!(!from_changes);
            }
            other => panic!("{other:?}"),
        }
    }
}

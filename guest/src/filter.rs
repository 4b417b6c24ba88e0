//! The guest's seccomp filter: a hand-written classic BPF program (no libseccomp, so the binary
//! links statically) and the call that installs it with a user-notification listener.
//!
//! Owns: which syscalls the host supervisor hears about. Does not own: what the supervisor does
//! with a notification (it always lets the call continue; the read-only mounts do the refusing),
//! nor passing the listener to the host (`ctl`).
//!
//! The program, in order:
//! 1. `arch != AUDIT_ARCH_X86_64` → `KILL_PROCESS` (a 32-bit `int 0x80` entry would use other
//!    syscall numbers and slip past every rule below).
//! 2. `nr >= 0x4000_0000` (the x32 ABI) → `ERRNO(ENOSYS)`, for the same reason.
//! 3. `io_uring_setup`, `io_uring_enter`, `io_uring_register` → `ERRNO(EPERM)`: io_uring performs
//!    opens and renames without syscalls the filter could see.
//! 4. `USER_NOTIF` for exec (`execve`, `execveat`) and for every path-changing call:
//!    `openat2`, `creat`, `mkdir`, `mkdirat`, `rmdir`, `unlink`, `unlinkat`, `rename`,
//!    `renameat`, `renameat2`, `link`, `linkat`, `symlink`, `symlinkat`, `chmod`, `fchmod`,
//!    `fchmodat`, `fchmodat2`, `chown`, `fchown`, `lchown`, `fchownat`, `truncate`, `ftruncate`,
//!    `mknod`, `mknodat`; and `exit_group`, so process exits (with their code) are seen where
//!    the host's proc connector is missing (the supervisor lets it continue at once unless
//!    told to record exits).
//! 5. `prlimit64` on pid 1 → `ERRNO(EPERM)`: PID 1 is idagent's init (same uid as the app,
//!    which may otherwise lower its limits: a file-descriptor limit of 0 would blind a pod's
//!    agent-side observers). The pid is a register value, not memory: nothing to race. Any
//!    other pid (0 is the caller) is allowed.
//! 6. `open` (flags in arg 1) and `openat` (flags in arg 2): `USER_NOTIF` only when the flags
//!    have one of [`WRITE_FLAGS`]; read-only opens are allowed in the kernel, so reads stay fast.
//!    `openat2` carries its flags in a struct the filter cannot read, hence step 4.
//! 7. Everything else → `ALLOW`.
//!
//! Notifications are only as strong as the listener: once it is closed, notified syscalls fail
//! with `ENOSYS` in the guest (fail closed).

#![allow(unsafe_code)] // OS module: prctl(2) and seccomp(2) to install the filter

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// `AUDIT_ARCH_X86_64` from `<linux/audit.h>` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Syscall numbers at or above this are the x32 ABI.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Open flags that make an open a write attempt worth a notification.
pub const WRITE_FLAGS: u32 =
    (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u32;

/// Syscalls reported to the supervisor unconditionally.
pub const NOTIFIED_SYSCALLS: &[i64] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_openat2,
    libc::SYS_creat,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_fchownat,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_exit_group,
];

/// Syscalls refused with `EPERM` because they would bypass the filter.
pub const DENIED_SYSCALLS: &[i64] = &[
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

// Offsets into `struct seccomp_data` (x86_64, little endian: the low half of an argument
// comes first, and open flags are an `int`, so the low half is all we need).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_low(n: u32) -> u32 {
    16 + 8 * n
}

const LD_ABS_W: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Jump targets of the program; resolved to relative offsets by [`program`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Next,
    PrlimitPid,
    OpenFlags,
    OpenatFlags,
    Notify,
    Eperm,
    Enosys,
    Allow,
    Kill,
}

struct Insn {
    code: u16,
    k: u32,
    jt: Label,
    jf: Label,
    /// Set on the first instruction of a labelled block.
    label: Option<Label>,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        k,
        jt: Label::Next,
        jf: Label::Next,
        label: None,
    }
}

fn jump(code: u16, k: u32, jt: Label, jf: Label) -> Insn {
    Insn {
        code,
        k,
        jt,
        jf,
        label: None,
    }
}

fn labelled(label: Label, insn: Insn) -> Insn {
    Insn {
        label: Some(label),
        ..insn
    }
}

/// The filter program (see the module docs for what it does).
pub fn program() -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(LD_ABS_W, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, Label::Next, Label::Kill),
        stmt(LD_ABS_W, OFF_NR),
        jump(JGE_K, X32_SYSCALL_BIT, Label::Enosys, Label::Next),
    ];
    for &nr in NOTIFIED_SYSCALLS {
        p.push(jump(JEQ_K, nr as u32, Label::Notify, Label::Next));
    }
    for &nr in DENIED_SYSCALLS {
        p.push(jump(JEQ_K, nr as u32, Label::Eperm, Label::Next));
    }
    p.push(jump(
        JEQ_K,
        libc::SYS_prlimit64 as u32,
        Label::PrlimitPid,
        Label::Next,
    ));
    p.push(jump(
        JEQ_K,
        libc::SYS_open as u32,
        Label::OpenFlags,
        Label::Next,
    ));
    p.push(jump(
        JEQ_K,
        libc::SYS_openat as u32,
        Label::OpenatFlags,
        Label::Allow,
    ));
    p.push(labelled(Label::OpenFlags, stmt(LD_ABS_W, off_arg_low(1))));
    p.push(jump(JSET_K, WRITE_FLAGS, Label::Notify, Label::Allow));
    p.push(labelled(Label::OpenatFlags, stmt(LD_ABS_W, off_arg_low(2))));
    p.push(jump(JSET_K, WRITE_FLAGS, Label::Notify, Label::Allow));
    // pid_t is 32 bits: the kernel reads the low half only.
    p.push(labelled(Label::PrlimitPid, stmt(LD_ABS_W, off_arg_low(0))));
    p.push(jump(JEQ_K, 1, Label::Eperm, Label::Allow));
    p.push(labelled(
        Label::Notify,
        stmt(RET_K, libc::SECCOMP_RET_USER_NOTIF),
    ));
    p.push(labelled(
        Label::Eperm,
        stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ));
    p.push(labelled(
        Label::Enosys,
        stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ));
    p.push(labelled(
        Label::Kill,
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
    ));
    // Classic BPF only jumps forward, so every target sits after every jump to it.
    p.push(labelled(Label::Allow, stmt(RET_K, libc::SECCOMP_RET_ALLOW)));

    let position = |label: Label| p.iter().position(|i| i.label == Some(label));
    let offset = |from: usize, to: Label| -> u8 {
        match to {
            Label::Next => 0,
            // Every label is defined above and every jump is forward and short (the program
            // is ~45 instructions), so the fallback cannot trigger; the tests run the program.
            label => {
                let resolved = position(label)
                    .and_then(|at| at.checked_sub(from + 1))
                    .and_then(|d| u8::try_from(d).ok());
                debug_assert!(resolved.is_some(), "unresolvable jump to {label:?}");
                resolved.unwrap_or(0)
            }
        }
    };
    p.iter()
        .enumerate()
        .map(|(at, i)| libc::sock_filter {
            code: i.code,
            jt: offset(at, i.jt),
            jf: offset(at, i.jf),
            k: i.k,
        })
        .collect()
}

/// Sets `PR_SET_NO_NEW_PRIVS` and installs `filter` on the calling thread with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`, returning the listener fd (close-on-exec).
pub fn install_with_listener(filter: &[libc::sock_filter]) -> io::Result<OwnedFd> {
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp filter too long"))?;
    // SAFETY: prctl with integer arguments only; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` valid sock_filter entries that outlive the call; the
    // kernel copies the program and does not keep the pointer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "seccomp returned a bad fd"))?;
    // SAFETY: with NEW_LISTENER, seccomp(2) returns a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;

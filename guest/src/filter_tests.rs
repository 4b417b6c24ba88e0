//! Runs the real filter program through a small classic-BPF interpreter on synthetic
//! `seccomp_data` and checks the verdict for every rule.

use super::*;

/// Executes `prog` the way the kernel's seccomp BPF does for the subset of opcodes the filter
/// uses; any other opcode, an out-of-bounds load or jump, or falling off the end fails the test.
fn run(prog: &[libc::sock_filter], nr: i64, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    for _ in 0..prog.len() {
        let insn = prog.get(pc).expect("pc in bounds");
        let jump = |taken: bool| pc + 1 + usize::from(if taken { insn.jt } else { insn.jf });
        pc = match insn.code {
            LD_ABS_W => {
                let at = insn.k as usize;
                assert!(at.is_multiple_of(4) && at + 4 <= data.len(), "load at {at}");
                acc = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                pc + 1
            }
            JEQ_K => jump(acc == insn.k),
            JGE_K => jump(acc >= insn.k),
            JSET_K => jump(acc & insn.k != 0),
            RET_K => return insn.k,
            other => panic!("unexpected opcode {other:#x} at {pc}"),
        };
    }
    panic!("program did not return");
}

fn verdict(nr: i64, args: [u64; 6]) -> u32 {
    run(&program(), nr, AUDIT_ARCH_X86_64, args)
}

const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

#[test]
fn foreign_arch_is_killed() {
    let i386 = 0x4000_0003; // AUDIT_ARCH_I386
    assert_eq!(
        run(&program(), libc::SYS_read, i386, [0; 6]),
        libc::SECCOMP_RET_KILL_PROCESS
    );
    assert_eq!(
        run(&program(), libc::SYS_execve, 0, [0; 6]),
        libc::SECCOMP_RET_KILL_PROCESS
    );
}

#[test]
fn x32_is_enosys() {
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    assert_eq!(verdict(0x4000_0000 + 59, [0; 6]), enosys);
    assert_eq!(verdict(0x4000_0000 + 2, [0; 6]), enosys);
    assert_eq!(verdict(-1, [0; 6]), enosys, "nr is compared unsigned");
}

#[test]
fn io_uring_is_eperm() {
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    for &nr in DENIED_SYSCALLS {
        assert_eq!(verdict(nr, [0; 6]), eperm, "nr {nr}");
    }
}

#[test]
fn exec_and_path_changing_calls_notify() {
    assert_eq!(NOTIFIED_SYSCALLS.len(), 29);
    for &nr in NOTIFIED_SYSCALLS {
        assert_eq!(verdict(nr, [0; 6]), NOTIFY, "nr {nr}");
    }
    assert_eq!(verdict(452, [0; 6]), NOTIFY, "fchmodat2");
}

#[test]
fn other_calls_are_allowed() {
    for nr in [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_close,
        libc::SYS_stat,
        libc::SYS_mmap,
        libc::SYS_clone,
        libc::SYS_connect,
        libc::SYS_seccomp,
        libc::SYS_getdents64,
        // A thread's own exit: only the process's exit_group is reported.
        libc::SYS_exit,
    ] {
        assert_eq!(verdict(nr, [u64::MAX; 6]), ALLOW, "nr {nr}");
    }
}

#[test]
fn opens_notify_only_with_write_flags() {
    let write_flags = [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_CREAT,
        libc::O_TRUNC,
        libc::O_APPEND,
        libc::O_WRONLY | libc::O_CLOEXEC,
        libc::O_TMPFILE | libc::O_RDWR,
    ];
    let read_flags = [
        libc::O_RDONLY,
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        libc::O_DIRECTORY | libc::O_PATH,
        libc::O_NONBLOCK | libc::O_NOCTTY,
    ];
    for flags in write_flags {
        let f = flags as u32 as u64;
        assert_eq!(
            verdict(libc::SYS_open, [0, f, 0, 0, 0, 0]),
            NOTIFY,
            "open {flags:#o}"
        );
        assert_eq!(
            verdict(libc::SYS_openat, [0, 0, f, 0, 0, 0]),
            NOTIFY,
            "openat {flags:#o}"
        );
    }
    for flags in read_flags {
        let f = flags as u32 as u64;
        assert_eq!(
            verdict(libc::SYS_open, [0, f, 0, 0, 0, 0]),
            ALLOW,
            "open {flags:#o}"
        );
        assert_eq!(
            verdict(libc::SYS_openat, [0, 0, f, 0, 0, 0]),
            ALLOW,
            "openat {flags:#o}"
        );
    }
    // The flags argument is read from the right slot: write flags elsewhere do not count.
    let w = libc::O_WRONLY as u64;
    assert_eq!(verdict(libc::SYS_open, [w, 0, w, w, 0, 0]), ALLOW);
    assert_eq!(verdict(libc::SYS_openat, [w, w, 0, w, 0, 0]), ALLOW);
    // The high half of the argument is ignored (open flags are an int).
    assert_eq!(verdict(libc::SYS_openat, [0, 0, 1 << 40, 0, 0, 0]), ALLOW);
    // openat2 keeps its flags in a struct: always notified.
    assert_eq!(verdict(libc::SYS_openat2, [0; 6]), NOTIFY);
}

#[test]
fn program_is_loadable_shape() {
    let prog = program();
    assert!(prog.len() < 64, "short enough for u8 jump offsets");
    assert_eq!(prog.last().map(|i| i.code), Some(RET_K));
}

#[test]
fn kernel_accepts_program() {
    // On a throwaway thread: the filter stays with that thread and ends with it.
    let listener = std::thread::spawn(|| install_with_listener(&program()))
        .join()
        .expect("filter thread")
        .expect("kernel refused the program");
    let link = std::fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        listener.as_raw_fd()
    }))
    .expect("readlink");
    assert_eq!(link.as_os_str(), "anon_inode:seccomp notify");
}

#[test]
fn prlimit_on_init_is_eperm_and_on_anyone_else_allowed() {
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    assert_eq!(verdict(libc::SYS_prlimit64, [1, 7, 0x1000, 0, 0, 0]), eperm);
    // Only the low 32 bits are the pid.
    assert_eq!(
        verdict(libc::SYS_prlimit64, [1 | (5 << 32), 7, 0, 0, 0, 0]),
        eperm
    );
    for pid in [0u64, 2, 1234, u32::MAX as u64] {
        assert_eq!(
            verdict(libc::SYS_prlimit64, [pid, 7, 0x1000, 0, 0, 0]),
            libc::SECCOMP_RET_ALLOW,
            "pid {pid}"
        );
    }
    // setrlimit changes only the caller.
    assert_eq!(
        verdict(libc::SYS_setrlimit, [7, 0x1000, 0, 0, 0, 0]),
        libc::SECCOMP_RET_ALLOW
    );
}

//! Parsers and path helpers of `procfs`, on text shaped like a Docker guest's `/proc`.

use super::*;

/// `/proc/<pid>/mountinfo` of a container run with `--read-only`, a workspace bind mount and
/// Docker's default masks (trimmed).
const MOUNTINFO: &str = "\
1019 870 0:58 / / ro,relatime master:402 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1020 1019 0:61 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1021 1019 0:62 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1022 1021 0:63 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620
1023 1019 0:64 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1026 1021 0:57 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
1027 1021 0:65 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
1028 1019 253:1 /home/u/work /tmp/workspace rw,relatime - ext4 /dev/vda1 rw
1029 1019 253:1 /home/u/odd\\040dir /mnt/with\\040space rw,relatime - ext4 /dev/vda1 rw
1030 1019 0:66 / /mnt/superro rw,relatime shared:5 - tmpfs t ro
871 1020 0:61 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
garbage line
1031 1019 0:67 / /dev/shm ro,relatime - tmpfs shadow rw
";

#[test]
fn mountinfo_longest_prefix_and_read_only() {
    let mounts = parse_mountinfo(MOUNTINFO);
    assert_eq!(mounts.len(), 12, "the garbage line is skipped");
    let ro = |p: &str| mount_for(&mounts, p).map(|m| (m.point.as_str(), m.read_only));
    assert_eq!(ro("/etc/passwd"), Some(("/", true)));
    assert_eq!(ro("/"), Some(("/", true)));
    assert_eq!(ro("/tmp/workspace/a/b"), Some(("/tmp/workspace", false)));
    assert_eq!(ro("/tmp/workspace"), Some(("/tmp/workspace", false)));
    assert_eq!(ro("/tmp/workspacex"), Some(("/", true)));
    assert_eq!(ro("/dev/null"), Some(("/dev", false)));
    assert_eq!(ro("/dev/pts/0"), Some(("/dev/pts", false)));
    assert_eq!(ro("/proc/sys/kernel/x"), Some(("/proc/sys", true)));
    assert_eq!(ro("/proc/self/attr"), Some(("/proc", false)));
    assert_eq!(ro("/sys/fs/cgroup"), Some(("/sys", true)));
    assert_eq!(ro("/mnt/with space/f"), Some(("/mnt/with space", false)));
    assert_eq!(
        ro("/mnt/superro/f"),
        Some(("/mnt/superro", true)),
        "super options count"
    );
    assert_eq!(
        ro("/dev/shm/x"),
        Some(("/dev/shm", true)),
        "the later of two equal points wins"
    );
    assert_eq!(ro("relative"), None);
}

#[test]
fn mountinfo_never_panics_on_garbage() {
    for text in [
        "",
        "\n\n",
        "1 2 3",
        "1 2 3 4 /x rw -",
        "1 2 3 4 /x rw - t",
        "\\\\\\0",
    ] {
        let _ = parse_mountinfo(text);
    }
    assert_eq!(unescape_octal("a\\040b\\134\\0"), "a b\\\\0");
    assert_eq!(unescape_octal("\\777x"), "?x");
}

#[test]
fn status_fields() {
    let text = "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n\
                Pid:\t4242\nPPid:\t4200\nTracerPid:\t0\nUid:\t65534\t65534\t65534\t65534\n\
                Gid:\t65534\t65534\t65534\t65534\nNSpid:\t4242\t7\n";
    let s = Status::parse(text);
    assert_eq!(s.nspid, vec![4242, 7]);
    assert_eq!(s.guest_pid(), Some(7));
    assert_eq!(s.ppid, Some(4200));
    assert_eq!(s.uid, Some(65534));
    assert_eq!(Status::parse("garbage\n:::\nUid:\tx\n"), Status::default());
}

#[test]
fn parent_pid_in_the_guest_namespace() {
    let child = Status::parse("NSpid:\t4242\t7\n");
    let same_ns = Status::parse("NSpid:\t4200\t1\n");
    let host = Status::parse("NSpid:\t4100\n");
    assert_eq!(guest_ppid(&child, &same_ns), 1);
    assert_eq!(guest_ppid(&child, &host), 0, "PID 1's parent lives outside");
    assert_eq!(guest_ppid(&Status::default(), &host), 0);
}

#[test]
fn path_resolution() {
    assert_eq!(resolve(Some("/home"), "a/b").as_deref(), Some("/home/a/b"));
    assert_eq!(
        resolve(Some("/home/"), "./a//b/").as_deref(),
        Some("/home/a/b")
    );
    assert_eq!(
        resolve(Some("/x"), "/etc/passwd").as_deref(),
        Some("/etc/passwd")
    );
    assert_eq!(
        resolve(None, "/etc/../etc/./passwd").as_deref(),
        Some("/etc/passwd")
    );
    assert_eq!(resolve(Some("/"), "../../..").as_deref(), Some("/"));
    assert_eq!(
        resolve(Some("/tmp/workspace"), "").as_deref(),
        Some("/tmp/workspace")
    );
    assert_eq!(
        resolve(Some("/tmp/workspace"), "../etc").as_deref(),
        Some("/tmp/etc"),
        "a dot-dot escape is not taken for the workspace"
    );
    assert_eq!(resolve(Some("pipe:[12]"), "x"), None);
    assert_eq!(resolve(None, "x"), None);
}

#[test]
fn within_and_pseudo() {
    assert!(is_within("/tmp/workspace", "/tmp/workspace"));
    assert!(is_within("/tmp/workspace/x", "/tmp/workspace/"));
    assert!(!is_within("/tmp/workspacex", "/tmp/workspace"));
    assert!(!is_within("/tmp", "/tmp/workspace"));
    assert!(is_within("/anything", "/"));
    for p in [
        "/dev/null",
        "/dev/tty",
        "/dev",
        "/proc/self/fd/1",
        "/sys/kernel/x",
    ] {
        assert!(is_pseudo(p), "{p}");
    }
    for p in [
        "/dev/shm/x",
        "/dev/mqueue/q",
        "/devices",
        "/etc/x",
        "/tmp/x",
    ] {
        assert!(!is_pseudo(p), "{p}");
    }
}

#[test]
fn reads_own_memory() {
    let pid = std::process::id();
    let mem = GuestMem::open(pid).expect("open own mem");
    let s = std::ffi::CString::new("/tmp/workspace/hello").expect("cstring");
    assert_eq!(
        mem.read_cstr(s.as_ptr() as u64).expect("read"),
        "/tmp/workspace/hello"
    );
    let long = std::ffi::CString::new(vec![b'a'; 10_000]).expect("cstring");
    assert_eq!(
        mem.read_cstr(long.as_ptr() as u64).expect("read").len(),
        MAX_STRING
    );
    let a = std::ffi::CString::new("ls").expect("cstring");
    let b = std::ffi::CString::new("-l").expect("cstring");
    let argv = [a.as_ptr(), b.as_ptr(), std::ptr::null()];
    let got = mem.read_argv(argv.as_ptr() as u64).expect("argv");
    assert_eq!(
        (got.args, got.argc, got.truncated),
        (vec!["ls".into(), "-l".into()], 2, false)
    );
    assert_eq!(mem.read_argv(0).expect("null argv"), Argv::default());
    // Past the caps: the real count and a marker, for entries and for bytes.
    let many: Vec<std::ffi::CString> = (0..1000)
        .map(|i| std::ffi::CString::new(format!("a{i}")).expect("cstring"))
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = many.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let got = mem.read_argv(ptrs.as_ptr() as u64).expect("argv");
    assert_eq!(
        (got.args.len(), got.argc, got.truncated),
        (MAX_ARGV, 1000, true)
    );
    let argv = [a.as_ptr(), long.as_ptr(), std::ptr::null()];
    let got = mem.read_argv(argv.as_ptr() as u64).expect("argv");
    assert_eq!((got.argc, got.truncated), (2, true));
    assert!(mem.read_cstr(0).is_err());
    assert!(mem.read_cstr(8).is_err(), "unmapped page");
}

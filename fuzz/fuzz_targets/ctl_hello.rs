//! The host's half of the guest init's hello (`idagent_guest::ctl`), through its public API.
//!
//! `parse_hello` is private, so the target drives `CtlServer::accept_init` over a real unix
//! socket, which also exercises the unsafe `recvmsg`/`SCM_RIGHTS` code that receives the hello.
//! Input: `[spec: u8][hello bytes…]`; `spec & 0x0f` fds (0–15; more than the host's cap of 8
//! makes the kernel truncate) are attached to the one `sendmsg`, each a pipe end, `/dev/null`
//! or a socket (`spec >> 4` picks the mix); then the connection is half-closed.
//!
//! Asserted: `accept_init` never succeeds (none of these fds is a seccomp listener), its error
//! is the one an independent reading of the protocol predicts, it never blocks until the
//! timeout, and no received fd leaks.
#![no_main]

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use idagent_guest::ctl::{CtlError, CtlServer, HELLO_MAX, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

const MAX_FDS: usize = 8;

fn server() -> &'static (CtlServer, PathBuf) {
    static SERVER: OnceLock<(CtlServer, PathBuf)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("idagent-fuzz-ctl-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("ctl.sock");
        let _ = std::fs::remove_file(&path);
        let server = CtlServer::bind(&path).expect("bind control socket");
        (server, path)
    })
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fuzz_target!(|data: &[u8]| {
    let Some((&spec, line)) = data.split_first() else { return };
    // Bigger than the socket buffer would block the single-threaded sender; the host reads
    // at most HELLO_MAX bytes anyway.
    if line.len() > 4 * HELLO_MAX {
        return;
    }
    let (server, path) = server();
    let before = open_fds();
    {
        let client = UnixStream::connect(path).expect("connect");
        let fds = make_fds(usize::from(spec & 0x0f), spec >> 4);
        send_with_fds(&client, line, &fds);
        drop(fds);
        client.shutdown(Shutdown::Write).expect("shutdown");
        let started = std::time::Instant::now();
        let result = server.accept_init(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(4), "accept_init waited for the timeout");
        let sent_fds = if line.is_empty() { 0 } else { usize::from(spec & 0x0f) };
        check(line, sent_fds, result);
        drop(client);
    }
    assert_eq!(open_fds(), before, "fd leak");
});

/// What `accept_init` must answer: all of `line` is read in one `recvmsg` (it came in one
/// `sendmsg`), up to `HELLO_MAX` bytes.
fn check(line: &[u8], fds: usize, result: Result<idagent_guest::ctl::InitConn, CtlError>) {
    let err = match result {
        Ok(conn) => panic!("accepted a hello without a seccomp listener: {:?}", conn.hello),
        Err(err) => err,
    };
    let read = &line[..line.len().min(HELLO_MAX)];
    let expected = if fds > MAX_FDS {
        "fdcount"
    } else if read.is_empty() || (!read.contains(&b'\n') && read.len() < HELLO_MAX) {
        "closed"
    } else if !read.contains(&b'\n') {
        "badhello"
    } else {
        match oracle(read) {
            Err(kind) => kind,
            Ok(()) if fds != 1 => "fdcount",
            Ok(()) => "notlistener",
        }
    };
    let got = match &err {
        CtlError::FdCount(_) => "fdcount",
        CtlError::Closed(_) => "closed",
        CtlError::BadHello(_) => "badhello",
        CtlError::Version(_) => "version",
        CtlError::NotListener(_) => "notlistener",
        other => panic!("unexpected error {other:?} for {line:?}"),
    };
    assert_eq!(got, expected, "{err:?} for {line:?} with {fds} fds");
}

/// The hello grammar, from the protocol docs: `idagent-init <version> <guest-pid>\n`, exactly
/// one line, version `PROTOCOL_VERSION`, pid positive. A readable version other than ours is
/// reported as such as soon as it is read (whatever follows), so that an old init gets a
/// useful error.
fn oracle(read: &[u8]) -> Result<(), &'static str> {
    let text = std::str::from_utf8(read).map_err(|_| "badhello")?;
    let text = text.strip_suffix('\n').ok_or("badhello")?;
    let words: Vec<&str> = text.split(' ').collect();
    if words.first() != Some(&"idagent-init") {
        return Err("badhello");
    }
    let version: u32 = words.get(1).and_then(|v| v.parse().ok()).ok_or("badhello")?;
    if version != PROTOCOL_VERSION {
        return Err("version");
    }
    match words[2..] {
        [pid] if pid.parse::<i32>().is_ok_and(|pid| pid > 0) => Ok(()),
        _ => Err("badhello"),
    }
}

fn make_fds(n: usize, mix: u8) -> Vec<OwnedFd> {
    (0..n)
        .map(|i| match (usize::from(mix) + i) % 3 {
            0 => std::fs::File::open("/dev/null").expect("open /dev/null").into(),
            1 => {
                let (a, _b) = UnixStream::pair().expect("socketpair");
                a.into()
            }
            _ => {
                let (_a, b) = UnixStream::pair().expect("socketpair");
                let _ = (&b).write_all(b"x");
                b.into()
            }
        })
        .collect()
}

#[allow(unsafe_code)] // the fuzz harness is the init side of the same SCM_RIGHTS protocol
fn send_with_fds(stream: &UnixStream, line: &[u8], fds: &[OwnedFd]) {
    let raw: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut cbuf = vec![0u64; 64];
    let mut iov = libc::iovec {
        iov_base: line.as_ptr().cast_mut().cast(),
        iov_len: line.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        let bytes = (raw.len() * 4) as u32;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_* are size computations and writes inside `cbuf` (512 bytes, aligned),
        // which holds CMSG_SPACE(15 * 4) easily.
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(cmsg).cast::<i32>(), raw.len());
        }
    }
    // SAFETY: `msg` points at live buffers with matching lengths.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    assert_eq!(n, line.len() as isize, "sendmsg: {}", std::io::Error::last_os_error());
}

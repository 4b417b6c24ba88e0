//! The control protocol between the guest's init (PID 1) and the host, both halves.
//!
//! Owns: the control socket, the wire format and the fd passing. Does not own: the filter
//! (`filter`), what the host does with the listener (`idagent::supervisor`), or when the host
//! says go.
//!
//! # Wire protocol (version [`PROTOCOL_VERSION`])
//!
//! A unix stream socket the host binds (mode 0666, so a non-root init can connect) in a
//! directory bind-mounted into the guest. One connection per run, from init:
//!
//! 1. init → host: the line `idagent-init <version> <guest-pid>\n` (ASCII, at most
//!    [`HELLO_MAX`] bytes), sent with one `sendmsg(2)` that carries exactly one fd in an
//!    `SCM_RIGHTS` message: the seccomp notification listener.
//! 2. host → init: `GO\n` (fork and exec the command) or `ABORT <reason>\n` (one line, at most
//!    [`REASON_MAX`] bytes; init prints the reason and exits 125). EOF counts as an abort.
//!
//! 3. init → host, after `GO`, for the rest of the run: one line per process init reaped (its
//!    command and every orphan reparented to PID 1), `EXIT <guest-pid> code <n>\n` or
//!    `EXIT <guest-pid> signal <n>\n`; and `LOST <n>\n` when init had to skip `n` reports
//!    because the host was not reading (init never blocks on the host). Where the kernel's
//!    proc connector works the host ignores these; where it does not (a non-initial network
//!    namespace), they are how exits of orphans and of the command are recorded.
//!
//! The host unlinks the socket path after accepting, so the untrusted program started later
//! cannot connect. Init keeps its end open (close-on-exec) until it exits, so the host sees EOF
//! when PID 1 is gone.

#![allow(unsafe_code)] // OS module: sendmsg/recvmsg with SCM_RIGHTS, poll, SO_PEERCRED

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Version sent in the hello; a host refuses any other.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest hello line, newline included.
pub const HELLO_MAX: usize = 128;
/// Longest abort reason the host sends; longer ones are cut.
pub const REASON_MAX: usize = 512;
/// Most fds a host accepts in one hello read before calling the hello malformed.
const MAX_FDS: usize = 8;

/// Failure on either side of the control connection.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("bind control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("make control socket {path} connectable: {source}")]
    Chmod { path: PathBuf, source: io::Error },
    #[error("connect to control socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("accept on control socket: {0}")]
    Accept(io::Error),
    #[error("no init connected within {0:?}")]
    Timeout(Duration),
    #[error("receive from control connection: {0}")]
    Recv(io::Error),
    #[error("send on control connection: {0}")]
    Send(io::Error),
    #[error("control connection closed before {0}")]
    Closed(&'static str),
    #[error("malformed hello {0:?}")]
    BadHello(String),
    #[error("init speaks protocol version {0}, this host speaks {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("hello carried {0} fds, expected exactly one")]
    FdCount(usize),
    #[error("hello fd is not a seccomp listener: {0}")]
    NotListener(String),
    #[error("malformed reply {0:?}")]
    BadReply(String),
}

/// The host's listening control socket.
#[derive(Debug)]
pub struct CtlServer {
    listener: UnixListener,
    path: PathBuf,
}

/// What init said in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    /// Init's pid as the guest sees it (1 in a container).
    pub guest_pid: i32,
    /// `idagent-init 1 <pid> pod`: a pod's agent init, which keeps its listener (its own
    /// observers use it) and sends no fd.
    pub pod: bool,
}

/// A connected pod agent init ([`CtlServer::accept_pod`]): no listener comes with it.
#[derive(Debug)]
pub struct PodConn {
    pub hello: Hello,
    /// The connecting process's pid (as this side sees it; `None` across pid namespaces) and
    /// uid (`SO_PEERCRED`).
    pub peer_pid: Option<i32>,
    pub peer_uid: Option<u32>,
    pub reply: InitReply,
}

/// A connected init: its listener fd and the channel to answer it on. Fields are public so the
/// listener can be moved to the supervisor while the reply channel stays here.
#[derive(Debug)]
pub struct InitConn {
    /// The seccomp notification listener of the guest's filter.
    pub listener: OwnedFd,
    pub hello: Hello,
    /// Host pid of the connecting process (`SO_PEERCRED`), when the kernel reported one.
    pub peer_pid: Option<i32>,
    pub reply: InitReply,
}

/// The host's half of the connection after the hello.
#[derive(Debug)]
pub struct InitReply {
    stream: UnixStream,
}

/// What the host told init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Go,
    Abort(String),
}

impl CtlServer {
    /// Creates the socket at `path` (which must not exist) and makes it connectable by any uid.
    pub fn bind(path: &Path) -> Result<Self, CtlError> {
        let listener = UnixListener::bind(path).map_err(|source| CtlError::Bind {
            path: path.to_owned(),
            source,
        })?;
        // The guest's init usually runs as an unprivileged uid; connecting needs write access.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(
            |source| CtlError::Chmod {
                path: path.to_owned(),
                source,
            },
        )?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for init to connect and send its hello with the listener fd.
    /// The caller should unlink [`Self::path`] right after.
    pub fn accept_init(&self, timeout: Duration) -> Result<InitConn, CtlError> {
        let deadline = Instant::now() + timeout;
        let stream = self.accept_stream(timeout)?;
        let (line, fds) = read_hello(&stream, deadline, timeout)?;
        let hello = parse_hello(&line)?;
        if hello.pod {
            return Err(CtlError::BadHello(
                "a pod agent's hello where a guest's was expected".into(),
            ));
        }
        let mut fds = fds.into_iter();
        let listener = match (fds.next(), fds.len()) {
            (Some(fd), 0) => fd,
            (first, rest) => return Err(CtlError::FdCount(usize::from(first.is_some()) + rest)),
        };
        check_listener(&listener)?;
        Ok(InitConn {
            listener,
            hello,
            peer_pid: peer_pid(&stream),
            reply: InitReply { stream },
        })
    }
}

impl CtlServer {
    /// Waits up to `timeout` for a pod's agent init to connect and send its hello (no fd).
    pub fn accept_pod(&self, timeout: Duration) -> Result<PodConn, CtlError> {
        let deadline = Instant::now() + timeout;
        let stream = self.accept_stream(timeout)?;
        let (line, fds) = read_hello(&stream, deadline, timeout)?;
        let hello = parse_hello(&line)?;
        if !hello.pod || !fds.is_empty() {
            return Err(CtlError::FdCount(fds.len()));
        }
        let cred = peer_cred(&stream);
        Ok(PodConn {
            hello,
            peer_pid: cred.and_then(|c| (c.pid > 0).then_some(c.pid)),
            peer_uid: cred.map(|c| c.uid),
            reply: InitReply { stream },
        })
    }

    /// Waits up to `timeout` for one connection (the pod's event socket), blocking mode.
    pub fn accept_stream(&self, timeout: Duration) -> Result<UnixStream, CtlError> {
        let deadline = Instant::now() + timeout;
        wait_readable(self.listener.as_fd(), deadline).map_err(|e| match e {
            WaitError::Timeout => CtlError::Timeout(timeout),
            WaitError::Io(e) => CtlError::Accept(e),
        })?;
        let (stream, _) = self.listener.accept().map_err(CtlError::Accept)?;
        stream.set_nonblocking(false).map_err(CtlError::Accept)?;
        Ok(stream)
    }
}

impl PodConn {
    /// The reader of init's reports (`EXIT`, `LOST`, `DONE`) after `GO`.
    pub fn reports(&self) -> io::Result<ReportReader> {
        self.reply.reports()
    }
}

impl InitConn {
    /// Tells init to start the command.
    pub fn go(&mut self) -> Result<(), CtlError> {
        self.reply.go()
    }

    /// Tells init to give up; best effort (init may already be gone).
    pub fn abort(&mut self, reason: &str) {
        self.reply.abort(reason)
    }
}

impl InitReply {
    pub fn go(&mut self) -> Result<(), CtlError> {
        self.stream.write_all(b"GO\n").map_err(CtlError::Send)
    }

    pub fn abort(&mut self, reason: &str) {
        let mut line = String::from("ABORT ");
        line.extend(
            reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(REASON_MAX),
        );
        line.push('\n');
        let _ = self.stream.write_all(line.as_bytes());
    }
}

enum WaitError {
    Timeout,
    Io(io::Error),
}

fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> Result<(), WaitError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WaitError::Timeout);
        }
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            n if n > 0 => return Ok(()),
            0 => continue,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(WaitError::Io(e));
                }
            }
        }
    }
}

/// Reads until the hello's newline, collecting every fd that arrives on the way.
fn read_hello(
    stream: &UnixStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<OwnedFd>), CtlError> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    while !line.contains(&b'\n') {
        if line.len() >= HELLO_MAX {
            return Err(CtlError::BadHello(
                String::from_utf8_lossy(&line).into_owned(),
            ));
        }
        wait_readable(stream.as_fd(), deadline).map_err(|e| match e {
            WaitError::Timeout => CtlError::Timeout(timeout),
            WaitError::Io(e) => CtlError::Recv(e),
        })?;
        let mut buf = [0u8; HELLO_MAX];
        let n = recv_with_fds(stream.as_fd(), &mut buf[..HELLO_MAX - line.len()], &mut fds)?;
        if n == 0 {
            return Err(CtlError::Closed("hello"));
        }
        line.extend_from_slice(&buf[..n]);
    }
    Ok((line, fds))
}

fn parse_hello(line: &[u8]) -> Result<Hello, CtlError> {
    let bad = || CtlError::BadHello(String::from_utf8_lossy(line).into_owned());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let text = text.strip_suffix('\n').ok_or_else(bad)?;
    let mut words = text.split(' ');
    if words.next() != Some("idagent-init") {
        return Err(bad());
    }
    let version: u32 = words.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    if version != PROTOCOL_VERSION {
        return Err(CtlError::Version(version));
    }
    let guest_pid: i32 = words.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let pod = match words.next() {
        None => false,
        Some("pod") => true,
        Some(_) => return Err(bad()),
    };
    if words.next().is_some() || guest_pid <= 0 {
        return Err(bad());
    }
    Ok(Hello {
        version,
        guest_pid,
        pod,
    })
}

/// The kernel names a seccomp listener `anon_inode:seccomp notify`; anything else (a pipe, a
/// file) means init is broken or not ours.
fn check_listener(fd: &OwnedFd) -> Result<(), CtlError> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let target = std::fs::read_link(&link).map_err(|e| CtlError::NotListener(e.to_string()))?;
    if target.as_os_str() == "anon_inode:seccomp notify" {
        Ok(())
    } else {
        Err(CtlError::NotListener(target.display().to_string()))
    }
}

fn peer_pid(stream: &UnixStream) -> Option<i32> {
    peer_cred(stream).and_then(|c| (c.pid > 0).then_some(c.pid))
}

fn peer_cred(stream: &UnixStream) -> Option<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred)
}

/// Control-message buffer with room for `MAX_FDS` fds, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, CtlError> {
    let mut cbuf = CmsgBuf([0; 64]);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * 4) as u32) } as usize;
    debug_assert!(space <= cbuf.0.len());
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = space.min(cbuf.0.len());
    let n = loop {
        // SAFETY: `msg` points at live `iov`/`cbuf` buffers with matching lengths.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(CtlError::Recv(e));
        }
    };
    // SAFETY: walking the control buffer the kernel just filled, with the CMSG_* helpers that
    // bound every header by `msg_controllen`; each SCM_RIGHTS payload is an array of fds the
    // kernel installed in this process for us, so taking ownership of each is sound.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..payload / 4 {
                    let raw = std::ptr::read_unaligned(data.add(i * 4).cast::<i32>());
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(CtlError::FdCount(fds.len() + 1));
    }
    Ok(n)
}

// ---- init's half ----

/// Connects to the host's control socket (close-on-exec).
pub fn connect(path: &Path) -> Result<UnixStream, CtlError> {
    UnixStream::connect(path).map_err(|source| CtlError::Connect {
        path: path.to_owned(),
        source,
    })
}

/// Sends the hello line with `listener` attached, in one `sendmsg(2)`.
pub fn send_hello(
    stream: &UnixStream,
    guest_pid: i32,
    listener: BorrowedFd<'_>,
) -> Result<(), CtlError> {
    let line = format!("idagent-init {PROTOCOL_VERSION} {guest_pid}\n");
    send_with_fd(stream, line.as_bytes(), listener)
}

/// Receives what a pod's child sent about its seccomp listener: the fd (sent with
/// [`send_with_fd`]), or `N <reason>` without one when the kernel has no seccomp user
/// notification (gVisor): then `Ok(Err(reason))`, and the run goes on without the supervisor.
pub fn recv_fd(stream: &UnixStream) -> Result<Result<OwnedFd, String>, CtlError> {
    let mut fds = Vec::new();
    let mut buf = [0u8; 256];
    let n = recv_with_fds(stream.as_fd(), &mut buf, &mut fds)?;
    if n == 0 {
        return Err(CtlError::Closed("listener hand-over"));
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.len()) {
        (Some(fd), 0) => {
            check_listener(&fd)?;
            Ok(Ok(fd))
        }
        (None, 0) if buf[0] == b'N' => Ok(Err(String::from_utf8_lossy(&buf[1..n])
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .collect())),
        (first, rest) => Err(CtlError::FdCount(usize::from(first.is_some()) + rest)),
    }
}

/// Sends `line` with `fd` attached, in one `sendmsg(2)`.
pub fn send_with_fd(stream: &UnixStream, line: &[u8], fd: BorrowedFd<'_>) -> Result<(), CtlError> {
    let listener = fd;
    let mut cbuf = CmsgBuf([0; 64]);
    let raw = listener.as_raw_fd();
    let mut iov = libc::iovec {
        iov_base: line.as_ptr().cast_mut().cast(),
        iov_len: line.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations; the one header written fits in
    // `cbuf` (CMSG_SPACE(4) = 24 bytes), which is aligned for cmsghdr.
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), raw);
    }
    loop {
        // SAFETY: `msg` points at live `iov`/`cbuf` buffers with matching lengths.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n == line.len() as isize {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n >= 0 {
            // A partial write of ~20 bytes on a fresh unix socket does not happen in practice;
            // resending would duplicate the fd, so call it an error.
            return Err(CtlError::Send(io::Error::new(
                io::ErrorKind::WriteZero,
                "short hello",
            )));
        }
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(CtlError::Send(e));
        }
    }
}

/// Sends a pod agent's hello (no fd: the listener stays with init's own observers).
pub fn send_hello_pod(mut stream: &UnixStream, guest_pid: i32) -> Result<(), CtlError> {
    let line = format!("idagent-init {PROTOCOL_VERSION} {guest_pid} pod\n");
    stream.write_all(line.as_bytes()).map_err(CtlError::Send)
}

/// Waits for the host's answer. EOF before a full line is an abort.
pub fn read_reply(stream: &mut UnixStream) -> Result<Reply, CtlError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: the reply is a few bytes once per run, and nothing after it may be consumed.
    while line.len() <= REASON_MAX + 8 {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(Reply::Abort("host closed the control connection".into())),
            Ok(_) if byte[0] == b'\n' => return parse_reply(&line),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CtlError::Recv(e)),
        }
    }
    Err(CtlError::BadReply(
        String::from_utf8_lossy(&line).into_owned(),
    ))
}

fn parse_reply(line: &[u8]) -> Result<Reply, CtlError> {
    let text = String::from_utf8_lossy(line);
    if text == "GO" {
        Ok(Reply::Go)
    } else if let Some(reason) = text.strip_prefix("ABORT ") {
        Ok(Reply::Abort(reason.to_owned()))
    } else {
        Err(CtlError::BadReply(text.into_owned()))
    }
}

/// Longest report line init sends, newline included.
pub const REPORT_MAX: usize = 64;

/// What init reports after `GO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitReport {
    /// A process init reaped: its guest pid and how it ended.
    Exit {
        pid: i32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Reports init skipped (the socket was full).
    Lost(u64),
    /// `MAIN <pid>`: the command's pid (a pod's init says it once, right after the fork, so the
    /// proxy knows which `EXIT` is the run's exit code).
    Main(i32),
}

impl InitReport {
    /// The wire line, newline included.
    pub fn line(&self) -> String {
        match self {
            InitReport::Exit {
                pid,
                signal: Some(s),
                ..
            } => format!("EXIT {pid} signal {s}\n"),
            InitReport::Exit { pid, code, .. } => {
                format!("EXIT {pid} code {}\n", code.unwrap_or(0))
            }
            InitReport::Lost(n) => format!("LOST {n}\n"),
            InitReport::Main(pid) => format!("MAIN {pid}\n"),
        }
    }

    /// Parses one line (without its newline). The host treats anything else as malformed.
    pub fn parse(line: &[u8]) -> Result<Self, CtlError> {
        let bad = || CtlError::BadReply(String::from_utf8_lossy(line).into_owned());
        let text = std::str::from_utf8(line).map_err(|_| bad())?;
        let mut words = text.split(' ');
        match (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) {
            (Some("EXIT"), Some(pid), Some(how), Some(n), None) => {
                let pid: i32 = pid.parse().map_err(|_| bad())?;
                let n: i32 = n.parse().map_err(|_| bad())?;
                match how {
                    "code" => Ok(InitReport::Exit {
                        pid,
                        code: Some(n),
                        signal: None,
                    }),
                    "signal" => Ok(InitReport::Exit {
                        pid,
                        code: None,
                        signal: Some(n),
                    }),
                    _ => Err(bad()),
                }
            }
            (Some("MAIN"), Some(pid), None, None, None) => {
                Ok(InitReport::Main(pid.parse().map_err(|_| bad())?))
            }
            (Some("LOST"), Some(n), None, None, None) => {
                Ok(InitReport::Lost(n.parse().map_err(|_| bad())?))
            }
            _ => Err(bad()),
        }
    }
}

/// Init's side: sends `report` without ever blocking; false when it could not be sent whole
/// (the caller counts it and sends a `LOST` later).
pub fn send_report(ctl: BorrowedFd<'_>, report: &InitReport) -> bool {
    let line = report.line();
    // SAFETY: send(2) from a valid buffer of the given length; MSG_DONTWAIT never blocks and
    // MSG_NOSIGNAL turns a closed peer into EPIPE rather than SIGPIPE. A stream socket takes a
    // short line whole or not at all when it has room for it (unix stream sockets copy
    // atomically below the buffer size).
    let n = unsafe {
        libc::send(
            ctl.as_raw_fd(),
            line.as_ptr().cast(),
            line.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    n == line.len() as isize
}

impl InitReply {
    /// A reader of init's reports, on its own handle of the connection (the host keeps this
    /// one for the dead-man switch).
    pub fn reports(&self) -> io::Result<ReportReader> {
        Ok(ReportReader {
            stream: io::BufReader::new(self.stream.try_clone()?),
        })
    }
}

/// Reads [`InitReport`]s until init closes the connection.
#[derive(Debug)]
pub struct ReportReader {
    stream: io::BufReader<UnixStream>,
}

impl ReportReader {
    /// The next report; `None` at EOF (init is gone) or on a read error. A malformed or
    /// over-long line is an error item: the caller records it and goes on.
    pub fn next_report(&mut self) -> Option<Result<InitReport, CtlError>> {
        let mut line = Vec::with_capacity(REPORT_MAX);
        loop {
            let mut byte = [0u8; 1];
            match self.stream.read(&mut byte) {
                Ok(0) => return None,
                Ok(_) if byte[0] == b'\n' => return Some(InitReport::parse(&line)),
                Ok(_) if line.len() >= REPORT_MAX => {
                    // Skip to the end of the over-long line, then say it was malformed.
                    line.push(byte[0]);
                }
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
            if line.len() > REPORT_MAX * 4 {
                return Some(Err(CtlError::BadReply("over-long report".into())));
            }
        }
    }
}

#[cfg(test)]
#[path = "ctl_tests.rs"]
mod tests;

//! Both halves of the control protocol in one process, over a real socket in a tempdir, with a
//! real seccomp listener passed as the fd.

use super::*;
use std::os::fd::AsFd;

/// A seccomp listener made on a short-lived thread: the allow-everything filter stays on that
/// thread alone and dies with it, leaving the process-wide fd.
fn real_listener() -> OwnedFd {
    let allow = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    std::thread::spawn(move || crate::filter::install_with_listener(&allow))
        .join()
        .expect("filter thread")
        .expect("install filter")
}

fn server() -> (tempfile::TempDir, CtlServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = CtlServer::bind(&dir.path().join("ctl.sock")).expect("bind");
    (dir, server)
}

#[test]
fn hello_with_listener_then_go_and_abort() {
    let (_dir, server) = server();
    let mode = std::fs::metadata(server.path())
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666);
    let listener = real_listener();
    let path = server.path().to_owned();
    let client = std::thread::spawn(move || {
        let mut stream = connect(&path).expect("connect");
        send_hello(&stream, 1, listener.as_fd()).expect("hello");
        drop(listener);
        let first = read_reply(&mut stream).expect("reply");
        let second = read_reply(&mut stream).expect("reply");
        let third = read_reply(&mut stream).expect("reply");
        (first, second, third)
    });
    let mut conn = server.accept_init(Duration::from_secs(10)).expect("accept");
    assert_eq!(
        conn.hello,
        Hello {
            version: 1,
            guest_pid: 1,
            pod: false,
        }
    );
    assert_eq!(conn.peer_pid, Some(std::process::id() as i32));
    check_listener(&conn.listener).expect("still a listener on this side");
    conn.go().expect("go");
    conn.abort("bad\nthing");
    drop(conn);
    let (first, second, third) = client.join().expect("client");
    assert_eq!(first, Reply::Go);
    assert_eq!(second, Reply::Abort("bad thing".into()));
    assert_eq!(
        third,
        Reply::Abort("host closed the control connection".into())
    );
}

#[test]
fn a_pipe_is_not_a_listener() {
    let (_dir, server) = server();
    let (r, _w) = std::io::pipe().expect("pipe");
    let stream = connect(server.path()).expect("connect");
    send_hello(&stream, 1, r.as_fd()).expect("hello");
    match server.accept_init(Duration::from_secs(10)) {
        Err(CtlError::NotListener(what)) => assert!(what.starts_with("pipe:"), "{what}"),
        other => panic!("expected NotListener, got {other:?}"),
    }
}

#[test]
fn hello_without_fd_is_refused() {
    let (_dir, server) = server();
    let mut stream = connect(server.path()).expect("connect");
    stream.write_all(b"idagent-init 1 1\n").expect("write");
    assert!(matches!(
        server.accept_init(Duration::from_secs(10)),
        Err(CtlError::FdCount(0))
    ));
}

#[test]
fn no_client_times_out() {
    let (_dir, server) = server();
    assert!(matches!(
        server.accept_init(Duration::from_millis(50)),
        Err(CtlError::Timeout(_))
    ));
}

#[test]
fn hello_parsing() {
    assert_eq!(
        parse_hello(b"idagent-init 1 1\n").expect("ok"),
        Hello {
            version: 1,
            guest_pid: 1,
            pod: false,
        }
    );
    assert!(matches!(
        parse_hello(b"idagent-init 2 1\n"),
        Err(CtlError::Version(2))
    ));
    for bad in [
        &b"idagent-init 1 1"[..],
        b"idagent-init 1\n",
        b"idagent-init 1 0\n",
        b"idagent-init 1 -4\n",
        b"idagent-init 1 1 extra\n",
        b"hello 1 1\n",
        b"idagent-init x 1\n",
        b"\xff\xfe\n",
    ] {
        assert!(
            matches!(parse_hello(bad), Err(CtlError::BadHello(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn reply_parsing() {
    assert_eq!(parse_reply(b"GO").expect("go"), Reply::Go);
    assert_eq!(
        parse_reply(b"ABORT x y").expect("abort"),
        Reply::Abort("x y".into())
    );
    assert!(parse_reply(b"go").is_err());
    assert!(parse_reply(b"").is_err());
}

#[test]
fn init_reports_round_trip_and_garbage_is_an_error() {
    let reports = [
        InitReport::Exit {
            pid: 7,
            code: Some(3),
            signal: None,
        },
        InitReport::Exit {
            pid: 8,
            code: None,
            signal: Some(9),
        },
        InitReport::Lost(12),
    ];
    for r in reports {
        let line = r.line();
        assert!(line.len() <= REPORT_MAX && line.ends_with('\n'));
        let parsed = InitReport::parse(line.trim_end().as_bytes()).expect("parses");
        assert_eq!(parsed, r);
    }
    for bad in [
        &b"EXIT"[..],
        b"EXIT x code 1",
        b"EXIT 1 code",
        b"EXIT 1 stopped 2",
        b"EXIT 1 code 2 extra",
        b"LOST -1",
        b"\xff\xfe",
        b"",
    ] {
        assert!(InitReport::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn reports_are_read_until_eof() {
    let (a, b) = UnixStream::pair().expect("pair");
    let exit = InitReport::Exit {
        pid: 42,
        code: Some(0),
        signal: None,
    };
    assert!(send_report(a.as_fd(), &exit));
    (&a).write_all(b"garbage line\n").expect("write");
    assert!(send_report(a.as_fd(), &InitReport::Lost(2)));
    drop(a);
    let reply = InitReply { stream: b };
    let mut reader = reply.reports().expect("clone");
    assert_eq!(reader.next_report().map(|r| r.ok()), Some(Some(exit)));
    assert!(matches!(reader.next_report(), Some(Err(_))));
    assert_eq!(
        reader.next_report().map(|r| r.ok()),
        Some(Some(InitReport::Lost(2)))
    );
    assert!(reader.next_report().is_none());
}

#[test]
fn a_pod_hello_carries_no_fd_and_its_uid() {
    let (_dir, server) = server();
    let path = server.path().to_owned();
    let client = std::thread::spawn(move || {
        let mut stream = connect(&path).expect("connect");
        send_hello_pod(&stream, 1).expect("hello");
        read_reply(&mut stream).expect("reply")
    });
    let mut conn = server.accept_pod(Duration::from_secs(10)).expect("accept");
    assert!(conn.hello.pod);
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").expect("stat").uid();
    assert_eq!(conn.peer_uid, Some(me));
    conn.reply.go().expect("go");
    assert_eq!(client.join().expect("client"), Reply::Go);
}

#[test]
fn a_pod_hello_is_not_a_guest_hello_nor_the_reverse() {
    let (_dir, server) = server();
    let path = server.path().to_owned();
    let c = std::thread::spawn(move || {
        let stream = connect(&path).expect("connect");
        send_hello_pod(&stream, 1).expect("hello");
        stream
    });
    assert!(server.accept_init(Duration::from_secs(10)).is_err());
    drop(c.join());
    let path = server.path().to_owned();
    let listener = real_listener();
    let c = std::thread::spawn(move || {
        let stream = connect(&path).expect("connect");
        send_hello(&stream, 1, listener.as_fd()).expect("hello");
        stream
    });
    assert!(server.accept_pod(Duration::from_secs(10)).is_err());
    drop(c.join());
    assert!(parse_hello(b"idagent-init 1 1 pod\n").is_ok_and(|h| h.pod));
    assert!(parse_hello(b"idagent-init 1 1 pods\n").is_err());
    assert!(parse_hello(b"idagent-init 1 1 pod x\n").is_err());
}

#[test]
fn the_childs_listener_or_its_reason_comes_back() {
    let (a, b) = UnixStream::pair().expect("pair");
    let listener = real_listener();
    send_with_fd(&a, b"L", listener.as_fd()).expect("send");
    assert!(matches!(recv_fd(&b), Ok(Ok(_))));
    (&a).write_all(b"N Function not implemented (os error 38)\x1b[2J")
        .expect("write");
    match recv_fd(&b) {
        Ok(Err(reason)) => assert_eq!(reason, "Function not implemented (os error 38)[2J"),
        other => panic!("{other:?}"),
    }
    // A pipe is not a listener, even from our own child.
    let (r, _w) = std::io::pipe().expect("pipe");
    send_with_fd(&a, b"L", r.as_fd()).expect("send");
    assert!(recv_fd(&b).is_err());
    drop(a);
    assert!(recv_fd(&b).is_err(), "EOF is an error");
}

#[test]
fn main_reports_round_trip() {
    let r = InitReport::Main(7);
    assert_eq!(r.line(), "MAIN 7\n");
    assert_eq!(InitReport::parse(b"MAIN 7").ok(), Some(r));
    assert!(InitReport::parse(b"MAIN x").is_err());
}

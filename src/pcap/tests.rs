//! Tests of the capture file as a user sees it: read back with pcap-file and with tshark,
//! including a TLS session (real rustls handshake over loopback TCP, re-framed as TCP/IP
//! packets) that tshark must decrypt from the file's own secrets.

use std::fs::File;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use etherparse::PacketBuilder;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::audit::RunId;
use crate::tls::{self, RunCa};

const GUEST: [u8; 4] = [10, 77, 0, 2];
const SERVER: [u8; 4] = [93, 184, 216, 34];

/// Byte streams of one TCP connection, in causal order, one entry per direction change.
type Streams = Vec<(Direction, Vec<u8>)>;

fn udp_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(40000, 53)
        .write(&mut out, payload)
        .expect("build udp");
    out
}

fn read_blocks(path: &Path) -> Vec<Block<'static>> {
    let mut reader = PcapNgReader::new(File::open(path).expect("open")).expect("reader");
    let mut blocks = Vec::new();
    while let Some(block) = reader.next_block() {
        blocks.push(block.expect("block").into_owned());
    }
    blocks
}

fn tshark(args: &[&str]) -> Option<String> {
    let Ok(out) = Command::new("tshark").args(args).output() else {
        eprintln!("tshark not installed: skipping the tshark check");
        return None;
    };
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn packets_and_secrets_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traffic.pcapng");
    let pcap = spawn(&path, DEFAULT_SNAPLEN).expect("spawn");
    let ts = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    let out = udp_packet(GUEST, [1, 1, 1, 1], b"query");
    let back = udp_packet([1, 1, 1, 1], GUEST, b"answer");
    let line = "CLIENT_RANDOM 00 11\n".to_string();
    pcap.secrets(line.clone());
    pcap.packet(Direction::FromGuest, ts, &out);
    pcap.packet(Direction::ToGuest, ts + Duration::from_millis(1), &back);
    let stats = pcap.finish();
    assert!(stats.error.is_none(), "{stats:?}");
    assert_eq!(stats.packets_written, 2);
    assert_eq!(stats.secrets_blocks_written, 1);
    assert_eq!(stats.packets_dropped + stats.secrets_dropped, 0);
    assert_eq!(
        stats.bytes_written,
        std::fs::metadata(&path).expect("stat").len()
    );

    let blocks = read_blocks(&path);
    assert_eq!(blocks.len(), 4, "{blocks:?}");
    let Block::InterfaceDescription(idb) = &blocks[0] else {
        panic!("first block {:?}", blocks[0]);
    };
    assert_eq!(idb.linktype, DataLink::RAW);
    assert_eq!(idb.snaplen, DEFAULT_SNAPLEN);
    assert!(idb
        .options
        .contains(&InterfaceDescriptionOption::IfName("tun0".into())));
    assert!(idb
        .options
        .contains(&InterfaceDescriptionOption::IfTsResol(9)));
    let Block::Unknown(dsb) = &blocks[1] else {
        panic!("second block {:?}", blocks[1]);
    };
    assert_eq!(dsb.type_, DSB_BLOCK_TYPE);
    assert_eq!(&dsb.value[..4], &DSB_SECRETS_TLS_KEY_LOG.to_le_bytes());
    assert_eq!(&dsb.value[8..8 + line.len()], line.as_bytes());
    for (block, (data, dir, at)) in blocks[2..].iter().zip([
        (&out, Direction::FromGuest, ts),
        (&back, Direction::ToGuest, ts + Duration::from_millis(1)),
    ]) {
        let Block::EnhancedPacket(epb) = block else {
            panic!("packet block {block:?}");
        };
        assert_eq!(&epb.data[..], &data[..]);
        assert_eq!(epb.original_len as usize, data.len());
        let since_epoch = at.duration_since(SystemTime::UNIX_EPOCH).expect("epoch");
        assert_eq!(epb.timestamp, since_epoch);
        assert_eq!(
            epb.options,
            vec![EnhancedPacketOption::Flags(epb_flags(dir))]
        );
    }

    let Some(text) = tshark(&[
        "-r",
        path.to_str().expect("utf8 path"),
        "-T",
        "fields",
        "-e",
        "ip.dst",
        "-e",
        "frame.packet_flags_direction",
    ]) else {
        return;
    };
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows, ["1.1.1.1\t0x00000002", "10.77.0.2\t0x00000001"]);
}

#[test]
fn caps_drop_and_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traffic.pcapng");
    let limits = PcapLimits {
        snaplen: 30,
        queue_items: 16,
        // 11 truncated packets (330 bytes) fit even if the writer has not drained any yet.
        queue_bytes: 350,
        max_file_bytes: 400,
        ..PcapLimits::default()
    };
    let pcap = spawn_with(&path, limits).expect("spawn");
    let now = SystemTime::now();
    let big = udp_packet(GUEST, SERVER, &[0u8; 200]);
    pcap.packet(Direction::FromGuest, now, &big); // truncated to 30 bytes, fits the queue
    pcap.secrets("x".repeat(351)); // over the queue byte budget, whatever is queued
    pcap.secrets("x".repeat(MAX_SECRETS_BLOCK_BYTES + 1)); // over the block cap
    for _ in 0..10 {
        pcap.packet(Direction::ToGuest, now, &big); // the file cap stops these
    }
    let stats = pcap.finish();
    assert!(stats.error.is_none(), "{stats:?}");
    assert!(stats.file_cap_reached);
    assert_eq!(stats.secrets_dropped, 2);
    assert!(stats.packets_written >= 1 && stats.packets_truncated == stats.packets_written);
    assert_eq!(stats.packets_written + stats.packets_dropped, 11);
    assert!(stats.bytes_written <= 400);
    let blocks = read_blocks(&path);
    let Block::EnhancedPacket(first) = &blocks[1] else {
        panic!("{:?}", blocks[1]);
    };
    assert_eq!(first.data.len(), 30);
    assert_eq!(first.original_len as usize, big.len());

    // The file is never clobbered, and later senders only count.
    assert!(matches!(
        spawn(&path, DEFAULT_SNAPLEN),
        Err(PcapError::Create { .. })
    ));
}

#[test]
fn a_full_queue_makes_packets_wait_not_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traffic.pcapng");
    // Room for two packets at a time: the producer outruns the writer at once.
    let pcap = spawn_with(
        &path,
        PcapLimits {
            queue_items: 2,
            queue_bytes: 2 * 1300,
            ..PcapLimits::default()
        },
    )
    .expect("spawn");
    let packet = udp_packet(GUEST, SERVER, &[7u8; 1200]);
    for _ in 0..2000 {
        pcap.packet(Direction::ToGuest, SystemTime::now(), &packet);
    }
    let stats = pcap.finish();
    assert!(stats.error.is_none(), "{stats:?}");
    assert_eq!(stats.packets_dropped, 0);
    assert_eq!(stats.packets_written, 2000);
}

#[test]
fn senders_after_finish_only_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = spawn(&dir.path().join("t.pcapng"), DEFAULT_SNAPLEN).expect("spawn");
    let late = pcap.sender();
    assert!(pcap.finish().error.is_none());
    late.packet(Direction::FromGuest, SystemTime::now(), b"late");
    assert_eq!(late.shared.packets_dropped.load(Ordering::Relaxed), 1);
}

/// Records, on the server (gateway) side of a TCP connection, the byte stream in each
/// direction in causal order: what it reads came from the guest, what it writes goes to it.
struct Recorder {
    inner: TcpStream,
    log: Arc<Mutex<Streams>>,
}

impl Recorder {
    fn record(&self, dir: Direction, bytes: &[u8]) {
        let mut log = self.log.lock().expect("lock");
        match log.last_mut() {
            Some((last, data)) if *last == dir => data.extend_from_slice(bytes),
            _ => log.push((dir, bytes.to_vec())),
        }
    }
}

impl AsyncRead for Recorder {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.record(Direction::FromGuest, &buf.filled()[before..]);
        }
        result
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.record(Direction::ToGuest, &buf[..n]);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Runs an HTTP/1.1 exchange over TLS on loopback: the server side uses the run CA's
/// interception config. Returns the recorded streams and the server's key log lines.
async fn recorded_https_exchange() -> (Streams, Vec<String>) {
    let ca = Arc::new(RunCa::generate(&RunId::generate()).expect("ca"));
    let secrets = Arc::new(Mutex::new(Vec::new()));
    let sink = secrets.clone();
    let keylog = tls::KeyLogSink::new(100, move |line| sink.lock().expect("lock").push(line));
    let server = tls::server_config(ca.clone(), Arc::new(keylog)).expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let server_log = log.clone();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let recorder = Recorder {
            inner: tcp,
            log: server_log,
        };
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(recorder)
            .await
            .expect("server handshake");
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.expect("read request");
            request.push(byte[0]);
        }
        let body = "hello from idagent\n";
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(response.as_bytes()).await.expect("respond");
        tls.shutdown().await.expect("close_notify");
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let client = crate::tls::tests::client_config(&ca, false, None);
    let name = rustls::pki_types::ServerName::try_from("example.com").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .expect("client handshake");
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .expect("request");
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.expect("response");
    assert!(response.starts_with(b"HTTP/1.1 200 OK"));
    server_task.await.expect("server task");
    let streams = log.lock().expect("lock").clone();
    let lines = secrets.lock().expect("lock").clone();
    (streams, lines)
}

/// Re-frames recorded byte streams as one IPv4/TCP connection guest:40000 → server:443:
/// 3-way handshake, data segments of at most 1,400 bytes with consistent seq/ack, FIN/ACK.
fn synthesize_tcp(streams: &[(Direction, Vec<u8>)]) -> Streams {
    let (mut guest_seq, mut server_seq) = (1_000_u32, 5_000_u32);
    let mut packets = Vec::new();
    let mut push = |dir: Direction, seq: u32, ack: Option<u32>, flags: &str, payload: &[u8]| {
        let (src, dst, sport, dport) = match dir {
            Direction::FromGuest => (GUEST, SERVER, 40000, 443),
            Direction::ToGuest => (SERVER, GUEST, 443, 40000),
        };
        let mut tcp = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, seq, 65535);
        if let Some(ack) = ack {
            tcp = tcp.ack(ack);
        }
        for flag in flags.chars() {
            tcp = match flag {
                'S' => tcp.syn(),
                'P' => tcp.psh(),
                'F' => tcp.fin(),
                _ => tcp,
            };
        }
        let mut out = Vec::new();
        tcp.write(&mut out, payload).expect("build tcp");
        packets.push((dir, out));
    };
    push(Direction::FromGuest, guest_seq, None, "S", &[]);
    guest_seq += 1;
    push(Direction::ToGuest, server_seq, Some(guest_seq), "S", &[]);
    server_seq += 1;
    push(Direction::FromGuest, guest_seq, Some(server_seq), "", &[]);
    for (dir, data) in streams {
        for segment in data.chunks(1400) {
            let len = segment.len() as u32;
            match dir {
                Direction::FromGuest => {
                    push(*dir, guest_seq, Some(server_seq), "P", segment);
                    guest_seq += len;
                }
                Direction::ToGuest => {
                    push(*dir, server_seq, Some(guest_seq), "P", segment);
                    server_seq += len;
                }
            }
        }
    }
    push(Direction::ToGuest, server_seq, Some(guest_seq), "F", &[]);
    server_seq += 1;
    push(Direction::FromGuest, guest_seq, Some(server_seq), "F", &[]);
    guest_seq += 1;
    push(Direction::ToGuest, server_seq, Some(guest_seq), "", &[]);
    packets
}

#[tokio::test]
async fn tshark_decrypts_https_with_embedded_secrets() {
    let (streams, secrets) = recorded_https_exchange().await;
    assert!(secrets.len() >= 4, "{secrets:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let packets = synthesize_tcp(&streams);
    let write = |name: &str, secrets: &[String]| {
        let path = dir.path().join(name);
        let pcap = spawn(&path, DEFAULT_SNAPLEN).expect("spawn");
        for line in secrets {
            pcap.secrets(line.clone());
        }
        let start = SystemTime::now();
        for (i, (dir, packet)) in packets.iter().enumerate() {
            pcap.packet(*dir, start + Duration::from_millis(i as u64), packet);
        }
        let stats = pcap.finish();
        assert!(stats.error.is_none(), "{stats:?}");
        assert_eq!(stats.packets_written as usize, packets.len());
        path
    };
    let http_fields = |path: &Path| {
        tshark(&[
            "-r",
            path.to_str().expect("utf8 path"),
            "-Y",
            "http",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
            "-e",
            "http.response.code",
        ])
    };
    let Some(text) = http_fields(&write("traffic.pcapng", &secrets)) else {
        return;
    };
    let rows: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(rows, ["/hello", "200"], "tshark saw: {text:?}");
    // Control: the same packets without the DSBs show no HTTP at all.
    let without = http_fields(&write("no-secrets.pcapng", &[])).unwrap_or_default();
    assert_eq!(without.trim(), "", "decrypted without secrets?");
}

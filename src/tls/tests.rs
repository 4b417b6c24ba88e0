//! Tests of the TLS building blocks against real rustls peers: ClientHellos produced by a rustls
//! client, and full handshakes over loopback TCP with the run CA as the only trust anchor.

use std::sync::{Arc, Mutex};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, KeyLog, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::audit::RunId;

/// A key log that keeps every line, for comparing both ends of a handshake.
fn collecting_keylog(max: u64) -> (Arc<KeyLogSink>, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let keylog = KeyLogSink::new(max, move |line| {
        sink.lock().expect("lock").push(line);
    });
    (Arc::new(keylog), lines)
}

/// A client trusting only `ca`, optionally restricted to TLS 1.2, with its own key log.
pub(crate) fn client_config(
    ca: &RunCa,
    tls12_only: bool,
    keylog: Option<Arc<dyn KeyLog>>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("add ca");
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), ALPN_HTTP11.to_vec()];
    if let Some(keylog) = keylog {
        config.key_log = keylog;
    }
    Arc::new(config)
}

fn client_hello_bytes(server_name: &str, tls12_only: bool) -> Vec<u8> {
    let ca = RunCa::generate(&RunId::generate()).expect("ca");
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let mut conn =
        ClientConnection::new(client_config(&ca, tls12_only, None), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

#[test]
fn parses_a_real_client_hello() {
    let bytes = client_hello_bytes("api.openai.com", false);
    assert!(looks_like_tls(&bytes));
    let info = parse_client_hello(&bytes).expect("parse");
    assert_eq!(info.server_name.as_deref(), Some("api.openai.com"));
    assert_eq!(info.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(info.legacy_version, 0x0303);
    assert!(info.offers_tls13());
    assert!(info.supported_versions.contains(&0x0303));
    assert_eq!(info.len, bytes.len());

    let tls12 = parse_client_hello(&client_hello_bytes("example.com", true)).expect("parse");
    assert_eq!(tls12.server_name.as_deref(), Some("example.com"));
    assert!(!tls12.offers_tls13());
}

#[test]
fn no_sni_for_ip_literals() {
    let info = parse_client_hello(&client_hello_bytes("10.1.2.3", false)).expect("parse");
    assert_eq!(info.server_name, None);
}

#[test]
fn every_prefix_is_incomplete() {
    let bytes = client_hello_bytes("api.openai.com", false);
    for n in 0..bytes.len() {
        match parse_client_hello(&bytes[..n]) {
            Err(SniError::Incomplete { need }) => {
                assert!(need > n && need <= bytes.len(), "prefix {n}: need {need}")
            }
            other => panic!("prefix {n}: {other:?}"),
        }
    }
}

#[test]
fn client_hello_split_across_records() {
    let bytes = client_hello_bytes("api.openai.com", false);
    let body = &bytes[5..];
    // Re-frame the handshake message as records of at most 100 bytes.
    let mut split = Vec::new();
    for chunk in body.chunks(100) {
        split.extend_from_slice(&[22, 3, 1]);
        split.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        split.extend_from_slice(chunk);
    }
    let info = parse_client_hello(&split).expect("parse split");
    assert_eq!(info.server_name.as_deref(), Some("api.openai.com"));
    assert_eq!(info.len, split.len());
    for n in 0..split.len() {
        assert!(matches!(
            parse_client_hello(&split[..n]),
            Err(SniError::Incomplete { need }) if need > n
        ));
    }
    // Trailing bytes after the ClientHello (the rest of the stream) are not ours to judge.
    split.extend_from_slice(b"\x17\x03\x03\x00\x01x");
    assert!(parse_client_hello(&split).is_ok());
}

/// xorshift64*: deterministic pseudo-random mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn mutated_client_hellos_never_panic() {
    let base = client_hello_bytes("api.openai.com", false);
    let mut rng = Rng(0x1dea_9e17);
    let mut outcomes = std::collections::HashMap::<String, usize>::new();
    for _ in 0..20_000 {
        let mut bytes = base.clone();
        for _ in 0..=(rng.next() % 4) {
            let i = (rng.next() as usize) % bytes.len();
            bytes[i] = rng.next() as u8;
        }
        let cut = (rng.next() as usize) % (bytes.len() + 1);
        let result = parse_client_hello(&bytes[..cut.max(bytes.len() / 2)]);
        let key = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{e:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or("")
                .into(),
        };
        *outcomes.entry(key).or_default() += 1;
        let _ = looks_like_tls(&bytes);
    }
    // The mutations must reach the deep error paths, not only the record header checks.
    for kind in ["ok", "Incomplete", "Malformed", "BadRecord"] {
        assert!(
            outcomes.contains_key(kind),
            "{kind} never hit: {outcomes:?}"
        );
    }
}

#[test]
fn garbage_is_typed() {
    assert!(!looks_like_tls(b""));
    assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
    assert!(!looks_like_tls(b"SSH-2.0-OpenSSH"));
    assert!(looks_like_tls(&[22]));
    assert!(looks_like_tls(&[22, 3, 1, 0, 200, 1]));
    assert!(!looks_like_tls(&[22, 3, 1, 0, 200, 2]));
    assert_eq!(
        parse_client_hello(b"GET / HTTP/1.1\r\n"),
        Err(SniError::NotHandshake { content_type: b'G' })
    );
    assert_eq!(
        parse_client_hello(&[22, 2, 0]),
        Err(SniError::BadRecord { offset: 0 })
    );
    assert_eq!(
        parse_client_hello(&[22, 3, 1, 0, 0]),
        Err(SniError::BadRecord { offset: 0 })
    );
    assert_eq!(
        parse_client_hello(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
        Err(SniError::NotClientHello { msg_type: 2 })
    );
    assert_eq!(
        parse_client_hello(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
        Err(SniError::TooLarge {
            len: 0xff_ffff,
            max: MAX_CLIENT_HELLO_LEN
        })
    );
}

#[test]
fn leaf_names_are_validated() {
    assert_eq!(
        LeafName::parse("API.OpenAI.com.").expect("dns"),
        LeafName::Dns("api.openai.com".into())
    );
    assert_eq!(
        LeafName::parse("::1").expect("ip"),
        LeafName::Ip("::1".parse().expect("ip"))
    );
    assert!(LeafName::parse("under_score.example").is_ok());
    for bad in [
        "",
        ".",
        "a..b",
        "*.example.com",
        "exa mple.com",
        "bücher.de",
        "-lead.example",
        &"a".repeat(64),
        &format!("{}.com", ["abcdefghi"; 26].join(".")),
    ] {
        assert!(
            matches!(
                LeafName::parse(bad),
                Err(TlsError::InvalidServerName { .. })
            ),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn leaf_cache_reuses_and_evicts_least_recently_used() {
    let ca = RunCa::with_cache_size(&RunId::generate(), 3).expect("ca");
    let a = ca.leaf_for("a.example").expect("a");
    assert!(Arc::ptr_eq(
        &a,
        &ca.leaf_for("A.example.").expect("a again")
    ));
    let b = ca.leaf_for("b.example").expect("b");
    ca.leaf_for("c.example").expect("c");
    ca.leaf_for("a.example").expect("touch a");
    ca.leaf_for("d.example").expect("d"); // evicts b, the least recently used
    assert!(Arc::ptr_eq(&a, &ca.leaf_for("a.example").expect("a kept")));
    assert!(!Arc::ptr_eq(
        &b,
        &ca.leaf_for("b.example").expect("b re-minted")
    ));
    let stats = ca.leaf_cache_stats();
    assert_eq!(stats.cached, 3);
    assert_eq!(stats.minted, 5);
    assert_eq!(stats.evicted, 2);
    assert_eq!(stats.hits, 3);
    assert!(ca.leaf_for("bad name").is_err());
    assert_eq!(ca.leaf_cache_stats().minted, 5);
}

#[test]
fn ca_debug_hides_the_key() {
    let ca = RunCa::generate(&RunId::generate()).expect("ca");
    let debug = format!("{ca:?}");
    assert!(debug.contains("idagent run"), "{debug}");
    assert!(!debug.to_lowercase().contains("key"), "{debug}");
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(ca.fingerprint_sha256().len(), 64);
}

#[test]
fn keylog_cap_counts_drops() {
    let (sink, lines) = collecting_keylog(2);
    for _ in 0..3 {
        sink.log("CLIENT_RANDOM", &[0xab; 32], &[0xcd; 48]);
    }
    assert_eq!(
        sink.stats(),
        KeyLogStats {
            forwarded: 2,
            dropped: 1
        }
    );
    let lines = lines.lock().expect("lock");
    assert_eq!(
        lines[0],
        format!("CLIENT_RANDOM {} {}\n", "ab".repeat(32), "cd".repeat(48))
    );
}

#[test]
fn upstream_config_needs_a_usable_extra_ca() {
    assert!(matches!(
        upstream_client_config(Some(b"not pem"), None),
        Err(TlsError::UpstreamCaEmpty)
    ));
    let ca = RunCa::generate(&RunId::generate()).expect("ca");
    let config = upstream_client_config(Some(ca.cert_pem().as_bytes()), None).expect("config");
    assert_eq!(config.alpn_protocols, vec![ALPN_HTTP11.to_vec()]);
}

/// One handshake over loopback TCP plus a request/response exchange; returns the server's and
/// the client's key log lines and the negotiated ALPN.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .expect("server handshake");
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.expect("server read");
        assert_eq!(&buf, b"hello");
        tls.write_all(b"world").await.expect("server write");
        tls.shutdown().await.expect("server shutdown");
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(name.to_string()).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .expect("client handshake");
    tls.write_all(b"hello").await.expect("client write");
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.expect("client read");
    assert_eq!(reply, b"world");
    server_task.await.expect("server task");
    tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec()
}

fn client_randoms(lines: &[String]) -> std::collections::BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
        .collect()
}

#[tokio::test]
async fn intercepting_handshake_tls13_and_tls12() {
    let ca = Arc::new(RunCa::generate(&RunId::generate()).expect("ca"));
    for tls12_only in [false, true] {
        let (server_log, server_lines) = collecting_keylog(DEFAULT_MAX_KEYLOG_LINES);
        let (client_log, client_lines) = collecting_keylog(DEFAULT_MAX_KEYLOG_LINES);
        let server = server_config(ca.clone(), server_log).expect("server config");
        let client = client_config(&ca, tls12_only, Some(client_log));
        let alpn = handshake(server, client, "api.openai.com").await;
        assert_eq!(alpn, ALPN_HTTP11);
        let server_lines = server_lines.lock().expect("lock").clone();
        let client_lines = client_lines.lock().expect("lock").clone();
        let labels: Vec<&str> = server_lines
            .iter()
            .filter_map(|l| l.split(' ').next())
            .collect();
        if tls12_only {
            assert_eq!(labels, ["CLIENT_RANDOM"]);
        } else {
            for label in [
                "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
                "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0",
                "SERVER_TRAFFIC_SECRET_0",
            ] {
                assert!(labels.contains(&label), "{label} missing: {labels:?}");
            }
        }
        // Same session on both ends: the client's own random, and identical secrets.
        let randoms = client_randoms(&server_lines);
        assert_eq!(randoms.len(), 1);
        assert_eq!(randoms, client_randoms(&client_lines));
        for line in &server_lines {
            assert!(client_lines.contains(line), "{line} not seen by the client");
        }
    }
    assert_eq!(ca.leaf_cache_stats().minted, 1);
    assert_eq!(ca.leaf_cache_stats().hits, 1);
}

#[tokio::test]
async fn ip_literal_uses_the_fallback_name() {
    let ca = Arc::new(RunCa::generate(&RunId::generate()).expect("ca"));
    let (log, _) = collecting_keylog(10);
    let fallback = LeafName::parse("127.0.0.1").expect("ip");
    let server = server_config_for(ca.clone(), log, fallback).expect("config");
    let alpn = handshake(server, client_config(&ca, false, None), "127.0.0.1").await;
    assert_eq!(alpn, ALPN_HTTP11);
}

#[tokio::test]
async fn upstream_config_trusts_the_extra_ca() {
    let ca = Arc::new(RunCa::generate(&RunId::generate()).expect("ca"));
    let (log, _) = collecting_keylog(10);
    let server = server_config(ca.clone(), log).expect("config");
    let client = upstream_client_config(Some(ca.cert_pem().as_bytes()), None).expect("client");
    assert_eq!(handshake(server, client, "example.com").await, ALPN_HTTP11);
}

#[test]
fn any_record_minor_version_is_sniffed_as_tls() {
    // Found by fuzzing: a hello with record version 03 05 parsed, but was not sniffed as TLS, so
    // the gateway relayed it unseen. Servers accept such hellos; so must the sniffer.
    let mut bytes = client_hello_bytes("api.openai.com", false);
    for minor in [0x00, 0x05, 0xff] {
        bytes[2] = minor;
        assert!(looks_like_tls(&bytes), "minor {minor:#x}");
        let info = parse_client_hello(&bytes).expect("parses");
        assert_eq!(info.server_name.as_deref(), Some("api.openai.com"));
    }
}

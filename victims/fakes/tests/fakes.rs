//! The fakes seen from a client: real TCP, real TLS trusting only the written CA, hyper's
//! HTTP/1.1 client (and raw sockets where the exact bytes on the wire matter).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use idagent_fakes::{FakeServer, Fakes};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TOKEN: &str = "sk-test-0123456789abcdef";

fn connector(ca_pem: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("read ca.pem") {
        roots.add(cert.expect("parse ca.pem")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// An HTTP/1.1 connection to `addr`, over TLS with `sni` if given.
async fn connect(fakes: &Fakes, addr: SocketAddr, sni: Option<&str>) -> SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    match sni {
        None => handshake(TokioIo::new(tcp)).await,
        Some(name) => {
            let name = ServerName::try_from(name.to_owned()).expect("server name");
            let tls = connector(&fakes.ca_pem_path)
                .connect(name, tcp)
                .await
                .expect("TLS handshake");
            handshake(TokioIo::new(tls)).await
        }
    }
}

async fn handshake<I>(io: I) -> SendRequest<Full<Bytes>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Response<Incoming> {
    sender.ready().await.expect("connection ready");
    sender.send_request(request).await.expect("response")
}

async fn body_bytes(response: Response<Incoming>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

fn chat_request(body: &Value, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::post("/v1/chat/completions")
        .header("host", "api.openai.com")
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

#[tokio::test]
async fn chat_completion_over_tls_is_answered_and_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = idagent_fakes::start(dir.path()).await.expect("start");
    let mut openai = connect(&fakes, fakes.openai_https, Some("api.openai.com")).await;
    let request = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});

    let response = send(&mut openai, chat_request(&request, Some(TOKEN))).await;
    assert_eq!(response.status(), 200);
    let reply: Value = serde_json::from_slice(&body_bytes(response).await).expect("json");
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["model"], "gpt-4o-mini");
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        idagent_fakes::openai_reply()
    );
    assert!(reply["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0);

    let recorded = fakes.requests_to(FakeServer::OpenAiHttps);
    assert_eq!(recorded.len(), 1);
    let recorded = &recorded[0];
    assert!(recorded.tls);
    assert_eq!(recorded.sni.as_deref(), Some("api.openai.com"));
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path_and_query, "/v1/chat/completions");
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(recorded.header("authorization"), Some(bearer.as_str()));
    assert_eq!(recorded.body_json(), Some(request));

    // Same connection, no token: OpenAI's 401 shape.
    let response = send(&mut openai, chat_request(&json!({}), None)).await;
    assert_eq!(response.status(), 401);
    let error: Value = serde_json::from_slice(&body_bytes(response).await).expect("json");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let connections: Vec<u64> = fakes.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections, [connections[0]; 2], "kept alive");
    fakes.shutdown().await;
}

#[tokio::test]
async fn streamed_chat_completion_is_sse_ending_in_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = idagent_fakes::start(dir.path()).await.expect("start");
    let mut openai = connect(&fakes, fakes.openai_https, Some("api.openai.com")).await;
    let request =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let response = send(&mut openai, chat_request(&request, Some(TOKEN))).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii");
    assert!(content_type.starts_with("text/event-stream"));
    let body = body_bytes(response).await;
    let text = std::str::from_utf8(&body).expect("utf-8");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let mut content = String::new();
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event.strip_prefix("data: ").expect("data line");
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).expect("chunk json");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o");
        content.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
    }
    assert_eq!(content, idagent_fakes::OPENAI_REPLY);

    let models = Request::get("/v1/models")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::default())
        .expect("request");
    let models: Value =
        serde_json::from_slice(&body_bytes(send(&mut openai, models).await).await).expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], idagent_fakes::OPENAI_MODELS[0]);
}

#[tokio::test]
async fn google_home_page_over_http_and_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = idagent_fakes::start(dir.path()).await.expect("start");
    for (addr, sni) in [
        (fakes.google_http, None),
        (fakes.google_https, Some("www.google.com")),
    ] {
        let mut google = connect(&fakes, addr, sni).await;
        let home = Request::get("/")
            .header("host", "www.google.com")
            .body(Full::default())
            .expect("request");
        let response = send(&mut google, home).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/html; charset=ISO-8859-1");
        assert_eq!(headers["transfer-encoding"], "chunked");
        assert_eq!(headers["set-cookie"], idagent_fakes::GOOGLE_SET_COOKIE);
        assert_eq!(body_bytes(response).await, idagent_fakes::google_html());

        let missing = Request::get("/nothing?x=1")
            .body(Full::default())
            .expect("request");
        assert_eq!(send(&mut google, missing).await.status(), 404);
    }
    let recorded = fakes.requests();
    let seen: Vec<_> = recorded
        .iter()
        .map(|r| (r.server, r.tls, r.path_and_query.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (FakeServer::GoogleHttp, false, "/"),
            (FakeServer::GoogleHttp, false, "/nothing?x=1"),
            (FakeServer::GoogleHttps, true, "/"),
            (FakeServer::GoogleHttps, true, "/nothing?x=1"),
        ]
    );
    assert_eq!(recorded[2].sni.as_deref(), Some("www.google.com"));
}

#[tokio::test]
async fn each_https_fake_presents_only_its_own_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = idagent_fakes::start(dir.path()).await.expect("start");
    let tcp = TcpStream::connect(fakes.openai_https)
        .await
        .expect("connect");
    let name = ServerName::try_from("www.google.com").expect("name");
    let handshake = connector(&fakes.ca_pem_path).connect(name, tcp).await;
    assert!(
        handshake.is_err(),
        "openai's leaf must not verify as google"
    );
}

#[tokio::test]
async fn sse_probe_streams_first_then_last_after_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = idagent_fakes::start(dir.path()).await.expect("start");
    let mut stream = connect(&fakes, fakes.openai_https, Some("api.openai.com")).await;
    let sse = Request::get("/sse").body(Full::default()).expect("request");
    let response = send(&mut stream, sse).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut received = Vec::new();
    while received != idagent_fakes::SSE_FIRST_EVENT {
        let frame = body.frame().await.expect("first event").expect("frame");
        received.extend_from_slice(&frame.into_data().unwrap_or_default());
    }
    assert!(fakes.sse_outcomes().is_empty(), "still waiting for the ack");

    // The ack goes to another fake on another connection.
    let mut other = connect(&fakes, fakes.google_http, None).await;
    let ack = Request::get("/ack").body(Full::default()).expect("request");
    assert_eq!(send(&mut other, ack).await.status(), 200);

    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, idagent_fakes::SSE_LAST_EVENT);
    assert!(fakes.ack_seen_before_last());
    assert_eq!(fakes.sse_outcomes(), [true]);
}

#[tokio::test]
async fn a_restart_in_the_same_directory_keeps_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = idagent_fakes::start(dir.path()).await.expect("start");
    let trusted = std::fs::read(&first.ca_pem_path).expect("ca.pem");
    let key = std::fs::read(dir.path().join(idagent_fakes::CA_KEY_FILE)).expect("key");
    first.shutdown().await;

    let second = idagent_fakes::start(dir.path()).await.expect("restart");
    let key_again = std::fs::read(dir.path().join(idagent_fakes::CA_KEY_FILE)).expect("key");
    assert_eq!(key, key_again);
    // A client still holding the first run's ca.pem verifies the second run's leaf.
    let old_ca = dir.path().join("old-ca.pem");
    std::fs::write(&old_ca, trusted).expect("write");
    let tcp = TcpStream::connect(second.google_https)
        .await
        .expect("connect");
    let name = ServerName::try_from("www.google.com").expect("name");
    connector(&old_ca)
        .connect(name, tcp)
        .await
        .expect("old CA still verifies");
}

/// Sends `request` on a fresh connection and reads until the server closes.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.write_all(request).expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn blocking_handle_serves_sync_tests_and_expect_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fakes = idagent_fakes::start_blocking(dir.path()).expect("start");
    assert_eq!(
        fakes.upstream_map_args(),
        [
            format!("www.google.com:80={}", fakes.google_http),
            format!("www.google.com:443={}", fakes.google_https),
            format!("api.openai.com:443={}", fakes.openai_https),
        ]
    );
    assert!(fakes.google_http.ip().is_loopback());
    let map = std::fs::read_to_string(&fakes.upstream_map_path).expect("map file");
    assert!(map.contains(&fakes.upstream_map_args()[2]));

    let page = raw_exchange(
        fakes.google_http,
        b"GET / HTTP/1.1\r\nHost: www.google.com\r\nConnection: close\r\n\r\n",
    );
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("<title>Google</title>"));

    // Expect: 100-continue: the interim answer comes before the body is sent.
    let mut tcp = std::net::TcpStream::connect(fakes.google_http).expect("connect");
    tcp.write_all(
        b"POST /upload HTTP/1.1\r\nHost: www.google.com\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .expect("write head");
    let mut interim = [0u8; 25];
    tcp.read_exact(&mut interim).expect("read 100");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(b"hello").expect("write body");
    let mut rest = String::new();
    tcp.read_to_string(&mut rest).expect("read");
    assert!(rest.starts_with("HTTP/1.1 404"), "{rest}");
    let upload = fakes
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("recorded");
    assert_eq!(upload.body, b"hello");
    assert_eq!(upload.header("expect"), Some("100-continue"));
    fakes.shutdown();
}

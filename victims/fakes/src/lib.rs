//! Local fake upstreams for hermetic idagent tests and demos.
//!
//! [`start`] binds, on 127.0.0.1 ephemeral ports only:
//! - a fake **www.google.com** over HTTP and over HTTPS (`GET /` → a Google-like home page,
//!   sent chunked; anything else → 404),
//! - a fake **api.openai.com** over HTTPS (`POST /v1/chat/completions`, plain or
//!   `"stream": true`, and `GET /v1/models`, all requiring a bearer token),
//! - on every one of them, the SSE streaming probe `GET /sse` + `GET /ack` (see [`SSE_ACK_TIMEOUT`]).
//!
//! It writes a test CA (`ca.pem`, the `--upstream-ca` for idagent), the leaves and
//! `upstream-map.txt` into a directory, and records every request it receives in full —
//! credentials included, since tests exist to check which ones arrived. idagent reaches the
//! fakes through `--upstream-map` ([`Fakes::upstream_map_args`]).
//!
//! Owns: starting, observing and stopping the fakes. Does not own: any of idagent's logic.

#![forbid(unsafe_code)]

mod body;
mod ca;
mod google;
mod openai;
mod record;
mod server;
mod sse;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use ca::{CA_CERT_FILE, CA_KEY_FILE};
pub use google::{google_html, GOOGLE_SET_COOKIE};
pub use openai::{openai_reply, OPENAI_MODELS, OPENAI_REPLY};
pub use record::{FakeServer, Recorded, MAX_RECORDED_REQUESTS};
pub use server::{MAX_BODY_BYTES, MAX_CONNECTIONS_PER_SERVER};
pub use sse::{SSE_ACK_TIMEOUT, SSE_FIRST_EVENT, SSE_LAST_EVENT};

use server::Shared;

/// File name of the upstream map (one `--upstream-map` value a line) inside the directory.
pub const UPSTREAM_MAP_FILE: &str = "upstream-map.txt";

/// Why the fakes could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakesError {
    /// The directory for the CA and certificates could not be created.
    #[error("create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file in that directory could not be read.
    #[error("read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file in that directory could not be written.
    #[error("write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An existing `ca-key.pem` is not a usable private key.
    #[error("load the CA key {path}")]
    LoadCaKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    /// A key or certificate could not be generated.
    #[error("generate a certificate for {name}")]
    GenerateCert {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the server configuration.
    #[error("build the TLS server config")]
    TlsConfig(#[source] rustls::Error),
    /// No port could be bound.
    #[error("bind a port for {server}")]
    Bind {
        server: FakeServer,
        #[source]
        source: io::Error,
    },
    /// The runtime or thread behind [`start_blocking`] could not be created.
    #[error("start the fakes' thread")]
    StartThread(#[source] io::Error),
    /// The fakes' thread ended before reporting whether they started.
    #[error("the fakes' thread ended before the fakes started")]
    ThreadGone,
}

/// Running fakes. Dropping this stops them (open connections are aborted); [`Fakes::shutdown`]
/// also waits until they have stopped.
#[derive(Debug)]
pub struct Fakes {
    /// www.google.com, plain HTTP.
    pub google_http: SocketAddr,
    /// www.google.com, HTTPS.
    pub google_https: SocketAddr,
    /// api.openai.com, HTTPS.
    pub openai_https: SocketAddr,
    /// The test CA certificate (PEM): idagent's `--upstream-ca`.
    pub ca_pem_path: PathBuf,
    /// The upstream map file (for `--upstream-map-file`).
    pub upstream_map_path: PathBuf,
    /// The directory holding the CA, leaves and map (absolute).
    pub dir: PathBuf,
    shared: Arc<Shared>,
    /// `None` for the observer copy a [`FakesHandle`] holds.
    shutdown: Option<watch::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Where the fakes listen: 127.0.0.1 by default; a test of the pod topology puts them at a
/// container's address, in that container's network namespace (`/proc/<pid>/ns/net`), so they
/// are reached the way a cluster service is: by the pod's real interface.
#[derive(Debug, Clone)]
pub struct Listen {
    pub ip: std::net::IpAddr,
    pub netns: Option<PathBuf>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            ip: Ipv4Addr::LOCALHOST.into(),
            netns: None,
        }
    }
}

/// Starts the fakes, writing the CA, the leaves and the upstream map into `dir` (created if
/// missing; a `ca-key.pem` already there is reused). Must run inside a tokio runtime.
pub async fn start(dir: &Path) -> Result<Fakes, FakesError> {
    start_on(dir, &Listen::default()).await
}

/// [`start`], listening as `listen` says.
pub async fn start_on(dir: &Path, listen: &Listen) -> Result<Fakes, FakesError> {
    let dir = std::path::absolute(dir).map_err(|source| FakesError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let ca = ca::TestCa::load_or_generate(&dir)?;
    let google_tls = ca::server_config(ca.mint_leaf("www.google.com", &dir, "google")?)?;
    let openai_tls = ca::server_config(ca.mint_leaf("api.openai.com", &dir, "openai")?)?;
    let shared = Arc::new(Shared::default());
    let (shutdown, stop) = watch::channel(());
    let mut tasks = Vec::new();
    let mut spawn = |server, tls: Option<Arc<rustls::ServerConfig>>| {
        spawn_server(
            server,
            listen,
            tls.map(TlsAcceptor::from),
            &shared,
            &stop,
            &mut tasks,
        )
    };
    let google_http = spawn(FakeServer::GoogleHttp, None)?;
    let google_https = spawn(FakeServer::GoogleHttps, Some(google_tls))?;
    let openai_https = spawn(FakeServer::OpenAiHttps, Some(openai_tls))?;
    let fakes = Fakes {
        google_http,
        google_https,
        openai_https,
        ca_pem_path: ca.cert_path().to_owned(),
        upstream_map_path: dir.join(UPSTREAM_MAP_FILE),
        dir,
        shared,
        shutdown: Some(shutdown),
        tasks,
    };
    let map = fakes.upstream_map_file();
    std::fs::write(&fakes.upstream_map_path, map).map_err(|source| FakesError::WriteFile {
        path: fakes.upstream_map_path.clone(),
        source,
    })?;
    Ok(fakes)
}

/// Binds a 127.0.0.1 ephemeral port for `server` and spawns its accept loop.
fn spawn_server(
    server: FakeServer,
    listen: &Listen,
    tls: Option<TlsAcceptor>,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<()>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<SocketAddr, FakesError> {
    let bind_err = |source| FakesError::Bind { server, source };
    // std's bind is synchronous and instant; it keeps this function non-async. A socket stays
    // in the namespace it was made in, so only the bind needs the thread that joined it.
    let listener = match &listen.netns {
        None => std::net::TcpListener::bind((listen.ip, 0)).map_err(bind_err)?,
        Some(ns) => {
            let (ns, ip) = (ns.clone(), listen.ip);
            std::thread::spawn(move || {
                let file = std::fs::File::open(&ns)?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                std::net::TcpListener::bind((ip, 0))
            })
            .join()
            .map_err(|_| bind_err(std::io::Error::other("bind thread panicked")))?
            .map_err(bind_err)?
        }
    };
    listener.set_nonblocking(true).map_err(bind_err)?;
    let listener = TcpListener::from_std(listener).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let (shared, stop) = (Arc::clone(shared), stop.clone());
    tasks.push(tokio::spawn(server::serve(
        listener, server, tls, shared, stop,
    )));
    Ok(addr)
}

impl Fakes {
    /// Where `server` listens.
    pub fn addr(&self, server: FakeServer) -> SocketAddr {
        match server {
            FakeServer::GoogleHttp => self.google_http,
            FakeServer::GoogleHttps => self.google_https,
            FakeServer::OpenAiHttps => self.openai_https,
        }
    }

    /// idagent `--upstream-map` values, one per fake:
    /// `www.google.com:80=127.0.0.1:P1`, `www.google.com:443=127.0.0.1:P2`,
    /// `api.openai.com:443=127.0.0.1:P3`.
    pub fn upstream_map_args(&self) -> Vec<String> {
        [
            (FakeServer::GoogleHttp, 80),
            (FakeServer::GoogleHttps, 443),
            (FakeServer::OpenAiHttps, 443),
        ]
        .into_iter()
        .map(|(server, port)| format!("{}:{port}={}", server.host(), self.addr(server)))
        .collect()
    }

    /// The whole idagent argument list: `--upstream-map V` for each fake, then
    /// `--upstream-ca PATH`; ready for `Command::args`.
    pub fn idagent_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for value in self.upstream_map_args() {
            args.push("--upstream-map".to_owned());
            args.push(value);
        }
        args.push("--upstream-ca".to_owned());
        args.push(self.ca_pem_path.display().to_string());
        args
    }

    /// The contents of [`UPSTREAM_MAP_FILE`]: a comment, then one map value a line.
    pub fn upstream_map_file(&self) -> String {
        let mut text = String::from("# idagent-fakes: www.google.com and api.openai.com\n");
        for value in self.upstream_map_args() {
            text.push_str(&value);
            text.push('\n');
        }
        text
    }

    /// Every request received so far (up to [`MAX_RECORDED_REQUESTS`]), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorder.snapshot()
    }

    /// The requests `server` received, oldest first.
    pub fn requests_to(&self, server: FakeServer) -> Vec<Recorded> {
        let mut all = self.requests();
        all.retain(|r| r.server == server);
        all
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.recorder.clear();
    }

    /// How many requests were forgotten because more than [`MAX_RECORDED_REQUESTS`] came.
    pub fn dropped_requests(&self) -> u64 {
        self.shared.recorder.dropped()
    }

    /// Whether the most recent `/sse` stream that has ended saw a `/ack` before it sent its
    /// last event; `false` if none has ended. `true` proves every hop forwarded `first` while
    /// the response was still open.
    pub fn ack_seen_before_last(&self) -> bool {
        self.sse_outcomes().last().copied().unwrap_or(false)
    }

    /// For every ended `/sse` stream, oldest first: whether it was acked before its end.
    pub fn sse_outcomes(&self) -> Vec<bool> {
        self.shared.sse.outcomes()
    }

    /// Stops accepting, aborts open connections and waits for the servers to end.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // Fails only if every server has already ended, which is the goal anyway.
            let _ = shutdown.send(());
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// A copy for reading addresses and records from another thread; it does not control the
    /// servers.
    fn observer(&self) -> Self {
        Self {
            google_http: self.google_http,
            google_https: self.google_https,
            openai_https: self.openai_https,
            ca_pem_path: self.ca_pem_path.clone(),
            upstream_map_path: self.upstream_map_path.clone(),
            dir: self.dir.clone(),
            shared: Arc::clone(&self.shared),
            shutdown: None,
            tasks: Vec::new(),
        }
    }
}

/// Fakes running on their own thread and tokio runtime, for synchronous tests. Derefs to
/// [`Fakes`]. Dropping it tells the thread to stop without waiting;
/// [`FakesHandle::shutdown`] waits.
#[derive(Debug)]
pub struct FakesHandle {
    fakes: Fakes,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// [`start`] on a new thread with its own current-thread runtime; returns once the fakes
/// listen (or failed to).
pub fn start_blocking(dir: &Path) -> Result<FakesHandle, FakesError> {
    start_blocking_on(dir, Listen::default())
}

/// [`start_blocking`], listening as `listen` says.
pub fn start_blocking_on(dir: &Path, listen: Listen) -> Result<FakesHandle, FakesError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FakesError::StartThread)?;
    let dir = dir.to_owned();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("idagent-fakes".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let fakes = match start_on(&dir, &listen).await {
                    Ok(fakes) => fakes,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                if started_tx.send(Ok(fakes.observer())).is_err() {
                    return; // the caller is gone
                }
                // A dropped sender (the handle was dropped) means stop as well.
                let _ = stopped.await;
                fakes.shutdown().await;
            });
        })
        .map_err(FakesError::StartThread)?;
    let fakes = started_rx.recv().map_err(|_| FakesError::ThreadGone)??;
    Ok(FakesHandle {
        fakes,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl FakesHandle {
    /// Stops the fakes and waits for their thread to end.
    pub fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic on that thread has already been reported; nothing more to do here.
            let _ = thread.join();
        }
    }
}

impl std::ops::Deref for FakesHandle {
    type Target = Fakes;

    fn deref(&self) -> &Fakes {
        &self.fakes
    }
}

impl Drop for FakesHandle {
    fn drop(&mut self) {
        // Never blocks: the thread sees the closed channel, stops the servers and ends.
        drop(self.stop.take());
    }
}

//! Building blocks for intercepting the guest's TLS: sniffing ClientHellos, the per-run CA and
//! its leaves, the rustls configurations of both legs, and the key log that makes the capture
//! decryptable.
//!
//! Owns: [`parse_client_hello`] / [`looks_like_tls`] (pure parsers of guest bytes), [`RunCa`]
//! (key never leaves the process), [`server_config`] (the guest-facing leg: we are the server),
//! [`upstream_client_config`] (the real-server leg: we are the client) and [`KeyLogSink`].
//! Does not own sockets, flows or HTTP: the gateway drives tokio-rustls with these configs, and
//! the pcap writer (`crate::pcap`) stores the key log lines.
//!
//! Both configs use rustls' ring provider explicitly (not the process default), TLS 1.2 and
//! 1.3, and offer only ALPN `http/1.1`: a guest that offers only `h2` fails the handshake
//! (`no_application_protocol`), a known limit until the gateway speaks HTTP/2.

mod ca;
mod client_hello;
mod keylog;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::{KeyLog, RootCertStore};
use thiserror::Error;

pub use ca::{LeafCacheStats, LeafName, RunCa, CA_VALIDITY, DEFAULT_MAX_LEAF_CERTS};
pub use client_hello::{
    looks_like_tls, parse_client_hello, ClientHelloInfo, SniError, MAX_CLIENT_HELLO_LEN,
};
pub use keylog::{
    nss_key_log_line, KeyLogCallback, KeyLogSink, KeyLogStats, DEFAULT_MAX_KEYLOG_LINES,
};

/// The only application protocol either leg negotiates.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The name a leaf is minted for when the guest sends no SNI and no better name is given.
/// `.invalid` is reserved (RFC 2606), so the certificate can never be valid for a real host.
pub const FALLBACK_SERVER_NAME: &str = "idagent.invalid";

/// Failures of the TLS building blocks.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A server name (SNI from the guest, or a fallback) is not something we mint leaves for.
    #[error("invalid server name {name:?}: {reason}")]
    InvalidServerName { name: String, reason: &'static str },
    /// Generating the run CA failed.
    #[error("generate run ca")]
    GenerateCa(#[source] rcgen::Error),
    /// Minting a leaf certificate failed.
    #[error("mint leaf certificate for {name}")]
    MintLeaf {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused a freshly generated key.
    #[error("load signing key")]
    LoadSigningKey(#[source] rustls::Error),
    /// rustls refused the protocol versions for the provider (a build problem).
    #[error("build rustls config")]
    BuildConfig(#[source] rustls::Error),
    /// The `--upstream-ca` file is not PEM.
    #[error("read upstream ca pem")]
    UpstreamCaPem(#[source] std::io::Error),
    /// The `--upstream-ca` file holds no usable certificate.
    #[error("upstream ca pem holds no usable certificate")]
    UpstreamCaEmpty,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Mints the leaf for the SNI the guest sent, or for a fixed fallback name without SNI.
struct MintingResolver {
    ca: Arc<RunCa>,
    fallback: LeafName,
}

impl fmt::Debug for MintingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintingResolver")
            .field("ca", &self.ca)
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl ResolvesServerCert for MintingResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let leaf = match hello.server_name() {
            Some(sni) => self.ca.leaf_for(sni),
            None => self.ca.leaf_for_name(&self.fallback),
        };
        // `None` makes rustls abort the handshake with an alert; the gateway sees the error on
        // the accept and records the flow. The SNI itself is not logged here (guest-controlled,
        // and the gateway already has it from `parse_client_hello`).
        leaf.map_err(|e| tracing::debug!(error = %e, "tls.leaf_refused"))
            .ok()
    }
}

/// The guest-facing server config: leaves minted per SNI by `ca`, falling back to
/// [`FALLBACK_SERVER_NAME`] without SNI. See [`server_config_for`].
pub fn server_config(
    ca: Arc<RunCa>,
    keylog: Arc<dyn KeyLog>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for(ca, keylog, LeafName::Dns(FALLBACK_SERVER_NAME.to_string()))
}

/// The guest-facing server config with an explicit name for clients that send no SNI (those
/// connecting to an IP literal): pass `LeafName::Ip(original destination)` so the guest's
/// hostname check (against the IP it dialled) passes.
///
/// Each config has its own TLS session cache, so share one config (from [`server_config`]) for
/// all flows with SNI and build a per-flow one only for the SNI-less ones, e.g. after peeking
/// with [`parse_client_hello`] or tokio-rustls' `LazyConfigAcceptor`. The leaf cache lives in
/// `ca` and is shared either way.
///
/// TLS 1.2 and 1.3, ALPN `http/1.1` only, no client authentication, secrets to `keylog`.
pub fn server_config_for(
    ca: Arc<RunCa>,
    keylog: Arc<dyn KeyLog>,
    fallback: LeafName,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::BuildConfig)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(MintingResolver { ca, fallback }));
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.key_log = keylog;
    Ok(Arc::new(config))
}

/// `config` offering HTTP/2 first (ALPN `h2`, then `http/1.1`), for guests that speak it.
pub fn offer_h2(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), ALPN_HTTP11.to_vec()];
    Arc::new(config)
}

/// The config for connecting to real servers: the host's native roots plus, if given, the
/// certificates of `extra_ca_pem` (`--upstream-ca`, e.g. a corporate proxy's CA or a test
/// server's). An empty or unreadable system store is tolerated (logged): with `--upstream-ca`
/// alone, only servers under that CA verify. ALPN `http/1.1`; secrets to `keylog` if given.
pub fn upstream_client_config(
    extra_ca_pem: Option<&[u8]>,
    keylog: Option<Arc<dyn KeyLog>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::warn!(
            errors = native.errors.len(),
            "tls.native_roots_partially_unreadable"
        );
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "tls.native_roots_loaded");
    if let Some(pem) = extra_ca_pem {
        let certs = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::UpstreamCaPem)?;
        let (extra, _) = roots.add_parsable_certificates(certs);
        if extra == 0 {
            return Err(TlsError::UpstreamCaEmpty);
        }
    }
    if roots.is_empty() {
        tracing::warn!("tls.no_upstream_roots");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::BuildConfig)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    if let Some(keylog) = keylog {
        config.key_log = keylog;
    }
    Ok(Arc::new(config))
}

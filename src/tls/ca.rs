//! The per-run certificate authority and the leaf certificates it mints for intercepted names.
//!
//! Owns the CA key pair (generated in memory for one run, never serialised out of this module),
//! name validation for leaves ([`LeafName`]) and the bounded leaf cache. It does not own the
//! TLS configuration that uses the leaves (see `tls.rs`), nor putting the CA certificate into
//! the guest's trust store (the sandbox writes [`RunCa::cert_pem`] there).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

use super::TlsError;
use crate::audit::RunId;

/// Leaf certificates kept per run. A guest can name arbitrarily many hosts; each new name
/// costs a key generation and a signature, and past this many the least recently used leaf is
/// evicted (and re-minted if the name comes back).
pub const DEFAULT_MAX_LEAF_CERTS: usize = 1024;

/// How long the run CA (and so every leaf) is valid. Runs are short; a leaked CA certificate
/// in a guest image stops mattering after this.
pub const CA_VALIDITY: Duration = Duration::days(30);

/// Backdating of `notBefore`, so a guest clock slightly behind the host's still accepts certs.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// Longest DNS name we mint for (RFC 1035: 253 characters in text form).
const MAX_DNS_NAME_LEN: usize = 253;

/// A validated name to mint a leaf for: a lowercase DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeafName {
    /// A DNS name, lowercased, without a trailing dot.
    Dns(String),
    /// An IP literal (clients send no SNI for these; the gateway uses the original destination).
    Ip(IpAddr),
}

impl LeafName {
    /// Validates a name that came from the guest (SNI) or from the gateway (destination IP).
    ///
    /// Accepts IPv4/IPv6 literals and DNS names of at most 253 characters made of labels of
    /// 1–63 letters, digits, `-` or `_` (what rustls' own `DnsName` accepts); one trailing dot is
    /// ignored. Wildcards, empty labels and non-ASCII (U-labels) are refused.
    pub fn parse(name: &str) -> Result<Self, TlsError> {
        let invalid = |reason| TlsError::InvalidServerName {
            name: name
                .chars()
                .take(64)
                .collect::<String>()
                .escape_debug()
                .to_string(),
            reason,
        };
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.is_empty() || trimmed.len() > MAX_DNS_NAME_LEN {
            return Err(invalid("length"));
        }
        if !trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(invalid("charset"));
        }
        let lower = trimmed.to_ascii_lowercase();
        if DnsName::try_from(lower.as_str()).is_err() {
            return Err(invalid("dns syntax"));
        }
        Ok(Self::Dns(lower))
    }

    fn san(&self) -> Result<SanType, rcgen::Error> {
        Ok(match self {
            Self::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
            Self::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

impl fmt::Display for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Counters of the leaf cache, for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeafCacheStats {
    /// Leaves currently cached.
    pub cached: usize,
    /// Leaves minted (cache misses) since the CA was created.
    pub minted: u64,
    /// Requests served from the cache.
    pub hits: u64,
    /// Leaves evicted because the cache was full.
    pub evicted: u64,
}

struct LeafCache {
    entries: HashMap<LeafName, (Arc<CertifiedKey>, u64)>,
    /// Logical clock for least-recently-used eviction.
    tick: u64,
    max: usize,
    stats: LeafCacheStats,
}

impl LeafCache {
    fn lookup(&mut self, name: &LeafName) -> Option<Arc<CertifiedKey>> {
        self.tick += 1;
        let tick = self.tick;
        let (leaf, last_used) = self.entries.get_mut(name)?;
        *last_used = tick;
        self.stats.hits += 1;
        Some(leaf.clone())
    }

    /// Inserts a freshly minted leaf, unless another thread minted the same name meanwhile (the
    /// first one wins, so every handshake for a name sees the same certificate).
    fn insert(&mut self, name: LeafName, leaf: Arc<CertifiedKey>) -> Arc<CertifiedKey> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((existing, last_used)) = self.entries.get_mut(&name) {
            *last_used = tick;
            return existing.clone();
        }
        self.stats.minted += 1;
        while self.entries.len() >= self.max.max(1) {
            // O(n) scan: n ≤ the cap, and this only runs after a mint, which costs far more.
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
            self.stats.evicted += 1;
        }
        self.entries.insert(name, (leaf.clone(), tick));
        leaf
    }
}

/// A certificate authority that exists for one run only.
///
/// ECDSA P-256, `CN=idagent run <run-id> CA`, `CA:TRUE, pathlen:0`, key usage `keyCertSign`,
/// valid for [`CA_VALIDITY`]. The private key stays inside this struct: nothing returns or
/// prints it (`Debug` shows the subject and validity only).
pub struct RunCa {
    common_name: String,
    cert: Certificate,
    key: KeyPair,
    not_after: OffsetDateTime,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<LeafCache>,
}

impl fmt::Debug for RunCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunCa")
            .field("common_name", &self.common_name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl RunCa {
    /// A fresh CA for `run` with the default leaf cache size.
    pub fn generate(run: &RunId) -> Result<Self, TlsError> {
        Self::with_cache_size(run, DEFAULT_MAX_LEAF_CERTS)
    }

    /// A fresh CA for `run` keeping at most `max_leaves` leaf certificates.
    pub fn with_cache_size(run: &RunId, max_leaves: usize) -> Result<Self, TlsError> {
        let now = OffsetDateTime::now_utc();
        let common_name = format!("idagent run {run} CA");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(TlsError::GenerateCa)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "idagent");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        let not_after = params.not_after;
        let cert = params.self_signed(&key).map_err(TlsError::GenerateCa)?;
        Ok(Self {
            common_name,
            cert,
            key,
            not_after,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            leaves: Mutex::new(LeafCache {
                entries: HashMap::new(),
                tick: 0,
                max: max_leaves,
                stats: LeafCacheStats::default(),
            }),
        })
    }

    /// The CA certificate in PEM, for the guest's trust bundle.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &rustls::pki_types::CertificateDer<'static> {
        self.cert.der()
    }

    /// The CA's subject common name (`idagent run <run-id> CA`).
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// SHA-256 of the CA certificate (DER), hex: how the audit log names this CA.
    pub fn fingerprint_sha256(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.cert.der()))
    }

    /// A leaf for `server_name` (validated with [`LeafName::parse`]), from the cache or minted.
    pub fn leaf_for(&self, server_name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        self.leaf_for_name(&LeafName::parse(server_name)?)
    }

    /// A leaf for an already validated name, from the cache or minted.
    pub fn leaf_for_name(&self, name: &LeafName) -> Result<Arc<CertifiedKey>, TlsError> {
        if let Some(leaf) = self.cache().lookup(name) {
            return Ok(leaf);
        }
        // Mint outside the lock: handshakes for other names must not wait on this signature.
        let leaf = Arc::new(self.mint(name)?);
        Ok(self.cache().insert(name.clone(), leaf))
    }

    /// Counters of the leaf cache.
    pub fn leaf_cache_stats(&self) -> LeafCacheStats {
        let cache = self.cache();
        LeafCacheStats {
            cached: cache.entries.len(),
            ..cache.stats
        }
    }

    fn cache(&self) -> MutexGuard<'_, LeafCache> {
        // A panic while holding the lock cannot leave the map inconsistent (every mutation is
        // a single HashMap call), so a poisoned lock is still usable.
        self.leaves.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mint(&self, name: &LeafName) -> Result<CertifiedKey, TlsError> {
        let mint_err = |source| TlsError::MintLeaf {
            name: name.to_string(),
            source,
        };
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, name.to_string());
        params.subject_alt_names = vec![name.san().map_err(mint_err)?];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = self.not_after;
        // rcgen derives the serial from the leaf's (fresh, random) public key: unique per leaf.
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(mint_err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        // Only the leaf: the guest trusts the CA directly, so there is no chain to send.
        CertifiedKey::from_der(vec![cert.der().clone()], key_der, &self.provider)
            .map_err(TlsError::LoadSigningKey)
    }
}

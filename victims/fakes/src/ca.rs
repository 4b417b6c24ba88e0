//! The fakes' test CA and the leaf certificates their HTTPS servers present.
//!
//! Owns: generating (or reusing, from `ca-key.pem` in the fakes' directory) a CA key, writing
//! the CA certificate where idagent's `--upstream-ca` can read it, minting one leaf per fake
//! host, and building the rustls server configs. Does not own: sockets or HTTP.
//!
//! Validity is rcgen's default (1975 to 4096): these certificates only ever meet clients that
//! were told to trust this CA, and a test must not fail because a clock moved.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::FakesError;

/// File name of the CA certificate (PEM) inside the fakes' directory: the `--upstream-ca`.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PEM, mode 0600); when present, [`TestCa::load_or_generate`]
/// reuses it so that a CA trusted once stays valid across restarts of `idagent-fakes`.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Subject common name of the test CA.
const CA_COMMON_NAME: &str = "idagent-fakes test CA";

/// The test CA: its key and an rcgen certificate to sign leaves with.
pub(crate) struct TestCa {
    key: KeyPair,
    cert: Certificate,
    cert_path: PathBuf,
}

impl std::fmt::Debug for TestCa {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// A leaf certificate and its key, ready for rustls.
pub(crate) struct Leaf {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl TestCa {
    /// Reuses `dir/ca-key.pem` if it exists, otherwise generates and writes a new key; either
    /// way (re)writes `dir/ca.pem`. The certificate is re-signed on every start, but with the
    /// same key and subject, so a client holding an older `ca.pem` still verifies new leaves.
    pub(crate) fn load_or_generate(dir: &Path) -> Result<Self, FakesError> {
        fs::create_dir_all(dir).map_err(|source| FakesError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let key_path = dir.join(CA_KEY_FILE);
        let key = match fs::read_to_string(&key_path) {
            Ok(pem) => KeyPair::from_pem(&pem).map_err(|source| FakesError::LoadCaKey {
                path: key_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
                    FakesError::GenerateCert {
                        name: CA_COMMON_NAME.to_owned(),
                        source,
                    }
                })?;
                write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
                key
            }
            Err(source) => {
                return Err(FakesError::ReadFile {
                    path: key_path,
                    source,
                })
            }
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "idagent");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .self_signed(&key)
            .map_err(|source| FakesError::GenerateCert {
                name: CA_COMMON_NAME.to_owned(),
                source,
            })?;
        let cert_path = dir.join(CA_CERT_FILE);
        write_file(&cert_path, cert.pem().as_bytes(), false)?;
        Ok(Self {
            key,
            cert,
            cert_path,
        })
    }

    /// Where the CA certificate was written.
    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Mints a leaf for `host` that also names `localhost` and 127.0.0.1 (so a test can reach
    /// the fake directly), and writes it as `dir/<file_stem>-cert.pem` / `-key.pem`.
    pub(crate) fn mint_leaf(
        &self,
        host: &str,
        dir: &Path,
        file_stem: &str,
    ) -> Result<Leaf, FakesError> {
        let mint_err = |source| FakesError::GenerateCert {
            name: host.to_owned(),
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.subject_alt_names = vec![
            SanType::DnsName(host.try_into().map_err(mint_err)?),
            SanType::DnsName("localhost".try_into().map_err(mint_err)?),
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(mint_err)?;
        write_file(
            &dir.join(format!("{file_stem}-cert.pem")),
            cert.pem().as_bytes(),
            false,
        )?;
        write_file(
            &dir.join(format!("{file_stem}-key.pem")),
            key.serialize_pem().as_bytes(),
            true,
        )?;
        Ok(Leaf {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// A server config presenting `leaf` (without the CA: clients trust the CA directly), TLS 1.2
/// and 1.3, ALPN `http/1.1` only since the fakes speak nothing else.
pub(crate) fn server_config(leaf: Leaf) -> Result<Arc<ServerConfig>, FakesError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(FakesError::TlsConfig)?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert], leaf.key)
        .map_err(FakesError::TlsConfig)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes `bytes` to `path`, mode 0600 for private keys.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), FakesError> {
    let write_err = |source| FakesError::WriteFile {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write_err)?;
    file.write_all(bytes).map_err(write_err)
}

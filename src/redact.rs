//! Credentials appear only as fingerprints: the one place secrets are turned into text that may
//! reach the audit log, reports or tracing.
//!
//! Owns the fingerprint format, header redaction ([`redact_header`]), the name classifier
//! ([`is_secret_name`] in `names`), the free-text scanner ([`redact_text`], [`redact_bytes`] in
//! `text`, with the credential shapes of `formats`), the relayed-protocol shapes
//! ([`redact_wire`] in `wire`), the command-line rules ([`redact_argv`] in `argv`) and the
//! run's registry of values already seen ([`KnownSecrets`] in `known`). It does not decide
//! what to capture or log.
//!
//! # Fingerprint format (stable; tools may parse it)
//! `KIND:…TAIL:sha256=HEX8`, e.g. `bearer:…wxyz:sha256=1a2b3c4d`.
//! - `KIND`: lowercase `[a-z0-9_.-]`, at most 32 chars (`bearer`, `basic`, `cookie`, `sk-proj`,
//!   `access_token`, the header name …); other characters become `_`.
//! - `…` is U+2026 (it never occurs in tokens, which makes fingerprints recognisable and
//!   redaction idempotent).
//! - `TAIL`: the last 4 characters of the secret, only when the secret has at least
//!   [`MIN_TAIL_SECRET_CHARS`] characters, all 4 are token characters (`A-Za-z0-9-._~+/=`) and
//!   the kind is not `basic` (its tail is part of a password); otherwise empty.
//! - `HEX8`: the first 8 lowercase hex digits of SHA-256 of the whole secret (scheme and kind
//!   excluded), so the same token seen as a header, a cookie or a query parameter correlates.
//!
//! 32 bits of hash identify a key among those seen; they do not protect a low-entropy secret
//! (a password) against a dictionary attack on the fingerprint.

mod argv;
mod formats;
mod known;
mod names;
mod text;
mod wire;

pub use argv::redact_argv;
pub use known::{
    KnownSecrets, Scrubbed, KNOWN_SECRETS_CAP_NOTICE, MAX_KNOWN_SECRETS, MAX_KNOWN_SECRET_BYTES,
    MAX_KNOWN_SECRET_LEN, MIN_KNOWN_SECRET_CHARS,
};
pub use names::is_secret_name;
pub use text::{redact_bytes, redact_text};
pub use wire::redact_wire;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Secrets shorter than this get no tail in their fingerprint.
pub const MIN_TAIL_SECRET_CHARS: usize = 20;
/// Longest kind kept in a fingerprint.
const MAX_KIND_CHARS: usize = 32;
/// The ellipsis that marks a fingerprint.
const ELLIPSIS: char = '…';

/// One credential seen, in the parts a report lists ("credentials seen").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Fingerprint {
    pub kind: String,
    /// Last 4 characters, or empty (see the module docs).
    pub last4: String,
    /// First 8 hex digits of SHA-256 of the secret.
    pub sha256: String,
}

impl Fingerprint {
    /// Fingerprints `secret` under `kind`.
    pub fn new(kind: &str, secret: &str) -> Self {
        let kind = sanitize_kind(kind);
        let digest = Sha256::digest(secret.as_bytes());
        let sha256 = hex::encode(digest.get(..4).unwrap_or_default());
        let tail_start = secret.char_indices().rev().nth(3).map(|(i, _)| i);
        let last4 = match tail_start {
            Some(start)
                if kind != "basic"
                    && secret.chars().count() >= MIN_TAIL_SECRET_CHARS
                    && secret
                        .get(start..)
                        .is_some_and(|t| t.chars().all(is_token_char)) =>
            {
                secret.get(start..).unwrap_or_default().to_string()
            }
            _ => String::new(),
        };
        Fingerprint {
            kind,
            last4,
            sha256,
        }
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{ELLIPSIS}{}:sha256={}",
            self.kind, self.last4, self.sha256
        )
    }
}

/// `KIND:…TAIL:sha256=HEX8` of `secret` (see the module docs).
pub fn fingerprint(kind: &str, secret: &str) -> String {
    Fingerprint::new(kind, secret).to_string()
}

fn sanitize_kind(kind: &str) -> String {
    let kind: String = kind
        .chars()
        .take(MAX_KIND_CHARS)
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if kind.is_empty() {
        "secret".to_string()
    } else {
        kind
    }
}

/// Characters of RFC 6750 `b64token` (bearer tokens), also used for tails.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=')
}

/// Length in bytes of the fingerprint `s` starts with, if it starts with one.
pub(crate) fn fingerprint_len(s: &str) -> Option<usize> {
    // Bounded search: this runs at every word boundary of scanned text.
    let colon = s.bytes().take(MAX_KIND_CHARS + 1).position(|b| b == b':')?;
    let kind = s.get(..colon)?;
    if kind.is_empty()
        || kind.len() > MAX_KIND_CHARS
        || !kind.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
    {
        return None;
    }
    let rest = s.get(colon + 1..)?.strip_prefix(ELLIPSIS)?;
    let tail_len: usize = rest
        .chars()
        .take(4)
        .take_while(|c| is_token_char(*c))
        .map(char::len_utf8)
        .sum();
    let hex = rest.get(tail_len..)?.strip_prefix(":sha256=")?;
    let digits = hex.get(..8)?;
    if !digits
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some(s.len() - hex.len() + 8)
}

/// Whether `s` is exactly one fingerprint.
pub fn is_fingerprint(s: &str) -> bool {
    fingerprint_len(s) == Some(s.len())
}

/// `fingerprints` as the `credentials` of an event: bare fingerprints, one per distinct secret
/// (the same secret under two kinds — a `bearer` header and a `token` field — is one: the tail
/// and hash name the secret, the kind only where it was), sorted.
pub fn distinct_secrets(fingerprints: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = fingerprints
        .into_iter()
        .filter(|fp| is_fingerprint(fp))
        .filter(|fp| {
            seen.insert(
                fp.split_once(':')
                    .map_or(fp.as_str(), |(_, id)| id)
                    .to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A redacted header value with the credentials found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactedHeader {
    pub value: String,
    pub found: Vec<Fingerprint>,
}

/// The redacted value of a sensitive header, `None` when the header is not sensitive.
/// See [`redact_header_detailed`].
pub fn redact_header(name: &str, value: &str) -> Option<String> {
    redact_header_detailed(name, value).map(|r| r.value)
}

/// Whether [`redact_header`] redacts a header of this name.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.trim();
    let lower = name.to_ascii_lowercase();
    // CORS headers name credentials and headers, they hold none
    // (`Access-Control-Allow-Credentials: true`).
    if lower.starts_with("access-control-") {
        return false;
    }
    // The classifier sees the name's case: `clientSecret` is two words.
    EXACT_SECRET_HEADERS.contains(&lower.as_str()) || is_secret_name(name)
}

/// Headers redacted whatever [`is_secret_name`] says of them.
const EXACT_SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "x-goog-api-key",
    "x-auth-token",
    "x-amz-security-token",
    "private-token",
    "x-vault-token",
    "x-access-token",
];

/// Authorization schemes kept in front of a credential under any secret header name.
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "negotiate", "ntlm"];

/// Redacts `Authorization` / `Proxy-Authorization` (scheme kept, credentials fingerprinted
/// under the scheme's name), `Cookie` (each value fingerprinted, names kept), `Set-Cookie`
/// (the value of its first pair; attributes kept), and the whole value of API-key headers
/// (`X-Api-Key`, Azure `Api-Key`, `Apikey`, `X-Goog-Api-Key`, GitLab `Private-Token`,
/// `X-Vault-Token`, `X-Access-Token` …) and of any header whose name [`is_secret_name`] judges
/// secret (`X-Hub-Signature-256`, `X-Session-Id`, `X-CSRF-Token`), under the header's name.
/// Header names are case-insensitive. Values that are already fingerprints are kept, so this
/// is idempotent.
pub fn redact_header_detailed(name: &str, value: &str) -> Option<RedactedHeader> {
    let lower = name.trim().to_ascii_lowercase();
    let mut found = Vec::new();
    let value = match lower.as_str() {
        "authorization" | "proxy-authorization" => redact_authorization(value, &mut found),
        "cookie" => value
            .split(';')
            .map(|pair| redact_cookie_pair(pair, &mut found))
            .collect::<Vec<_>>()
            .join(";"),
        "set-cookie" => match value.split_once(';') {
            Some((first, attributes)) => {
                format!("{};{attributes}", redact_cookie_pair(first, &mut found))
            }
            None => redact_cookie_pair(value, &mut found),
        },
        _ if is_secret_header(name) => match value.trim().split_once([' ', '\t']) {
            // `"auth": "Bearer …"`: a scheme is kept as in `Authorization`.
            Some((scheme, _)) if AUTH_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s)) => {
                redact_authorization(value, &mut found)
            }
            _ => secret_or_kept(&lower, value.trim(), &mut found),
        },
        _ => return None,
    };
    Some(RedactedHeader { value, found })
}

fn redact_authorization(value: &str, found: &mut Vec<Fingerprint>) -> String {
    let trimmed = value.trim();
    let scheme_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b))
    };
    match trimmed.split_once([' ', '\t']) {
        Some((scheme, credentials)) if scheme_ok(scheme) => {
            let credentials = credentials.trim();
            let kind = scheme.to_ascii_lowercase();
            format!("{scheme} {}", secret_or_kept(&kind, credentials, found))
        }
        _ => secret_or_kept("authorization", trimmed, found),
    }
}

fn redact_cookie_pair(pair: &str, found: &mut Vec<Fingerprint>) -> String {
    let lead = pair.len() - pair.trim_start().len();
    let (space, pair) = pair.split_at(lead);
    match pair.split_once('=') {
        Some((name, value)) => format!(
            "{space}{name}={}",
            secret_or_kept("cookie", value.trim(), found)
        ),
        None => format!("{space}{}", secret_or_kept("cookie", pair.trim(), found)),
    }
}

/// The fingerprint of `secret`, or `secret` itself when it is empty or already a fingerprint.
fn secret_or_kept(kind: &str, secret: &str, found: &mut Vec<Fingerprint>) -> String {
    if secret.is_empty() || is_fingerprint(secret) {
        return secret.to_string();
    }
    let fp = Fingerprint::new(kind, secret);
    known::noted(&fp.kind, secret);
    let text = fp.to_string();
    found.push(fp);
    text
}

#[cfg(test)]
mod tests;

//! Free-text credential scanner for URLs, headers dumps and captured bodies.
//!
//! Owns finding and replacing: `sk-` keys (`sk-[A-Za-z0-9_-]{16,}`, including `sk-proj-`,
//! `sk-ant-`, `sk-svcacct-`), `Bearer <token>`, and sensitive `name=value` parameters
//! (`api_key`, `access_token`, `token`, `*_token`, `*_secret`, `password` …). Known gaps: JSON
//! fields (`"password": "…"`), percent-encoded parameter names, other vendors' key formats
//! (`ghp_…`, `AKIA…`, `AIza…`) unless they sit in a sensitive parameter or a bearer header.
//!
//! A hand scanner rather than regexes: detectors run only at word boundaries, each reads a
//! bounded prefix or a run it then consumes, and a failed position skips its whole word run,
//! so hostile input costs linear time. All indices are char boundaries (detectors stop at ASCII
//! delimiters), and slicing is checked anyway: any UTF-8 is safe.

use super::{fingerprint_len, is_token_char, Fingerprint, MAX_KIND_CHARS};

/// Characters after `sk-` needed before a string is taken for a key.
const MIN_SK_BODY: usize = 16;
/// Characters a `Bearer` token needs (shorter is likely prose).
const MIN_BEARER_TOKEN: usize = 8;
/// Spaces or tabs allowed between `Bearer` and its token.
const MAX_BEARER_GAP: usize = 4;
/// Longest parameter name considered.
const MAX_PARAM_NAME: usize = 64;

/// What a detector saw at a boundary.
enum Hit {
    /// A secret at `start..end` (offsets from the boundary).
    Secret {
        kind: String,
        start: usize,
        end: usize,
    },
    /// The detector's pattern with a fingerprint where the secret goes: keep these bytes as
    /// they are. Claiming them (rather than passing) makes a second pass decide like the first,
    /// so no other detector re-reads an already redacted region.
    Redacted(usize),
}

/// Replaces every credential found in `text` by its fingerprint; returns the new text and the
/// fingerprints in order of appearance. Idempotent: fingerprints are never re-fingerprinted.
pub fn redact_text(text: &str) -> (String, Vec<Fingerprint>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || bytes.get(i - 1).is_some_and(|b| !is_word_byte(*b));
        let rest = text.get(i..).unwrap_or_default();
        if at_boundary {
            if let Some(len) = fingerprint_len(rest) {
                i += len;
                continue;
            }
            match detect(rest) {
                Some(Hit::Secret { kind, start, end }) => {
                    let (start, end) = (i + start, i + end);
                    out.push_str(text.get(copied..start).unwrap_or_default());
                    let fp = Fingerprint::new(&kind, text.get(start..end).unwrap_or_default());
                    out.push_str(&fp.to_string());
                    found.push(fp);
                    copied = end;
                    i = end;
                    continue;
                }
                Some(Hit::Redacted(len)) => {
                    i += len;
                    continue;
                }
                None => {}
            }
        }
        let run = word_run(rest);
        i += if run > 0 {
            run
        } else {
            rest.chars().next().map_or(1, char::len_utf8)
        };
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    (out, found)
}

/// [`redact_text`] over the first `limit` bytes of a body: valid UTF-8 runs are redacted,
/// invalid bytes are kept as they are. A secret cut by `limit` or split by invalid bytes is
/// only caught if its remaining part still matches.
pub fn redact_bytes(body: &[u8], limit: usize) -> (Vec<u8>, Vec<Fingerprint>) {
    let mut rest = body.get(..limit.min(body.len())).unwrap_or_default();
    let mut out = Vec::with_capacity(rest.len());
    let mut found = Vec::new();
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(_) => (rest.len(), 0),
            Err(e) => (
                e.valid_up_to(),
                e.error_len().unwrap_or(rest.len() - e.valid_up_to()),
            ),
        };
        let (good, tail) = rest.split_at(valid);
        if let Ok(text) = std::str::from_utf8(good) {
            let (redacted, mut seen) = redact_text(text);
            out.extend_from_slice(redacted.as_bytes());
            found.append(&mut seen);
        }
        let (invalid, after) = tail.split_at(bad.min(tail.len()));
        out.extend_from_slice(invalid);
        rest = after;
    }
    (out, found)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn word_run(s: &str) -> usize {
    s.bytes().take_while(|b| is_word_byte(*b)).count()
}

fn detect(rest: &str) -> Option<Hit> {
    detect_param(rest)
        .or_else(|| detect_bearer(rest))
        .or_else(|| detect_sk(rest))
}

/// `name=value` with a sensitive name.
fn detect_param(rest: &str) -> Option<Hit> {
    let name_len = rest
        .bytes()
        .take(MAX_PARAM_NAME + 1)
        .take_while(|b| is_word_byte(*b) || *b == b'.')
        .count();
    if name_len == 0 || name_len > MAX_PARAM_NAME || rest.as_bytes().get(name_len) != Some(&b'=') {
        return None;
    }
    let name = rest.get(..name_len)?.to_ascii_lowercase();
    if !is_sensitive_param(&name) {
        return None;
    }
    let start = name_len + 1;
    let value = rest.get(start..)?;
    let len = value
        .bytes()
        .take_while(|b| !is_value_delimiter(*b))
        .count();
    if let Some(fp) = fingerprint_len(value) {
        return Some(Hit::Redacted(start + fp));
    }
    if len == 0 {
        return None;
    }
    Some(Hit::Secret {
        kind: name,
        start,
        end: start + len,
    })
}

fn is_sensitive_param(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "api_key",
        "apikey",
        "api-key",
        "access_token",
        "token",
        "refresh_token",
        "id_token",
        "auth_token",
        "client_secret",
        "password",
        "passwd",
        "secret",
    ];
    const SUFFIXES: &[&str] = &[
        "_token",
        "-token",
        "_secret",
        "-secret",
        "_apikey",
        "_api_key",
        "-api-key",
        "_password",
    ];
    EXACT.contains(&name) || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Ends a parameter value: URL separators, quotes, markup and whitespace.
fn is_value_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || b.is_ascii_control()
        || matches!(
            b,
            b'&' | b'#' | b'"' | b'\'' | b'<' | b'>' | b';' | b'\\' | b'`'
        )
}

/// `Bearer <b64token>` (scheme case-insensitive).
fn detect_bearer(rest: &str) -> Option<Hit> {
    let scheme = rest.get(..6)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let after = rest.get(6..)?;
    let gap = after
        .bytes()
        .take(MAX_BEARER_GAP + 1)
        .take_while(|b| *b == b' ' || *b == b'\t')
        .count();
    if gap == 0 || gap > MAX_BEARER_GAP {
        return None;
    }
    let token = after.get(gap..)?;
    if let Some(fp) = fingerprint_len(token) {
        return Some(Hit::Redacted(6 + gap + fp));
    }
    let mut len = token.chars().take_while(|c| is_token_char(*c)).count();
    if token.as_bytes().get(len) == Some(&b':') {
        // The run may end in the kind of a fingerprint (`token=token:…`, from redacting a
        // parameter inside a short bearer run): stop before it, so a second pass decides
        // exactly as the first did.
        let window = len.saturating_sub(MAX_KIND_CHARS)..len;
        if let Some(cut) = window.into_iter().find(|p| {
            token
                .get(*p..)
                .is_some_and(|t| fingerprint_len(t).is_some())
        }) {
            len = cut;
        }
    }
    if len < MIN_BEARER_TOKEN {
        return None;
    }
    let start = 6 + gap;
    Some(Hit::Secret {
        kind: "bearer".to_string(),
        start,
        end: start + len,
    })
}

/// `sk-` followed by at least [`MIN_SK_BODY`] key characters.
fn detect_sk(rest: &str) -> Option<Hit> {
    let body = rest.strip_prefix("sk-")?;
    let len = word_run(body);
    if len < MIN_SK_BODY {
        return None;
    }
    let kind = ["proj-", "ant-", "svcacct-", "admin-"]
        .iter()
        .find(|p| body.starts_with(*p))
        .map_or("sk".to_string(), |p| {
            format!("sk-{}", p.trim_end_matches('-'))
        });
    Some(Hit::Secret {
        kind,
        start: 0,
        end: 3 + len,
    })
}

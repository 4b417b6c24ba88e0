//! Free-text credential scanner for URLs, headers dumps, captured bodies and command lines.
//!
//! Owns finding and replacing, at word boundaries:
//! - `Name: value` at the start of a line (after blanks) when the name is a secret header name
//!   (`Authorization: Basic …`, `X-Vault-Token: …`, YAML `password: …`), redacted as
//!   [`super::redact_header`] would,
//! - JSON string fields with a secret name (`"password": "…"`, also `\"token\": \"…\"` in
//!   JSON nested in a string), likewise,
//! - URL userinfo (`scheme://user:PASS@host`: the password; a lone user of 16 characters or
//!   more, which is a token),
//! - `name=value` with a secret name (query, form, fragment, `--password=X`, `TOKEN=X`; the
//!   names of [`super::names`] plus `key`),
//! - `Bearer <token>`, `sk-` keys (`sk-[A-Za-z0-9_-]{16,}`, including `sk-proj-`, `sk-ant-`,
//!   `sk-svcacct-`), and the shapes of `formats` (JWTs, AWS, GitHub, Slack, Google, Stripe …).
//!
//! Known gaps: percent-encoded parameter names, secrets split by a body-capture limit or by
//! invalid UTF-8, names over 64 characters, multi-line values (PEM blocks).
//!
//! A hand scanner rather than regexes: detectors run only at word boundaries, each reads a
//! bounded prefix or a run it then consumes, and a failed position skips its whole word run,
//! so hostile input costs linear time (a failed userinfo read looks at most
//! [`MAX_USERINFO`] bytes ahead). All indices are char boundaries (detectors stop at ASCII
//! delimiters), and slicing is checked anyway: any UTF-8 is safe.

use super::names::{is_secret_name, MAX_NAME};
use super::{fingerprint_len, is_token_char, Fingerprint, MAX_KIND_CHARS};

/// Characters after `sk-` needed before a string is taken for a key.
const MIN_SK_BODY: usize = 16;
/// Characters a `Bearer` token needs (shorter is likely prose).
const MIN_BEARER_TOKEN: usize = 8;
/// Spaces or tabs allowed between `Bearer` and its token.
const MAX_BEARER_GAP: usize = 4;
/// Bytes read ahead for the `@` ending a URL's userinfo.
pub(super) const MAX_USERINFO: usize = 256;
/// A user alone in a URL's userinfo is taken for a token from this length.
const MIN_USERINFO_TOKEN: usize = 16;
/// Blanks allowed around a JSON field's `:`.
const MAX_JSON_GAP: usize = 8;

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
    /// Replace the first `end` bytes by `text` (a header-like value with its scheme or cookie
    /// names kept), having found `found`.
    Rewritten {
        end: usize,
        text: String,
        found: Vec<Fingerprint>,
    },
}

/// Replaces every credential found in `text` by its fingerprint; returns the new text and the
/// fingerprints in order of appearance. Idempotent: fingerprints are never re-fingerprinted.
pub fn redact_text(text: &str) -> (String, Vec<Fingerprint>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    // Only blanks since the last newline (or the start): `Name: value` may begin here.
    let mut line_start = true;
    while i < bytes.len() {
        let at_boundary = i == 0 || bytes.get(i - 1).is_some_and(|b| !is_word_byte(*b));
        let rest = text.get(i..).unwrap_or_default();
        if at_boundary {
            if let Some(len) = fingerprint_len(rest) {
                i += len;
                line_start = false;
                continue;
            }
            match detect(rest, line_start) {
                Some(Hit::Secret { kind, start, end }) => {
                    let (start, end) = (i + start, i + end);
                    out.push_str(text.get(copied..start).unwrap_or_default());
                    let secret = text.get(start..end).unwrap_or_default();
                    let fp = Fingerprint::new(&kind, secret);
                    super::known::noted(&fp.kind, secret);
                    out.push_str(&fp.to_string());
                    found.push(fp);
                    copied = end;
                    i = end;
                    line_start = false;
                    continue;
                }
                Some(Hit::Redacted(len)) => {
                    i += len;
                    line_start = false;
                    continue;
                }
                Some(Hit::Rewritten {
                    end,
                    text: new,
                    found: mut seen,
                }) => {
                    out.push_str(text.get(copied..i).unwrap_or_default());
                    out.push_str(&new);
                    found.append(&mut seen);
                    i += end;
                    copied = i;
                    line_start = false;
                    continue;
                }
                None => {}
            }
        }
        let run = word_run(rest);
        let step = if run > 0 {
            run
        } else {
            rest.chars().next().map_or(1, char::len_utf8)
        };
        line_start = match bytes.get(i) {
            Some(b'\n') => true,
            Some(b' ' | b'\t' | b'\r') => line_start,
            _ => false,
        } && run == 0;
        i += step;
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

fn detect(rest: &str, line_start: bool) -> Option<Hit> {
    if line_start {
        if let Some(hit) = detect_header_line(rest) {
            return Some(hit);
        }
    }
    detect_json(rest)
        .or_else(|| detect_userinfo(rest))
        .or_else(|| detect_param(rest))
        .or_else(|| detect_bearer(rest))
        .or_else(|| detect_sk(rest))
        .or_else(|| {
            super::formats::detect_format(rest).map(|(kind, len)| Hit::Secret {
                kind: kind.to_string(),
                start: 0,
                end: len,
            })
        })
}

/// Length of the name (header, parameter, field, flag) `s` starts with, if it is one.
fn name_len(s: &str) -> Option<usize> {
    let len = s
        .bytes()
        .take(MAX_NAME + 1)
        .take_while(|b| is_word_byte(*b) || *b == b'.')
        .count();
    (len > 0 && len <= MAX_NAME).then_some(len)
}

/// `value` under `name` redacted as a header's, as a hit over `rest[..end]` whose first
/// `value_start` bytes are kept; `None` when the name is not a secret's.
fn header_hit(rest: &str, name: &str, value_start: usize, end: usize) -> Option<Hit> {
    let value = rest.get(value_start..end)?;
    let redacted = super::redact_header_detailed(name, value)?;
    if redacted.found.is_empty() && redacted.value == value {
        return Some(Hit::Redacted(end));
    }
    let mut text = rest.get(..value_start)?.to_string();
    text.push_str(&redacted.value);
    Some(Hit::Rewritten {
        end,
        text,
        found: redacted.found,
    })
}

/// `Name: value` (or `Name:value`) to the end of the line, for a secret header name.
fn detect_header_line(rest: &str) -> Option<Hit> {
    let len = name_len(rest)?;
    let bytes = rest.as_bytes();
    if bytes.get(len) != Some(&b':') {
        return None;
    }
    // `https://…`, `a::b`, and an empty value are no header.
    if matches!(bytes.get(len + 1), None | Some(b'/' | b':' | b'\r' | b'\n')) {
        return None;
    }
    let name = rest.get(..len)?;
    if !super::is_secret_header(name) {
        return None;
    }
    let gap = bytes
        .get(len + 1..)?
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    let value_start = len + 1 + gap;
    let line = bytes
        .get(value_start..)?
        .iter()
        .take_while(|b| **b != b'\r' && **b != b'\n')
        .count();
    let trimmed = rest.get(value_start..value_start + line)?.trim_end().len();
    if trimmed == 0 {
        return None;
    }
    header_hit(rest, name, value_start, value_start + trimmed)
}

/// `"name": "value"` (or, in JSON nested in a string, `\"name\": \"value\"`) for a secret
/// name; the value ends at its closing quote, a newline, or the end of the text.
fn detect_json(rest: &str) -> Option<Hit> {
    let bytes = rest.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let len = name_len(rest.get(1..)?)?;
    let name = rest.get(1..1 + len)?;
    let mut p = 1 + len;
    let escaped = bytes.get(p) == Some(&b'\\');
    p += usize::from(escaped);
    if bytes.get(p) != Some(&b'"') {
        return None;
    }
    p += 1;
    let blanks = |from: usize| {
        bytes
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take(MAX_JSON_GAP)
            .take_while(|b| b.is_ascii_whitespace())
            .count()
    };
    p += blanks(p);
    if bytes.get(p) != Some(&b':') {
        return None;
    }
    p += 1;
    p += blanks(p);
    if escaped {
        if bytes.get(p) != Some(&b'\\') {
            return None;
        }
        p += 1;
    }
    if bytes.get(p) != Some(&b'"') {
        return None;
    }
    let value_start = p + 1;
    if !super::is_secret_header(name) {
        return None;
    }
    let mut end = value_start;
    let mut in_escape = false;
    while let Some(&b) = bytes.get(end) {
        if b == b'\n' || (b == b'"' && !in_escape) || (escaped && b == b'\\') {
            break;
        }
        in_escape = !in_escape && b == b'\\';
        end += 1;
    }
    // Stop on a char boundary (the scan stops only at ASCII bytes, or at the end).
    if end == value_start || !rest.is_char_boundary(end) {
        return None;
    }
    header_hit(rest, name, value_start, end)
}

/// `scheme://user:PASS@` (the password) or `scheme://TOKEN@` (a lone user of at least
/// [`MIN_USERINFO_TOKEN`] characters).
fn detect_userinfo(rest: &str) -> Option<Hit> {
    let bytes = rest.as_bytes();
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let scheme = bytes
        .iter()
        .take(17)
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
        .count();
    if scheme > 16 || bytes.get(scheme..scheme + 3) != Some(b"://") {
        return None;
    }
    let start = scheme + 3;
    let mut at = None;
    for (k, b) in bytes.get(start..)?.iter().take(MAX_USERINFO).enumerate() {
        match b {
            b'@' => {
                at = Some(start + k);
                break;
            }
            b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'\\' | b'`' => return None,
            b if b.is_ascii_whitespace() || b.is_ascii_control() => return None,
            _ => {}
        }
    }
    let at = at?;
    let userinfo = rest.get(start..at)?;
    if fingerprint_len(userinfo) == Some(userinfo.len()) {
        return Some(Hit::Redacted(at));
    }
    let (secret_start, kind) = match userinfo.find(':') {
        Some(colon) => (start + colon + 1, "userinfo"),
        None if userinfo.chars().count() >= MIN_USERINFO_TOKEN => (start, "userinfo"),
        None => return None,
    };
    let secret = rest.get(secret_start..at)?;
    if secret.is_empty() {
        return None;
    }
    if fingerprint_len(secret) == Some(secret.len()) {
        return Some(Hit::Redacted(at));
    }
    Some(Hit::Secret {
        kind: kind.to_string(),
        start: secret_start,
        end: at,
    })
}

/// `name=value` with a sensitive name.
fn detect_param(rest: &str) -> Option<Hit> {
    let name_len = name_len(rest)?;
    if rest.as_bytes().get(name_len) != Some(&b'=') {
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
        kind: name.trim_start_matches('-').to_string(),
        start,
        end: start + len,
    })
}

/// A secret name ([`is_secret_name`]) or `key` (Google's `?key=AIza…`, signed URLs).
fn is_sensitive_param(name: &str) -> bool {
    is_secret_name(name) || name == "key"
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

//! Credentials recognised by their own shape, wherever they appear: JWTs and vendors' key
//! formats.
//!
//! Owns the shapes, each a prefix plus a bounded run of key characters read once:
//! - JWT/JWS/JWE (`eyJ…​.…​.…`, 3 to 5 base64url segments; kind `jwt`),
//! - AWS access key ids `AKIA`/`ASIA` + 16 (`aws`), GitHub `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` and
//!   `github_pat_` (`github`), GitLab `glpat-` (`gitlab`), Slack `xox[abprs]-`/`xapp-`
//!   (`slack`), Stripe `sk_`/`rk_` + `live_`/`test_` (`stripe`), Google `AIza` (`google`),
//!   npm `npm_` (`npm`), Hugging Face `hf_` (`huggingface`).
//!
//! OpenAI/Anthropic `sk-` keys are `text`'s (their kinds name the key's sub-format). Does not
//! scan: the caller calls [`detect_format`] at word boundaries only.

/// Shortest JWT header segment (`eyJ` + the start of `{"alg"…`).
const MIN_JWT_HEADER: usize = 10;
/// Shortest JWT payload segment.
const MIN_JWT_PAYLOAD: usize = 4;
/// Most segments (JWE has 5).
const MAX_JWT_SEGMENTS: usize = 5;

/// Prefixes and the key characters each needs after the prefix.
const PREFIXED: &[(&str, usize, &str)] = &[
    ("ghp_", 30, "github"),
    ("gho_", 30, "github"),
    ("ghu_", 30, "github"),
    ("ghs_", 30, "github"),
    ("ghr_", 30, "github"),
    ("github_pat_", 22, "github"),
    ("glpat-", 20, "gitlab"),
    ("xoxa-", 10, "slack"),
    ("xoxb-", 10, "slack"),
    ("xoxp-", 10, "slack"),
    ("xoxr-", 10, "slack"),
    ("xoxs-", 10, "slack"),
    ("xapp-", 10, "slack"),
    ("sk_live_", 16, "stripe"),
    ("sk_test_", 16, "stripe"),
    ("rk_live_", 16, "stripe"),
    ("rk_test_", 16, "stripe"),
    ("AIza", 30, "google"),
    ("npm_", 30, "npm"),
    ("hf_", 30, "huggingface"),
];

/// Base64url and the key characters of the formats: `A-Za-z0-9_-`.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn key_run(s: &[u8]) -> usize {
    s.iter().take_while(|b| is_key_byte(**b)).count()
}

/// The kind and byte length of the credential `rest` starts with, if it starts with one.
pub(super) fn detect_format(rest: &str) -> Option<(&'static str, usize)> {
    let bytes = rest.as_bytes();
    if bytes.starts_with(b"eyJ") {
        return jwt_len(bytes).map(|len| ("jwt", len));
    }
    if bytes.starts_with(b"AKIA") || bytes.starts_with(b"ASIA") {
        let run = key_run(bytes);
        let id = bytes.get(4..20)?;
        return (run == 20
            && id
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        .then_some(("aws", 20));
    }
    let (prefix, min, kind) = PREFIXED
        .iter()
        .find(|(p, _, _)| bytes.starts_with(p.as_bytes()))?;
    let body = key_run(bytes.get(prefix.len()..)?);
    (body >= *min).then_some((kind, prefix.len() + body))
}

/// Length of the JWT at the start of `bytes`: `eyJ` header, a payload, then an optional
/// signature (empty for `alg: none`, whose token ends in `.`), up to JWE's five segments.
fn jwt_len(bytes: &[u8]) -> Option<usize> {
    let header = key_run(bytes);
    if header < MIN_JWT_HEADER || bytes.get(header) != Some(&b'.') {
        return None;
    }
    let mut end = header + 1;
    let payload = key_run(bytes.get(end..)?);
    if payload < MIN_JWT_PAYLOAD || bytes.get(end + payload) != Some(&b'.') {
        return None;
    }
    end += payload + 1;
    end += key_run(bytes.get(end..)?);
    for _ in 3..MAX_JWT_SEGMENTS {
        if bytes.get(end) != Some(&b'.') {
            break;
        }
        let next = key_run(bytes.get(end + 1..)?);
        if next == 0 {
            break;
        }
        end += 1 + next;
    }
    Some(end)
}

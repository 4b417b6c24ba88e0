//! `idagent::redact::redact_text` over free text a guest controls (URLs, header dumps, bodies),
//! here the lossy UTF-8 of the input.
//!
//! The function reports fingerprints, not the secrets, so the harness recovers each secret by
//! aligning the output with the input: the output must be the input with some spans replaced,
//! in order, by exactly the reported fingerprints, and each replaced span must fingerprint to
//! what was reported. Then:
//! - no reported secret (of at least 8 characters) appears in the output, unless the same
//!   characters also appear in the input outside every redacted span (the scanner is
//!   context-based by design: a token repeated as plain prose is a documented gap);
//! - redaction is idempotent: the output redacts to itself and reports nothing new;
//! - `redact_bytes` agrees with `redact_text` on valid UTF-8 and never panics on the rest.
#![no_main]

use idagent::redact::{is_fingerprint, redact_bytes, redact_text, Fingerprint};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// The alignment oracle is quadratic in the worst case; real redacted texts are small.
const MAX_INPUT: usize = 16 * 1024;
/// Shorter secrets are too likely to occur by chance in fingerprints or prose.
const MIN_LEAK_CHARS: usize = 8;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let input = String::from_utf8_lossy(data);
    let (out, found) = redact_text(&input);

    for fp in &found {
        assert!(is_fingerprint(&fp.to_string()), "malformed fingerprint {fp}");
    }
    let Some(aligned) = align(&input, &out, &found) else {
        panic!("output is not the input with each reported secret replaced by its fingerprint\ninput:  {input:?}\noutput: {out:?}\nfound:  {found:?}");
    };
    for secret in &aligned.secrets {
        if secret.chars().count() >= MIN_LEAK_CHARS
            && out.contains(secret)
            && !aligned.kept.iter().any(|kept| kept.contains(secret))
        {
            panic!("secret {secret:?} survives redaction\ninput:  {input:?}\noutput: {out:?}");
        }
    }

    let (again, found_again) = redact_text(&out);
    assert_eq!(again, out, "redaction is not idempotent\ninput: {input:?}");
    assert!(found_again.is_empty(), "second pass found {found_again:?} in {out:?}");

    let (bytes_out, bytes_found) = redact_bytes(data, data.len());
    if std::str::from_utf8(data).is_ok() {
        assert_eq!(bytes_out, out.as_bytes());
        assert_eq!(bytes_found, found);
    }
    let limit = data.first().map_or(0, |b| usize::from(*b));
    let _ = redact_bytes(data, limit);
});

struct Aligned<'a> {
    /// The replaced spans of the input, one per reported fingerprint.
    secrets: Vec<&'a str>,
    /// The input between them, copied to the output unchanged.
    kept: Vec<&'a str>,
}

/// Splits `input` into kept text and secrets such that replacing each secret by its
/// fingerprint gives `out`; `None` if no such split exists.
fn align<'a>(input: &'a str, out: &str, found: &[Fingerprint]) -> Option<Aligned<'a>> {
    let mut aligned = Aligned {
        secrets: Vec::new(),
        kept: Vec::new(),
    };
    let (mut ci, mut co) = (0, 0);
    for fp in found {
        let text = fp.to_string();
        let (s, e, pos) = out
            .get(co..)?
            .match_indices(text.as_str())
            .find_map(|(rel, _)| {
                let kept = out.get(co..co + rel)?;
                let s = ci + rel;
                if input.get(ci..s)? != kept {
                    return None;
                }
                let e = secret_end(input, s, fp)?;
                Some((s, e, co + rel))
            })?;
        aligned.kept.push(input.get(ci..s)?);
        aligned.secrets.push(input.get(s..e)?);
        ci = e;
        co = pos + text.len();
    }
    let tail = input.get(ci..)?;
    if out.get(co..)? != tail {
        return None;
    }
    aligned.kept.push(tail);
    Some(aligned)
}

/// The end of the secret starting at `start` that fingerprints to `fp`. Secrets never contain
/// ASCII whitespace or ASCII control characters (every detector stops at them), which bounds
/// the search.
fn secret_end(input: &str, start: usize, fp: &Fingerprint) -> Option<usize> {
    let rest = input.get(start..)?;
    let mut hasher = Sha256::new();
    for (i, c) in rest.char_indices() {
        if c.is_ascii_whitespace() || c.is_ascii_control() {
            break;
        }
        let mut buf = [0u8; 4];
        hasher.update(c.encode_utf8(&mut buf).as_bytes());
        let digest = hasher.clone().finalize();
        if hex::encode(&digest[..4]) == fp.sha256 {
            let end = start + i + c.len_utf8();
            if Fingerprint::new(&fp.kind, input.get(start..end)?) == *fp {
                return Some(end);
            }
        }
    }
    None
}

//! Credentials in the first bytes of opaque relayed flows: line-based protocols the gateway
//! does not parse (Redis, FTP, POP3, IMAP, SMTP, plain-text HTTP look-alikes).
//!
//! Owns these shapes, each judged at the start of a line (case-insensitive commands):
//! - `AUTH [user] PASS` (Redis inline; the last argument) and Redis RESP arrays whose command
//!   is `AUTH` (the last element) or that carry `AUTH user pass` (`HELLO 3 AUTH …`),
//! - `AUTH MECH [initial-response]` / `tag AUTHENTICATE MECH …` (SMTP, IMAP, POP3 SASL: the
//!   mechanism is kept, the response and the base64 continuation lines after it are not),
//! - `PASS secret` (FTP, POP3), `tag LOGIN user pass` (IMAP), `APOP user digest` (POP3).
//!
//! Then everything goes through [`super::redact_text`] (`Authorization:` lines, tokens, JWTs,
//! key formats). Does not parse binary protocols (MySQL, PostgreSQL): their credentials are
//! hashed challenges or sit in binary framing the text scanner may or may not catch.

use super::{secret_or_kept, Fingerprint};

/// SASL mechanisms: the word after `AUTH` that is no password.
const SASL: &[&str] = &[
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "DIGEST-MD5",
    "XOAUTH2",
    "OAUTHBEARER",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "EXTERNAL",
    "ANONYMOUS",
    "GSSAPI",
    "NTLM",
];

/// Where a Redis RESP array is.
#[derive(Default)]
struct Resp {
    len: usize,
    next: usize,
    element_follows: bool,
    secret: Option<usize>,
}

/// Redacts the credentials of [the module's shapes](self), then [`super::redact_text`].
/// Idempotent.
pub fn redact_wire(text: &str) -> (String, Vec<Fingerprint>) {
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut resp = Resp::default();
    // After `AUTH MECH`: client lines of base64 are SASL responses.
    let mut sasl = false;
    for line in text.split_inclusive('\n') {
        // Trailing blanks go with the line ending, so `AUTH pw ` still ends in its password.
        let body = line.trim_end();
        let ending = line.get(body.len()..).unwrap_or_default();
        let redacted = if let Some(n) = resp_header(body, b'*') {
            resp = Resp {
                len: n,
                ..Resp::default()
            };
            None
        } else if resp_header(body, b'$').is_some() {
            resp.element_follows = true;
            None
        } else if resp.element_follows {
            resp.element_follows = false;
            let index = resp.next;
            resp.next += 1;
            if resp.secret == Some(index) {
                Some(secret_or_kept("auth", body, &mut found))
            } else {
                if body.eq_ignore_ascii_case("auth") {
                    resp.secret = Some(if index == 0 {
                        resp.len.saturating_sub(1)
                    } else {
                        index + 2
                    });
                }
                None
            }
        } else if sasl && is_base64_line(body) {
            Some(secret_or_kept("auth", body, &mut found))
        } else {
            sasl = false;
            command(body, &mut sasl, &mut found)
        };
        out.push_str(redacted.as_deref().unwrap_or(body));
        out.push_str(ending);
    }
    let (out, mut more) = super::redact_text(&out);
    found.append(&mut more);
    (out, found)
}

/// `n` when `line` is `*n` (array) or `$n` (bulk string) of RESP.
fn resp_header(line: &str, marker: u8) -> Option<usize> {
    let digits = line.strip_prefix(marker as char)?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn is_base64_line(line: &str) -> bool {
    !line.is_empty()
        && line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// The line with its credential redacted, if it is a command of the module's shapes.
fn command(line: &str, sasl: &mut bool, found: &mut Vec<Fingerprint>) -> Option<String> {
    let (first, rest) = split_word(line);
    let (tag, verb, args) = if !first.eq_ignore_ascii_case("auth")
        && ["login", "authenticate"]
            .iter()
            .any(|v| split_word(rest).0.eq_ignore_ascii_case(v))
    {
        // IMAP: `tag VERB args`.
        let (verb, args) = split_word(rest);
        (Some(first), verb, args)
    } else {
        (None, first, rest)
    };
    let prefix = |kept: &str| line.get(..line.len() - kept.len()).unwrap_or_default();
    let verb_lower = verb.to_ascii_lowercase();
    match verb_lower.as_str() {
        "auth" | "authenticate" => {
            let (mech, response) = split_word(args);
            if SASL.iter().any(|m| mech.eq_ignore_ascii_case(m)) {
                *sasl = true;
                (!response.is_empty() && response != "=").then(|| {
                    format!(
                        "{}{}",
                        prefix(response),
                        secret_or_kept("auth", response, found)
                    )
                })
            } else if tag.is_none() && !args.is_empty() {
                // Redis `AUTH [user] pass`: the last argument.
                let pass = args.rsplit_once([' ', '\t']).map_or(args, |(_, p)| p);
                Some(format!(
                    "{}{}",
                    prefix(pass),
                    secret_or_kept("auth", pass, found)
                ))
            } else {
                None
            }
        }
        "pass" if tag.is_none() && !args.is_empty() => Some(format!(
            "{}{}",
            prefix(args),
            secret_or_kept("pass", args, found)
        )),
        "apop" if tag.is_none() => {
            let (_, digest) = split_word(args);
            (!digest.is_empty()).then(|| {
                format!(
                    "{}{}",
                    prefix(digest),
                    secret_or_kept("apop", digest, found)
                )
            })
        }
        "login" if tag.is_some() => {
            let pass = skip_astring(args);
            (!pass.is_empty())
                .then(|| format!("{}{}", prefix(pass), secret_or_kept("login", pass, found)))
        }
        _ => None,
    }
}

/// The first space-separated word of `s` and what follows it (leading blanks skipped).
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.split_once([' ', '\t']) {
        Some((w, rest)) => (w, rest.trim_start()),
        None => (s, ""),
    }
}

/// What follows IMAP's first astring (an atom or a quoted string) in `s`.
fn skip_astring(s: &str) -> &str {
    let s = s.trim_start();
    if let Some(quoted) = s.strip_prefix('"') {
        let mut escape = false;
        for (i, c) in quoted.char_indices() {
            match c {
                '\\' if !escape => escape = true,
                '"' if !escape => return quoted.get(i + 1..).unwrap_or_default().trim_start(),
                _ => escape = false,
            }
        }
        ""
    } else {
        split_word(s).1
    }
}

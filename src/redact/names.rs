//! Which names (of headers, query and form parameters, JSON fields, command-line flags) hold
//! secrets.
//!
//! Owns one classifier, shared by every place that sees a `name` beside a value, so a header,
//! a query parameter and a JSON field are judged alike. A name is split into words (at `-`,
//! `_`, `.` and lower→upper camelCase steps) and is secret when one word is a secret word
//! (`token`, `secret`, `password`, `session`, `cookie`, `signature`, `auth` …) or two adjacent
//! words are a secret pair (`api key`, `private key`, `access key` …), unless its last word
//! says it describes the secret rather than holds it (`token_type`, `password_file`,
//! `--password-stdin`, `auth_url`) or its first word negates it (`--no-password`). Plurals
//! are not words of the list: `max_tokens` and `x-ratelimit-remaining-tokens` are counts.
//! It does not find values; the scanners in `text`, `wire` and `argv` do.

/// Longest name classified; longer ones are not names.
pub(super) const MAX_NAME: usize = 64;

/// Words that make a name secret on their own.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "apikey",
    "credential",
    "credentials",
    "signature",
    "sig",
    "cookie",
    "session",
    "sessionid",
    "sid",
    "auth",
    "authorization",
    "jwt",
    "bearer",
    "privatekey",
    "secretkey",
    "accesskey",
    "csrf",
    "xsrf",
];

/// Adjacent words that make a name secret.
const SECRET_PAIRS: &[(&str, &str)] = &[
    ("api", "key"),
    ("private", "key"),
    ("access", "key"),
    ("secret", "key"),
    ("subscription", "key"),
    ("account", "key"),
    ("signing", "key"),
    ("master", "key"),
    ("encryption", "key"),
    ("client", "key"),
];

/// Last words of names that describe a secret (its type, lifetime, place, input channel)
/// rather than hold it.
const DESCRIPTIVE_LAST: &[&str] = &[
    "type",
    "types",
    "count",
    "length",
    "len",
    "size",
    "limit",
    "url",
    "uri",
    "endpoint",
    "expires",
    "expiry",
    "expiration",
    "ttl",
    "timeout",
    "hint",
    "method",
    "mode",
    "format",
    "path",
    "file",
    "dir",
    "stdin",
    "prompt",
    "env",
    "cmd",
    "command",
    "name",
    "required",
    "enabled",
    "usage",
    "version",
    "kind",
    "policy",
    "header",
    "scheme",
    "scope",
    "scopes",
    "algorithm",
    "alg",
];

/// Whether a value under `name` is a secret (see the module docs). Case-insensitive; leading
/// dashes (command-line flags) are ignored.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.trim().trim_start_matches('-');
    if name.is_empty() || name.len() > MAX_NAME {
        return false;
    }
    let mut words = [""; 12];
    let mut n = 0;
    for word in split_words(name) {
        if n == words.len() {
            return false;
        }
        words[n] = word;
        n += 1;
    }
    let words = &words[..n];
    let lower = |w: &str, list: &[&str]| list.iter().any(|l| w.eq_ignore_ascii_case(l));
    let (Some(first), Some(last)) = (words.first(), words.last()) else {
        return false;
    };
    if n > 1 && (lower(last, DESCRIPTIVE_LAST) || lower(first, &["no", "without"])) {
        return false;
    }
    words.iter().any(|w| lower(w, SECRET_WORDS))
        || words.windows(2).any(|p| {
            SECRET_PAIRS
                .iter()
                .any(|(a, b)| p[0].eq_ignore_ascii_case(a) && p[1].eq_ignore_ascii_case(b))
        })
}

/// Words of `name`: split at `-`, `_`, `.`, and where a lowercase letter or digit is followed
/// by an uppercase one (`apiKey`) or an uppercase run ends (`APIKey` → `API`, `Key`).
fn split_words(name: &str) -> impl Iterator<Item = &str> {
    let bytes = name.as_bytes();
    let mut cuts = Vec::with_capacity(8);
    let mut start = 0;
    for i in 0..=bytes.len() {
        let b = bytes.get(i).copied();
        let separator = matches!(b, None | Some(b'-' | b'_' | b'.'));
        let camel = i > start
            && b.is_some_and(|b| b.is_ascii_uppercase())
            && bytes.get(i - 1).is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase()
                        && bytes.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()))
            });
        if separator || camel {
            if i > start {
                cuts.push((start, i));
            }
            start = if separator { i + 1 } else { i };
        }
    }
    cuts.into_iter().filter_map(move |(a, b)| name.get(a..b))
}

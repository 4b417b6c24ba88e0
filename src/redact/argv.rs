//! Credentials on command lines, where a secret is often known only by the word before it.
//!
//! Owns the rules over words (the arguments, and the blank-separated words of an argument
//! that holds a shell command line, `sh -c "…"`):
//! - a flag with a secret name ([`super::is_secret_name`]: `--password X`, `--token X`,
//!   `--api-key X`, `--client-secret X`) fingerprints the next word; `--no-password`,
//!   `--password-stdin`, `--password-file F` are not secrets,
//! - `-u`/`--user`/`-U`/`--proxy-user` `user:pass` (curl, also `-uuser:pass`, `--user=u:p`)
//!   fingerprints the password, the user is kept,
//! - `-pX` after a MySQL/MariaDB client in the same command (`mysql`, `mysqldump`,
//!   `mariadb` …), and `sshpass -p X` / `-pX`,
//!
//! then every argument goes through [`super::redact_text`] (`--password=X`, `TOKEN=X`,
//! `Authorization: …` given to `-H`, URLs with userinfo, tokens and key formats).

use super::{fingerprint_len, is_secret_name, secret_or_kept, Fingerprint};

/// Programs whose `-pX` is a password (`-p X` is a database name to them).
const MYSQL_LIKE: &[&str] = &[
    "mysql",
    "mysqldump",
    "mysqladmin",
    "mysqlimport",
    "mysqlcheck",
    "mysqlshow",
    "mysqlsh",
    "mysqlpump",
    "mariadb",
    "mariadb-dump",
    "mariadb-admin",
];
/// Flags whose value is `user:password`.
const USER_FLAGS: &[&str] = &["-u", "--user", "-U", "--proxy-user"];
/// Longest argument split into words (a longer one is only scanned as text).
const MAX_SPLIT_ARG: usize = 64 * 1024;

/// `argv` with its credentials replaced by fingerprints (see the module docs). Idempotent.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    let replaced = redact_words(&words, &mut Vec::new());
    argv.iter()
        .zip(replaced)
        .map(|(arg, new)| {
            let arg = new.unwrap_or_else(|| redact_inner(arg));
            super::redact_text(&arg).0
        })
        .collect()
}

/// An argument holding a command line, its words redacted in place (blanks kept).
fn redact_inner(arg: &str) -> String {
    if !arg.contains([' ', '\t', '\n']) || arg.len() > MAX_SPLIT_ARG {
        return arg.to_string();
    }
    let spans: Vec<(usize, &str)> = arg
        .split([' ', '\t', '\n'])
        .scan(0, |at, w| {
            let start = *at;
            *at += w.len() + 1;
            Some((start, w))
        })
        .filter(|(_, w)| !w.is_empty())
        .collect();
    let words: Vec<&str> = spans.iter().map(|(_, w)| *w).collect();
    let replaced = redact_words(&words, &mut Vec::new());
    let mut out = String::with_capacity(arg.len());
    let mut copied = 0;
    for ((start, word), new) in spans.iter().zip(replaced) {
        if let Some(new) = new {
            out.push_str(arg.get(copied..*start).unwrap_or_default());
            out.push_str(&new);
            copied = start + word.len();
        }
    }
    out.push_str(arg.get(copied..).unwrap_or_default());
    out
}

/// The replacement of each word that holds a credential, by the rules over words.
fn redact_words(words: &[&str], found: &mut Vec<Fingerprint>) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = vec![None; words.len()];
    let mut mysql = false;
    let mut sshpass = false;
    for (i, word) in words.iter().enumerate() {
        let program = word.rsplit('/').next().unwrap_or(word);
        let program = program.trim_matches(['\'', '"']);
        if out[i].is_some() {
            continue;
        }
        let next = words.get(i + 1).copied();
        if let Some(value) = word
            .strip_prefix("-p")
            .filter(|v| !v.is_empty() && !word.starts_with("--") && (mysql || sshpass))
        {
            out[i] = Some(format!("-p{}", quoted(value, "password", found)));
        } else if *word == "-p" && sshpass {
            if let (Some(slot), Some(v)) = (out.get_mut(i + 1), next) {
                *slot = Some(quoted(v, "password", found));
            }
        } else if USER_FLAGS.contains(word) {
            if let (Some(slot), Some(v)) = (out.get_mut(i + 1), next) {
                *slot = user_pass(v, found);
            }
        } else if let Some(v) = USER_FLAGS.iter().find_map(|f| {
            word.strip_prefix(f)
                .map(|v| v.strip_prefix('=').unwrap_or(v))
                .filter(|v| {
                    !v.is_empty() && (f.len() == 2 || word.as_bytes().get(f.len()) == Some(&b'='))
                })
        }) {
            let flag = word.get(..word.len() - v.len()).unwrap_or_default();
            out[i] = user_pass(v, found).map(|p| format!("{flag}{p}"));
        } else if word.starts_with('-') && !word.contains('=') && is_secret_name(word) {
            if let (Some(slot), Some(v)) = (out.get_mut(i + 1), next) {
                let kind = word.trim_start_matches('-').to_ascii_lowercase();
                *slot = Some(quoted(v, &kind, found));
            }
        }
        mysql |= MYSQL_LIKE.contains(&program);
        sshpass |= program == "sshpass";
    }
    out
}

/// `user:PASS` with the password fingerprinted; `None` without a password.
fn user_pass(value: &str, found: &mut Vec<Fingerprint>) -> Option<String> {
    let (user, pass) = value.split_once(':')?;
    let core = pass.trim_end_matches(['\'', '"']);
    if core.is_empty() {
        return None;
    }
    let closing = pass.get(core.len()..).unwrap_or_default();
    Some(format!(
        "{user}:{}{closing}",
        secret_or_kept("userinfo", core, found)
    ))
}

/// `value`'s fingerprint, keeping the shell quotes around it; a fingerprint is kept.
fn quoted(value: &str, kind: &str, found: &mut Vec<Fingerprint>) -> String {
    let core = value.trim_matches(['\'', '"']);
    if core.is_empty() || fingerprint_len(core) == Some(core.len()) {
        return value.to_string();
    }
    let lead = value.len() - value.trim_start_matches(['\'', '"']).len();
    let (open, rest) = value.split_at(lead);
    let close = rest.get(core.len()..).unwrap_or_default();
    format!("{open}{}{close}", secret_or_kept(kind, core, found))
}

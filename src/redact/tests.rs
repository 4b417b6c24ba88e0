//! Tests of fingerprints, header redaction and the text scanner.

use super::*;

const KEY: &str = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig-Nature_wxyz";

#[test]
fn fingerprint_format_is_stable() {
    // sha256("abcdefghijklmnopqrstuvwxyz") = 71c480df93d6ae2f…
    assert_eq!(
        fingerprint("Bearer", "abcdefghijklmnopqrstuvwxyz"),
        "bearer:…wxyz:sha256=71c480df"
    );
    // Short secrets and basic credentials show no tail.
    assert_eq!(fingerprint("bearer", "abc"), "bearer:…:sha256=ba7816bf");
    assert!(
        fingerprint("basic", "dXNlcjpwYXNzd29yZGxvbmdsb25nbG9uZw==").starts_with("basic:…:sha256=")
    );
    // Unsafe tail characters are not shown; odd kinds are sanitised.
    assert!(fingerprint("x", "aaaaaaaaaaaaaaaaaaaaaaa:\"x\n").starts_with("x:…:sha256="));
    assert!(fingerprint("A b:c", "secret").starts_with("a_b_c:…:sha256="));
    assert!(fingerprint("", "secret").starts_with("secret:…:sha256="));
    // Multibyte secrets do not panic.
    assert!(fingerprint("k", "ééééééééééééééééééééééé").starts_with("k:…:sha256="));
    let fp = Fingerprint::new("sk-proj", KEY);
    assert_eq!(fp.last4, "1234");
    assert_eq!(fp.sha256.len(), 8);
    assert!(is_fingerprint(&fp.to_string()));
    assert!(!is_fingerprint("bearer:…wxyz:sha256=71c480d"));
    assert!(!is_fingerprint("bearer:...wxyz:sha256=71c480df"));
    assert!(!is_fingerprint("Bearer:…wxyz:sha256=71c480df"));
}

#[test]
fn same_secret_correlates_across_kinds() {
    let a = Fingerprint::new("bearer", JWT);
    let b = Fingerprint::new("access_token", JWT);
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(a.last4, b.last4);
}

#[test]
fn headers_table() {
    let fp = |kind: &str, s: &str| fingerprint(kind, s);
    #[rustfmt::skip]
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("Authorization", format!("Bearer {JWT}"), Some(format!("Bearer {}", fp("bearer", JWT)))),
        ("authorization", "Basic dXNlcjpwYXNz".to_string(), Some(format!("Basic {}", fp("basic", "dXNlcjpwYXNz")))),
        ("AUTHORIZATION", "  bearer   tok123456  ".to_string(), Some(format!("bearer {}", fp("bearer", "tok123456")))),
        ("Authorization", "Digest username=\"u\", response=\"r\"".to_string(), Some(format!( "Digest {}", fp("digest", "username=\"u\", response=\"r\"") ))),
        ("Authorization", "rawtokenwithoutscheme".to_string(), Some(fp("authorization", "rawtokenwithoutscheme"))),
        ("Authorization", "".to_string(), Some(String::new())),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg==".to_string(), Some(format!("Basic {}", fp("basic", "Zm9vOmJhcg==")))),
        ("Cookie", "session=abc123; theme=dark".to_string(), Some(format!( "session={}; theme={}", fp("cookie", "abc123"), fp("cookie", "dark") ))),
        ("cookie", "lonely".to_string(), Some(fp("cookie", "lonely"))),
        ("Set-Cookie", "sid=s3cr3t; Path=/; HttpOnly; Secure".to_string(), Some(format!( "sid={}; Path=/; HttpOnly; Secure", fp("cookie", "s3cr3t") ))),
        ("set-cookie", "sid=s3cr3t".to_string(), Some(format!("sid={}", fp("cookie", "s3cr3t")))),
        ("X-Api-Key", KEY.to_string(), Some(fp("x-api-key", KEY))),
        ("api-key", " azurekey ".to_string(), Some(fp("api-key", "azurekey"))),
        ("X-Goog-Api-Key", "AIzaSyExample".to_string(), Some(fp("x-goog-api-key", "AIzaSyExample"))),
        ("Content-Type", "application/json".to_string(), None),
        ("X-Api-Keys", "x".to_string(), None),
        ("Host", "api.openai.com".to_string(), None),
    ];
    for (name, value, want) in cases {
        assert_eq!(redact_header(name, &value), want, "{name}: {value}");
    }
}

#[test]
fn headers_are_idempotent_and_report_what_they_found() {
    for (name, value) in [
        ("Authorization", format!("Bearer {JWT}")),
        ("Authorization", "Basic dXNlcjpwYXNz".to_string()),
        ("Cookie", "a=1; b=2".to_string()),
        ("Set-Cookie", "sid=x; Path=/".to_string()),
        ("X-Api-Key", KEY.to_string()),
    ] {
        let once = redact_header_detailed(name, &value).expect("sensitive");
        assert!(!once.found.is_empty(), "{name}");
        let twice = redact_header_detailed(name, &once.value).expect("sensitive");
        assert_eq!(twice.value, once.value, "{name}");
        assert!(twice.found.is_empty(), "{name}");
    }
    let r = redact_header_detailed("Cookie", "a=1; b=2").expect("sensitive");
    assert_eq!(r.found.len(), 2);
    assert!(!r.value.contains("=1") && !r.value.contains("=2"));
}

#[test]
fn text_table() {
    #[rustfmt::skip]
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("key is {KEY}."), KEY, "sk-proj"),
        (format!("\"{KEY}\""), KEY, "sk-proj"),
        ("x sk-ant-api03-AAAAAAAAAAAAAAAAAAAA y".to_string(), "sk-ant-api03-AAAAAAAAAAAAAAAAAAAA", "sk-ant"),
        ("sk-0123456789abcdefXYZ".to_string(), "sk-0123456789abcdefXYZ", "sk"),
        (format!("Authorization: Bearer {JWT}\r\n"), JWT, "bearer"),
        (format!("{{\"auth\":\"bearer {JWT}\"}}"), JWT, "bearer"),
        ("GET /v1?api_key=s3cr3tvalue&x=1".to_string(), "s3cr3tvalue", "api_key"),
        ("https://h/cb#access_token=ya29.tok-en&state=1".to_string(), "ya29.tok-en", "access_token"),
        ("?token=abc".to_string(), "abc", "token"),
        ("?Refresh_Token=r1r2r3".to_string(), "r1r2r3", "refresh_token"),
        ("?github_token=ghp_zzz".to_string(), "ghp_zzz", "github_token"),
        ("a.token=dotted".to_string(), "dotted", "token"),
    ];
    for (input, secret, kind) in cases {
        let (out, found) = redact_text(&input);
        assert!(!out.contains(secret), "{input} -> {out}");
        assert_eq!(found.len(), 1, "{input} -> {found:?}");
        assert_eq!(found[0].kind, kind, "{input}");
        assert!(out.contains(&found[0].to_string()), "{out}");
        let (again, none) = redact_text(&out);
        assert_eq!(again, out, "idempotent: {input}");
        assert!(none.is_empty(), "{input}: {none:?}");
    }
}

#[test]
fn text_leaves_non_secrets_alone() {
    for text in [
        "",
        "plain text, nothing here",
        "task-0123456789abcdefghij is not a key",
        "sk-short",
        "Bearer tiny",
        "bearer:",
        "Bearer\u{a0}tokentokentoken",
        "monkey=banana&sort_key=name",
        "token=",
        "mytoken=not-matched-because-prefix",
        "ééé … ✓ 日本語 sk-",
    ] {
        let (out, found) = redact_text(text);
        assert_eq!(out, text);
        assert!(found.is_empty(), "{text}: {found:?}");
    }
}

#[test]
fn several_secrets_in_one_text() {
    let text = format!("a {KEY} b Bearer {JWT} c ?token=t0k&password=hunter2 d");
    let (out, found) = redact_text(&text);
    assert_eq!(found.len(), 4, "{found:?}");
    for secret in [KEY, JWT, "t0k", "hunter2"] {
        assert!(!out.contains(secret), "{out}");
    }
    assert!(out.starts_with("a sk-proj:…1234:sha256="));
    assert!(out.ends_with(" d"));
    assert_eq!(redact_text(&out).0, out);
}

#[test]
fn bytes_redact_within_valid_runs() {
    let mut body = b"\xff\xfe".to_vec();
    body.extend_from_slice(KEY.as_bytes());
    body.extend_from_slice(b" \xc3 token=abc \xe6\x97");
    let (out, found) = redact_bytes(&body, usize::MAX);
    assert_eq!(found.len(), 2);
    assert!(out.starts_with(b"\xff\xfe"));
    assert!(out.ends_with(b" \xe6\x97"));
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains(KEY) && !text.contains("=abc"), "{text}");
    // A prefix limit cuts the body first.
    let (cut, found) = redact_bytes(KEY.as_bytes(), 5);
    assert_eq!(cut, b"sk-pr");
    assert!(found.is_empty());
    assert_eq!(redact_bytes(b"", 10), (Vec::new(), Vec::new()));
}

/// Deterministic xorshift so the test needs no rand crate and failures reproduce.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_text_never_panics_and_is_idempotent() {
    let pieces = [
        "sk-",
        "proj-",
        "Bearer ",
        "bearer\t",
        "token=",
        "api_key=",
        "&",
        "=",
        " ",
        "\"",
        "…",
        ":",
        "sha256=",
        "abcdEFGH1234",
        "é",
        "日",
        "-",
        "_",
        ".",
        "0",
        "x",
        "\u{0}",
        "bearer:…",
        "#",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..3000 {
        let len = (next(&mut seed) % 24) as usize;
        let text: String = (0..len)
            .map(|_| pieces[(next(&mut seed) % pieces.len() as u64) as usize])
            .collect();
        let (once, _) = redact_text(&text);
        let (twice, found) = redact_text(&once);
        assert_eq!(twice, once, "input {text:?}");
        assert!(found.is_empty(), "input {text:?}");
        let _ = redact_bytes(text.as_bytes(), (next(&mut seed) % 64) as usize);
    }
}

#[test]
fn hostile_input_is_handled_whole() {
    // Pathological repetitions of every detector's trigger. Linear time is a property of the
    // scanner's design (bounded work per position); speed is measured by benchmarks, not
    // asserted here. What this checks: no panic, output whole and stable.
    let n = 20_000;
    let inputs = [
        "sk-".repeat(n),
        "a".repeat(3 * n),
        "bearer ".repeat(n),
        "Bearer    ".repeat(n),
        "token=".repeat(n),
        format!("token={}", "x".repeat(3 * n)),
        "a.".repeat(n),
        "bearer:…".repeat(n),
        format!("sk-{}", "A".repeat(3 * n)),
    ];
    for input in &inputs {
        let (once, _) = redact_text(input);
        let (twice, _) = redact_text(&once);
        assert_eq!(once, twice, "not idempotent on a hostile input");
    }
}

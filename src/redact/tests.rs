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
        ("a.token=dotted".to_string(), "dotted", "a.token"),
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

#[test]
fn secret_names_table() {
    for name in [
        "Private-Token",
        "X-Vault-Token",
        "apikey",
        "X-Access-Token",
        "api-key",
        "Ocp-Apim-Subscription-Key",
        "X-Hub-Signature-256",
        "X-Session-Id",
        "X-CSRF-Token",
        "client_secret",
        "refresh_token",
        "private_key",
        "accessToken",
        "APIKey",
        "passwd",
        "--password",
        "--api-key",
        "AWS_SECRET_ACCESS_KEY",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Goog-Signature",
        "sig",
        "auth",
    ] {
        assert!(is_secret_name(name), "{name}");
    }
    for name in [
        "Content-Length",
        "Content-Type",
        "max_tokens",
        "x-ratelimit-remaining-tokens",
        "token_type",
        "auth_url",
        "--password-stdin",
        "--password-file",
        "--no-password",
        "Sec-WebSocket-Key",
        "WWW-Authenticate",
        "Author",
        "sort_key",
        "monkey",
        "bypass",
        "X-Api-Keys",
        "",
        &"token_".repeat(20),
    ] {
        assert!(!is_secret_name(name), "{name}");
    }
}

#[test]
fn new_secret_headers_are_fingerprinted_under_their_name() {
    for (name, value) in [
        ("Private-Token", "glpat-abcdefghijklmnopqrst"),
        ("X-Vault-Token", "hvs.CAESIJ0000000000000"),
        ("apikey", "k1"),
        ("X-Access-Token", "tok"),
        ("api-key", "azure0123"),
        ("X-Hub-Signature-256", "sha256=abcdef"),
        ("X-Session-Id", "s-1"),
    ] {
        let r = redact_header_detailed(name, value).expect(name);
        assert_eq!(r.found.len(), 1, "{name}");
        assert_eq!(
            r.value,
            fingerprint(&name.to_ascii_lowercase(), value),
            "{name}"
        );
    }
    // A scheme is kept under any secret name.
    assert_eq!(
        redact_header("X-Forwarded-Authorization", "Bearer tok123456").as_deref(),
        Some(format!("Bearer {}", fingerprint("bearer", "tok123456")).as_str())
    );
    for harmless in [
        "Content-Length",
        "Accept",
        "X-Request-Id",
        "x-ratelimit-limit-tokens",
        "Access-Control-Allow-Credentials",
        "Access-Control-Allow-Headers",
    ] {
        assert_eq!(redact_header(harmless, "42"), None, "{harmless}");
    }
}

/// `(input, the secret, its kind)`: exactly one fingerprint, idempotent.
fn assert_one(cases: &[(String, &str, &str)], redact: impl Fn(&str) -> (String, Vec<Fingerprint>)) {
    for (input, secret, kind) in cases {
        let (out, found) = redact(input);
        assert!(!out.contains(secret), "{input} -> {out}");
        assert_eq!(found.len(), 1, "{input} -> {out} {found:?}");
        assert_eq!(found[0].kind, *kind, "{input} -> {out}");
        assert_eq!(found[0], Fingerprint::new(kind, secret), "{input}");
        assert!(out.contains(&found[0].to_string()), "{out}");
        let (again, none) = redact(&out);
        assert_eq!(again, out, "idempotent: {input}");
        assert!(none.is_empty(), "{input}: {none:?}");
    }
}

#[test]
fn jwts_and_key_formats_anywhere() {
    let gh = "ghp_0123456789abcdefghijABCDEFGHIJ0123";
    #[rustfmt::skip]
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("GET /v1/session/{JWT} HTTP/1.1"), JWT, "jwt"),
        (format!("{{\"data\":\"{JWT}\"}}"), JWT, "jwt"),
        (format!("id={JWT}"), JWT, "jwt"),
        ("none: eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.".to_string(), "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "jwt"),
        ("key AKIAIOSFODNN7EXAMPLE here".to_string(), "AKIAIOSFODNN7EXAMPLE", "aws"),
        ("ASIAY34FZKBOKMUTVV7A,".to_string(), "ASIAY34FZKBOKMUTVV7A", "aws"),
        (format!("remote: {gh}"), gh, "github"),
        ("gho_16C7e42F292c6912E7710c838347Ae178B4a".to_string(), "gho_16C7e42F292c6912E7710c838347Ae178B4a", "github"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz".to_string(), "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github"),
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKl".to_string(), "xoxb-123456789012-1234567890123-AbCdEfGhIjKl", "slack"),
        ("sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA".to_string(), "sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA", "sk-ant"),
        ("(sk_live_4eC39HqLyjWDarjtT1zdp7dc)".to_string(), "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe"),
        ("AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe".to_string(), "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "google"),
    ];
    assert_one(&cases, redact_text);
    for text in [
        "eyJ short.eyJ.x",
        "AKIAIOSFODNN7EXAMPL",
        "AKIAIOSFODNN7EXAMPLEX",
        "akiaiosfodnn7example",
        "ghp_short",
        "xoxb-1",
        "sk_live_x",
        "AIza",
        "my_AKIAIOSFODNN7EXAMPLE",
    ] {
        assert_eq!(redact_text(text), (text.to_string(), Vec::new()), "{text}");
    }
}

#[test]
fn signed_urls_and_userinfo() {
    #[rustfmt::skip]
    let cases: Vec<(String, &str, &str)> = vec![
        ("https://b.s3.amazonaws.com/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc123def".to_string(), "abc123def", "x-amz-signature"),
        ("https://h/o?X-Amz-Credential=AKIDEXAMPLE%2F20130524&x=1".to_string(), "AKIDEXAMPLE%2F20130524", "x-amz-credential"),
        ("https://h/o?X-Amz-Security-Token=FQoGZXIvYXdzE".to_string(), "FQoGZXIvYXdzE", "x-amz-security-token"),
        ("https://storage.googleapis.com/b/o?X-Goog-Signature=0a1b2c".to_string(), "0a1b2c", "x-goog-signature"),
        ("https://acct.blob.core.windows.net/c/b?sv=2021&sig=Zm9vYmFy%3D".to_string(), "Zm9vYmFy%3D", "sig"),
        ("https://h/x?signature=s1g".to_string(), "s1g", "signature"),
        ("https://maps.googleapis.com/x?key=k3y&q=1".to_string(), "k3y", "key"),
        ("https://user:hunter2@example.com/path".to_string(), "hunter2", "userinfo"),
        ("git clone https://x-access-token:tok3n@github.com/o/r".to_string(), "tok3n", "userinfo"),
        ("redis://:pa55@cache:6379/0".to_string(), "pa55", "userinfo"),
        ("https://0123456789abcdefghij@host/".to_string(), "0123456789abcdefghij", "userinfo"),
    ];
    assert_one(&cases, redact_text);
    for text in [
        "ssh://git@github.com/o/r",
        "https://example.com/a@b",
        "https://example.com/?q=a:b@c",
        "mailto:user@example.com",
        "https://h/x?sigma=1&keys=2",
    ] {
        assert_eq!(redact_text(text), (text.to_string(), Vec::new()), "{text}");
    }
}

#[test]
fn json_fields_and_header_lines() {
    #[rustfmt::skip]
    let cases: Vec<(String, &str, &str)> = vec![
        ("{\"user\":\"a\",\"password\":\"hunter2\"}".to_string(), "hunter2", "password"),
        ("{\"passwd\": \"pw1\"}".to_string(), "pw1", "passwd"),
        ("{\"api_key\" : \"k-1\"}".to_string(), "k-1", "api_key"),
        ("{\"apikey\":\"k-2\"}".to_string(), "k-2", "apikey"),
        ("{\"access_token\":\"at\\\"x\"}".to_string(), "at\\\"x", "access_token"),
        ("{\"refresh_token\":\"rt\"}".to_string(), "rt", "refresh_token"),
        ("{\"client_secret\":\"cs\"}".to_string(), "cs", "client_secret"),
        ("{\"private_key\":\"-----BEGIN KEY-----\\nMIIE\"}".to_string(), "-----BEGIN KEY-----\\nMIIE", "private_key"),
        ("{\"clientSecret\":\"cs2\"}".to_string(), "cs2", "clientsecret"),
        ("{\"body\":\"{\\\"token\\\":\\\"nested\\\"}\"}".to_string(), "nested", "token"),
        ("password=hunter2&user=a".to_string(), "hunter2", "password"),
        ("GET / HTTP/1.1\r\nHost: h\r\nPrivate-Token: glpat-zz\r\n\r\n".to_string(), "glpat-zz", "private-token"),
        ("PROPFIND / HTTP/1.1\r\nAuthorization: Basic dXNlcjpwYXNz\r\n".to_string(), "dXNlcjpwYXNz", "basic"),
        ("db:\n  password: s3cret\n  user: a\n".to_string(), "s3cret", "password"),
        ("X-Vault-Token:hvs.x\n".to_string(), "hvs.x", "x-vault-token"),
    ];
    assert_one(&cases, redact_text);
    for text in [
        "{\"max_tokens\": 100, \"token_type\": \"Bearer\"}",
        "{\"password\": null}",
        "{\"tokens\": \"many\"}",
        "Content-Length: 42\r\n",
        "https://example.com/\n",
        "note: password: is asked\n",
        "{\"password\":\"\"}",
    ] {
        assert_eq!(redact_text(text), (text.to_string(), Vec::new()), "{text}");
    }
}

#[test]
fn wire_shapes_of_relayed_protocols() {
    #[rustfmt::skip]
    let cases: Vec<(String, &str, &str)> = vec![
        ("AUTH s3cretpass\r\nPING\r\n".to_string(), "s3cretpass", "auth"),
        ("AUTH s3cretpass \r\n".to_string(), "s3cretpass", "auth"),
        ("AUTH user\ts3cretpass".to_string(), "s3cretpass", "auth"),
        ("auth default s3cretpass\r\n".to_string(), "s3cretpass", "auth"),
        ("*2\r\n$4\r\nAUTH\r\n$10\r\ns3cretpass\r\n*1\r\n$4\r\nPING\r\n".to_string(), "s3cretpass", "auth"),
        ("*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$10\r\ns3cretpass\r\n".to_string(), "s3cretpass", "auth"),
        ("*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$10\r\ns3cretpass\r\n".to_string(), "s3cretpass", "auth"),
        ("USER anonymous\r\nPASS s3cretpass\r\n".to_string(), "s3cretpass", "pass"),
        ("a1 LOGIN alice s3cretpass\r\n".to_string(), "s3cretpass", "login"),
        ("a1 login \"al ice\" \"s3cret pass\"\r\n".to_string(), "\"s3cret pass\"", "login"),
        ("EHLO x\r\nAUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n".to_string(), "AGFsaWNlAHMzY3JldA==", "auth"),
        ("APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n".to_string(), "c4c9334bac560ecc979e58001b3e22fb", "apop"),
        ("GET / HTTP/1.0\r\nAuthorization: Bearer abcdefgh12\r\n".to_string(), "abcdefgh12", "bearer"),
    ];
    assert_one(&cases, redact_wire);
    // SASL continuation lines: each base64 line after `AUTH LOGIN` is a secret.
    let (out, found) = redact_wire("AUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(found.len(), 2, "{out}");
    assert!(out.starts_with("AUTH LOGIN\r\n") && out.ends_with("MAIL FROM:<a@b>\r\n"));
    assert_eq!(redact_wire(&out).0, out);
    for text in [
        "PING\r\n",
        "+OK\r\n",
        "*1\r\n$4\r\nAUTH\r\n",
        "USER bob\r\n",
        "\u{0}\u{1}",
        "",
    ] {
        assert_eq!(
            redact_wire(text),
            (text.to_string(), Vec::new()),
            "{text:?}"
        );
    }
}

#[test]
fn argv_rules() {
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let fp = |k: &str, s: &str| fingerprint(k, s);
    #[rustfmt::skip]
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (argv(&["curl", "-u", "alice:hunter2", "http://h/"]), argv(&["curl", "-u", &format!("alice:{}", fp("userinfo", "hunter2")), "http://h/"])),
        (argv(&["curl", "-ualice:hunter2"]), argv(&["curl", &format!("-ualice:{}", fp("userinfo", "hunter2"))])),
        (argv(&["curl", "--user=alice:hunter2"]), argv(&["curl", &format!("--user=alice:{}", fp("userinfo", "hunter2"))])),
        (argv(&["tool", "--password", "hunter2"]), argv(&["tool", "--password", &fp("password", "hunter2")])),
        (argv(&["tool", "--password=hunter2"]), argv(&["tool", &format!("--password={}", fp("password", "hunter2"))])),
        (argv(&["tool", "--token=t0k"]), argv(&["tool", &format!("--token={}", fp("token", "t0k"))])),
        (argv(&["tool", "--api-key", "k3y"]), argv(&["tool", "--api-key", &fp("api-key", "k3y")])),
        (argv(&["/usr/bin/mysql", "-uroot", "-phunter2", "db"]), argv(&["/usr/bin/mysql", "-uroot", &format!("-p{}", fp("password", "hunter2")), "db"])),
        (argv(&["sshpass", "-p", "hunter2", "ssh", "h"]), argv(&["sshpass", "-p", &fp("password", "hunter2"), "ssh", "h"])),
        (argv(&["curl", "-H", "Authorization: Basic dXNlcjpwYXNz"]), argv(&["curl", "-H", &format!("Authorization: Basic {}", fp("basic", "dXNlcjpwYXNz"))])),
        (argv(&["git", "clone", "https://u:hunter2@h/r"]), argv(&["git", "clone", &format!("https://u:{}@h/r", fp("userinfo", "hunter2"))])),
        (argv(&["sh", "-c", "mysql -phunter2 && curl -u 'a:b1' x"]), argv(&["sh", "-c", &format!("mysql -p{} && curl -u 'a:{}' x", fp("password", "hunter2"), fp("userinfo", "b1"))])),
        // Not secrets: a port, a flag without value, `-p` elsewhere, `docker login --password-stdin`.
        (argv(&["ssh", "-p2222", "h"]), argv(&["ssh", "-p2222", "h"])),
        (argv(&["gcc", "-pthread", "-u", "sym"]), argv(&["gcc", "-pthread", "-u", "sym"])),
        (argv(&["docker", "login", "--password-stdin", "reg"]), argv(&["docker", "login", "--password-stdin", "reg"])),
        (argv(&["tool", "--password"]), argv(&["tool", "--password"])),
    ];
    for (input, want) in cases {
        let got = redact_argv(&input);
        assert_eq!(got, want, "{input:?}");
        assert_eq!(redact_argv(&got), got, "idempotent: {input:?}");
    }
}

#[test]
fn new_detectors_on_hostile_input() {
    // Linear in the input (checked by hand at 4x sizes); kept small for debug builds.
    let n = 4_000;
    let inputs = [
        "\"password\":\"".repeat(n),
        "\"password\"".repeat(n),
        format!("\"token\":\"{}", "x".repeat(3 * n)),
        "https://".repeat(n),
        format!("https://{}", "a:".repeat(3 * n)),
        "a://b:c@".repeat(n),
        "Authorization: \n".repeat(n),
        "password:x\n".repeat(n),
        "eyJ".repeat(n),
        format!("eyJ{}.{}.", "a".repeat(n), "b".repeat(n)),
        "AKIA".repeat(n),
        "ghp_".repeat(n),
        "*9\r\n$4\r\nAUTH\r\n".repeat(n),
        "AUTH LOGIN\r\n".repeat(n),
        "\\\"token\\\":\\\"".repeat(n),
    ];
    for input in &inputs {
        let (once, _) = redact_text(input);
        assert_eq!(redact_text(&once).0, once);
        let (wire, _) = redact_wire(input);
        assert_eq!(redact_wire(&wire).0, wire);
        let words: Vec<String> = input.split('\n').take(1000).map(str::to_owned).collect();
        let argv = redact_argv(&words);
        assert_eq!(redact_argv(&argv), argv);
    }
}

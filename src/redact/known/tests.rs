use super::*;
use crate::redact::{fingerprint, redact_header_detailed, redact_text};

const KEY: &str = "k3yV4lu3AbCdEfGhIjKlMnOpQrStUvWxYz012345";

#[test]
fn an_echoed_value_becomes_the_fingerprint_it_got_first() {
    let known = KnownSecrets::new(None);
    let header =
        known.learning(|| redact_header_detailed("X-Api-Key", KEY).expect("secret header"));
    assert_eq!(known.len(), 1);
    let body = format!("{{\"echo\":\"{KEY}\",\"again\":\"{KEY}\"}}");
    let s = known.scrub(&body);
    assert!(!s.text.contains(KEY), "{}", s.text);
    assert_eq!(s.found, vec![header.value.clone()]);
    assert_eq!(
        s.text,
        format!("{{\"echo\":\"{0}\",\"again\":\"{0}\"}}", header.value)
    );
    assert_eq!(header.value, fingerprint("x-api-key", KEY));
}

#[test]
fn text_without_known_values_is_unchanged() {
    let known = KnownSecrets::new(None);
    assert_eq!(known.scrub("nothing here").text, "nothing here");
    known.learn("token", KEY);
    let s = known.scrub("still nothing here");
    assert_eq!(s.text, "still nothing here");
    assert!(s.found.is_empty());
}

#[test]
fn short_values_and_fingerprints_are_not_remembered() {
    let known = KnownSecrets::new(None);
    assert!(!known.learn("pass", "1234567"));
    assert!(!known.learn("token", &fingerprint("token", KEY)));
    assert!(known.learn("pass", "12345678"));
    assert!(!known.learn("pass", "12345678"), "known already");
    assert_eq!(known.len(), 1);
}

#[test]
fn count_cap_holds_and_later_values_are_refused() {
    let known = KnownSecrets::new(None);
    for i in 0..MAX_KNOWN_SECRETS {
        assert!(known.learn("token", &format!("secret-value-{i:05}")));
    }
    assert!(!known.learn("token", "one-value-too-many"));
    assert_eq!(known.len(), MAX_KNOWN_SECRETS);
    // The ones kept still scrub.
    let s = known.scrub("x secret-value-00007 y");
    assert_eq!(
        s.text,
        format!("x {} y", fingerprint("token", "secret-value-00007"))
    );
    assert!(known.scrub("one-value-too-many").found.is_empty());
}

#[test]
fn byte_caps_hold() {
    let known = KnownSecrets::new(None);
    assert!(!known.learn("token", &"a".repeat(MAX_KNOWN_SECRET_LEN + 1)));
    let big = MAX_KNOWN_SECRET_LEN;
    let mut n = 0;
    while known.learn("token", &format!("{n:08}{}", "b".repeat(big - 8))) {
        n += 1;
    }
    assert_eq!(n, MAX_KNOWN_SECRET_BYTES / big);
    // A small value still fits under the count cap but not under the byte cap.
    assert!(!known.learn("token", "small-but-late"));
}

#[test]
fn overlapping_values_are_replaced_as_one_region() {
    let known = KnownSecrets::new(None);
    known.learn("a", "abcdefgh12");
    known.learn("b", "efgh12345678");
    let s = known.scrub("<abcdefgh12345678>");
    assert_eq!(s.text, format!("<{}>", fingerprint("a", "abcdefgh12")));
    assert_eq!(s.found.len(), 2);
    // One value inside another: the longer region goes.
    known.learn("c", "XXsecretvalueXX");
    known.learn("d", "secretvalue");
    let s = known.scrub("1 XXsecretvalueXX 2 secretvalue 3");
    assert_eq!(
        s.text,
        format!(
            "1 {} 2 {} 3",
            fingerprint("c", "XXsecretvalueXX"),
            fingerprint("d", "secretvalue")
        )
    );
}

#[test]
fn adjacent_values_are_two_regions() {
    let known = KnownSecrets::new(None);
    known.learn("a", "AAAAAAAA");
    known.learn("b", "BBBBBBBB");
    let s = known.scrub("AAAAAAAABBBBBBBB");
    assert_eq!(
        s.text,
        format!(
            "{}{}",
            fingerprint("a", "AAAAAAAA"),
            fingerprint("b", "BBBBBBBB")
        )
    );
}

#[test]
fn a_value_cut_by_the_capture_is_masked_at_the_end_only_when_cut() {
    let known = KnownSecrets::new(None);
    known.learn("x-api-key", KEY);
    let cut = format!("{{\"echo\":\"{}", &KEY[..13]);
    let s = known.scrub_capture(&cut, true);
    assert_eq!(
        s.text,
        format!("{{\"echo\":\"{}", fingerprint("x-api-key", KEY))
    );
    assert_eq!(s.found, vec![fingerprint("x-api-key", KEY)]);
    assert_eq!(known.scrub_capture(&cut, false).text, cut);
    // Fewer than 4 characters of it are left as they are.
    let tiny = format!("ok {}", &KEY[..3]);
    assert_eq!(known.scrub_capture(&tiny, true).text, tiny);
}

#[test]
fn learning_collects_what_every_redactor_fingerprints() {
    let known = KnownSecrets::new(None);
    known.learning(|| {
        redact_text("GET /x?token=query-token-value-1 HTTP/1.1");
        crate::redact::redact_argv(&["curl".into(), "-u".into(), "me:pa55w0rd-xyz".into()]);
        crate::redact::redact_wire("AUTH redis-password-1\r\n");
    });
    for v in ["query-token-value-1", "pa55w0rd-xyz", "redis-password-1"] {
        let s = known.scrub(&format!("echo {v}"));
        assert!(!s.text.contains(v), "{v} not learned: {}", s.text);
    }
    // Outside learning nothing is collected.
    redact_text("password=outside-learning-1");
    assert!(known.scrub("outside-learning-1").found.is_empty());
}

#[test]
fn nested_learning_reaches_the_outer_registry() {
    let outer = KnownSecrets::new(None);
    let inner = KnownSecrets::new(None);
    outer.learning(|| inner.learning(|| redact_text("Bearer nested-bearer-token")));
    assert_eq!(inner.len(), 1);
    assert_eq!(outer.len(), 1);
}

#[test]
fn env_values_are_learned_by_secret_names_only() {
    let known = KnownSecrets::new(None);
    let env: BTreeMap<String, String> = [
        ("MY_TOKEN", "env-token-value-123"),
        ("PATH", "/usr/local/bin:/usr/bin"),
        ("OPENAI_API_KEY", "sk-not-really-a-key-12345"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    known.learn_env(&env);
    assert_eq!(known.len(), 2);
    let s = known.scrub("x: env-token-value-123 /usr/bin");
    assert_eq!(
        s.text,
        format!(
            "x: {} /usr/bin",
            fingerprint("my_token", "env-token-value-123")
        )
    );
}

#[test]
fn any_utf8_is_safe() {
    let known = KnownSecrets::new(None);
    known.learn("token", "ééééééééé");
    let s = known.scrub_capture("aéééééééééb ééé", true);
    assert!(!s.text.contains("ééééééééé"));
    let s = known.scrub_capture("x éé", true);
    assert!(s.text.starts_with("x "));
}

#[tokio::test]
async fn going_over_a_cap_is_one_notice() {
    use crate::audit::{AuditLog, RunEnd, RunId};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::create(&path, RunId::generate(), 1024).expect("audit log");
    let known = KnownSecrets::new(Some(log.sink()));
    for i in 0..MAX_KNOWN_SECRETS + 10 {
        known.learn("token", &format!("secret-value-{i:05}"));
    }
    assert!(!known.learn("token", &"z".repeat(MAX_KNOWN_SECRET_LEN + 1)));
    log.finish(RunEnd::default()).await.expect("finish");
    let text = std::fs::read_to_string(&path).expect("read log");
    let notices: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "notice" && v["what"] == KNOWN_SECRETS_CAP_NOTICE)
        .collect();
    assert_eq!(notices.len(), 1, "{text}");
    let detail = notices[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("256 credential values"), "{detail}");
    // The notice names no value.
    assert!(!text.contains("secret-value-"), "{text}");
}

//! Parse tests: the example file, and each kind of error at its exact line:col.

use crate::*;

pub(crate) const EXAMPLE: &str = r#"# idagent policy (learned from 1 run)
version: 1
mode: enforce
observation: complete
network:
  rules:
    - id: net:www.google.com:443
      host: www.google.com
      port: 443
      protocol: https
      inspect: l7
      http:
        - id: http:www.google.com:443:GET:/
          method: GET
          path: /
      seen: {count: 1, runs: [20261201T100000Z-abcdef], first: "2026-12-01T10:00:00.1Z", last: "2026-12-01T10:00:00.1Z", example_seq: 14}
dns:
  names: []
udp:
  rules: []
files:
  rules:
    - id: files:/tmp/workspace
      path: /tmp/workspace
      kind: dir
      allow: [create_file]
      observed: [google.html]
  observed_denied: []
exec:
  rules:
    - id: exec:/usr/bin/python3.11
      path: /usr/bin/python3.11
      aliases: [/usr/bin/python3]
"#;

fn error(text: &str) -> String {
    match Policy::parse(text) {
        Ok(_) => "parsed".to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn example_parses() {
    let p = Policy::parse(EXAMPLE).unwrap();
    assert_eq!(p.mode, Mode::Enforce);
    let r = &p.network.rules()[0];
    assert_eq!(r.id, "net:www.google.com:443");
    assert_eq!(r.http[0].path.as_str(), "/");
    assert_eq!(r.seen.as_ref().unwrap().example_seq, 14);
    assert_eq!(p.files.rules()[0].allow, vec![FileOp::CreateFile]);
    assert_eq!(
        p.exec.rules()[0].aliases,
        vec!["/usr/bin/python3".to_string()]
    );
}

#[test]
fn unknown_field_points_at_the_key() {
    let text = "version: 1\nnetwork:\n  rules:\n    - host: a.com\n      port: 80\n      protocol: http\n      colour: red\n";
    assert_eq!(error(text), "7:7: unknown field `colour` in a network rule (expected one of: id, host, port, protocol, inspect, action, mode, http, credentials, risk, seen)");
    assert!(
        error("version: 1\nmood: enforce\n").starts_with("2:1: unknown field `mood` in the policy")
    );
}

#[test]
fn bad_version_and_mode() {
    assert_eq!(
        error("version: 2\n"),
        "1:10: unsupported policy version 2 (this idagent reads version 1)"
    );
    assert_eq!(
        error("mode: enforce\n"),
        "1:1: missing field `version` in the policy"
    );
    assert_eq!(
        error("version: 1\nmode: strict\n"),
        "2:7: unknown mode `strict` (expected report or enforce)"
    );
    assert_eq!(
        error("version: 1\nexec:\n  mode: audit\n"),
        "3:9: unknown mode `audit` (expected report or enforce)"
    );
}

#[test]
fn bad_glob() {
    let text = "version: 1\nnetwork:\n  rules:\n    - host: a.com\n      port: 443\n      protocol: https\n      http:\n        - method: GET\n          path: /a/**/b\n";
    assert_eq!(
        error(text),
        "9:17: bad path pattern `/a/**/b`: `**` is allowed only as the last segment"
    );
}

#[test]
fn files_rule_outside_workspace() {
    let text = "version: 1\nfiles:\n  rules:\n    - path: /etc/**\n      kind: dir\n      allow: [write]\n";
    assert_eq!(
        error(text),
        "4:13: files rules must be under /tmp/workspace; the read-only root stays read-only (`/etc/**`)"
    );
    let dots = "version: 1\nfiles:\n  rules:\n    - path: /tmp/workspace/../etc\n      kind: dir\n      allow: [write]\n";
    assert!(error(dots).starts_with("4:13: files rules must be under /tmp/workspace"));
    let file_remove = "version: 1\nfiles:\n  rules:\n    - path: /tmp/workspace/a\n      kind: file\n      allow: [write, remove]\n";
    assert!(error(file_remove).starts_with("6:22: a file rule can only allow write"));
}

#[test]
fn bad_port_and_host() {
    let text = "version: 1\nudp:\n  rules:\n    - host: a.com\n      port: 70000\n";
    assert_eq!(error(text), "5:13: bad port 70000 (must be 1-65535)");
    let text = "version: 1\nudp:\n  rules:\n    - host: a.com\n      port: http\n";
    assert_eq!(error(text), "5:13: bad port (must be an integer 1-65535)");
    let text = "version: 1\nudp:\n  rules:\n    - host: a.*.com\n      port: 53\n";
    assert!(error(text).starts_with("4:13: bad host `a.*.com`"));
}

#[test]
fn duplicate_id() {
    let text = "version: 1\nexec:\n  rules:\n    - path: /bin/a\n    - path: /bin/b\n      id: exec:/bin/a\n";
    assert_eq!(
        error(text),
        "6:11: duplicate rule id `exec:/bin/a` (first at 4:7)"
    );
    let derived = "version: 1\nudp:\n  rules:\n    - {host: a.com, port: 53}\n    - {host: A.com., port: 53}\n";
    assert_eq!(
        error(derived),
        "5:7: duplicate rule id `udp:a.com:53` (first at 4:7)"
    );
}

#[test]
fn yaml_syntax_error() {
    let e = Policy::parse("version: 1\nnetwork: [\n").unwrap_err();
    assert!(e.message.starts_with("yaml syntax:"), "{e}");
    assert_eq!(e.line, 3);
    let e = Policy::parse("version: 1\nversion: 1\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert_eq!(error(""), "1:1: empty policy file");
    assert_eq!(
        error("version: 1\n---\nversion: 1\n"),
        "3:1: only one yaml document is allowed"
    );
}

#[test]
fn structural_checks() {
    let l4_http = "version: 1\nnetwork:\n  rules:\n    - host: a.com\n      port: 443\n      protocol: tls\n      http:\n        - {method: GET, path: /}\n";
    assert_eq!(
        error(l4_http),
        "7:7: http rules need inspect: l7 (an l4 rule allows the whole connection)"
    );
    let l7_tcp = "version: 1\nnetwork:\n  rules:\n    - host: a.com\n      port: 22\n      protocol: tcp\n      inspect: l7\n";
    assert_eq!(
        error(l7_tcp),
        "7:16: inspect: l7 needs protocol http or https (this rule is tcp)"
    );
    let lower = "version: 1\nnetwork:\n  rules:\n    - host: a.com\n      port: 80\n      protocol: http\n      http:\n        - {method: get, path: /}\n";
    assert_eq!(
        error(lower),
        "8:20: bad method `get` (uppercase like GET, or *)"
    );
    let deny_file = "version: 1\nfiles:\n  rules:\n    - {path: /tmp/workspace, kind: dir, allow: [write], action: deny}\n";
    assert!(error(deny_file).starts_with("4:65: files rules cannot deny"));
    let anchor = "version: 1\nexec:\n  rules:\n    - &a {path: /bin/a}\n    - *a\n";
    // saphyr expands aliases; the copy is then a duplicate rule.
    assert_eq!(
        error(anchor),
        "5:7: duplicate rule id `exec:/bin/a` (first at 4:7)"
    );
}

#[test]
fn defaults_and_shorthands() {
    let text = "version: 1\ndns:\n  names: [Example.ORG., \"*.cdn.example\"]\nnetwork:\n  rules:\n    - {host: a.com, port: 22, protocol: tcp}\n";
    let p = Policy::parse(text).unwrap();
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.observation, Observation::Complete);
    assert_eq!(p.dns.names()[1].id, "dns:example.org");
    assert_eq!(p.network.rules()[0].inspect, Inspect::L4);
    let inc = "version: 1\nobservation:\n  status: incomplete\n  reasons: [gap at seq 9]\n";
    assert_eq!(
        Policy::parse(inc).unwrap().observation,
        Observation::Incomplete {
            reasons: vec!["gap at seq 9".into()]
        }
    );
}

#[test]
fn create_special_cannot_be_allowed() {
    let text = "version: 1\nfiles:\n  rules:\n    - path: /tmp/workspace\n      kind: dir\n      allow: [create_file, create_special]\n";
    assert_eq!(
        error(text),
        "6:28: create_special cannot be allowed: Landlock rights for symlinks and device nodes are never granted"
    );
    // It is a known keyword: observed_denied may name it.
    let denied = "version: 1\nfiles:\n  observed_denied:\n    - {path: /tmp/workspace/l, op: create_special, count: 1}\n";
    assert_eq!(
        Policy::parse(denied).unwrap().files.observed_denied()[0].op,
        FileOp::CreateSpecial
    );
}

//! Evaluate tests: every layer, deny beats allow, order independence, mode resolution.

use crate::*;
use std::net::IpAddr;

const POLICY: &str = r#"
version: 1
mode: enforce
network:
  rules:
    - host: www.google.com
      port: 443
      protocol: https
      http:
        - {method: GET, path: /}
        - {method: GET, path: "/users/{id}", query: [page]}
        - {method: "*", path: "/static/**"}
        - {id: no-admin, method: "*", path: "/static/admin/**", action: deny}
        - {method: POST, path: /upload, mode: report}
    - host: "*.googleapis.com"
      port: 443
      protocol: tls
    - host: plain.example
      port: 80
      protocol: http
      inspect: l4
    - host: 192.0.2.10
      port: 22
      protocol: tcp
    - host: evil.example
      port: 443
      protocol: https
      action: deny
    - host: evil.example
      id: evil-allow
      port: 443
      protocol: https
      inspect: l4
dns:
  mode: report
  names: [extra.example]
udp:
  rules:
    - {host: ntp.example, port: 123}
files:
  mode: report
  rules:
    - {path: /tmp/workspace/out, kind: dir, allow: [create_file, create_dir]}
    - {path: /tmp/workspace/notes.txt, kind: file, allow: [write]}
exec:
  rules:
    - {path: /usr/bin/python3.11, aliases: [/usr/bin/python3, python3]}
    - {path: /usr/bin/curl, action: deny}
    - {path: /usr/bin/curl, id: curl-ok}
"#;

fn policy() -> Policy {
    Policy::parse(POLICY).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn http<'a>(
    scheme: Scheme,
    host: &'a str,
    port: u16,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
) -> Request<'a> {
    Request::Http {
        scheme,
        host,
        port,
        method,
        path,
        query,
        rpc: None,
    }
}

fn verdict(p: &Policy, r: Request<'_>) -> (Verdict, String) {
    let d = evaluate(p, &r);
    (d.verdict, d.rule)
}

fn allow(id: &str) -> (Verdict, String) {
    (Verdict::Allow, id.to_string())
}
fn deny(id: &str) -> (Verdict, String) {
    (Verdict::Deny, id.to_string())
}

#[test]
fn http_layer() {
    let p = policy();
    let g = "www.google.com";
    assert_eq!(
        verdict(&p, http(Scheme::Https, g, 443, "GET", "/", None)),
        allow("http:www.google.com:443:GET:/")
    );
    assert_eq!(
        verdict(
            &p,
            http(Scheme::Https, "WWW.Google.com.", 443, "GET", "/", None)
        )
        .0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&p, http(Scheme::Http, g, 443, "GET", "/", None)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, http(Scheme::Https, g, 443, "HEAD", "/", None)),
        deny(DEFAULT_DENY)
    );
    let users = "http:www.google.com:443:GET:/users/{id}";
    assert_eq!(
        verdict(
            &p,
            http(Scheme::Https, g, 443, "GET", "/users/42", Some("page=2"))
        ),
        allow(users)
    );
    assert_eq!(
        verdict(
            &p,
            http(
                Scheme::Https,
                g,
                443,
                "GET",
                "/users/42",
                Some("page=2&x=1")
            )
        ),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, http(Scheme::Https, g, 443, "GET", "/users/42/x", None)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, http(Scheme::Https, g, 443, "PUT", "/static", None)).0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(
            &p,
            http(Scheme::Https, g, 443, "GET", "/static/admin/x", None)
        ),
        deny("no-admin")
    );
    // l4 http rule: the host rule allows every request; tls rule passes https bytes.
    assert_eq!(
        verdict(
            &p,
            http(Scheme::Http, "plain.example", 80, "DELETE", "/x", None)
        ),
        allow("net:plain.example:80")
    );
    assert_eq!(
        verdict(
            &p,
            http(Scheme::Https, "a.googleapis.com", 443, "GET", "/", None)
        )
        .0,
        Verdict::Allow
    );
    // deny on the host rule beats the l4 allow of another rule for the same host.
    assert_eq!(
        verdict(
            &p,
            http(Scheme::Https, "evil.example", 443, "GET", "/", None)
        ),
        deny("net:evil.example:443")
    );
    let miss = http(Scheme::Https, g, 443, "GET", "/nope", None);
    assert_eq!(
        nearest_rule(&p, &miss).as_deref(),
        Some("net:www.google.com:443")
    );
    assert_eq!(
        nearest_rule(
            &p,
            &http(Scheme::Https, "other.example", 443, "GET", "/", None)
        ),
        None
    );
}

#[test]
fn connect_tls_datagram_layers() {
    let p = policy();
    let any = ip("198.51.100.1");
    let c = |name, addr, port| Request::Connect {
        name,
        addr,
        port,
        proto: Proto::Tcp,
    };
    assert_eq!(
        verdict(&p, c(Some("www.google.com"), any, 443)).0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&p, c(Some("www.google.com"), any, 80)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(verdict(&p, c(None, any, 443)), deny(DEFAULT_DENY));
    assert_eq!(
        verdict(&p, c(None, ip("192.0.2.10"), 22)),
        allow("net:192.0.2.10:22")
    );
    assert_eq!(
        verdict(&p, c(Some("x.googleapis.com"), any, 443)).0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&p, c(Some("googleapis.com"), any, 443)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, c(Some("evil.example"), any, 443)),
        deny("net:evil.example:443")
    );
    let tls = |sni, name, port| Request::Tls {
        sni,
        alpn: &[],
        name,
        addr: any,
        port,
    };
    assert_eq!(
        verdict(&p, tls(Some("a.b.googleapis.com"), None, 443)).0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&p, tls(None, Some("www.google.com"), 443)).0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&p, tls(Some("evil.other"), Some("www.google.com"), 443)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, tls(Some("plain.example"), None, 80)),
        deny(DEFAULT_DENY)
    );
    let dg = |name, port| Request::Datagram {
        name,
        addr: any,
        port,
    };
    assert_eq!(
        verdict(&p, dg(Some("ntp.example"), 123)),
        allow("udp:ntp.example:123")
    );
    assert_eq!(verdict(&p, dg(Some("ntp.example"), 53)), deny(DEFAULT_DENY));
    let udp_connect = Request::Connect {
        name: Some("ntp.example"),
        addr: any,
        port: 123,
        proto: Proto::Udp,
    };
    assert_eq!(verdict(&p, udp_connect).0, Verdict::Allow);
    assert_eq!(
        nearest_rule(&p, &dg(Some("ntp.example"), 53)).as_deref(),
        Some("udp:ntp.example:123")
    );
}

#[test]
fn dns_layer() {
    let p = policy();
    let q = |name| Request::Dns {
        name,
        qtype: "AAAA",
    };
    assert_eq!(
        verdict(&p, q("www.google.com.")),
        allow("net:www.google.com:443")
    );
    assert_eq!(verdict(&p, q("ntp.example")), allow("udp:ntp.example:123"));
    assert_eq!(verdict(&p, q("extra.example")), allow("dns:extra.example"));
    assert_eq!(verdict(&p, q("x.googleapis.com")).0, Verdict::Allow);
    let d = evaluate(&p, &q("nope.example"));
    assert_eq!(
        (d.verdict, d.mode, d.layer),
        (Verdict::Deny, Mode::Report, Layer::Dns)
    );
    assert!(d.would_deny() && !d.enforced());
}

#[test]
fn file_layer_is_what_landlock_enforces() {
    let p = policy();
    let f = |path, op| Request::FileWrite { path, op };
    assert_eq!(
        verdict(&p, f("/tmp/workspace/out/a.txt", FileOp::CreateFile)),
        allow("files:/tmp/workspace/out")
    );
    // Inherited by the whole subtree, as Landlock does.
    assert_eq!(
        verdict(&p, f("/tmp/workspace/out/x/y/a.txt", FileOp::CreateFile)).0,
        Verdict::Allow
    );
    // create_file grants write_file: a created file can be written.
    assert_eq!(
        verdict(&p, f("/tmp/workspace/out/a.txt", FileOp::Write)).0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&p, f("/tmp/workspace/out/a.txt", FileOp::Remove)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, f("/tmp/workspace/out", FileOp::CreateDir)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, f("/tmp/workspace/notes.txt", FileOp::Write)),
        allow("files:/tmp/workspace/notes.txt")
    );
    assert_eq!(
        verdict(&p, f("/tmp/workspace/notes.txt", FileOp::Rename)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, f("/tmp/workspace/out/../../etc/passwd", FileOp::Write)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, f("relative", FileOp::Write)),
        deny(DEFAULT_DENY)
    );
    let d = evaluate(&p, &f("/etc/passwd", FileOp::Write));
    assert_eq!(d.mode, Mode::Report);
    assert_eq!(
        nearest_rule(&p, &f("/tmp/workspace/out/a", FileOp::Remove)).as_deref(),
        Some("files:/tmp/workspace/out")
    );
}

#[test]
fn exec_layer() {
    let p = policy();
    let e = |path| Request::Exec { path, argv: &[] };
    assert_eq!(
        verdict(&p, e("/usr/bin/python3")),
        allow("exec:/usr/bin/python3.11")
    );
    assert_eq!(verdict(&p, e("python3")), allow("exec:/usr/bin/python3.11"));
    assert_eq!(verdict(&p, e("/usr/bin/curl")), deny("exec:/usr/bin/curl"));
    assert_eq!(verdict(&p, e("/bin/sh")), deny(DEFAULT_DENY));
    assert_eq!(
        nearest_rule(&p, &e("/usr/local/bin/python3")).as_deref(),
        Some("exec:/usr/bin/python3.11")
    );
}

#[test]
fn modes_resolve_rule_then_section_then_global() {
    let p = policy();
    let post = http(
        Scheme::Https,
        "www.google.com",
        443,
        "POST",
        "/upload",
        None,
    );
    assert_eq!(evaluate(&p, &post).mode, Mode::Report);
    let miss = http(Scheme::Https, "www.google.com", 443, "GET", "/x", None);
    assert!(evaluate(&p, &miss).enforced());
    let dry = p.with_mode_override(Mode::Report);
    assert!(evaluate(&dry, &miss).would_deny());
    let e = Request::Exec {
        path: "/bin/sh",
        argv: &[],
    };
    assert!(!evaluate(&dry, &e).enforced());
    // Enforce keeps explicit report overrides.
    let strict = p.with_mode_override(Mode::Enforce);
    let dns = Request::Dns {
        name: "nope.example",
        qtype: "A",
    };
    assert_eq!(evaluate(&strict, &dns).mode, Mode::Report);
    let reported = Policy::parse("version: 1\nmode: report\n").unwrap();
    let forced = reported.with_mode_override(Mode::Enforce);
    assert!(evaluate(&forced, &dns).enforced());
}

/// A tiny deterministic shuffle (no rand dependency).
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..v.len()).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = usize::try_from(s >> 33).unwrap() % (i + 1);
        v.swap(i, j);
    }
    v
}

#[test]
fn rule_order_never_changes_the_result() {
    let p = policy();
    let nets = p.network.rules().to_vec();
    let execs = p.exec.rules().to_vec();
    let requests = [
        http(
            Scheme::Https,
            "www.google.com",
            443,
            "GET",
            "/static/admin/x",
            None,
        ),
        http(Scheme::Https, "evil.example", 443, "GET", "/", None),
        Request::Exec {
            path: "/usr/bin/curl",
            argv: &[],
        },
        http(
            Scheme::Https,
            "www.google.com",
            443,
            "GET",
            "/static/a",
            None,
        ),
    ];
    let base: Vec<_> = requests.iter().map(|r| evaluate(&p, r)).collect();
    for seed in 0..20 {
        let mut q = p.clone();
        let mut nets = shuffled(&nets, seed);
        for n in &mut nets {
            n.http = shuffled(&n.http, seed + 100);
        }
        q.network = NetworkSection::new(p.network.mode, nets);
        q.exec = ExecSection::new(p.exec.mode, shuffled(&execs, seed));
        let got: Vec<_> = requests.iter().map(|r| evaluate(&q, r)).collect();
        assert_eq!(got, base, "seed {seed}");
    }
}

#[test]
fn fs_plan_maps_ops_to_landlock_rights() {
    let p = policy();
    let plan = p.fs_plan();
    assert_eq!(plan.files_mode, Mode::Report);
    assert_eq!(plan.exec_mode, Mode::Enforce);
    assert_eq!(
        plan.write_rules,
        vec![
            (
                "/tmp/workspace/notes.txt".to_string(),
                vec![FsRight::WriteFile, FsRight::Truncate]
            ),
            (
                "/tmp/workspace/out".to_string(),
                vec![
                    FsRight::WriteFile,
                    FsRight::Truncate,
                    FsRight::MakeReg,
                    FsRight::MakeDir
                ]
            ),
        ]
    );
    // Relative aliases are left out; a denied path is taken out.
    assert_eq!(
        plan.exec_paths,
        vec![
            "/usr/bin/python3".to_string(),
            "/usr/bin/python3.11".to_string()
        ]
    );
    assert!(p.has_file_rules() && p.has_exec_rules());
}

const STRICT: &str = r#"
version: 1
mode: enforce
network:
  mode: report
  rules:
    - host: api.example
      port: 443
      protocol: https
      mode: enforce
      http:
        - {method: GET, path: "/public/**"}
        - {method: GET, path: "/users/{id}"}
        - {method: GET, path: "/"}
        - {method: GET, path: "/a/"}
        - {method: GET, path: "/a/*"}
    - host: raw.example
      port: 443
      protocol: https
      inspect: l4
    - {host: db.example, port: 5432, protocol: tcp}
    - {host: vpn.example, port: 443, protocol: tls, mode: report}
    - {host: 192.0.2.7, port: 443, protocol: tcp}
    - {host: web.example, port: 80, protocol: http}
    - {host: blocked.example, port: 5432, protocol: tcp}
    - {host: blocked.example, port: 5432, protocol: https, action: deny, id: no-blocked}
"#;

#[test]
fn noncanonical_paths_are_denied_under_l7_rules() {
    let p = Policy::parse(STRICT).unwrap();
    let get = |path| http(Scheme::Https, "api.example", 443, "GET", path, None);
    let bad_public = [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/./x",
        "/public/%2e/x",
        "/public/..%2fadmin",
        "/public//x",
        "//public/x",
        "/public/..;/admin",
        "/public/a%3bb",
        "/public/a%5cb",
        "/public/a\\b",
        "/public/a%00",
        "/public/%zz",
        "/public/%2",
        "public/x",
    ];
    let bad_users = [
        "/users/..",
        "/users/.",
        "/users/%2e%2e",
        "/users/%2E%2E",
        "/users/..%2fadmin",
        "/users/%2fadmin",
        "/users/1;x",
        "/users/%",
    ];
    for path in bad_public.into_iter().chain(bad_users) {
        let d = evaluate(&p, &get(path));
        assert_eq!(
            (d.verdict, d.rule.as_str(), d.mode, d.layer),
            (Verdict::Deny, NONCANONICAL_PATH, Mode::Report, Layer::Http),
            "{path}"
        );
        assert!(!d.is_default_deny());
        // The reviewer's pointer still names the host rule.
        assert_eq!(
            nearest_rule(&p, &get(path)).as_deref(),
            Some("net:api.example:443"),
            "{path}"
        );
    }
    for ok in [
        "/",
        "/a/",
        "/a/b%20c",
        "/users/42",
        "/public/x/y",
        "/public/%2e%2ex",
    ] {
        assert_eq!(
            verdict(&p, get(ok)).0,
            Verdict::Allow,
            "{ok} should be allowed"
        );
    }
    // Canonical but unmatched stays a default deny.
    assert_eq!(verdict(&p, get("/private")), deny(DEFAULT_DENY));
    // l4 rules do not inspect HTTP: any path passes, as before.
    let raw = http(Scheme::Https, "raw.example", 443, "GET", "/x/../y", None);
    assert_eq!(verdict(&p, raw), allow("net:raw.example:443"));
    let tls = http(Scheme::Https, "vpn.example", 443, "GET", "/%2e%2e/", None);
    assert_eq!(verdict(&p, tls), allow("net:vpn.example:443"));
    // No host rule at all: a plain default deny.
    let none = http(Scheme::Https, "other.example", 443, "GET", "/../x", None);
    assert_eq!(verdict(&p, none), deny(DEFAULT_DENY));
    assert!(is_canonical_path("/users/42"));
    assert!(!is_canonical_path("/users/%2e%2e"));
}

#[test]
fn opaque_streams_need_a_rule_without_http_inspection() {
    let p = Policy::parse(STRICT).unwrap();
    let any = ip("198.51.100.9");
    let s = |name, addr, port, tls| Request::Stream {
        name,
        addr,
        port,
        tls,
    };
    // An l7 https rule allows the connection but not opaque bytes on it.
    let conn = Request::Connect {
        name: Some("api.example"),
        addr: any,
        port: 443,
        proto: Proto::Tcp,
    };
    assert_eq!(verdict(&p, conn), allow("net:api.example:443"));
    for tls in [false, true] {
        let d = evaluate(&p, &s(Some("api.example"), any, 443, tls));
        assert_eq!(
            (d.verdict, d.rule.as_str(), d.mode, d.layer),
            (Verdict::Deny, DEFAULT_DENY, Mode::Report, Layer::Connect)
        );
        assert_eq!(
            nearest_rule(&p, &s(Some("api.example"), any, 443, tls)).as_deref(),
            Some("net:api.example:443")
        );
    }
    // So is an l7 http rule.
    assert_eq!(
        verdict(&p, s(Some("web.example"), any, 80, false)),
        deny(DEFAULT_DENY)
    );
    // tcp, tls and inspect: l4 rules allow them; the mode resolves as for Connect.
    let d = evaluate(&p, &s(Some("db.example"), any, 5432, false));
    assert_eq!(
        (d.verdict, d.rule.as_str(), d.mode, d.layer),
        (
            Verdict::Allow,
            "net:db.example:5432",
            Mode::Report,
            Layer::Connect
        )
    );
    assert_eq!(
        verdict(&p, s(Some("raw.example"), any, 443, true)),
        allow("net:raw.example:443")
    );
    let d = evaluate(&p, &s(Some("vpn.example"), any, 443, true));
    assert_eq!(
        (d.verdict, d.rule.as_str(), d.mode),
        (Verdict::Allow, "net:vpn.example:443", Mode::Report)
    );
    // By IP literal (no name), like Connect; wrong port or unknown host: default deny.
    assert_eq!(
        verdict(&p, s(None, ip("192.0.2.7"), 443, false)),
        allow("net:192.0.2.7:443")
    );
    assert_eq!(
        verdict(&p, s(Some("db.example"), any, 5433, false)),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        verdict(&p, s(Some("nope.example"), any, 5432, false)),
        deny(DEFAULT_DENY)
    );
    // A deny rule of any protocol beats the tcp allow, as for Connect.
    assert_eq!(
        verdict(&p, s(Some("blocked.example"), any, 5432, false)),
        deny("no-blocked")
    );
    // The owned twin round-trips and keeps the layer.
    let owned = s(Some("db.example"), any, 5432, true).to_owned();
    assert_eq!(owned.layer(), Layer::Connect);
    assert_eq!(owned.as_request(), s(Some("db.example"), any, 5432, true));
}

const RENAMES: &str = r#"
version: 1
files:
  mode: report
  rules:
    - {path: /tmp/workspace/a, kind: dir, allow: [create_file, remove]}
    - {path: /tmp/workspace/b, kind: dir, allow: [create_file]}
    - {path: /tmp/workspace/in, kind: dir, allow: [create_file, remove, rename]}
    - {path: /tmp/workspace/out, kind: dir, allow: [create_file, rename], mode: enforce}
    - {path: /tmp/workspace/ro, kind: dir, allow: [remove, rename]}
    - {path: /tmp/workspace/ro/keep, kind: file, allow: [write]}
    - {path: /tmp/workspace/d, kind: dir, allow: [create_dir, remove]}
    - {path: /tmp/workspace/dx, kind: dir, allow: [create_dir, remove, rename]}
    - {path: /tmp/workspace/dy, kind: dir, allow: [create_dir, remove, rename]}
    - {path: /tmp/workspace/dy/deep, kind: dir, allow: [create_dir]}
"#;

fn mv<'a>(from: &'a str, to: &'a str) -> Request<'a> {
    Request::FileRename {
        from,
        to,
        dir: false,
    }
}

fn mv_dir<'a>(from: &'a str, to: &'a str) -> Request<'a> {
    Request::FileRename {
        from,
        to,
        dir: true,
    }
}

#[test]
fn same_dir_rename_needs_make_and_remove_there() {
    let p = Policy::parse(RENAMES).unwrap();
    // create_file (make_reg) + remove (remove_file) on the one parent; no refer needed.
    let d = evaluate(&p, &mv("/tmp/workspace/a/x.part", "/tmp/workspace/a/x"));
    assert_eq!(
        (d.verdict, d.rule.as_str(), d.mode, d.layer),
        (
            Verdict::Allow,
            "files:/tmp/workspace/a",
            Mode::Report,
            Layer::File
        )
    );
    // Inherited by the subtree: a rename inside a/sub is decided by a's rule.
    assert_eq!(
        verdict(&p, mv("/tmp/workspace/a/s/x", "/tmp/workspace/a/s/y")),
        allow("files:/tmp/workspace/a")
    );
    // The old single-path `rename` op (refer + make_reg + remove_file) is not what a
    // same-directory rename needs.
    assert!(evaluate(
        &p,
        &Request::FileWrite {
            path: "/tmp/workspace/a/x",
            op: FileOp::Rename
        }
    )
    .is_deny());
    // Missing remove: refused.
    assert_eq!(
        verdict(&p, mv("/tmp/workspace/b/x.part", "/tmp/workspace/b/x")),
        deny(DEFAULT_DENY)
    );
    assert_eq!(
        nearest_rule(&p, &mv("/tmp/workspace/b/x.part", "/tmp/workspace/b/x")).as_deref(),
        Some("files:/tmp/workspace/b")
    );
    // Outside the workspace, or leaving it.
    for (from, to) in [
        ("/tmp/workspace/a/x", "/etc/x"),
        ("/etc/x", "/tmp/workspace/a/x"),
        ("/tmp/workspace/a/x", "/tmp/workspace/a/../../x"),
        ("/tmp/workspace/a", "/tmp/workspace/b"),
        ("relative", "/tmp/workspace/a/x"),
        ("/tmp/workspace/a/x", "/"),
    ] {
        assert_eq!(verdict(&p, mv(from, to)), deny(DEFAULT_DENY), "{from} {to}");
    }
    let d = evaluate(&p, &mv("/etc/x", "/etc/y"));
    assert_eq!((d.mode, d.layer), (Mode::Report, Layer::File));
}

#[test]
fn cross_dir_rename_needs_rename_on_both_parents() {
    let p = Policy::parse(RENAMES).unwrap();
    // in: refer + remove_file; out: refer + make_reg. No remove needed on out (replacing an
    // existing `to` would need it: not known, not required). The deciding rule is to's
    // parent's, with its mode.
    let d = evaluate(&p, &mv("/tmp/workspace/in/x", "/tmp/workspace/out/x"));
    assert_eq!(
        (d.verdict, d.rule.as_str(), d.mode),
        (Verdict::Allow, "files:/tmp/workspace/out", Mode::Enforce)
    );
    // Refer missing on one side: refused.
    assert!(evaluate(&p, &mv("/tmp/workspace/a/x", "/tmp/workspace/out/x")).is_deny());
    assert!(evaluate(&p, &mv("/tmp/workspace/in/x", "/tmp/workspace/a/x")).is_deny());
    // `rename` itself grants make_reg and remove_file, so back is allowed too.
    assert_eq!(
        verdict(&p, mv("/tmp/workspace/out/x", "/tmp/workspace/in/x")),
        allow("files:/tmp/workspace/in")
    );
    // ro has refer + remove_file, but out grants write_file/truncate that ro does not: the
    // file would gain rights, Landlock answers EXDEV.
    assert!(evaluate(&p, &mv("/tmp/workspace/ro/x", "/tmp/workspace/out/x")).is_deny());
    // Unless the file itself has them (a file rule on it travels with it).
    assert_eq!(
        verdict(&p, mv("/tmp/workspace/ro/keep", "/tmp/workspace/out/keep")),
        allow("files:/tmp/workspace/out")
    );
    // Losing rights is fine (ro's `rename` grants make_reg).
    assert_eq!(
        verdict(&p, mv("/tmp/workspace/in/x", "/tmp/workspace/ro/x")),
        allow("files:/tmp/workspace/ro")
    );
    assert_eq!(
        verdict(&p, mv("/tmp/workspace/in/x", "/tmp/workspace/dx/x")),
        allow("files:/tmp/workspace/dx")
    );
    assert_eq!(
        nearest_rule(&p, &mv("/tmp/workspace/a/x", "/tmp/workspace/out/x")).as_deref(),
        Some("files:/tmp/workspace/out")
    );
}

#[test]
fn directory_renames_need_make_dir_and_remove_dir() {
    let p = Policy::parse(RENAMES).unwrap();
    assert_eq!(
        verdict(&p, mv_dir("/tmp/workspace/d/x", "/tmp/workspace/d/y")),
        allow("files:/tmp/workspace/d")
    );
    // create_dir does not grant make_reg, create_file not make_dir.
    assert!(evaluate(&p, &mv("/tmp/workspace/d/x", "/tmp/workspace/d/y")).is_deny());
    assert!(evaluate(&p, &mv_dir("/tmp/workspace/a/x", "/tmp/workspace/a/y")).is_deny());
    // Across directories: refer on both; every right of to's parent must be had already.
    assert_eq!(
        verdict(&p, mv_dir("/tmp/workspace/dx/s", "/tmp/workspace/dy/s")),
        allow("files:/tmp/workspace/dy")
    );
    // The deepest contributing rule decides.
    assert_eq!(
        verdict(
            &p,
            mv_dir("/tmp/workspace/dx/s", "/tmp/workspace/dy/deep/s")
        ),
        allow("files:/tmp/workspace/dy/deep")
    );
    // dy/deep grants nothing dx lacks, so back is fine too.
    assert_eq!(
        verdict(
            &p,
            mv_dir("/tmp/workspace/dy/deep/s", "/tmp/workspace/dx/s")
        ),
        allow("files:/tmp/workspace/dx")
    );
    // `in` lacks make_dir, which dx grants: a directory would gain it (a file would not).
    assert!(evaluate(&p, &mv_dir("/tmp/workspace/in/s", "/tmp/workspace/dx/s")).is_deny());
    assert!(!evaluate(&p, &mv("/tmp/workspace/in/s", "/tmp/workspace/dx/s")).is_deny());
    // Remove_dir missing on from's parent (`rename` grants only remove_file): refused.
    assert!(evaluate(&p, &mv_dir("/tmp/workspace/out/s", "/tmp/workspace/dx/s")).is_deny());
    // out has no make_dir.
    assert!(evaluate(&p, &mv_dir("/tmp/workspace/in/s", "/tmp/workspace/out/s")).is_deny());
}

#[test]
fn file_rename_requests_own_and_borrow() {
    let r = mv_dir("/tmp/workspace/d/x", "/tmp/workspace/d/y");
    let owned = r.to_owned();
    assert_eq!(
        owned,
        OwnedRequest::FileRename {
            from: "/tmp/workspace/d/x".into(),
            to: "/tmp/workspace/d/y".into(),
            dir: true
        }
    );
    assert_eq!(owned.as_request(), r);
    assert_eq!((r.layer(), owned.layer()), (Layer::File, Layer::File));
}

#[test]
fn create_special_is_always_denied() {
    let text = "version: 1\nfiles:\n  rules:\n    - {path: /tmp/workspace, kind: dir, allow: [create_file, create_dir, remove, rename, write]}\n";
    let p = Policy::parse(text).unwrap();
    let d = evaluate(
        &p,
        &Request::FileWrite {
            path: "/tmp/workspace/link",
            op: FileOp::CreateSpecial,
        },
    );
    assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Deny, DEFAULT_DENY));
    assert_eq!(required_rights(FileOp::CreateSpecial), &[FsRight::MakeSym]);
    for kind in FileKind::ALL {
        assert!(granted_rights(*kind, FileOp::CreateSpecial).is_empty());
    }
    assert!(p
        .fs_plan()
        .write_rules
        .iter()
        .all(|(_, r)| !r.contains(&FsRight::MakeSym)));
}

//! Learner tests: generalisation, files, determinism under shuffling, and the round trip.

use super::*;
use crate::*;

fn obs(request: OwnedRequest, run: &str, seq: u64) -> Observed {
    Observed {
        request,
        run: run.to_string(),
        seq,
        ts: format!("2026-12-01T10:00:{:02}.0Z", seq % 60),
        credentials: false,
        refused_by_kernel: false,
        real_path: None,
    }
}

fn get(host: &str, path: &str, query: Option<&str>) -> OwnedRequest {
    OwnedRequest::Http {
        scheme: Scheme::Https,
        host: host.into(),
        port: 443,
        method: "GET".into(),
        path: path.into(),
        query: query.map(str::to_string),
        rpc: None,
    }
}

fn write(path: &str, op: FileOp) -> OwnedRequest {
    OwnedRequest::FileWrite {
        path: path.into(),
        op,
    }
}

fn sample() -> Vec<Observed> {
    let addr: std::net::IpAddr = "203.0.113.5".parse().unwrap();
    let mut v = vec![
        obs(
            OwnedRequest::Dns {
                name: "www.google.com".into(),
                qtype: "A".into(),
            },
            "r1",
            1,
        ),
        obs(
            OwnedRequest::Dns {
                name: "unused.example".into(),
                qtype: "AAAA".into(),
            },
            "r1",
            2,
        ),
        obs(
            OwnedRequest::Connect {
                name: Some("www.google.com".into()),
                addr,
                port: 443,
                proto: Proto::Tcp,
            },
            "r1",
            3,
        ),
        obs(
            OwnedRequest::Tls {
                sni: Some("www.google.com".into()),
                alpn: vec![],
                name: None,
                addr,
                port: 443,
            },
            "r1",
            4,
        ),
        obs(get("www.google.com", "/", None), "r1", 5),
        obs(
            get("www.google.com", "/users/42", Some("page=1&sort=a")),
            "r1",
            6,
        ),
        obs(get("www.google.com", "/users/7", Some("lang=en")), "r2", 7),
        obs(
            OwnedRequest::Connect {
                name: None,
                addr,
                port: 8443,
                proto: Proto::Tcp,
            },
            "r2",
            8,
        ),
        obs(
            OwnedRequest::Datagram {
                name: Some("ntp.example".into()),
                addr,
                port: 123,
            },
            "r2",
            9,
        ),
        obs(
            write("/tmp/workspace/google.html", FileOp::CreateFile),
            "r1",
            10,
        ),
        obs(write("/tmp/workspace/google.html", FileOp::Write), "r1", 11),
        obs(write("/tmp/workspace/config.ini", FileOp::Write), "r1", 12),
        obs(write("/tmp/workspace/out", FileOp::CreateDir), "r1", 13),
        obs(
            write("/tmp/workspace/out/a.json", FileOp::CreateFile),
            "r2",
            14,
        ),
        obs(write("/etc/hosts", FileOp::Write), "r1", 15),
        obs(
            OwnedRequest::Exec {
                path: "/usr/bin/python3".into(),
                argv: vec!["python3".into(), "-c".into(), "1".into()],
            },
            "r1",
            16,
        ),
        obs(
            OwnedRequest::Exec {
                path: "/bin/sh".into(),
                argv: vec![],
            },
            "r2",
            17,
        ),
    ];
    v[14].refused_by_kernel = true;
    v[15].real_path = Some("/usr/bin/python3.11".into());
    let mut post = obs(
        OwnedRequest::Http {
            scheme: Scheme::Https,
            host: "api.example".into(),
            port: 443,
            method: "POST".into(),
            path: "/v1/items/0123456789abcdef0123".into(),
            query: None,
            rpc: None,
        },
        "r2",
        18,
    );
    post.credentials = true;
    v.push(post);
    v
}

fn learn(items: impl IntoIterator<Item = Observed>) -> Policy {
    let mut l = Learner::new();
    items.into_iter().for_each(|o| l.observe(o));
    l.finish()
}

#[test]
fn learns_exactly_what_was_seen() {
    let p = learn(sample());
    assert_eq!(p.mode, Mode::Enforce);
    let ids: Vec<&str> = p.network.rules().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "net:203.0.113.5:8443",
            "net:api.example:443",
            "net:www.google.com:443"
        ]
    );
    let g = &p.network.rules()[2];
    assert_eq!((g.protocol, g.inspect), (Protocol::Https, Inspect::L7));
    let routes: Vec<(&str, &str, Option<Vec<String>>)> = g
        .http
        .iter()
        .map(|h| (h.method.as_str(), h.path.as_str(), h.query.clone()))
        .collect();
    assert_eq!(
        routes,
        [
            ("GET", "/", Some(vec![])),
            (
                "GET",
                "/users/{id}",
                Some(vec!["lang".into(), "page".into(), "sort".into()])
            )
        ]
    );
    let seen = g.seen.as_ref().unwrap();
    assert_eq!(
        (seen.count, seen.runs.clone(), seen.example_seq),
        (5, vec!["r1".into(), "r2".into()], 3)
    );
    let ip = &p.network.rules()[0];
    assert_eq!(
        (ip.protocol, ip.risk.clone()),
        (Protocol::Tcp, vec!["ip-literal".to_string()])
    );
    let api = &p.network.rules()[1];
    assert!(api.credentials);
    assert_eq!(api.http[0].path.as_str(), "/v1/items/{id}");
    assert_eq!(api.http[0].risk, ["write-with-credentials"]);
    // Only the name with no rule goes to dns.names.
    let names: Vec<String> = p.dns.names().iter().map(|n| n.name.to_string()).collect();
    assert_eq!(names, ["unused.example"]);
    assert_eq!(p.udp.rules()[0].id, "udp:ntp.example:123");
    // It allows what it saw, and nothing near it.
    let ok = get("www.google.com", "/users/99", Some("page=3"));
    assert!(!evaluate(&p, &ok.as_request()).is_deny());
    let bad = get("www.google.com", "/users/99", Some("admin=1"));
    assert!(evaluate(&p, &bad.as_request()).is_deny());
    assert!(evaluate(&p, &get("www.google.com", "/users/1/x", None).as_request()).is_deny());
}

#[test]
fn learns_workspace_files_and_exec() {
    let p = learn(sample());
    let files: Vec<(&str, FileKind, Vec<FileOp>, Vec<String>)> = p
        .files
        .rules()
        .iter()
        .map(|r| (r.path.as_str(), r.kind, r.allow.clone(), r.observed.clone()))
        .collect();
    assert_eq!(
        files,
        [
            (
                "/tmp/workspace",
                FileKind::Dir,
                vec![FileOp::CreateFile, FileOp::CreateDir],
                vec!["google.html".into(), "out".into()]
            ),
            (
                "/tmp/workspace/config.ini",
                FileKind::File,
                vec![FileOp::Write],
                vec!["config.ini".into()]
            ),
            (
                "/tmp/workspace/out",
                FileKind::Dir,
                vec![FileOp::CreateFile],
                vec!["a.json".into()]
            ),
        ]
    );
    let denied = p.files.observed_denied();
    assert_eq!(denied.len(), 1);
    assert_eq!(
        (
            denied[0].path.as_str(),
            denied[0].errno.as_deref(),
            denied[0].count
        ),
        ("/etc/hosts", Some("EROFS"), 1)
    );
    assert!(evaluate(
        &p,
        &Request::FileWrite {
            path: "/etc/hosts",
            op: FileOp::Write
        }
    )
    .is_deny());
    // Every learned workspace write is allowed by the learned rules.
    for o in sample() {
        if let OwnedRequest::FileWrite { path, .. } = &o.request {
            if path.starts_with("/tmp/workspace") {
                assert!(!evaluate(&p, &o.request.as_request()).is_deny(), "{path}");
            }
        }
    }
    let py = &p.exec.rules()[1];
    assert_eq!(
        (py.path.as_str(), py.aliases.clone()),
        ("/usr/bin/python3.11", vec!["/usr/bin/python3".to_string()])
    );
    assert_eq!(py.risk, ["inline-code"]);
    assert_eq!(p.exec.rules()[0].risk, ["shell"]);
}

#[test]
fn any_order_gives_identical_yaml_and_it_round_trips() {
    let items = sample();
    let text = learn(items.clone()).to_yaml();
    for seed in 1..15u64 {
        let mut v = items.clone();
        // Deterministic Fisher-Yates.
        let mut s = seed;
        for i in (1..v.len()).rev() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.swap(i, usize::try_from(s >> 33).unwrap() % (i + 1));
        }
        assert_eq!(learn(v).to_yaml(), text, "seed {seed}");
    }
    let p = learn(items);
    let back = Policy::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, p);
    assert_eq!(back.to_yaml(), text);
    assert!(
        text.starts_with("# idagent policy (learned from 2 runs)\n"),
        "{text}"
    );
}

#[test]
fn incomplete_and_unrepresentable() {
    let mut l = Learner::new();
    l.mark_incomplete("audit gap at seq 40".into());
    l.observe(obs(get("bad host", "/", None), "r", 1));
    let p = l.finish();
    let Observation::Incomplete { reasons } = &p.observation else {
        panic!("complete")
    };
    assert_eq!(
        reasons,
        &[
            "audit gap at seq 40".to_string(),
            "host `bad host` cannot be written as a rule".to_string()
        ]
    );
    assert!(p.network.rules().is_empty());
    assert_eq!(Policy::parse(&p.to_yaml()).unwrap(), p);
}

#[test]
fn parsed_example_round_trips() {
    let p = Policy::parse(crate::parse::tests::EXAMPLE).unwrap();
    let text = p.to_yaml();
    assert_eq!(Policy::parse(&text).unwrap(), p, "{text}");
    let weird = "version: 1\nmode: report\nnetwork:\n  mode: enforce\n  rules:\n    - {host: \"*.a.com\", port: 443, protocol: https, mode: report, http: [{method: \"*\", path: \"/x/{y}/**\", query: [b, a], action: deny, risk: [\"x: y\"]}]}\nexec:\n  rules:\n    - {path: \"/odd path/true\", aliases: [\"yes\", \"007\"]}\nfiles:\n  observed_denied: [{path: \"/etc/a b\", op: write, count: 3}]\n";
    let p = Policy::parse(weird).unwrap();
    let text = p.to_yaml();
    assert_eq!(
        Policy::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")),
        p
    );
}

#[test]
fn explain_lists_risks_first_and_json_parses() {
    let p = learn(sample());
    let text = explain(&p);
    let risks_at = text.find("RISKS (4)").unwrap();
    assert!(risks_at < text.find("NETWORK").unwrap());
    assert!(text.contains("! exec:/bin/sh  [shell]"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&explain_json(&p)).unwrap();
    assert_eq!(json["risks"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        json["policy"]["network"]["rules"][2]["host"],
        "www.google.com"
    );
    assert_eq!(json["fs_plan"]["files_mode"], "enforce");
}

fn connect(name: &str, port: u16) -> OwnedRequest {
    OwnedRequest::Connect {
        name: Some(name.into()),
        addr: "203.0.113.9".parse().unwrap(),
        port,
        proto: Proto::Tcp,
    }
}

fn stream(name: &str, port: u16, tls: bool) -> OwnedRequest {
    OwnedRequest::Stream {
        name: Some(name.into()),
        addr: "203.0.113.9".parse().unwrap(),
        port,
        tls,
    }
}

fn tls_hello(name: &str) -> OwnedRequest {
    OwnedRequest::Tls {
        sni: Some(name.into()),
        alpn: vec![],
        name: Some(name.into()),
        addr: "203.0.113.9".parse().unwrap(),
        port: 443,
    }
}

/// Learns `items` in several orders; all must print the same, and it must round-trip.
fn learn_stable(items: Vec<Observed>) -> Policy {
    let text = learn(items.clone()).to_yaml();
    let mut rev = items.clone();
    rev.reverse();
    assert_eq!(learn(rev).to_yaml(), text);
    let mut rot = items.clone();
    rot.rotate_left(1);
    assert_eq!(learn(rot).to_yaml(), text);
    let p = learn(items);
    assert_eq!(
        Policy::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")),
        p
    );
    p
}

#[test]
fn streams_learn_l4_rules() {
    let p = learn_stable(vec![
        obs(connect("db.example", 5432), "r", 1),
        obs(stream("db.example", 5432, false), "r", 2),
        obs(connect("vpn.example", 443), "r", 3),
        obs(stream("vpn.example", 443, true), "r", 4),
    ]);
    let rules: Vec<(&str, Protocol, Inspect, Vec<String>)> = p
        .network
        .rules()
        .iter()
        .map(|r| (r.id.as_str(), r.protocol, r.inspect, r.risk.clone()))
        .collect();
    assert_eq!(
        rules,
        [
            ("net:db.example:5432", Protocol::Tcp, Inspect::L4, vec![]),
            ("net:vpn.example:443", Protocol::Tls, Inspect::L4, vec![]),
        ]
    );
    assert_eq!(p.network.rules()[0].seen.as_ref().unwrap().count, 2);
    assert!(risks(&p).is_empty());
    // The learned policy allows the streams it saw.
    for o in [
        stream("db.example", 5432, false),
        stream("vpn.example", 443, true),
    ] {
        assert!(!evaluate(&p, &o.as_request()).is_deny());
    }
}

#[test]
fn http_and_streams_on_one_port_learn_l4_with_a_risk() {
    let items = vec![
        obs(connect("api.example", 443), "r", 1),
        obs(tls_hello("api.example"), "r", 2),
        obs(get("api.example", "/v1/x", None), "r", 3),
        obs(stream("api.example", 443, true), "r", 4),
    ];
    let p = learn_stable(items);
    let r = &p.network.rules()[0];
    assert_eq!(
        (r.protocol, r.inspect, r.http.len(), r.risk.clone()),
        (
            Protocol::Tls,
            Inspect::L4,
            0,
            vec!["l4-with-http".to_string()]
        )
    );
    let codes: Vec<(String, String)> = risks(&p).into_iter().map(|r| (r.rule, r.code)).collect();
    assert_eq!(
        codes,
        [(
            "net:api.example:443".to_string(),
            "l4-with-http".to_string()
        )]
    );
    assert!(explain(&p).contains("l4-with-http"));
    // Both what was seen is allowed: the stream and the request.
    assert!(!evaluate(&p, &stream("api.example", 443, true).as_request()).is_deny());
    assert!(!evaluate(&p, &get("api.example", "/v1/x", None).as_request()).is_deny());
    // Plain HTTP with a plain stream: tcp (which carries plain http).
    let plain = |path: &str| OwnedRequest::Http {
        scheme: Scheme::Http,
        host: "web.example".into(),
        port: 80,
        method: "GET".into(),
        path: path.into(),
        query: None,
        rpc: None,
    };
    let p = learn_stable(vec![
        obs(connect("web.example", 80), "r", 1),
        obs(plain("/"), "r", 2),
        obs(stream("web.example", 80, false), "r", 3),
    ]);
    let r = &p.network.rules()[0];
    assert_eq!(
        (r.protocol, r.inspect, r.risk.clone()),
        (Protocol::Tcp, Inspect::L4, vec!["l4-with-http".to_string()])
    );
    assert!(!evaluate(&p, &plain("/").as_request()).is_deny());
}

#[test]
fn noncanonical_paths_never_become_rules() {
    let p = learn_stable(vec![
        obs(connect("api.example", 443), "r", 1),
        obs(tls_hello("api.example"), "r", 2),
        obs(get("api.example", "/ok", None), "r", 3),
        obs(get("api.example", "/ok/../admin", None), "r", 4),
        obs(get("api.example", "/ok/%2e%2e/admin", None), "r", 5),
        obs(get("api.example", "/users/..", None), "r", 6),
        // Only non-canonical HTTP on this host: it stays l7 (no l4 allow-all), with no routes.
        obs(connect("only.example", 443), "r", 7),
        obs(tls_hello("only.example"), "r", 8),
        obs(get("only.example", "/a//b", None), "r", 9),
        // Non-canonical HTTP alone creates nothing.
        obs(get("ghost.example", "/..", None), "r", 10),
    ]);
    assert_eq!(p.observation, Observation::Complete);
    let rules: Vec<(&str, Protocol, Inspect, Vec<&str>, u64)> = p
        .network
        .rules()
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.protocol,
                r.inspect,
                r.http.iter().map(|h| h.path.as_str()).collect(),
                r.seen.as_ref().map_or(0, |s| s.count),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            (
                "net:api.example:443",
                Protocol::Https,
                Inspect::L7,
                vec!["/ok"],
                3
            ),
            (
                "net:only.example:443",
                Protocol::Https,
                Inspect::L7,
                vec![],
                2
            ),
        ]
    );
    assert!(evaluate(&p, &get("only.example", "/a//b", None).as_request()).is_deny());
}

fn rename(from: &str, to: &str, dir: bool) -> OwnedRequest {
    OwnedRequest::FileRename {
        from: from.into(),
        to: to.into(),
        dir,
    }
}

fn file_rules(p: &Policy) -> Vec<(&str, FileKind, Vec<FileOp>, Vec<String>)> {
    p.files
        .rules()
        .iter()
        .map(|r| (r.path.as_str(), r.kind, r.allow.clone(), r.observed.clone()))
        .collect()
}

/// Every observation of the run is allowed by the policy learned from it.
fn all_allowed(p: &Policy, items: &[Observed]) {
    for o in items {
        let d = evaluate(p, &o.request.as_request());
        assert!(!d.is_deny(), "{:?} -> {d:?}\n{}", o.request, p.to_yaml());
    }
}

#[test]
fn same_dir_rename_learns_create_and_remove() {
    let items = vec![
        obs(
            write("/tmp/workspace/w/x.part", FileOp::CreateFile),
            "r1",
            1,
        ),
        obs(write("/tmp/workspace/w/x.part", FileOp::Write), "r1", 2),
        obs(
            rename("/tmp/workspace/w/x.part", "/tmp/workspace/w/x", false),
            "r1",
            3,
        ),
        obs(write("/tmp/workspace/w/x", FileOp::Write), "r1", 4),
    ];
    let p = learn_stable(items.clone());
    assert_eq!(
        file_rules(&p),
        [(
            "/tmp/workspace/w",
            FileKind::Dir,
            vec![FileOp::CreateFile, FileOp::Remove],
            vec!["x".into(), "x.part".into()]
        )]
    );
    all_allowed(&p, &items);
}

#[test]
fn cross_dir_renames_learn_refer_on_both_parents() {
    let items = vec![
        // A file whose parent grants no file rights moved where they are granted: its parent
        // needs `write` too, or Landlock answers EXDEV.
        obs(
            rename("/tmp/workspace/tmp/a.part", "/tmp/workspace/out/a", false),
            "r1",
            1,
        ),
        // A directory: every right of the destination must be had at the source.
        obs(
            rename("/tmp/workspace/x/d", "/tmp/workspace/y/d", true),
            "r1",
            2,
        ),
    ];
    let p = learn_stable(items.clone());
    assert_eq!(
        file_rules(&p),
        [
            (
                "/tmp/workspace/out",
                FileKind::Dir,
                vec![FileOp::CreateFile, FileOp::Rename],
                vec!["a".into()]
            ),
            (
                "/tmp/workspace/tmp",
                FileKind::Dir,
                vec![FileOp::Write, FileOp::Remove, FileOp::Rename],
                vec!["a.part".into()]
            ),
            (
                "/tmp/workspace/x",
                FileKind::Dir,
                vec![FileOp::CreateDir, FileOp::Remove, FileOp::Rename],
                vec!["d".into()]
            ),
            (
                "/tmp/workspace/y",
                FileKind::Dir,
                vec![FileOp::CreateDir, FileOp::Rename],
                vec!["d".into()]
            ),
        ]
    );
    all_allowed(&p, &items);
    // The usual staging pattern needs no widening: tmp already grants write.
    let staged = vec![
        obs(
            write("/tmp/workspace/tmp/b.part", FileOp::CreateFile),
            "r1",
            1,
        ),
        obs(
            rename("/tmp/workspace/tmp/b.part", "/tmp/workspace/out/b", false),
            "r1",
            2,
        ),
    ];
    let p = learn_stable(staged.clone());
    assert_eq!(
        p.files.rules()[1].allow,
        [FileOp::CreateFile, FileOp::Remove, FileOp::Rename]
    );
    all_allowed(&p, &staged);
}

#[test]
fn renames_outside_the_workspace_and_special_files_are_never_rules() {
    let mut refused = obs(
        rename("/tmp/workspace/a", "/tmp/workspace/b", false),
        "r1",
        3,
    );
    refused.refused_by_kernel = true;
    let items = vec![
        obs(rename("/tmp/workspace/a", "/etc/a", false), "r1", 1),
        obs(write("/tmp/workspace/link", FileOp::CreateSpecial), "r1", 2),
        refused,
    ];
    let p = learn_stable(items.clone());
    assert!(p.files.rules().is_empty(), "{}", p.to_yaml());
    let denied: Vec<(&str, FileOp, Option<&str>)> = p
        .files
        .observed_denied()
        .iter()
        .map(|d| (d.path.as_str(), d.op, d.errno.as_deref()))
        .collect();
    assert_eq!(
        denied,
        [
            ("/etc/a", FileOp::Rename, None),
            ("/tmp/workspace/b", FileOp::Rename, Some("EROFS")),
            ("/tmp/workspace/link", FileOp::CreateSpecial, None),
        ]
    );
    for o in &items {
        assert!(evaluate(&p, &o.request.as_request()).is_deny());
    }
}

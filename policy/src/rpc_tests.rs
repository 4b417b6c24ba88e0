//! gRPC and MCP tool rules, end to end through the crate: parse (and its errors), evaluate
//! (default deny, deny overrides, order independence, modes), `tool_rules_apply`, the learner,
//! `explain` and the YAML round trip.

use crate::*;

const POLICY: &str = r#"
version: 1
mode: enforce
network:
  rules:
    - host: grpc.example
      port: 443
      protocol: https
      http:
        - grpc: {service: helloworld.Greeter, method: SayHello}
        - grpc: {service: pkg.Admin, method: "*"}
        - {id: no-drop, grpc: {service: pkg.Admin, method: DropAll}, action: deny}
    - host: mcp.example
      port: 80
      protocol: http
      http:
        - {method: POST, path: /mcp, mcp: {tools: [search, read_file]}}
        - {method: GET, path: /mcp}
        - {id: no-rm, method: "*", path: /mcp, mcp: {tools: [rm, search]}, action: deny}
        - {method: POST, path: /trial, mcp: {tools: [a]}, mode: report}
        - {method: POST, path: /open}
"#;

fn policy() -> Policy {
    Policy::parse(POLICY).unwrap_or_else(|e| panic!("{e}"))
}

fn post<'a>(host: &'a str, port: u16, path: &'a str, rpc: Option<Rpc<'a>>) -> Request<'a> {
    Request::Http {
        scheme: if port == 443 {
            Scheme::Https
        } else {
            Scheme::Http
        },
        host,
        port,
        method: "POST",
        path,
        query: None,
        rpc,
    }
}

fn grpc<'a>(service: &'a str, method: &'a str) -> Request<'a> {
    post(
        "grpc.example",
        443,
        "/-",
        Some(Rpc::Grpc { service, method }),
    )
}

fn tool(name: Option<&str>) -> Request<'_> {
    post("mcp.example", 80, "/mcp", Some(Rpc::Tool(name)))
}

fn decided(p: &Policy, r: &Request<'_>) -> (Verdict, String) {
    let d = evaluate(p, r);
    (d.verdict, d.rule)
}

fn allow(id: &str) -> (Verdict, String) {
    (Verdict::Allow, id.to_string())
}

fn deny(id: &str) -> (Verdict, String) {
    (Verdict::Deny, id.to_string())
}

#[test]
fn grpc_calls_need_a_grpc_rule_for_their_service_and_method() {
    let p = policy();
    let hello = "grpc:grpc.example:443:helloworld.Greeter/SayHello";
    assert_eq!(
        decided(&p, &grpc("helloworld.Greeter", "SayHello")),
        allow(hello)
    );
    // Same host, another method: denied.
    assert_eq!(
        decided(&p, &grpc("helloworld.Greeter", "SayBye")),
        deny(DEFAULT_DENY)
    );
    // `*`: every method of the service, but a deny for one of them wins.
    assert_eq!(
        decided(&p, &grpc("pkg.Admin", "List")),
        allow("grpc:grpc.example:443:pkg.Admin/*")
    );
    assert_eq!(decided(&p, &grpc("pkg.Admin", "DropAll")), deny("no-drop"));
    // A grpc rule never allows a request that is not a gRPC call, whatever its path.
    let plain = post("grpc.example", 443, "/helloworld.Greeter/SayHello", None);
    assert_eq!(decided(&p, &plain), deny(DEFAULT_DENY));
    let as_tool = post(
        "grpc.example",
        443,
        "/helloworld.Greeter/SayHello",
        Some(Rpc::Tool(None)),
    );
    assert_eq!(decided(&p, &as_tool), deny(DEFAULT_DENY));
}

#[test]
fn grpc_calls_are_recognised_from_path_and_content_type_only() {
    let call = grpc_call(
        "POST",
        "/helloworld.Greeter/SayHello",
        None,
        Some("application/grpc"),
    );
    assert_eq!(
        call,
        Some(Rpc::Grpc {
            service: "helloworld.Greeter",
            method: "SayHello"
        })
    );
    for ct in [
        "application/grpc+proto",
        "Application/GRPC-web",
        " application/grpc",
    ] {
        assert!(
            grpc_call("POST", "/a.B/C", None, Some(ct)).is_some(),
            "{ct}"
        );
    }
    let not = [
        ("GET", "/a.B/C", None, Some("application/grpc")),
        ("POST", "/a.B/C", None, Some("application/json")),
        ("POST", "/a.B/C", None, None),
        ("POST", "/a.B/C", Some("x=1"), Some("application/grpc")),
        ("POST", "/a.B/C/D", None, Some("application/grpc")),
        ("POST", "/a.B/", None, Some("application/grpc")),
        ("POST", "//C", None, Some("application/grpc")),
        ("POST", "/a.B/C%2e", None, Some("application/grpc")),
        ("POST", "/a..B/C", None, Some("application/grpc")),
        ("POST", "/a.B/../C", None, Some("application/grpc")),
        ("POST", "/a.B", None, Some("application/grpc")),
        ("POST", "/a.B/C", None, Some("application/grp")),
    ];
    for (m, path, q, ct) in not {
        assert_eq!(grpc_call(m, path, q, ct), None, "{m} {path} {q:?} {ct:?}");
    }
}

#[test]
fn mcp_tool_calls_need_a_listed_tool_and_other_methods_pass() {
    let p = policy();
    let endpoint = "http:mcp.example:80:POST:/mcp";
    assert_eq!(decided(&p, &tool(Some("read_file"))), allow(endpoint));
    // Not listed: denied, and the reason is named.
    assert_eq!(
        decided(&p, &tool(Some("write_file"))),
        deny(TOOL_NOT_ALLOWED)
    );
    // A tool whose name could not be read is never listed.
    assert_eq!(decided(&p, &tool(None)), deny("no-rm"));
    // initialize, tools/list, notifications/*: no tool call, the endpoint's rule decides.
    assert_eq!(
        decided(&p, &post("mcp.example", 80, "/mcp", None)),
        allow(endpoint)
    );
    // Deny overrides: `search` is listed by the allow and by the deny.
    assert_eq!(decided(&p, &tool(Some("search"))), deny("no-rm"));
    assert_eq!(decided(&p, &tool(Some("rm"))), deny("no-rm"));
    // The deny rule lists tools, so it leaves other requests alone (GET /mcp: the SSE stream).
    let get = Request::Http {
        scheme: Scheme::Http,
        host: "mcp.example",
        port: 80,
        method: "GET",
        path: "/mcp",
        query: None,
        rpc: None,
    };
    assert_eq!(decided(&p, &get), allow("http:mcp.example:80:GET:/mcp"));
    // A rule without tools allows every tool: tools restrict only the rule that lists them.
    let open = post(
        "mcp.example",
        80,
        "/open",
        Some(Rpc::Tool(Some("anything"))),
    );
    assert_eq!(decided(&p, &open), allow("http:mcp.example:80:POST:/open"));
    // The mode of a tool refusal is the refusing rule's.
    let trial = evaluate(
        &p,
        &post("mcp.example", 80, "/trial", Some(Rpc::Tool(Some("b")))),
    );
    assert_eq!(
        (trial.rule.as_str(), trial.would_deny()),
        (TOOL_NOT_ALLOWED, true)
    );
    assert!(evaluate(&p, &tool(Some("write_file"))).enforced());
    // `policy check` names the host rule as the nearest.
    assert_eq!(
        nearest_rule(&p, &tool(Some("write_file"))).as_deref(),
        Some("net:mcp.example:80")
    );
}

#[test]
fn the_body_is_needed_only_where_a_tools_rule_matches_the_endpoint() {
    let p = policy();
    assert!(tool_rules_apply(&p, &post("mcp.example", 80, "/mcp", None)));
    assert!(tool_rules_apply(
        &p,
        &post("mcp.example", 80, "/trial", None)
    ));
    assert!(!tool_rules_apply(
        &p,
        &post("mcp.example", 80, "/open", None)
    ));
    assert!(!tool_rules_apply(
        &p,
        &post("mcp.example", 81, "/mcp", None)
    ));
    assert!(!tool_rules_apply(
        &p,
        &post("other.example", 80, "/mcp", None)
    ));
    // The `*` deny rule with tools covers every method of its endpoint.
    let get = Request::Http {
        scheme: Scheme::Http,
        host: "mcp.example",
        port: 80,
        method: "GET",
        path: "/mcp",
        query: None,
        rpc: None,
    };
    assert!(tool_rules_apply(&p, &get));
    assert!(!tool_rules_apply(
        &p,
        &grpc("helloworld.Greeter", "SayHello")
    ));
}

#[test]
fn rule_order_never_changes_rpc_decisions() {
    let p = policy();
    let requests = [
        grpc("helloworld.Greeter", "SayHello"),
        grpc("pkg.Admin", "DropAll"),
        grpc("pkg.Admin", "List"),
        grpc("x.Y", "Z"),
        tool(Some("read_file")),
        tool(Some("search")),
        tool(Some("write_file")),
        tool(None),
        post("mcp.example", 80, "/mcp", None),
        post("mcp.example", 80, "/trial", Some(Rpc::Tool(Some("b")))),
    ];
    let base: Vec<_> = requests.iter().map(|r| evaluate(&p, r)).collect();
    let nets = p.network.rules().to_vec();
    for seed in 0..20u64 {
        let mut nets = nets.clone();
        // Rotate and reverse the rules and sub-rules differently per seed.
        let len = nets.len();
        nets.rotate_left(usize::try_from(seed).unwrap_or(0) % len);
        for (i, n) in nets.iter_mut().enumerate() {
            let k = n.http.len();
            n.http
                .rotate_right((usize::try_from(seed).unwrap_or(0) + i) % k.max(1));
            if seed % 2 == 1 {
                n.http.reverse();
            }
        }
        let mut q = p.clone();
        q.network = NetworkSection::new(p.network.mode, nets);
        let got: Vec<_> = requests.iter().map(|r| evaluate(&q, r)).collect();
        assert_eq!(got, base, "seed {seed}");
    }
}

#[test]
fn bad_rpc_rules_are_located_errors() {
    let head = "version: 1\nnetwork:\n  rules:\n    - host: h.example\n      port: 443\n      protocol: https\n      http:\n";
    let cases = [
        (
            "        - {grpc: {service: a.B, method: C}, path: /x}\n",
            "8:45: a grpc rule names its service and method in `grpc`; `path` is for http rules",
        ),
        (
            "        - grpc: {service: \"a b\", method: C}\n",
            "8:27: bad grpc service `a b`",
        ),
        (
            "        - grpc: {service: a.B, method: \"C/D\"}\n",
            "8:40: bad grpc method `C/D`",
        ),
        (
            "        - grpc: {service: a.B, method: C, colour: red}\n",
            "8:43: unknown field `colour` in grpc",
        ),
        (
            "        - grpc: {service: a.B}\n",
            "8:17: missing field `method` in grpc",
        ),
        (
            "        - {method: GET, path: /mcp, mcp: {tools: [a]}}\n",
            "8:20: an mcp rule is for POST",
        ),
        (
            "        - {method: POST, path: /mcp, mcp: {tool: [a]}}\n",
            "8:44: unknown field `tool` in mcp",
        ),
        (
            "        - {method: POST, path: /mcp, mcp: {tools: [\"\"]}}\n",
            "8:52: bad tool name \"\"",
        ),
        (
            "        - {id: mcp-tool-not-allowed, method: POST, path: /mcp}\n",
            "8:16: bad rule id `mcp-tool-not-allowed`",
        ),
        (
            "        - {grpc: {service: a.B, method: C}}\n        - {grpc: {service: a.B, method: C}}\n",
            "9:11: duplicate rule id `grpc:h.example:443:a.B/C` (first at 8:11)",
        ),
    ];
    let mut bad = Vec::new();
    for (rule, want) in cases {
        let text = format!("{head}{rule}");
        let e = Policy::parse(&text).expect_err(rule).to_string();
        if !e.starts_with(want) {
            bad.push(format!("{rule}: got `{e}`, want `{want}…`"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn observed(request: OwnedRequest, seq: u64) -> Observed {
    Observed {
        request,
        run: "r1".into(),
        seq,
        ts: format!("2026-12-01T10:00:{seq:02}.0Z"),
        credentials: false,
        refused_by_kernel: false,
        real_path: None,
    }
}

fn owned_post(host: &str, path: &str, rpc: Option<OwnedRpc>) -> OwnedRequest {
    OwnedRequest::Http {
        scheme: Scheme::Http,
        host: host.into(),
        port: 80,
        method: "POST".into(),
        path: path.into(),
        query: None,
        rpc,
    }
}

fn observations() -> Vec<Observed> {
    let tool = |t: &str| {
        Some(OwnedRpc::Tool {
            tool: Some(t.into()),
        })
    };
    let g = |s: &str, m: &str| {
        Some(OwnedRpc::Grpc {
            service: s.into(),
            method: m.into(),
        })
    };
    vec![
        observed(owned_post("mcp.example", "/mcp", None), 1),
        observed(owned_post("mcp.example", "/mcp", tool("search")), 2),
        observed(owned_post("mcp.example", "/mcp", tool("read_file")), 3),
        observed(owned_post("mcp.example", "/mcp", tool("search")), 4),
        observed(owned_post("mcp.example", "/plain", None), 5),
        observed(
            owned_post(
                "grpc.example",
                "/helloworld.Greeter/SayHello",
                g("helloworld.Greeter", "SayHello"),
            ),
            6,
        ),
        observed(owned_post("grpc.example", "/pkg.S/M", g("pkg.S", "M")), 7),
    ]
}

#[test]
fn learned_rpc_rules_allow_what_was_seen_and_round_trip() {
    let items = observations();
    let mut l = Learner::new();
    items.iter().cloned().for_each(|o| l.observe(o));
    let p = l.finish();
    let mut rev = Learner::new();
    items.iter().rev().cloned().for_each(|o| rev.observe(o));
    let text = p.to_yaml();
    assert_eq!(text, rev.finish().to_yaml(), "order-independent");
    let back = Policy::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, p, "{text}");
    assert_eq!(back.to_yaml(), text);
    assert!(text.contains("mcp: {tools: [read_file, search]}"), "{text}");
    assert!(
        text.contains("grpc: {service: helloworld.Greeter, method: SayHello}"),
        "{text}"
    );
    assert_eq!(back.observation, Observation::Complete);
    // What was seen is allowed...
    for o in &items {
        let d = evaluate(&back, &o.request.as_request());
        assert!(!d.is_deny(), "{:?} → {d:?}\n{text}", o.request);
    }
    // ...a tool or gRPC method that was not is denied; the plain route learned no tools.
    let unseen = owned_post(
        "mcp.example",
        "/mcp",
        Some(OwnedRpc::Tool {
            tool: Some("delete".into()),
        }),
    );
    assert_eq!(evaluate(&back, &unseen.as_request()).rule, TOOL_NOT_ALLOWED);
    let other = grpc_call("POST", "/pkg.S/Other", None, Some("application/grpc"));
    let req = Request::Http {
        scheme: Scheme::Http,
        host: "grpc.example",
        port: 80,
        method: "POST",
        path: "/pkg.S/Other",
        query: None,
        rpc: other,
    };
    assert_eq!(evaluate(&back, &req).rule, DEFAULT_DENY);
    // The gRPC path was not learned as a plain http route.
    assert!(!text.contains("path: /pkg.S/M"), "{text}");
    let page = explain(&back);
    assert!(
        page.contains("allow POST /mcp (mcp tools only: read_file, search)"),
        "{page}"
    );
    assert!(
        page.contains("allow grpc pkg.S/M  grpc:grpc.example:80:pkg.S/M"),
        "{page}"
    );
}

#[test]
fn a_nameless_tool_call_is_an_incomplete_observation() {
    let mut l = Learner::new();
    l.observe(observed(
        owned_post("mcp.example", "/mcp", Some(OwnedRpc::Tool { tool: None })),
        1,
    ));
    let p = l.finish();
    assert!(
        matches!(&p.observation, Observation::Incomplete { reasons } if reasons.iter().any(|r| r.contains("named no tool"))),
        "{:?}",
        p.observation
    );
    // The route is learned without tools (no tool call could be written down).
    let route = &p.network.rules()[0].http[0];
    assert_eq!(route.tools, None);
}

#[test]
fn hand_written_rpc_rules_round_trip() {
    let p = policy();
    let text = p.to_yaml();
    let back = Policy::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, p, "{text}");
    assert!(
        text.contains("grpc: {service: pkg.Admin, method: \"*\"}"),
        "{text}"
    );
    let page = explain(&p);
    assert!(page.contains("grpc pkg.Admin/* (every method)"), "{page}");
    assert!(
        page.contains("deny * /mcp?(any query) (mcp tools: rm, search)"),
        "{page}"
    );
}

//! One HTTP request against a policy of 1,000 HTTP rules (100 hosts × 10 paths): the host
//! index and the precompiled path patterns keep this far under the 2 µs budget.

use criterion::{criterion_group, criterion_main, Criterion};
use idagent_policy::{evaluate, Policy, Request, Scheme};
use std::fmt::Write as _;
use std::hint::black_box;

fn big_policy() -> Policy {
    let mut y = String::from("version: 1\nmode: enforce\nnetwork:\n  rules:\n");
    for h in 0..100 {
        let _ = write!(y, "    - host: host{h}.example.com\n      port: 443\n      protocol: https\n      http:\n");
        for p in 0..10 {
            let _ = writeln!(y, "        - {{method: GET, path: \"/api/v{p}/items/{{id}}/detail\", query: [page, sort]}}");
        }
    }
    y.push_str("    - {host: \"*.cdn.example.com\", port: 443, protocol: tls}\n");
    Policy::parse(&y).unwrap_or_else(|e| panic!("bench policy: {e}"))
}

fn bench(c: &mut Criterion) {
    let policy = big_policy();
    let req = Request::Http {
        scheme: Scheme::Https,
        host: "host57.example.com",
        port: 443,
        method: "GET",
        path: "/api/v9/items/12345/detail",
        query: Some("page=2&sort=asc"),
        rpc: None,
    };
    assert!(!evaluate(&policy, &req).is_deny());
    c.bench_function("evaluate_http_1000_rules", |b| {
        b.iter(|| evaluate(black_box(&policy), black_box(&req)))
    });
    let miss = Request::Http {
        scheme: Scheme::Https,
        host: "host57.example.com",
        port: 443,
        method: "GET",
        path: "/api/v9/items/12345/other",
        query: None,
        rpc: None,
    };
    c.bench_function("evaluate_http_1000_rules_default_deny", |b| {
        b.iter(|| evaluate(black_box(&policy), black_box(&miss)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Table tests of [`super::evaluate`] and [`super::resolve_policy`].

use super::*;

fn sa(text: &str) -> SocketAddr {
    text.parse().expect("test socket address parses")
}

fn policy(offline: bool, allow_private: bool) -> Policy {
    Policy {
        offline,
        allow_private,
        map: UpstreamMap::from_entries([
            "api.openai.com=127.0.0.1:8443",
            "api.openai.com:80=127.0.0.1:8080",
            "metadata.test=169.254.169.254:80",
            "9.9.9.9:53=127.0.0.1:5353",
        ])
        .expect("test map parses"),
    }
}

fn dial(name: Option<&str>, addr: &str, port: u16) -> DialRequest {
    DialRequest {
        name: name.map(str::to_string),
        addr: addr.parse().expect("test address parses"),
        port,
    }
}

use RefuseReason::*;
use Verdict::*;

#[test]
fn evaluate_table() {
    let mapped_tls = Mapped(sa("127.0.0.1:8443"));
    // (offline, allow_private, name, addr, port, expected)
    type Case = (bool, bool, Option<&'static str>, &'static str, u16, Verdict);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // Rule 1: a map entry wins, whatever the address and mode.
        (true, false, Some("api.openai.com"), "198.18.0.1", 443, mapped_tls),
        (false, false, Some("API.OPENAI.COM."), "198.18.0.1", 443, mapped_tls),
        (true, false, Some("api.openai.com"), "fd00:77:ffff::1", 443, mapped_tls),
        (true, false, Some("api.openai.com"), "198.18.0.1", 80, Mapped(sa("127.0.0.1:8080"))),
        (false, false, Some("api.openai.com"), "104.18.7.192", 443, mapped_tls),
        (false, false, Some("api.openai.com"), "10.0.0.1", 443, mapped_tls),
        (true, false, Some("metadata.test"), "198.18.0.2", 80, Mapped(sa("169.254.169.254:80"))),
        (true, false, None, "9.9.9.9", 53, Mapped(sa("127.0.0.1:5353"))),
        (true, false, None, "::ffff:9.9.9.9", 53, Mapped(sa("127.0.0.1:5353"))),
        (true, false, Some("other.test"), "9.9.9.9", 53, Mapped(sa("127.0.0.1:5353"))),
        // Rule 2: unclaimed synthetic addresses are refused in every mode.
        (true, false, None, "198.18.0.1", 443, Refuse(SyntheticUnmapped)),
        (false, true, None, "198.19.1.1", 443, Refuse(SyntheticUnmapped)),
        (false, true, Some("other.test"), "fd00:77:ffff::5", 443, Refuse(SyntheticUnmapped)),
        (false, false, None, "::ffff:198.18.0.1", 443, Refuse(SyntheticUnmapped)),
        // Rule 3: offline refuses everything else, public or private.
        (true, false, None, "8.8.8.8", 443, Refuse(OfflineUnmapped)),
        (true, true, Some("example.com"), "93.184.216.34", 443, Refuse(OfflineUnmapped)),
        (true, false, None, "127.0.0.1", 80, Refuse(OfflineUnmapped)),
        (true, false, None, "9.9.9.9", 54, Refuse(OfflineUnmapped)),
        // Rule 4: online SSRF guard.
        (false, false, None, "8.8.8.8", 443, Direct(sa("8.8.8.8:443"))),
        (false, false, Some("example.com"), "93.184.216.34", 80, Direct(sa("93.184.216.34:80"))),
        (false, false, None, "2606:4700::1111", 443, Direct(sa("[2606:4700::1111]:443"))),
        (false, false, None, "::ffff:8.8.8.8", 53, Direct(sa("8.8.8.8:53"))),
        (false, false, None, "127.0.0.1", 80, Refuse(PrivateAddress(SpecialRange::Loopback))),
        (false, false, None, "::1", 80, Refuse(PrivateAddress(SpecialRange::Loopback))),
        (false, false, None, "10.77.0.1", 53, Refuse(PrivateAddress(SpecialRange::Private))),
        (false, false, None, "192.168.1.1", 80, Refuse(PrivateAddress(SpecialRange::Private))),
        (false, false, None, "100.64.1.1", 80, Refuse(PrivateAddress(SpecialRange::SharedCgnat))),
        (false, false, None, "169.254.1.1", 80, Refuse(PrivateAddress(SpecialRange::LinkLocal))),
        (false, false, None, "fe80::1", 80, Refuse(PrivateAddress(SpecialRange::LinkLocal))),
        (false, false, None, "fd12::1", 80, Refuse(PrivateAddress(SpecialRange::UniqueLocal))),
        (false, false, None, "0.0.0.0", 80, Refuse(PrivateAddress(SpecialRange::Unspecified))),
        (false, false, None, "::", 80, Refuse(PrivateAddress(SpecialRange::Unspecified))),
        (false, false, None, "224.0.0.251", 5353, Refuse(PrivateAddress(SpecialRange::Multicast))),
        (false, false, None, "255.255.255.255", 67, Refuse(PrivateAddress(SpecialRange::Broadcast))),
        (false, false, None, "192.0.2.1", 80, Refuse(PrivateAddress(SpecialRange::Documentation))),
        (false, false, None, "::ffff:10.0.0.1", 80, Refuse(PrivateAddress(SpecialRange::Private))),
        (false, false, None, "64:ff9b::7f00:1", 80, Refuse(PrivateAddress(SpecialRange::Loopback))),
        (false, false, Some("evil.test"), "127.0.0.1", 80, Refuse(PrivateAddress(SpecialRange::Loopback))),
        // allow_private opens special ranges but never metadata.
        (false, true, None, "127.0.0.1", 80, Direct(sa("127.0.0.1:80"))),
        (false, true, None, "10.1.2.3", 22, Direct(sa("10.1.2.3:22"))),
        (false, true, None, "fd12::1", 80, Direct(sa("[fd12::1]:80"))),
        (false, true, None, "169.254.169.254", 80, Refuse(PrivateAddress(SpecialRange::CloudMetadata))),
        (false, true, None, "::ffff:169.254.169.254", 80, Refuse(PrivateAddress(SpecialRange::CloudMetadata))),
        (false, true, None, "fd00:ec2::254", 80, Refuse(PrivateAddress(SpecialRange::CloudMetadata))),
        (false, false, None, "169.254.169.254", 80, Refuse(PrivateAddress(SpecialRange::CloudMetadata))),
        // Port 0 is never dialable.
        (false, true, Some("api.openai.com"), "8.8.8.8", 0, Refuse(InvalidPort)),
    ];
    for (offline, allow_private, name, addr, port, want) in cases {
        let got = evaluate(&policy(offline, allow_private), &dial(name, addr, port));
        assert_eq!(
            got, want,
            "offline={offline} allow_private={allow_private} name={name:?} {addr}:{port}"
        );
    }
}

#[test]
fn synthetic_dial_resolves_through_the_name_table() {
    // The gateway's path: address → NameTable → name → evaluate.
    let p = policy(true, false);
    let mut table = NameTable::default();
    let (v4, v6) = table
        .synthetic_for("api.openai.com")
        .expect("pool has room");
    for addr in [IpAddr::V4(v4), IpAddr::V6(v6)] {
        let req = DialRequest {
            name: table.name_of(addr).map(str::to_string),
            addr,
            port: 443,
        };
        assert_eq!(evaluate(&p, &req), Mapped(sa("127.0.0.1:8443")));
    }
}

#[test]
fn resolve_policy_table() {
    use NameVerdict as V;
    #[rustfmt::skip]
    let cases: Vec<(bool, &str, RecordType, NameVerdict)> = vec![
        (true, "api.openai.com", RecordType::A, V::Mapped),
        (true, "API.openai.com.", RecordType::AAAA, V::Mapped),
        (true, "api.openai.com", RecordType::HTTPS, V::Mapped),
        (false, "api.openai.com", RecordType::A, V::Mapped),
        (true, "example.com", RecordType::A, V::NxDomain(NxReason::OfflineUnmapped)),
        (true, "example.com", RecordType::TXT, V::NxDomain(NxReason::OfflineUnmapped)),
        (true, "", RecordType::A, V::NxDomain(NxReason::OfflineUnmapped)),
        (false, "example.com", RecordType::A, V::Resolve),
        (false, "example.com.", RecordType::AAAA, V::Resolve),
        (false, "example.com", RecordType::TXT, V::Refuse(NameRefuseReason::UnsupportedType)),
        (false, "example.com", RecordType::ANY, V::Refuse(NameRefuseReason::UnsupportedType)),
        (false, "1.0.0.127.in-addr.arpa", RecordType::PTR, V::Refuse(NameRefuseReason::UnsupportedType)),
    ];
    for (offline, name, qtype, want) in cases {
        assert_eq!(
            resolve_policy(&policy(offline, false), name, qtype),
            want,
            "offline={offline} {name} {qtype}"
        );
    }
}

#[test]
fn verdicts_serialize_for_audit() {
    let refuse = Refuse(PrivateAddress(SpecialRange::CloudMetadata));
    let json = serde_json::to_string(&refuse).expect("serializes");
    assert_eq!(
        json,
        r#"{"verdict":"refuse","detail":{"reason":"private_address","range":"cloud_metadata"}}"#
    );
    assert_eq!(
        serde_json::to_string(&NameVerdict::NxDomain(NxReason::OfflineUnmapped))
            .expect("serializes"),
        r#"{"verdict":"nx_domain","reason":"offline_unmapped"}"#
    );
    assert_eq!(
        PrivateAddress(SpecialRange::Loopback).to_string(),
        "loopback address"
    );
}

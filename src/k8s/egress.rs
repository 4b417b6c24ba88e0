//! The L3/L4 projection of a run's network rules: what a Kubernetes NetworkPolicy may let the
//! pod reach. idagent decides every DNS query, connection, TLS session and HTTP request (L7);
//! this is the wall under it, so that a flaw in the proxy cannot reach further than the policy
//! could ever allow. NetworkPolicy has no names, so a name-based rule opens only its port (to
//! every public address); literal addresses and the upstream map's targets open exactly
//! themselves. Pure: no I/O.

use idagent_policy::{Action, HostPattern, Mode, Policy};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Transport of one allowed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// Destinations of one egress rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    /// One address (`/32` or `/128`).
    Addr(IpAddr),
    /// Every address (`0.0.0.0/0` and `::/0`), the special ranges excepted unless
    /// `private` (the proxy's own SSRF guard refuses them: the wall says the same).
    Anywhere { private: bool },
}

/// A port, or every port of the transport (`None`).
pub type Port = (Proto, Option<u16>);

/// The egress the NetworkPolicy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// Everything (no policy and online: idagent alone decides).
    Open,
    /// Only these (none at all: no egress).
    Rules(BTreeMap<Peer, Vec<Port>>),
}

/// Why the egress is what it is, for the NetworkPolicy's annotation.
pub fn reason(policy: Option<&Policy>, offline: bool) -> &'static str {
    match (offline, policy) {
        (true, _) => "offline: only the upstream map's targets",
        (false, None) => "open: no --policy, so idagent alone decides (L7) and this wall allows all egress",
        (false, Some(_)) => "the policy's L3/L4 projection, the upstream map's targets and DNS for the proxy's resolver",
    }
}

/// What the pod may reach: see the module docs. `map_targets` are the upstream map's targets
/// (dialed instead of the hosts they replace); `allow_private` is `--allow-private`.
pub fn project(
    policy: Option<&Policy>,
    offline: bool,
    allow_private: bool,
    map_targets: &[SocketAddr],
) -> Egress {
    let mut rules: BTreeMap<Peer, Vec<Port>> = BTreeMap::new();
    let mut add = |peer: Peer, port: Port| rules.entry(peer).or_default().push(port);
    // A mapped host may be reached over TCP or UDP (the map is by address and port).
    for t in map_targets {
        let ip = t.ip().to_canonical();
        add(Peer::Addr(ip), (Proto::Tcp, Some(t.port())));
        add(Peer::Addr(ip), (Proto::Udp, Some(t.port())));
    }
    if !offline {
        let Some(policy) = policy else {
            return Egress::Open;
        };
        let any = Peer::Anywhere {
            private: allow_private,
        };
        // The proxy resolves names itself (the cluster's resolver, usually at a private
        // address: so no ranges excepted here).
        let dns = Peer::Anywhere { private: true };
        add(dns.clone(), (Proto::Udp, Some(53)));
        add(dns, (Proto::Tcp, Some(53)));
        // A section in report mode refuses nothing when no rule matches, so the wall must not
        // either: all ports of that transport stay open (idagent logs the would-be denials).
        let tcp_enforced = policy.network.mode.unwrap_or(policy.mode) == Mode::Enforce;
        let udp_enforced = policy.udp.mode.unwrap_or(policy.mode) == Mode::Enforce;
        if tcp_enforced {
            for r in policy.network.rules() {
                // A deny rule never widens; one on a name cannot be expressed at L3 at all.
                if r.action == Action::Allow {
                    add(peer(&r.host, &any), (Proto::Tcp, Some(r.port)));
                }
            }
        } else {
            add(any.clone(), (Proto::Tcp, None));
        }
        if udp_enforced {
            for r in policy.udp.rules() {
                if r.action == Action::Allow {
                    add(peer(&r.host, &any), (Proto::Udp, Some(r.port)));
                }
            }
        } else {
            add(any, (Proto::Udp, None));
        }
    }
    for ports in rules.values_mut() {
        ports.sort();
        ports.dedup();
        // A whole transport covers its single ports.
        let whole: Vec<Proto> = ports
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(t, _)| *t)
            .collect();
        ports.retain(|(t, p)| p.is_none() || !whole.contains(t));
    }
    Egress::Rules(rules)
}

fn peer(host: &HostPattern, any: &Peer) -> Peer {
    match host {
        HostPattern::Ip(ip) => Peer::Addr(ip.to_canonical()),
        HostPattern::Exact(_) | HostPattern::Wildcard(_) => any.clone(),
    }
}

/// The special ranges the proxy refuses to dial without `--allow-private` (see
/// `crate::upstream::ranges`), as NetworkPolicy `except` blocks of `0.0.0.0/0` and `::/0`.
pub const EXCEPT_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
pub const EXCEPT_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// The NetworkPolicy `ipBlock` peers of `peer`.
pub fn ip_blocks(peer: &Peer) -> Vec<serde_json::Value> {
    use serde_json::json;
    match peer {
        Peer::Addr(IpAddr::V4(a)) => vec![json!({"ipBlock": {"cidr": format!("{a}/32")}})],
        Peer::Addr(IpAddr::V6(a)) => vec![json!({"ipBlock": {"cidr": format!("{a}/128")}})],
        Peer::Anywhere { private: true } => vec![
            json!({"ipBlock": {"cidr": "0.0.0.0/0"}}),
            json!({"ipBlock": {"cidr": "::/0"}}),
        ],
        Peer::Anywhere { private: false } => vec![
            json!({"ipBlock": {"cidr": "0.0.0.0/0", "except": EXCEPT_V4}}),
            json!({"ipBlock": {"cidr": "::/0", "except": EXCEPT_V6}}),
        ],
    }
}

/// The NetworkPolicy `egress` list (`[{}]` = everything; `[]` = nothing).
pub fn egress_rules(egress: &Egress) -> serde_json::Value {
    use serde_json::json;
    match egress {
        Egress::Open => json!([{}]),
        Egress::Rules(rules) => rules
            .iter()
            .map(|(peer, ports)| {
                let ports: Vec<_> = ports
                    .iter()
                    .map(|(proto, port)| match port {
                        Some(p) => json!({"protocol": proto.as_str(), "port": p}),
                        None => json!({"protocol": proto.as_str()}),
                    })
                    .collect();
                json!({"to": ip_blocks(peer), "ports": ports})
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        Policy::parse(yaml).expect("policy")
    }

    const MIXED: &str = "version: 1\nmode: enforce\nnetwork:\n  rules:\n    - host: api.openai.com\n      port: 443\n      protocol: https\n      http:\n        - method: POST\n          path: /v1/chat/completions\n    - host: 192.0.2.7\n      port: 8080\n      protocol: tcp\n    - host: 2001:db8::5\n      port: 22\n      protocol: tcp\n    - host: evil.example\n      port: 25\n      protocol: tcp\n      action: deny\nudp:\n  rules:\n    - host: time.example\n      port: 123\n";

    fn rules(e: Egress) -> BTreeMap<Peer, Vec<Port>> {
        match e {
            Egress::Rules(r) => r,
            Egress::Open => panic!("open"),
        }
    }

    #[test]
    fn names_open_their_ports_addresses_themselves_denies_nothing() {
        let p = policy(MIXED);
        let map: SocketAddr = "10.1.2.3:8443".parse().expect("addr");
        let r = rules(project(Some(&p), false, false, &[map]));
        let any = Peer::Anywhere { private: false };
        assert_eq!(
            r[&any],
            vec![(Proto::Tcp, Some(443)), (Proto::Udp, Some(123))]
        );
        let ip = |s: &str| Peer::Addr(s.parse().expect("ip"));
        assert_eq!(r[&ip("192.0.2.7")], vec![(Proto::Tcp, Some(8080))]);
        assert_eq!(r[&ip("2001:db8::5")], vec![(Proto::Tcp, Some(22))]);
        assert_eq!(
            r[&ip("10.1.2.3")],
            vec![(Proto::Tcp, Some(8443)), (Proto::Udp, Some(8443))]
        );
        assert_eq!(
            r[&Peer::Anywhere { private: true }],
            vec![(Proto::Tcp, Some(53)), (Proto::Udp, Some(53))]
        );
        assert_eq!(r.len(), 5, "{r:?}");
        // Port 25 (the deny rule) is nowhere.
        assert!(r.values().flatten().all(|(_, p)| *p != Some(25)));
        let v = egress_rules(&Egress::Rules(r));
        let text = v.to_string();
        assert!(text.contains("\"192.0.2.7/32\"") && text.contains("\"2001:db8::5/128\""));
        assert!(text.contains("\"except\""), "{text}");
    }

    #[test]
    fn allow_private_drops_the_excepted_ranges() {
        let p = policy(MIXED);
        let r = rules(project(Some(&p), false, true, &[]));
        assert!(r.contains_key(&Peer::Anywhere { private: true }));
        assert!(!r.contains_key(&Peer::Anywhere { private: false }));
    }

    #[test]
    fn offline_is_the_map_targets_alone_and_no_dns() {
        let p = policy(MIXED);
        let map: SocketAddr = "[fd00::9]:443".parse().expect("addr");
        for pol in [Some(&p), None] {
            let r = rules(project(pol, true, false, &[map]));
            assert_eq!(r.len(), 1, "{r:?}");
            assert!(r.contains_key(&Peer::Addr("fd00::9".parse().expect("ip"))));
        }
        assert_eq!(
            egress_rules(&project(None, true, false, &[])),
            serde_json::json!([])
        );
    }

    #[test]
    fn no_policy_online_is_open_and_report_mode_opens_its_transport() {
        assert_eq!(project(None, false, false, &[]), Egress::Open);
        assert_eq!(egress_rules(&Egress::Open), serde_json::json!([{}]));
        let report = policy(&MIXED.replace("mode: enforce", "mode: report"));
        let r = rules(project(Some(&report), false, false, &[]));
        assert_eq!(
            r[&Peer::Anywhere { private: false }],
            vec![(Proto::Tcp, None), (Proto::Udp, None)]
        );
        // The TCP section alone in report mode: UDP stays narrow.
        let tcp_report = policy(&MIXED.replace("network:\n", "network:\n  mode: report\n"));
        let r = rules(project(Some(&tcp_report), false, false, &[]));
        assert_eq!(
            r[&Peer::Anywhere { private: false }],
            vec![(Proto::Tcp, None), (Proto::Udp, Some(123))]
        );
    }
}

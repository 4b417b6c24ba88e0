//! Classification of IP addresses into special-purpose ranges (the SSRF guard's data).
//!
//! Owns the table of ranges the gateway must not dial on a guest's behalf unless the operator
//! allows it: loopback, private, link-local, cloud metadata and the like. It does not decide
//! anything (that is [`super::evaluate`]) and knows nothing about the synthetic pool.

use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A special-purpose address range (IANA special-purpose registries, plus cloud metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialRange {
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// RFC 6598 carrier-grade NAT: `100.64.0.0/10`.
    SharedCgnat,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// Instance metadata services: `169.254.169.254`, `fd00:ec2::254`, `100.100.100.200`
    /// (Alibaba), `168.63.129.16` (Azure wire server). Refused even with `allow_private`.
    CloudMetadata,
    /// RFC 4193 unique local: `fc00::/7`.
    UniqueLocal,
    /// Deprecated site-local `fec0::/10`.
    SiteLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// RFC 2544 `198.18.0.0/15` (idagent's synthetic pool lives here; see `names`).
    Benchmarking,
    /// Everything else that is not globally routable: `0/8`, `192.0.0/24`, `240/4`,
    /// `100::/64`, `64:ff9b:1::/48`, IPv4-compatible `::a.b.c.d`.
    Reserved,
}

impl SpecialRange {
    /// The stable snake_case name used in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecialRange::Unspecified => "unspecified",
            SpecialRange::Loopback => "loopback",
            SpecialRange::Private => "private",
            SpecialRange::SharedCgnat => "shared_cgnat",
            SpecialRange::LinkLocal => "link_local",
            SpecialRange::CloudMetadata => "cloud_metadata",
            SpecialRange::UniqueLocal => "unique_local",
            SpecialRange::SiteLocal => "site_local",
            SpecialRange::Multicast => "multicast",
            SpecialRange::Broadcast => "broadcast",
            SpecialRange::Documentation => "documentation",
            SpecialRange::Benchmarking => "benchmarking",
            SpecialRange::Reserved => "reserved",
        }
    }
}

impl std::fmt::Display for SpecialRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The special range `addr` falls in, or `None` for a globally routable address.
///
/// IPv6 forms that embed an IPv4 address the host would end up reaching (IPv4-mapped
/// `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are classified by that address,
/// so `::ffff:169.254.169.254` is cloud metadata, not "global IPv6".
pub fn classify(addr: IpAddr) -> Option<SpecialRange> {
    match addr {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<SpecialRange> {
    let o = ip.octets();
    let in_net = |net: [u8; 4], bits: u32| prefix_match(&o, &net, bits);
    let range = if ip.is_unspecified() {
        SpecialRange::Unspecified
    } else if ip.is_broadcast() {
        SpecialRange::Broadcast
    } else if [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(100, 100, 100, 200),
        Ipv4Addr::new(168, 63, 129, 16),
    ]
    .contains(&ip)
    {
        SpecialRange::CloudMetadata
    } else if in_net([127, 0, 0, 0], 8) {
        SpecialRange::Loopback
    } else if in_net([10, 0, 0, 0], 8)
        || in_net([172, 16, 0, 0], 12)
        || in_net([192, 168, 0, 0], 16)
    {
        SpecialRange::Private
    } else if in_net([100, 64, 0, 0], 10) {
        SpecialRange::SharedCgnat
    } else if in_net([169, 254, 0, 0], 16) {
        SpecialRange::LinkLocal
    } else if in_net([224, 0, 0, 0], 4) {
        SpecialRange::Multicast
    } else if in_net([192, 0, 2, 0], 24)
        || in_net([198, 51, 100, 0], 24)
        || in_net([203, 0, 113, 0], 24)
    {
        SpecialRange::Documentation
    } else if in_net([198, 18, 0, 0], 15) {
        SpecialRange::Benchmarking
    } else if in_net([0, 0, 0, 0], 8) || in_net([192, 0, 0, 0], 24) || in_net([240, 0, 0, 0], 4) {
        SpecialRange::Reserved
    } else {
        return None;
    };
    Some(range)
}

fn classify_v6(ip: Ipv6Addr) -> Option<SpecialRange> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let o = ip.octets();
    let in_net = |net: [u8; 16], bits: u32| prefix_match(&o, &net, bits);
    let embedded_v4 = |at: usize| Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3]);
    let range = if ip.is_unspecified() {
        SpecialRange::Unspecified
    } else if ip.is_loopback() {
        SpecialRange::Loopback
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        SpecialRange::CloudMetadata
    } else if in_net(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0).octets(), 96) {
        // NAT64 well-known prefix: the translator on the host's path dials the v4 address.
        return classify_v4(embedded_v4(12));
    } else if in_net(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0).octets(), 16) {
        // 6to4: the relay dials the embedded v4 address.
        return classify_v4(embedded_v4(2));
    } else if in_net([0; 16], 96) {
        // IPv4-compatible (deprecated), `::` and `::1` handled above.
        SpecialRange::Reserved
    } else if in_net(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0).octets(), 10) {
        SpecialRange::LinkLocal
    } else if in_net(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0).octets(), 10) {
        SpecialRange::SiteLocal
    } else if in_net(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0).octets(), 7) {
        SpecialRange::UniqueLocal
    } else if ip.is_multicast() {
        SpecialRange::Multicast
    } else if in_net(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0).octets(), 32)
        || in_net(Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0).octets(), 20)
    {
        SpecialRange::Documentation
    } else if in_net(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0).octets(), 64)
        || in_net(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0).octets(), 48)
    {
        SpecialRange::Reserved
    } else {
        return None;
    };
    Some(range)
}

/// Whether the first `bits` bits of `addr` equal those of `net` (both the same length).
pub(crate) fn prefix_match(addr: &[u8], net: &[u8], bits: u32) -> bool {
    let mut remaining = bits;
    for (a, n) in addr.iter().zip(net) {
        if remaining == 0 {
            return true;
        }
        let take = remaining.min(8);
        let mask = u8::MAX << (8 - take);
        if a & mask != n & mask {
            return false;
        }
        remaining -= take;
    }
    remaining == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use SpecialRange::*;

    #[test]
    fn table() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<SpecialRange>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Reserved)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("10.77.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("192.168.1.1", Some(Private)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("100.128.0.1", None),
            ("169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("100.100.100.200", Some(CloudMetadata)),
            ("168.63.129.16", Some(CloudMetadata)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.1", None),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:8.8.8.8", None),
            ("::10.1.2.3", Some(Reserved)),
            ("64:ff9b::a9fe:a9fe", Some(CloudMetadata)),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::1", Some(Reserved)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:808:808::1", None),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(SiteLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd00:77::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("100::1", Some(Reserved)),
            ("2606:4700::1111", None),
            ("2001:4860:4860::8888", None),
        ];
        for (text, want) in cases {
            let ip: IpAddr = text.parse().expect("test address parses");
            assert_eq!(classify(ip), *want, "{text}");
        }
    }

    #[test]
    fn prefix_match_edges() {
        assert!(prefix_match(&[10, 1, 2, 3], &[10, 0, 0, 0], 8));
        assert!(!prefix_match(&[11, 1, 2, 3], &[10, 0, 0, 0], 8));
        assert!(prefix_match(&[1, 2, 3, 4], &[9, 9, 9, 9], 0));
        assert!(prefix_match(&[1, 2, 3, 4], &[1, 2, 3, 4], 32));
        assert!(!prefix_match(&[1, 2, 3, 5], &[1, 2, 3, 4], 32));
        assert!(!prefix_match(&[1, 2, 3, 4], &[1, 2, 3, 4], 33));
    }
}

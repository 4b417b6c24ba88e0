//! Host patterns (`www.example.com`, `*.example.com`, `192.0.2.7`) and the index that finds the
//! rules for a name in a few hash lookups. Owns name normalisation (lowercase, trailing dot
//! dropped). Does not own ports or protocols: callers filter the candidates.
//!
//! Wildcards: `*.example.com` matches a name with **one or more** labels before
//! `.example.com` (`a.example.com`, `a.b.example.com`) and never `example.com` itself.

use serde::{Serialize, Serializer};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

/// The host part of a network, udp or dns rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// One DNS name, normalised (lowercase, no trailing dot).
    Exact(String),
    /// `*.SUFFIX`: any name with at least one label in front of `.SUFFIX` (stored without `*.`).
    Wildcard(String),
    /// An IP literal: reached only by address.
    Ip(IpAddr),
}

/// Lowercases a DNS name and drops one trailing dot; borrows when nothing changes.
pub fn normalize_name(name: &str) -> Cow<'_, str> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl HostPattern {
    /// Parses a host as written in a rule; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(HostPattern::Ip(ip));
        }
        let norm = normalize_name(text);
        if let Some(suffix) = norm.strip_prefix("*.") {
            if valid_dns_name(suffix) && !suffix.contains('*') {
                return Ok(HostPattern::Wildcard(suffix.to_string()));
            }
            return Err(format!(
                "bad wildcard host `{text}` (expected `*.` and a DNS name)"
            ));
        }
        if norm.contains('*') {
            return Err(format!(
                "bad host `{text}`: a wildcard is allowed only as a leading `*.` label"
            ));
        }
        if valid_dns_name(&norm) {
            Ok(HostPattern::Exact(norm.into_owned()))
        } else {
            Err(format!(
                "bad host `{text}` (expected a DNS name, `*.name` or an IP address)"
            ))
        }
    }

    /// The pattern for a name or address seen at run time (never a wildcard).
    pub fn from_observed(name: &str) -> Option<HostPattern> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Some(HostPattern::Ip(ip));
        }
        let norm = normalize_name(name);
        valid_dns_name(&norm).then(|| HostPattern::Exact(norm.into_owned()))
    }

    /// Whether this pattern matches `name`, which must already be normalised.
    pub fn matches_name(&self, name: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == name,
            HostPattern::Wildcard(suffix) => name
                .strip_suffix(suffix.as_str())
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty()),
            HostPattern::Ip(ip) => name.parse::<IpAddr>().is_ok_and(|n| n == *ip),
        }
    }

    /// True for `*.` patterns.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, HostPattern::Wildcard(_))
    }

    /// True for IP literals.
    pub fn is_ip(&self) -> bool {
        matches!(self, HostPattern::Ip(_))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Rule positions by host: exact names and IPs by hash, wildcards by suffix, so a lookup
/// costs one hash probe per label of the name.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostIndex {
    exact: HashMap<String, Vec<usize>>,
    wildcard: HashMap<String, Vec<usize>>,
    ip: HashMap<IpAddr, Vec<usize>>,
}

impl HostIndex {
    pub(crate) fn build<'a>(hosts: impl Iterator<Item = &'a HostPattern>) -> HostIndex {
        let mut index = HostIndex::default();
        for (i, host) in hosts.enumerate() {
            match host {
                HostPattern::Exact(h) => index.exact.entry(h.clone()).or_default().push(i),
                HostPattern::Wildcard(s) => index.wildcard.entry(s.clone()).or_default().push(i),
                HostPattern::Ip(ip) => index.ip.entry(*ip).or_default().push(i),
            }
        }
        index
    }

    /// Calls `f` with every rule position whose host matches `name` (any spelling; an IP
    /// literal in `name` finds the IP rules).
    pub(crate) fn for_name(&self, name: &str, mut f: impl FnMut(usize)) {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return self.for_ip(ip, f);
        }
        let name = normalize_name(name);
        let name = name.as_ref();
        self.exact
            .get(name)
            .into_iter()
            .flatten()
            .for_each(|&i| f(i));
        if self.wildcard.is_empty() {
            return;
        }
        for (pos, _) in name.match_indices('.') {
            if pos == 0 {
                continue;
            }
            let suffix = &name[pos + 1..];
            self.wildcard
                .get(suffix)
                .into_iter()
                .flatten()
                .for_each(|&i| f(i));
        }
    }

    /// Calls `f` with every rule position whose host is the IP literal `ip`.
    pub(crate) fn for_ip(&self, ip: IpAddr, mut f: impl FnMut(usize)) {
        self.ip.get(&ip).into_iter().flatten().for_each(|&i| f(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(index: &HostIndex, name: &str) -> Vec<usize> {
        let mut v = Vec::new();
        index.for_name(name, |i| v.push(i));
        v.sort_unstable();
        v
    }

    #[test]
    fn wildcard_needs_at_least_one_label() {
        let w = HostPattern::parse("*.google.com").unwrap();
        assert!(w.matches_name("a.google.com"));
        assert!(w.matches_name("a.b.google.com"));
        assert!(!w.matches_name("google.com"));
        assert!(!w.matches_name("evilgoogle.com"));
        assert!(!w.matches_name(".google.com"));
    }

    #[test]
    fn parse_normalises_and_rejects() {
        assert_eq!(
            HostPattern::parse("WWW.Google.COM.").unwrap(),
            HostPattern::Exact("www.google.com".into())
        );
        assert!(HostPattern::parse("10.0.0.1").unwrap().is_ip());
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("*").is_err());
        assert!(HostPattern::parse("bad host").is_err());
        assert!(HostPattern::parse("").is_err());
    }

    #[test]
    fn index_finds_exact_wildcard_and_ip() {
        let hosts = [
            HostPattern::parse("www.google.com").unwrap(),
            HostPattern::parse("*.google.com").unwrap(),
            HostPattern::parse("192.0.2.1").unwrap(),
            HostPattern::parse("*.b.google.com").unwrap(),
        ];
        let index = HostIndex::build(hosts.iter());
        assert_eq!(hits(&index, "WWW.google.com."), vec![0, 1]);
        assert_eq!(hits(&index, "x.b.google.com"), vec![1, 3]);
        assert_eq!(hits(&index, "google.com"), Vec::<usize>::new());
        assert_eq!(hits(&index, "192.0.2.1"), vec![2]);
    }
}

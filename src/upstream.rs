//! Where the gateway may dial on the guest's behalf: policy as data plus two pure functions.
//!
//! Owns [`Policy`] (offline flag, private-range override, the operator's [`UpstreamMap`]),
//! [`evaluate`] for dials and [`resolve_policy`] for DNS names, the special-range table
//! ([`SpecialRange`]) and the run's [`NameTable`] (synthetic addresses and recorded answers).
//! It does no I/O: it neither resolves names nor dials; `dns` and the gateway do, and they
//! write the audit records.
//!
//! # Rules for a dial ([`evaluate`])
//! 1. A map entry for the name the guest meant (resolved name, SNI or Host) or for the literal
//!    address wins, even if it points at loopback (that is how tests reach local fakes).
//! 2. An address in the synthetic pool that no map entry claims is refused: the pool is ours,
//!    nothing real lives there.
//! 3. Offline, anything unmapped is refused.
//! 4. Online, an address in a special range ([`ranges::classify`]) is refused unless
//!    `allow_private` (the SSRF guard); cloud metadata stays refused even then (map it
//!    explicitly to reach it). Otherwise the gateway dials the address the guest dialed —
//!    never a name the guest sent, so SNI/Host cannot make the host resolve anything.
//!
//! # Names ([`resolve_policy`])
//! Mapped names are answered with synthetic addresses, so the gateway learns the name from the
//! address alone. Online, unmapped names are resolved by the host resolver and the guest gets
//! the real addresses (it sees the truth; they are recorded in the [`NameTable`] to label
//! flows). Offline, unmapped names are NXDOMAIN. Only A and AAAA are forwarded. Real answers
//! in private ranges reach the guest unchanged (DNS rebinding gains nothing): it is the dial to
//! them that [`evaluate`] refuses.

pub mod map;
pub mod names;
pub mod ranges;

pub use map::{normalize_host, UpstreamEntry, UpstreamEntryError, UpstreamFileError, UpstreamMap};
pub use names::{is_synthetic, NameTable, NameTableFull, DEFAULT_MAX_NAMES};
pub use ranges::{classify, SpecialRange};

use hickory_proto::rr::RecordType;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

/// The network policy of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// No traffic leaves the host except to mapped upstreams.
    pub offline: bool,
    /// Allow dials to private and special ranges (loopback, RFC 1918, ULA …) when online.
    pub allow_private: bool,
    /// The operator's host → address map.
    pub map: UpstreamMap,
}

/// A dial the guest asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRequest {
    /// The name the guest meant: from the [`NameTable`], the TLS SNI or the HTTP Host.
    pub name: Option<String>,
    /// The address the guest dialed.
    pub addr: IpAddr,
    pub port: u16,
}

/// What the gateway does with a dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    /// Dial this operator-chosen address instead.
    Mapped(SocketAddr),
    /// Dial the guest's destination as is.
    Direct(SocketAddr),
    Refuse(RefuseReason),
}

/// Why a dial is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "range", rename_all = "snake_case")]
pub enum RefuseReason {
    /// Offline run and no map entry for the destination.
    OfflineUnmapped,
    /// A synthetic-pool address no map entry claims (stale, or made up by the guest).
    SyntheticUnmapped,
    /// The destination is in a special range and `allow_private` is off (or it is metadata).
    PrivateAddress(SpecialRange),
    /// Port 0 is not dialable.
    InvalidPort,
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseReason::OfflineUnmapped => f.write_str("offline and not mapped"),
            RefuseReason::SyntheticUnmapped => f.write_str("synthetic address not mapped"),
            RefuseReason::PrivateAddress(range) => write!(f, "{range} address"),
            RefuseReason::InvalidPort => f.write_str("port 0"),
        }
    }
}

/// Decides a dial (see the module docs for the rules). Pure.
pub fn evaluate(policy: &Policy, dest: &DialRequest) -> Verdict {
    let addr = dest.addr.to_canonical();
    if dest.port == 0 {
        return Verdict::Refuse(RefuseReason::InvalidPort);
    }
    let by_name = dest
        .name
        .as_deref()
        .and_then(|name| policy.map.lookup(name, dest.port));
    if let Some(target) = by_name.or_else(|| policy.map.lookup_addr(addr, dest.port)) {
        return Verdict::Mapped(target);
    }
    if is_synthetic(addr) {
        return Verdict::Refuse(RefuseReason::SyntheticUnmapped);
    }
    if policy.offline {
        return Verdict::Refuse(RefuseReason::OfflineUnmapped);
    }
    match classify(addr) {
        Some(SpecialRange::CloudMetadata) => {
            Verdict::Refuse(RefuseReason::PrivateAddress(SpecialRange::CloudMetadata))
        }
        Some(range) if !policy.allow_private => {
            Verdict::Refuse(RefuseReason::PrivateAddress(range))
        }
        _ => Verdict::Direct(SocketAddr::new(addr, dest.port)),
    }
}

/// How to answer a DNS question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum NameVerdict {
    /// The name is mapped: answer A/AAAA with its synthetic addresses from the run's
    /// [`NameTable`]; other types get an empty NOERROR (the name exists, no such record).
    Mapped,
    /// Ask the host resolver (online, unmapped, A or AAAA).
    Resolve,
    /// Answer NXDOMAIN.
    NxDomain(NxReason),
    /// Answer REFUSED: online, unmapped, and a type idagent does not forward.
    Refuse(NameRefuseReason),
}

/// Why a name does not exist for the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NxReason {
    /// Offline run and the name is not mapped.
    OfflineUnmapped,
}

/// Why a question is refused outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameRefuseReason {
    /// Only A and AAAA questions are forwarded to the host resolver.
    UnsupportedType,
}

/// Decides how to answer `qtype` for `name` (any case, trailing dot ignored). Pure.
pub fn resolve_policy(policy: &Policy, name: &str, qtype: RecordType) -> NameVerdict {
    if policy.map.maps_host(name) {
        return NameVerdict::Mapped;
    }
    if policy.offline {
        return NameVerdict::NxDomain(NxReason::OfflineUnmapped);
    }
    match qtype {
        RecordType::A | RecordType::AAAA => NameVerdict::Resolve,
        _ => NameVerdict::Refuse(NameRefuseReason::UnsupportedType),
    }
}

#[cfg(test)]
mod tests;

//! The run's name table: which name the guest meant by an address.
//!
//! Owns two bounded maps:
//! - the **synthetic pool**: mapped names get stable addresses from ranges idagent owns,
//!   [`SYNTHETIC_V4_NET`] (`198.18.0.0/15`, RFC 2544 benchmarking, never a real destination)
//!   and [`SYNTHETIC_V6_NET`] (`fd00:77:ffff::/96`, outside the guest's `fd00:77::/64`). The
//!   n-th name gets offset n+1 in both, so its A and AAAA answers agree. Entries are never
//!   evicted (an address must not change meaning within a run); when the pool is full new names
//!   are refused ([`NameTableFull`]). Only mapped names get synthetic addresses, so the pool is
//!   bounded by the operator's map in practice.
//! - **recorded answers**: real addresses the host resolver returned, remembered so a flow to
//!   them can be labelled `name:port`. These are labels only (policy never trusts them), so when
//!   full the oldest is evicted. An address several names resolved to is labelled with the most
//!   recent one.
//!
//! It does not decide policy ([`super::evaluate`]) and does no I/O.

use super::map::normalize_host;
use super::ranges::prefix_match;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How many names (synthetic) and how many addresses (recorded) a run remembers.
pub const DEFAULT_MAX_NAMES: usize = 65_536;

/// The IPv4 synthetic pool: `198.18.0.0/15` (131,070 usable offsets).
pub const SYNTHETIC_V4_NET: (Ipv4Addr, u32) = (Ipv4Addr::new(198, 18, 0, 0), 15);
/// The IPv6 synthetic pool: `fd00:77:ffff::/96`.
pub const SYNTHETIC_V6_NET: (Ipv6Addr, u32) =
    (Ipv6Addr::new(0xfd00, 0x77, 0xffff, 0, 0, 0, 0, 0), 96);

/// Largest offset usable in both pools (the v4 /15 minus network and broadcast offsets).
const MAX_POOL_OFFSET: u32 = (1 << (32 - SYNTHETIC_V4_NET.1)) - 2;

/// Whether `addr` is in idagent's synthetic pools (IPv4-mapped forms included).
pub fn is_synthetic(addr: IpAddr) -> bool {
    match addr.to_canonical() {
        IpAddr::V4(v4) => prefix_match(
            &v4.octets(),
            &SYNTHETIC_V4_NET.0.octets(),
            SYNTHETIC_V4_NET.1,
        ),
        IpAddr::V6(v6) => prefix_match(
            &v6.octets(),
            &SYNTHETIC_V6_NET.0.octets(),
            SYNTHETIC_V6_NET.1,
        ),
    }
}

/// The synthetic pool is full: no new name can get an address this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("synthetic name pool full ({capacity} names)")]
pub struct NameTableFull {
    pub capacity: usize,
}

/// Name ↔ address memory of one run. See the module docs for the two halves.
#[derive(Debug)]
pub struct NameTable {
    max_names: usize,
    /// Index i holds the name with synthetic offset i+1.
    synthetic: Vec<String>,
    synthetic_index: HashMap<String, u32>,
    recorded: HashMap<IpAddr, String>,
    /// Insertion order of `recorded`, for eviction.
    recorded_order: VecDeque<IpAddr>,
}

impl Default for NameTable {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_NAMES)
    }
}

impl NameTable {
    /// A table holding at most `max_names` synthetic names and `max_names` recorded addresses
    /// (the synthetic half is further limited by the pool size).
    pub fn new(max_names: usize) -> Self {
        NameTable {
            max_names: max_names.min(MAX_POOL_OFFSET as usize),
            synthetic: Vec::new(),
            synthetic_index: HashMap::new(),
            recorded: HashMap::new(),
            recorded_order: VecDeque::new(),
        }
    }

    /// The synthetic (A, AAAA) addresses of `name`, allocated on first use and stable for the
    /// run. `name` is normalised like map hosts (case, trailing dot).
    pub fn synthetic_for(&mut self, name: &str) -> Result<(Ipv4Addr, Ipv6Addr), NameTableFull> {
        let key = normalize_host(name).unwrap_or_else(|| name.to_ascii_lowercase());
        if let Some(index) = self.synthetic_index.get(&key) {
            return Ok(synthetic_pair(*index + 1));
        }
        if self.synthetic.len() >= self.max_names {
            return Err(NameTableFull {
                capacity: self.max_names,
            });
        }
        let index = u32::try_from(self.synthetic.len()).map_err(|_| NameTableFull {
            capacity: self.max_names,
        })?;
        self.synthetic.push(key.clone());
        self.synthetic_index.insert(key, index);
        Ok(synthetic_pair(index + 1))
    }

    /// Remembers that the host resolver answered `name` with `addrs` (labels only).
    pub fn record_answer(&mut self, name: &str, addrs: &[IpAddr]) {
        if self.max_names == 0 {
            return;
        }
        let label = normalize_host(name).unwrap_or_else(|| name.to_ascii_lowercase());
        for addr in addrs {
            let addr = addr.to_canonical();
            if is_synthetic(addr) {
                // The pool's meaning is ours alone; a resolver cannot relabel it.
                continue;
            }
            if self.recorded.insert(addr, label.clone()).is_none() {
                self.recorded_order.push_back(addr);
                while self.recorded_order.len() > self.max_names {
                    if let Some(old) = self.recorded_order.pop_front() {
                        self.recorded.remove(&old);
                    }
                }
            }
        }
    }

    /// The name the guest meant by `addr`: the synthetic owner, else the latest recorded
    /// answer. Used to label flows and to feed [`super::DialRequest::name`].
    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        let addr = addr.to_canonical();
        if is_synthetic(addr) {
            let offset = synthetic_offset(addr)?;
            let index = usize::try_from(offset.checked_sub(1)?).ok()?;
            return self.synthetic.get(index).map(String::as_str);
        }
        self.recorded.get(&addr).map(String::as_str)
    }

    /// `name:port` when the address has a name, else `addr:port` (`[v6]:port`).
    pub fn flow_label(&self, addr: IpAddr, port: u16) -> String {
        match self.name_of(addr) {
            Some(name) => format!("{name}:{port}"),
            None => std::net::SocketAddr::new(addr.to_canonical(), port).to_string(),
        }
    }

    /// Number of synthetic names allocated.
    pub fn synthetic_len(&self) -> usize {
        self.synthetic.len()
    }

    /// Number of recorded resolver addresses.
    pub fn recorded_len(&self) -> usize {
        self.recorded.len()
    }
}

fn synthetic_pair(offset: u32) -> (Ipv4Addr, Ipv6Addr) {
    let v4 = Ipv4Addr::from(u32::from(SYNTHETIC_V4_NET.0) | offset);
    let v6 = Ipv6Addr::from(u128::from(SYNTHETIC_V6_NET.0) | u128::from(offset));
    (v4, v6)
}

/// The pool offset of a synthetic address; `None` for offsets never handed out by the v4 pool
/// size (so a v6 address beyond it names nothing).
fn synthetic_offset(addr: IpAddr) -> Option<u32> {
    let offset = match addr {
        IpAddr::V4(v4) => u32::from(v4) & ((1 << (32 - SYNTHETIC_V4_NET.1)) - 1),
        IpAddr::V6(v6) => u32::try_from(u128::from(v6) & u128::from(u32::MAX)).ok()?,
    };
    (1..=MAX_POOL_OFFSET).contains(&offset).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address parses")
    }

    #[test]
    fn synthetic_is_stable_and_paired() {
        let mut t = NameTable::default();
        let (a4, a6) = t.synthetic_for("api.openai.com").expect("room");
        assert_eq!(a4, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(a6, "fd00:77:ffff::1".parse::<Ipv6Addr>().expect("v6"));
        assert_eq!(t.synthetic_for("API.OpenAI.com.").expect("room"), (a4, a6));
        let (b4, b6) = t.synthetic_for("b.test").expect("room");
        assert_eq!(b4, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(b6, "fd00:77:ffff::2".parse::<Ipv6Addr>().expect("v6"));
        assert_eq!(t.name_of(IpAddr::V4(a4)), Some("api.openai.com"));
        assert_eq!(t.name_of(IpAddr::V6(b6)), Some("b.test"));
        assert_eq!(t.name_of(ip("::ffff:198.18.0.1")), Some("api.openai.com"));
        assert_eq!(t.name_of(ip("198.18.0.3")), None);
        assert_eq!(t.name_of(ip("198.18.0.0")), None);
        assert_eq!(t.name_of(ip("fd00:77:ffff::ffff:ffff")), None);
        assert_eq!(t.flow_label(IpAddr::V4(a4), 443), "api.openai.com:443");
        assert_eq!(t.flow_label(ip("2001:db8::1"), 443), "[2001:db8::1]:443");
        assert_eq!(t.synthetic_len(), 2);
    }

    #[test]
    fn synthetic_pool_is_bounded() {
        let mut t = NameTable::new(2);
        t.synthetic_for("a.test").expect("room");
        t.synthetic_for("b.test").expect("room");
        assert_eq!(
            t.synthetic_for("c.test"),
            Err(NameTableFull { capacity: 2 })
        );
        // Known names still answer.
        assert!(t.synthetic_for("a.test").is_ok());
    }

    #[test]
    fn pool_offsets_cover_the_whole_v4_range() {
        let (last4, last6) = synthetic_pair(MAX_POOL_OFFSET);
        assert_eq!(last4, Ipv4Addr::new(198, 19, 255, 254));
        assert!(is_synthetic(IpAddr::V4(last4)));
        assert!(is_synthetic(IpAddr::V6(last6)));
        assert_eq!(
            NameTable::new(usize::MAX).max_names,
            MAX_POOL_OFFSET as usize
        );
    }

    #[test]
    fn recorded_answers_label_and_evict_oldest() {
        let mut t = NameTable::new(2);
        t.record_answer("One.test.", &[ip("93.184.216.34"), ip("198.18.0.9")]);
        assert_eq!(t.name_of(ip("93.184.216.34")), Some("one.test"));
        // A resolver answer inside the pool is ignored.
        assert_eq!(t.name_of(ip("198.18.0.9")), None);
        t.record_answer("two.test", &[ip("2606:4700::1")]);
        t.record_answer("three.test", &[ip("1.1.1.1")]);
        assert_eq!(t.recorded_len(), 2);
        assert_eq!(t.name_of(ip("93.184.216.34")), None);
        assert_eq!(t.name_of(ip("1.1.1.1")), Some("three.test"));
        // Relabel: latest name wins without growing.
        t.record_answer("four.test", &[ip("1.1.1.1")]);
        assert_eq!(t.name_of(ip("1.1.1.1")), Some("four.test"));
        assert_eq!(t.recorded_len(), 2);
        assert_eq!(t.flow_label(ip("::ffff:1.1.1.1"), 80), "four.test:80");
    }

    #[test]
    fn membership() {
        for (text, want) in [
            ("198.18.0.1", true),
            ("198.19.255.255", true),
            ("198.20.0.0", false),
            ("::ffff:198.18.1.1", true),
            ("fd00:77:ffff::1", true),
            ("fd00:77:ffff::ffff:ffff", true),
            ("fd00:77:fffe::1", false),
            ("fd00:77::2", false),
        ] {
            assert_eq!(is_synthetic(ip(text)), want, "{text}");
        }
    }
}

//! The destinations table: flows, UDP exchanges, DNS names and blocked attempts merged into
//! one row per remote party (a DNS name, or a bare address when no name is known).

use super::{push_distinct, Builder, ALLOWED, BLOCKED, PARTLY_BLOCKED};
use crate::report::fields::{split_addr, strip_port};
use crate::report::Destination;
use std::collections::BTreeMap;

/// The row for `key`, created (and its order recorded) on first use.
fn entry<'a>(
    order: &mut Vec<String>,
    by_key: &'a mut BTreeMap<String, Destination>,
    key: String,
) -> &'a mut Destination {
    if !by_key.contains_key(&key) {
        order.push(key.clone());
    }
    by_key.entry(key).or_default()
}

impl Builder {
    /// One row per DNS name or bare address: DNS names in order of first query, then the
    /// others in order of first flow.
    pub(super) fn destinations(&mut self) -> Vec<Destination> {
        let mut order: Vec<String> = std::mem::take(&mut self.dns_order);
        let mut by_key: BTreeMap<String, Destination> = std::mem::take(&mut self.dns);
        for f in self.flows.values() {
            let (addr, port) = split_addr(f.dst.as_deref().unwrap_or_default());
            // The flow's own name, else SNI, else the HTTP host, else what DNS answered.
            let name = (f.name.as_deref().map(strip_port))
                .or(f.sni.as_deref())
                .or(f.host.as_deref())
                .map(str::to_owned)
                .or_else(|| self.addr_names.get(&addr).cloned());
            let d = entry(
                &mut order,
                &mut by_key,
                name.unwrap_or_else(|| addr.clone()),
            );
            if !addr.is_empty() {
                push_distinct(&mut d.addresses, [addr]);
            }
            push_distinct(&mut d.ports, port);
            d.tcp_flows += 1;
            d.requests += f.requests;
            d.bytes_up += f.bytes_up;
            d.bytes_down += f.bytes_down;
            push_distinct(&mut d.protocols, f.protocol.clone());
            push_distinct(&mut d.tls_modes, f.tls_modes.iter().cloned());
            if f.blocked.is_empty() {
                d.verdict = ALLOWED.into();
            }
            d.blocked |= !f.blocked.is_empty();
            push_distinct(&mut d.blocked_reasons, f.blocked.iter().cloned());
        }
        for (key, port, up, down) in std::mem::take(&mut self.udp) {
            let d = entry(&mut order, &mut by_key, key);
            push_distinct(&mut d.ports, port);
            d.udp_flows += 1;
            d.verdict = ALLOWED.into();
            d.bytes_up += up;
            d.bytes_down += down;
            push_distinct(&mut d.protocols, ["udp".to_owned()]);
        }
        for (key, reason) in std::mem::take(&mut self.unflowed) {
            let d = entry(&mut order, &mut by_key, key);
            match reason {
                None => {
                    d.requests += 1;
                    d.verdict = ALLOWED.into();
                }
                Some(reason) => {
                    d.blocked = true;
                    push_distinct(&mut d.blocked_reasons, [reason]);
                }
            }
        }
        let mut out = Vec::new();
        for key in order {
            let Some(mut d) = by_key.remove(&key) else {
                continue;
            };
            // `verdict` holds `allowed` here when something got through.
            d.verdict = match (d.blocked, d.verdict == ALLOWED) {
                (true, true) => PARTLY_BLOCKED,
                (true, false) => BLOCKED,
                (false, _) => ALLOWED,
            }
            .into();
            if key.parse::<std::net::IpAddr>().is_err() {
                d.name = Some(key);
            } else {
                push_distinct(&mut d.addresses, [key]);
            }
            Self::keep(&mut self.report.omitted, &mut out, "destinations", d);
        }
        out
    }
}

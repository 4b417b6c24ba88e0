//! The learner's accumulators: provenance ([`SeenAcc`]), per-(host, port) state
//! ([`HostAcc`]) and HTTP path generalisation. Order-independent by construction.

use crate::model::Seen;
use crate::path::PathPattern;
use std::collections::{BTreeMap, BTreeSet};

use super::Observed;

/// Provenance being accumulated: count, runs, min/max timestamp, the earliest example.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeenAcc {
    pub(crate) count: u64,
    runs: BTreeSet<String>,
    first: Option<String>,
    last: Option<String>,
    example: Option<(String, String, u64)>,
}

impl SeenAcc {
    pub(crate) fn add(&mut self, o: &Observed) {
        self.count += 1;
        self.runs.insert(o.run.clone());
        if self.first.as_ref().is_none_or(|f| o.ts < *f) {
            self.first = Some(o.ts.clone());
        }
        if self.last.as_ref().is_none_or(|l| o.ts > *l) {
            self.last = Some(o.ts.clone());
        }
        let key = (o.ts.clone(), o.run.clone(), o.seq);
        if self.example.as_ref().is_none_or(|e| key < *e) {
            self.example = Some(key);
        }
    }

    pub(crate) fn merge(&mut self, other: &SeenAcc) {
        self.count += other.count;
        self.runs.extend(other.runs.iter().cloned());
        if let Some(f) = &other.first {
            if self.first.as_ref().is_none_or(|s| f < s) {
                self.first = Some(f.clone());
            }
        }
        if let Some(l) = &other.last {
            if self.last.as_ref().is_none_or(|s| l > s) {
                self.last = Some(l.clone());
            }
        }
        if let Some(e) = &other.example {
            if self.example.as_ref().is_none_or(|s| e < s) {
                self.example = Some(e.clone());
            }
        }
    }

    pub(crate) fn finish(&self) -> Option<Seen> {
        Some(Seen {
            count: self.count,
            runs: self.runs.iter().cloned().collect(),
            first: self.first.clone()?,
            last: self.last.clone()?,
            example_seq: self.example.as_ref()?.2,
        })
    }
}

/// What was seen for one (host, port).
#[derive(Debug, Default)]
pub(crate) struct HostAcc {
    pub(crate) tcp: bool,
    pub(crate) tls: bool,
    pub(crate) http: bool,
    pub(crate) https: bool,
    /// Opaque bytes (not HTTP) were seen on a flow; `stream_tls`: inside TLS.
    pub(crate) stream: bool,
    pub(crate) stream_tls: bool,
    pub(crate) credentials: bool,
    pub(crate) seen: SeenAcc,
    /// (method, path pattern) → what was seen there.
    pub(crate) routes: BTreeMap<(String, PathPatternKey), Route>,
    /// gRPC calls: (service, method) → provenance.
    pub(crate) grpc: BTreeMap<(String, String), SeenAcc>,
}

/// What was seen on one (method, path pattern).
#[derive(Debug, Default)]
pub(crate) struct Route {
    /// Query keys.
    pub(crate) keys: BTreeSet<String>,
    pub(crate) seen: SeenAcc,
    /// MCP tools called there (`Some` once a tool call was seen).
    pub(crate) tools: Option<BTreeSet<String>>,
}

/// A path pattern ordered by its text (for the learner's maps).
pub(crate) type PathPatternKey = OrderedPattern;

/// [`PathPattern`] with an order (by source text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderedPattern(pub(crate) PathPattern);

impl Ord for OrderedPattern {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}
impl PartialOrd for OrderedPattern {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl std::fmt::Display for OrderedPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

fn is_id(seg: &str) -> bool {
    let digits = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
    let hex = seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = seg.len() == 36
        && seg.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    digits || hex || uuid
}

/// The learned pattern of a request path: id-like segments → `{id}`; `None` if the path
/// cannot be a pattern (not starting with `/`, or holding `*`, `{`, `}`, spaces...).
pub(crate) fn generalize_path(path: &str) -> Option<OrderedPattern> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let rest = path.strip_prefix('/')?;
    let segs: Vec<&str> = rest
        .split('/')
        .map(|s| if is_id(s) { "{id}" } else { s })
        .collect();
    let text = format!("/{}", segs.join("/"));
    // A literal segment must not look like pattern syntax.
    if rest.split('/').any(|s| s.contains(['*', '{', '}'])) {
        return None;
    }
    PathPattern::parse(&text).ok().map(OrderedPattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Option<String> {
        generalize_path(p).map(|p| p.to_string())
    }

    #[test]
    fn only_ids_are_generalised() {
        assert_eq!(g("/users/42/posts").as_deref(), Some("/users/{id}/posts"));
        assert_eq!(
            g("/o/123e4567-e89b-12d3-a456-426614174000").as_deref(),
            Some("/o/{id}")
        );
        assert_eq!(g("/c/0123456789abcdef").as_deref(), Some("/c/{id}"));
        assert_eq!(
            g("/c/0123456789abcde").as_deref(),
            Some("/c/0123456789abcde")
        );
        assert_eq!(g("/v1/search").as_deref(), Some("/v1/search"));
        assert_eq!(g("/").as_deref(), Some("/"));
        assert_eq!(g("/a?x=1").as_deref(), Some("/a"));
        assert_eq!(g("*"), None);
        assert_eq!(g("/a/*"), None);
        assert_eq!(g("/{x}"), None);
    }
}

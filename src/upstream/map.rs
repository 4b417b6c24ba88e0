//! The operator's upstream map: `HOST[:PORT]=ADDR:PORT` entries saying where the gateway dials
//! when the guest asks for a host.
//!
//! Owns parsing (CLI strings and map files) and lookup. It does not decide whether a dial is
//! allowed (that is [`super::evaluate`]) and never resolves names: targets are addresses.
//!
//! Hosts are DNS names (compared case-insensitively, trailing dot ignored) or IP literals
//! (`1.2.3.4`, `[2001:db8::1]`). An entry with a port matches only that port; a host-only entry
//! matches any port, and an entry with the port wins over a host-only one. Wildcards are not
//! supported.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Longest host name accepted (RFC 1035 text form without the trailing dot).
const MAX_HOST_LEN: usize = 253;
/// Longest label accepted.
const MAX_LABEL_LEN: usize = 63;

/// Why one `HOST[:PORT]=ADDR:PORT` entry was rejected. Each variant names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamEntryError {
    #[error("upstream entry {entry:?}: expected HOST[:PORT]=ADDR:PORT")]
    MissingEquals { entry: String },
    #[error("upstream entry {entry:?}: bad host {host:?} (a DNS name or an IP literal)")]
    BadHost { entry: String, host: String },
    #[error("upstream entry {entry:?}: bad port {port:?} (1-65535)")]
    BadPort { entry: String, port: String },
    #[error(
        "upstream entry {entry:?}: bad target {target:?} (ADDR:PORT, e.g. 127.0.0.1:8443 or [::1]:8443)"
    )]
    BadTarget { entry: String, target: String },
    #[error("upstream entry {entry:?}: {key} is already mapped")]
    Duplicate { entry: String, key: String },
}

/// Why an upstream map file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFileError {
    #[error("read upstream map {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upstream map {path}, line {line}: {source}")]
    Entry {
        path: PathBuf,
        line: usize,
        source: UpstreamEntryError,
    },
}

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamEntry {
    /// Normalised host: lowercase name without trailing dot, or the canonical text of an IP.
    pub host: String,
    /// `None` matches any port.
    pub port: Option<u16>,
    /// Where the gateway dials instead.
    pub target: SocketAddr,
}

impl std::str::FromStr for UpstreamEntry {
    type Err = UpstreamEntryError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let trimmed = entry.trim();
        let (left, right) =
            trimmed
                .split_once('=')
                .ok_or_else(|| UpstreamEntryError::MissingEquals {
                    entry: entry.to_string(),
                })?;
        let (host_text, port_text) = split_host_port(left.trim());
        // An unbracketed IPv6 host would make `::1:80` ambiguous: brackets are required.
        let bracketed_v6 = left.trim().starts_with('[') || !host_text.contains(':');
        let host = bracketed_v6
            .then(|| normalize_host(host_text))
            .flatten()
            .ok_or_else(|| UpstreamEntryError::BadHost {
                entry: entry.to_string(),
                host: host_text.to_string(),
            })?;
        let port = match port_text {
            None => None,
            Some(p) => Some(parse_port(p).ok_or_else(|| UpstreamEntryError::BadPort {
                entry: entry.to_string(),
                port: p.to_string(),
            })?),
        };
        let target = right
            .trim()
            .parse::<SocketAddr>()
            .ok()
            .filter(|t| t.port() != 0)
            .ok_or_else(|| UpstreamEntryError::BadTarget {
                entry: entry.to_string(),
                target: right.trim().to_string(),
            })?;
        Ok(UpstreamEntry { host, port, target })
    }
}

/// Splits `host[:port]`, `[v6]` or `[v6]:port`. A bare IPv6 literal without brackets is
/// returned whole (its colons are not a port separator); the caller rejects it.
fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((inner, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':');
            if after.is_empty() || port.is_some() {
                return (inner, port);
            }
        }
        return (text, None);
    }
    match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        _ => (text, None),
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// The lookup key for a host the guest named: lowercase, trailing dot removed, IP literals in
/// canonical form. `None` when it is neither a valid DNS name nor an IP literal.
pub fn normalize_host(host: &str) -> Option<String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip.to_canonical().to_string());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid = !name.is_empty()
        && name.len() <= MAX_HOST_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| name.to_ascii_lowercase())
}

/// The operator's host → address map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamMap {
    entries: HashMap<(String, Option<u16>), SocketAddr>,
}

impl UpstreamMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses CLI-style entries (one `HOST[:PORT]=ADDR:PORT` each).
    pub fn from_entries<I, S>(entries: I) -> Result<Self, UpstreamEntryError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut map = Self::new();
        for entry in entries {
            map.add_text(entry.as_ref())?;
        }
        Ok(map)
    }

    /// Adds the entries of a map file's text: one entry per line, `#` starts a comment, blank
    /// lines are ignored. Errors carry the 1-based line number.
    pub fn add_file_text(&mut self, path: &Path, text: &str) -> Result<(), UpstreamFileError> {
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if line.is_empty() {
                continue;
            }
            self.add_text(line)
                .map_err(|source| UpstreamFileError::Entry {
                    path: path.to_path_buf(),
                    line: index + 1,
                    source,
                })?;
        }
        Ok(())
    }

    /// Reads and adds a map file (see [`Self::add_file_text`]).
    pub fn add_file(&mut self, path: &Path) -> Result<(), UpstreamFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| UpstreamFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.add_file_text(path, &text)
    }

    /// Parses and adds one entry; mapping the same `HOST[:PORT]` twice is an error.
    pub fn add_text(&mut self, entry: &str) -> Result<(), UpstreamEntryError> {
        let parsed: UpstreamEntry = entry.parse()?;
        self.add(parsed)
            .map_err(|key| UpstreamEntryError::Duplicate {
                entry: entry.to_string(),
                key,
            })
    }

    /// Adds a parsed entry; on a duplicate returns the `HOST[:PORT]` key already mapped.
    pub fn add(&mut self, entry: UpstreamEntry) -> Result<(), String> {
        let key = (entry.host, entry.port);
        if self.entries.contains_key(&key) {
            return Err(match key.1 {
                Some(port) => format!("{}:{port}", key.0),
                None => key.0,
            });
        }
        self.entries.insert(key, entry.target);
        Ok(())
    }

    /// Where to dial for `host` (a name or IP literal, any case, trailing dot ignored) on
    /// `port`: the entry with that port, else the host-only entry.
    pub fn lookup(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let host = normalize_host(host)?;
        self.lookup_normalized(host, port)
    }

    /// Where to dial for a guest dial to the literal address `addr`.
    pub fn lookup_addr(&self, addr: IpAddr, port: u16) -> Option<SocketAddr> {
        self.lookup_normalized(addr.to_canonical().to_string(), port)
    }

    fn lookup_normalized(&self, host: String, port: u16) -> Option<SocketAddr> {
        let mut key = (host, Some(port));
        if let Some(target) = self.entries.get(&key) {
            return Some(*target);
        }
        key.1 = None;
        self.entries.get(&key).copied()
    }

    /// Whether any entry (any port) maps `host`; this is what DNS answers from.
    pub fn maps_host(&self, host: &str) -> bool {
        let Some(host) = normalize_host(host) else {
            return false;
        };
        // Few entries per host: a scan keeps the map one HashMap without a second index.
        self.entries.keys().any(|(h, _)| *h == host)
    }

    /// Every address the map sends dials to (what a pod's NetworkPolicy must let through).
    pub fn targets(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.entries.values().copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(text: &str) -> SocketAddr {
        text.parse().expect("test socket address parses")
    }

    #[test]
    fn parses_good_entries() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, Option<u16>, &str)] = &[
            ("api.openai.com=127.0.0.1:8443", "api.openai.com", None, "127.0.0.1:8443"),
            ("API.OpenAI.com.:443=127.0.0.1:8443", "api.openai.com", Some(443), "127.0.0.1:8443"),
            (" x.test:80 = [::1]:8080 ", "x.test", Some(80), "[::1]:8080"),
            ("localhost=127.0.0.1:1", "localhost", None, "127.0.0.1:1"),
            ("1.2.3.4:443=127.0.0.1:9", "1.2.3.4", Some(443), "127.0.0.1:9"),
            ("[2001:db8::1]:443=127.0.0.1:9", "2001:db8::1", Some(443), "127.0.0.1:9"),
            ("[2001:DB8::1]=127.0.0.1:9", "2001:db8::1", None, "127.0.0.1:9"),
            ("_srv.x-y.test=10.0.0.1:53", "_srv.x-y.test", None, "10.0.0.1:53"),
        ];
        for (text, host, port, target) in cases {
            let e: UpstreamEntry = text.parse().expect(text);
            assert_eq!(e.host, *host, "{text}");
            assert_eq!(e.port, *port, "{text}");
            assert_eq!(e.target, sa(target), "{text}");
        }
    }

    #[test]
    fn rejects_bad_entries_naming_them() {
        let long = format!("{}.test=127.0.0.1:1", "a".repeat(64));
        type Check = fn(&UpstreamEntryError) -> bool;
        #[rustfmt::skip]
        let cases: &[(&str, Check)] = &[
            ("api.openai.com", |e| {
                matches!(e, UpstreamEntryError::MissingEquals { .. })
            }),
            ("=127.0.0.1:1", |e| {
                matches!(e, UpstreamEntryError::BadHost { .. })
            }),
            ("*.x.test=127.0.0.1:1", |e| {
                matches!(e, UpstreamEntryError::BadHost { .. })
            }),
            ("a..b=127.0.0.1:1", |e| {
                matches!(e, UpstreamEntryError::BadHost { .. })
            }),
            ("2001:db8::1=127.0.0.1:1", |e| {
                matches!(e, UpstreamEntryError::BadHost { .. })
            }),
            ("[::1=127.0.0.1:1", |e| {
                matches!(e, UpstreamEntryError::BadHost { .. })
            }),
            (&long, |e| matches!(e, UpstreamEntryError::BadHost { .. })),
            ("x.test:0=127.0.0.1:1", |e| {
                matches!(e, UpstreamEntryError::BadPort { .. })
            }),
            ("x.test:70000=127.0.0.1:1", |e| {
                matches!(e, UpstreamEntryError::BadPort { .. })
            }),
            ("x.test:+1=127.0.0.1:1", |e| {
                matches!(e, UpstreamEntryError::BadPort { .. })
            }),
            ("x.test:=127.0.0.1:1", |e| {
                matches!(e, UpstreamEntryError::BadPort { .. })
            }),
            ("x.test=127.0.0.1", |e| {
                matches!(e, UpstreamEntryError::BadTarget { .. })
            }),
            ("x.test=localhost:80", |e| {
                matches!(e, UpstreamEntryError::BadTarget { .. })
            }),
            ("x.test=127.0.0.1:0", |e| {
                matches!(e, UpstreamEntryError::BadTarget { .. })
            }),
            ("x.test=::1:80", |e| {
                matches!(e, UpstreamEntryError::BadTarget { .. })
            }),
        ];
        for (text, check) in cases {
            let err = text.parse::<UpstreamEntry>().expect_err(text);
            assert!(check(&err), "{text}: {err:?}");
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn lookup_rules() {
        let map = UpstreamMap::from_entries([
            "a.test=127.0.0.1:1000",
            "a.test:443=127.0.0.1:1443",
            "b.test:80=127.0.0.1:2080",
            "9.9.9.9:53=127.0.0.1:5353",
            "[2001:db8::9]=127.0.0.1:6000",
        ])
        .expect("map parses");
        assert_eq!(map.len(), 5);
        assert_eq!(map.lookup("a.test", 443), Some(sa("127.0.0.1:1443")));
        assert_eq!(map.lookup("A.TEST.", 443), Some(sa("127.0.0.1:1443")));
        assert_eq!(map.lookup("a.test", 22), Some(sa("127.0.0.1:1000")));
        assert_eq!(map.lookup("b.test", 80), Some(sa("127.0.0.1:2080")));
        assert_eq!(map.lookup("b.test", 443), None);
        assert_eq!(map.lookup("c.test", 80), None);
        assert_eq!(map.lookup("not a name", 80), None);
        assert_eq!(
            map.lookup_addr("9.9.9.9".parse().expect("ip"), 53),
            Some(sa("127.0.0.1:5353"))
        );
        assert_eq!(
            map.lookup_addr("::ffff:9.9.9.9".parse().expect("ip"), 53),
            Some(sa("127.0.0.1:5353"))
        );
        assert_eq!(map.lookup_addr("9.9.9.9".parse().expect("ip"), 54), None);
        assert_eq!(
            map.lookup_addr("2001:db8::9".parse().expect("ip"), 1),
            Some(sa("127.0.0.1:6000"))
        );
        assert!(map.maps_host("B.test."));
        assert!(!map.maps_host("c.test"));
    }

    #[test]
    fn duplicates_are_errors() {
        let err = UpstreamMap::from_entries(["a.test:1=127.0.0.1:1", "A.test.:1=127.0.0.1:2"])
            .expect_err("duplicate");
        assert!(matches!(err, UpstreamEntryError::Duplicate { ref key, .. } if key == "a.test:1"));
        assert!(UpstreamMap::from_entries(["a.test:1=127.0.0.1:1", "a.test=127.0.0.1:2"]).is_ok());
    }

    #[test]
    fn file_text_with_comments_and_line_numbers() {
        let path = Path::new("upstreams.txt");
        let mut map = UpstreamMap::new();
        map.add_file_text(
            path,
            "# fakes\n\na.test=127.0.0.1:1 # inline\n  b.test:80=[::1]:2\n",
        )
        .expect("file parses");
        assert_eq!(map.lookup("b.test", 80), Some(sa("[::1]:2")));
        let err = map
            .add_file_text(path, "c.test=127.0.0.1:3\nbroken\n")
            .expect_err("bad line");
        assert!(
            matches!(err, UpstreamFileError::Entry { line: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("upstreams.txt, line 2"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = UpstreamMap::new()
            .add_file(Path::new("/nonexistent/idagent-upstreams"))
            .expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/idagent-upstreams"),
            "{err}"
        );
    }
}

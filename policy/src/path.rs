//! HTTP path patterns, compiled once into segment vectors, and query-key lists; plus the
//! file paths of `files` rules, which must stay under `/tmp/workspace`. Owns lexical path
//! normalisation. Does not own which rule wins (`eval`).
//!
//! Path patterns are matched segment by segment (the text between `/`s, compared raw,
//! without percent-decoding): a literal segment matches itself, `{name}` or `*` matches exactly
//! one segment, and `**`, allowed only as the last segment, matches zero or more segments.
//! So `/users/{id}` matches `/users/42` but not `/users/42/x`, and `/static/**` matches
//! `/static`, `/static/` and `/static/a/b`. `eval` matches only paths that pass
//! [`is_canonical_path`], so `{id}`, `*` and `**` never stand for `..`, `%2e%2e` or `a%2fb`.

use serde::{Serialize, Serializer};
use std::fmt;

/// The workspace: the only writable tree of the guest and the only place files rules may name.
pub const WORKSPACE: &str = "/tmp/workspace";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

/// A compiled HTTP path pattern; compares and prints as its source text.
#[derive(Debug, Clone)]
pub struct PathPattern {
    raw: String,
    segments: Vec<Segment>,
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl Eq for PathPattern {}

impl PathPattern {
    /// Compiles a pattern; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<PathPattern, String> {
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(format!("bad path pattern `{raw}`: it must start with `/`"));
        };
        if raw.contains(['?', '#']) || raw.chars().any(char::is_whitespace) {
            return Err(format!(
                "bad path pattern `{raw}`: no `?`, `#` or spaces (use `query:` for query keys)"
            ));
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = match *part {
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => {
                    return Err(format!(
                        "bad path pattern `{raw}`: `**` is allowed only as the last segment"
                    ))
                }
                "*" => Segment::One,
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                        return Err(format!(
                            "bad path pattern `{raw}`: placeholder `{p}` must be `{{name}}` with letters, digits or `_`"
                        ));
                    }
                    Segment::One
                }
                p if p.contains(['*', '{', '}']) => {
                    return Err(format!(
                        "bad path pattern `{raw}`: `*`, `**` and `{{name}}` must each be a whole segment (`{p}`)"
                    ))
                }
                p => Segment::Literal(p.to_string()),
            };
            segments.push(seg);
        }
        Ok(PathPattern {
            raw: raw.to_string(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the request path (query already split off; anything after `?` is ignored)
    /// matches. A path not starting with `/` (`*`, absolute-form) never matches.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for seg in &self.segments {
            match seg {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for PathPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

/// Whether an HTTP request path is canonical: the only form the policy matches, since
/// upstream servers resolve the others (`/a/../b`, `/a/%2e%2e/b`, `/a;x/b`, `//a`) to paths
/// the rules never named. Canonical means: starts with `/`; no empty segment except one
/// trailing slash (`/` and `/a/` are canonical, `//a` and `/a//b` are not); every `%` is
/// followed by two hex digits; and no segment, once percent-decoded, is `.` or `..` or
/// contains `/`, `\`, NUL or `;`. A query (from `?` on) is ignored, as [`PathPattern::matches`]
/// ignores it. Allocation-free: one pass over the bytes.
pub fn is_canonical_path(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            if last {
                continue;
            }
            return false;
        }
        if !canonical_segment(seg.as_bytes()) {
            return false;
        }
    }
    true
}

/// One non-empty raw segment: valid escapes, decoded not `.`/`..`, no decoded `/ \ NUL ;`.
fn canonical_segment(seg: &[u8]) -> bool {
    let hex = |b: u8| char::from(b).to_digit(16);
    let (mut i, mut decoded_len, mut all_dots) = (0, 0usize, true);
    while i < seg.len() {
        let b = if seg[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                seg.get(i + 1).copied().and_then(hex),
                seg.get(i + 2).copied().and_then(hex),
            ) else {
                return false;
            };
            i += 3;
            // Both digits are < 16, so this fits a byte.
            u8::try_from(hi * 16 + lo).unwrap_or(0)
        } else {
            i += 1;
            seg[i - 1]
        };
        if matches!(b, b'/' | b'\\' | 0 | b';') {
            return false;
        }
        decoded_len += 1;
        all_dots &= b == b'.';
    }
    !(all_dots && decoded_len <= 2)
}

/// The keys of a raw query string (`a=1&b&c=` → `a`, `b`, `c`), empty parts skipped.
pub fn query_keys(query: &str) -> impl Iterator<Item = &str> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
}

/// Lexically normalises an absolute path: collapses `//` and `.`, resolves `..` (never above
/// `/`), drops a trailing `/`. `None` for a relative path.
pub fn normalize_abs(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// The parent directory of a normalised absolute path (`/` has none).
pub fn parent(path: &str) -> Option<&str> {
    let (dir, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some(if dir.is_empty() { "/" } else { dir })
}

/// The last component of a normalised absolute path.
pub fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

/// Whether `path` is `dir` or lies beneath it (both normalised).
pub fn is_within(path: &str, dir: &str) -> bool {
    path == dir || is_below(path, dir)
}

/// Whether `path` lies strictly beneath `dir` (both normalised).
pub fn is_below(path: &str, dir: &str) -> bool {
    if dir == "/" {
        return path.len() > 1 && path.starts_with('/');
    }
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// A normalised absolute path equal to or beneath `/tmp/workspace`: the only kind of path a
/// files rule can name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkspacePath(String);

/// Why a files rule path was refused.
pub const OUTSIDE_WORKSPACE: &str =
    "files rules must be under /tmp/workspace; the read-only root stays read-only";

impl WorkspacePath {
    /// Accepts a path already in normal form (no `.`, `..`, `//`, trailing `/`) under the
    /// workspace; the error is [`OUTSIDE_WORKSPACE`] or says what is not normal.
    pub fn parse(path: &str) -> Result<WorkspacePath, String> {
        if path.split('/').any(|p| p == "..") {
            return Err(format!(
                "{OUTSIDE_WORKSPACE} (`..` is not allowed: `{path}`)"
            ));
        }
        match normalize_abs(path) {
            Some(norm) if is_within(&norm, WORKSPACE) => {
                if norm == path {
                    Ok(WorkspacePath(norm))
                } else {
                    Err(format!(
                        "path `{path}` is not in normal form; write `{norm}`"
                    ))
                }
            }
            _ => Err(format!("{OUTSIDE_WORKSPACE} (`{path}`)")),
        }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for WorkspacePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> PathPattern {
        PathPattern::parse(p).unwrap()
    }

    #[test]
    fn placeholders_match_one_segment() {
        let p = pat("/users/{id}");
        assert!(p.matches("/users/42"));
        assert!(!p.matches("/users/42/x"));
        assert!(!p.matches("/users"));
        assert!(pat("/a/*/c").matches("/a/b/c"));
        assert!(!pat("/a/*/c").matches("/a/c"));
    }

    #[test]
    fn double_star_matches_zero_or_more() {
        let p = pat("/static/**");
        assert!(p.matches("/static"));
        assert!(p.matches("/static/"));
        assert!(p.matches("/static/a/b"));
        assert!(!p.matches("/staticx"));
        assert!(!p.matches("/other/static"));
        assert!(pat("/**").matches("/"));
    }

    #[test]
    fn literal_root_and_trailing_slash_are_exact() {
        assert!(pat("/").matches("/"));
        assert!(pat("/").matches("/?q=1"));
        assert!(!pat("/").matches("/a"));
        assert!(!pat("/a").matches("/a/"));
        assert!(!pat("/a").matches("*"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(PathPattern::parse("/a/**/b")
            .unwrap_err()
            .contains("last segment"));
        assert!(PathPattern::parse("a").is_err());
        assert!(PathPattern::parse("/a*").is_err());
        assert!(PathPattern::parse("/{a-b}").is_err());
        assert!(PathPattern::parse("/a?b=1").is_err());
    }

    #[test]
    fn canonical_paths() {
        for ok in [
            "/",
            "/a/",
            "/a",
            "/a/b%20c",
            "/users/42",
            "/a.b/..c/...",
            "/%41%7e",
            "/a?x=../..",
            "/.well-known/x",
            "/a/%2E%2Ex",
        ] {
            assert!(is_canonical_path(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "*",
            "http://h/a",
            "//",
            "//a",
            "/a//b",
            "/a//",
            "/.",
            "/./a",
            "/a/..",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E%2e/admin",
            "/a/.%2e/b",
            "/a/%2e/b",
            "/..%2fadmin",
            "/a/%2F",
            "/a\\b",
            "/a/%5c",
            "/a/%00",
            "/a;x",
            "/a/%3b",
            "/a/%",
            "/a/%2",
            "/a/%zz",
            "/a/%2g",
        ] {
            assert!(!is_canonical_path(bad), "{bad}");
        }
    }

    #[test]
    fn workspace_paths() {
        assert!(WorkspacePath::parse("/tmp/workspace").is_ok());
        assert!(WorkspacePath::parse("/tmp/workspace/out").is_ok());
        assert!(WorkspacePath::parse("/tmp/workspacex").is_err());
        assert!(WorkspacePath::parse("/etc/**")
            .unwrap_err()
            .starts_with(OUTSIDE_WORKSPACE));
        assert!(WorkspacePath::parse("/tmp/workspace/../etc").is_err());
        assert!(WorkspacePath::parse("/tmp/workspace/").is_err());
    }

    #[test]
    fn lexical_helpers() {
        assert_eq!(normalize_abs("/a//b/./c/../d/").as_deref(), Some("/a/b/d"));
        assert_eq!(normalize_abs("/../..").as_deref(), Some("/"));
        assert_eq!(normalize_abs("rel"), None);
        assert_eq!(parent("/tmp/workspace/a"), Some("/tmp/workspace"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert!(is_below("/tmp/workspace/a", "/tmp/workspace"));
        assert!(!is_below("/tmp/workspace", "/tmp/workspace"));
        assert!(!is_below("/tmp/workspacex", "/tmp/workspace"));
        assert_eq!(query_keys("a=1&&b&c=").collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}

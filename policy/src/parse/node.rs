//! Typed access to saphyr's marked YAML nodes: every accessor fails with a [`PolicyError`]
//! located at the offending node (1-based line and column). Owns the rejection of unknown
//! keys, anchors, aliases and tags. Knows nothing of the policy schema.

use crate::model::PolicyError;
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

pub(crate) type Node<'a> = MarkedYaml<'a>;
pub(crate) type Result<T> = std::result::Result<T, PolicyError>;

/// An error located at `node`.
pub(crate) fn err(node: &Node<'_>, message: impl Into<String>) -> PolicyError {
    let m = node.span.start;
    PolicyError {
        line: m.line().max(1),
        col: m.col() + 1,
        message: message.into(),
    }
}

/// Loads exactly one YAML document.
pub(crate) fn load(text: &str) -> Result<Node<'_>> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| PolicyError {
        line: e.marker().line().max(1),
        col: e.marker().col() + 1,
        message: format!("yaml syntax: {}", e.info()),
    })?;
    let mut docs = docs.into_iter();
    let Some(first) = docs.next() else {
        return Err(PolicyError {
            line: 1,
            col: 1,
            message: "empty policy file".into(),
        });
    };
    if let Some(second) = docs.next() {
        return Err(err(&second, "only one yaml document is allowed"));
    }
    Ok(first)
}

fn check_plain(node: &Node<'_>) -> Result<()> {
    match &node.data {
        YamlData::Alias(_) => Err(err(node, "yaml anchors and aliases are not supported")),
        YamlData::Tagged(..) => Err(err(node, "yaml tags are not supported")),
        YamlData::BadValue => Err(err(node, "bad yaml value")),
        _ => Ok(()),
    }
}

/// A mapping whose keys have all been checked against a list of allowed fields.
pub(crate) struct Map<'n, 'a> {
    node: &'n Node<'a>,
    what: &'static str,
    entries: Vec<(&'n str, &'n Node<'a>, &'n Node<'a>)>,
}

impl<'n, 'a> Map<'n, 'a> {
    /// Reads `node` as a mapping of `what` with only `allowed` keys.
    pub(crate) fn new(node: &'n Node<'a>, what: &'static str, allowed: &[&str]) -> Result<Self> {
        check_plain(node)?;
        let YamlData::Mapping(map) = &node.data else {
            return Err(err(node, format!("expected a mapping for {what}")));
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map.iter() {
            let key = match &k.data {
                YamlData::Value(Scalar::String(s)) => s.as_ref(),
                _ => return Err(err(k, format!("keys of {what} must be plain strings"))),
            };
            if !allowed.contains(&key) {
                return Err(err(
                    k,
                    format!(
                        "unknown field `{key}` in {what} (expected one of: {})",
                        allowed.join(", ")
                    ),
                ));
            }
            check_plain(v)?;
            entries.push((key, k, v));
        }
        Ok(Map {
            node,
            what,
            entries,
        })
    }

    /// The mapping node itself (for errors about the whole entry).
    pub(crate) fn node(&self) -> &'n Node<'a> {
        self.node
    }

    /// The list at `key`: empty when absent or null, an error when it is not a list.
    pub(crate) fn list(&self, key: &str) -> Result<&'n [Node<'a>]> {
        self.get(key).map_or(Ok(&[]), |n| seq(n, key))
    }

    /// The value of `key`, if present and not null.
    pub(crate) fn get(&self, key: &str) -> Option<&'n Node<'a>> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
            .filter(|v| !matches!(v.data, YamlData::Value(Scalar::Null)))
    }

    /// The key node of `key` (for errors about a field's presence).
    pub(crate) fn key(&self, key: &str) -> Option<&'n Node<'a>> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| *k)
    }

    /// The value of a required `key`.
    pub(crate) fn req(&self, key: &str) -> Result<&'n Node<'a>> {
        self.get(key)
            .ok_or_else(|| err(self.node, format!("missing field `{key}` in {}", self.what)))
    }
}

/// A string scalar.
pub(crate) fn string<'n>(node: &'n Node<'_>, what: &str) -> Result<&'n str> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Ok(s.as_ref()),
        _ => Err(err(
            node,
            format!("expected a string for `{what}` (quote it)"),
        )),
    }
}

/// A non-negative integer scalar.
pub(crate) fn uint(node: &Node<'_>, what: &str) -> Result<u64> {
    match &node.data {
        YamlData::Value(Scalar::Integer(i)) => {
            u64::try_from(*i).map_err(|_| err(node, format!("`{what}` must not be negative")))
        }
        _ => Err(err(node, format!("expected an integer for `{what}`"))),
    }
}

/// A boolean scalar.
pub(crate) fn boolean(node: &Node<'_>, what: &str) -> Result<bool> {
    match &node.data {
        YamlData::Value(Scalar::Boolean(b)) => Ok(*b),
        _ => Err(err(node, format!("expected true or false for `{what}`"))),
    }
}

/// A sequence (null counts as empty).
pub(crate) fn seq<'n, 'a>(node: &'n Node<'a>, what: &str) -> Result<&'n [Node<'a>]> {
    check_plain(node)?;
    match &node.data {
        YamlData::Sequence(items) => {
            items.iter().try_for_each(check_plain)?;
            Ok(items)
        }
        YamlData::Value(Scalar::Null) => Ok(&[]),
        _ => Err(err(node, format!("expected a list for `{what}`"))),
    }
}

/// A list of strings.
pub(crate) fn strings(node: &Node<'_>, what: &str) -> Result<Vec<String>> {
    seq(node, what)?
        .iter()
        .map(|n| string(n, what).map(str::to_string))
        .collect()
}

/// A keyword of a closed vocabulary.
pub(crate) fn keyword<T>(
    node: &Node<'_>,
    what: &str,
    parse: fn(&str) -> Option<T>,
    expected: String,
) -> Result<T> {
    let s = string(node, what)?;
    parse(s).ok_or_else(|| err(node, format!("unknown {what} `{s}` (expected {expected})")))
}

//! A small YAML writer for `serde_json::Value` documents: block mappings and sequences, keys in
//! Kubernetes order (`apiVersion`, `kind`, `metadata`, `name` first, the rest sorted), and `# comments` attached to keys. Owns quoting: a string is written
//! plain only when it cannot be read back as anything else (no YAML 1.1 booleans, numbers,
//! nulls or indicators); everything else is a JSON string, which is valid YAML double-quoted
//! text. Multi-line strings (policy files, PEM) are literal blocks so a reviewer can read them.
//! Does not own the objects (see `super`).

use serde_json::Value;
use std::fmt::Write as _;

/// Comments by key name: written above the first occurrence of the key in a document.
pub type Comments<'a> = &'a [(&'a str, &'a str)];

/// One YAML document (without the `---` separator), `header` lines as `# ` comments first.
pub fn document(header: &[&str], value: &Value, comments: Comments<'_>) -> String {
    let mut out = String::new();
    for line in header {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    let mut used = vec![false; comments.len()];
    match value {
        Value::Object(_) | Value::Array(_) => write_block(&mut out, value, 0, comments, &mut used),
        scalar => {
            out.push_str(&scalar_text(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn is_collection(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn write_block(
    out: &mut String,
    value: &Value,
    indent: usize,
    comments: Comments<'_>,
    used: &mut [bool],
) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            // serde_json's map is sorted; Kubernetes readers expect these first.
            const FIRST: &[&str] = &["apiVersion", "kind", "metadata", "name", "namespace"];
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()));
            for k in keys {
                let v = &map[k];
                if let Some(i) = comments.iter().position(|(key, _)| key == k) {
                    if !used[i] {
                        used[i] = true;
                        for line in comments[i].1.lines() {
                            let _ = writeln!(out, "{pad}# {line}");
                        }
                    }
                }
                let key = scalar_text(&Value::String(k.clone()), indent);
                if is_collection(v) {
                    let _ = writeln!(out, "{pad}{key}:");
                    // Sequences under a key are indented too: the common Kubernetes style.
                    write_block(out, v, indent + 2, comments, used);
                } else {
                    let _ = writeln!(out, "{pad}{key}: {}", scalar_text(v, indent + 2));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_collection(item) {
                    // The first line of the item goes after "- ": write it at indent + 2 and
                    // replace its leading spaces.
                    let mut inner = String::new();
                    write_block(&mut inner, item, indent + 2, comments, used);
                    let body = inner
                        .strip_prefix(&" ".repeat(indent + 2))
                        .unwrap_or(&inner);
                    if matches!(item, Value::Array(_)) {
                        let _ = write!(out, "{pad}-\n{}", " ".repeat(indent + 2));
                    } else {
                        let _ = write!(out, "{pad}- ");
                    }
                    out.push_str(body);
                } else {
                    let _ = writeln!(out, "{pad}- {}", scalar_text(item, indent + 2));
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{pad}{}", scalar_text(scalar, indent));
        }
    }
}

/// A scalar (or an empty collection) as it goes after `key: ` or `- `.
fn scalar_text(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        Value::String(s) => {
            if let Some(block) = literal_block(s, indent) {
                block
            } else if plain_ok(s) {
                s.clone()
            } else {
                Value::String(s.clone()).to_string()
            }
        }
    }
}

/// `|`, `|-` or `|+` and the lines, when `s` is multi-line text a literal block keeps exactly.
fn literal_block(s: &str, indent: usize) -> Option<String> {
    if !s.contains('\n') {
        return None;
    }
    let printable = s
        .chars()
        .all(|c| c == '\n' || (!c.is_control() && c != '\u{feff}'));
    // A first line starting with a space would need an indentation indicator; trailing spaces
    // are kept by YAML but invisible to a reviewer: leave such text to the quoted form.
    let plain_lines = s
        .split('\n')
        .all(|l| !l.ends_with(' ') && !l.ends_with('\t'));
    if !printable || s.starts_with(' ') || s.starts_with('\n') || !plain_lines {
        return None;
    }
    let body = s.trim_end_matches('\n');
    let chomp = match s.len() - body.len() {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}");
    for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    Some(out)
}

/// Whether `s` reads back as the same string when written plain.
fn plain_ok(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quotes_what_would_read_back_as_something_else() {
        assert!(plain_ok("idagent-guest"));
        assert!(plain_ok("/usr/local/bin/idagent"));
        for s in [
            "", "true", "No", "1", "0.5", "a: b", "-x", "*", "a#b", "node:20", "~",
        ] {
            assert!(!plain_ok(s), "{s:?}");
        }
        let doc = document(&[], &json!({"a": "yes", "b": "x y", "c": 7}), &[]);
        assert_eq!(doc, "a: \"yes\"\nb: \"x y\"\nc: 7\n");
    }

    #[test]
    fn nested_blocks_and_comments() {
        let v = json!({
            "spec": {"containers": [{"name": "a", "args": ["x", "--"]}, {"name": "b"}],
                     "empty": [], "none": {}},
        });
        let doc = document(&["top"], &v, &[("containers", "why\ntwo lines")]);
        assert_eq!(
            doc,
            "# top\nspec:\n  # why\n  # two lines\n  containers:\n    - name: a\n      args:\n        - x\n        - \"--\"\n    - name: b\n  empty: []\n  none: {}\n"
        );
    }

    #[test]
    fn multi_line_text_is_a_literal_block_that_keeps_its_newlines() {
        let v =
            json!({"d": {"one": "a\nb\n", "none": "a\nb", "two": "a\n\nb\n\n", "lead": " a\nb\n"}});
        let doc = document(&[], &v, &[]);
        assert!(doc.contains("  one: |\n    a\n    b\n"), "{doc}");
        assert!(doc.contains("  none: |-\n    a\n    b\n"), "{doc}");
        assert!(doc.contains("  two: |+\n    a\n\n    b\n\n"), "{doc}");
        assert!(doc.contains("  lead: \" a\\nb\\n\"\n"), "{doc}");
    }
}

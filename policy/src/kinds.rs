//! The small closed vocabularies of the policy: modes, layers, verdicts, protocols, file
//! operations. Each has one spelling, used by the YAML file, `Display` and serde alike.
//! Owns nothing else: rules live in `model`, matching in `eval`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Declares a fieldless enum whose variants each have one keyword.
macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $var),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The keyword of this variant (as written in the policy file).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }

            /// The variant spelled `s`, if any (exact, case-sensitive).
            pub fn from_keyword(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$var),)+ _ => None }
            }

            /// The accepted keywords, for error messages: `a, b or c`.
            pub fn expected() -> String {
                let words: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                match words.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} or {}", rest.join(", "), last),
                    Some((last, _)) => (*last).to_string(),
                    None => String::new(),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum! {
    /// Whether a deny refuses (`enforce`) or only records that it would have (`report`).
    Mode { Report => "report", Enforce => "enforce" }
}

keyword_enum! {
    /// The decision point a request comes from.
    Layer {
        Dns => "dns", Connect => "connect", Tls => "tls", Http => "http",
        Datagram => "datagram", File => "file", Exec => "exec",
    }
}

keyword_enum! {
    /// The outcome of one evaluation.
    Verdict { Allow => "allow", Deny => "deny" }
}

keyword_enum! {
    /// What a rule does when it matches. `deny` beats every `allow`.
    Action { Allow => "allow", Deny => "deny" }
}

keyword_enum! {
    /// Transport of a `Connect` request.
    Proto { Tcp => "tcp", Udp => "udp" }
}

keyword_enum! {
    /// Scheme of an HTTP request as the gateway saw it (plain or inside TLS).
    Scheme { Http => "http", Https => "https" }
}

keyword_enum! {
    /// What a network rule carries: HTTP (`http`, `https`: the gateway can inspect requests)
    /// or opaque bytes (`tls`, `tcp`).
    Protocol { Http => "http", Https => "https", Tls => "tls", Tcp => "tcp" }
}

keyword_enum! {
    /// How deep a network rule looks: `l7` checks each HTTP request against the rule's `http`
    /// list; `l4` allows the whole connection.
    Inspect { L7 => "l7", L4 => "l4" }
}

keyword_enum! {
    /// A write-side file operation, as the supervisor and the workspace watcher report it.
    /// `create_special` (a symlink, device node, FIFO or socket) needs a Landlock right no
    /// rule grants, so it is always denied while file rights are handled; a files rule cannot
    /// allow it.
    FileOp {
        CreateFile => "create_file", CreateDir => "create_dir", Write => "write",
        Remove => "remove", Rename => "rename", CreateSpecial => "create_special",
    }
}

keyword_enum! {
    /// What a files rule names: a directory (rights inherited by the whole subtree, as
    /// Landlock enforces them) or one existing file.
    FileKind { Dir => "dir", File => "file" }
}

impl Protocol {
    /// The inspection depth a rule gets when the file does not say: `l7` for HTTP, `l4` else.
    pub fn default_inspect(self) -> Inspect {
        match self {
            Protocol::Http | Protocol::Https => Inspect::L7,
            Protocol::Tls | Protocol::Tcp => Inspect::L4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_round_trip_and_display() {
        for op in FileOp::ALL {
            assert_eq!(FileOp::from_keyword(op.as_str()), Some(*op));
        }
        assert_eq!(FileOp::CreateFile.to_string(), "create_file");
        assert_eq!(Layer::Datagram.to_string(), "datagram");
        assert_eq!(Mode::expected(), "report or enforce");
        assert_eq!(Mode::from_keyword("Enforce"), None);
        assert_eq!(
            serde_json::to_string(&Mode::Report).ok().as_deref(),
            Some("\"report\"")
        );
    }
}

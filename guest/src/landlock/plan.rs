//! The Landlock plan: typed rules and their line-based text file (the host renders it, guest
//! init parses it). The format is documented in [`crate::landlock`].
//!
//! Owns: the rights vocabulary, path escaping and the parser/renderer. Does not own: turning a
//! plan into a kernel ruleset ([`crate::landlock::apply`]).

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// First line of every plan file.
pub const HEADER: &str = "idagent-landlock 1";
const MAGIC: &str = "idagent-landlock";
const VERSION: &str = "1";

/// One write-class Landlock right a `write` line can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Right {
    WriteFile,
    Truncate,
    MakeReg,
    MakeDir,
    MakeSym,
    MakeFifo,
    MakeSock,
    MakeChar,
    MakeBlock,
    RemoveFile,
    RemoveDir,
    Refer,
}

impl Right {
    /// Every right, in the order [`Rights`] renders them.
    pub const ALL: [Right; 12] = [
        Right::WriteFile,
        Right::Truncate,
        Right::MakeReg,
        Right::MakeDir,
        Right::MakeSym,
        Right::MakeFifo,
        Right::MakeSock,
        Right::MakeChar,
        Right::MakeBlock,
        Right::RemoveFile,
        Right::RemoveDir,
        Right::Refer,
    ];

    /// The right's name in a plan file.
    pub fn name(self) -> &'static str {
        match self {
            Right::WriteFile => "write_file",
            Right::Truncate => "truncate",
            Right::MakeReg => "make_reg",
            Right::MakeDir => "make_dir",
            Right::MakeSym => "make_sym",
            Right::MakeFifo => "make_fifo",
            Right::MakeSock => "make_sock",
            Right::MakeChar => "make_char",
            Right::MakeBlock => "make_block",
            Right::RemoveFile => "remove_file",
            Right::RemoveDir => "remove_dir",
            Right::Refer => "refer",
        }
    }

    /// The right named `name`, if any.
    pub fn from_name(name: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.name() == name)
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of [`Right`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u16);

/// `Rights(write_file,truncate)`: the names, not the bits.
impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rights({self})")
    }
}

impl Rights {
    pub const EMPTY: Rights = Rights(0);
    /// The rights that mean something on a non-directory: `write_file, truncate`.
    pub const FILE: Rights = Rights((1 << Right::WriteFile as u16) | (1 << Right::Truncate as u16));
    /// Every right.
    pub const ALL: Rights = Rights((1 << Right::ALL.len()) - 1);

    pub fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }
    pub fn with(self, right: Right) -> Rights {
        Rights(self.0 | right.bit())
    }
    pub fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The rights in the set, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl FromIterator<Right> for Rights {
    fn from_iter<I: IntoIterator<Item = Right>>(iter: I) -> Rights {
        iter.into_iter().fold(Rights::EMPTY, Rights::with)
    }
}

/// Comma-separated names, in canonical order (the plan file's spelling).
impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.name())?;
        }
        Ok(())
    }
}

/// A path a plan may name: absolute, not empty, no NUL, no `.` or `..` component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlanPath(PathBuf);

/// Why a path cannot be a [`PlanPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} is not absolute")]
    NotAbsolute(PathBuf),
    #[error("path {0:?} has a `.` or `..` component")]
    DotComponent(PathBuf),
    #[error("path {0:?} contains a NUL byte")]
    Nul(PathBuf),
}

impl PlanPath {
    pub fn new(path: impl Into<PathBuf>) -> Result<PlanPath, PathError> {
        let path = path.into();
        if path.as_os_str().as_bytes().contains(&0) {
            return Err(PathError::Nul(path));
        }
        if !path.is_absolute() {
            return Err(PathError::NotAbsolute(path));
        }
        // `Path::components` drops interior `.`; look at the raw segments instead.
        let dotted = path
            .as_os_str()
            .as_bytes()
            .split(|b| *b == b'/')
            .any(|seg| seg == b"." || seg == b"..");
        if dotted || path.components().any(|c| c == Component::ParentDir) {
            return Err(PathError::DotComponent(path));
        }
        Ok(PlanPath(path))
    }
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for PlanPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// `write PATH RIGHTS`: `rights` beneath `path` (or on `path` itself if it is a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRule {
    pub path: PlanPath,
    pub rights: Rights,
}

/// A parsed plan. Invariant kept by [`Plan::parse`] and checked again by `apply`: `writes`
/// only with `handle_files`, `execs` only with `handle_exec`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// `handle-files`: every write-class right is denied unless a rule grants it.
    pub handle_files: bool,
    /// `handle-exec`: executing is denied unless an `exec` line (or the loader rule) allows it.
    pub handle_exec: bool,
    pub writes: Vec<WriteRule>,
    pub execs: Vec<PlanPath>,
}

/// A malformed plan file: the 1-based line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct PlanError {
    pub line: usize,
    pub kind: PlanErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanErrorKind {
    #[error("expected the header `{HEADER}`")]
    MissingHeader,
    #[error("unsupported plan version {0:?} (this init reads version {VERSION})")]
    UnsupportedVersion(String),
    #[error("unknown directive {0:?}")]
    UnknownDirective(String),
    #[error("`{directive}` takes {expected}")]
    Arity {
        directive: &'static str,
        expected: &'static str,
    },
    #[error("`{0}` given twice")]
    Repeated(&'static str),
    #[error("unknown right {0:?}")]
    UnknownRight(String),
    #[error("right {0:?} listed twice")]
    RepeatedRight(&'static str),
    #[error("bad percent escape in {0:?}")]
    BadEscape(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("`{directive}` without `{needs}`: the rule would grant nothing")]
    NotHandled {
        directive: &'static str,
        needs: &'static str,
    },
}

impl Plan {
    /// Parses a plan file. Blank lines and `#` comments (to the end of the line) are ignored;
    /// the first other line must be [`HEADER`].
    pub fn parse(text: &str) -> Result<Plan, PlanError> {
        let mut plan = Plan::default();
        let mut seen_header = false;
        let mut first_write = None;
        let mut first_exec = None;
        let mut last_line = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            last_line = line;
            let err = |kind| PlanError { line, kind };
            let content = raw.split('#').next().unwrap_or("");
            let words: Vec<&str> = content.split_ascii_whitespace().collect();
            let Some((&directive, args)) = words.split_first() else {
                continue;
            };
            if !seen_header {
                match (directive, args) {
                    (MAGIC, [VERSION]) => seen_header = true,
                    (MAGIC, [v]) => {
                        return Err(err(PlanErrorKind::UnsupportedVersion(v.to_string())))
                    }
                    _ => return Err(err(PlanErrorKind::MissingHeader)),
                }
                continue;
            }
            match directive {
                "handle-files" | "handle-exec" => {
                    let (flag, name) = if directive == "handle-files" {
                        (&mut plan.handle_files, "handle-files")
                    } else {
                        (&mut plan.handle_exec, "handle-exec")
                    };
                    if !args.is_empty() {
                        return Err(err(PlanErrorKind::Arity {
                            directive: name,
                            expected: "no argument",
                        }));
                    }
                    if *flag {
                        return Err(err(PlanErrorKind::Repeated(name)));
                    }
                    *flag = true;
                }
                "write" => {
                    let [path, rights] = args else {
                        return Err(err(PlanErrorKind::Arity {
                            directive: "write",
                            expected: "PATH RIGHT[,RIGHT...]",
                        }));
                    };
                    let path = parse_path(path).map_err(err)?;
                    let rights = parse_rights(rights).map_err(err)?;
                    plan.writes.push(WriteRule { path, rights });
                    first_write.get_or_insert(line);
                }
                "exec" => {
                    let [path] = args else {
                        return Err(err(PlanErrorKind::Arity {
                            directive: "exec",
                            expected: "PATH",
                        }));
                    };
                    plan.execs.push(parse_path(path).map_err(err)?);
                    first_exec.get_or_insert(line);
                }
                other => return Err(err(PlanErrorKind::UnknownDirective(other.to_string()))),
            }
        }
        if !seen_header {
            return Err(PlanError {
                line: last_line.max(1),
                kind: PlanErrorKind::MissingHeader,
            });
        }
        let unhandled = |line, directive, needs| PlanError {
            line,
            kind: PlanErrorKind::NotHandled { directive, needs },
        };
        match (first_write, first_exec) {
            (Some(line), _) if !plan.handle_files => Err(unhandled(line, "write", "handle-files")),
            (_, Some(line)) if !plan.handle_exec => Err(unhandled(line, "exec", "handle-exec")),
            _ => Ok(plan),
        }
    }

    /// Renders the plan in the file format; [`Plan::parse`] reads it back to an equal plan.
    pub fn render(&self) -> String {
        let mut out = format!("{HEADER}\n");
        if self.handle_files {
            out.push_str("handle-files\n");
        }
        if self.handle_exec {
            out.push_str("handle-exec\n");
        }
        for w in &self.writes {
            out.push_str(&format!("write {} {}\n", encode_path(&w.path), w.rights));
        }
        for e in &self.execs {
            out.push_str(&format!("exec {}\n", encode_path(e)));
        }
        out
    }
}

fn parse_rights(word: &str) -> Result<Rights, PlanErrorKind> {
    let mut rights = Rights::EMPTY;
    for name in word.split(',') {
        let right =
            Right::from_name(name).ok_or_else(|| PlanErrorKind::UnknownRight(name.to_string()))?;
        if rights.contains(right) {
            return Err(PlanErrorKind::RepeatedRight(right.name()));
        }
        rights = rights.with(right);
    }
    Ok(rights)
}

/// Escaping: every byte outside printable ASCII, and `%` and `#`, is written `%XX`.
fn encode_path(path: &PlanPath) -> String {
    let mut out = String::new();
    for &b in path.as_path().as_os_str().as_bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b'#' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_path(word: &str) -> Result<PlanPath, PlanErrorKind> {
    let bad = || PlanErrorKind::BadEscape(word.to_string());
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad());
            }
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(PlanPath::new(PathBuf::from(OsStr::from_bytes(&out)))?)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

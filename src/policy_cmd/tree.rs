//! Many runs, one argument: the run folders under the paths a command is given (what a
//! cluster's volume or log pipeline collects), shared by `policy learn|check`, `diff` and
//! `report --summary`.
//!
//! Owns what counts as a run folder under a tree (a directory holding a regular file
//! `audit.jsonl`; its own subfolders, such as the workspace the guest wrote, are not searched,
//! so a guest cannot plant runs), the order (sorted paths, so two machines read one tree
//! alike), and the caps ([`MAX_RUNS`], [`MAX_LOG_BYTES`], [`MAX_DEPTH`], [`MAX_ENTRIES`]):
//! going over one is an error that names it, never a silent cut, since a policy learned
//! from part of a tree is a different policy.
//!
//! Symlinks inside a tree are not followed (neither a linked folder nor a linked
//! `audit.jsonl`): a hostile tree must not make idagent read outside it. They are counted
//! in a notice. The paths named on the command line are taken as given. Does not own
//! reading a log (`replay`, `report`).

use std::path::{Path, PathBuf};

/// Most run folders read by one command.
pub const MAX_RUNS: usize = 10_000;
/// Most bytes of audit logs (their sizes summed) read by one command: 32 GiB.
pub const MAX_LOG_BYTES: u64 = 32 << 30;
/// Deepest folder searched below a named path.
pub const MAX_DEPTH: usize = 32;
/// Most directory entries looked at while searching, so a tree of millions of empty
/// folders ends the search instead of stalling it.
pub const MAX_ENTRIES: u64 = 1_000_000;

/// The log a run folder holds.
const LOG: &str = "audit.jsonl";

/// Why the run folders under a path could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: no such run folder")]
    Missing { path: PathBuf },
    #[error("{path}: not a run folder (no audit.jsonl) and no run folder below it")]
    NoRuns { path: PathBuf },
    #[error("read folder {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("more than {cap} run folders (MAX_RUNS) under {path}; name a narrower folder")]
    TooManyRuns { path: PathBuf, cap: usize },
    #[error(
        "audit logs under {path} add up to more than {cap} bytes (MAX_LOG_BYTES); name a narrower folder"
    )]
    TooManyBytes { path: PathBuf, cap: u64 },
    #[error("{path}: deeper than {cap} folders below the named path (MAX_DEPTH)")]
    TooDeep { path: PathBuf, cap: usize },
    #[error("more than {cap} entries searched under {path} (MAX_ENTRIES); name a narrower folder")]
    TooManyEntries { path: PathBuf, cap: u64 },
}

/// The run folders found, in order, and what was passed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSet {
    pub runs: Vec<PathBuf>,
    /// One line per thing worth saying (symlinks not followed), for stderr or a report.
    pub notices: Vec<String>,
}

/// The run folders of `paths`, in order: a path that is a run folder is itself; any other
/// folder is searched for run folders, sorted by path. The same folder reached twice is
/// read once. The caps count over all of `paths` together.
pub fn find_runs(paths: &[PathBuf]) -> Result<RunSet, TreeError> {
    let mut walk = Walk::default();
    for path in paths {
        walk.root(path)?;
    }
    let mut set = RunSet {
        runs: walk.runs,
        notices: Vec::new(),
    };
    if walk.symlinks > 0 {
        set.notices.push(format!(
            "{} symlink(s) in the searched folders not followed (a tree is read only inside itself)",
            walk.symlinks
        ));
    }
    Ok(set)
}

#[derive(Default)]
struct Walk {
    runs: Vec<PathBuf>,
    seen: std::collections::HashSet<PathBuf>,
    bytes: u64,
    entries: u64,
    symlinks: u64,
}

impl Walk {
    fn root(&mut self, root: &Path) -> Result<(), TreeError> {
        // The named path itself may be a symlink: the operator chose it.
        if !root.is_dir() {
            return Err(TreeError::Missing {
                path: root.to_owned(),
            });
        }
        if root.join(LOG).is_file() {
            let size = std::fs::metadata(root.join(LOG)).map_or(0, |m| m.len());
            return self.add(root, root.to_owned(), size);
        }
        let mut found = Vec::new();
        // Depth-first with an explicit stack: a deep tree cannot overflow ours.
        let mut stack = vec![(root.to_owned(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            for (child, log_size) in self.children(root, &dir)? {
                match log_size {
                    Some(size) => found.push((child, size)),
                    None if depth + 1 >= MAX_DEPTH => {
                        return Err(TreeError::TooDeep {
                            path: child,
                            cap: MAX_DEPTH,
                        })
                    }
                    None => stack.push((child, depth + 1)),
                }
            }
        }
        if found.is_empty() {
            return Err(TreeError::NoRuns {
                path: root.to_owned(),
            });
        }
        found.sort();
        for (dir, size) in found {
            self.add(root, dir, size)?;
        }
        Ok(())
    }

    /// The real subfolders of `dir`: `(path, Some(log size))` for a run folder, `(path,
    /// None)` for one to search. Symlinks are counted and passed over.
    fn children(
        &mut self,
        root: &Path,
        dir: &Path,
    ) -> Result<Vec<(PathBuf, Option<u64>)>, TreeError> {
        let read_err = |source| TreeError::ReadDir {
            path: dir.to_owned(),
            source,
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(TreeError::TooManyEntries {
                    path: root.to_owned(),
                    cap: MAX_ENTRIES,
                });
            }
            // `file_type` does not follow symlinks.
            let ty = entry.file_type().map_err(read_err)?;
            if ty.is_symlink() {
                self.symlinks += 1;
                continue;
            }
            if !ty.is_dir() {
                continue;
            }
            let path = entry.path();
            match std::fs::symlink_metadata(path.join(LOG)) {
                Ok(m) if m.file_type().is_file() => out.push((path, Some(m.len()))),
                Ok(m) if m.file_type().is_symlink() => {
                    // A linked log is not read, and the folder is not a run either (nor
                    // searched: its log says it is one).
                    self.symlinks += 1;
                }
                _ => out.push((path, None)),
            }
        }
        Ok(out)
    }

    fn add(&mut self, root: &Path, dir: PathBuf, size: u64) -> Result<(), TreeError> {
        if !self.seen.insert(dir.clone()) {
            return Ok(());
        }
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > MAX_LOG_BYTES {
            return Err(TreeError::TooManyBytes {
                path: root.to_owned(),
                cap: MAX_LOG_BYTES,
            });
        }
        self.runs.push(dir);
        if self.runs.len() > MAX_RUNS {
            return Err(TreeError::TooManyRuns {
                path: root.to_owned(),
                cap: MAX_RUNS,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path) {
        std::fs::create_dir_all(dir).expect("test fixture");
        std::fs::write(dir.join(LOG), "{}\n").expect("test fixture");
    }

    #[test]
    fn finds_nested_runs_sorted_and_not_inside_a_run() {
        let t = tempfile::tempdir().expect("test fixture");
        let root = t.path();
        run(&root.join("b/2"));
        run(&root.join("a"));
        run(&root.join("b/1/deep/er"));
        // A log the guest wrote into its workspace is not a run of its own.
        run(&root.join("a/workspace/fake"));
        std::fs::create_dir_all(root.join("empty/x")).expect("test fixture");
        let set = find_runs(&[root.to_owned()]).expect("test fixture");
        let rel: Vec<_> = set
            .runs
            .iter()
            .map(|p| {
                p.strip_prefix(root)
                    .expect("test fixture")
                    .to_str()
                    .expect("test fixture")
                    .to_owned()
            })
            .collect();
        assert_eq!(rel, ["a", "b/1/deep/er", "b/2"]);
        assert!(set.notices.is_empty());
    }

    #[test]
    fn a_run_folder_is_itself_and_duplicates_are_read_once() {
        let t = tempfile::tempdir().expect("test fixture");
        run(&t.path().join("r"));
        let r = t.path().join("r");
        let set = find_runs(&[r.clone(), t.path().to_owned(), r.clone()]).expect("test fixture");
        assert_eq!(set.runs, [r]);
    }

    #[test]
    fn symlinks_are_not_followed() {
        let t = tempfile::tempdir().expect("test fixture");
        let outside = tempfile::tempdir().expect("test fixture");
        run(&outside.path().join("secret"));
        let root = t.path().join("tree");
        run(&root.join("own"));
        std::os::unix::fs::symlink(outside.path(), root.join("link")).expect("test fixture");
        std::fs::create_dir_all(root.join("fake")).expect("test fixture");
        std::os::unix::fs::symlink(
            outside.path().join("secret/audit.jsonl"),
            root.join("fake/audit.jsonl"),
        )
        .expect("test fixture");
        let set = find_runs(std::slice::from_ref(&root)).expect("test fixture");
        assert_eq!(set.runs, [root.join("own")]);
        assert_eq!(set.notices.len(), 1, "{:?}", set.notices);
        assert!(
            set.notices[0].starts_with("2 symlink(s)"),
            "{:?}",
            set.notices
        );
    }

    #[test]
    fn empty_tree_and_missing_path_are_errors() {
        let t = tempfile::tempdir().expect("test fixture");
        std::fs::create_dir_all(t.path().join("x/y")).expect("test fixture");
        assert!(matches!(
            find_runs(&[t.path().to_owned()]),
            Err(TreeError::NoRuns { .. })
        ));
        assert!(matches!(
            find_runs(&[t.path().join("nope")]),
            Err(TreeError::Missing { .. })
        ));
    }

    #[test]
    fn depth_cap_is_an_error() {
        let t = tempfile::tempdir().expect("test fixture");
        let mut deep = t.path().to_owned();
        for _ in 0..=MAX_DEPTH {
            deep.push("d");
        }
        run(&deep);
        let err = find_runs(&[t.path().to_owned()]).expect_err("an error");
        assert!(matches!(err, TreeError::TooDeep { .. }), "{err}");
        assert!(err.to_string().contains("MAX_DEPTH"));
    }
}

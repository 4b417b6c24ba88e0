//! What the proc connector does not say, read from `/proc/<pid>` at the moment of the event:
//! the guest's view of a pid (`NSpid`), the executable, the start time that tells a reused pid
//! apart, and a zombie's exit status.
//!
//! Owns: pure parsers of `/proc/<pid>/status` and `/proc/<pid>/stat` text, the [`ProcSource`]
//! trait the tracker reads through (faked in its tests) and the real [`ProcFs`].
//! Does not own: deciding which pids matter (see `tracker`).

use std::path::PathBuf;

/// The parts of `/proc/<pid>/stat` the tracker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `Z`, ...
    pub state: char,
    /// Field 22, in clock ticks since boot: with the pid, identifies one process.
    pub start_time: u64,
    /// Field 52 (Linux ≥ 3.5): the wait(2)-style status, meaningful for a zombie.
    pub exit_code: Option<u32>,
}

/// Reads of `/proc` the tracker makes; best effort, `None` when the process is gone.
pub trait ProcSource {
    /// The pid as the innermost pid namespace sees it (last `NSpid:` field).
    fn guest_pid(&self, host_pid: i32) -> Option<i32>;
    fn exe(&self, host_pid: i32) -> Option<String>;
    fn stat(&self, host_pid: i32) -> Option<ProcStat>;
    /// Direct children (process ids) of every thread of `host_pid`.
    fn children(&self, host_pid: i32) -> Vec<i32>;
}

/// The last field of the `NSpid:` line of a `/proc/<pid>/status` text.
pub fn parse_nspid(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|rest| rest.split_whitespace().last())
        .and_then(|p| p.parse().ok())
}

/// Parses a `/proc/<pid>/stat` text. The command name (field 2) is chosen by the process and
/// may contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<ProcStat> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field N is fields[N - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_time: fields.get(19)?.parse().ok()?,
        exit_code: fields.get(49).and_then(|f| f.parse().ok()),
    })
}

/// Children pids listed in a `/proc/<pid>/task/<tid>/children` text.
pub fn parse_children(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The real `/proc` (the host's: idagent runs in the initial pid namespace).
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/proc"),
        }
    }
}

impl ProcSource for ProcFs {
    fn guest_pid(&self, host_pid: i32) -> Option<i32> {
        let text = std::fs::read_to_string(self.root.join(format!("{host_pid}/status"))).ok()?;
        parse_nspid(&text)
    }

    fn exe(&self, host_pid: i32) -> Option<String> {
        let p = std::fs::read_link(self.root.join(format!("{host_pid}/exe"))).ok()?;
        Some(p.to_string_lossy().into_owned())
    }

    fn stat(&self, host_pid: i32) -> Option<ProcStat> {
        let text = std::fs::read_to_string(self.root.join(format!("{host_pid}/stat"))).ok()?;
        parse_stat(&text)
    }

    fn children(&self, host_pid: i32) -> Vec<i32> {
        let Ok(tasks) = std::fs::read_dir(self.root.join(format!("{host_pid}/task"))) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(parse_children(&text));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_is_the_innermost_pid() {
        let s = "Name:\tsh\nTgid:\t4242\nPid:\t4242\nNSpid:\t4242\t17\t1\nNSpgid:\t1\n";
        assert_eq!(parse_nspid(s), Some(1));
        assert_eq!(parse_nspid("NSpid:\t99\n"), Some(99));
        assert_eq!(parse_nspid("Name: x\n"), None);
        assert_eq!(parse_nspid("NSpid:\n"), None);
    }

    #[test]
    fn stat_survives_hostile_comm() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "Z".into();
        let text = format!("123 (a) b ) (c) {}\n", fields.join(" "));
        assert_eq!(
            parse_stat(&text),
            Some(ProcStat {
                state: 'Z',
                start_time: 22,
                exit_code: Some(52)
            })
        );
        assert_eq!(parse_stat("123 (x"), None);
        assert_eq!(parse_stat("123 (x) S 1 2"), None);
    }

    #[test]
    fn real_proc_self() {
        let me = i32::try_from(std::process::id()).expect("pid fits");
        let fs = ProcFs::default();
        assert!(fs.stat(me).is_some_and(|s| s.start_time > 0));
        assert!(fs.guest_pid(me).is_some());
        assert!(fs.exe(me).is_some());
    }
}

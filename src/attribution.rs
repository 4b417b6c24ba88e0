//! Which guest process last touched a workspace path, as seen at the syscall boundary.
//!
//! The seccomp supervisor records `(path → pid, exe)` for every write-open, unlink and rename
//! it is notified of; the workspace watcher (inotify, which carries no process) looks the path
//! up when the change lands. Bounded: at most [`DEFAULT_MAX_ATTRIBUTIONS`] paths are remembered,
//! the oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Paths remembered before the oldest is forgotten.
pub const DEFAULT_MAX_ATTRIBUTIONS: usize = 16_384;

/// A guest process, as the audit log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Pid as the guest sees it.
    pub pid: i32,
    pub exe: String,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Actor>,
    order: VecDeque<String>,
}

/// Shared path → last actor table.
#[derive(Debug)]
pub struct Attribution {
    inner: Mutex<Inner>,
    cap: usize,
}

impl Default for Attribution {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_MAX_ATTRIBUTIONS)
    }
}

impl Attribution {
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            cap: cap.max(1),
        }
    }

    /// Remembers that `actor` is about to change `guest_path`.
    pub fn record(&self, guest_path: &str, actor: Actor) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.map.insert(guest_path.to_owned(), actor).is_none() {
            inner.order.push_back(guest_path.to_owned());
            while inner.order.len() > self.cap {
                if let Some(old) = inner.order.pop_front() {
                    inner.map.remove(&old);
                }
            }
        }
    }

    /// The last actor recorded for `guest_path`.
    pub fn lookup(&self, guest_path: &str) -> Option<Actor> {
        self.inner.lock().ok()?.map.get(guest_path).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_latest_wins() {
        let a = Attribution::with_capacity(2);
        let actor = |pid| Actor {
            pid,
            exe: "/bin/x".into(),
        };
        a.record("/tmp/workspace/a", actor(1));
        a.record("/tmp/workspace/a", actor(2));
        assert_eq!(a.lookup("/tmp/workspace/a").map(|x| x.pid), Some(2));
        a.record("/tmp/workspace/b", actor(3));
        a.record("/tmp/workspace/c", actor(4));
        assert_eq!(a.lookup("/tmp/workspace/a"), None);
        assert_eq!(a.lookup("/tmp/workspace/c").map(|x| x.pid), Some(4));
    }
}

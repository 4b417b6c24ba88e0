//! Which guest process last touched a workspace path, as seen at the syscall boundary.
//!
//! The seccomp supervisor records `(path → pid, exe)` for every write-open, unlink and rename
//! it is notified of; the workspace watcher (inotify, which carries no process) looks the path
//! up when the change lands. Bounded twice, the oldest forgotten first: at most
//! [`DEFAULT_MAX_ATTRIBUTIONS`] paths and at most [`DEFAULT_MAX_ATTRIBUTION_BYTES`] of state
//! (a guest making 120k paths of 4 KiB each would otherwise cost gigabytes). Forgetting only
//! costs attribution (a later change is reported without its process); [`Attribution::record`]
//! says when the cap is first hit so the caller can write one `notice`.
//!
//! Does not own: the notice itself (the supervisor, which has the audit sink), nor the changes
//! (the workspace watcher).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Paths remembered before the oldest is forgotten.
pub const DEFAULT_MAX_ATTRIBUTIONS: usize = 16_384;
/// Bytes of state (paths, exes and a per-entry overhead, see [`ENTRY_OVERHEAD_BYTES`])
/// remembered before the oldest is forgotten.
pub const DEFAULT_MAX_ATTRIBUTION_BYTES: usize = 8 << 20;
/// What one entry costs beyond its strings: the hash map slot, the queue slot and two string
/// headers, rounded up.
pub const ENTRY_OVERHEAD_BYTES: usize = 128;

/// A guest process, as the audit log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Pid as the guest sees it.
    pub pid: i32,
    pub exe: String,
}

/// What [`Attribution::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Remembered, nothing forgotten.
    Kept,
    /// Remembered, and older paths were forgotten to make room; `first` is true the first
    /// time this happens in the table's life (the caller's cue for one `notice`).
    Evicted { first: bool },
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Actor>,
    order: VecDeque<String>,
    bytes: usize,
    evictions: u64,
}

/// Shared path → last actor table.
#[derive(Debug)]
pub struct Attribution {
    inner: Mutex<Inner>,
    cap: usize,
    max_bytes: usize,
}

impl Default for Attribution {
    fn default() -> Self {
        Self::with_limits(DEFAULT_MAX_ATTRIBUTIONS, DEFAULT_MAX_ATTRIBUTION_BYTES)
    }
}

/// What an entry for `path` and `actor` costs (the path is held twice: map key and queue).
fn entry_bytes(path: &str, actor: &Actor) -> usize {
    2 * path.len() + actor.exe.len() + ENTRY_OVERHEAD_BYTES
}

impl Attribution {
    pub fn with_capacity(cap: usize) -> Self {
        Self::with_limits(cap, DEFAULT_MAX_ATTRIBUTION_BYTES)
    }

    /// At most `cap` paths and `max_bytes` of state.
    pub fn with_limits(cap: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            cap: cap.max(1),
            max_bytes,
        }
    }

    /// Remembers that `actor` is about to change `guest_path`.
    pub fn record(&self, guest_path: &str, actor: Actor) -> Recorded {
        let Ok(mut inner) = self.inner.lock() else {
            return Recorded::Kept;
        };
        let inner = &mut *inner;
        let added = entry_bytes(guest_path, &actor);
        match inner.map.insert(guest_path.to_owned(), actor) {
            Some(old) => {
                // Same path: only the exe's length changes what it costs.
                inner.bytes = inner.bytes.saturating_sub(entry_bytes(guest_path, &old)) + added;
            }
            None => {
                inner.order.push_back(guest_path.to_owned());
                inner.bytes += added;
            }
        }
        let before = inner.evictions;
        // The entry just recorded stays even when it alone is over the byte cap.
        while inner.order.len() > self.cap
            || (inner.bytes > self.max_bytes && inner.order.len() > 1)
        {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(actor) = inner.map.remove(&old) {
                inner.bytes = inner.bytes.saturating_sub(entry_bytes(&old, &actor));
            }
            inner.evictions += 1;
        }
        if inner.evictions == before {
            Recorded::Kept
        } else {
            Recorded::Evicted { first: before == 0 }
        }
    }

    /// The last actor recorded for `guest_path`.
    pub fn lookup(&self, guest_path: &str) -> Option<Actor> {
        self.inner.lock().ok()?.map.get(guest_path).cloned()
    }

    /// Paths forgotten to stay within the caps, over the table's life.
    pub fn evictions(&self) -> u64 {
        self.inner.lock().map(|i| i.evictions).unwrap_or(0)
    }

    /// Bytes of state held now (as [`ENTRY_OVERHEAD_BYTES`] counts them).
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(pid: i32) -> Actor {
        Actor {
            pid,
            exe: "/bin/x".into(),
        }
    }

    #[test]
    fn bounded_and_latest_wins() {
        let a = Attribution::with_capacity(2);
        a.record("/tmp/workspace/a", actor(1));
        a.record("/tmp/workspace/a", actor(2));
        assert_eq!(a.lookup("/tmp/workspace/a").map(|x| x.pid), Some(2));
        assert_eq!(a.record("/tmp/workspace/b", actor(3)), Recorded::Kept);
        assert_eq!(
            a.record("/tmp/workspace/c", actor(4)),
            Recorded::Evicted { first: true }
        );
        assert_eq!(a.lookup("/tmp/workspace/a"), None);
        assert_eq!(a.lookup("/tmp/workspace/c").map(|x| x.pid), Some(4));
        assert_eq!(a.evictions(), 1);
    }

    #[test]
    fn bounded_by_bytes_oldest_first() {
        let long = |i: usize| format!("/tmp/workspace/{}{i}", "d/".repeat(1000));
        let one = entry_bytes(&long(0), &actor(0));
        // Room for three long entries, whatever the count cap.
        let a = Attribution::with_limits(1_000_000, 3 * one + one / 2);
        for i in 0..3 {
            assert_eq!(a.record(&long(i), actor(i as i32)), Recorded::Kept);
        }
        assert_eq!(
            a.record(&long(3), actor(3)),
            Recorded::Evicted { first: true }
        );
        assert_eq!(
            a.record(&long(4), actor(4)),
            Recorded::Evicted { first: false }
        );
        assert_eq!(a.lookup(&long(0)), None);
        assert_eq!(a.lookup(&long(1)), None);
        assert_eq!(a.lookup(&long(4)).map(|x| x.pid), Some(4));
        assert!(a.bytes() <= 3 * one + one / 2, "{}", a.bytes());
        assert_eq!(a.evictions(), 2);
        // 120k long paths stay within the default cap.
        let d = Attribution::default();
        for i in 0..120_000 {
            d.record(&format!("/tmp/workspace/{}{i}", "x".repeat(200)), actor(1));
        }
        assert!(d.bytes() <= DEFAULT_MAX_ATTRIBUTION_BYTES);
        assert!(d.evictions() > 0);
    }

    #[test]
    fn one_entry_over_the_byte_cap_is_kept() {
        let a = Attribution::with_limits(10, 10);
        a.record("/tmp/workspace/a", actor(1));
        assert_eq!(a.lookup("/tmp/workspace/a").map(|x| x.pid), Some(1));
    }
}

//! The guest's process tree as seen through proc connector events, and the `exit` audit
//! events it yields.
//!
//! Owns: which host pids belong to the guest (the root and its descendants, processes not
//! threads), their guest pid and last exe, the cap on how many are tracked, and recovery after
//! lost events (a sweep of `/proc`). Pure apart from [`ProcSource`] reads: events in, audit
//! bodies out. Does not own: the socket or the thread (see `procevents`).

use super::procfs::ProcSource;
use super::wire::ProcEvent;
use crate::audit::{EventBody, ExitEvent, Notice};
use std::collections::HashMap;

/// What a watcher saw, returned by `ProcWatcher::stop`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// Processes added to the tree (the root included).
    pub tracked: u64,
    /// `exit` events emitted.
    pub exits: u64,
    /// Forks not tracked because [`super::DEFAULT_MAX_TRACKED_PROCS`] was reached.
    pub cap_refusals: u64,
    /// Times the kernel said events were lost (`ENOBUFS` or `NLMSG_OVERRUN`).
    pub losses: u64,
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// Whether the root process's exit was recorded.
    pub root_exited: bool,
}

#[derive(Debug)]
struct Tracked {
    /// `None` when `/proc/<pid>/status` could not be read in time.
    guest_pid: Option<i32>,
    exe: Option<String>,
    /// Tells a reused pid apart during a sweep.
    start_time: Option<u64>,
}

/// The tracked tree. `src` answers the `/proc` questions.
#[derive(Debug)]
pub struct Tracker<S> {
    src: S,
    procs: HashMap<i32, Tracked>,
    cap: usize,
    root: i32,
    stats: ProcStats,
    /// Execs of tracked processes since the last [`Tracker::take_execs`]: (host pid, exe,
    /// guest pid). Bounded by [`MAX_PENDING_EXECS`].
    execs: Vec<(i32, Option<String>, Option<i32>)>,
    /// Host pids of the exec events (not forks, not sweeps) since the last
    /// [`Tracker::take_exec_events`], bounded like `execs`.
    exec_events: Vec<i32>,
}

/// Execs remembered between two drains of [`Tracker::take_execs`] (one datagram's worth is
/// far fewer); beyond it the oldest are kept and the rest are not looked at.
pub const MAX_PENDING_EXECS: usize = 4096;

/// Guest pid written when the guest's view of a pid could not be read.
pub const UNKNOWN_GUEST_PID: i32 = -1;

impl<S: ProcSource> Tracker<S> {
    pub fn new(src: S, root_host_pid: i32, root_guest_pid: i32, cap: usize) -> Self {
        let mut t = Self {
            procs: HashMap::new(),
            cap: cap.max(1),
            root: root_host_pid,
            stats: ProcStats::default(),
            execs: Vec::new(),
            exec_events: Vec::new(),
            src,
        };
        let root = Tracked {
            guest_pid: Some(root_guest_pid),
            exe: t.src.exe(root_host_pid),
            start_time: t.src.stat(root_host_pid).map(|s| s.start_time),
        };
        t.procs.insert(root_host_pid, root);
        t.stats.tracked = 1;
        t
    }

    /// The execs seen since the last call (host pid, exe after the exec, guest pid).
    pub fn take_execs(&mut self) -> Vec<(i32, Option<String>, Option<i32>)> {
        std::mem::take(&mut self.execs)
    }

    /// The tracked processes that exec'd since the last call (host pids), in order.
    pub fn take_exec_events(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.exec_events)
    }

    pub fn stats(&self) -> &ProcStats {
        &self.stats
    }

    pub fn root_exited(&self) -> bool {
        self.stats.root_exited
    }

    pub fn count_malformed(&mut self) {
        self.stats.malformed += 1;
    }

    /// Applies one event; audit bodies to emit are pushed to `out`.
    pub fn on_event(&mut self, ev: ProcEvent, out: &mut Vec<EventBody>) {
        match ev {
            ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
                ..
            } => {
                // A new thread (child_pid != child_tgid) belongs to a process already tracked.
                if child_pid == child_tgid && self.procs.contains_key(&parent_tgid) {
                    let exe = self.procs.get(&parent_tgid).and_then(|p| p.exe.clone());
                    // A fork runs its parent's program: it is looked at like an exec (a
                    // program stopped after its exec must not live on in its children).
                    if self.add(child_pid, exe.clone(), out) && self.execs.len() < MAX_PENDING_EXECS
                    {
                        let guest = self.procs.get(&child_pid).and_then(|p| p.guest_pid);
                        self.execs.push((child_pid, exe, guest));
                    }
                }
            }
            ProcEvent::Exec { pid, tgid } => {
                if let Some(p) = self.procs.get_mut(&tgid) {
                    p.exe = self.src.exe(pid).or(p.exe.take());
                    if p.guest_pid.is_none() {
                        p.guest_pid = self.src.guest_pid(tgid);
                    }
                    if self.execs.len() < MAX_PENDING_EXECS {
                        self.execs.push((tgid, p.exe.clone(), p.guest_pid));
                    }
                    if self.exec_events.len() < MAX_PENDING_EXECS {
                        self.exec_events.push(tgid);
                    }
                }
            }
            ProcEvent::Exit { pid, tgid, status } => {
                // Only the thread-group leader's exit ends a process.
                if pid == tgid {
                    if let Some(p) = self.procs.remove(&tgid) {
                        self.emit_exit(tgid, p, Some(status), out);
                    }
                }
            }
            ProcEvent::Overrun => self.on_lost("netlink overrun", out),
            ProcEvent::Ack { .. } | ProcEvent::Other { .. } => {}
        }
    }

    fn add(&mut self, host_pid: i32, exe: Option<String>, out: &mut Vec<EventBody>) -> bool {
        if self.procs.len() >= self.cap {
            if self.stats.cap_refusals == 0 {
                out.push(EventBody::Notice(Notice {
                    what: "proc_track_cap".into(),
                    detail: format!(
                        "{} guest processes tracked; exits of further processes are not recorded",
                        self.cap
                    ),
                }));
            }
            self.stats.cap_refusals += 1;
            return false;
        }
        let tracked = Tracked {
            guest_pid: self.src.guest_pid(host_pid),
            exe,
            start_time: self.src.stat(host_pid).map(|s| s.start_time),
        };
        self.procs.insert(host_pid, tracked);
        self.stats.tracked += 1;
        true
    }

    fn emit_exit(
        &mut self,
        host_pid: i32,
        p: Tracked,
        status: Option<u32>,
        out: &mut Vec<EventBody>,
    ) {
        let guest_pid = p
            .guest_pid
            .or_else(|| self.src.guest_pid(host_pid))
            .unwrap_or(UNKNOWN_GUEST_PID);
        let (code, signal) = status.map(decode_status).unwrap_or((None, None));
        out.push(EventBody::Exit(ExitEvent {
            pid: guest_pid,
            code,
            signal,
            exe: p.exe,
            source: None,
        }));
        self.stats.exits += 1;
        if host_pid == self.root {
            self.stats.root_exited = true;
        }
    }

    /// Events were lost: say so, then reconcile with `/proc`. Tracked processes that are gone
    /// get their `exit` (with the zombie's status when still readable), children forked
    /// during the loss are adopted.
    pub fn on_lost(&mut self, why: &str, out: &mut Vec<EventBody>) {
        self.stats.losses += 1;
        out.push(EventBody::Notice(Notice {
            what: "proc_events_lost".into(),
            detail: format!("{why}: process events were lost; exits reconciled from /proc"),
        }));
        self.sweep(out);
    }

    /// Called once the guest is done: if the root's exit event never came, record it from
    /// `/proc` (a zombie's status) or without a status, so a run never lacks it.
    pub fn finish(&mut self, out: &mut Vec<EventBody>) {
        if self.stats.root_exited {
            return;
        }
        out.push(EventBody::Notice(Notice {
            what: "proc_root_exit_unseen".into(),
            detail: "no exit event for the guest's first process before the watcher stopped; \
                     its exit is taken from /proc"
                .into(),
        }));
        self.sweep(out);
        if let Some(p) = self.procs.remove(&self.root) {
            self.emit_exit(self.root, p, None, out);
        }
    }

    fn sweep(&mut self, out: &mut Vec<EventBody>) {
        let mut pids: Vec<i32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        let mut adopt = Vec::new();
        for pid in pids {
            let expected = self.procs.get(&pid).and_then(|p| p.start_time);
            let now = self.src.stat(pid);
            let same = match (now, expected) {
                (Some(s), Some(e)) => s.start_time == e,
                (Some(_), None) => true,
                (None, _) => false,
            };
            match now {
                Some(s) if same && s.state != 'Z' && s.state != 'X' => {
                    adopt.extend(self.src.children(pid));
                }
                _ => {
                    let status = now.filter(|_| same).and_then(|s| s.exit_code);
                    if let Some(p) = self.procs.remove(&pid) {
                        self.emit_exit(pid, p, status, out);
                    }
                }
            }
        }
        // Children forked while events were lost, and their descendants.
        while let Some(child) = adopt.pop() {
            if self.procs.contains_key(&child) {
                continue;
            }
            if !self.add(child, self.src.exe(child), out) {
                break;
            }
            adopt.extend(self.src.children(child));
        }
        // Execs may have been lost too: every live process is looked at again, with the
        // program it runs now (bounded like any exec batch).
        let mut live: Vec<i32> = self.procs.keys().copied().collect();
        live.sort_unstable();
        for pid in live {
            if self.execs.len() >= MAX_PENDING_EXECS {
                break;
            }
            let exe = self.src.exe(pid);
            if let Some(p) = self.procs.get_mut(&pid) {
                if exe.is_some() {
                    p.exe = exe.clone();
                }
                self.execs.push((pid, exe, p.guest_pid));
            }
        }
    }
}

/// A wait(2)-style status as (`code`, `signal`).
pub fn decode_status(status: u32) -> (Option<i32>, Option<i32>) {
    let sig = (status & 0x7f) as i32;
    if sig == 0 {
        (Some(((status >> 8) & 0xff) as i32), None)
    } else {
        (None, Some(sig))
    }
}

#[cfg(test)]
mod tests {
    use super::super::procfs::ProcStat;
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Fake {
        stats: RefCell<HashMap<i32, ProcStat>>,
        children: RefCell<HashMap<i32, Vec<i32>>>,
    }

    impl ProcSource for &Fake {
        fn guest_pid(&self, host_pid: i32) -> Option<i32> {
            Some(host_pid - 1000)
        }
        fn exe(&self, host_pid: i32) -> Option<String> {
            Some(format!("/bin/p{host_pid}"))
        }
        fn stat(&self, host_pid: i32) -> Option<ProcStat> {
            self.stats.borrow().get(&host_pid).copied()
        }
        fn children(&self, host_pid: i32) -> Vec<i32> {
            self.children
                .borrow()
                .get(&host_pid)
                .cloned()
                .unwrap_or_default()
        }
    }

    fn alive(start_time: u64) -> ProcStat {
        ProcStat {
            state: 'S',
            start_time,
            exit_code: None,
        }
    }

    fn exits(out: &[EventBody]) -> Vec<(i32, Option<i32>, Option<i32>)> {
        out.iter()
            .filter_map(|e| match e {
                EventBody::Exit(x) => Some((x.pid, x.code, x.signal)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn forks_execs_and_exits_of_the_tree_only() {
        let fake = Fake::default();
        let mut t = Tracker::new(&fake, 1001, 1, 10);
        let mut out = Vec::new();
        let fork = |p, c, ct| ProcEvent::Fork {
            parent_pid: p,
            parent_tgid: p,
            child_pid: c,
            child_tgid: ct,
        };
        t.on_event(fork(1001, 1002, 1002), &mut out);
        t.on_event(fork(1001, 1003, 1001), &mut out); // a thread: not a process
        t.on_event(fork(9999, 1004, 1004), &mut out); // not ours
        t.on_event(
            ProcEvent::Exec {
                pid: 1002,
                tgid: 1002,
            },
            &mut out,
        );
        t.on_event(
            ProcEvent::Exit {
                pid: 1003,
                tgid: 1001,
                status: 0,
            },
            &mut out,
        );
        t.on_event(
            ProcEvent::Exit {
                pid: 1004,
                tgid: 1004,
                status: 0,
            },
            &mut out,
        );
        t.on_event(
            ProcEvent::Exit {
                pid: 1002,
                tgid: 1002,
                status: 7 << 8,
            },
            &mut out,
        );
        t.on_event(
            ProcEvent::Exit {
                pid: 1001,
                tgid: 1001,
                status: 15,
            },
            &mut out,
        );
        assert_eq!(exits(&out), vec![(2, Some(7), None), (1, None, Some(15))]);
        assert!(t.root_exited());
        assert_eq!(t.stats().tracked, 2);
    }

    #[test]
    fn cap_yields_one_notice() {
        let fake = Fake::default();
        let mut t = Tracker::new(&fake, 1001, 1, 2);
        let mut out = Vec::new();
        for c in 1002..1010 {
            t.on_event(
                ProcEvent::Fork {
                    parent_pid: 1001,
                    parent_tgid: 1001,
                    child_pid: c,
                    child_tgid: c,
                },
                &mut out,
            );
        }
        assert_eq!(
            out.iter()
                .filter(|e| matches!(e, EventBody::Notice(_)))
                .count(),
            1
        );
        assert_eq!(t.stats().cap_refusals, 7);
    }

    #[test]
    fn forks_and_a_loss_queue_what_runs_for_the_exec_guard() {
        let fake = Fake::default();
        fake.stats.borrow_mut().insert(1001, alive(5));
        let mut t = Tracker::new(&fake, 1001, 1, 10);
        let mut out = Vec::new();
        assert!(t.take_execs().is_empty());
        t.on_event(
            ProcEvent::Fork {
                parent_pid: 1001,
                parent_tgid: 1001,
                child_pid: 1002,
                child_tgid: 1002,
            },
            &mut out,
        );
        // A fork runs its parent's program.
        assert_eq!(
            t.take_execs(),
            vec![(1002, Some("/bin/p1001".to_owned()), Some(2))]
        );
        // After lost events every live process is looked at again, with what it runs now.
        fake.stats.borrow_mut().insert(1002, alive(6));
        t.on_lost("ENOBUFS", &mut out);
        let execs = t.take_execs();
        assert_eq!(
            execs.iter().map(|e| (e.0, e.1.clone())).collect::<Vec<_>>(),
            vec![
                (1001, Some("/bin/p1001".to_owned())),
                (1002, Some("/bin/p1002".to_owned()))
            ]
        );
    }

    #[test]
    fn loss_sweeps_dead_zombie_and_adopts_children() {
        let fake = Fake::default();
        fake.stats.borrow_mut().insert(1001, alive(5));
        let mut t = Tracker::new(&fake, 1001, 1, 10);
        let mut out = Vec::new();
        // During the loss the root forked 1002 (alive, with child 1003) ...
        fake.stats.borrow_mut().insert(1002, alive(6));
        fake.stats.borrow_mut().insert(1003, alive(7));
        fake.children.borrow_mut().insert(1001, vec![1002]);
        fake.children.borrow_mut().insert(1002, vec![1003]);
        t.on_lost("ENOBUFS", &mut out);
        assert_eq!(t.stats().tracked, 3);
        // ... then the root died (zombie, status 3 << 8) and 1003 vanished, events lost again.
        fake.stats.borrow_mut().insert(
            1001,
            ProcStat {
                state: 'Z',
                start_time: 5,
                exit_code: Some(3 << 8),
            },
        );
        fake.stats.borrow_mut().remove(&1003);
        t.on_lost("ENOBUFS", &mut out);
        assert_eq!(exits(&out), vec![(1, Some(3), None), (3, None, None)]);
        assert!(t.root_exited());
        // The later event for the already-swept root is not a duplicate.
        t.on_event(
            ProcEvent::Exit {
                pid: 1001,
                tgid: 1001,
                status: 3 << 8,
            },
            &mut out,
        );
        assert_eq!(exits(&out).len(), 2);
    }

    #[test]
    fn finish_records_an_unseen_root_exit() {
        let fake = Fake::default();
        let mut t = Tracker::new(&fake, 1001, 1, 10);
        let mut out = Vec::new();
        t.finish(&mut out);
        assert_eq!(exits(&out), vec![(1, None, None)]);
        assert!(t.root_exited());
    }

    #[test]
    fn status_decoding() {
        assert_eq!(decode_status(0), (Some(0), None));
        assert_eq!(decode_status(255 << 8), (Some(255), None));
        assert_eq!(decode_status(9), (None, Some(9)));
        assert_eq!(decode_status(0x80 | 11), (None, Some(11))); // core dumped
    }
}

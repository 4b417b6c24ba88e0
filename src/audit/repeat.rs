//! Aggregation of repeated identical refusals (`blocked` and refused `dns` records), so a guest
//! that floods one refused name or destination writes a few lines with a count, not one line
//! per attempt (a DNS flood wrote 57 MB/s before this).
//!
//! Owns the rule and its state: the first occurrence of a key is written at once; identical
//! ones within [`REPEAT_WINDOW`] after it are counted, and written as one record carrying
//! [`Repeat`] (`repeated: N`, `first_ts`, `last_ts`) when the window closes (the ticker thread
//! looks every [`REPEAT_TICK`]), when the key table is full and the key is the oldest (its
//! summary is written then, [`MAX_REPEAT_KEYS`]), and when the log is finished (before
//! `run_end`). So every occurrence is accounted for: a line without `repeated` stands for one,
//! a line with it for `N` more. Does not own writing (the sink and writer in `super`).

use super::{EventBody, Repeat};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How long after a key's written occurrence identical ones are counted instead of written.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(1);
/// How often the ticker writes the summaries of closed windows.
pub const REPEAT_TICK: Duration = Duration::from_millis(250);
/// Most keys with an open window at once; a new key beyond it closes the oldest window early.
pub const MAX_REPEAT_KEYS: usize = 4096;

/// The identity of a refusal: kind plus every field a reviewer tells two refusals apart by
/// (destination or name, reason or rcode, transport). Not the flow id: each flood attempt has
/// its own.
fn key_of(body: &EventBody) -> Option<String> {
    match body {
        // A record with `datagrams` is aggregated at its source already (one per QUIC
        // connection); counting it here would lose its count.
        EventBody::Blocked(b) if b.datagrams.is_some() => None,
        EventBody::Blocked(b) => Some(format!("blocked\0{}\0{}\0{}", b.what, b.target, b.reason)),
        // Only answers without addresses are refusals; a name that resolves is not aggregated
        // (its answers may change from one query to the next).
        EventBody::Dns(d) if d.data.answers.is_empty() && is_refusal(&d.data) => {
            let data = &d.data;
            Some(format!(
                "dns\0{}\0{}\0{}\0{}\0{:?}\0{:?}\0{:?}\0{:?}",
                d.transport,
                d.server,
                data.name,
                data.qtype,
                data.rcode,
                data.source,
                data.blocked,
                data.error
            ))
        }
        _ => None,
    }
}

fn is_refusal(data: &crate::dns::DnsEventData) -> bool {
    data.blocked.is_some() || data.rcode.is_some_and(|r| r != crate::dns::Rcode::NoError)
}

fn repeat_of(body: &mut EventBody) -> Option<&mut Repeat> {
    match body {
        EventBody::Blocked(b) => Some(&mut b.repeat),
        EventBody::Dns(d) => Some(&mut d.repeat),
        _ => None,
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

struct Window {
    closes: Instant,
    /// The written occurrence, kept to write the summary with the same fields.
    sample: EventBody,
    count: u64,
    first_ts: String,
    last_ts: String,
}

impl Window {
    /// The summary record, if anything was counted.
    fn summary(self) -> Option<EventBody> {
        if self.count == 0 {
            return None;
        }
        let mut body = self.sample;
        if let EventBody::Blocked(b) = &mut body {
            // It stands for attempts on other flows than the sample's.
            b.flow = None;
        }
        if let Some(r) = repeat_of(&mut body) {
            *r = Repeat {
                repeated: Some(self.count),
                first_ts: Some(self.first_ts),
                last_ts: Some(self.last_ts),
            };
        }
        Some(body)
    }
}

#[derive(Default)]
struct State {
    windows: HashMap<String, Window>,
    /// Set by [`Repeats::drain`]: the log is closing, nothing is held back any more.
    closed: bool,
}

/// The aggregation state shared by every clone of one log's sink.
#[derive(Default)]
pub(crate) struct Repeats {
    state: Mutex<State>,
}

impl std::fmt::Debug for Repeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repeats").finish_non_exhaustive()
    }
}

/// What to write for an offered event.
pub(crate) enum Admit {
    /// Write these (summaries of closed windows first, then possibly the event itself).
    Write(Vec<EventBody>),
    /// Counted in an open window; nothing to write now.
    Counted,
}

impl Repeats {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides what becomes of `body` offered at `now`.
    pub(crate) fn admit(&self, body: EventBody, now: Instant) -> Admit {
        let Some(key) = key_of(&body) else {
            return Admit::Write(vec![body]);
        };
        let mut st = self.lock();
        if st.closed {
            return Admit::Write(vec![body]);
        }
        let mut out = Vec::new();
        if let Some(w) = st.windows.get_mut(&key) {
            if now < w.closes {
                let ts = now_rfc3339();
                if w.count == 0 {
                    w.first_ts.clone_from(&ts);
                }
                w.count += 1;
                w.last_ts = ts;
                return Admit::Counted;
            }
            out.extend(st.windows.remove(&key).and_then(Window::summary));
        } else if st.windows.len() >= MAX_REPEAT_KEYS {
            let oldest = st
                .windows
                .iter()
                .min_by_key(|(_, w)| w.closes)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                out.extend(st.windows.remove(&k).and_then(Window::summary));
            }
        }
        st.windows.insert(
            key,
            Window {
                closes: now + REPEAT_WINDOW,
                sample: body.clone(),
                count: 0,
                first_ts: String::new(),
                last_ts: String::new(),
            },
        );
        out.push(body);
        Admit::Write(out)
    }

    /// The summaries of every window closed by `now` (their keys are forgotten).
    pub(crate) fn due(&self, now: Instant) -> Vec<EventBody> {
        let mut st = self.lock();
        let closed: Vec<String> = st
            .windows
            .iter()
            .filter(|(_, w)| w.closes <= now)
            .map(|(k, _)| k.clone())
            .collect();
        closed
            .into_iter()
            .filter_map(|k| st.windows.remove(&k).and_then(Window::summary))
            .collect()
    }

    /// Every pending summary, oldest window first; from now on nothing is held back.
    pub(crate) fn drain(&self) -> Vec<EventBody> {
        let mut st = self.lock();
        st.closed = true;
        let mut windows: Vec<Window> = st.windows.drain().map(|(_, w)| w).collect();
        windows.sort_by_key(|w| w.closes);
        windows.into_iter().filter_map(Window::summary).collect()
    }
}

/// Writes the summaries of closed windows every [`REPEAT_TICK`] through `emit`, until the
/// state is gone (every sink dropped) or `emit` says the log is closed.
pub(crate) fn spawn_ticker(
    repeats: Weak<Repeats>,
    emit: impl Fn(EventBody) -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("audit-repeat".into())
        .spawn(move || loop {
            std::thread::sleep(REPEAT_TICK);
            let Some(r) = repeats.upgrade() else { return };
            for body in r.due(Instant::now()) {
                if !emit(body) {
                    return;
                }
            }
            drop(r);
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{BlockedEvent, Notice};

    fn blocked(target: &str) -> EventBody {
        EventBody::Blocked(BlockedEvent {
            what: "udp".into(),
            target: target.into(),
            reason: "r".into(),
            flow: None,
            name: None,
            datagrams: None,
            quic_dcid: None,
            repeat: Repeat::default(),
        })
    }

    fn written(a: Admit) -> Vec<EventBody> {
        match a {
            Admit::Write(v) => v,
            Admit::Counted => Vec::new(),
        }
    }

    fn repeated(b: &EventBody) -> Option<u64> {
        match b {
            EventBody::Blocked(b) => b.repeat.repeated,
            _ => None,
        }
    }

    #[test]
    fn first_is_written_repeats_are_counted_and_summarised_once() {
        let r = Repeats::default();
        let t0 = Instant::now();
        assert_eq!(written(r.admit(blocked("a"), t0)).len(), 1);
        for i in 0..10 {
            let t = t0 + Duration::from_millis(i * 50);
            assert!(matches!(r.admit(blocked("a"), t), Admit::Counted));
        }
        // Another key is independent; a non-refusal is never held.
        assert_eq!(written(r.admit(blocked("b"), t0)).len(), 1);
        let notice = EventBody::Notice(Notice {
            what: "x".into(),
            detail: String::new(),
        });
        assert_eq!(written(r.admit(notice.clone(), t0)).len(), 1);
        assert_eq!(written(r.admit(notice, t0)).len(), 1);
        assert!(r.due(t0 + Duration::from_millis(900)).is_empty());
        let due = r.due(t0 + REPEAT_WINDOW);
        // "b" had no repeats: its window closes without a line.
        assert_eq!(due.iter().map(repeated).collect::<Vec<_>>(), vec![Some(10)]);
        // After the window the key starts over.
        assert_eq!(written(r.admit(blocked("a"), t0 + REPEAT_WINDOW)).len(), 1);
        assert!(r.drain().is_empty());
    }

    #[test]
    fn an_expired_window_is_summarised_before_the_next_occurrence() {
        let r = Repeats::default();
        let t0 = Instant::now();
        written(r.admit(blocked("a"), t0));
        assert!(matches!(r.admit(blocked("a"), t0), Admit::Counted));
        let out = written(r.admit(blocked("a"), t0 + REPEAT_WINDOW * 2));
        assert_eq!(
            out.iter().map(repeated).collect::<Vec<_>>(),
            vec![Some(1), None]
        );
    }

    #[test]
    fn the_table_is_capped_and_drain_flushes_everything() {
        let r = Repeats::default();
        let t0 = Instant::now();
        for i in 0..MAX_REPEAT_KEYS {
            let t = t0 + Duration::from_micros(i as u64);
            written(r.admit(blocked(&i.to_string()), t));
            assert!(matches!(
                r.admit(blocked(&i.to_string()), t),
                Admit::Counted
            ));
        }
        // One key over the cap closes the oldest window ("0") early.
        let out = written(r.admit(blocked("new"), t0 + Duration::from_millis(10)));
        assert_eq!(out.len(), 2);
        assert_eq!(repeated(&out[0]), Some(1));
        let rest = r.drain();
        assert_eq!(rest.len(), MAX_REPEAT_KEYS - 1);
        // Closed: nothing is held back any more.
        assert_eq!(written(r.admit(blocked("new"), t0)).len(), 1);
    }
}

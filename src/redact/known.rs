//! The run's registry of credential values it has seen, scrubbed wherever they appear again.
//!
//! Owns [`KnownSecrets`]: every secret the redactors fingerprint on the guest's request side
//! (headers, URL, request body, relayed first bytes, exec argv) or that the run gives the guest
//! (`--env`/manifest variables whose name [`super::is_secret_name`] judges secret) is
//! remembered, and [`KnownSecrets::scrub`] replaces each later occurrence — a response body
//! echoing an API key, an argv holding `$MY_TOKEN` after the shell expanded it — by the
//! fingerprint it got when first seen, so the two correlate. Matching is one Aho-Corasick
//! automaton over the values, rebuilt when one is added; overlapping values are replaced as one
//! region. Bounded: values shorter than [`MIN_KNOWN_SECRET_CHARS`] are not remembered (they
//! would match prose), at most [`MAX_KNOWN_SECRETS`] values of at most [`MAX_KNOWN_SECRET_LEN`]
//! bytes and [`MAX_KNOWN_SECRET_BYTES`] in all; going over a cap is one audit `notice`.
//!
//! Does not own the shapes of credentials (`text`, `wire`, `argv` find them) or what is
//! captured. Values are matched as written: a secret seen again percent-encoded, base64ed or
//! JSON-escaped differently is not recognised by this registry.

use super::Fingerprint;
use crate::audit::{AuditSink, EventBody, Notice};
use aho_corasick::AhoCorasick;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Shorter values are not remembered: they would match ordinary text.
pub const MIN_KNOWN_SECRET_CHARS: usize = 8;
/// Most distinct values remembered for a run.
pub const MAX_KNOWN_SECRETS: usize = 256;
/// Longest value remembered (a JWT or a cookie of a few KiB fits). The automaton is rebuilt
/// over all values on each addition: the byte caps bound that work as well as the memory.
pub const MAX_KNOWN_SECRET_LEN: usize = 4 * 1024;
/// Bytes of values remembered in all.
pub const MAX_KNOWN_SECRET_BYTES: usize = 64 * 1024;
/// Bytes at the end of a cut capture searched for the start of a known value.
pub const MAX_PARTIAL_TAIL: usize = 256;
/// Shortest start of a known value masked at the end of a cut capture.
const MIN_PARTIAL_CHARS: usize = 4;
/// The `notice` written once when a cap is reached.
pub const KNOWN_SECRETS_CAP_NOTICE: &str = "known secrets cap";

/// Secrets the redactors fingerprinted inside [`KnownSecrets::learning`], by thread: the
/// scanners are pure and nested (a header value inside a text line inside an argv word), and a
/// collector threaded through every detector's signature would touch all of them for one
/// caller. Learning is synchronous (no `.await` inside), so the thread is the scope.
type Collected = Vec<(String, String)>;
thread_local! {
    static COLLECTING: RefCell<Option<Collected>> = const { RefCell::new(None) };
}

/// Called by the redactors for every secret they fingerprint; a no-op outside learning.
pub(super) fn noted(kind: &str, secret: &str) {
    COLLECTING.with(|c| {
        if let Some(list) = c.borrow_mut().as_mut() {
            // Bounded like the registry: more than it could keep is not collected.
            if list.len() < MAX_KNOWN_SECRETS && secret.len() >= MIN_KNOWN_SECRET_CHARS {
                list.push((kind.to_string(), secret.to_string()));
            }
        }
    });
}

/// The automaton and what each of its patterns is replaced by.
struct Snapshot {
    automaton: AhoCorasick,
    values: Vec<String>,
    fingerprints: Vec<String>,
}

#[derive(Default)]
struct Inner {
    values: Vec<String>,
    fingerprints: Vec<String>,
    bytes: usize,
    cap_noticed: bool,
    snapshot: Option<Arc<Snapshot>>,
}

/// One run's known secret values (see the module docs). Shared by the run's components as one
/// `Arc`.
pub struct KnownSecrets {
    inner: Mutex<Inner>,
    audit: Option<AuditSink>,
}

impl std::fmt::Debug for KnownSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        f.debug_struct("KnownSecrets")
            .field("count", &self.len())
            .finish_non_exhaustive()
    }
}

/// A text with the known values in it replaced, and their fingerprints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scrubbed {
    pub text: String,
    /// Fingerprints of the values found, distinct, in order of appearance.
    pub found: Vec<String>,
}

impl KnownSecrets {
    /// An empty registry; a cap that is reached is a `notice` on `audit` when there is one.
    pub fn new(audit: Option<AuditSink>) -> Self {
        KnownSecrets {
            inner: Mutex::new(Inner::default()),
            audit,
        }
    }

    /// Number of values remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.values.len())
    }

    /// Whether nothing is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remembers `secret` under `kind` (its fingerprint's kind). `false` when it is not kept:
    /// too short, a fingerprint already, known, or over a cap (the first time: a `notice`).
    pub fn learn(&self, kind: &str, secret: &str) -> bool {
        self.learn_all(std::iter::once((kind, secret))) > 0
    }

    /// Remembers the values of `env` whose names are secret names (`MY_TOKEN`, `API_KEY`),
    /// under the variable's name as kind.
    pub fn learn_env(&self, env: &BTreeMap<String, String>) {
        self.learn_all(
            env.iter()
                .filter(|(name, _)| super::is_secret_name(name))
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
    }

    /// `text` through the pattern rules (learning what they find), then scrubbed of every known
    /// value; `found` holds the fingerprints of both. `cut`: see [`Self::scrub_capture`].
    pub fn redact(&self, text: &str, cut: bool) -> Scrubbed {
        let (redacted, patterns) = self.learning(|| super::redact_text(text));
        let mut out = self.scrub_capture(&redacted, cut);
        let mut found: Vec<String> = patterns.iter().map(|f| f.to_string()).collect();
        found.append(&mut out.found);
        out.found = found;
        out
    }

    /// Runs `f` and remembers every secret the redactors fingerprinted while it ran.
    pub fn learning<T>(&self, f: impl FnOnce() -> T) -> T {
        let outer = COLLECTING.with(|c| c.borrow_mut().replace(Vec::new()));
        let out = f();
        let collected = COLLECTING.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
        if let Some(list) = collected {
            self.learn_all(list.iter().map(|(k, s)| (k.as_str(), s.as_str())));
            // A nested learning's secrets are the outer one's too.
            COLLECTING.with(|c| {
                if let Some(outer) = c.borrow_mut().as_mut() {
                    outer.extend(list);
                }
            });
        }
        out
    }

    /// [`super::redact_argv`], learning the credentials it finds, then each argument scrubbed
    /// of the known values (a `$MY_TOKEN` the shell expanded, a key an exchange sent).
    pub fn redact_argv(&self, argv: &[String]) -> Vec<String> {
        let argv = self.learning(|| super::redact_argv(argv));
        argv.iter().map(|a| self.scrub(a).text).collect()
    }

    /// Adds the new values of `items`, then rebuilds the automaton once; the number added.
    fn learn_all<'a>(&self, items: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        let mut added = 0;
        let mut over_cap = false;
        for (kind, secret) in items {
            if secret.chars().count() < MIN_KNOWN_SECRET_CHARS
                || super::is_fingerprint(secret)
                || inner.values.iter().any(|v| v == secret)
            {
                continue;
            }
            if inner.values.len() >= MAX_KNOWN_SECRETS
                || secret.len() > MAX_KNOWN_SECRET_LEN
                || inner.bytes + secret.len() > MAX_KNOWN_SECRET_BYTES
            {
                over_cap = true;
                continue;
            }
            inner.bytes += secret.len();
            inner.values.push(secret.to_string());
            inner
                .fingerprints
                .push(Fingerprint::new(kind, secret).to_string());
            added += 1;
        }
        if added > 0 {
            inner.snapshot = AhoCorasick::new(&inner.values).ok().map(|automaton| {
                Arc::new(Snapshot {
                    automaton,
                    values: inner.values.clone(),
                    fingerprints: inner.fingerprints.clone(),
                })
            });
        }
        if over_cap && !inner.cap_noticed {
            inner.cap_noticed = true;
            let (count, bytes) = (inner.values.len(), inner.bytes);
            drop(inner);
            tracing::debug!(
                known.count = count,
                known.bytes = bytes,
                "known secrets cap"
            );
            if let Some(audit) = &self.audit {
                audit.emit(EventBody::Notice(Notice {
                    what: KNOWN_SECRETS_CAP_NOTICE.into(),
                    detail: format!(
                        "{count} credential values ({bytes} bytes) remembered, at most \
                         {MAX_KNOWN_SECRETS} of at most {MAX_KNOWN_SECRET_LEN} bytes and \
                         {MAX_KNOWN_SECRET_BYTES} in all; later ones are redacted by their \
                         name and shape only"
                    ),
                }));
            }
        }
        added
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.lock().ok().and_then(|i| i.snapshot.clone())
    }

    /// `text` with every known value replaced by its fingerprint. Where values overlap, the
    /// whole overlapping region is replaced, by the fingerprint of the leftmost value.
    pub fn scrub(&self, text: &str) -> Scrubbed {
        self.scrub_capture(text, false)
    }

    /// [`Self::scrub`], and when `cut` (the text is the first bytes of something longer) a
    /// start of a known value at its very end is replaced too: the rest of the value was cut
    /// off, not absent. Only the last [`MAX_PARTIAL_TAIL`] bytes are searched for it.
    pub fn scrub_capture(&self, text: &str, cut: bool) -> Scrubbed {
        let Some(snap) = self.snapshot() else {
            return Scrubbed {
                text: text.to_string(),
                found: Vec::new(),
            };
        };
        // Matches arrive by increasing end; a new one absorbs the regions it overlaps.
        // `(start, end, pattern of the leftmost start)`.
        let mut regions: Vec<(usize, usize, usize)> = Vec::new();
        let mut found: Vec<usize> = Vec::new();
        for m in snap.automaton.find_overlapping_iter(text) {
            let (mut start, end, mut pattern) = (m.start(), m.end(), m.pattern().as_usize());
            if !found.contains(&pattern) {
                found.push(pattern);
            }
            while let Some(&(s, e, p)) = regions.last() {
                if e <= start {
                    break;
                }
                regions.pop();
                if s <= start {
                    start = s;
                    pattern = p;
                }
            }
            regions.push((start, end, pattern));
        }
        let mut tail = None;
        if cut {
            tail = partial_tail(&snap, text, regions.last().map_or(0, |r| r.1));
            if let Some((_, p)) = tail {
                if !found.contains(&p) {
                    found.push(p);
                }
            }
        }
        if regions.is_empty() && tail.is_none() {
            return Scrubbed {
                text: text.to_string(),
                found: Vec::new(),
            };
        }
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let fp = |p: usize| snap.fingerprints.get(p).map_or("", String::as_str);
        for (start, end, p) in regions {
            out.push_str(text.get(copied..start).unwrap_or_default());
            out.push_str(fp(p));
            copied = end;
        }
        if let Some((start, p)) = tail {
            out.push_str(text.get(copied..start).unwrap_or_default());
            out.push_str(fp(p));
            copied = text.len();
        }
        out.push_str(text.get(copied..).unwrap_or_default());
        Scrubbed {
            text: out,
            found: found.into_iter().map(|p| fp(p).to_string()).collect(),
        }
    }
}

/// The longest start (at least [`MIN_PARTIAL_CHARS`]) of a known value that `text` ends with,
/// beginning at or after `after`: `(where it begins, its pattern)`.
fn partial_tail(snap: &Snapshot, text: &str, after: usize) -> Option<(usize, usize)> {
    let floor = after.max(text.len().saturating_sub(MAX_PARTIAL_TAIL));
    let mut best: Option<(usize, usize)> = None;
    for (p, value) in snap.values.iter().enumerate() {
        let longest = (value.len() - 1).min(text.len() - floor);
        for k in (MIN_PARTIAL_CHARS..=longest).rev() {
            if best.is_some_and(|(start, _)| text.len() - start >= k) {
                break;
            }
            let Some(head) = value.get(..k) else {
                continue;
            };
            if text.ends_with(head) {
                best = Some((text.len() - k, p));
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests;

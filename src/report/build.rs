//! Folds audit records (as `serde_json::Value`, so unknown kinds and fields never fail) into a
//! [`RunReport`]. Pure: no I/O.

use super::{
    Blocked, Credential, DeniedWrite, Destination, FileWrite, NoticeRow, Process, Request,
    RunReport, MAX_LOCATIONS, MAX_ROWS, REPORT_SCHEMA_VERSION,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

/// Flows tracked for the destinations table; later flows are counted in `omitted["flows"]`.
const MAX_TRACKED_FLOWS: usize = 100_000;
/// Distinct DNS names, credentials and blocked targets tracked (each).
const MAX_TRACKED_KEYS: usize = 100_000;

pub(super) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub(super) fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

pub(super) fn i64_of(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

pub(super) fn strings_of(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time (`2026-11-28T01:04:43.836678245Z`,
/// or with a `±HH:MM` offset). `time`'s parser is not enabled in this crate, and the writer's
/// format is fixed.
pub(super) fn parse_ts(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b.get(4) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let digits = b
            .get(i..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let frac = s.get(i..i + digits.min(9))?;
        nanos = frac.parse::<i128>().ok()? * 10i128.pow(9 - frac.len() as u32);
        i += digits;
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(i128::from(secs) * 1_000_000_000 + nanos)
}

/// Every fingerprint (`KIND:…TAIL:sha256=HEX8`) that starts at a word boundary of `text`.
pub(super) fn fingerprints_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut prev_is_word = false;
    for (i, c) in text.char_indices() {
        if !prev_is_word {
            let rest = text.get(i..).unwrap_or_default();
            if let Some(len) = crate::redact::fingerprint_len(rest) {
                if let Some(fp) = rest.get(..len) {
                    found.push(fp.to_owned());
                }
            }
        }
        prev_is_word = c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    }
    found
}

/// The host of an absolute URL (`https://user@[::1]:8443/x` → `::1`).
pub(super) fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = strip_port(hostport);
    (!host.is_empty()).then_some(host)
}

/// `name:443` → `name`, `[::1]:80` → `::1`; anything else unchanged.
pub(super) fn strip_port(s: &str) -> &str {
    if let Some(inner) = s.strip_prefix('[') {
        return inner.split(']').next().unwrap_or(inner);
    }
    match s.rsplit_once(':') {
        Some((host, port))
            if !host.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => s,
    }
}

/// `[fd00::1]:443` → (`fd00::1`, 443); an unparsable address is kept whole.
fn split_addr(s: &str) -> (String, Option<u16>) {
    match s.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_string(), Some(a.port())),
        Err(_) => (s.to_owned(), None),
    }
}

#[derive(Debug, Default)]
struct Flow {
    dst: Option<String>,
    name: Option<String>,
    sni: Option<String>,
    host: Option<String>,
    protocol: Option<String>,
    bytes_up: u64,
    bytes_down: u64,
    tls_modes: Vec<String>,
    requests: u64,
    blocked: Vec<String>,
}

#[derive(Debug, Default)]
struct Cred {
    occurrences: u64,
    locations: BTreeSet<String>,
    locations_omitted: u64,
}

#[derive(Debug, Default)]
struct BlockedAgg {
    seq: u64,
    /// From `blocked` records, and from `dns` records carrying `blocked` (older logs had
    /// only the latter; newer ones write both, so the larger count wins).
    events: u64,
    dns: u64,
}

#[derive(Debug, Default)]
struct Builder {
    report: RunReport,
    start_ns: Option<i128>,
    last_ts: Option<String>,
    flows: BTreeMap<u64, Flow>,
    /// DNS name → destination fields (addresses, query count, blocked reasons).
    dns: BTreeMap<String, Destination>,
    /// DNS names in order of first query.
    dns_order: Vec<String>,
    addr_names: HashMap<String, String>,
    /// UDP flows: (name or address, port, bytes up, bytes down).
    udp: Vec<(String, Option<u16>, u64, u64)>,
    /// Requests and blocked attempts with no tracked flow: (destination key, block reason;
    /// `None` for a request).
    unflowed: Vec<(String, Option<String>)>,
    open_execs: HashMap<i64, usize>,
    blocked: BTreeMap<(String, String, String), BlockedAgg>,
    creds: BTreeMap<String, Cred>,
    argv_with_secrets: u64,
}

/// The report of `events` (in log order); `warnings` are the reader's.
pub(super) fn summarize(events: &[Value], warnings: &[String]) -> RunReport {
    let mut b = Builder::default();
    b.report.report_version = REPORT_SCHEMA_VERSION;
    b.report.warnings = warnings.to_vec();
    for event in events {
        b.push(event);
    }
    b.finish()
}

impl Builder {
    fn push(&mut self, e: &Value) {
        let kind = str_of(e, "kind").unwrap_or("(none)").to_owned();
        *self.report.counts.entry(kind.clone()).or_default() += 1;
        if let Some(ts) = str_of(e, "ts") {
            if self.start_ns.is_none() {
                self.start_ns = parse_ts(ts);
            }
            self.last_ts = Some(ts.to_owned());
        }
        match kind.as_str() {
            "run_start" => self.run_start(e),
            "run_end" => self.run_end(e),
            "file" => self.file(e),
            "exec" => self.exec(e),
            "exit" => self.exit(e),
            "dns" => self.dns(e),
            "tcp" => self.tcp(e),
            "udp" => self.udp(e),
            "tls" => self.tls(e),
            "http" => self.http(e),
            "blocked" => self.blocked(e),
            "notice" | "gap" => self.notice(e),
            _ => {}
        }
    }

    fn at_ms(&self, e: &Value) -> Option<i64> {
        let ts = parse_ts(str_of(e, "ts")?)?;
        i64::try_from((ts - self.start_ns?).div_euclid(1_000_000)).ok()
    }

    fn seq(e: &Value) -> u64 {
        u64_of(e, "seq").unwrap_or_default()
    }

    /// Pushes `row` unless the table is full (then counts it under `table`).
    fn keep<T>(omitted: &mut BTreeMap<String, u64>, rows: &mut Vec<T>, table: &str, row: T) {
        if rows.len() < MAX_ROWS {
            rows.push(row);
        } else {
            *omitted.entry(table.to_owned()).or_default() += 1;
        }
    }

    fn run_start(&mut self, e: &Value) {
        self.start_ns = str_of(e, "ts").and_then(parse_ts).or(self.start_ns);
        let r = &mut self.report;
        r.run = str_of(e, "run").map(str::to_owned);
        r.idagent_version = str_of(e, "idagent_version").map(str::to_owned);
        r.image = str_of(e, "image").map(str::to_owned);
        r.user = str_of(e, "user").map(str::to_owned);
        r.offline = e.get("offline").and_then(Value::as_bool);
        r.started = str_of(e, "ts").map(str::to_owned);
        let command = self.redact_argv(strings_of(e, "command"), "run command");
        self.report.command = command;
    }

    fn run_end(&mut self, e: &Value) {
        let r = &mut self.report;
        r.run = r.run.take().or_else(|| str_of(e, "run").map(str::to_owned));
        r.exit_code = i64_of(e, "exit_code");
        r.end_reason = str_of(e, "reason").map(str::to_owned);
        r.duration_ms = u64_of(e, "duration_ms");
        r.ended = str_of(e, "ts").map(str::to_owned);
    }

    fn file(&mut self, e: &Value) {
        let (seq, at_ms) = (Self::seq(e), self.at_ms(e));
        let op = str_of(e, "op").unwrap_or_default().to_owned();
        let path = str_of(e, "path").unwrap_or_default().to_owned();
        let (pid, exe) = (i64_of(e, "pid"), str_of(e, "exe").map(str::to_owned));
        let r = &mut self.report;
        if str_of(e, "outcome") == Some("denied") {
            let row = DeniedWrite {
                seq,
                at_ms,
                op,
                path,
                errno: str_of(e, "errno").map(str::to_owned),
                pid,
                exe,
                syscall: str_of(e, "syscall").map(str::to_owned),
            };
            Self::keep(&mut r.omitted, &mut r.writes_denied, "writes_denied", row);
        } else {
            let row = FileWrite {
                seq,
                at_ms,
                op,
                path,
                from: str_of(e, "from").map(str::to_owned),
                size: u64_of(e, "size"),
                sha256: str_of(e, "sha256").map(str::to_owned),
                pid,
                exe,
            };
            Self::keep(&mut r.omitted, &mut r.files_written, "files_written", row);
        }
    }

    fn exec(&mut self, e: &Value) {
        let pid = i64_of(e, "pid");
        let path = str_of(e, "path").unwrap_or_default().to_owned();
        let location = format!(
            "argv of pid {} ({path})",
            pid.map_or("?".into(), |p| p.to_string())
        );
        let argv = self.redact_argv(strings_of(e, "argv"), &location);
        let row = Process {
            seq: Self::seq(e),
            at_ms: self.at_ms(e),
            pid,
            ppid: i64_of(e, "ppid"),
            path,
            argv,
            caller: str_of(e, "caller").map(str::to_owned),
            error: str_of(e, "error").map(str::to_owned),
            ..Process::default()
        };
        let r = &mut self.report;
        if let (Some(pid), None, true) = (pid, &row.error, r.processes.len() < MAX_ROWS) {
            // A later exec by the same pid replaces the image: the exit belongs to the last.
            self.open_execs.insert(pid, r.processes.len());
        }
        Self::keep(&mut r.omitted, &mut r.processes, "processes", row);
    }

    fn exit(&mut self, e: &Value) {
        let Some(idx) = i64_of(e, "pid").and_then(|pid| self.open_execs.remove(&pid)) else {
            return;
        };
        if let Some(p) = self.report.processes.get_mut(idx) {
            p.exited = true;
            p.exit_code = i64_of(e, "code");
            p.exit_signal = i64_of(e, "signal");
        }
    }

    /// Redacts clear-text credentials in `argv` (logs from before argv redaction) and records
    /// every fingerprint in it as seen at `location`.
    fn redact_argv(&mut self, argv: Vec<String>, location: &str) -> Vec<String> {
        let mut had_secret = false;
        let argv: Vec<String> = argv
            .into_iter()
            .map(|a| {
                let (text, found) = crate::redact::redact_text(&a);
                had_secret |= !found.is_empty();
                text
            })
            .collect();
        self.argv_with_secrets += u64::from(had_secret);
        let fps: Vec<String> = argv.iter().flat_map(|a| fingerprints_in(a)).collect();
        self.credentials_seen(fps, location);
        argv
    }

    fn credentials_seen(&mut self, fps: Vec<String>, location: &str) {
        let distinct: BTreeSet<String> = fps.into_iter().collect();
        for fp in distinct {
            if self.creds.len() >= MAX_TRACKED_KEYS && !self.creds.contains_key(&fp) {
                *self.report.omitted.entry("credentials".into()).or_default() += 1;
                continue;
            }
            let cred = self.creds.entry(fp).or_default();
            cred.occurrences += 1;
            if cred.locations.contains(location) {
                continue;
            }
            if cred.locations.len() < MAX_LOCATIONS {
                cred.locations.insert(location.to_owned());
            } else {
                cred.locations_omitted += 1;
            }
        }
    }

    fn dns(&mut self, e: &Value) {
        let name = str_of(e, "name").unwrap_or_default().to_owned();
        let answers = strings_of(e, "answers");
        for a in &answers {
            if self.addr_names.len() < MAX_TRACKED_KEYS {
                self.addr_names.insert(a.clone(), name.clone());
            }
        }
        if let Some(block) = str_of(e, "blocked") {
            let target = format!("{name} {}", str_of(e, "qtype").unwrap_or_default());
            let agg = self.blocked_agg(Self::seq(e), "dns", &target, block);
            if let Some(agg) = agg {
                agg.dns += 1;
            }
        }
        if name.is_empty() || (self.dns.len() >= MAX_TRACKED_KEYS && !self.dns.contains_key(&name))
        {
            return;
        }
        if !self.dns.contains_key(&name) {
            self.dns_order.push(name.clone());
        }
        let d = self.dns.entry(name).or_default();
        d.dns_queries += 1;
        push_distinct(&mut d.addresses, answers);
        if let Some(block) = str_of(e, "blocked") {
            d.blocked = true;
            push_distinct(&mut d.blocked_reasons, [format!("dns: {block}")]);
        }
    }

    fn flow(&mut self, e: &Value) -> Option<&mut Flow> {
        let id = u64_of(e, "flow")?;
        if self.flows.len() >= MAX_TRACKED_FLOWS && !self.flows.contains_key(&id) {
            *self.report.omitted.entry("flows".into()).or_default() += 1;
            return None;
        }
        Some(self.flows.entry(id).or_default())
    }

    fn tcp(&mut self, e: &Value) {
        let Some(f) = self.flow(e) else { return };
        f.dst = f.dst.take().or_else(|| str_of(e, "dst").map(str::to_owned));
        f.name = f
            .name
            .take()
            .or_else(|| str_of(e, "name").map(str::to_owned));
        if let Some(p) = str_of(e, "protocol") {
            f.protocol = Some(p.to_owned());
        }
        f.bytes_up = f.bytes_up.max(u64_of(e, "bytes_up").unwrap_or_default());
        f.bytes_down = f
            .bytes_down
            .max(u64_of(e, "bytes_down").unwrap_or_default());
    }

    fn udp(&mut self, e: &Value) {
        let (addr, port) = split_addr(str_of(e, "dst").unwrap_or_default());
        let key = str_of(e, "name")
            .map(|n| strip_port(n).to_owned())
            .or_else(|| self.addr_names.get(&addr).cloned())
            .unwrap_or(addr);
        let bytes = (
            u64_of(e, "bytes_up").unwrap_or_default(),
            u64_of(e, "bytes_down").unwrap_or_default(),
        );
        if self.udp.len() < MAX_TRACKED_FLOWS {
            self.udp.push((key, port, bytes.0, bytes.1));
        }
    }

    fn tls(&mut self, e: &Value) {
        let Some(f) = self.flow(e) else { return };
        if let Some(sni) = str_of(e, "sni") {
            f.sni = Some(sni.to_owned());
        }
        if let Some(mode) = str_of(e, "mode") {
            push_distinct(&mut f.tls_modes, [mode.to_owned()]);
        }
    }

    fn http(&mut self, e: &Value) {
        let url = str_of(e, "url").unwrap_or_default().to_owned();
        let method = str_of(e, "method").unwrap_or_default().to_owned();
        let mut fps: Vec<String> = strings_of(e, "credentials")
            .iter()
            .chain(std::iter::once(&url))
            .flat_map(|s| fingerprints_in(s))
            .collect();
        for headers in ["req_headers", "resp_headers"] {
            for pair in e
                .get(headers)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let value = pair.get(1).and_then(Value::as_str).unwrap_or_default();
                fps.extend(fingerprints_in(value));
            }
        }
        let distinct: Vec<String> = fps
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        self.credentials_seen(fps, &format!("{method} {url}"));
        let host = url_host(&url).map(str::to_owned);
        match self.flow(e) {
            Some(f) => {
                f.requests += 1;
                f.host = f.host.take().or(host);
            }
            None => {
                if let (Some(h), true) = (host, self.unflowed.len() < MAX_TRACKED_FLOWS) {
                    self.unflowed.push((h, None));
                }
            }
        }
        let row = Request {
            seq: Self::seq(e),
            at_ms: self.at_ms(e),
            flow: u64_of(e, "flow"),
            method,
            url,
            status: u64_of(e, "status"),
            req_bytes: u64_of(e, "req_bytes").unwrap_or_default(),
            resp_bytes: u64_of(e, "resp_bytes").unwrap_or_default(),
            duration_ms: u64_of(e, "duration_ms"),
            note: str_of(e, "note").map(str::to_owned),
            credentials: distinct,
        };
        let r = &mut self.report;
        Self::keep(&mut r.omitted, &mut r.requests, "requests", row);
    }

    fn blocked_agg(
        &mut self,
        seq: u64,
        what: &str,
        target: &str,
        reason: &str,
    ) -> Option<&mut BlockedAgg> {
        let key = (what.to_owned(), target.to_owned(), reason.to_owned());
        if self.blocked.len() >= MAX_TRACKED_KEYS && !self.blocked.contains_key(&key) {
            *self.report.omitted.entry("blocked".into()).or_default() += 1;
            return None;
        }
        Some(self.blocked.entry(key).or_insert_with(|| BlockedAgg {
            seq,
            ..BlockedAgg::default()
        }))
    }

    fn blocked(&mut self, e: &Value) {
        let what = str_of(e, "what").unwrap_or_default().to_owned();
        let target = str_of(e, "target").unwrap_or_default().to_owned();
        let reason = str_of(e, "reason").unwrap_or_default().to_owned();
        if let Some(agg) = self.blocked_agg(Self::seq(e), &what, &target, &reason) {
            agg.events += 1;
        }
        let labelled = format!("{what}: {reason}");
        if let Some(f) = self.flow(e) {
            push_distinct(&mut f.blocked, [labelled]);
            return;
        }
        // `name qtype`, `name:port (addr)`, `addr:port`.
        let first = target.split(' ').next().unwrap_or_default();
        let (addr, _) = split_addr(first);
        let key = self
            .addr_names
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| strip_port(first).to_owned());
        if what != "dns" && self.unflowed.len() < MAX_TRACKED_FLOWS {
            self.unflowed.push((key, Some(labelled)));
        }
    }

    fn notice(&mut self, e: &Value) {
        let (what, detail) = if str_of(e, "kind") == Some("gap") {
            let dropped = u64_of(e, "dropped").unwrap_or_default();
            let reason = str_of(e, "reason").unwrap_or_default();
            (
                "gap".to_owned(),
                format!("{dropped} event(s) lost: {reason}"),
            )
        } else {
            (
                str_of(e, "what").unwrap_or_default().to_owned(),
                str_of(e, "detail").unwrap_or_default().to_owned(),
            )
        };
        let row = NoticeRow {
            seq: Self::seq(e),
            at_ms: self.at_ms(e),
            what,
            detail,
        };
        let r = &mut self.report;
        Self::keep(&mut r.omitted, &mut r.notices, "notices", row);
    }

    fn finish(mut self) -> RunReport {
        self.report.destinations = self.destinations();
        self.report.blocked = std::mem::take(&mut self.blocked)
            .into_iter()
            .map(|((what, target, reason), agg)| Blocked {
                seq: agg.seq,
                what,
                target,
                reason,
                count: agg.events.max(agg.dns),
            })
            .collect();
        self.report.blocked.sort_by_key(|b| b.seq);
        self.report.blocked.truncate(MAX_ROWS);
        for (fingerprint, c) in std::mem::take(&mut self.creds) {
            let kind = fingerprint.split(':').next().unwrap_or_default().to_owned();
            *self
                .report
                .credential_kinds
                .entry(kind.clone())
                .or_default() += 1;
            self.report.credentials.push(Credential {
                fingerprint,
                kind,
                occurrences: c.occurrences,
                locations: c.locations.into_iter().collect(),
                locations_omitted: c.locations_omitted,
            });
        }
        self.log_warnings();
        self.report
    }

    fn log_warnings(&mut self) {
        let r = &mut self.report;
        if r.counts.get("run_start").is_none() {
            r.warnings.push("the log has no run_start record".into());
        }
        if r.end_reason.is_none() {
            r.warnings
                .push("the log has no run_end record: the run was killed or is still going".into());
            r.ended = self.last_ts.clone();
        }
        if self.argv_with_secrets > 0 {
            r.warnings.push(format!(
                "{} argv/command value(s) held credentials in clear in the log; shown redacted here",
                self.argv_with_secrets
            ));
        }
        for (table, n) in &r.omitted {
            r.warnings
                .push(format!("{table}: {n} row(s) over the cap, not listed"));
        }
    }

    /// One row per DNS name or bare address, in order of first appearance.
    fn destinations(&mut self) -> Vec<Destination> {
        let mut order: Vec<String> = Vec::new();
        let mut by_key: BTreeMap<String, Destination> = std::mem::take(&mut self.dns);
        order.append(&mut self.dns_order);
        fn entry<'a>(
            order: &mut Vec<String>,
            by_key: &'a mut BTreeMap<String, Destination>,
            key: String,
        ) -> &'a mut Destination {
            if !by_key.contains_key(&key) {
                order.push(key.clone());
            }
            by_key.entry(key).or_default()
        }
        for f in self.flows.values() {
            let (addr, port) = split_addr(f.dst.as_deref().unwrap_or_default());
            let name = (f.name.as_deref().map(strip_port))
                .or(f.sni.as_deref())
                .or(f.host.as_deref())
                .map(str::to_owned)
                .or_else(|| self.addr_names.get(&addr).cloned());
            let d = entry(
                &mut order,
                &mut by_key,
                name.unwrap_or_else(|| addr.clone()),
            );
            if !addr.is_empty() {
                push_distinct(&mut d.addresses, [addr]);
            }
            push_distinct(&mut d.ports, port);
            d.tcp_flows += 1;
            d.requests += f.requests;
            d.bytes_up += f.bytes_up;
            d.bytes_down += f.bytes_down;
            push_distinct(&mut d.protocols, f.protocol.clone());
            push_distinct(&mut d.tls_modes, f.tls_modes.iter().cloned());
            d.blocked |= !f.blocked.is_empty();
            push_distinct(&mut d.blocked_reasons, f.blocked.iter().cloned());
        }
        for (key, port, up, down) in std::mem::take(&mut self.udp) {
            let d = entry(&mut order, &mut by_key, key);
            push_distinct(&mut d.ports, port);
            d.udp_flows += 1;
            d.bytes_up += up;
            d.bytes_down += down;
            push_distinct(&mut d.protocols, ["udp".to_owned()]);
        }
        for (key, reason) in std::mem::take(&mut self.unflowed) {
            let d = entry(&mut order, &mut by_key, key);
            match reason {
                None => d.requests += 1,
                Some(reason) => {
                    d.blocked = true;
                    push_distinct(&mut d.blocked_reasons, [reason]);
                }
            }
        }
        let mut out = Vec::new();
        for key in order {
            if let Some(mut d) = by_key.remove(&key) {
                if key.parse::<std::net::IpAddr>().is_err() {
                    d.name = Some(key);
                } else {
                    push_distinct(&mut d.addresses, [key]);
                }
                Self::keep(&mut self.report.omitted, &mut out, "destinations", d);
            }
        }
        out
    }
}

fn push_distinct<T: PartialEq>(into: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
    for item in items {
        if !into.contains(&item) && into.len() < MAX_LOCATIONS * 4 {
            into.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_writer_timestamps() {
        let a = parse_ts("2026-11-28T01:04:43.836678245Z").unwrap_or_default();
        let b = parse_ts("2026-11-28T01:04:47.673586473Z").unwrap_or_default();
        assert_eq!((b - a) / 1_000_000, 3836);
        assert_eq!(parse_ts("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_ts("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_ts("2000-03-01T00:00:00Z"),
            Some(951_868_800_000_000_000)
        );
        assert_eq!(parse_ts("garbage"), None);
        assert_eq!(parse_ts("2026-11-28T01:04:43"), None);
    }

    #[test]
    fn finds_fingerprints_at_word_boundaries_only() {
        let fps = fingerprints_in(
            "NID=cookie:…:sha256=463869a5; x Bearer bearer:…ghij:sha256=5b759d7f xbearer:…:sha256=00",
        );
        assert_eq!(
            fps,
            ["cookie:…:sha256=463869a5", "bearer:…ghij:sha256=5b759d7f"]
        );
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(url_host("https://u:p@[::1]:8443/x?y"), Some("::1"));
        assert_eq!(
            url_host("http://example.test:15000/i?a=b"),
            Some("example.test")
        );
        assert_eq!(url_host("nope"), None);
        assert_eq!(strip_port("api.openai.com:443"), "api.openai.com");
        assert_eq!(strip_port("fd00::1"), "fd00::1");
    }
}

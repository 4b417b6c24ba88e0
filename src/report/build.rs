//! Folds audit records (as `serde_json::Value`, so unknown kinds and fields never fail) into a
//! [`RunReport`]. Pure: no I/O.

mod destinations;

use super::fields::{
    fingerprints_in, i64_of, parse_ts, split_addr, str_of, strings_of, strip_port, u64_of, url_host,
};
use super::{
    Blocked, Credential, DeniedWrite, Destination, FileWrite, NoticeRow, Process, Request,
    RunReport, MAX_LOCATIONS, MAX_ROWS, REPORT_SCHEMA_VERSION,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Flows tracked for the destinations table; later flows are counted in `omitted["flows"]`.
const MAX_TRACKED_FLOWS: usize = 100_000;
/// Distinct DNS names, credentials and blocked targets tracked (each).
const MAX_TRACKED_KEYS: usize = 100_000;
/// [`Destination::verdict`] values.
const ALLOWED: &str = "allowed";
const BLOCKED: &str = "blocked";
const PARTLY_BLOCKED: &str = "partly blocked";

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
pub(super) struct Builder {
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

impl Builder {
    /// An empty report; feed it every record in log order with [`Builder::push`].
    pub(super) fn new() -> Self {
        let mut b = Self::default();
        b.report.report_version = REPORT_SCHEMA_VERSION;
        b
    }

    /// The report, with the reader's `warnings` ahead of the ones found while folding.
    pub(super) fn finish_with(mut self, warnings: Vec<String>) -> RunReport {
        let found = std::mem::replace(&mut self.report.warnings, warnings);
        self.report.warnings.extend(found);
        self.finish()
    }

    pub(super) fn push(&mut self, e: &Value) {
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
        // The standalone gateway writes empty strings for what it does not have.
        let text = |key| str_of(e, key).filter(|s| !s.is_empty()).map(str::to_owned);
        r.run = text("run");
        r.idagent_version = text("idagent_version");
        r.image = text("image");
        r.user = text("user");
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
        } else if !d.addresses.is_empty() {
            d.verdict = ALLOWED.into();
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
        if !r.counts.contains_key("run_start") {
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
}

fn push_distinct<T: PartialEq>(into: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
    for item in items {
        if !into.contains(&item) && into.len() < MAX_LOCATIONS * 4 {
            into.push(item);
        }
    }
}

//! Folds typed audit [`Record`]s into a [`RunReport`] (records of unknown kinds are only
//! counted). Pure: no I/O.

mod calls;
mod decisions;
mod destinations;

pub(super) use decisions::request_line;

use super::fields::{fingerprints_in, name_of, parse_ts, split_addr, strip_port, url_host};
use super::{
    Blocked, Credential, DeniedWrite, Destination, FileWrite, NoticeRow, Process, Request,
    RunReport, MAX_LOCATIONS, MAX_ROWS, REPORT_SCHEMA_VERSION,
};
use crate::audit::{
    BlockedEvent, DnsEvent, EventBody, ExecEvent, ExitEvent, FileEvent, FlowId, HttpEvent, Outcome,
    Record, RunEnd, RunStart, TcpEvent, TlsEvent, UdpEvent,
};
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
    decisions: decisions::Decisions,
    calls: calls::Calls,
    /// Workspace symlinks and setuid/setgid/sticky/group-or-other-writable modes: how many,
    /// and the first few as "path → target" / "path mode 4755".
    hazards: (u64, Vec<String>),
}

/// Workspace hazards named in the report's warning (the rest are counted).
const MAX_HAZARD_EXAMPLES: usize = 5;
/// Mode bits a reviewer must not trip over on the host (what the export strips).
const HAZARD_MODE_BITS: u32 = 0o7022;

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

    pub(super) fn push(&mut self, rec: &Record) {
        *self.report.counts.entry(rec.kind().to_owned()).or_default() += 1;
        if self.start_ns.is_none() {
            self.start_ns = parse_ts(&rec.ts);
        }
        self.last_ts = Some(rec.ts.clone());
        let (seq, ts) = (rec.seq, rec.ts.as_str());
        match &rec.body {
            EventBody::RunStart(e) => self.run_start(rec, e),
            EventBody::RunEnd(e) => self.run_end(rec, e),
            EventBody::File(e) => self.file(seq, ts, e),
            EventBody::Exec(e) => self.exec(seq, ts, e),
            EventBody::Exit(e) => self.exit(e),
            EventBody::Dns(e) => self.dns(seq, e),
            EventBody::Tcp(e) => self.tcp(e),
            EventBody::Udp(e) => self.udp(e),
            EventBody::Tls(e) => self.tls(e),
            EventBody::Http(e) => self.http(seq, ts, e),
            EventBody::Blocked(e) => self.blocked(seq, e),
            EventBody::Gap(g) => {
                let detail = format!("{} event(s) lost: {}", g.dropped, g.reason);
                self.notice(seq, ts, "gap".into(), detail);
            }
            EventBody::Notice(n) => self.notice(seq, ts, n.what.clone(), n.detail.clone()),
            EventBody::Decision(d) => {
                self.calls.decision(d);
                if !self.decisions.push(seq, d) {
                    *self.report.omitted.entry("decisions".into()).or_default() += 1;
                }
            }
            EventBody::ExecRan(r) if r.mismatch => {
                // The exec record above names another program than the one that ran.
                let detail = format!(
                    "pid {}: the exec record names {}, but {} ran",
                    r.pid,
                    r.requested,
                    r.ran.as_deref().unwrap_or("?")
                );
                self.notice(seq, ts, "exec_mismatch".into(), detail);
            }
            // A WebSocket message is detail of its flow's `http` upgrade record; the report
            // counts it in the kinds and shows it in the timeline.
            EventBody::NetSetup(_)
            | EventBody::ExecRan(_)
            | EventBody::Ws(_)
            | EventBody::Unknown => {}
        }
    }

    fn at_ms(&self, ts: &str) -> Option<i64> {
        let ts = parse_ts(ts)?;
        i64::try_from((ts - self.start_ns?).div_euclid(1_000_000)).ok()
    }

    /// Pushes `row` unless the table is full (then counts it under `table`).
    fn keep<T>(omitted: &mut BTreeMap<String, u64>, rows: &mut Vec<T>, table: &str, row: T) {
        if rows.len() < MAX_ROWS {
            rows.push(row);
        } else {
            *omitted.entry(table.to_owned()).or_default() += 1;
        }
    }

    fn run_start(&mut self, rec: &Record, e: &RunStart) {
        self.start_ns = parse_ts(&rec.ts).or(self.start_ns);
        let r = &mut self.report;
        // The standalone gateway writes empty strings for what it does not have.
        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        r.run = text(rec.run.as_str());
        r.idagent_version = text(&e.idagent_version);
        r.image = text(&e.image);
        r.user = text(&e.user);
        r.offline = Some(e.offline);
        r.started = Some(rec.ts.clone());
        let command = self.redact_argv(e.command.clone(), "run command");
        self.report.command = command;
    }

    fn run_end(&mut self, rec: &Record, e: &RunEnd) {
        let r = &mut self.report;
        r.run = r.run.take().or_else(|| Some(rec.run.as_str().to_owned()));
        r.exit_code = e.exit_code;
        r.end_reason = Some(e.reason.clone());
        r.duration_ms = Some(e.duration_ms);
        r.ended = Some(rec.ts.clone());
    }

    fn file(&mut self, seq: u64, ts: &str, e: &FileEvent) {
        let at_ms = self.at_ms(ts);
        let (op, path) = (name_of(e.op), e.path.clone());
        let (pid, exe) = (e.pid.map(i64::from), e.exe.clone());
        if e.outcome == Outcome::Ok {
            self.hazard(e);
        }
        let r = &mut self.report;
        if e.outcome == Outcome::Denied {
            let row = DeniedWrite {
                seq,
                at_ms,
                op,
                path,
                errno: e.errno.clone(),
                pid,
                exe,
                syscall: e.syscall.clone(),
            };
            Self::keep(&mut r.omitted, &mut r.writes_denied, "writes_denied", row);
        } else {
            let row = FileWrite {
                seq,
                at_ms,
                op,
                path,
                from: e.from.clone(),
                size: e.size,
                sha256: e.sha256.clone(),
                pid,
                exe,
            };
            Self::keep(&mut r.omitted, &mut r.files_written, "files_written", row);
        }
    }

    fn exec(&mut self, seq: u64, ts: &str, e: &ExecEvent) {
        let pid = i64::from(e.pid);
        let location = format!("argv of pid {pid} ({})", e.path);
        let argv = self.redact_argv(e.argv.clone(), &location);
        let row = Process {
            seq,
            at_ms: self.at_ms(ts),
            pid: Some(pid),
            ppid: Some(i64::from(e.ppid)),
            path: e.path.clone(),
            argv,
            caller: e.caller.clone(),
            error: e.error.clone(),
            ..Process::default()
        };
        let r = &mut self.report;
        if row.error.is_none() && r.processes.len() < MAX_ROWS {
            // A later exec by the same pid replaces the image: the exit belongs to the last.
            self.open_execs.insert(pid, r.processes.len());
        }
        Self::keep(&mut r.omitted, &mut r.processes, "processes", row);
    }

    fn exit(&mut self, e: &ExitEvent) {
        let Some(idx) = self.open_execs.remove(&i64::from(e.pid)) else {
            return;
        };
        if let Some(p) = self.report.processes.get_mut(idx) {
            p.exited = true;
            p.exit_code = e.code.map(i64::from);
            p.exit_signal = e.signal.map(i64::from);
        }
    }

    /// Redacts clear-text credentials in `argv` (logs from before argv redaction) and records
    /// every fingerprint in it as seen at `location`.
    fn redact_argv(&mut self, argv: Vec<String>, location: &str) -> Vec<String> {
        // Logs written by older versions may hold argv redacted one argument at a time; the
        // whole-line rules (`--password X`) apply here again.
        let redacted = crate::redact::redact_argv(&argv);
        let had_secret = redacted != argv;
        let argv = redacted;
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

    fn dns(&mut self, seq: u64, e: &DnsEvent) {
        let (name, answers) = (&e.data.name, &e.data.answers);
        for a in answers {
            if self.addr_names.len() < MAX_TRACKED_KEYS {
                self.addr_names.insert(a.clone(), name.clone());
            }
        }
        let block = e.data.blocked.map(name_of);
        if let Some(block) = &block {
            let target = format!("{name} {}", e.data.qtype);
            // An aggregated record stands for `repeated` queries.
            let n = e.repeat.occurrences();
            if let Some(agg) = self.blocked_agg(seq, "dns", &target, block) {
                agg.dns += n;
            }
        }
        if name.is_empty() || (self.dns.len() >= MAX_TRACKED_KEYS && !self.dns.contains_key(name)) {
            return;
        }
        if !self.dns.contains_key(name) {
            self.dns_order.push(name.clone());
        }
        let d = self.dns.entry(name.clone()).or_default();
        d.dns_queries += e.repeat.occurrences();
        push_distinct(&mut d.addresses, answers.iter().cloned());
        if let Some(block) = block {
            d.blocked = true;
            push_distinct(&mut d.blocked_reasons, [format!("dns: {block}")]);
        } else if !d.addresses.is_empty() {
            d.verdict = ALLOWED.into();
        }
    }

    fn flow(&mut self, id: Option<FlowId>) -> Option<&mut Flow> {
        let id = id?.0;
        if self.flows.len() >= MAX_TRACKED_FLOWS && !self.flows.contains_key(&id) {
            *self.report.omitted.entry("flows".into()).or_default() += 1;
            return None;
        }
        Some(self.flows.entry(id).or_default())
    }

    fn tcp(&mut self, e: &TcpEvent) {
        let Some(f) = self.flow(Some(e.flow)) else {
            return;
        };
        f.dst = f.dst.take().or_else(|| Some(e.dst.clone()));
        f.name = f.name.take().or_else(|| e.name.clone());
        if let Some(p) = &e.protocol {
            f.protocol = Some(p.to_string());
        }
        f.bytes_up = f.bytes_up.max(e.bytes_up.unwrap_or_default());
        f.bytes_down = f.bytes_down.max(e.bytes_down.unwrap_or_default());
    }

    fn udp(&mut self, e: &UdpEvent) {
        let (addr, port) = split_addr(&e.dst);
        let key = e
            .name
            .as_deref()
            .map(|n| strip_port(n).to_owned())
            .or_else(|| self.addr_names.get(&addr).cloned())
            .unwrap_or(addr);
        if self.udp.len() < MAX_TRACKED_FLOWS {
            self.udp.push((key, port, e.bytes_up, e.bytes_down));
        }
    }

    fn tls(&mut self, e: &TlsEvent) {
        let Some(f) = self.flow(Some(e.flow)) else {
            return;
        };
        if let Some(sni) = &e.sni {
            f.sni = Some(sni.clone());
        }
        push_distinct(&mut f.tls_modes, [e.mode.to_string()]);
    }

    fn http(&mut self, seq: u64, ts: &str, e: &HttpEvent) {
        let headers = e.req_headers.iter().chain(&e.resp_headers);
        let fps: Vec<String> = (e.credentials.iter().chain(std::iter::once(&e.url)))
            .chain(headers.map(|(_, value)| value))
            .flat_map(|s| fingerprints_in(s))
            .collect();
        let distinct: Vec<String> = fps
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        self.credentials_seen(fps, &format!("{} {}", e.method, e.url));
        let host = url_host(&e.url).map(str::to_owned);
        match self.flow(Some(e.flow)) {
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
            seq,
            at_ms: self.at_ms(ts),
            flow: Some(e.flow.0),
            method: e.method.clone(),
            url: e.url.clone(),
            status: e.status.map(u64::from),
            req_bytes: e.req_bytes,
            resp_bytes: e.resp_bytes,
            duration_ms: Some(e.duration_ms),
            note: e.note.clone(),
            credentials: distinct,
        };
        if let Some(call) = self.calls.row(seq, row.at_ms, e) {
            let r = &mut self.report;
            Self::keep(&mut r.omitted, &mut r.tool_calls, "tool_calls", call);
        }
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

    fn blocked(&mut self, seq: u64, e: &BlockedEvent) {
        let (what, target) = (e.what.as_ref(), e.target.as_str());
        // A refused QUIC connection's record stands for its datagrams.
        let n = e.datagrams.unwrap_or_else(|| e.repeat.occurrences());
        if let Some(agg) = self.blocked_agg(seq, what, target, &e.reason) {
            agg.events += n;
        }
        let labelled = format!("{what}: {}", e.reason);
        if let Some(f) = self.flow(e.flow) {
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

    fn notice(&mut self, seq: u64, ts: &str, what: String, detail: String) {
        let row = NoticeRow {
            seq,
            at_ms: self.at_ms(ts),
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
        self.report.decisions = std::mem::take(&mut self.decisions).finish();
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

    /// A workspace symlink (its target may be a host path once exported) or a dangerous mode.
    fn hazard(&mut self, e: &FileEvent) {
        let symlink = e.node.file_type == Some(crate::audit::FileType::Symlink);
        let mode = e
            .node
            .mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok());
        let what = if symlink {
            format!("{} → {}", e.path, e.node.target.as_deref().unwrap_or("?"))
        } else if let Some(m) = mode.filter(|m| m & HAZARD_MODE_BITS != 0) {
            format!("{} mode {m:04o}", e.path)
        } else {
            return;
        };
        self.hazards.0 += 1;
        if self.hazards.1.len() < MAX_HAZARD_EXAMPLES {
            self.hazards.1.push(what);
        }
    }

    fn log_warnings(&mut self) {
        let (n, examples) = std::mem::take(&mut self.hazards);
        if n > 0 {
            let more = n.saturating_sub(examples.len() as u64);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            self.report.warnings.push(format!(
                "the workspace held {n} symlink(s) or setuid/setgid/sticky/world-writable mode(s): {}{more}. \
                 The exported workspace in the run folder has links as *.idagent-symlink files \
                 holding their target and those mode bits stripped; do not recreate them on the host",
                examples.join(", ")
            ));
        }
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

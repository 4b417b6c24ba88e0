//! `idagent export --format ocsf`: a run's audit log as OCSF v1.1.0 JSON Lines, for a cluster's
//! log pipeline. Field-by-field mapping: `docs/ocsf.md`.
//!
//! Reads through the typed read side of the audit schema ([`crate::audit::read`]); never parses
//! JSON by hand. Values are copied from the log as written (credentials there are already
//! fingerprints), so nothing the log does not hold can appear in the export. Kinds without an
//! OCSF class are skipped and counted; lines that do not parse are counted with their line
//! number. Does not own: the audit schema, or shipping the lines anywhere.

use crate::audit::read::{records, LineError, OpenLog, Record, Records};
use crate::audit::{
    BlockedEvent, DecisionEvent, DnsEvent, EventBody, ExecEvent, ExecRanEvent, ExitEvent,
    FileEvent, FileOp, FileType, FlowId, HttpEvent, Outcome, TcpEvent, TlsEvent, UdpEvent,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;

/// The OCSF schema version the export follows.
pub const OCSF_VERSION: &str = "1.1.0";

/// Lines reported one by one on stderr before only the count is.
const MAX_REPORTED_BAD_LINES: usize = 20;

/// What an export did: written, skipped per kind, and the lines that did not read.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub written: u64,
    /// Records of kinds with no OCSF mapping, per kind.
    pub skipped: BTreeMap<String, u64>,
    pub bad_lines: Vec<LineError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Open(#[from] OpenLog),
    #[error("write the export: {0}")]
    Write(#[source] std::io::Error),
}

/// Opens `run_dir/audit.jsonl` for [`export_ocsf`] (before any output file is created).
pub fn open(run_dir: &Path) -> Result<Records<BufReader<File>>, OpenLog> {
    records(&run_dir.join("audit.jsonl"))
}

/// Writes the records as OCSF JSON Lines into `out`.
pub fn export_ocsf<R: BufRead>(
    log: Records<R>,
    out: &mut dyn Write,
) -> Result<ExportStats, ExportError> {
    let mut stats = ExportStats::default();
    let mut mapper = Mapper::default();
    for item in log {
        match item {
            Err(e) => stats.bad_lines.push(e),
            Ok(record) => match mapper.map(&record) {
                Some(event) => {
                    let line = serde_json::to_string(&event).map_err(|e| {
                        ExportError::Write(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                    })?;
                    writeln!(out, "{line}").map_err(ExportError::Write)?;
                    stats.written += 1;
                }
                None => *stats.skipped.entry(record.kind().to_owned()).or_default() += 1,
            },
        }
    }
    out.flush().map_err(ExportError::Write)?;
    Ok(stats)
}

/// The stderr note for an export: skipped kinds and bad lines (each with its line number).
pub fn render_note(stats: &ExportStats) -> String {
    let mut s = format!("idagent: export: {} OCSF event(s) written", stats.written);
    if !stats.skipped.is_empty() {
        let kinds: Vec<String> = stats
            .skipped
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        s.push_str(&format!("; skipped (no OCSF class): {}", kinds.join(", ")));
    }
    s.push('\n');
    if !stats.bad_lines.is_empty() {
        s.push_str(&format!(
            "idagent: export: {} line(s) of the log could not be read and were left out\n",
            stats.bad_lines.len()
        ));
        for e in stats.bad_lines.iter().take(MAX_REPORTED_BAD_LINES) {
            s.push_str(&format!("idagent: export: {e}\n"));
        }
    }
    s
}

/// Flow state carried across records: a `tls` or `http` record names only its flow, the
/// `tcp` open before it has the addresses. Entries go when the flow's `tcp` close is mapped.
#[derive(Default)]
struct Mapper {
    flows: HashMap<FlowId, (String, String)>,
    /// `run_start.idagent_version`: the product that wrote the events.
    product_version: Option<String>,
}

/// OCSF `status_id`.
const SUCCESS: u8 = 1;
const FAILURE: u8 = 2;
/// OCSF `severity_id`.
const INFORMATIONAL: u8 = 1;
const MEDIUM: u8 = 3;

impl Mapper {
    fn map(&mut self, r: &Record) -> Option<Value> {
        let mut e = match &r.body {
            EventBody::RunStart(s) => {
                self.product_version = Some(s.idagent_version.clone());
                return None;
            }
            EventBody::Dns(d) => dns(d),
            EventBody::Tcp(t) => self.tcp(t),
            EventBody::Udp(u) => udp(u),
            EventBody::Tls(t) => self.tls(t),
            EventBody::Blocked(b) => blocked(b),
            EventBody::Http(h) => self.http(h),
            EventBody::File(f) => file(f),
            EventBody::Exec(x) => exec(x),
            EventBody::ExecRan(x) => exec_ran(x),
            EventBody::Exit(x) => exit(x),
            EventBody::Decision(d) => decision(d, r),
            EventBody::RunEnd(_)
            | EventBody::NetSetup(_)
            | EventBody::Gap(_)
            | EventBody::Notice(_)
            | EventBody::Ws(_)
            | EventBody::Unknown => return None,
        };
        let version = self
            .product_version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        e.finish(r, &version);
        Some(Value::Object(e.0))
    }

    fn endpoints(&self, flow: FlowId) -> Option<(Value, Value)> {
        self.flows
            .get(&flow)
            .map(|(src, dst)| (endpoint(src, None), endpoint(dst, None)))
    }

    fn tcp(&mut self, t: &TcpEvent) -> Event {
        let activity = match t.phase.as_ref() {
            "open" => 1,
            "close" => 2,
            _ => 99,
        };
        if activity == 1 {
            self.flows.insert(t.flow, (t.src.clone(), t.dst.clone()));
        } else {
            self.flows.remove(&t.flow);
        }
        let mut e = Event::new(4001, activity);
        e.set("src_endpoint", endpoint(&t.src, None));
        e.set("dst_endpoint", endpoint(&t.dst, t.name.as_deref()));
        e.set("connection_info", connection("tcp", Some(t.flow)));
        e.set("status_id", json!(SUCCESS));
        if t.bytes_up.is_some() || t.bytes_down.is_some() {
            e.set(
                "traffic",
                json!({"bytes_out": t.bytes_up, "bytes_in": t.bytes_down}),
            );
        }
        if let Some(ms) = t.duration_ms {
            e.set("duration", json!(ms));
        }
        e.unmapped("upstream", &t.upstream);
        e.unmapped("protocol", &t.protocol);
        e.unmapped("close_reason", &t.close_reason);
        e.unmapped("first_bytes_up", &t.first_bytes_up);
        e.unmapped("first_bytes_down", &t.first_bytes_down);
        e
    }

    fn tls(&self, t: &TlsEvent) -> Event {
        let mut e = Event::new(4001, 6);
        if let Some((src, dst)) = self.endpoints(t.flow) {
            e.set("src_endpoint", src);
            e.set("dst_endpoint", dst);
        }
        e.set("connection_info", connection("tcp", Some(t.flow)));
        let mut tls = Map::new();
        if let Some(sni) = &t.sni {
            tls.insert("sni".into(), json!(sni));
        }
        e.set("tls", Value::Object(tls));
        let ok = matches!(t.mode.as_ref(), "intercepted" | "passthrough");
        e.set("status_id", json!(if ok { SUCCESS } else { FAILURE }));
        if let Some(err) = &t.error {
            e.set("status_detail", json!(err));
        }
        e.unmapped("tls_mode", &Some(&t.mode));
        e.unmapped("alpn", &t.alpn);
        if !t.alpn_offered.is_empty() {
            e.unmapped("alpn_offered", &Some(&t.alpn_offered));
        }
        e.unmapped("refused_by", &t.refused_by);
        e.unmapped("upstream_verify", &t.upstream_verify);
        e.unmapped("upstream_alpn", &t.upstream_alpn);
        e
    }

    fn http(&self, h: &HttpEvent) -> Event {
        let method = h.method.to_ascii_uppercase();
        let activity = match method.as_str() {
            "CONNECT" => 1,
            "DELETE" => 2,
            "GET" => 3,
            "HEAD" => 4,
            "OPTIONS" => 5,
            "POST" => 6,
            "PUT" => 7,
            "TRACE" => 8,
            _ => 99,
        };
        let mut e = Event::new(4002, activity);
        let uri: Option<http::Uri> = h.url.parse().ok();
        let host = uri.as_ref().and_then(|u| u.host()).map(str::to_owned);
        if let Some((src, dst)) = self.endpoints(h.flow) {
            e.set("src_endpoint", src);
            let mut dst = dst;
            if let (Some(obj), Some(host)) = (dst.as_object_mut(), &host) {
                obj.insert("hostname".into(), json!(host));
            }
            e.set("dst_endpoint", dst);
        }
        e.set("connection_info", connection("tcp", Some(h.flow)));
        let mut url = Map::new();
        url.insert("url_string".into(), json!(h.url));
        if let Some(u) = &uri {
            if let Some(host) = &host {
                url.insert("hostname".into(), json!(host));
            }
            url.insert("path".into(), json!(u.path()));
            if let Some(q) = u.query() {
                url.insert("query_string".into(), json!(q));
            }
            if let Some(s) = u.scheme_str() {
                url.insert("scheme".into(), json!(s));
            }
            if let Some(p) = u.port_u16() {
                url.insert("port".into(), json!(p));
            }
        }
        let mut req = Map::new();
        req.insert("http_method".into(), json!(method));
        req.insert("url".into(), Value::Object(url));
        let ua = h
            .req_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("user-agent"));
        if let Some((_, v)) = ua {
            req.insert("user_agent".into(), json!(v));
        }
        if let Some(v) = &h.version {
            req.insert("version".into(), json!(v));
        }
        req.insert("length".into(), json!(h.req_bytes));
        e.set("http_request", Value::Object(req));
        if let Some(code) = h.status {
            e.set(
                "http_response",
                json!({"code": code, "length": h.resp_bytes}),
            );
        }
        let ok = h.status.is_some_and(|c| c < 400) && h.note.as_deref() != Some("error");
        e.set("status_id", json!(if ok { SUCCESS } else { FAILURE }));
        e.set("duration", json!(h.duration_ms));
        e.unmapped("upstream", &h.upstream);
        e.unmapped("sni", &h.sni);
        e.unmapped("upstream_version", &h.upstream_version);
        e.unmapped("req_sha256", &Some(&h.req_sha256));
        e.unmapped("resp_sha256", &Some(&h.resp_sha256));
        e.unmapped("credentials", &Some(&h.credentials));
        e.unmapped("note", &h.note);
        e.unmapped("grpc", &h.grpc);
        e.unmapped("jsonrpc", &h.jsonrpc);
        e
    }
}

fn dns(d: &DnsEvent) -> Event {
    let data = &d.data;
    // An answer was sent: the record is the response; otherwise only the query was seen.
    let mut e = Event::new(4003, if data.rcode.is_some() { 2 } else { 1 });
    e.set("dst_endpoint", endpoint(&d.server, None));
    e.set("connection_info", connection(&d.transport, None));
    e.set(
        "query",
        json!({"hostname": data.name, "type": data.qtype, "class": "IN"}),
    );
    if let Some(rcode) = data.rcode {
        use crate::dns::Rcode;
        // OCSF rcode_id is the DNS RCODE value.
        let id = match rcode {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
        };
        e.set("rcode_id", json!(id));
        e.set("rcode", json!(rcode.as_str()));
        let answers: Vec<Value> = data.answers.iter().map(|a| json!({"rdata": a})).collect();
        e.set("answers", Value::Array(answers));
        let ok = matches!(rcode, Rcode::NoError);
        e.set("status_id", json!(if ok { SUCCESS } else { FAILURE }));
    }
    e.unmapped("source", &Some(data.source));
    e.unmapped("blocked", &data.blocked);
    e.unmapped("error", &data.error);
    e.unmapped("repeated", &d.repeat.repeated);
    e.unmapped("first_ts", &d.repeat.first_ts);
    e.unmapped("last_ts", &d.repeat.last_ts);
    if data.blocked.is_some() {
        e.set("severity_id", json!(MEDIUM));
    }
    e
}

fn udp(u: &UdpEvent) -> Event {
    let mut e = Event::new(4001, 6);
    e.set("src_endpoint", endpoint(&u.src, None));
    e.set("dst_endpoint", endpoint(&u.dst, u.name.as_deref()));
    e.set("connection_info", connection("udp", None));
    e.set(
        "traffic",
        json!({"bytes_out": u.bytes_up, "bytes_in": u.bytes_down,
               "packets_out": u.datagrams_up, "packets_in": u.datagrams_down}),
    );
    e.set("status_id", json!(SUCCESS));
    e
}

fn blocked(b: &BlockedEvent) -> Event {
    let mut e = Event::new(4001, 5);
    e.set("dst_endpoint", endpoint(&b.target, b.name.as_deref()));
    e.set("connection_info", connection(&b.what, b.flow));
    e.set("status_id", json!(FAILURE));
    e.set("status_detail", json!(b.reason));
    e.set("action_id", json!(2));
    e.set("disposition_id", json!(2));
    e.set("severity_id", json!(MEDIUM));
    if let Some(n) = b.datagrams {
        e.set("traffic", json!({"packets_out": n}));
    }
    e.set("count", json!(b.repeat.occurrences()));
    e.unmapped("what", &Some(&b.what));
    e.unmapped("quic_dcid", &b.quic_dcid);
    e.unmapped("first_ts", &b.repeat.first_ts);
    e.unmapped("last_ts", &b.repeat.last_ts);
    e
}

fn file(f: &FileEvent) -> Event {
    let activity = match f.op {
        FileOp::Create
        | FileOp::Mkdir
        | FileOp::Creat
        | FileOp::Link
        | FileOp::Symlink
        | FileOp::Mknod => 1,
        FileOp::Modify | FileOp::Truncate => 3,
        FileOp::Delete | FileOp::Rmdir | FileOp::Unlink => 4,
        FileOp::Rename => 5,
        FileOp::Attrib => 6,
        FileOp::Chmod | FileOp::Chown => 7,
        FileOp::OpenWrite => 14,
    };
    let mut e = Event::new(1001, activity);
    let type_id = match (f.node.file_type, f.op) {
        (Some(FileType::Symlink), _) => 7,
        (Some(FileType::Fifo), _) => 6,
        (Some(FileType::Socket), _) => 5,
        (Some(FileType::Device), _) => 3,
        (Some(FileType::Other), _) => 99,
        (None, FileOp::Mkdir | FileOp::Rmdir) => 2,
        (None, _) => 1,
    };
    let mut file = Map::new();
    let name = f.path.rsplit('/').next().unwrap_or_default();
    file.insert("path".into(), json!(f.path));
    file.insert("name".into(), json!(name));
    file.insert("type_id".into(), json!(type_id));
    if let Some(size) = f.size {
        file.insert("size".into(), json!(size));
    }
    if let Some(h) = &f.sha256 {
        // algorithm_id 3: SHA-256.
        file.insert("hashes".into(), json!([{"algorithm_id": 3, "value": h}]));
    }
    e.set("file", Value::Object(file));
    e.set("actor", actor(f.pid, f.exe.as_deref()));
    if let Some(from) = &f.from {
        e.set("file_result", json!({"path": f.path, "name": name}));
        let old = from.rsplit('/').next().unwrap_or_default();
        e.set(
            "file",
            json!({"path": from, "name": old, "type_id": type_id}),
        );
    }
    match f.outcome {
        Outcome::Ok => e.set("status_id", json!(SUCCESS)),
        Outcome::Denied => {
            e.set("status_id", json!(FAILURE));
            e.set("action_id", json!(2));
            e.set("disposition_id", json!(2));
            e.set("severity_id", json!(MEDIUM));
        }
    }
    if let Some(errno) = &f.errno {
        e.set("status_detail", json!(errno));
    }
    e.unmapped("op", &Some(f.op));
    e.unmapped("requested", &f.requested);
    e.unmapped("syscall", &f.syscall);
    e.unmapped("link_target", &f.node.target);
    e.unmapped("mode", &f.node.mode);
    e
}

fn actor(pid: Option<i32>, exe: Option<&str>) -> Value {
    let mut p = Map::new();
    if let Some(pid) = pid {
        p.insert("pid".into(), json!(pid));
    }
    if let Some(exe) = exe {
        p.insert("file".into(), file_ref(exe));
    }
    json!({ "process": p })
}

fn file_ref(path: &str) -> Value {
    json!({"path": path, "name": path.rsplit('/').next().unwrap_or_default(), "type_id": 1})
}

fn exec(x: &ExecEvent) -> Event {
    let mut e = Event::new(1007, 1);
    let mut p = Map::new();
    p.insert("pid".into(), json!(x.pid));
    p.insert("cmd_line".into(), json!(x.argv.join(" ")));
    p.insert("file".into(), file_ref(&x.path));
    p.insert("user".into(), json!({"uid": x.uid.to_string()}));
    p.insert("parent_process".into(), json!({"pid": x.ppid}));
    e.set("process", Value::Object(p));
    e.set("actor", actor(Some(x.ppid), x.caller.as_deref()));
    match &x.error {
        None => e.set("status_id", json!(SUCCESS)),
        Some(err) => {
            e.set("status_id", json!(FAILURE));
            e.set("status_detail", json!(err));
        }
    }
    e.unmapped("argv", &Some(&x.argv));
    e.unmapped("real_path", &x.real_path);
    if x.argv_truncated {
        e.unmapped("argv_truncated", &Some(true));
        e.unmapped("argc", &x.argc);
    }
    e
}

fn exec_ran(x: &ExecRanEvent) -> Event {
    let mut e = Event::new(1007, 99);
    let mut p = Map::new();
    p.insert("pid".into(), json!(x.pid));
    if let Some(ran) = &x.ran {
        p.insert("file".into(), file_ref(ran));
    }
    if !x.argv.is_empty() {
        p.insert("cmd_line".into(), json!(x.argv.join(" ")));
    }
    e.set("process", Value::Object(p));
    e.set("actor", actor(None, None));
    e.set("activity_name", json!("Exec confirmed"));
    e.set(
        "status_id",
        json!(if x.mismatch { FAILURE } else { SUCCESS }),
    );
    if x.mismatch {
        e.set("severity_id", json!(MEDIUM));
    }
    e.unmapped("requested", &Some(&x.requested));
    e.unmapped("mismatch", &Some(x.mismatch));
    e.unmapped("interpreter", &Some(x.interpreter));
    e.unmapped("source", &Some(&x.source));
    e.unmapped("unconfirmed", &x.unconfirmed);
    e
}

fn exit(x: &ExitEvent) -> Event {
    let mut e = Event::new(1007, 2);
    let mut p = Map::new();
    p.insert("pid".into(), json!(x.pid));
    if let Some(exe) = &x.exe {
        p.insert("file".into(), file_ref(exe));
    }
    e.set("process", Value::Object(p));
    e.set("actor", actor(None, None));
    if let Some(code) = x.code {
        e.set("exit_code", json!(code));
    }
    e.set("status_id", json!(SUCCESS));
    e.unmapped("signal", &x.signal);
    e.unmapped("source", &x.source);
    e
}

fn decision(d: &DecisionEvent, r: &Record) -> Event {
    let mut e = Event::new(2004, 1);
    let denied = d.verdict == "deny";
    let refused = denied && !d.would_deny;
    e.set(
        "finding_info",
        json!({
            "uid": format!("{}:{}", r.run, r.seq),
            "title": format!("policy {} {}", d.verdict, d.layer),
            "analytic": {"name": d.rule, "type_id": 1, "type": "Rule"},
        }),
    );
    // action/disposition say what happened: refused, or let through (allowed, or a would-deny
    // in report mode).
    e.set("action_id", json!(if refused { 2 } else { 1 }));
    e.set("disposition_id", json!(if refused { 2 } else { 1 }));
    e.set("status_id", json!(SUCCESS));
    e.set(
        "severity_id",
        json!(if denied { MEDIUM } else { INFORMATIONAL }),
    );
    let q = &d.request;
    if q.addr.is_some() || q.name.is_some() {
        let mut dst = Map::new();
        if let Some(a) = &q.addr {
            dst.insert("ip".into(), json!(a));
        }
        if let Some(p) = q.port {
            dst.insert("port".into(), json!(p));
        }
        if let Some(n) = &q.name {
            dst.insert("hostname".into(), json!(n));
        }
        e.set("dst_endpoint", Value::Object(dst));
    }
    e.unmapped("layer", &Some(&d.layer));
    e.unmapped("verdict", &Some(&d.verdict));
    e.unmapped("mode", &Some(&d.mode));
    e.unmapped("would_deny", &Some(d.would_deny));
    e.unmapped("enforced_by", &d.enforced_by);
    e.unmapped("request", &Some(q));
    e.unmapped("flow", &d.flow);
    e.unmapped("pid", &d.pid);
    e
}

/// An OCSF endpoint from `addr:port` (or a bare address); `name` is a `host[:port]` the
/// guest resolved.
fn endpoint(addr: &str, name: Option<&str>) -> Value {
    let mut m = Map::new();
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        m.insert("ip".into(), json!(sa.ip().to_string()));
        m.insert("port".into(), json!(sa.port()));
    } else if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        m.insert("ip".into(), json!(ip.to_string()));
    } else {
        m.insert("hostname".into(), json!(addr));
    }
    if let Some(name) = name {
        let host = name
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok())
            .map_or(name, |(h, _)| h);
        m.insert("hostname".into(), json!(host));
    }
    Value::Object(m)
}

fn connection(proto: &str, flow: Option<FlowId>) -> Value {
    // direction_id 2: outbound (the guest is always the client).
    let mut m = Map::new();
    m.insert("protocol_name".into(), json!(proto));
    m.insert("direction_id".into(), json!(2));
    if let Some(f) = flow {
        m.insert("uid".into(), json!(f.to_string()));
    }
    Value::Object(m)
}

/// One OCSF event being built.
struct Event(Map<String, Value>, Map<String, Value>);

impl Event {
    fn new(class_uid: u32, activity_id: u32) -> Self {
        let mut m = Map::new();
        m.insert("category_uid".into(), json!(class_uid / 1000));
        m.insert("class_uid".into(), json!(class_uid));
        m.insert("activity_id".into(), json!(activity_id));
        m.insert("type_uid".into(), json!(class_uid * 100 + activity_id));
        m.insert("severity_id".into(), json!(INFORMATIONAL));
        m.insert("status_id".into(), json!(0));
        Event(m, Map::new())
    }

    fn set(&mut self, key: &str, v: Value) {
        self.0.insert(key.into(), v);
    }

    /// Adds an idagent field without an OCSF home; `None` is left out.
    fn unmapped<T: serde::Serialize>(&mut self, key: &str, v: &Option<T>) {
        if let Some(v) = v {
            if let Ok(v) = serde_json::to_value(v) {
                self.1.insert(key.into(), v);
            }
        }
    }

    fn finish(&mut self, r: &Record, product_version: &str) {
        self.set("time", json!(epoch_ms(&r.ts)));
        self.set(
            "metadata",
            json!({
                "version": OCSF_VERSION,
                "product": {"name": "idagent", "vendor_name": "idagent", "version": product_version},
                "uid": format!("{}:{}", r.run, r.seq),
                "correlation_uid": r.run.as_str(),
                "original_time": r.ts,
            }),
        );
        self.1.insert("kind".into(), json!(r.kind()));
        self.1.insert("v".into(), json!(r.v));
        let unmapped = std::mem::take(&mut self.1);
        self.set("unmapped", Value::Object(unmapped));
    }
}

/// RFC 3339 → epoch milliseconds; 0 when the timestamp does not parse (kept in
/// `metadata.original_time`).
fn epoch_ms(ts: &str) -> i64 {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

//! One-line summaries of audit records (the HTML timeline) and the small value formatters the
//! text and HTML renderers share. Returns plain text: escaping is the renderer's job.

use super::fields::name_of;
use super::Process;
use crate::audit::{DecisionEvent, DnsEvent, EventBody, FileEvent, Outcome, Record, TcpEvent};

/// `1.2 KiB`, `3 B`.
pub(super) fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS.get(unit).unwrap_or(&"TiB"))
}

/// Offset from the run's start: `+1.234s`.
pub(super) fn fmt_offset(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => format!(
            "{}{}.{:03}s",
            if ms < 0 { "-" } else { "+" },
            ms.unsigned_abs() / 1000,
            ms.unsigned_abs() % 1000
        ),
        None => "?".into(),
    }
}

/// `3.837 s`, `583 ms`.
pub(super) fn fmt_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{}.{:03} s", ms / 1000, ms % 1000)
    }
}

/// How a process ended: `0`, `signal 9`, `ENOENT`, `replaced`, `running`.
pub(super) fn fmt_exit(p: &Process) -> String {
    match (p.exit_code, p.exit_signal, &p.error) {
        (_, _, Some(err)) => err.clone(),
        (Some(code), _, _) => code.to_string(),
        (None, Some(sig), _) => format!("signal {sig}"),
        (None, None, _) if p.exited => "exited".into(),
        _ => "—".into(),
    }
}

fn or_empty<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or(String::new(), T::to_string)
}

/// `prefix` + `v` when `v` is present (`, alpn h2`), else nothing.
fn with<T: std::fmt::Display>(prefix: &str, v: &Option<T>) -> String {
    v.as_ref().map_or(String::new(), |v| format!("{prefix}{v}"))
}

/// A one-line description of any record (unknown kinds: their compact JSON).
pub(super) fn summary(rec: &Record) -> String {
    match &rec.body {
        EventBody::RunStart(e) => format!("{} as {}: {}", e.image, e.user, e.command.join(" ")),
        EventBody::RunEnd(e) => format!(
            "{}, exit code {}, {}",
            e.reason,
            e.exit_code.map_or("none".into(), |c| c.to_string()),
            fmt_duration(e.duration_ms)
        ),
        EventBody::NetSetup(e) => {
            format!("{} mtu {}, guest {}", e.tun, e.mtu, e.guest_addrs.join(" "))
        }
        EventBody::Exec(e) => format!(
            "pid {} (parent {}) {}{}: {}",
            e.pid,
            e.ppid,
            e.path,
            e.error
                .as_ref()
                .map_or(String::new(), |x| format!(" [{x}]")),
            e.argv.join(" ")
        ),
        EventBody::ExecRan(e) => format!(
            "pid {} ran {}{}",
            e.pid,
            e.ran.as_deref().or(e.unconfirmed.as_deref()).unwrap_or("?"),
            if e.mismatch {
                format!(" [MISMATCH: exec record says {}]", e.requested)
            } else {
                String::new()
            }
        ),
        EventBody::Exit(e) => format!(
            "pid {} {} {}",
            e.pid,
            match (e.code, e.signal) {
                (Some(c), _) => format!("exited {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "ended".into(),
            },
            or_empty(&e.exe)
        ),
        EventBody::File(e) => file_summary(e),
        EventBody::Dns(e) => dns_summary(e),
        EventBody::Tcp(e) => tcp_summary(e),
        EventBody::Udp(e) => format!(
            "{} → {} {}: {} up, {} down",
            e.src,
            e.dst,
            or_empty(&e.name),
            fmt_bytes(e.bytes_up),
            fmt_bytes(e.bytes_down)
        ),
        EventBody::Tls(e) => format!(
            "{} {} {}{}{}{}",
            e.flow,
            or_empty(&e.sni),
            e.mode,
            with(", alpn ", &e.alpn),
            with(", upstream ", &e.upstream_verify),
            with(", error: ", &e.error)
        ),
        EventBody::Http(e) => format!(
            "{} {} {} → {} ({} up, {} down, {} ms){}",
            e.flow,
            e.method,
            e.url,
            e.status.map_or("no response".into(), |s| s.to_string()),
            fmt_bytes(e.req_bytes),
            fmt_bytes(e.resp_bytes),
            e.duration_ms,
            e.note.as_ref().map_or(String::new(), |n| format!(" [{n}]"))
        ),
        EventBody::Ws(e) => format!(
            "{} ws {} {} {}{}{}{}",
            e.flow,
            e.direction,
            e.opcode,
            fmt_bytes(e.size),
            e.code.map_or(String::new(), |c| format!(" code {c}")),
            if e.compressed { " [compressed]" } else { "" },
            if e.first.is_empty() {
                String::new()
            } else {
                format!(": {}", e.first.chars().take(80).collect::<String>())
            }
        ),
        EventBody::Blocked(e) => format!("{} {}: {}", e.what, e.target, e.reason),
        EventBody::Gap(e) => format!("{} event(s) lost: {}", e.dropped, e.reason),
        EventBody::Notice(e) => format!("{}: {}", e.what, e.detail),
        EventBody::Decision(e) => decision_summary(e),
        EventBody::Unknown => {
            let mut rest = rec
                .unknown
                .as_ref()
                .map(|u| u.raw.clone())
                .unwrap_or_default();
            for key in ["v", "seq", "ts", "run", "kind"] {
                rest.remove(key);
            }
            serde_json::to_string(&rest).unwrap_or_default()
        }
    }
}

fn decision_summary(e: &DecisionEvent) -> String {
    let what = match (e.verdict.as_str(), e.would_deny) {
        (_, true) => "would deny".to_owned(),
        (v, false) => v.to_owned(),
    };
    format!(
        "{} {what} {} (rule {}, {}){}",
        e.layer,
        super::build::request_line(&e.layer, &e.request),
        e.rule,
        e.mode,
        with(", enforced by ", &e.enforced_by)
    )
}

fn file_summary(e: &FileEvent) -> String {
    let denied = e.outcome == Outcome::Denied;
    let mut s = format!(
        "{}{} {}",
        if denied { "DENIED " } else { "" },
        name_of(e.op),
        e.path
    );
    s.push_str(&with(" (from ", &e.from));
    if e.from.is_some() {
        s.push(')');
    }
    s.push_str(&with(" ", &e.errno));
    if let Some(size) = e.size {
        s.push_str(&format!(", {}", fmt_bytes(size)));
    }
    s.push_str(&with(" by ", &e.exe));
    if let Some(sc) = &e.syscall {
        s.push_str(&format!(" ({sc})"));
    }
    s
}

fn dns_summary(e: &DnsEvent) -> String {
    let d = &e.data;
    let mut s = format!(
        "{} {} → {} ({}",
        d.name,
        d.qtype,
        if d.answers.is_empty() {
            d.rcode.map(name_of).unwrap_or_default()
        } else {
            d.answers.join(" ")
        },
        name_of(d.source)
    );
    if let Some(b) = d.blocked {
        s.push_str(&format!(", blocked: {}", name_of(b)));
    }
    s.push_str(&with(", error: ", &d.error));
    s.push(')');
    s
}

fn tcp_summary(e: &TcpEvent) -> String {
    let name = e.name.as_ref().map_or(String::new(), |n| format!(" ({n})"));
    let mut s = format!("{} {} {} → {}{name}", e.flow, e.phase, e.src, e.dst);
    if e.phase == "close" {
        s.push_str(&format!(
            ": {}, {} up, {} down, {} ms, {}",
            or_empty(&e.protocol),
            fmt_bytes(e.bytes_up.unwrap_or_default()),
            fmt_bytes(e.bytes_down.unwrap_or_default()),
            or_empty(&e.duration_ms),
            or_empty(&e.close_reason)
        ));
    }
    s
}

//! One-line summaries of audit records (the HTML timeline) and the small value formatters the
//! text and HTML renderers share. Returns plain text: escaping is the renderer's job.

use super::fields::{i64_of, str_of, strings_of, u64_of};
use super::Process;
use serde_json::Value;

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

fn opt(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A one-line description of any record (unknown kinds: their compact JSON).
pub(super) fn summary(e: &Value) -> String {
    let kind = str_of(e, "kind").unwrap_or_default();
    match kind {
        "run_start" => format!(
            "{} as {}: {}",
            opt(e, "image"),
            opt(e, "user"),
            strings_of(e, "command").join(" ")
        ),
        "run_end" => format!(
            "{}, exit code {}, {}",
            opt(e, "reason"),
            i64_of(e, "exit_code").map_or("none".into(), |c| c.to_string()),
            fmt_duration(u64_of(e, "duration_ms").unwrap_or_default())
        ),
        "net_setup" => format!(
            "{} mtu {}, guest {}",
            opt(e, "tun"),
            opt(e, "mtu"),
            strings_of(e, "guest_addrs").join(" ")
        ),
        "exec" => format!(
            "pid {} (parent {}) {}{}: {}",
            opt(e, "pid"),
            opt(e, "ppid"),
            opt(e, "path"),
            str_of(e, "error").map_or(String::new(), |x| format!(" [{x}]")),
            strings_of(e, "argv").join(" ")
        ),
        "exit" => format!(
            "pid {} {} {}",
            opt(e, "pid"),
            match (i64_of(e, "code"), i64_of(e, "signal")) {
                (Some(c), _) => format!("exited {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "ended".into(),
            },
            opt(e, "exe")
        ),
        "file" => file_summary(e),
        "dns" => dns_summary(e),
        "tcp" => tcp_summary(e),
        "udp" => format!(
            "{} → {} {}: {} up, {} down",
            opt(e, "src"),
            opt(e, "dst"),
            opt(e, "name"),
            fmt_bytes(u64_of(e, "bytes_up").unwrap_or_default()),
            fmt_bytes(u64_of(e, "bytes_down").unwrap_or_default())
        ),
        "tls" => format!(
            "f{} {} {}{}{}{}",
            opt(e, "flow"),
            opt(e, "sni"),
            opt(e, "mode"),
            str_of(e, "alpn").map_or(String::new(), |a| format!(", alpn {a}")),
            str_of(e, "upstream_verify").map_or(String::new(), |u| format!(", upstream {u}")),
            str_of(e, "error").map_or(String::new(), |x| format!(", error: {x}"))
        ),
        "http" => format!(
            "f{} {} {} → {} ({} up, {} down, {} ms){}",
            opt(e, "flow"),
            opt(e, "method"),
            opt(e, "url"),
            u64_of(e, "status").map_or("no response".into(), |s| s.to_string()),
            fmt_bytes(u64_of(e, "req_bytes").unwrap_or_default()),
            fmt_bytes(u64_of(e, "resp_bytes").unwrap_or_default()),
            opt(e, "duration_ms"),
            str_of(e, "note").map_or(String::new(), |n| format!(" [{n}]"))
        ),
        "blocked" => format!(
            "{} {}: {}",
            opt(e, "what"),
            opt(e, "target"),
            opt(e, "reason")
        ),
        "gap" => format!("{} event(s) lost: {}", opt(e, "dropped"), opt(e, "reason")),
        "notice" => format!("{}: {}", opt(e, "what"), opt(e, "detail")),
        _ => {
            let mut rest = e.clone();
            if let Some(obj) = rest.as_object_mut() {
                for key in ["v", "seq", "ts", "run", "kind"] {
                    obj.remove(key);
                }
            }
            rest.to_string()
        }
    }
}

fn file_summary(e: &Value) -> String {
    let denied = str_of(e, "outcome") == Some("denied");
    let mut s = format!(
        "{}{} {}",
        if denied { "DENIED " } else { "" },
        opt(e, "op"),
        opt(e, "path")
    );
    if let Some(from) = str_of(e, "from") {
        s.push_str(&format!(" (from {from})"));
    }
    if let Some(errno) = str_of(e, "errno") {
        s.push_str(&format!(" {errno}"));
    }
    if let Some(size) = u64_of(e, "size") {
        s.push_str(&format!(", {}", fmt_bytes(size)));
    }
    if let Some(exe) = str_of(e, "exe") {
        s.push_str(&format!(" by {exe}"));
    }
    if let Some(sc) = str_of(e, "syscall") {
        s.push_str(&format!(" ({sc})"));
    }
    s
}

fn dns_summary(e: &Value) -> String {
    let answers = strings_of(e, "answers");
    let mut s = format!(
        "{} {} → {} ({}",
        opt(e, "name"),
        opt(e, "qtype"),
        if answers.is_empty() {
            opt(e, "rcode")
        } else {
            answers.join(" ")
        },
        opt(e, "source")
    );
    if let Some(b) = str_of(e, "blocked") {
        s.push_str(&format!(", blocked: {b}"));
    }
    if let Some(x) = str_of(e, "error") {
        s.push_str(&format!(", error: {x}"));
    }
    s.push(')');
    s
}

fn tcp_summary(e: &Value) -> String {
    let name = str_of(e, "name").map_or(String::new(), |n| format!(" ({n})"));
    let mut s = format!(
        "f{} {} {} → {}{name}",
        opt(e, "flow"),
        opt(e, "phase"),
        opt(e, "src"),
        opt(e, "dst")
    );
    if str_of(e, "phase") == Some("close") {
        s.push_str(&format!(
            ": {}, {} up, {} down, {} ms, {}",
            opt(e, "protocol"),
            fmt_bytes(u64_of(e, "bytes_up").unwrap_or_default()),
            fmt_bytes(u64_of(e, "bytes_down").unwrap_or_default()),
            opt(e, "duration_ms"),
            opt(e, "close_reason")
        ));
    }
    s
}

//! Reading fields of guest-written records: the names of enum values, the writer's timestamps,
//! fingerprints in free text, hosts and ports. Pure, total functions.

use serde::Serialize;
use std::net::SocketAddr;

/// The name a unit enum value is written under (`create`, `unsupported_type` …).
pub(super) fn name_of(value: impl Serialize) -> String {
    // A unit variant serializes to a JSON string of plain snake_case or upper-case letters.
    serde_json::to_string(&value)
        .map(|s| s.trim_matches('"').to_owned())
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
pub(super) fn split_addr(s: &str) -> (String, Option<u16>) {
    match s.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_string(), Some(a.port())),
        Err(_) => (s.to_owned(), None),
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

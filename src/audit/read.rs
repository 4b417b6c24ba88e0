//! Reading an audit log back: one typed [`Record`] per line, streamed.
//!
//! Owns the read side of the schema in [`super::events`]: [`records`] yields each line as a
//! `Result<Record, LineError>`, so a caller can count torn or unparseable lines instead of
//! failing the whole log; [`read_log`] collects them for callers that want everything in memory.
//! Unknown `kind`s become [`EventBody::Unknown`] and unknown fields are ignored, so an old reader
//! survives a newer log. Memory is bounded by one line ([`MAX_LINE_BYTES`]), not by the log.
//! Does not own: the writer (`super::AuditLog`) or what readers make of the events.

use super::{EventBody, RunId};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// Longest line the reader accepts; a longer one is skipped as [`LineError::TooLong`]. Bodies are
/// capped by `--capture-bytes` when written, so only a corrupt file comes near it.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// One line of the log: the writer's envelope plus the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Schema version ([`super::SCHEMA_VERSION`] when written by this build).
    pub v: u32,
    /// 1-based, contiguous within a run (a `gap` record accounts for lost events).
    pub seq: u64,
    /// RFC 3339 UTC timestamp.
    pub ts: String,
    pub run: RunId,
    #[serde(flatten)]
    pub body: EventBody,
    /// For [`EventBody::Unknown`]: the record as read, so a reader can still name and show
    /// it. Filled in by [`Records`]; never serialized.
    #[serde(skip)]
    pub unknown: Option<UnknownRecord>,
}

impl Record {
    /// The record's `kind` as written, also for kinds this build does not know.
    pub fn kind(&self) -> &str {
        match (&self.body, &self.unknown) {
            (EventBody::Unknown, Some(u)) => &u.kind,
            (body, _) => body.kind(),
        }
    }
}

/// A record of a kind this build does not know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnknownRecord {
    /// Its `kind` (empty when it had none).
    pub kind: String,
    /// The whole line as JSON, for display only.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

/// The log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("open audit log {path}: {source}")]
pub struct OpenLog {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One line that did not yield a [`Record`]; reading goes on with the next line.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("read audit log line {line}: {source}")]
    Read {
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("parse audit log line {line}: {source}")]
    Parse {
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    /// The last line has no newline and does not parse: the writer was stopped mid-line.
    #[error("audit log line {line} is torn (no newline at end of file)")]
    Torn { line: u64 },
    #[error("audit log line {line} is over {MAX_LINE_BYTES} bytes")]
    TooLong { line: u64 },
}

impl LineError {
    /// The 1-based line number the error is about.
    pub fn line(&self) -> u64 {
        match self {
            LineError::Read { line, .. }
            | LineError::Parse { line, .. }
            | LineError::Torn { line }
            | LineError::TooLong { line } => *line,
        }
    }
}

/// Streams the records of the log at `path`, one line at a time.
///
/// A log is never opened through a symlink (`O_NOFOLLOW`): the folders read may be a
/// collected tree that others can write to, and a link swapped in after the tree was walked
/// must not make idagent read a file outside it. idagent writes its logs as regular files.
pub fn records(path: &Path) -> Result<Records<BufReader<File>>, OpenLog> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| OpenLog {
            path: path.to_owned(),
            source,
        })?;
    Ok(Records::new(BufReader::new(file)))
}

/// Iterator over the lines of a log (see [`records`]); blank lines are skipped.
#[derive(Debug)]
pub struct Records<R> {
    reader: R,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Records<R> {
    /// Reads records from any buffered reader (a file, or bytes in a test).
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    /// The 1-based line number of the item last returned (0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Drops the rest of an over-long line; returns whether a newline ended it.
    fn skip_rest_of_line(&mut self) -> std::io::Result<bool> {
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(false);
            }
            if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
                self.reader.consume(i + 1);
                return Ok(true);
            }
            let n = chunk.len();
            self.reader.consume(n);
        }
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<Record, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            self.line += 1;
            let line = self.line;
            let limit = MAX_LINE_BYTES as u64 + 1;
            let read =
                std::io::Read::take(&mut self.reader, limit).read_until(b'\n', &mut self.buf);
            match read {
                Err(source) => {
                    self.done = true;
                    return Some(Err(LineError::Read { line, source }));
                }
                Ok(0) => self.done = true,
                Ok(_) => {
                    let ended = self.buf.last() == Some(&b'\n');
                    if !ended && self.buf.len() > MAX_LINE_BYTES {
                        match self.skip_rest_of_line() {
                            Ok(true) => {}
                            Ok(false) => self.done = true,
                            Err(source) => {
                                self.done = true;
                                return Some(Err(LineError::Read { line, source }));
                            }
                        }
                        return Some(Err(LineError::TooLong { line }));
                    }
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(match serde_json::from_slice::<Record>(&self.buf) {
                        Ok(mut record) => {
                            if matches!(record.body, EventBody::Unknown) {
                                record.unknown = Some(unknown_record(&self.buf));
                            }
                            Ok(record)
                        }
                        Err(_) if !ended => Err(LineError::Torn { line }),
                        Err(source) => Err(LineError::Parse { line, source }),
                    });
                }
            }
        }
        None
    }
}

fn unknown_record(line: &[u8]) -> UnknownRecord {
    let raw: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line).unwrap_or_default();
    let kind = raw
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    UnknownRecord { kind, raw }
}

/// A whole log in memory: the records that parsed and the lines that did not.
#[derive(Debug, Default)]
pub struct LogRead {
    pub records: Vec<Record>,
    pub errors: Vec<LineError>,
}

/// Reads the whole log at `path` (for small logs and tests; the report streams [`records`]).
pub fn read_log(path: &Path) -> Result<LogRead, OpenLog> {
    let mut out = LogRead::default();
    for item in records(path)? {
        match item {
            Ok(record) => out.records.push(record),
            Err(e) => out.errors.push(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Result<Record, LineError>> {
        Records::new(text.as_bytes()).collect()
    }

    const RUN: &str = r#""v":1,"ts":"2025-01-01T00:00:00Z","run":"r1""#;

    #[test]
    fn known_unknown_bad_and_torn_lines() {
        let text = format!(
            "{{{RUN},\"seq\":1,\"kind\":\"notice\",\"what\":\"w\",\"detail\":\"d\",\"new\":7}}\n\
             \n\
             {{{RUN},\"seq\":2,\"kind\":\"from_the_future\",\"x\":{{\"y\":1}}}}\n\
             not json\n\
             {{{RUN},\"seq\":4,\"kind\":\"gap\",\"dropped\":3,\"reason\":\"r\"}}\n\
             {{{RUN},\"seq\":5,\"kind\":\"no"
        );
        let items = read(&text);
        assert_eq!(items.len(), 5, "{items:?}");
        match &items[0] {
            Ok(Record {
                seq: 1,
                body: EventBody::Notice(n),
                ..
            }) => assert_eq!(n.what, "w"),
            other => panic!("{other:?}"),
        }
        match &items[1] {
            Ok(Record {
                seq: 2,
                body: EventBody::Unknown,
                unknown: Some(u),
                ..
            }) => {
                assert_eq!(u.kind, "from_the_future");
                assert_eq!(u.raw["x"]["y"], 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(items[2], Err(LineError::Parse { line: 4, .. })));
        assert!(matches!(
            items[3],
            Ok(Record {
                body: EventBody::Gap(_),
                ..
            })
        ));
        assert!(matches!(items[4], Err(LineError::Torn { line: 6 })));
    }

    #[test]
    fn last_line_without_newline_that_parses_is_kept() {
        let text = format!("{{{RUN},\"seq\":1,\"kind\":\"gap\",\"dropped\":1,\"reason\":\"r\"}}");
        let items = read(&text);
        assert!(matches!(items.as_slice(), [Ok(_)]), "{items:?}");
    }

    #[test]
    fn every_kind_round_trips() {
        use crate::audit::*;
        let bodies = vec![
            EventBody::Tcp(TcpEvent {
                flow: FlowId(3),
                phase: "close".into(),
                src: "10.0.0.2:1234".into(),
                dst: "1.2.3.4:443".into(),
                name: Some("example.com:443".into()),
                upstream: None,
                protocol: Some("tls".into()),
                bytes_up: Some(1),
                bytes_down: Some(2),
                duration_ms: Some(3),
                close_reason: None,
                first_bytes_up: None,
                first_bytes_down: None,
            }),
            EventBody::Blocked(BlockedEvent {
                what: "udp".into(),
                target: "1.1.1.1:53".into(),
                reason: "r".into(),
                flow: None,
                name: Some("one.example".into()),
                datagrams: Some(5),
                quic_dcid: Some("0a0b".into()),
                repeat: Repeat {
                    repeated: Some(3),
                    first_ts: Some("2026-01-01T00:00:00Z".into()),
                    last_ts: Some("2026-01-01T00:00:01Z".into()),
                },
            }),
            EventBody::Decision(DecisionEvent {
                layer: "exec".into(),
                verdict: "deny".into(),
                mode: "enforce".into(),
                rule: "default-deny".into(),
                would_deny: false,
                enforced_by: Some("landlock".into()),
                request: DecisionRequest {
                    path: Some("/bin/sh".into()),
                    argv: vec!["sh".into()],
                    ..Default::default()
                },
                flow: None,
                pid: Some(7),
            }),
            EventBody::RunEnd(RunEnd {
                counts: [("tcp".to_string(), 2)].into_iter().collect(),
                ..Default::default()
            }),
            EventBody::Ws(crate::audit::WsEvent {
                flow: crate::audit::FlowId(4),
                direction: "up".into(),
                opcode: "close".into(),
                size: 5,
                sha256: "ab".into(),
                first: "bye".into(),
                compressed: true,
                compressed_size: Some(9),
                inflate: Some(crate::audit::WsInflate::Done),
                inflated_size: None,
                code: Some(1000),
                credentials: vec!["sha256:12".into()],
            }),
            EventBody::ExecRan(ExecRanEvent {
                pid: 9,
                requested: "/usr/bin/true".into(),
                ran: Some("/usr/bin/false".into()),
                argv: vec!["flip".into()],
                argv_truncated: false,
                interpreter: false,
                mismatch: true,
                source: "seccomp".into(),
                unconfirmed: None,
            }),
            EventBody::Exit(ExitEvent {
                pid: 9,
                code: Some(3),
                signal: None,
                exe: Some("/usr/bin/dash".into()),
                source: Some("seccomp".into()),
            }),
            EventBody::File(FileEvent {
                op: FileOp::OpenWrite,
                path: "/etc/x".into(),
                requested: Some("/tmp/workspace/e/x".into()),
                outcome: Outcome::Denied,
                errno: Some("EROFS".into()),
                size: None,
                sha256: None,
                from: None,
                pid: Some(9),
                exe: None,
                syscall: Some("openat".into()),
                node: Default::default(),
            }),
            EventBody::File(FileEvent {
                op: FileOp::Create,
                path: "/tmp/workspace/s".into(),
                requested: None,
                outcome: Outcome::Ok,
                errno: None,
                size: Some(11),
                sha256: None,
                from: None,
                pid: None,
                exe: None,
                syscall: None,
                node: crate::audit::FileNode {
                    file_type: Some(crate::audit::FileType::Symlink),
                    target: Some("/etc/shadow".into()),
                    mode: None,
                },
            }),
        ];
        for body in bodies {
            let record = Record {
                v: 1,
                seq: 1,
                ts: "t".into(),
                run: serde_json::from_str("\"r\"").expect("run id"),
                body,
                unknown: None,
            };
            let line = serde_json::to_string(&record).expect("encode");
            let back: Record = serde_json::from_str(&line).expect("decode");
            let again = serde_json::to_string(&back).expect("encode again");
            assert_eq!(line, again);
        }
        // An old reader's view: a log without the new fields still reads.
        let old = format!(
            "{{{RUN},\"seq\":1,\"kind\":\"exit\",\"pid\":2,\"code\":0}}\n\
             {{{RUN},\"seq\":2,\"kind\":\"file\",\"op\":\"open_write\",\"path\":\"/x\",\
             \"outcome\":\"denied\"}}\n"
        );
        for item in read(&old) {
            match item.expect("old line reads").body {
                EventBody::Exit(e) => assert_eq!(e.source, None),
                EventBody::File(f) => assert_eq!(f.requested, None),
                other => panic!("{other:?}"),
            }
        }
    }
}

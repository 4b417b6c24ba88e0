//! DNS messages from and to the guest: pure functions over bytes (hickory-proto's codec).
//!
//! Owns parsing one query ([`parse_query`]), building every response idagent sends
//! ([`build_response`], [`build_error`]) and TCP length framing. It does not decide answers
//! (`upstream::resolve_policy`) and does no I/O. Guest bytes never panic: every failure is a
//! [`DnsError`] that says whether and how to reply.

use hickory_proto::op::{Message, MessageType, OpCode, Query as Question, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Largest query accepted (legitimate queries, EDNS options included, are a few hundred bytes).
pub const MAX_QUERY_BYTES: usize = 4096;
/// Longest query name accepted, in presentation form without the trailing dot.
pub const MAX_NAME_CHARS: usize = 253;
/// Address records per response. With name compression 8 AAAA records after a maximal
/// question still fit the classic 512-byte UDP limit, so responses never need truncation.
pub const MAX_ANSWERS: usize = 8;
/// TTL of every answer: short, so a guest does not cache past the run's table.
pub const ANSWER_TTL_SECS: u32 = 5;

const HEADER_LEN: usize = 12;

/// A parsed guest query (exactly one question).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Lowercase presentation form without the trailing dot (`""` for the root).
    pub name: String,
    pub qtype: RecordType,
    pub qclass: DNSClass,
    pub recursion_desired: bool,
    /// The question as sent (case preserved), echoed in the response.
    question: Question,
}

impl Query {
    /// The question name exactly as the guest sent it (fully qualified).
    pub fn wire_name(&self) -> &Name {
        self.question.name()
    }
}

/// Response codes idagent sends, with their audit names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rcode {
    #[serde(rename = "NOERROR")]
    NoError,
    #[serde(rename = "FORMERR")]
    FormErr,
    #[serde(rename = "SERVFAIL")]
    ServFail,
    #[serde(rename = "NXDOMAIN")]
    NxDomain,
    #[serde(rename = "NOTIMP")]
    NotImp,
    #[serde(rename = "REFUSED")]
    Refused,
}

impl Rcode {
    /// The conventional name (`NOERROR`, `NXDOMAIN` …).
    pub fn as_str(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
        }
    }

    fn code(self) -> ResponseCode {
        match self {
            Rcode::NoError => ResponseCode::NoError,
            Rcode::FormErr => ResponseCode::FormErr,
            Rcode::ServFail => ResponseCode::ServFail,
            Rcode::NxDomain => ResponseCode::NXDomain,
            Rcode::NotImp => ResponseCode::NotImp,
            Rcode::Refused => ResponseCode::Refused,
        }
    }
}

/// What to answer a parsed query with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with the addresses matching the question type (A: IPv4, AAAA: IPv6), at most
    /// [`MAX_ANSWERS`]; none left means an empty NOERROR ("no data").
    Addresses(Vec<IpAddr>),
    NxDomain,
    ServFail,
    Refused,
}

impl Answer {
    /// The response code this answer carries.
    pub fn rcode(&self) -> Rcode {
        match self {
            Answer::Addresses(_) => Rcode::NoError,
            Answer::NxDomain => Rcode::NxDomain,
            Answer::ServFail => Rcode::ServFail,
            Answer::Refused => Rcode::Refused,
        }
    }
}

/// Why a packet is not a query idagent answers normally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("dns message of {len} bytes is shorter than a header")]
    TooShort { len: usize },
    #[error("dns message {id:#06x} of {len} bytes exceeds {MAX_QUERY_BYTES}")]
    TooLong { id: u16, len: usize },
    #[error("dns message {id:#06x} is a response, not a query")]
    NotAQuery { id: u16 },
    #[error("dns message {id:#06x} has unsupported opcode {opcode}")]
    UnsupportedOpcode { id: u16, opcode: u8 },
    #[error("malformed dns query {id:#06x}: {reason}")]
    Malformed { id: u16, reason: String },
    #[error("dns query {id:#06x} has {count} questions, expected 1")]
    QuestionCount { id: u16, count: usize },
    #[error("dns query {id:#06x} for {name:?} has unsupported class {class}")]
    UnsupportedClass { id: u16, name: String, class: u16 },
    #[error("dns query {id:#06x} name of {len} characters exceeds {MAX_NAME_CHARS}")]
    NameTooLong { id: u16, len: usize },
}

impl DnsError {
    /// The id and code of the error response to send, `None` to drop silently (no id to
    /// answer, or a response: answering responses invites loops).
    pub fn reply(&self) -> Option<(u16, Rcode)> {
        match self {
            DnsError::TooShort { .. } | DnsError::NotAQuery { .. } => None,
            DnsError::TooLong { id, .. }
            | DnsError::Malformed { id, .. }
            | DnsError::QuestionCount { id, .. } => Some((*id, Rcode::FormErr)),
            DnsError::UnsupportedOpcode { id, .. } => Some((*id, Rcode::NotImp)),
            DnsError::UnsupportedClass { id, .. } | DnsError::NameTooLong { id, .. } => {
                Some((*id, Rcode::Refused))
            }
        }
    }
}

/// Parses one guest query. Checked header reads come first, so a response, an oversized
/// message or a wrong opcode is classified without running the full decoder.
pub fn parse_query(packet: &[u8]) -> Result<Query, DnsError> {
    let header = packet
        .get(..HEADER_LEN)
        .ok_or(DnsError::TooShort { len: packet.len() })?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let flags = header[2];
    if flags & 0x80 != 0 {
        return Err(DnsError::NotAQuery { id });
    }
    if packet.len() > MAX_QUERY_BYTES {
        return Err(DnsError::TooLong {
            id,
            len: packet.len(),
        });
    }
    let opcode = (flags >> 3) & 0x0f;
    if opcode != 0 {
        return Err(DnsError::UnsupportedOpcode { id, opcode });
    }
    let message = Message::from_vec(packet).map_err(|e| DnsError::Malformed {
        id,
        reason: e.to_string(),
    })?;
    let question = match message.queries() {
        [one] => one.clone(),
        other => {
            return Err(DnsError::QuestionCount {
                id,
                count: other.len(),
            })
        }
    };
    let text = question.name().to_lowercase().to_ascii();
    let name = text.strip_suffix('.').unwrap_or(&text).to_string();
    if name.len() > MAX_NAME_CHARS {
        return Err(DnsError::NameTooLong {
            id,
            len: name.len(),
        });
    }
    let qclass = question.query_class();
    if qclass != DNSClass::IN {
        return Err(DnsError::UnsupportedClass {
            id,
            name,
            class: u16::from(qclass),
        });
    }
    Ok(Query {
        id,
        name,
        qtype: question.query_type(),
        qclass,
        recursion_desired: message.recursion_desired(),
        question,
    })
}

/// The response to `query`: question echoed, RD copied, RA set, answers per [`Answer`].
pub fn build_response(query: &Query, answer: &Answer) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(query.id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(query.recursion_desired)
        .set_recursion_available(true)
        .set_response_code(answer.rcode().code())
        .add_query(query.question.clone());
    if let Answer::Addresses(addrs) = answer {
        let owner = query.question.name().clone();
        let records = addresses_for(query.qtype, addrs).into_iter().map(|addr| {
            let rdata = match addr {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            Record::from_rdata(owner.clone(), ANSWER_TTL_SECS, rdata)
        });
        message.add_answers(records);
    }
    message
        .to_vec()
        .unwrap_or_else(|_| build_error(query.id, Rcode::ServFail))
}

/// The addresses a `qtype` question can carry (A: IPv4, AAAA: IPv6, other types: none),
/// at most [`MAX_ANSWERS`], in order.
pub fn addresses_for(qtype: RecordType, addrs: &[IpAddr]) -> Vec<IpAddr> {
    addrs
        .iter()
        .filter(|addr| {
            matches!(
                (qtype, addr),
                (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_))
            )
        })
        .take(MAX_ANSWERS)
        .copied()
        .collect()
}

/// A header-only error response (no question section, which RFC 1035 permits).
pub fn build_error(id: u16, rcode: Rcode) -> Vec<u8> {
    let mut bytes = vec![0u8; HEADER_LEN];
    bytes[..2].copy_from_slice(&id.to_be_bytes());
    // QR=1, opcode QUERY; RA=1 and the 4-bit rcode in the low nibble of byte 3.
    bytes[2] = 0x80;
    bytes[3] = 0x80 | (u16::from(rcode.code()) & 0x0f) as u8;
    bytes
}

/// A message does not fit TCP DNS's 16-bit length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("dns message of {len} bytes is too long for tcp framing")]
pub struct FrameTooLong {
    pub len: usize,
}

/// Splits a TCP stream buffer into complete length-prefixed messages; returns them and how
/// many bytes they used (the rest is an incomplete message, to keep for the next read).
pub fn split_tcp_messages(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut messages = Vec::new();
    let mut consumed = 0;
    while let Some(prefix) = buf.get(consumed..consumed + 2) {
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        let Some(message) = buf.get(consumed + 2..consumed + 2 + len) else {
            break;
        };
        messages.push(message);
        consumed += 2 + len;
    }
    (messages, consumed)
}

/// `msg` with its two-byte TCP length prefix.
pub fn frame_tcp(msg: &[u8]) -> Result<Vec<u8>, FrameTooLong> {
    let len = u16::try_from(msg.len()).map_err(|_| FrameTooLong { len: msg.len() })?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    Ok(framed)
}

#[cfg(test)]
pub(super) mod tests;

//! Tests of DNS parsing, response building and TCP framing, on queries built with hickory.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A query as a stub resolver sends it.
pub(crate) fn query_bytes(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Question::query(
            Name::from_ascii(name).expect("test name parses"),
            qtype,
        ));
    m.to_vec().expect("test query encodes")
}

fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).expect("our response decodes")
}

#[test]
fn parses_a_real_query() {
    let q = parse_query(&query_bytes(0x1234, "Api.OpenAI.com.", RecordType::AAAA)).expect("parses");
    assert_eq!(q.id, 0x1234);
    assert_eq!(q.name, "api.openai.com");
    assert_eq!(q.qtype, RecordType::AAAA);
    assert_eq!(q.qclass, DNSClass::IN);
    assert!(q.recursion_desired);
    assert_eq!(q.wire_name().to_ascii(), "Api.OpenAI.com.");
    let root = parse_query(&query_bytes(1, ".", RecordType::NS)).expect("parses");
    assert_eq!(root.name, "");
}

#[test]
fn parse_errors_are_typed() {
    let good = query_bytes(0xbeef, "a.test.", RecordType::A);
    assert_eq!(parse_query(&[]), Err(DnsError::TooShort { len: 0 }));
    assert_eq!(
        parse_query(&good[..11]),
        Err(DnsError::TooShort { len: 11 })
    );

    let mut response = good.clone();
    response[2] |= 0x80;
    assert_eq!(
        parse_query(&response),
        Err(DnsError::NotAQuery { id: 0xbeef })
    );
    assert_eq!(DnsError::NotAQuery { id: 1 }.reply(), None);

    let mut notify = good.clone();
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    let err = parse_query(&notify).expect_err("notify");
    assert_eq!(
        err,
        DnsError::UnsupportedOpcode {
            id: 0xbeef,
            opcode: 4
        }
    );
    assert_eq!(err.reply(), Some((0xbeef, Rcode::NotImp)));

    let mut big = good.clone();
    big.resize(MAX_QUERY_BYTES + 1, 0);
    let err = parse_query(&big).expect_err("oversized");
    assert_eq!(err.reply(), Some((0xbeef, Rcode::FormErr)));

    // Header claims one question, body is cut.
    let err = parse_query(&good[..good.len() - 2]).expect_err("truncated");
    assert!(
        matches!(err, DnsError::Malformed { id: 0xbeef, .. }),
        "{err:?}"
    );
    assert_eq!(err.reply(), Some((0xbeef, Rcode::FormErr)));

    let mut two = Message::from_vec(&good).expect("decodes");
    two.add_query(Question::query(
        Name::from_str("b.test.").expect("name"),
        RecordType::A,
    ));
    let err = parse_query(&two.to_vec().expect("encodes")).expect_err("two questions");
    assert_eq!(
        err,
        DnsError::QuestionCount {
            id: 0xbeef,
            count: 2
        }
    );
    assert_eq!(err.reply(), Some((0xbeef, Rcode::FormErr)));

    let mut none = good.clone();
    none.truncate(HEADER_LEN);
    none[5] = 0;
    assert_eq!(
        parse_query(&none),
        Err(DnsError::QuestionCount {
            id: 0xbeef,
            count: 0
        })
    );

    let mut chaos = Message::new();
    let mut q = Question::query(
        Name::from_str("version.bind.").expect("name"),
        RecordType::TXT,
    );
    q.set_query_class(DNSClass::CH);
    chaos.set_id(7).add_query(q);
    let err = parse_query(&chaos.to_vec().expect("encodes")).expect_err("chaos");
    assert!(
        matches!(
            err,
            DnsError::UnsupportedClass {
                id: 7,
                class: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.reply(), Some((7, Rcode::Refused)));
}

#[test]
fn builds_address_answers() {
    let q = parse_query(&query_bytes(9, "Mapped.Test.", RecordType::A)).expect("parses");
    let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x77, 0xffff, 0, 0, 0, 0, 1));
    let bytes = build_response(&q, &Answer::Addresses(vec![v4, v6]));
    let m = decode(&bytes);
    assert_eq!(m.id(), 9);
    assert_eq!(m.message_type(), MessageType::Response);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.recursion_desired() && m.recursion_available());
    assert_eq!(m.queries()[0].name().to_ascii(), "Mapped.Test.");
    assert_eq!(m.answers().len(), 1, "only the A record for an A question");
    assert_eq!(m.answers()[0].ttl(), ANSWER_TTL_SECS);
    assert_eq!(
        m.answers()[0].data(),
        &RData::A(A(Ipv4Addr::new(198, 18, 0, 1)))
    );

    let q6 = parse_query(&query_bytes(10, "mapped.test.", RecordType::AAAA)).expect("parses");
    let m = decode(&build_response(&q6, &Answer::Addresses(vec![v4, v6])));
    assert_eq!(m.answers().len(), 1);
    assert!(matches!(m.answers()[0].data(), RData::AAAA(_)));

    // AAAA for a v4-only name: empty NOERROR.
    let m = decode(&build_response(&q6, &Answer::Addresses(vec![v4])));
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
}

#[test]
fn builds_negative_answers() {
    let q = parse_query(&query_bytes(11, "x.test.", RecordType::A)).expect("parses");
    for (answer, code) in [
        (Answer::NxDomain, ResponseCode::NXDomain),
        (Answer::ServFail, ResponseCode::ServFail),
        (Answer::Refused, ResponseCode::Refused),
    ] {
        let m = decode(&build_response(&q, &answer));
        assert_eq!((m.id(), m.response_code()), (11, code));
        assert_eq!(m.queries().len(), 1);
        assert!(m.answers().is_empty());
    }
    for rcode in [
        Rcode::FormErr,
        Rcode::NotImp,
        Rcode::Refused,
        Rcode::ServFail,
    ] {
        let m = decode(&build_error(0xabcd, rcode));
        assert_eq!(m.id(), 0xabcd);
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.response_code(), rcode.code());
        assert!(m.queries().is_empty());
    }
}

#[test]
fn largest_response_fits_udp() {
    let label = "a".repeat(63);
    let name = format!("{label}.{label}.{label}.{}.", "b".repeat(61));
    let q = parse_query(&query_bytes(1, &name, RecordType::AAAA)).expect("parses");
    let addrs: Vec<IpAddr> = (0..20u16)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)))
        .collect();
    let bytes = build_response(&q, &Answer::Addresses(addrs));
    assert!(bytes.len() <= 512, "{} bytes", bytes.len());
    assert_eq!(decode(&bytes).answers().len(), MAX_ANSWERS);
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn prefixes_and_mutations_never_panic() {
    let seeds = [
        query_bytes(0x0102, "api.openai.com.", RecordType::A),
        query_bytes(0x0304, "x.y.z.example.", RecordType::AAAA),
        query_bytes(0x0506, ".", RecordType::HTTPS),
    ];
    for seed in &seeds {
        for cut in 0..=seed.len() {
            let _ = parse_query(&seed[..cut]);
        }
    }
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..20_000 {
        let seed = &seeds[(next(&mut state) % seeds.len() as u64) as usize];
        let mut packet = seed.clone();
        for _ in 0..=(next(&mut state) % 4) {
            let at = (next(&mut state) % packet.len() as u64) as usize;
            match next(&mut state) % 3 {
                0 => packet[at] = next(&mut state) as u8,
                1 => packet.insert(at, next(&mut state) as u8),
                _ => {
                    packet.remove(at);
                }
            }
            if packet.is_empty() {
                break;
            }
        }
        if let Ok(q) = parse_query(&packet) {
            let _ = build_response(
                &q,
                &Answer::Addresses(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            );
        }
    }
}

#[test]
fn tcp_framing_round_trip() {
    let a = query_bytes(1, "a.test.", RecordType::A);
    let b = query_bytes(2, "b.test.", RecordType::AAAA);
    let mut stream = frame_tcp(&a).expect("fits");
    stream.extend(frame_tcp(&b).expect("fits"));
    stream.extend(frame_tcp(&[]).expect("fits"));
    let full = stream.len();
    stream.extend_from_slice(&[0x00, 0x10, 0xaa]);
    let (messages, consumed) = split_tcp_messages(&stream);
    assert_eq!(messages, vec![&a[..], &b[..], &[][..]]);
    assert_eq!(consumed, full);
    for cut in 0..stream.len() {
        let (msgs, used) = split_tcp_messages(&stream[..cut]);
        assert!(used <= cut);
        assert_eq!(msgs.iter().map(|m| m.len() + 2).sum::<usize>(), used);
    }
    assert_eq!(split_tcp_messages(&[0x00]), (Vec::new(), 0));
    assert_eq!(
        frame_tcp(&vec![0u8; 65_536]),
        Err(FrameTooLong { len: 65_536 })
    );
}

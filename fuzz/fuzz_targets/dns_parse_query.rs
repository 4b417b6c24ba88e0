//! `idagent::dns::parse_query` over one guest DNS message (a UDP payload or a de-framed TCP
//! message). When it parses, both empty answers are built (NOERROR "no data" and NXDOMAIN) and
//! the response must echo the query: same id, QR set, RD copied, the rcode of the answer, the
//! question the guest asked. Errors must map to a consistent reply.
#![no_main]

use idagent::dns::{
    build_error, build_response, parse_query, Answer, DnsError, Rcode, MAX_NAME_CHARS,
    MAX_QUERY_BYTES,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let query = match parse_query(data) {
        Ok(query) => query,
        Err(err) => {
            check_error(data, &err);
            return;
        }
    };
    assert_eq!(query.id, u16::from_be_bytes([data[0], data[1]]));
    assert!(query.name.len() <= MAX_NAME_CHARS);
    for answer in [Answer::Addresses(Vec::new()), Answer::NxDomain] {
        let response = build_response(&query, &answer);
        assert!(response.len() >= 12, "response shorter than a header");
        assert_eq!(&response[..2], &data[..2], "id not echoed");
        assert_ne!(response[2] & 0x80, 0, "QR not set");
        assert_eq!(response[2] & 0x01, data[2] & 0x01, "RD not copied");
        let rcode = match answer {
            Answer::NxDomain => 3,
            _ => 0,
        };
        assert_eq!(response[3] & 0x0f, rcode, "{answer:?}");
        // A SERVFAIL header-only fallback means the question could not be re-encoded; anything
        // else must carry exactly the one question, and no answers (both answers are empty).
        let servfail_fallback = response == build_error(query.id, Rcode::ServFail);
        if !servfail_fallback {
            assert_eq!(&response[4..6], &[0, 1], "qdcount");
            assert_eq!(&response[6..8], &[0, 0], "ancount");
            // The response is a well-formed message; as a query (QR cleared) it parses back to
            // the same question.
            let mut back = response.clone();
            back[2] &= 0x7f;
            back[3] &= 0xf0;
            if back.len() <= MAX_QUERY_BYTES {
                let again = parse_query(&back).expect("own response parses back as a query");
                assert_eq!(again.name, query.name);
                assert_eq!(again.qtype, query.qtype);
                assert_eq!(again.qclass, query.qclass);
            }
        }
    }
});

fn check_error(data: &[u8], err: &DnsError) {
    match err {
        DnsError::TooShort { len } => assert!(*len == data.len() && data.len() < 12),
        DnsError::NotAQuery { .. } => assert_ne!(data[2] & 0x80, 0),
        DnsError::TooLong { len, .. } => assert!(*len > MAX_QUERY_BYTES),
        _ => {}
    }
    if let Some((id, _)) = err.reply() {
        assert_eq!(id, u16::from_be_bytes([data[0], data[1]]));
    }
}

//! Tests of [`DnsService`]: the mapped and offline paths, and the resolver path against a fake
//! UDP server on 127.0.0.1 (nothing leaves the machine).

use super::wire::tests::query_bytes;
use super::*;
use crate::upstream::UpstreamMap;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::xfer::Protocol;
use hickory_resolver::config::NameServerConfig;
use std::net::{Ipv4Addr, SocketAddr};

fn policy(offline: bool) -> Policy {
    Policy {
        offline,
        allow_private: false,
        map: UpstreamMap::from_entries(["api.openai.com=127.0.0.1:8443"]).expect("map parses"),
    }
}

fn offline_service() -> DnsService {
    DnsService::new(policy(true)).expect("offline needs no resolv.conf")
}

/// An online service whose resolver points at `server` (a closed port when never asked).
fn online_service(server: SocketAddr) -> DnsService {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
    DnsService::with_resolver_config(policy(false), config)
}

fn response(outcome: &DnsOutcome) -> Message {
    Message::from_vec(outcome.response.as_deref().expect("a reply")).expect("reply decodes")
}

#[tokio::test]
async fn offline_mapped_names_get_stable_synthetic_addresses() {
    let dns = offline_service();
    let a = dns
        .answer(&query_bytes(1, "API.openai.com.", RecordType::A))
        .await;
    assert_eq!(a.event.source, DnsSource::Mapped);
    assert_eq!(a.event.rcode, Some(Rcode::NoError));
    assert_eq!(a.event.answers, vec!["198.18.0.1".to_string()]);
    assert_eq!(a.event.name, "api.openai.com");
    assert_eq!(a.event.qtype, "A");
    let m = response(&a);
    assert_eq!(m.id(), 1);
    assert_eq!(m.answers().len(), 1);

    let aaaa = dns
        .answer(&query_bytes(2, "api.openai.com.", RecordType::AAAA))
        .await;
    assert_eq!(aaaa.event.answers, vec!["fd00:77:ffff::1".to_string()]);
    let again = dns
        .answer(&query_bytes(3, "api.openai.com.", RecordType::A))
        .await;
    assert_eq!(again.event.answers, a.event.answers);

    let names = dns.names();
    let table = names.lock().expect("not poisoned");
    assert_eq!(
        table.name_of("198.18.0.1".parse().expect("ip")),
        Some("api.openai.com")
    );
    assert_eq!(table.synthetic_len(), 1);
}

#[tokio::test]
async fn offline_unmapped_is_nxdomain_and_says_why() {
    let dns = offline_service();
    let out = dns
        .answer(&query_bytes(4, "example.com.", RecordType::A))
        .await;
    assert_eq!(response(&out).response_code(), ResponseCode::NXDomain);
    assert_eq!(out.event.rcode, Some(Rcode::NxDomain));
    assert_eq!(out.event.source, DnsSource::Refused);
    assert_eq!(out.event.blocked, Some(DnsBlock::Offline));
    let json = serde_json::to_value(&out.event).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "name": "example.com", "qtype": "A", "rcode": "NXDOMAIN", "answers": [],
            "source": "refused", "blocked": "offline"
        })
    );
}

#[tokio::test]
async fn mapped_name_other_type_is_empty_noerror() {
    let dns = offline_service();
    let out = dns
        .answer(&query_bytes(5, "api.openai.com.", RecordType::HTTPS))
        .await;
    let m = response(&out);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    assert_eq!(out.event.qtype, "HTTPS");
    assert!(out.event.answers.is_empty());
}

#[tokio::test]
async fn online_unsupported_type_and_busy_never_reach_the_resolver() {
    // Port 9 on loopback: nothing listens, and neither query may be sent there anyway.
    let dns = online_service("127.0.0.1:9".parse().expect("addr")).with_max_inflight(0);
    let out = dns
        .answer(&query_bytes(6, "example.com.", RecordType::TXT))
        .await;
    assert_eq!(out.event.rcode, Some(Rcode::Refused));
    assert_eq!(out.event.blocked, Some(DnsBlock::UnsupportedType));
    let out = dns
        .answer(&query_bytes(7, "example.com.", RecordType::A))
        .await;
    assert_eq!(out.event.rcode, Some(Rcode::ServFail));
    assert_eq!(out.event.source, DnsSource::Resolver);
    assert_eq!(out.event.blocked, Some(DnsBlock::Busy));
    // Mapped names are still answered online, without the resolver.
    let out = dns
        .answer(&query_bytes(8, "api.openai.com.", RecordType::A))
        .await;
    assert_eq!(out.event.source, DnsSource::Mapped);
}

#[tokio::test]
async fn invalid_packets_get_formerr_or_nothing() {
    let dns = offline_service();
    let out = dns.answer(&[0xab, 0xcd, 0x01]).await;
    assert_eq!(out.response, None);
    assert_eq!(out.event.source, DnsSource::Invalid);
    assert_eq!(out.event.rcode, None);

    let mut cut = query_bytes(0xabcd, "a.test.", RecordType::A);
    cut.truncate(cut.len() - 3);
    let out = dns.answer(&cut).await;
    let m = response(&out);
    assert_eq!((m.id(), m.response_code()), (0xabcd, ResponseCode::FormErr));
    assert_eq!(out.event.rcode, Some(Rcode::FormErr));
    assert!(out.event.error.is_some());

    let mut reply = query_bytes(0x1111, "a.test.", RecordType::A);
    reply[2] |= 0x80;
    assert_eq!(dns.answer(&reply).await.response, None);
}

#[tokio::test]
async fn mutated_queries_never_panic_the_service() {
    let dns = offline_service();
    let seed = query_bytes(0x4242, "api.openai.com.", RecordType::A);
    let mut state = 0x1234_5678_9abc_def1_u64;
    for _ in 0..5_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut packet = seed.clone();
        let at = (state % packet.len() as u64) as usize;
        packet[at] = (state >> 32) as u8;
        packet.truncate(((state >> 40) as usize % (seed.len() + 1)).max(at));
        let _ = dns.answer(&packet).await;
    }
}

/// A one-socket fake upstream: `real.test` has 93.184.216.34, everything else is NXDOMAIN.
async fn fake_upstream() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind fake");
    let addr = socket.local_addr().expect("fake addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let Some(question) = request.queries().first().cloned() else {
                continue;
            };
            let mut reply = Message::new();
            reply
                .set_id(request.id())
                .set_message_type(MessageType::Response)
                .set_recursion_desired(request.recursion_desired())
                .set_recursion_available(true)
                .add_query(question.clone());
            if question
                .name()
                .to_ascii()
                .eq_ignore_ascii_case("real.test.")
            {
                if question.query_type() == RecordType::A {
                    reply.add_answer(Record::from_rdata(
                        question.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(93, 184, 216, 34))),
                    ));
                }
            } else {
                reply.set_response_code(ResponseCode::NXDomain);
            }
            let bytes = reply.to_vec().expect("fake reply encodes");
            let _ = socket.send_to(&bytes, peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn resolver_path_answers_and_records_real_addresses() {
    let dns = online_service(fake_upstream().await);
    let out = dns
        .answer(&query_bytes(20, "Real.Test.", RecordType::A))
        .await;
    assert_eq!(out.event.source, DnsSource::Resolver, "{:?}", out.event);
    assert_eq!(out.event.rcode, Some(Rcode::NoError), "{:?}", out.event);
    assert_eq!(out.event.answers, vec!["93.184.216.34".to_string()]);
    assert_eq!(response(&out).answers().len(), 1);
    let label = dns
        .names()
        .lock()
        .expect("not poisoned")
        .flow_label("93.184.216.34".parse().expect("ip"), 443);
    assert_eq!(label, "real.test:443");

    let out = dns
        .answer(&query_bytes(21, "real.test.", RecordType::AAAA))
        .await;
    assert_eq!(out.event.rcode, Some(Rcode::NoError), "{:?}", out.event);
    assert!(out.event.answers.is_empty());

    let out = dns
        .answer(&query_bytes(22, "missing.test.", RecordType::A))
        .await;
    assert_eq!(out.event.rcode, Some(Rcode::NxDomain), "{:?}", out.event);
    assert_eq!(out.event.source, DnsSource::Resolver);
    assert_eq!(out.event.blocked, None);
}

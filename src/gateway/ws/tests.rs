use super::deflate::tests::compress_message;
use super::*;
use flate2::{Compress, Compression};

/// Encodes one frame (what a client or server would write).
fn frame(fin: bool, rsv: u8, op: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | op];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

fn parse(deflate: bool, bytes: &[u8]) -> (Vec<Message>, Result<(), ParseWs>) {
    let mut p = Parser::new(deflate.then(SenderDeflate::default));
    let mut out = Vec::new();
    let r = p.feed(bytes, &mut out);
    (out, r)
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

#[test]
fn masked_and_unmasked_text() {
    for mask in [None, KEY] {
        let (m, r) = parse(false, &frame(true, 0, 1, mask, b"hello"));
        assert_eq!(r, Ok(()));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].opcode, Opcode::Text);
        assert_eq!(m[0].size, 5);
        assert_eq!(m[0].first, b"hello");
        assert_eq!(m[0].sha256, sha(b"hello"));
    }
}

#[test]
fn lengths_16_and_64_bit_keep_only_the_first_bytes() {
    for len in [126usize, 300, 65535, 65536, 200_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let (m, r) = parse(false, &frame(true, 0, 2, KEY, &payload));
        assert_eq!(r, Ok(()), "{len}");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].size, len as u64);
        assert_eq!(m[0].sha256, sha(&payload));
        assert_eq!(m[0].first, payload[..len.min(MAX_FIRST_BYTES)]);
    }
}

#[test]
fn fragments_reassemble_with_control_frames_between() {
    let mut wire = frame(false, 0, 1, KEY, b"hel");
    wire.extend(frame(true, 0, 9, KEY, b"are you there"));
    wire.extend(frame(false, 0, 0, KEY, b"lo "));
    wire.extend(frame(true, 0, 0xA, None, b""));
    wire.extend(frame(true, 0, 0, KEY, b"world"));
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    wire.extend(frame(true, 0, 8, KEY, &close));
    let (m, r) = parse(false, &wire);
    assert_eq!(r, Ok(()));
    let ops: Vec<_> = m.iter().map(|m| m.opcode).collect();
    assert_eq!(
        ops,
        [Opcode::Ping, Opcode::Pong, Opcode::Text, Opcode::Close]
    );
    assert_eq!(m[0].first, b"are you there");
    assert_eq!(m[2].first, b"hello world");
    assert_eq!(m[2].size, 11);
    assert_eq!(m[2].sha256, sha(b"hello world"));
    assert_eq!(m[3].close_code, Some(1000));
    assert_eq!(m[3].first, b"bye");
    assert_eq!(m[3].size, 5);
}

#[test]
fn split_at_every_byte_boundary_gives_the_same_messages() {
    let mut wire = frame(false, 0, 2, KEY, &[0u8, 1, 2, 3, 4, 5, 6]);
    wire.extend(frame(true, 0, 9, None, b"p"));
    wire.extend(frame(true, 0, 0, KEY, &[7u8; 300]));
    wire.extend(frame(true, 0, 1, None, b"x"));
    let (whole, r) = parse(false, &wire);
    assert_eq!(r, Ok(()));
    assert_eq!(whole.len(), 3);
    for cut in 0..=wire.len() {
        let mut p = Parser::new(None);
        let mut out = Vec::new();
        p.feed(&wire[..cut], &mut out).expect("first part");
        p.feed(&wire[cut..], &mut out).expect("second part");
        assert_eq!(out, whole, "cut at {cut}");
    }
    // And one byte at a time.
    let mut p = Parser::new(None);
    let mut out = Vec::new();
    for b in &wire {
        p.feed(std::slice::from_ref(b), &mut out).expect("byte");
    }
    assert_eq!(out, whole);
}

#[test]
fn over_cap_length_stops_parsing_once() {
    let mut wire = vec![0x82, 127];
    wire.extend_from_slice(&u64::MAX.to_be_bytes());
    let mut p = Parser::new(None);
    let mut out = Vec::new();
    assert_eq!(
        p.feed(&wire, &mut out),
        Err(ParseWs::FrameTooLong { len: u64::MAX })
    );
    // Later bytes, even a valid frame, are ignored without a second error.
    assert_eq!(p.feed(&frame(true, 0, 1, None, b"hi"), &mut out), Ok(()));
    assert!(out.is_empty());
}

#[test]
fn protocol_errors_are_typed() {
    let cases: [(Vec<u8>, ParseWs); 6] = [
        (frame(true, 0, 3, None, b""), ParseWs::UnknownOpcode(3)),
        (
            frame(true, 0, 0, None, b"x"),
            ParseWs::UnexpectedContinuation,
        ),
        (
            frame(true, 0b100, 1, None, b"x"),
            ParseWs::ReservedBits { bits: 0b100 },
        ),
        (frame(false, 0, 9, None, b""), ParseWs::BadControlFrame),
        (
            frame(true, 0, 9, None, &[0u8; 126]),
            ParseWs::BadControlFrame,
        ),
        (
            [
                frame(false, 0, 1, None, b"a"),
                frame(true, 0, 2, None, b"b"),
            ]
            .concat(),
            ParseWs::UnfinishedMessage,
        ),
    ];
    for (wire, want) in cases {
        assert_eq!(parse(false, &wire).1, Err(want), "{wire:02x?}");
    }
}

#[test]
fn garbage_never_panics() {
    // A cheap deterministic generator: every input errors or parses, never panics.
    let mut x: u32 = 0x1234_5678;
    for len in 0..2000 {
        let bytes: Vec<u8> = (0..len % 97)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = parse(len % 2 == 0, &bytes);
    }
    let _ = parse(false, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
}

/// "Hello", raw DEFLATE with the sync-flush tail stripped (RFC 7692 §7.2.3.1).
const HELLO_DEFLATED: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

#[test]
fn compressed_messages_are_inflated_with_the_wire_size_kept() {
    let wire = frame(true, 0b100, 1, KEY, &HELLO_DEFLATED);
    let (m, r) = parse(true, &wire);
    assert_eq!(r, Ok(()));
    assert!(m[0].compressed);
    assert_eq!(m[0].inflate, Some(Inflated::Done));
    assert_eq!(m[0].first, b"Hello");
    assert_eq!(m[0].size, 5);
    assert_eq!(m[0].sha256, sha(b"Hello"));
    assert_eq!(m[0].compressed_size, Some(7));
    assert_eq!(m[0].inflated_size, None);
}

/// A compressed message in fragments (RSV1 on the first only) with a ping between them,
/// then an uncompressed message, then one that refers back into the first (context
/// takeover): split at every byte, the same records.
#[test]
fn fragmented_compressed_messages_inflate_across_frames_and_messages() {
    let mut c = Compress::new(Compression::default(), false);
    let one = compress_message(&mut c, b"the agent said: hello hello hello");
    let two = compress_message(&mut c, b"the agent said: hello again");
    let (a, b) = one.split_at(one.len() / 2);
    let mut wire = frame(false, 0b100, 1, KEY, a);
    wire.extend(frame(true, 0, 9, KEY, b"ping"));
    wire.extend(frame(true, 0, 0, KEY, b));
    wire.extend(frame(true, 0, 1, KEY, b"plain"));
    wire.extend(frame(true, 0b100, 1, None, &two));
    let (whole, r) = parse(true, &wire);
    assert_eq!(r, Ok(()));
    let firsts: Vec<&[u8]> = whole.iter().map(|m| m.first.as_slice()).collect();
    assert_eq!(
        firsts,
        [
            &b"ping"[..],
            b"the agent said: hello hello hello",
            b"plain",
            b"the agent said: hello again"
        ]
    );
    assert_eq!(whole[1].compressed_size, Some(one.len() as u64));
    assert_eq!(whole[1].sha256, sha(b"the agent said: hello hello hello"));
    assert_eq!(whole[2].inflate, None);
    assert_eq!(whole[3].inflate, Some(Inflated::Done));
    for cut in 0..=wire.len() {
        let mut p = Parser::new(Some(SenderDeflate::default()));
        let mut out = Vec::new();
        p.feed(&wire[..cut], &mut out).expect("first part");
        p.feed(&wire[cut..], &mut out).expect("second part");
        assert_eq!(out, whole, "cut at {cut}");
    }
}

#[test]
fn no_context_takeover_messages_inflate_each_from_scratch() {
    let mut wire = Vec::new();
    for text in [&b"one one one"[..], b"one one two"] {
        let mut c = Compress::new(Compression::default(), false);
        wire.extend(frame(true, 0b100, 1, None, &compress_message(&mut c, text)));
    }
    let mut p = Parser::new(Some(SenderDeflate {
        no_context_takeover: true,
        max_window_bits: Some(10),
    }));
    let mut out = Vec::new();
    assert_eq!(p.feed(&wire, &mut out), Ok(()));
    assert_eq!(out[0].first, b"one one one");
    assert_eq!(out[1].first, b"one one two");
    assert!(out.iter().all(|m| m.inflate == Some(Inflated::Done)));
}

/// A bomb in a kept context: cut at the cap with what was inflated, then the direction
/// stops inflating (reported once); later messages keep their wire figures.
#[test]
fn a_compressed_bomb_is_cut_and_later_messages_stay_compressed() {
    let mut c = Compress::new(Compression::default(), false);
    let bomb = compress_message(&mut c, &vec![b'A'; (MAX_INFLATE_BYTES + 4096) as usize]);
    let after = compress_message(&mut c, b"after the bomb");
    let mut wire = frame(true, 0b100, 1, KEY, &bomb);
    wire.extend(frame(true, 0b100, 1, KEY, &after));
    let mut p = Parser::new(Some(SenderDeflate::default()));
    let mut out = Vec::new();
    assert_eq!(p.feed(&wire, &mut out), Ok(()));
    assert_eq!(out[0].inflate, Some(Inflated::Cut));
    assert_eq!(out[0].inflated_size, Some(MAX_INFLATE_BYTES));
    assert_eq!(out[0].size, bomb.len() as u64, "wire figures when cut");
    assert_eq!(out[0].sha256, sha(&bomb));
    assert_eq!(out[0].first, vec![b'A'; MAX_FIRST_BYTES]);
    assert_eq!(out[1].inflate, Some(Inflated::Skipped));
    assert!(out[1].first.is_empty());
    assert_eq!(out[1].sha256, sha(&after));
    assert_eq!(p.take_inflate_stop(), Some(InflateStop::ContextLost));
    assert_eq!(p.take_inflate_stop(), None);
}

#[test]
fn corrupt_compressed_data_is_logged_and_parsing_goes_on() {
    let mut wire = frame(true, 0b100, 2, KEY, &[0xff; 20]);
    wire.extend(frame(true, 0, 1, KEY, b"still parsed"));
    let (m, r) = parse(true, &wire);
    assert_eq!(r, Ok(()));
    assert_eq!(m[0].inflate, Some(Inflated::Error));
    assert_eq!(m[0].inflated_size, Some(0));
    assert_eq!(m[0].size, 20);
    assert_eq!(m[1].first, b"still parsed");
}

#[test]
fn rsv1_without_negotiation_is_still_an_error() {
    let wire = frame(true, 0b100, 1, None, &HELLO_DEFLATED);
    assert_eq!(
        parse(false, &wire).1,
        Err(ParseWs::ReservedBits { bits: 0b100 })
    );
    // And never on a control frame.
    let wire = frame(true, 0b100, 9, None, b"");
    assert_eq!(
        parse(true, &wire).1,
        Err(ParseWs::ReservedBits { bits: 0b100 })
    );
}

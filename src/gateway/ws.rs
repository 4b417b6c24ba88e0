//! WebSocket (RFC 6455) frames → messages, sans-IO: the `Upgrade` relay in `http.rs` feeds
//! each direction's bytes to one [`Parser`] and writes one `ws` audit event per message.
//!
//! Owns: frame headers (FIN, RSV, opcode, 7/16/64-bit lengths, the mask), reassembling a
//! fragmented message (size and a streaming sha256 over the whole message, the first
//! [`MAX_FIRST_BYTES`] kept), control frames (close/ping/pong, also between the fragments of a
//! data message) as messages of their own. The parser only observes: the relay forwards every
//! byte whatever the parser thinks of it, and after a [`ParseWs`] error that direction is
//! no longer parsed (the caller writes one notice).
//!
//! permessage-deflate (RSV1 on a message's first frame, only when the handshake negotiated
//! it): the message is inflated as its frames arrive, by the direction's [`Inflater`]
//! (`ws/deflate.rs`, bounded per message and per direction); `size`, `sha256` and `first` are
//! then of the inflated message, and the wire size is kept beside them. A message that could
//! not be inflated whole keeps the wire figures and says why ([`Inflated`]).
//! Does not own: the relay, the audit event, redaction (`http.rs`).

mod deflate;

pub use deflate::{
    DeflateParams, InflateStop, Inflated, SenderDeflate, MAX_INFLATE_BYTES,
    MAX_INFLATE_BYTES_PER_DIRECTION,
};
use deflate::{Inflater, MessageInflate};
use sha2::{Digest, Sha256};

/// Bytes of each message kept for the log (`first`); the rest is only counted and hashed.
pub const MAX_FIRST_BYTES: usize = 1024;
/// Longest frame the parser accepts; a longer one (a guest announcing 2^63 bytes) stops
/// parsing for that direction. The relay still forwards it.
pub const MAX_FRAME_BYTES: u64 = 64 << 20;
/// Longest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_BYTES: usize = 125;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_wire(op: u8) -> Option<Opcode> {
        Some(match op {
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// The name written in the `ws` event's `opcode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Opcode::Text => "text",
            Opcode::Binary => "binary",
            Opcode::Close => "close",
            Opcode::Ping => "ping",
            Opcode::Pong => "pong",
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One complete message (all fragments of a data message, or one control frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub opcode: Opcode,
    /// Payload bytes of the whole message, unmasked; inflated when `inflate` is `Done`, as on
    /// the wire otherwise.
    pub size: u64,
    /// Hex sha256 of those bytes.
    pub sha256: String,
    /// The first [`MAX_FIRST_BYTES`] of the message (inflated, as far as it was, when
    /// compressed). For `close`, the reason (the bytes after the code).
    pub first: Vec<u8>,
    /// permessage-deflate compressed (RSV1).
    pub compressed: bool,
    /// Compressed: the payload bytes on the wire.
    pub compressed_size: Option<u64>,
    /// Compressed: how inflating it went.
    pub inflate: Option<Inflated>,
    /// Compressed and `Cut` or `Error`: how many bytes were inflated.
    pub inflated_size: Option<u64>,
    /// The status code of a `close` that carried one.
    pub close_code: Option<u16>,
}

/// Why a direction stopped being parsed. The relay goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseWs {
    #[error("frame of {len} bytes is over the cap of {MAX_FRAME_BYTES}")]
    FrameTooLong { len: u64 },
    #[error("reserved bits {bits:#x} set (not negotiated)")]
    ReservedBits { bits: u8 },
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("control frame fragmented or over {MAX_CONTROL_BYTES} bytes")]
    BadControlFrame,
    #[error("continuation frame outside a fragmented message")]
    UnexpectedContinuation,
    #[error("new data frame inside a fragmented message")]
    UnfinishedMessage,
}

/// Header of the frame being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    fin: bool,
    /// `None`: continuation.
    opcode: Option<Opcode>,
    mask: Option<[u8; 4]>,
    /// Payload bytes not read yet.
    remaining: u64,
    /// Payload bytes read so far (position in the mask).
    read: u64,
}

/// A data message being reassembled.
#[derive(Debug)]
struct Data {
    opcode: Opcode,
    /// Compressed (RSV1): its inflation so far.
    inflate: Option<MessageInflate>,
    size: u64,
    hasher: Sha256,
    first: Vec<u8>,
}

/// Streaming parser for one direction of one connection.
#[derive(Debug)]
pub struct Parser {
    /// permessage-deflate was negotiated: RSV1 is allowed on a data message's first frame,
    /// and such messages are inflated by this direction's inflater.
    inflater: Option<Inflater>,
    /// Header bytes gathered so far (at most 2 + 8 + 4).
    header: [u8; 14],
    header_len: usize,
    frame: Option<Frame>,
    data: Option<Data>,
    /// Payload of the control frame being read (≤ 125 bytes).
    control: Vec<u8>,
    failed: bool,
}

impl Parser {
    /// `deflate`: the negotiated permessage-deflate, as this direction's sender applies it.
    pub fn new(deflate: Option<SenderDeflate>) -> Parser {
        Parser {
            inflater: deflate.map(Inflater::new),
            header: [0; 14],
            header_len: 0,
            frame: None,
            data: None,
            control: Vec::new(),
            failed: false,
        }
    }

    /// Feeds the next bytes of the direction; complete messages are pushed to `out`. After an
    /// error every later call does nothing and returns `Ok`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<Message>) -> Result<(), ParseWs> {
        if self.failed {
            return Ok(());
        }
        while !input.is_empty() || self.frame.is_some_and(|f| f.remaining == 0) {
            let step = match self.frame {
                None => self.read_header(&mut input),
                Some(_) => {
                    self.read_payload(&mut input, out);
                    Ok(())
                }
            };
            if let Err(e) = step {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Gathers header bytes; once the header is whole, checks it and starts the frame.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<(), ParseWs> {
        while self.header_len < self.needed_header() {
            let Some((&b, rest)) = input.split_first() else {
                return Ok(());
            };
            self.header[self.header_len] = b;
            self.header_len += 1;
            *input = rest;
        }
        let h = &self.header[..self.header_len];
        let (b0, b1) = (h[0], h[1]);
        let (len, mut at) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = (b1 & 0x80 != 0).then(|| {
            let m = [h[at], h[at + 1], h[at + 2], h[at + 3]];
            at += 4;
            m
        });
        debug_assert_eq!(at, self.header_len);
        self.header_len = 0;
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let op = b0 & 0x0f;
        if len > MAX_FRAME_BYTES {
            return Err(ParseWs::FrameTooLong { len });
        }
        let opcode = match op {
            0 => None,
            _ => Some(Opcode::from_wire(op).ok_or(ParseWs::UnknownOpcode(op))?),
        };
        // RSV1 is permessage-deflate's, on the first frame of a data message only.
        let rsv1_ok = self.inflater.is_some() && opcode.is_some_and(|o| !o.is_control());
        if rsv & 0b011 != 0 || (rsv & 0b100 != 0 && !rsv1_ok) {
            return Err(ParseWs::ReservedBits { bits: rsv });
        }
        match opcode {
            Some(o) if o.is_control() => {
                if !fin || len > MAX_CONTROL_BYTES as u64 {
                    return Err(ParseWs::BadControlFrame);
                }
                self.control.clear();
            }
            Some(o) => {
                if self.data.is_some() {
                    return Err(ParseWs::UnfinishedMessage);
                }
                let inflate = match self.inflater.as_mut() {
                    Some(i) if rsv & 0b100 != 0 => Some(i.begin()),
                    _ => None,
                };
                self.data = Some(Data {
                    opcode: o,
                    inflate,
                    size: 0,
                    hasher: Sha256::new(),
                    first: Vec::new(),
                });
            }
            None => {
                if self.data.is_none() {
                    return Err(ParseWs::UnexpectedContinuation);
                }
            }
        }
        self.frame = Some(Frame {
            fin,
            opcode,
            mask,
            remaining: len,
            read: 0,
        });
        Ok(())
    }

    /// Header bytes needed given what has been gathered: 2, then the length and mask sizes.
    fn needed_header(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let b1 = self.header[1];
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
    }

    /// Consumes payload bytes of the current frame; ends the frame (and maybe the message).
    fn read_payload(&mut self, input: &mut &[u8], out: &mut Vec<Message>) {
        let Some(mut frame) = self.frame else {
            return;
        };
        let take = usize::try_from(frame.remaining).map_or(input.len(), |r| r.min(input.len()));
        let (chunk, rest) = input.split_at(take);
        *input = rest;
        // Unmask through a small stack buffer: no allocation per read.
        let mut buf = [0u8; 256];
        for piece in chunk.chunks(buf.len()) {
            let buf = &mut buf[..piece.len()];
            buf.copy_from_slice(piece);
            if let Some(m) = frame.mask {
                for (i, b) in buf.iter_mut().enumerate() {
                    // `read % 4` fits: the mask index only needs the low two bits.
                    *b ^= m[((frame.read + i as u64) % 4) as usize];
                }
            }
            frame.read += piece.len() as u64;
            match frame.opcode {
                Some(o) if o.is_control() => {
                    let room = MAX_CONTROL_BYTES.saturating_sub(self.control.len());
                    self.control.extend_from_slice(&buf[..buf.len().min(room)]);
                }
                _ => {
                    if let Some(d) = self.data.as_mut() {
                        d.size += buf.len() as u64;
                        d.hasher.update(&*buf);
                        match (d.inflate.as_mut(), self.inflater.as_mut()) {
                            (Some(m), Some(i)) => i.feed(m, buf, &mut d.first, MAX_FIRST_BYTES),
                            _ => {
                                let room = MAX_FIRST_BYTES.saturating_sub(d.first.len());
                                d.first.extend_from_slice(&buf[..buf.len().min(room)]);
                            }
                        }
                    }
                }
            }
        }
        frame.remaining -= take as u64;
        if frame.remaining > 0 {
            self.frame = Some(frame);
            return;
        }
        self.frame = None;
        match frame.opcode {
            Some(o) if o.is_control() => out.push(control_message(o, &self.control)),
            _ if frame.fin => {
                if let Some(d) = self.data.take() {
                    out.push(self.finish_data(d));
                }
            }
            _ => {}
        }
    }
}

impl Parser {
    /// The record of a data message whose last frame was read.
    fn finish_data(&mut self, mut d: Data) -> Message {
        let wire_sha256 = hex::encode(d.hasher.finalize());
        let mut message = Message {
            opcode: d.opcode,
            size: d.size,
            sha256: wire_sha256,
            first: Vec::new(),
            compressed: false,
            compressed_size: None,
            inflate: None,
            inflated_size: None,
            close_code: None,
        };
        if let (Some(m), Some(i)) = (d.inflate.take(), self.inflater.as_mut()) {
            let r = i.finish(m, &mut d.first, MAX_FIRST_BYTES);
            message.compressed = true;
            message.compressed_size = Some(d.size);
            message.inflate = Some(r.outcome);
            match r.outcome {
                Inflated::Done => {
                    message.size = r.size;
                    message.sha256 = r.sha256;
                }
                Inflated::Cut | Inflated::Error => message.inflated_size = Some(r.size),
                Inflated::Skipped => {}
            }
        }
        message.first = d.first;
        message
    }

    /// Why this direction stopped inflating, once (the caller writes one notice); later
    /// compressed messages are logged with their wire figures only.
    pub fn take_inflate_stop(&mut self) -> Option<InflateStop> {
        self.inflater.as_mut().and_then(Inflater::take_stop)
    }
}

fn control_message(opcode: Opcode, payload: &[u8]) -> Message {
    let (close_code, first) = match (opcode, payload) {
        (Opcode::Close, [a, b, reason @ ..]) => (Some(u16::from_be_bytes([*a, *b])), reason),
        _ => (None, payload),
    };
    Message {
        opcode,
        size: payload.len() as u64,
        sha256: hex::encode(Sha256::digest(payload)),
        first: first.to_vec(),
        compressed: false,
        compressed_size: None,
        inflate: None,
        inflated_size: None,
        close_code,
    }
}

#[cfg(test)]
mod tests {
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
}

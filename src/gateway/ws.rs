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
mod tests;

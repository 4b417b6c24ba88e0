//! permessage-deflate (RFC 7692) for the `ws` log: the parameters the server's 101 agreed to,
//! and one bounded raw-DEFLATE inflater per direction that turns a compressed message back
//! into what its sender wrote, so the log can show it.
//!
//! Owns: reading the agreed parameters out of `Sec-WebSocket-Extensions`; the decompressor
//! of one direction and its context (kept across messages, or dropped after each one when
//! that direction's sender agreed to `*_no_context_takeover`, or when its stream ended with a
//! final block); the caps: [`MAX_INFLATE_BYTES`] per message and
//! [`MAX_INFLATE_BYTES_PER_DIRECTION`] per connection direction, since a decompression bomb
//! is guest input. Past a cap, or on corrupt data, a context that is kept across messages is
//! lost (the decompressor did not see the whole message), so that direction stops inflating
//! and says so once ([`Inflater::take_stop`]).
//!
//! Window bits: the inflater always keeps a 32 KiB (2^15) window, the largest DEFLATE
//! allows, so it reads a stream compressed with any `*_max_window_bits` (8..=15): a sender
//! with a smaller window only ever refers back less far. The agreed bits are parsed and kept
//! for the record, not needed to inflate.
//!
//! Does not own: frames and masking (`ws.rs`), the relay. Inflating is observation only: the
//! bytes relayed are the wire bytes, whatever happens here.

use flate2::{Decompress, FlushDecompress, Status};
use sha2::{Digest, Sha256};

/// Most bytes one message is inflated to; the rest of it is not inflated (`inflate: cut`).
pub const MAX_INFLATE_BYTES: u64 = 16 << 20;
/// Most bytes one direction of one connection inflates over its life; past it, later
/// messages of that direction are logged compressed-only. Bounds the CPU a guest can spend
/// on small wire messages that inflate a thousandfold.
pub const MAX_INFLATE_BYTES_PER_DIRECTION: u64 = 256 << 20;
/// What the sender removed from the end of each message's compressed data (RFC 7692
/// §7.2.1) and the receiver appends before inflating it (§7.2.2): an empty stored block.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Output buffer of one decompress call.
const OUT_BUFFER: usize = 8 * 1024;

/// The permessage-deflate parameters of the server's response (the first
/// `permessage-deflate` element of `Sec-WebSocket-Extensions`: a server accepts one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor for every message.
    pub server_no_context_takeover: bool,
    /// The client (the guest) resets its compressor for every message.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window, 2^bits; `None`: not named (15).
    pub server_max_window_bits: Option<u8>,
    /// The client's window; `None` also when named without a value.
    pub client_max_window_bits: Option<u8>,
}

/// One direction's sender: what its messages' compression allows the receiver to assume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderDeflate {
    /// Every message is compressed from an empty context.
    pub no_context_takeover: bool,
    pub max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The parameters, when one of the header values names `permessage-deflate`.
    pub fn from_extensions<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let element = values.into_iter().flat_map(|v| v.split(',')).find(|ext| {
            ext.split(';')
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case("permessage-deflate"))
        })?;
        let mut params = DeflateParams::default();
        for param in element.split(';').skip(1) {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (param.trim(), None),
            };
            // A value outside RFC 7692's 8..=15 is not one the peer could honour: not kept.
            let bits = value
                .and_then(|v| v.parse::<u8>().ok())
                .filter(|b| (8..=15).contains(b));
            match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" => params.server_no_context_takeover = true,
                "client_no_context_takeover" => params.client_no_context_takeover = true,
                "server_max_window_bits" => params.server_max_window_bits = bits,
                "client_max_window_bits" => params.client_max_window_bits = bits,
                // An unknown parameter: the client fails the connection; nothing to log here.
                _ => {}
            }
        }
        Some(params)
    }

    /// The guest's side: what governs the `up` direction's messages.
    pub fn client(&self) -> SenderDeflate {
        SenderDeflate {
            no_context_takeover: self.client_no_context_takeover,
            max_window_bits: self.client_max_window_bits,
        }
    }

    /// The server's side (`down`).
    pub fn server(&self) -> SenderDeflate {
        SenderDeflate {
            no_context_takeover: self.server_no_context_takeover,
            max_window_bits: self.server_max_window_bits,
        }
    }
}

/// How inflating one compressed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inflated {
    /// The whole message was inflated.
    Done,
    /// A cap was reached: only the first part was inflated.
    Cut,
    /// The compressed data is corrupt: inflated up to the error.
    Error,
    /// Not inflated: this direction stopped inflating before the message began.
    Skipped,
}

/// Why a direction stopped inflating; later messages are [`Inflated::Skipped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateStop {
    #[error(
        "a message was cut or corrupt while the sender keeps its compression context, which \
         is now lost"
    )]
    ContextLost,
    #[error("the direction inflated its budget of {MAX_INFLATE_BYTES_PER_DIRECTION} bytes")]
    Budget,
}

/// Where one message's inflation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// The DEFLATE stream ended with a final block; later bytes are not DEFLATE data.
    Ended,
    Cut,
    Error,
    Skipped,
}

/// One compressed message being inflated.
#[derive(Debug)]
pub struct MessageInflate {
    state: State,
    /// Inflated bytes so far.
    size: u64,
    hasher: Sha256,
    /// Most inflated bytes this message may reach (the message cap or what is left of the
    /// direction's budget).
    limit: u64,
}

/// The result of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflateResult {
    pub outcome: Inflated,
    /// Bytes inflated (all of them when `Done`).
    pub size: u64,
    /// Hex sha256 of the inflated bytes; meaningful when `Done`.
    pub sha256: String,
}

/// One direction's decompressor and budget.
#[derive(Debug)]
pub struct Inflater {
    sender: SenderDeflate,
    /// [`MAX_INFLATE_BYTES`] and [`MAX_INFLATE_BYTES_PER_DIRECTION`] (smaller in tests).
    message_cap: u64,
    direction_cap: u64,
    /// Made at the first compressed message (a connection that never compresses pays
    /// nothing), dropped when the next message starts from an empty context.
    decompress: Option<(Decompress, Box<[u8]>)>,
    /// Inflated bytes of this direction so far.
    spent: u64,
    stopped: Option<InflateStop>,
    /// The stop not yet taken by the caller (for its one notice).
    unreported: Option<InflateStop>,
}

impl Inflater {
    pub fn new(sender: SenderDeflate) -> Inflater {
        Inflater::with_caps(sender, MAX_INFLATE_BYTES, MAX_INFLATE_BYTES_PER_DIRECTION)
    }

    fn with_caps(sender: SenderDeflate, message_cap: u64, direction_cap: u64) -> Inflater {
        Inflater {
            sender,
            message_cap,
            direction_cap,
            decompress: None,
            spent: 0,
            stopped: None,
            unreported: None,
        }
    }

    /// Starts a compressed message.
    pub fn begin(&mut self) -> MessageInflate {
        MessageInflate {
            state: if self.stopped.is_some() {
                State::Skipped
            } else {
                State::Running
            },
            size: 0,
            hasher: Sha256::new(),
            limit: self
                .message_cap
                .min(self.direction_cap.saturating_sub(self.spent)),
        }
    }

    /// Inflates the next compressed bytes of `m`; the first inflated bytes go to `first`, up
    /// to `first_cap` of them.
    pub fn feed(&mut self, m: &mut MessageInflate, input: &[u8], first: &mut Vec<u8>, cap: usize) {
        if m.state != State::Running {
            return;
        }
        let (d, buf) = self.decompress.get_or_insert_with(|| {
            (
                Decompress::new(false),
                vec![0u8; OUT_BUFFER].into_boxed_slice(),
            )
        });
        let mut input = input;
        loop {
            let room = m.limit - m.size;
            // One byte of room past the cap: producing it shows the message is longer.
            let out_len =
                usize::try_from(room.saturating_add(1)).map_or(buf.len(), |r| r.min(buf.len()));
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d.decompress(input, &mut buf[..out_len], FlushDecompress::None);
            // Both fit: they are at most `input.len()` and `out_len`.
            let consumed = usize::try_from(d.total_in() - in0).unwrap_or(input.len());
            let produced = usize::try_from(d.total_out() - out0).unwrap_or(out_len);
            input = input.get(consumed..).unwrap_or_default();
            let keep = produced.min(usize::try_from(room).unwrap_or(usize::MAX));
            let out = &buf[..keep];
            m.size += keep as u64;
            m.hasher.update(out);
            let want = cap.saturating_sub(first.len());
            first.extend_from_slice(&out[..out.len().min(want)]);
            self.spent += keep as u64;
            if produced > keep {
                m.state = State::Cut;
                return;
            }
            match status {
                Err(_) => {
                    m.state = State::Error;
                    return;
                }
                Ok(Status::StreamEnd) => {
                    m.state = State::Ended;
                    return;
                }
                Ok(Status::Ok | Status::BufError) => {}
            }
            // Waiting for input, or no progress either way.
            if (input.is_empty() && produced < out_len) || (consumed == 0 && produced == 0) {
                return;
            }
        }
    }

    /// Ends the message: inflates the tail RFC 7692 has the sender strip, readies the
    /// context for the next message, and may stop the direction.
    pub fn finish(
        &mut self,
        mut m: MessageInflate,
        first: &mut Vec<u8>,
        cap: usize,
    ) -> InflateResult {
        self.feed(&mut m, &TAIL, first, cap);
        let outcome = match m.state {
            State::Running | State::Ended => Inflated::Done,
            State::Cut => Inflated::Cut,
            State::Error => Inflated::Error,
            State::Skipped => Inflated::Skipped,
        };
        if outcome != Inflated::Skipped {
            let fresh_context = self.sender.no_context_takeover || m.state == State::Ended;
            if self.spent >= self.direction_cap {
                self.stop(InflateStop::Budget);
            } else if outcome != Inflated::Done && !fresh_context {
                self.stop(InflateStop::ContextLost);
            }
            if fresh_context || outcome != Inflated::Done {
                // The next message starts from an empty window (or there is no next one).
                self.decompress = None;
            }
        }
        InflateResult {
            outcome,
            size: m.size,
            sha256: hex::encode(m.hasher.finalize()),
        }
    }

    fn stop(&mut self, why: InflateStop) {
        self.stopped = Some(why);
        self.unreported = Some(why);
        self.decompress = None;
    }

    /// The reason this direction stopped inflating, once, for the caller's notice.
    pub fn take_stop(&mut self) -> Option<InflateStop> {
        self.unreported.take()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// What a sender writes for one message: raw DEFLATE, sync-flushed, tail stripped.
    pub(crate) fn compress_message(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 64);
        c.compress_vec(msg, &mut out, FlushCompress::Sync)
            .expect("compress");
        while out.capacity() == out.len() {
            out.reserve(1024);
            c.compress_vec(&[], &mut out, FlushCompress::Sync)
                .expect("compress more");
        }
        assert!(out.ends_with(&TAIL), "sync flush ends with the empty block");
        out.truncate(out.len() - TAIL.len());
        out
    }

    fn inflate_one(i: &mut Inflater, wire: &[u8]) -> (InflateResult, Vec<u8>) {
        let mut m = i.begin();
        let mut first = Vec::new();
        // In odd pieces, as frames arrive.
        for piece in wire.chunks(7) {
            i.feed(&mut m, piece, &mut first, 64);
        }
        (i.finish(m, &mut first, 64), first)
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn parameters_are_read_from_the_response() {
        let p = DeflateParams::from_extensions([
            "x-foo, permessage-deflate; server_no_context_takeover; Client_Max_Window_Bits=\"10\"",
        ])
        .expect("negotiated");
        assert!(p.server_no_context_takeover);
        assert!(!p.client_no_context_takeover);
        assert_eq!(p.client_max_window_bits, Some(10));
        assert_eq!(p.server_max_window_bits, None);
        assert!(p.server().no_context_takeover);
        assert!(!p.client().no_context_takeover);
        let p = DeflateParams::from_extensions([
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=99",
        ])
        .expect("negotiated");
        assert!(p.client().no_context_takeover);
        assert_eq!(p.server_max_window_bits, None, "out of range is not kept");
        assert_eq!(
            DeflateParams::from_extensions(["x-webkit-deflate-frame"]),
            None
        );
        assert_eq!(DeflateParams::from_extensions([]), None);
    }

    #[test]
    fn context_takeover_reads_back_references_to_earlier_messages() {
        let mut c = Compress::new(Compression::default(), false);
        let mut i = Inflater::new(SenderDeflate::default());
        let a = compress_message(&mut c, b"the quick brown fox jumps over the lazy dog");
        let b = compress_message(&mut c, b"the quick brown fox jumps over the lazy dog again");
        assert!(
            b.len() < a.len(),
            "the second message refers back to the first"
        );
        let (r, first) = inflate_one(&mut i, &a);
        assert_eq!(r.outcome, Inflated::Done);
        assert_eq!(first, b"the quick brown fox jumps over the lazy dog");
        let (r, first) = inflate_one(&mut i, &b);
        assert_eq!(r.outcome, Inflated::Done);
        assert_eq!(first, b"the quick brown fox jumps over the lazy dog again");
        assert_eq!(r.size, 49);
        assert_eq!(
            r.sha256,
            sha(b"the quick brown fox jumps over the lazy dog again")
        );
        assert_eq!(i.take_stop(), None);
    }

    #[test]
    fn no_context_takeover_starts_every_message_afresh() {
        let mut i = Inflater::new(SenderDeflate {
            no_context_takeover: true,
            max_window_bits: Some(9),
        });
        for text in [
            &b"hello hello hello"[..],
            b"hello again",
            b"and once more hello",
        ] {
            let mut c = Compress::new(Compression::default(), false);
            let (r, first) = inflate_one(&mut i, &compress_message(&mut c, text));
            assert_eq!((r.outcome, first.as_slice()), (Inflated::Done, text));
        }
        // A sender that ends each message with a final block (allowed, §7.2.1): the stream
        // ends, and the next message is a new stream, even with context takeover.
        let mut i = Inflater::new(SenderDeflate::default());
        for text in [&b"final one"[..], b"final two"] {
            let mut c = Compress::new(Compression::default(), false);
            let mut wire = Vec::with_capacity(256);
            c.compress_vec(text, &mut wire, FlushCompress::Finish)
                .expect("finish");
            let (r, first) = inflate_one(&mut i, &wire);
            assert_eq!((r.outcome, first.as_slice()), (Inflated::Done, text));
        }
    }

    /// 64 MiB of zeros is ~64 KiB on the wire: inflated only up to the cap, and a context
    /// that spans messages is then given up, once, with the reason.
    #[test]
    fn a_bomb_is_cut_at_the_cap_and_stops_a_kept_context() {
        let zeros = vec![0u8; 64 << 20];
        let mut c = Compress::new(Compression::default(), false);
        let bomb = compress_message(&mut c, &zeros);
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        let mut i = Inflater::new(SenderDeflate::default());
        let (r, first) = inflate_one(&mut i, &bomb);
        assert_eq!(r.outcome, Inflated::Cut);
        assert_eq!(r.size, MAX_INFLATE_BYTES);
        assert_eq!(first, [0u8; 64]);
        assert_eq!(i.take_stop(), Some(InflateStop::ContextLost));
        assert_eq!(i.take_stop(), None, "reported once");
        let next = compress_message(&mut c, b"after");
        let (r, first) = inflate_one(&mut i, &next);
        assert_eq!(r.outcome, Inflated::Skipped);
        assert!(first.is_empty());
        // Exactly at the cap is not cut.
        let mut c = Compress::new(Compression::default(), false);
        let exact = compress_message(&mut c, &zeros[..MAX_INFLATE_BYTES as usize]);
        let (r, _) = inflate_one(&mut Inflater::new(SenderDeflate::default()), &exact);
        assert_eq!((r.outcome, r.size), (Inflated::Done, MAX_INFLATE_BYTES));
        assert_eq!(r.sha256, sha(&zeros[..MAX_INFLATE_BYTES as usize]));
    }

    /// Without a kept context, cut messages go on until the direction's budget is spent.
    #[test]
    fn the_direction_budget_stops_inflating() {
        // The real caps' ratio, scaled down 256 times to keep the test quick.
        let (message_cap, direction_cap) =
            (MAX_INFLATE_BYTES >> 8, MAX_INFLATE_BYTES_PER_DIRECTION >> 8);
        let zeros = vec![0u8; (message_cap + 1) as usize];
        let mut c = Compress::new(Compression::default(), false);
        let bomb = compress_message(&mut c, &zeros);
        let mut i = Inflater::with_caps(
            SenderDeflate {
                no_context_takeover: true,
                max_window_bits: None,
            },
            message_cap,
            direction_cap,
        );
        let rounds = direction_cap / message_cap;
        for n in 0..rounds {
            let (r, _) = inflate_one(&mut i, &bomb);
            assert_eq!(r.outcome, Inflated::Cut, "round {n}");
            assert_eq!(i.take_stop().is_some(), n + 1 == rounds, "round {n}");
        }
        let (r, _) = inflate_one(&mut i, &bomb);
        assert_eq!(r.outcome, Inflated::Skipped);
        assert_eq!(i.spent, direction_cap);
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        let mut c = Compress::new(Compression::default(), false);
        let mut good = compress_message(&mut c, b"hello hello hello hello");
        // BTYPE 11 is reserved: the block header is invalid.
        let (r, first) = inflate_one(
            &mut Inflater::new(SenderDeflate::default()),
            &[0xff, 0xff, 0xff],
        );
        assert_eq!(r.outcome, Inflated::Error);
        assert!(first.is_empty());
        // Without a kept context the next message inflates again.
        let mut i = Inflater::new(SenderDeflate {
            no_context_takeover: true,
            max_window_bits: None,
        });
        let (r, _) = inflate_one(&mut i, &[0xff; 40]);
        assert_eq!(r.outcome, Inflated::Error);
        assert_eq!(i.take_stop(), None);
        let (r, first) = inflate_one(&mut i, &good);
        assert_eq!(
            (r.outcome, first.as_slice()),
            (Inflated::Done, &b"hello hello hello hello"[..])
        );
        // Garbage in every shape never panics.
        let mut x: u32 = 0x9e37_79b9;
        for len in 0..500 {
            let bytes: Vec<u8> = (0..len % 61)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = inflate_one(&mut Inflater::new(SenderDeflate::default()), &bytes);
        }
        // A good message corrupted in its middle: inflated up to the damage.
        let mid = good.len() / 2;
        good[mid] ^= 0xff;
        let _ = inflate_one(&mut Inflater::new(SenderDeflate::default()), &good);
    }
}

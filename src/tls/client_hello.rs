//! Sniffing the first bytes a guest sends on a TCP flow: is it TLS, and what does its
//! ClientHello ask for (SNI, ALPN, versions)?
//!
//! Owns a pure, checked parser over `&[u8]` that never panics and never reads past the input.
//! It does not own buffering (the gateway accumulates bytes and calls again when told
//! [`SniError::Incomplete`]), nor the TLS handshake itself (rustls does that, afterwards, on the
//! same bytes), nor deciding what to do with a flow that is not TLS.

use thiserror::Error;

/// Largest ClientHello handshake message we accept, in bytes (the 4-byte handshake header
/// excluded). Real ones are 200 B to ~2 KiB (post-quantum key shares); the protocol allows
/// 16 MiB, which would let a guest make us buffer that much before deciding anything.
pub const MAX_CLIENT_HELLO_LEN: usize = 64 * 1024;

/// Largest plaintext TLS record body (RFC 8446 §5.1).
const MAX_RECORD_LEN: usize = 1 << 14;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const SNI_HOST_NAME: u8 = 0;

/// What a ClientHello asks for, as far as routing and auditing a flow need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The `host_name` from the server_name extension, as sent (ASCII, not yet validated as a
    /// DNS name: see `LeafName::parse`). `None` when the client sent no SNI.
    pub server_name: Option<String>,
    /// ALPN protocol names in the client's order (e.g. `h2`, `http/1.1`); empty if none.
    pub alpn: Vec<Vec<u8>>,
    /// `legacy_version` of the ClientHello (0x0303 for TLS 1.2 and 1.3 clients).
    pub legacy_version: u16,
    /// The supported_versions extension (0x0304 = TLS 1.3, GREASE values included as sent);
    /// empty when absent (a TLS ≤ 1.2 client).
    pub supported_versions: Vec<u16>,
    /// Bytes of input the ClientHello occupied (all the records that carried it).
    pub len: usize,
}

impl ClientHelloInfo {
    /// Whether the client offers TLS 1.3.
    pub fn offers_tls13(&self) -> bool {
        self.supported_versions.contains(&0x0304)
    }
}

/// Why the first bytes of a flow are not (yet) a usable ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SniError {
    /// The input is a valid prefix; call again once it is at least `need` bytes long (total
    /// length of the input, not additional bytes).
    #[error("incomplete client hello: need at least {need} bytes")]
    Incomplete { need: usize },
    /// The first byte is not a TLS handshake record (content type 22).
    #[error("not a tls handshake record (content type {content_type})")]
    NotHandshake { content_type: u8 },
    /// A record header is malformed (version major not 3, empty or oversized record, or a
    /// non-handshake record interleaved in the ClientHello).
    #[error("bad tls record header at offset {offset}")]
    BadRecord { offset: usize },
    /// The first handshake message is not a ClientHello.
    #[error("first handshake message is type {msg_type}, not client hello")]
    NotClientHello { msg_type: u8 },
    /// The ClientHello is larger than [`MAX_CLIENT_HELLO_LEN`].
    #[error("client hello of {len} bytes exceeds the {max} byte cap")]
    TooLarge { len: usize, max: usize },
    /// A length field inside the ClientHello is inconsistent, or a field is invalid.
    #[error("malformed client hello: {what}")]
    Malformed { what: &'static str },
    /// An extension we interpret appears twice (RFC 8446 §4.2 forbids it).
    #[error("duplicate extension {ext_type} in client hello")]
    DuplicateExtension { ext_type: u16 },
    /// The SNI host name is empty or not printable ASCII.
    #[error("server name is not printable ascii")]
    BadServerName,
}

/// A cheap guess from the first bytes of a flow: could this be a TLS ClientHello?
///
/// `true` means "could be, run [`parse_client_hello`]"; `false` means it certainly is not a
/// TLS handshake record starting with a ClientHello. Empty input gives `false`. Any record
/// minor version is accepted, as [`parse_client_hello`] and real servers do: a guest must not
/// dodge interception by writing `16 03 05`.
pub fn looks_like_tls(first: &[u8]) -> bool {
    // Each byte is checked only once it has arrived.
    let at = |i: usize, ok: fn(u8) -> bool| first.get(i).is_none_or(|&b| ok(b));
    !first.is_empty()
        && at(0, |b| b == CONTENT_TYPE_HANDSHAKE)
        && at(1, |b| b == 3)
        && at(5, |b| b == HANDSHAKE_CLIENT_HELLO)
}

/// Parses the ClientHello at the start of a client's byte stream (one or more handshake
/// records). Pure: no allocation beyond the result (and reassembly when the ClientHello is
/// split across records), no panics, every access checked.
pub fn parse_client_hello(input: &[u8]) -> Result<ClientHelloInfo, SniError> {
    let (message, len) = reassemble(input)?;
    let mut info = parse_body(&message)?;
    info.len = len;
    Ok(info)
}

/// Collects the ClientHello handshake message body from consecutive handshake records.
/// Returns the body and the number of input bytes its records occupied.
fn reassemble(input: &[u8]) -> Result<(Vec<u8>, usize), SniError> {
    let mut payload: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    loop {
        let header = match input.get(pos..pos + RECORD_HEADER_LEN) {
            Some(h) => h,
            None => {
                // Reject early on what we can already see of a partial header.
                if let Some(&ct) = input.get(pos) {
                    check_content_type(ct, pos)?;
                }
                if let Some(&major) = input.get(pos + 1) {
                    if major != 3 {
                        return Err(SniError::BadRecord { offset: pos });
                    }
                }
                return Err(SniError::Incomplete {
                    need: pos + RECORD_HEADER_LEN,
                });
            }
        };
        check_content_type(header[0], pos)?;
        let record_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if header[1] != 3 || record_len == 0 || record_len > MAX_RECORD_LEN {
            return Err(SniError::BadRecord { offset: pos });
        }
        let body_start = pos + RECORD_HEADER_LEN;
        let body_end = body_start + record_len;
        // Check the handshake header as soon as its bytes are visible, before waiting for the
        // whole record, so garbage is rejected early.
        let visible = input.get(body_start..).unwrap_or_default();
        let take = visible.len().min(record_len);
        let head: Vec<u8> = payload
            .iter()
            .chain(visible.get(..take).unwrap_or_default())
            .take(HANDSHAKE_HEADER_LEN)
            .copied()
            .collect();
        let message_len = check_handshake_header(&head)?;
        let Some(body) = input.get(body_start..body_end) else {
            return Err(SniError::Incomplete { need: body_end });
        };
        payload.extend_from_slice(body);
        pos = body_end;
        if let Some(message_len) = message_len {
            let total = HANDSHAKE_HEADER_LEN + message_len;
            if payload.len() >= total {
                // Bytes after the ClientHello in the same record belong to a later handshake
                // message, which a client must not send before the server's reply.
                if payload.len() > total {
                    return Err(SniError::Malformed {
                        what: "data after client hello",
                    });
                }
                payload.drain(..HANDSHAKE_HEADER_LEN);
                return Ok((payload, pos));
            }
        }
    }
}

fn check_content_type(content_type: u8, offset: usize) -> Result<(), SniError> {
    match (content_type, offset) {
        (CONTENT_TYPE_HANDSHAKE, _) => Ok(()),
        (content_type, 0) => Err(SniError::NotHandshake { content_type }),
        (_, offset) => Err(SniError::BadRecord { offset }),
    }
}

/// Validates the handshake header in the first bytes of the reassembled payload; returns the
/// message length once all 4 header bytes are there.
fn check_handshake_header(payload: &[u8]) -> Result<Option<usize>, SniError> {
    if let Some(&msg_type) = payload.first() {
        if msg_type != HANDSHAKE_CLIENT_HELLO {
            return Err(SniError::NotClientHello { msg_type });
        }
    }
    let Some(&[_, a, b, c]) = payload.get(..HANDSHAKE_HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    if len > MAX_CLIENT_HELLO_LEN {
        return Err(SniError::TooLarge {
            len,
            max: MAX_CLIENT_HELLO_LEN,
        });
    }
    Ok(Some(len))
}

/// A checked cursor over a byte slice: every read returns `Malformed` instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SniError> {
        if n > self.buf.len() {
            return Err(SniError::Malformed { what: self.what });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, SniError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, SniError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A sub-reader over a vector prefixed by a 1-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<Reader<'a>, SniError> {
        let n = usize::from(self.u8()?);
        Ok(Reader::new(self.take(n)?, what))
    }

    /// A sub-reader over a vector prefixed by a 2-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<Reader<'a>, SniError> {
        let n = usize::from(self.u16()?);
        Ok(Reader::new(self.take(n)?, what))
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn expect_end(&self) -> Result<(), SniError> {
        match self.is_empty() {
            true => Ok(()),
            false => Err(SniError::Malformed { what: self.what }),
        }
    }
}

fn parse_body(body: &[u8]) -> Result<ClientHelloInfo, SniError> {
    let mut r = Reader::new(body, "client hello fields");
    let legacy_version = r.u16()?;
    r.take(32)?; // random
    let session_id = r.vec8("session id")?;
    if session_id.buf.len() > 32 {
        return Err(SniError::Malformed { what: "session id" });
    }
    let suites = r.vec16("cipher suites")?;
    if suites.is_empty() || suites.buf.len() % 2 != 0 {
        return Err(SniError::Malformed {
            what: "cipher suites",
        });
    }
    if r.vec8("compression methods")?.is_empty() {
        return Err(SniError::Malformed {
            what: "compression methods",
        });
    }
    let mut info = ClientHelloInfo {
        server_name: None,
        alpn: Vec::new(),
        legacy_version,
        supported_versions: Vec::new(),
        len: 0,
    };
    // TLS 1.2 allows a ClientHello without an extensions block at all.
    if r.is_empty() {
        return Ok(info);
    }
    let mut exts = r.vec16("extensions")?;
    r.expect_end()?;
    let mut seen = [false; 3];
    while !exts.is_empty() {
        let ext_type = exts.u16()?;
        let data = exts.vec16("extension")?;
        let slot = match ext_type {
            EXT_SERVER_NAME => 0,
            EXT_ALPN => 1,
            EXT_SUPPORTED_VERSIONS => 2,
            _ => continue,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(SniError::DuplicateExtension { ext_type });
        }
        match ext_type {
            EXT_SERVER_NAME => info.server_name = parse_server_name(data)?,
            EXT_ALPN => info.alpn = parse_alpn(data)?,
            _ => info.supported_versions = parse_supported_versions(data)?,
        }
    }
    Ok(info)
}

fn parse_server_name(mut data: Reader<'_>) -> Result<Option<String>, SniError> {
    // A server's (empty) echo of the extension has no list; a client's must have one.
    let mut list = data.vec16("server name list")?;
    data.expect_end()?;
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16("server name")?.buf;
        // RFC 6066: at most one name per type; unknown types are skipped.
        if name_type == SNI_HOST_NAME && host.is_none() {
            if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                return Err(SniError::BadServerName);
            }
            host = Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(host)
}

fn parse_alpn(mut data: Reader<'_>) -> Result<Vec<Vec<u8>>, SniError> {
    let mut list = data.vec16("alpn list")?;
    data.expect_end()?;
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.vec8("alpn protocol")?.buf;
        if name.is_empty() {
            return Err(SniError::Malformed {
                what: "empty alpn protocol",
            });
        }
        protocols.push(name.to_vec());
    }
    Ok(protocols)
}

fn parse_supported_versions(mut data: Reader<'_>) -> Result<Vec<u16>, SniError> {
    let mut list = data.vec8("supported versions")?;
    data.expect_end()?;
    if list.is_empty() || list.buf.len() % 2 != 0 {
        return Err(SniError::Malformed {
            what: "supported versions",
        });
    }
    let mut versions = Vec::new();
    while !list.is_empty() {
        versions.push(list.u16()?);
    }
    Ok(versions)
}

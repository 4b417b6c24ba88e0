//! `idagent::tls::parse_client_hello` over the first bytes of a guest TCP flow.
//!
//! Invariants: `Incomplete { need }` always asks for more than it was given (otherwise the
//! gateway would wait forever for bytes it already has); a parsed ClientHello occupies at most
//! the input and parses identically from exactly those bytes.
//!
//! Not asserted (see README.md, "Findings"): that `looks_like_tls` accepts everything that
//! parses. It does not: a record version minor above 4 parses but is not sniffed as TLS.
#![no_main]

use idagent::tls::{looks_like_tls, parse_client_hello, SniError, MAX_CLIENT_HELLO_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_client_hello(data) {
        Err(SniError::Incomplete { need }) => {
            assert!(need > data.len(), "Incomplete {{ need: {need} }} for {} bytes", data.len());
            // The gateway buffers what it is asked to wait for, so that must be bounded: at
            // worst the hello (64 KiB + 4) comes in 1-byte records (5-byte header each) and the
            // last record header announces a full 16 KiB record.
            assert!(need <= 6 * (MAX_CLIENT_HELLO_LEN + 4) + 5 + (1 << 14), "need {need}");
        }
        Ok(info) => {
            assert!(info.len > 0 && info.len <= data.len(), "len {} of {}", info.len, data.len());
            // Exercised, not asserted: see the module docs.
            let _ = looks_like_tls(data);
            let exact = parse_client_hello(&data[..info.len]).expect("the hello's own bytes parse");
            assert_eq!(exact, info);
            if let Some(name) = &info.server_name {
                assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()));
            }
            assert!(info.alpn.iter().all(|p| !p.is_empty()));
        }
        Err(_) => {}
    }
});

//! Pure encoders for the pcapng pieces pcap-file 2 lacks: the Decryption Secrets Block and the
//! `epb_flags` direction bits.
//!
//! Owns byte layout only (little-endian, matching the section header the writer emits). Does
//! not own files, queues or ordering (see `pcap.rs`).

use super::{Direction, PcapError};

/// pcapng block type of a Decryption Secrets Block.
pub const DSB_BLOCK_TYPE: u32 = 0x0000_000A;
/// DSB secrets type for an NSS key log ("TLSK").
pub const DSB_SECRETS_TLS_KEY_LOG: u32 = 0x544c_534b;
/// Largest secrets payload one DSB carries. Key log lines are ~200 bytes and are written one
/// call at a time; this only stops a runaway caller from building a huge block.
pub const MAX_SECRETS_BLOCK_BYTES: usize = 1 << 20;

/// Encodes a Decryption Secrets Block (pcapng §4.7) carrying NSS key log `lines`:
/// block type, total length, secrets type `TLSK`, secrets length, the lines padded with zeros
/// to 4 bytes, no options, total length again. Little-endian.
pub fn encode_dsb(lines: &str) -> Result<Vec<u8>, PcapError> {
    let secrets = lines.as_bytes();
    if secrets.len() > MAX_SECRETS_BLOCK_BYTES {
        return Err(PcapError::SecretsTooLarge {
            len: secrets.len(),
            max: MAX_SECRETS_BLOCK_BYTES,
        });
    }
    let padded = secrets.len().next_multiple_of(4);
    // 4 type + 4 length + 4 secrets type + 4 secrets length + data + 4 trailing length.
    let total = 20 + padded;
    // Both fit in u32: bounded by MAX_SECRETS_BLOCK_BYTES above.
    let total_u32 = u32::try_from(total).map_err(|_| PcapError::SecretsTooLarge {
        len: secrets.len(),
        max: MAX_SECRETS_BLOCK_BYTES,
    })?;
    let secrets_len = u32::try_from(secrets.len()).unwrap_or(u32::MAX);
    let mut block = Vec::with_capacity(total);
    block.extend_from_slice(&DSB_BLOCK_TYPE.to_le_bytes());
    block.extend_from_slice(&total_u32.to_le_bytes());
    block.extend_from_slice(&DSB_SECRETS_TLS_KEY_LOG.to_le_bytes());
    block.extend_from_slice(&secrets_len.to_le_bytes());
    block.extend_from_slice(secrets);
    block.resize(16 + padded, 0);
    block.extend_from_slice(&total_u32.to_le_bytes());
    Ok(block)
}

/// The `epb_flags` word for a packet's direction (bits 0–1: 01 inbound, 10 outbound), seen
/// from the guest's `tun0`: what the guest sends is outbound, what it receives is inbound —
/// the same as a capture taken inside the guest would say.
pub fn epb_flags(dir: Direction) -> u32 {
    match dir {
        Direction::FromGuest => 0b10,
        Direction::ToGuest => 0b01,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsb_layout() {
        let line = "CLIENT_RANDOM aa bb\n"; // 20 bytes: no padding
        let block = encode_dsb(line).expect("encode");
        assert_eq!(block.len(), 40);
        assert_eq!(&block[0..4], &[0x0a, 0, 0, 0]);
        assert_eq!(&block[4..8], &40u32.to_le_bytes());
        assert_eq!(&block[8..12], b"KSLT"); // 0x544c534b little-endian
        assert_eq!(&block[12..16], &20u32.to_le_bytes());
        assert_eq!(&block[16..36], line.as_bytes());
        assert_eq!(&block[36..40], &40u32.to_le_bytes());

        let odd = encode_dsb("abcde").expect("encode");
        assert_eq!(odd.len(), 28);
        assert_eq!(&odd[12..16], &5u32.to_le_bytes());
        assert_eq!(&odd[16..24], b"abcde\0\0\0");
        assert_eq!(&odd[24..28], &28u32.to_le_bytes());

        assert_eq!(encode_dsb("").expect("empty").len(), 20);
        assert!(matches!(
            encode_dsb(&"x".repeat(MAX_SECRETS_BLOCK_BYTES + 1)),
            Err(PcapError::SecretsTooLarge { .. })
        ));
    }

    #[test]
    fn direction_bits() {
        assert_eq!(epb_flags(Direction::FromGuest), 2);
        assert_eq!(epb_flags(Direction::ToGuest), 1);
    }
}

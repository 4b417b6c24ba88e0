//! The capture's writer thread: creates the file, writes the headers, then drains the queue
//! block by block, enforcing the file cap.
//!
//! Owns the file handle and the block order. Does not own the queue's producers or their
//! drop counters (see `pcap.rs`).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

use super::{encode_dsb, epb_flags, Direction, Item, PcapError, Shared, INTERFACE_NAME};

/// `if_tsresol` = 9: nanoseconds (pcap-file 2 writes EPB timestamps in nanoseconds).
const TS_RESOL_NANOS: u8 = 9;

pub(super) type FileWriter = PcapNgWriter<CountingWriter<BufWriter<std::fs::File>>>;

/// Creates `path` (`create_new`, mode 0600) and writes the section and interface headers.
pub(super) fn open(path: &Path, snaplen: u32) -> Result<FileWriter, PcapError> {
    let create = |source| PcapError::Create {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create)?;
    let section = SectionHeaderBlock {
        endianness: Endianness::Little,
        major_version: 1,
        minor_version: 0,
        section_length: -1,
        options: vec![SectionHeaderOption::UserApplication(
            format!("idagent {}", env!("CARGO_PKG_VERSION")).into(),
        )],
    };
    let write_err = |source| PcapError::Write {
        path: path.to_path_buf(),
        source,
    };
    let counting = CountingWriter {
        inner: BufWriter::new(file),
        count: 0,
    };
    let mut writer = PcapNgWriter::with_section_header(counting, section).map_err(write_err)?;
    let interface = InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen,
        options: vec![
            InterfaceDescriptionOption::IfName(INTERFACE_NAME.into()),
            InterfaceDescriptionOption::IfTsResol(TS_RESOL_NANOS),
        ],
    };
    writer.write_pcapng_block(interface).map_err(write_err)?;
    writer
        .get_mut()
        .flush()
        .map_err(|e| write_err(pcap_file::PcapError::IoError(e)))?;

    Ok(writer)
}

/// Counts bytes on their way to the file, for the file cap and the stats.
pub(super) struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Debug, Default)]
pub(super) struct WriterOutcome {
    pub(super) packets_written: u64,
    pub(super) packets_dropped: u64,
    pub(super) packets_truncated: u64,
    pub(super) secrets_written: u64,
    pub(super) secrets_dropped: u64,
    pub(super) bytes_written: u64,
    pub(super) file_cap_reached: bool,
    pub(super) error: Option<PcapError>,
}

pub(super) struct WriterState {
    writer: FileWriter,
    path: PathBuf,
    shared: Arc<Shared>,
    max_file_bytes: u64,
    outcome: WriterOutcome,
}

impl WriterState {
    pub(super) fn new(
        writer: FileWriter,
        path: &Path,
        shared: Arc<Shared>,
        max_file_bytes: u64,
    ) -> Self {
        Self {
            writer,
            path: path.to_path_buf(),
            shared,
            max_file_bytes,
            outcome: WriterOutcome::default(),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Item>) -> WriterOutcome {
        /// How long the idle writer sleeps before looking at the queue again.
        const IDLE_NAP: std::time::Duration = std::time::Duration::from_millis(2);
        loop {
            let item = match rx.try_recv() {
                Ok(item) => item,
                // Idle: flush, so a killed run loses at most what arrived since, then nap.
                // Napping instead of blocking in recv() means producers never have to wake
                // this thread: on the hot path a futex wake per packet cost more than writing
                // it. The queue (16k items) absorbs a nap's worth of packets many times over.
                Err(TryRecvError::Empty) => {
                    if let Err(e) = self.flush() {
                        self.outcome.error = Some(e);
                        break;
                    }
                    std::thread::sleep(IDLE_NAP);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            };
            let result = match item {
                Item::Finish => break,
                Item::Packet {
                    dir,
                    ts,
                    data,
                    original_len,
                } => {
                    self.release(data.len());
                    self.write_packet(dir, ts, &data, original_len)
                }
                Item::Secrets(lines) => {
                    self.release(lines.len());
                    self.write_secrets(&lines)
                }
            };
            if let Err(e) = result {
                self.outcome.error = Some(e);
                break;
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        if let Err(e) = self.flush() {
            self.outcome.error.get_or_insert(e);
        }
        self.outcome.bytes_written = self.writer.get_ref().count;
        self.outcome
    }

    fn release(&self, len: usize) {
        self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Whether `block_len` more bytes still fit under the file cap (sets the flag if not).
    fn fits(&mut self, block_len: usize) -> bool {
        let fits =
            self.writer.get_ref().count.saturating_add(block_len as u64) <= self.max_file_bytes;
        self.outcome.file_cap_reached |= !fits;
        fits
    }

    fn write_packet(
        &mut self,
        dir: Direction,
        ts: Duration,
        data: &[u8],
        original_len: u32,
    ) -> Result<(), PcapError> {
        // EPB: 28 bytes of header and trailer, data padded to 4, one 12-byte flags option
        // plus the 4-byte end-of-options marker.
        if !self.fits(44 + data.len().next_multiple_of(4)) {
            self.outcome.packets_dropped += 1;
            return Ok(());
        }
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: ts,
            original_len,
            data: data.into(),
            options: vec![EnhancedPacketOption::Flags(epb_flags(dir))],
        };
        self.writer
            .write_pcapng_block(epb)
            .map_err(|source| self.write_error(source))?;
        self.outcome.packets_written += 1;
        if (data.len() as u64) < u64::from(original_len) {
            self.outcome.packets_truncated += 1;
        }
        Ok(())
    }

    fn write_secrets(&mut self, lines: &str) -> Result<(), PcapError> {
        let block = match encode_dsb(lines) {
            Ok(block) if self.fits(block.len()) => block,
            _ => {
                self.outcome.secrets_dropped += 1;
                return Ok(());
            }
        };
        self.writer
            .get_mut()
            .write_all(&block)
            .map_err(|e| self.write_error(pcap_file::PcapError::IoError(e)))?;
        self.outcome.secrets_written += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PcapError> {
        self.writer
            .get_mut()
            .flush()
            .map_err(|e| self.write_error(pcap_file::PcapError::IoError(e)))
    }

    fn write_error(&self, source: pcap_file::PcapError) -> PcapError {
        PcapError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

//! The smoltcp `phy::Device` between the interface and the driver's queues.
//!
//! Owns the bounded queue of outbound packets and the per-call device that lends smoltcp at most
//! one inbound packet. Does not own the TUN fd or any parsing: the driver moves bytes, `ingress`
//! decides which packets smoltcp sees at all.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Outbound packets waiting for the driver, bounded in bytes.
#[derive(Debug)]
pub(crate) struct TxQueue {
    packets: VecDeque<Vec<u8>>,
    bytes: usize,
    max_bytes: usize,
    /// Packets smoltcp produced as immediate replies while the queue was full.
    pub(crate) dropped: u64,
}

/// The transmit queue is over its byte cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxQueueFull;

impl TxQueue {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            packets: VecDeque::new(),
            bytes: 0,
            max_bytes,
            dropped: 0,
        }
    }

    /// Whether another packet may be queued. The cap is checked before the packet's length is
    /// known (smoltcp asks for a token first), so the queue may overshoot by one packet.
    pub(crate) fn has_room(&self) -> bool {
        self.bytes < self.max_bytes
    }

    pub(crate) fn push(&mut self, packet: Vec<u8>) -> Result<(), TxQueueFull> {
        if !self.has_room() {
            return Err(TxQueueFull);
        }
        self.bytes += packet.len();
        self.packets.push_back(packet);
        Ok(())
    }

    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        let packet = self.packets.pop_front()?;
        self.bytes -= packet.len();
        Some(packet)
    }

    pub(crate) fn len(&self) -> usize {
        self.packets.len()
    }
}

/// A device that exists for one smoltcp call: it lends the packet being received (no copy) and
/// appends whatever smoltcp transmits to the [`TxQueue`].
pub(crate) struct CallDevice<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut TxQueue,
    mtu: usize,
}

impl<'a> CallDevice<'a> {
    pub(crate) fn new(rx: Option<&'a [u8]>, tx: &'a mut TxQueue, mtu: usize) -> Self {
        Self { rx, tx, mtu }
    }
}

pub(crate) struct RxToken<'a>(&'a [u8]);

pub(crate) struct TxToken<'a>(&'a mut TxQueue);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        // Only immediate replies to a received packet can get here with a full queue (transmit()
        // checks first); losing one is what a full link does.
        if self.0.push(packet).is_err() {
            self.0.dropped += 1;
        }
        result
    }
}

impl phy::Device for CallDevice<'_> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // The reply token is handed out even when the queue is full, so that smoltcp still
        // processes the packet; the reply itself is then dropped and counted.
        let packet = self.rx.take()?;
        Some((RxToken(packet), TxToken(self.tx)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if self.tx.has_room() {
            Some(TxToken(self.tx))
        } else {
            None
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

//! The gateway's end of one guest TCP flow: an `AsyncRead + AsyncWrite` over two bounded
//! channels to the driver. Bounded both ways, so a slow reader on either side applies
//! back-pressure (the smoltcp window closes, or the gateway's writes wait) instead of memory
//! growing.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::PollSender;

/// Chunks queued each way per flow (each chunk is at most one read of the stack's buffer).
pub const FLOW_CHANNEL_CHUNKS: usize = 16;
/// Largest chunk the gateway hands to the driver in one write.
pub const MAX_CHUNK: usize = 64 * 1024;

/// What the gateway sends toward the guest.
#[derive(Debug)]
pub enum FlowOut {
    Data(Bytes),
    /// FIN after the data before it.
    Shutdown,
}

/// The gateway-side stream of a guest flow.
pub struct FlowStream {
    rx: mpsc::Receiver<Bytes>,
    leftover: Bytes,
    tx: PollSender<FlowOut>,
    wake: Arc<Notify>,
    shut: bool,
}

impl std::fmt::Debug for FlowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowStream").finish_non_exhaustive()
    }
}

/// The driver's ends of a flow's channels.
#[derive(Debug)]
pub struct DriverEnds {
    pub to_gateway: mpsc::Sender<Bytes>,
    pub from_gateway: mpsc::Receiver<FlowOut>,
}

/// A connected pair: the stream for the gateway, the ends for the driver. `wake` is signalled
/// whenever the gateway consumes or produces, so the driver moves the next chunk.
pub fn pair(wake: Arc<Notify>) -> (FlowStream, DriverEnds) {
    let (to_gateway, rx) = mpsc::channel(FLOW_CHANNEL_CHUNKS);
    let (tx, from_gateway) = mpsc::channel(FLOW_CHANNEL_CHUNKS);
    (
        FlowStream {
            rx,
            leftover: Bytes::new(),
            tx: PollSender::new(tx),
            wake,
            shut: false,
        },
        DriverEnds {
            to_gateway,
            from_gateway,
        },
    )
}

impl AsyncRead for FlowStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.leftover.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => {
                    self.leftover = chunk;
                    // Room in the channel again: let the driver read more from the stack.
                    self.wake.notify_one();
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())), // guest finished: EOF
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.leftover.len().min(buf.remaining());
        let chunk = self.leftover.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FlowStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        match self.tx.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            Poll::Pending => return Poll::Pending,
        }
        let n = data.len().min(MAX_CHUNK);
        let sent = self
            .tx
            .send_item(FlowOut::Data(Bytes::copy_from_slice(&data[..n])));
        self.wake.notify_one();
        match sent {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.shut {
            return Poll::Ready(Ok(()));
        }
        match self.tx.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {
                let _ = self.tx.send_item(FlowOut::Shutdown);
                self.shut = true;
                self.wake.notify_one();
                Poll::Ready(Ok(()))
            }
            // The driver dropped the flow: it is closed already.
            Poll::Ready(Err(_)) => {
                self.shut = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for FlowStream {
    fn drop(&mut self) {
        // The driver sees the channel disconnect and closes the flow.
        self.wake.notify_one();
    }
}

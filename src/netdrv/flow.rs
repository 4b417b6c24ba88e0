//! The gateway's end of one guest TCP flow: an `AsyncRead + AsyncWrite` over two byte-bounded
//! queues shared with the driver, plus the driver's ready list.
//!
//! Bounded both ways, so a slow reader on either side applies back-pressure (the smoltcp window
//! closes, or the gateway's writes wait) instead of memory growing. The queues are counted in
//! bytes, not chunks, and both sides wake the other with hysteresis: the gateway is woken when
//! its empty read queue gets data or its full write queue drains to half; the driver is told
//! (through the [`ReadyList`], naming the flow) when the gateway queues data for an idle flow,
//! shuts down, goes away, or drains a full read queue to half. One wake-up then moves many
//! chunks, instead of one cross-thread wake-up per chunk, which on a 2-core VM cost more than
//! the copies (measured: ~3 context switches per 64 KiB chunk with the channel-per-chunk design).
//!
//! Every flow of a driver also draws on one byte budget ([`MAX_QUEUED_BYTES`], kept in the
//! shared [`ReadyList`]), so the total is bounded however many flows the guest opens; a flow
//! always keeps a small floor of its own, so the budget never starves one flow for another.
//!
//! Owns: the two queues, their caps, the shared budget and the wake rules. Does not own: smoltcp (the driver moves
//! bytes between the queues and the stack) or what the gateway does with the stream.

use bytes::Bytes;
use idagent_netstack::stack::FlowId;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Guest → gateway bytes queued per flow before the driver stops reading the stack (the
/// guest's window then closes).
pub const UP_QUEUE_BYTES: usize = 512 * 1024;
/// Gateway → guest bytes queued per flow before the gateway's writes wait.
pub const DOWN_QUEUE_BYTES: usize = 1024 * 1024;
/// Bytes queued across every flow of one guest, both directions. The per-flow caps alone
/// allow 1.5 MiB per flow (1,024 flows: 1.5 GiB); past this budget a flow gets only its
/// [`FLOW_QUEUE_FLOOR`] (the guest's window closes, or the gateway's writes wait) until
/// queues drain, and the driver writes one `flow_queue_budget` notice.
pub const MAX_QUEUED_BYTES: usize = 128 * 1024 * 1024;
/// What each flow may always queue per direction, whatever the budget, so no flow is starved
/// by others (and a flow held back by the budget always has queued bytes whose draining
/// wakes it).
pub const FLOW_QUEUE_FLOOR: usize = 64 * 1024;
/// Largest chunk taken from one gateway write (kept under the allocator's mmap threshold, see
/// `tune_allocator` in main.rs).
pub const MAX_CHUNK: usize = 256 * 1024;

/// What the driver takes from a flow's gateway → guest queue.
#[derive(Debug)]
pub enum FlowOut {
    Data(Bytes),
    /// FIN after the data before it (the gateway shut down or dropped its end).
    Shutdown,
}

/// Flows whose gateway side needs the driver, the driver's wake-up, and the byte budget all
/// of the driver's flows share.
#[derive(Debug)]
pub struct ReadyList {
    ids: Mutex<Vec<FlowId>>,
    notify: Notify,
    budget: Budget,
}

/// Bytes queued across all flows against a limit ([`MAX_QUEUED_BYTES`]).
#[derive(Debug)]
struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Set when the budget held a flow below its own cap; taken by the driver.
    pushed_back: AtomicBool,
}

impl Budget {
    /// Room for a flow that has `own` bytes queued in one direction with `cap` for it.
    fn room(&self, own: usize, cap: usize) -> usize {
        let per_flow = cap.saturating_sub(own);
        let shared = self.limit.saturating_sub(self.used.load(Ordering::Relaxed));
        let room = per_flow.min(shared.max(FLOW_QUEUE_FLOOR.saturating_sub(own)));
        if room < per_flow {
            self.pushed_back.store(true, Ordering::Relaxed);
        }
        room
    }

    fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

impl ReadyList {
    pub fn new() -> Arc<Self> {
        Self::with_budget(MAX_QUEUED_BYTES)
    }

    /// A list whose flows share `limit` queued bytes (tests use small ones).
    pub fn with_budget(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            ids: Mutex::default(),
            notify: Notify::new(),
            budget: Budget {
                limit,
                used: AtomicUsize::new(0),
                pushed_back: AtomicBool::new(false),
            },
        })
    }

    /// Bytes queued now across every flow.
    pub fn queued_bytes(&self) -> usize {
        self.budget.used.load(Ordering::Relaxed)
    }

    /// Whether the budget held a flow back since the last call.
    pub fn take_pushed_back(&self) -> bool {
        self.budget.pushed_back.swap(false, Ordering::Relaxed)
    }

    /// Queues `id` once until the driver takes it; wakes the driver when the list was empty.
    fn mark(&self, queued: &AtomicBool, id: FlowId) {
        if queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let was_empty = {
            let mut ids = lock(&self.ids);
            let empty = ids.is_empty();
            ids.push(id);
            empty
        };
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Moves every queued id into `into` (appending).
    pub fn take(&self, into: &mut Vec<FlowId>) {
        into.append(&mut lock(&self.ids));
    }

    /// Resolves after the next [`ReadyList::mark`] that found the list empty (or at once when
    /// one happened since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// A poisoned lock only means another thread panicked while holding it; the queue state is
/// still consistent (every update is a single step), so keep going rather than cascade.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct State {
    up: VecDeque<Bytes>,
    up_bytes: usize,
    /// The guest sent FIN: EOF once `up` is drained.
    up_fin: bool,
    /// The driver found no room and stopped reading the stack.
    up_starved: bool,
    reader: Option<Waker>,
    down: VecDeque<Bytes>,
    down_bytes: usize,
    down_shutdown: bool,
    writer: Option<Waker>,
    gateway_gone: bool,
    driver_gone: bool,
}

impl State {
    /// Drops the guest → gateway queue, giving its bytes back to the budget.
    fn release_up(&mut self, budget: &Budget) {
        budget.sub(self.up_bytes);
        self.up.clear();
        self.up_bytes = 0;
    }

    /// Drops the gateway → guest queue, giving its bytes back to the budget.
    fn release_down(&mut self, budget: &Budget) {
        budget.sub(self.down_bytes);
        self.down.clear();
        self.down_bytes = 0;
    }
}

#[derive(Debug)]
struct Shared {
    id: FlowId,
    /// Set while `id` sits in the ready list.
    queued: AtomicBool,
    ready: Arc<ReadyList>,
    state: Mutex<State>,
}

impl Shared {
    fn mark(&self) {
        self.ready.mark(&self.queued, self.id);
    }

    fn budget(&self) -> &Budget {
        &self.ready.budget
    }
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

fn park(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// The gateway-side stream of a guest flow.
#[derive(Debug)]
pub struct FlowStream {
    shared: Arc<Shared>,
    shut: bool,
}

/// The driver's end of a flow.
#[derive(Debug)]
pub struct DriverEnds {
    shared: Arc<Shared>,
}

/// A connected pair for flow `id`: the stream for the gateway, the ends for the driver.
pub fn pair(id: FlowId, ready: Arc<ReadyList>) -> (FlowStream, DriverEnds) {
    let shared = Arc::new(Shared {
        id,
        queued: AtomicBool::new(false),
        ready,
        state: Mutex::new(State::default()),
    });
    (
        FlowStream {
            shared: shared.clone(),
            shut: false,
        },
        DriverEnds { shared },
    )
}

impl DriverEnds {
    /// Called when the driver takes this flow off the ready list, before servicing it, so a
    /// mark made during the service queues the flow again.
    pub fn unqueue(&self) {
        self.shared.queued.store(false, Ordering::Release);
    }

    /// Bytes the gateway side can take now (the flow's cap, and the budget shared by all flows).
    /// Zero means full: the driver stops reading the stack and is marked ready again once the
    /// gateway has read half of the queue. A flow whose gateway end is gone takes nothing more
    /// (the guest's window closes until the flow ends).
    pub fn up_room(&self) -> usize {
        let mut st = lock(&self.shared.state);
        if st.gateway_gone {
            return 0;
        }
        let room = self.shared.budget().room(st.up_bytes, UP_QUEUE_BYTES);
        if room == 0 {
            st.up_starved = true;
        }
        room
    }

    /// Queues guest bytes for the gateway.
    pub fn push_up(&self, chunk: Bytes) {
        let reader = {
            let mut st = lock(&self.shared.state);
            st.up_bytes += chunk.len();
            self.shared.budget().add(chunk.len());
            st.up.push_back(chunk);
            st.reader.take()
        };
        wake(reader);
    }

    /// The guest sent FIN: the gateway reads EOF after the queued bytes.
    pub fn finish_up(&self) {
        let reader = {
            let mut st = lock(&self.shared.state);
            st.up_fin = true;
            st.reader.take()
        };
        wake(reader);
    }

    /// The next thing to send to the guest, if any.
    pub fn pop_down(&self) -> Option<FlowOut> {
        let (out, writer) = {
            let mut st = lock(&self.shared.state);
            match st.down.pop_front() {
                Some(chunk) => {
                    st.down_bytes -= chunk.len();
                    self.shared.budget().sub(chunk.len());
                    // The writer parks only at the cap; wake it at half (hysteresis).
                    let writer = if st.down_bytes <= DOWN_QUEUE_BYTES / 2 {
                        st.writer.take()
                    } else {
                        None
                    };
                    (Some(FlowOut::Data(chunk)), writer)
                }
                None if st.down_shutdown || st.gateway_gone => (Some(FlowOut::Shutdown), None),
                None => (None, None),
            }
        };
        wake(writer);
        out
    }
}

impl Drop for DriverEnds {
    fn drop(&mut self) {
        let (reader, writer) = {
            let mut st = lock(&self.shared.state);
            st.driver_gone = true;
            st.release_up(self.shared.budget());
            st.release_down(self.shared.budget());
            (st.reader.take(), st.writer.take())
        };
        wake(reader);
        wake(writer);
    }
}

impl AsyncRead for FlowStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let resume_driver = {
            let mut st = lock(&self.shared.state);
            let Some(front) = st.up.front_mut() else {
                if st.up_fin || st.driver_gone {
                    return Poll::Ready(Ok(())); // guest finished: EOF
                }
                park(&mut st.reader, cx);
                return Poll::Pending;
            };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            if n == front.len() {
                st.up.pop_front();
            } else {
                let _ = front.split_to(n);
            }
            st.up_bytes -= n;
            self.shared.budget().sub(n);
            let resume = st.up_starved && st.up_bytes <= UP_QUEUE_BYTES / 2;
            if resume {
                st.up_starved = false;
            }
            resume
        };
        if resume_driver {
            self.shared.mark();
        }
        Poll::Ready(Ok(()))
    }
}

impl FlowStream {
    /// Queues at most [`MAX_CHUNK`] of `len` offered bytes, made by `make(n)`; waits while the
    /// queue is at its cap.
    fn push_down(
        &self,
        cx: &mut Context<'_>,
        len: usize,
        make: impl FnOnce(usize) -> Bytes,
    ) -> Poll<std::io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        let room = {
            let mut st = lock(&self.shared.state);
            if st.driver_gone {
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            let room = self.shared.budget().room(st.down_bytes, DOWN_QUEUE_BYTES);
            if room == 0 {
                // Woken by the driver taking this flow's queued bytes (there are some: the
                // budget never holds a flow below its floor).
                park(&mut st.writer, cx);
                return Poll::Pending;
            }
            room
        };
        // Copy outside the lock; only this stream adds to the queue, so the room seen above
        // can only have grown (or shrunk by other flows' use of the budget: a small overshoot).
        let n = len.min(MAX_CHUNK).min(room);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let chunk = make(n);
        let was_empty = {
            let mut st = lock(&self.shared.state);
            if st.driver_gone {
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            let was_empty = st.down.is_empty();
            st.down_bytes += n;
            self.shared.budget().add(n);
            st.down.push_back(chunk);
            was_empty
        };
        // A non-empty queue is already known to the driver: it drains until empty or until
        // the stack is full, and the stack's writable event brings it back.
        if was_empty {
            self.shared.mark();
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for FlowStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push_down(cx, data.len(), |n| Bytes::copy_from_slice(&data[..n]))
    }

    /// Gathers the slices into one chunk. Saying yes to vectored writes matters: hyper then
    /// queues body buffers and hands them here as they are, instead of first flattening them
    /// into its own write buffer (one copy per byte less on every HTTP response).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum();
        self.push_down(cx, total, |n| {
            let mut chunk = bytes::BytesMut::with_capacity(n);
            for b in bufs {
                let take = b.len().min(n - chunk.len());
                chunk.extend_from_slice(&b[..take]);
                if chunk.len() == n {
                    break;
                }
            }
            chunk.freeze()
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.shut {
            self.shut = true;
            lock(&self.shared.state).down_shutdown = true;
            self.shared.mark();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for FlowStream {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.gateway_gone = true;
            st.release_up(self.shared.budget());
            st.reader = None;
            st.writer = None;
        }
        // The driver sends what is queued, then FIN.
        self.shared.mark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ids(ready: &ReadyList) -> Vec<FlowId> {
        let mut v = Vec::new();
        ready.take(&mut v);
        v
    }

    #[tokio::test]
    async fn writes_queue_until_the_cap_and_resume_at_half() {
        let ready = ReadyList::new();
        let (mut stream, ends) = pair(FlowId(7), ready.clone());
        let chunk = vec![1u8; MAX_CHUNK];
        for _ in 0..DOWN_QUEUE_BYTES / MAX_CHUNK {
            stream.write_all(&chunk).await.expect("write");
        }
        // One mark for the first chunk only (the driver drains a non-empty queue on its own).
        assert_eq!(ids(&ready), vec![FlowId(7)]);
        // Full: the next write waits.
        let blocked = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            stream.write_all(&chunk),
        )
        .await;
        assert!(blocked.is_err(), "a write past the cap must wait");
        // Draining one chunk (3/4 full) does not wake; two (half) does.
        assert!(matches!(ends.pop_down(), Some(FlowOut::Data(d)) if d.len() == MAX_CHUNK));
        assert!(matches!(ends.pop_down(), Some(FlowOut::Data(_))));
        tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&chunk))
            .await
            .expect("writer resumes at half")
            .expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut data = 0;
        loop {
            match ends.pop_down() {
                Some(FlowOut::Data(d)) => data += d.len(),
                Some(FlowOut::Shutdown) => break,
                None => panic!("shutdown must follow the data"),
            }
        }
        assert_eq!(data, DOWN_QUEUE_BYTES - MAX_CHUNK);
    }

    #[tokio::test]
    async fn reads_see_data_then_eof_and_a_starved_driver_is_marked() {
        let ready = ReadyList::new();
        let (mut stream, ends) = pair(FlowId(3), ready.clone());
        let mut pushed = 0;
        while ends.up_room() > 0 {
            ends.push_up(Bytes::from(vec![2u8; 64 * 1024]));
            pushed += 64 * 1024;
        }
        assert_eq!(pushed, UP_QUEUE_BYTES);
        ends.finish_up();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        let mut marked_at = None;
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got += n;
            if marked_at.is_none() && !ids(&ready).is_empty() {
                marked_at = Some(got);
            }
        }
        assert_eq!(got, UP_QUEUE_BYTES);
        assert_eq!(marked_at, Some(UP_QUEUE_BYTES / 2));
    }

    #[tokio::test]
    async fn the_shared_budget_holds_flows_to_their_floor_and_is_given_back() {
        let limit = 4 * FLOW_QUEUE_FLOOR;
        let ready = ReadyList::with_budget(limit);
        let (_s1, e1) = pair(FlowId(1), ready.clone());
        // One flow takes the whole budget (its own cap is larger).
        while e1.up_room() > 0 {
            e1.push_up(Bytes::from(vec![0u8; FLOW_QUEUE_FLOOR]));
        }
        assert_eq!(ready.queued_bytes(), limit);
        assert!(
            ready.take_pushed_back(),
            "the budget, not the flow's cap, stopped it"
        );
        assert!(!ready.take_pushed_back(), "taken once");
        // Another flow still gets its floor each way, and no more.
        let (mut s2, e2) = pair(FlowId(2), ready.clone());
        assert_eq!(e2.up_room(), FLOW_QUEUE_FLOOR);
        e2.push_up(Bytes::from(vec![0u8; FLOW_QUEUE_FLOOR]));
        assert_eq!(e2.up_room(), 0);
        s2.write_all(&vec![1u8; FLOW_QUEUE_FLOOR])
            .await
            .expect("floor");
        let blocked = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            s2.write_all(&[1u8; 1]),
        )
        .await;
        assert!(
            blocked.is_err(),
            "past the floor with the budget spent, writes wait"
        );
        // Draining that flow wakes its writer.
        assert!(matches!(e2.pop_down(), Some(FlowOut::Data(_))));
        tokio::time::timeout(std::time::Duration::from_secs(1), s2.write_all(&[1u8; 1]))
            .await
            .expect("writer resumes")
            .expect("write");
        // Both ends of both flows gone: every byte is back.
        drop((e1, e2, s2));
        assert_eq!(ready.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn either_side_going_away_ends_the_other() {
        let ready = ReadyList::new();
        let (mut stream, ends) = pair(FlowId(1), ready.clone());
        stream.write_all(b"last words").await.expect("write");
        drop(stream);
        assert!(matches!(ends.pop_down(), Some(FlowOut::Data(d)) if &d[..] == b"last words"));
        assert!(matches!(ends.pop_down(), Some(FlowOut::Shutdown)));
        assert_eq!(
            ends.up_room(),
            0,
            "no more guest bytes for a gateway that left"
        );

        let (mut stream, ends) = pair(FlowId(2), ready);
        drop(ends);
        let mut buf = [0u8; 8];
        assert_eq!(stream.read(&mut buf).await.expect("read"), 0);
        assert!(stream.write_all(b"x").await.is_err());
    }
}

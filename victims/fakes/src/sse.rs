//! The SSE streaming probe: `GET /sse` and `GET /ack`, served by every fake.
//!
//! `/sse` sends `data: first\n\n` at once, then holds the response open until some client sends
//! `GET /ack` (on any connection, to any fake) or [`SSE_ACK_TIMEOUT`] passes, then sends
//! `data: last\n\n` and ends. A client that reads `first` and then acks proves that whatever
//! sits between it and the fake forwards events as they come; a buffering proxy withholds
//! `first`, so the ack never comes before the timeout and the probe records that.
//!
//! Owns: the ack counter and the outcome of each stream. Does not own: routing (see `server`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::body::ResBody;

/// How long `/sse` waits for `/ack` before sending its last event anyway.
pub const SSE_ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// The first event `/sse` sends.
pub const SSE_FIRST_EVENT: &[u8] = b"data: first\n\n";
/// The last event `/sse` sends.
pub const SSE_LAST_EVENT: &[u8] = b"data: last\n\n";

/// Shared by all fakes: counts acks and remembers how each stream ended.
#[derive(Debug)]
pub(crate) struct SseProbe {
    /// Number of `/ack` requests so far; a stream waits for it to grow past its start value.
    acks: watch::Sender<u64>,
    /// For each finished stream, in order: whether an ack arrived before `last` was sent.
    outcomes: Mutex<Vec<bool>>,
}

impl Default for SseProbe {
    fn default() -> Self {
        Self {
            acks: watch::Sender::new(0),
            outcomes: Mutex::new(Vec::new()),
        }
    }
}

impl SseProbe {
    /// Counts one `/ack`, waking every waiting stream.
    pub(crate) fn ack(&self) {
        self.acks.send_modify(|n| *n += 1);
    }

    /// The outcome of every stream that has sent `last`, oldest first.
    pub(crate) fn outcomes(&self) -> Vec<bool> {
        self.lock().clone()
    }

    /// The body of one `/sse` response. Acks counted before this call do not release it.
    pub(crate) fn stream(self: &Arc<Self>) -> ResBody {
        let mut acks = self.acks.subscribe();
        let start = *acks.borrow_and_update();
        let probe = Arc::clone(self);
        let wait = async move {
            let acked = tokio::time::timeout(SSE_ACK_TIMEOUT, async {
                acks.wait_for(|n| *n > start).await.map(|_| ())
            })
            .await;
            // A closed channel means the fakes are shutting down: that is no ack either.
            let seen = matches!(acked, Ok(Ok(())));
            // Recorded before `last` is handed to hyper, so a client that has read `last`
            // always finds this stream's outcome.
            probe.lock().push(seen);
        };
        AckStream {
            state: State::First(Box::pin(wait)),
        }
        .boxed_unsync()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<bool>> {
        // Pushes are single operations: a poisoned lock still guards a consistent list.
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

enum State {
    /// `first` not yet sent; the wait starts after it.
    First(Wait),
    /// `first` sent, waiting for an ack or the timeout.
    Waiting(Wait),
    /// `last` sent.
    Done,
}

/// The `/sse` body: `first`, then (after the wait) `last`, as separate chunks.
struct AckStream {
    state: State,
}

impl Body for AckStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::First(wait) => {
                self.state = State::Waiting(wait);
                // Returning `Pending` on the next poll is what makes hyper flush this frame.
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(SSE_FIRST_EVENT)))))
            }
            State::Waiting(mut wait) => match wait.as_mut().poll(cx) {
                Poll::Pending => {
                    self.state = State::Waiting(wait);
                    Poll::Pending
                }
                Poll::Ready(()) => {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(SSE_LAST_EVENT)))))
                }
            },
            State::Done => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

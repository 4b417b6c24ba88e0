//! Response bodies the fakes send: whole buffers and pre-split chunk lists.
//!
//! Owns: the one boxed body type every handler returns. Does not own: the SSE probe's
//! waiting body (see `sse`), which is another implementation of the same trait.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// The body type of every fake response.
pub(crate) type ResBody = UnsyncBoxBody<Bytes, Infallible>;

/// A body sent in one piece (hyper sets `content-length`).
pub(crate) fn full(bytes: impl Into<Bytes>) -> ResBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// A body sent as these separate frames with no known length, so hyper uses
/// `transfer-encoding: chunked` — as real servers do for generated pages and event streams.
pub(crate) fn chunks(parts: impl IntoIterator<Item = Bytes>) -> ResBody {
    Chunks {
        parts: parts.into_iter().collect(),
    }
    .boxed_unsync()
}

struct Chunks {
    parts: VecDeque<Bytes>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.parts.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    // The default size hint (unknown length) is what makes hyper chunk the response.
}

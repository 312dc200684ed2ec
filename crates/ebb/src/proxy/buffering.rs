//! Optional request buffering (`request_buffering`): a small request body is
//! read whole before a replica is picked, as nginx does by default.
//!
//! A replica that serves one request per thread or process (many Python and
//! Ruby apps) is busy from the moment a request reaches it until the
//! response ends; a client that uploads slowly keeps it busy the whole time,
//! and under `max_in_flight` holds one of its few slots. Reading the body
//! first means the replica gets the request whole, at loopback speed.
//!
//! Only bodies up to the limit are held: a body announced larger
//! (`Content-Length`) is not read ahead at all, and one found larger while
//! reading (chunked, or HTTP/2 without a length) streams on after the part
//! already read. Each read must come within `body_timeout`: for HTTP/1 the
//! connection wrapper keeps that deadline on the socket (and answers 408);
//! an HTTP/2 stream has no such wrapper, so it is kept here.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};

use super::upstream::{classify_body_error, ClientBodyFailure};

/// What was read ahead of a request body.
pub(crate) enum ReadAhead {
    /// The whole body.
    Whole(VecDeque<Frame<Bytes>>),
    /// The first frames, then the rest still to come from the client.
    Partial(VecDeque<Frame<Bytes>>, Incoming),
    /// Nothing: the body is announced larger than the limit.
    None(Incoming),
}

/// Reads `body` ahead, up to `limit` bytes. `per_read`: the longest wait for
/// the client's next frame, when no one else keeps it.
pub(crate) async fn read_ahead(
    mut body: Incoming,
    limit: usize,
    per_read: Option<Duration>,
) -> Result<ReadAhead, ClientBodyFailure> {
    if body.size_hint().lower() > limit as u64 {
        return Ok(ReadAhead::None(body));
    }
    let mut frames = VecDeque::new();
    let mut read = 0usize;
    loop {
        if read >= limit {
            return Ok(ReadAhead::Partial(frames, body));
        }
        let next = match per_read {
            Some(wait) => match tokio::time::timeout(wait, body.frame()).await {
                Ok(next) => next,
                Err(_) => return Err(ClientBodyFailure::TimedOut),
            },
            None => body.frame().await,
        };
        match next {
            None => return Ok(ReadAhead::Whole(frames)),
            Some(Err(error)) => {
                let failure = classify_body_error(&error);
                tracing::debug!(%error, ?failure, "Client's request body failed while it was read ahead.");
                return Err(failure);
            }
            Some(Ok(frame)) => {
                read += frame.data_ref().map_or(0, |d| d.len());
                frames.push_back(frame);
            }
        }
    }
}

//! One HTTP/1.1 connection to a replica, spoken by the balancer itself.
//!
//! hyper's client connection cost a third of the balancer's instructions
//! per request (a channel between the request and the connection, another
//! for the response body, its generic state machine). This one does only
//! what a proxy needs: it writes the request head the balancer already
//! checked, streams the body up (`Content-Length` as given, else chunked),
//! and follows the response with [`crate::http1::Reader`], the reader
//! `ebb load` uses (property- and httparse-differential-tested in
//! `http1/props.rs`; the balancer's side in `upstream_conn_props.rs`). The
//! response's head and body are slices of the bytes read: nothing is copied.
//!
//! Sending and receiving overlap: while the response head or body is read,
//! the rest of the request body keeps going up (a replica may answer before
//! it has read everything, or stream an echo). Nothing runs in a task of its
//! own: whoever waits for the response drives the connection (see
//! `upstream.rs`).
//!
//! A connection carries another request only when the last one ended as
//! HTTP/1.1 says it may: the request fully written, the response read to the
//! end of its framing, no `Connection: close`, not read until close.
//! Upgrade requests (WebSocket) do not come here: `upgrade.rs` keeps them on
//! hyper, which hands the socket over to the tunnel.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, StatusCode, Version};
use hyper::body::Body;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::headers::Forwarding;
use super::upstream::RequestBody;
use crate::http1::{self, Reader, Sink, Step};

/// Read this much at a time (more when a head is longer; the reader bounds
/// a head at [`http1::MAX_HEAD`]).
const READ_CHUNK: usize = 16 * 1024;

/// Why a connection failed a request.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The socket failed (reset, refused write...).
    Io(io::Error),
    /// The replica closed the connection before the response ended.
    Closed,
    /// The response is not HTTP/1.x as a proxy can relay it.
    Malformed(&'static str),
    /// The replica answered 101 to a request that did not ask to upgrade.
    SwitchedUnasked,
    /// The client's request body failed on the way up (what the
    /// `BodyWatch` recorded says how).
    ClientBody,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Closed => f.write_str("connection closed before the response ended"),
            ConnError::Malformed(why) => write!(f, "malformed response: {why}"),
            ConnError::SwitchedUnasked => f.write_str("101 Switching Protocols to a request that did not ask"),
            ConnError::ClientBody => f.write_str("the client's request body failed"),
        }
    }
}

impl std::error::Error for ConnError {}

impl From<http1::Bad> for ConnError {
    fn from(bad: http1::Bad) -> Self {
        match bad {
            http1::Bad::Ended => ConnError::Closed,
            http1::Bad::Malformed(http1::UNASKED_SWITCH) => ConnError::SwitchedUnasked,
            http1::Bad::Malformed(why) => ConnError::Malformed(why),
        }
    }
}

/// A request body going up.
struct Upload {
    body: RequestBody,
    /// `Some(n)`: `Content-Length`, n bytes still to come; `None`: chunked.
    left: Option<u64>,
    /// The body ended (its last chunk is in `out`).
    ended: bool,
}

/// One HTTP/1.1 connection to a replica.
pub(crate) struct UpstreamConn {
    io: TcpStream,
    /// Bytes read and not yet followed by the reader.
    read: BytesMut,
    /// Bytes to write (the head, then the body's data and framing) and how
    /// many of them are written.
    out: Vec<u8>,
    written: usize,
    upload: Option<Upload>,
    /// Bytes of this request written so far (an unsent request is one with
    /// none).
    sent_any: bool,
    reader: Reader,
    /// The final head, once read.
    head: Option<http::response::Parts>,
    /// Body bytes read and not yet handed over.
    ready: VecDeque<Bytes>,
    /// The response ended: whether the replica lets the connection carry
    /// another request.
    ended: Option<bool>,
    /// The connection can carry no more requests (an error, or the request
    /// body did not finish).
    broken: bool,
    /// Where the sink puts what one `feed_to` found.
    found: Found,
}

impl UpstreamConn {
    pub(crate) fn new(io: TcpStream) -> Self {
        UpstreamConn {
            io,
            read: BytesMut::new(),
            out: Vec::new(),
            written: 0,
            upload: None,
            sent_any: false,
            reader: Reader::new(false),
            head: None,
            ready: VecDeque::new(),
            ended: Some(true),
            broken: false,
            found: Found::default(),
        }
    }

    /// Idle, open, and the replica has neither closed it nor sent anything
    /// unasked (bytes after a response already made it not reusable). Costs
    /// no system call unless the socket became readable.
    pub(crate) fn still_open(&mut self) -> bool {
        if !self.reusable() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The last response ended and the connection may carry another request.
    pub(crate) fn reusable(&self) -> bool {
        self.ended == Some(true) && !self.broken && self.upload.is_none() && self.written == self.out.len()
    }

    /// Starts a request: its head is written on the next poll. The head is
    /// the balancer's, already checked (origin-form target, hop-by-hop
    /// headers gone); its body goes up with its `Content-Length`, or chunked
    /// when it has none.
    pub(crate) fn start(&mut self, parts: &request::Parts, forwarding: &Forwarding, body: RequestBody) {
        debug_assert!(self.reusable());
        let bodiless = body.is_end_stream();
        let length = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| http1::decimal(v.as_bytes()));
        let chunked = !bodiless && length.is_none();
        self.out.clear();
        self.written = 0;
        http1::write_request_head(&mut self.out, &parts.method, &parts.uri, &parts.headers);
        http1::write_header_lines(&mut self.out, forwarding.lines());
        if chunked {
            self.out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        let head_request = parts.method == Method::HEAD;
        self.reader = Reader::new(head_request);
        self.found.head_request = head_request;
        self.head = None;
        self.ready.clear();
        self.ended = None;
        self.sent_any = false;
        let left = if chunked { None } else { Some(length.unwrap_or(0)) };
        self.upload = Some(Upload { body, left, ended: bodiless && !chunked });
    }

    /// The request's body, when nothing of the request was written (the
    /// connection failed first): the request may go out on another
    /// connection as it is.
    pub(crate) fn take_unsent(&mut self) -> Option<RequestBody> {
        if self.sent_any {
            return None;
        }
        self.broken = true;
        Some(self.upload.take()?.body)
    }

    /// Drives the connection until the response head arrives.
    pub(crate) fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<http::response::Parts, ConnError>> {
        loop {
            if let Some(head) = self.head.take() {
                return Poll::Ready(Ok(head));
            }
            self.poll_upload(cx)?;
            match self.poll_read(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next piece of the response body: `None` at its end.
    pub(crate) fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ConnError>>> {
        loop {
            if let Some(data) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(data)));
            }
            if self.ended.is_some() {
                // Whatever is left of the request body goes on being sent
                // only while the response lasts.
                if self.upload.is_some() || self.written != self.out.len() {
                    self.broken = true;
                }
                return Poll::Ready(None);
            }
            if let Err(e) = self.poll_upload(cx) {
                return Poll::Ready(Some(Err(e)));
            }
            match self.poll_read(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The response body has nothing more to give.
    pub(crate) fn body_ended(&self) -> bool {
        self.ready.is_empty() && self.ended.is_some()
    }

    /// Reads once (or follows bytes already read), and feeds the reader.
    /// `Ready(Ok)`: something changed, look again.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        if self.ended.is_some() {
            return Poll::Ready(Ok(()));
        }
        // Bytes still here were left by the reader (an incomplete head):
        // more must come before it can go on.
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        // `poll_read` (not `try_read`): tokio forgets the socket's readiness
        // after a short read, so neither the next read nor the pool's check
        // (`still_open`) costs a system call that finds nothing.
        let n = match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(self.read_failed(e))),
            Poll::Ready(Ok(n)) => n,
        };
        if n == 0 {
            self.broken = true;
            return match self.reader.eof() {
                Ok(_) => {
                    self.ended = Some(false);
                    Poll::Ready(Ok(()))
                }
                Err(bad) => Poll::Ready(Err(bad.into())),
            };
        }
        self.follow()?;
        Poll::Ready(Ok(()))
    }

    fn read_failed(&mut self, error: io::Error) -> ConnError {
        self.broken = true;
        ConnError::Io(error)
    }

    /// Feeds what was read to the reader, and takes the head and body
    /// bytes it found.
    fn follow(&mut self) -> Result<(), ConnError> {
        self.found.data.clear();
        let (used, step) = match self.reader.feed_to(&self.read, &mut self.found) {
            Ok(fed) => fed,
            Err(bad) => {
                self.broken = true;
                return Err(bad.into());
            }
        };
        let taken = self.read.split_to(used).freeze();
        if let Some(head) = self.found.head.take() {
            self.head = Some(head.into_parts(&taken)?);
        }
        for &(at, len) in &self.found.data {
            self.ready.push_back(taken.slice(at..at + len));
        }
        if let Step::Done(response) = step {
            self.ended = Some(response.reusable);
            if !self.read.is_empty() {
                // Bytes after the response: the replica is not speaking
                // HTTP/1.1 as asked.
                self.broken = true;
            }
        }
        Ok(())
    }

    /// Writes what can be written of the request; `Err` when the socket or
    /// the client's body failed. A write failure is not yet an error while
    /// the response may still be read: it is returned only when nothing of
    /// the request went out (so it is unsent) or there is no response.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), ConnError> {
        loop {
            while self.written < self.out.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(Ok(0)) => return self.upload_failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        self.sent_any = true;
                    }
                    Poll::Ready(Err(e)) => return self.upload_failed(e),
                }
            }
            self.out.clear();
            self.written = 0;
            let Some(upload) = self.upload.as_mut() else { return Ok(()) };
            if upload.ended {
                self.upload = None;
                return Ok(());
            }
            match Pin::new(&mut upload.body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => {
                    match upload.left {
                        None => self.out.extend_from_slice(b"0\r\n\r\n"),
                        Some(0) => {}
                        // The client's framing guarantees its length
                        // (hyper's server, h2): a shorter body is its fault.
                        Some(_) => return self.client_body_failed(),
                    }
                    upload.ended = true;
                }
                Poll::Ready(Some(Err(_))) => return self.client_body_failed(),
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not sent up (an HTTP/1.1 replica that
                    // wants them would have to say so in TE).
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    match upload.left.as_mut() {
                        None => {
                            let _ = write!(self.out, "{:x}\r\n", data.len());
                            self.out.extend_from_slice(&data);
                            self.out.extend_from_slice(b"\r\n");
                        }
                        Some(left) if *left >= data.len() as u64 => {
                            *left -= data.len() as u64;
                            self.out.extend_from_slice(&data);
                        }
                        Some(_) => return self.client_body_failed(),
                    }
                }
            }
        }
    }

    fn upload_failed(&mut self, error: io::Error) -> Result<(), ConnError> {
        self.broken = true;
        if !self.sent_any {
            // Unsent: `take_unsent` hands it back.
            return Err(ConnError::Io(error));
        }
        tracing::debug!(%error, "Writing the request to a replica failed; reading its answer, if any.");
        // Stop sending; the response (if the replica sent one) still counts.
        self.upload = None;
        self.out.clear();
        self.written = 0;
        Ok(())
    }

    fn client_body_failed(&mut self) -> Result<(), ConnError> {
        self.broken = true;
        self.upload = None;
        Err(ConnError::ClientBody)
    }
}

/// What one [`Reader::feed_to`] found: the final head's pieces and where
/// the body's bytes are.
#[derive(Default)]
struct Found {
    /// The request was HEAD (its answer has no body to frame).
    head_request: bool,
    head: Option<FoundHead>,
    data: Vec<(usize, usize)>,
}

/// A final head as positions in the bytes fed (made into `http` types
/// once those bytes are frozen, so values are slices, not copies).
struct FoundHead {
    status: StatusCode,
    version: Version,
    headers: Vec<(HeaderName, usize, usize)>,
}

impl Sink for Found {
    fn head(&mut self, at: usize, input: &[u8], head: &httparse::Response<'_, '_>) -> Result<(), http1::Bad> {
        let status =
            head.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(http1::Bad::Malformed("invalid status code"))?;
        let version = if head.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        let bodiless = self.head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let base = input.as_ptr() as usize;
        let mut headers = Vec::with_capacity(head.headers.len());
        for header in head.headers.iter() {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| http1::Bad::Malformed("invalid header name"))?;
            if version == Version::HTTP_10 && name == http::header::TRANSFER_ENCODING && !bodiless {
                // Faulty framing (RFC 9112 section 6.1), refused like
                // hyper's client does.
                return Err(http1::Bad::Malformed("Transfer-Encoding in an HTTP/1.0 response"));
            }
            let offset = header.value.as_ptr() as usize - base;
            headers.push((name, at + offset, header.value.len()));
        }
        self.head = Some(FoundHead { status, version, headers });
        Ok(())
    }

    fn data(&mut self, at: usize, len: usize) {
        self.data.push((at, len));
    }
}

impl FoundHead {
    fn into_parts(self, bytes: &Bytes) -> Result<http::response::Parts, ConnError> {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, at, len) in self.headers {
            let value = HeaderValue::from_maybe_shared(bytes.slice(at..at + len))
                .map_err(|_| ConnError::Malformed("invalid header value"))?;
            map.append(name, value);
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.version = self.version;
        parts.headers = map;
        Ok(parts)
    }
}

#[cfg(test)]
#[path = "upstream_conn_tests.rs"]
mod tests;

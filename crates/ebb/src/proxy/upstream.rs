//! Connections to backends: HTTP/1.1, kept alive and pooled per backend.
//!
//! An [`Upstream`] is one [`UpstreamConn`] (ebb's own HTTP/1.1 client
//! connection, `upstream_conn.rs`) with its response deadline. Nothing runs
//! in a task of its own: whoever uses the connection drives it — the request
//! future while sending and waiting for the response head, then the
//! response body as the client reads it. So one request runs in one task,
//! the client connection's, with no hand-off to a second task (and, on the
//! multi-threaded runtime, no hop to another worker) on the way. An idle
//! pooled connection is not polled at all; it is checked when taken from
//! the pool.
//!
//! Upgrade requests (WebSocket) go through `upgrade.rs` instead: a
//! dedicated hyper connection, never pooled.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::headers::Forwarding;
pub(crate) use super::upstream_conn::ConnError;
use super::upstream_conn::UpstreamConn;
use super::worker::{self, MAX_WORKERS};
use super::Backend;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// A request body going upstream: the client's, streamed (with what the
/// balancer learns about it on the way), or empty (a request re-sent to
/// another replica; only bodiless requests are re-sent).
pub(crate) enum RequestBody {
    Client(Incoming, Option<Arc<BodyWatch>>),
    /// Frames read ahead (`request_buffering`), then the rest of the
    /// client's body, if there is more.
    Buffered(std::collections::VecDeque<hyper::body::Frame<bytes::Bytes>>, Option<Box<RequestBody>>),
    Empty,
}

/// How the client broke its request body. This is the client's fault, never
/// the replica's: answered 400 or 408, and not counted as a replica error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientBodyFailure {
    /// Bad chunked framing (a chunk size that does not parse or overflows,
    /// a missing CRLF...).
    Malformed,
    /// The client stalled for `body_timeout` (the connection wrapper has
    /// already answered 408 and closed).
    TimedOut,
    /// The client closed or reset the connection mid-body.
    Gone,
}

/// What the balancer sees of a client's request body while it streams
/// upstream, shared by the body (which records) and [`send`] (which reads).
///
/// It keeps the two deadlines apart: while the body waits for the client,
/// the client's `body_timeout` runs and `upstream_timeout` does not, so a
/// stalled upload ends in the client's 408, never in a 504 charged to the
/// replica. A replica that stops reading the body still gets its 504: the
/// body is then not polled at all, so it is not waiting for the client.
///
/// For HTTP/1 the connection wrapper (`conn_io.rs`) enforces `body_timeout`
/// on the socket. An HTTP/2 stream has no such wrapper, so the watch
/// enforces it itself (`client_limit`).
#[derive(Debug, Default)]
pub(crate) struct BodyWatch {
    times: Mutex<WatchTimes>,
    /// 0: none, else a [`ClientBodyFailure`] + 1.
    failure: AtomicU8,
    /// How long the body may wait for the client before it counts as
    /// stalled; `None` when someone else enforces it.
    client_limit: Option<Duration>,
}

#[derive(Debug, Default)]
struct WatchTimes {
    /// Since when the body has been waiting for the client's next bytes.
    waiting_since: Option<Instant>,
    /// When the body last stopped waiting for the client.
    resumed: Option<Instant>,
}

impl BodyWatch {
    /// `client_limit`: see the field.
    pub(crate) fn new(client_limit: Option<Duration>) -> Self {
        BodyWatch { client_limit, ..BodyWatch::default() }
    }

    fn times(&self) -> std::sync::MutexGuard<'_, WatchTimes> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn failure(&self) -> Option<ClientBodyFailure> {
        match self.failure.load(Ordering::Relaxed) {
            1 => Some(ClientBodyFailure::Malformed),
            2 => Some(ClientBodyFailure::TimedOut),
            3 => Some(ClientBodyFailure::Gone),
            _ => None,
        }
    }

    fn record_failure(&self, error: &hyper::Error) {
        let failure = classify_body_error(error);
        tracing::debug!(%error, ?failure, "Client's request body failed.");
        self.set_failure(failure);
    }

    fn set_failure(&self, failure: ClientBodyFailure) {
        let code = match failure {
            ClientBodyFailure::Malformed => 1,
            ClientBodyFailure::TimedOut => 2,
            ClientBodyFailure::Gone => 3,
        };
        let _ = self.failure.compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn observe<T>(&self, polled: &Poll<Option<Result<T, hyper::Error>>>) {
        match polled {
            Poll::Pending => {
                let mut times = self.times();
                if times.waiting_since.is_none() {
                    times.waiting_since = Some(Instant::now());
                }
            }
            Poll::Ready(Some(Err(error))) => {
                self.times().waiting_since = None;
                self.record_failure(error);
            }
            Poll::Ready(_) => {
                let mut times = self.times();
                if times.waiting_since.take().is_some() {
                    times.resumed = Some(Instant::now());
                }
            }
        }
    }

    /// When the replica's response head is due, given `deadline` (dispatch +
    /// `upstream_timeout`), at `now`: never while the body waits for the
    /// client, and at least `timeout` after the body last stopped waiting.
    /// A body that waited for the client past `client_limit` is recorded as
    /// stalled, and due at once.
    fn response_due(&self, deadline: Instant, timeout: Duration, now: Instant) -> Instant {
        let times = self.times();
        if let Some(since) = times.waiting_since {
            return match self.client_limit {
                Some(limit) if now >= since + limit => {
                    drop(times);
                    self.set_failure(ClientBodyFailure::TimedOut);
                    now
                }
                Some(limit) => since + limit,
                None => now + timeout,
            };
        }
        match times.resumed {
            Some(resumed) => deadline.max(resumed + timeout),
            None => deadline,
        }
    }
}

/// Sorts a client body error (as hyper's server reports it) by whose fault
/// it is and what to answer.
pub(crate) fn classify_body_error(error: &hyper::Error) -> ClientBodyFailure {
    if error.is_incomplete_message() {
        return ClientBodyFailure::Gone;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::TimedOut => ClientBodyFailure::TimedOut,
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => ClientBodyFailure::Gone,
                _ => ClientBodyFailure::Malformed,
            };
        }
        source = cause.source();
    }
    ClientBodyFailure::Malformed
}

impl hyper::body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Client(body, watch) => {
                let polled = std::pin::Pin::new(body).poll_frame(cx);
                if let Some(watch) = watch {
                    watch.observe(&polled);
                }
                polled
            }
            RequestBody::Buffered(frames, rest) => match frames.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => match rest {
                    Some(rest) => std::pin::Pin::new(rest.as_mut()).poll_frame(cx),
                    None => Poll::Ready(None),
                },
            },
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body, _) => body.is_end_stream(),
            RequestBody::Buffered(frames, rest) => frames.is_empty() && rest.as_ref().is_none_or(|r| r.is_end_stream()),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            RequestBody::Client(body, _) => body.size_hint(),
            RequestBody::Buffered(frames, rest) => {
                let held: u64 = frames.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
                let rest = rest.as_ref().map_or(hyper::body::SizeHint::with_exact(0), |r| r.size_hint());
                let mut hint = hyper::body::SizeHint::new();
                hint.set_lower(held + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(held + upper);
                }
                hint
            }
            RequestBody::Empty => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// Idle connections kept per backend and worker thread; more are closed when
/// they come back.
pub(crate) const MAX_IDLE_PER_SHARD: usize = 512;

/// A pooled connection unused for this long is closed when the pool is next
/// touched (rather than sitting half-closed after the replica timed it out).
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A backend's idle connections, one shard per balancer worker thread: a
/// connection is registered with its thread's event loop, so it is only
/// reused there, and the shard's lock is never contended.
pub(crate) struct Pool {
    /// Oldest first; taken from and returned to the back (the warmest).
    shards: Box<[Mutex<VecDeque<Upstream>>]>,
}

impl Pool {
    pub(crate) fn new() -> Self {
        Pool { shards: (0..MAX_WORKERS).map(|_| Mutex::new(VecDeque::new())).collect() }
    }

    fn shard(&self) -> std::sync::MutexGuard<'_, VecDeque<Upstream>> {
        let shard = &self.shards[worker::index() % MAX_WORKERS];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// A connection to one backend.
pub(crate) struct Upstream {
    /// Boxed: a connection moves in and out of the pool and the dispatch
    /// with every request.
    pub(crate) conn: Box<UpstreamConn>,
    /// The response-head deadline's timer and the instant it is set for.
    timer: Option<(Pin<Box<Sleep>>, Instant)>,
    /// When the last request was sent on it.
    last_used: Option<Instant>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("reusable", &self.conn.reusable()).finish()
    }
}

#[derive(Debug)]
pub(crate) enum ConnectError {
    TimedOut,
    Io(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::TimedOut => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Handshake(e) => write!(f, "{e}"),
        }
    }
}

/// Opens a TCP connection (TCP_NODELAY) within `timeout`.
pub(crate) async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::TimedOut),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Opens a new connection within `timeout`.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Upstream, ConnectError> {
    let tcp = connect_tcp(addr, timeout).await?;
    Ok(Upstream { conn: Box::new(UpstreamConn::new(tcp)), timer: None, last_used: None })
}

/// Why [`send`] returned no response.
pub(crate) enum SendError {
    /// No response head within the deadline (the request may have been
    /// sent: never retried).
    TimedOut,
    /// The connection failed; `unsent` holds the request's body if none of
    /// the request was written (it may go out on another connection).
    Failed { error: ConnError, unsent: Option<RequestBody> },
    /// The replica failed while the request waited for its head (see
    /// `Backend::abandon`); the connection is dropped.
    Abandoned,
}

/// How often a resendable request waiting for its head looks whether its
/// replica failed (`Backend::abandon`).
pub(crate) const ABANDON_CHECK: Duration = Duration::from_millis(250);

/// Sends `head` and `body` on `up`, driving the connection until the response head (or
/// an error) arrives, or `timeout` passes (not counting time the request
/// body spends waiting for the client: see [`BodyWatch`]). With `abandon`
/// (a request that may be sent again), it also ends as
/// [`SendError::Abandoned`] within [`ABANDON_CHECK`] of that replica
/// failing.
///
/// The deadline uses the connection's own timer, re-armed only when it fires
/// early: a request costs a clock read, not a timer registration.
pub(crate) async fn send(
    up: &mut Upstream,
    head: &http::request::Parts,
    forwarding: &Forwarding,
    body: RequestBody,
    timeout: Duration,
    watch: Option<&BodyWatch>,
    abandon: Option<&Backend>,
) -> Result<http::response::Parts, SendError> {
    let now = Instant::now();
    up.last_used = Some(now);
    let deadline = now + timeout;
    // The next time to wake: the deadline, or sooner to look at `abandon`.
    let wake = |due: Instant, now: Instant| match abandon {
        Some(_) => due.min(now + ABANDON_CHECK),
        None => due,
    };
    let first = wake(deadline, now);
    up.conn.start(head, forwarding, body);
    let mut checked_timer = false;
    std::future::poll_fn(|cx| {
        match up.conn.poll_head(cx) {
            Poll::Ready(Ok(head)) => return Poll::Ready(Ok(head)),
            Poll::Ready(Err(error)) => {
                let unsent = up.conn.take_unsent();
                return Poll::Ready(Err(SendError::Failed { error, unsent }));
            }
            Poll::Pending => {}
        }
        let timer = up.timer.get_or_insert_with(|| (Box::pin(tokio::time::sleep_until(first)), first));
        // Once per request: the timer may be set later, for an earlier
        // request on this connection. (Later polls keep any postponement.)
        if !checked_timer {
            checked_timer = true;
            if timer.1 > first {
                timer.0.as_mut().reset(first);
                timer.1 = first;
            }
        }
        loop {
            if timer.0.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if abandon.is_some_and(|b| b.is_abandoned()) {
                return Poll::Ready(Err(SendError::Abandoned));
            }
            let now = Instant::now();
            let due = watch.map_or(deadline, |w| w.response_due(deadline, timeout, now));
            if now >= due {
                return Poll::Ready(Err(SendError::TimedOut));
            }
            // Set for an earlier request, or the body waited for the client,
            // or time to look at `abandon` again: move it on and wait again.
            let next = wake(due, now);
            timer.0.as_mut().reset(next);
            timer.1 = next;
        }
    })
    .await
}

impl Backend {
    /// Takes an idle pooled connection that is still open and ready.
    pub(crate) fn checkout(&self) -> Option<Upstream> {
        loop {
            let mut up = self.pool.shard().pop_back()?;
            if up.conn.still_open() {
                return Some(up);
            }
            // closed by the replica, or it sent something unasked: dropped
            // (outside the lock)
        }
    }

    /// Returns a connection whose last response ended cleanly.
    pub(crate) fn checkin(&self, up: Upstream) {
        if !up.conn.reusable() {
            return;
        }
        let mut stale = None;
        let mut pool = self.pool.shard();
        // The oldest idle connection, if unused for too long, goes (one per
        // check-in is enough to keep up).
        if let (Some(oldest), Some(now)) = (pool.front(), up.last_used) {
            if oldest.last_used.is_some_and(|t| now.saturating_duration_since(t) > POOL_IDLE_TIMEOUT) {
                stale = pool.pop_front();
            }
        }
        if pool.len() < MAX_IDLE_PER_SHARD {
            pool.push_back(up);
        } else {
            stale = Some(up);
        }
        drop(pool);
        drop(stale);
    }

    /// Closes every idle pooled connection (a replica leaving for good).
    pub fn close_idle(&self) {
        for shard in self.pool.shards.iter() {
            let idle = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            drop(idle);
        }
    }

    /// Idle pooled connections right now.
    pub fn idle_connections(&self) -> usize {
        self.pool.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PENDING: Poll<Option<Result<(), hyper::Error>>> = Poll::Pending;
    const FRAME: Poll<Option<Result<(), hyper::Error>>> = Poll::Ready(Some(Ok(())));

    #[test]
    fn the_response_deadline_never_runs_while_the_body_waits_for_the_client() {
        let timeout = Duration::from_secs(60);
        let now = Instant::now();
        let deadline = now + timeout;

        // Nothing waited: the dispatch deadline.
        let watch = BodyWatch::new(None);
        assert_eq!(watch.response_due(deadline, timeout, now), deadline);
        watch.observe(&FRAME);
        assert_eq!(watch.response_due(deadline, timeout, now), deadline);

        // Waiting for the client (HTTP/1: the socket keeps body_timeout):
        // always a full period away, whenever it is asked.
        watch.observe(&PENDING);
        let later = now + Duration::from_secs(600);
        assert_eq!(watch.response_due(deadline, timeout, later), later + timeout);
        assert_eq!(watch.failure(), None);

        // The client sent more: the replica has a full period from then.
        watch.observe(&FRAME);
        let resumed = watch.times().resumed.expect("resumed");
        assert_eq!(watch.response_due(deadline, timeout, later), deadline.max(resumed + timeout));
        assert!(watch.response_due(deadline, timeout, later) >= resumed + timeout);
    }

    #[test]
    fn an_http2_body_waiting_past_its_limit_is_the_clients_timeout() {
        let (timeout, limit) = (Duration::from_secs(60), Duration::from_secs(5));
        let watch = BodyWatch::new(Some(limit));
        watch.observe(&PENDING);
        let since = watch.times().waiting_since.expect("waiting");
        let deadline = since + timeout;
        assert_eq!(watch.response_due(deadline, timeout, since), since + limit);
        assert_eq!(watch.failure(), None);
        let past = since + limit;
        assert_eq!(watch.response_due(deadline, timeout, past), past, "due at once");
        assert_eq!(watch.failure(), Some(ClientBodyFailure::TimedOut));
    }
}

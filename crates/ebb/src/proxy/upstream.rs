//! Connections to backends: HTTP/1.1, kept alive and pooled per backend.
//!
//! An [`Upstream`] is hyper's `SendRequest` together with the connection
//! future that does its I/O. That future is *not* spawned: whoever uses the
//! connection drives it — the request future while sending and waiting for
//! the response head, then the response body as the client reads it. So one
//! request runs in one task, the client connection's, with no hand-off to a
//! second task (and, on the multi-threaded runtime, no hop to another worker)
//! on the way. An idle pooled connection is not polled at all; it is checked
//! when taken from the pool.
//!
//! Upgrade requests (WebSocket) get a dedicated connection whose future runs
//! in its own task with hyper's upgrade support, and is never pooled.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::server::worker_index;
use super::Backend;
use std::collections::VecDeque;
use std::sync::Mutex;

type Connection = http1::Connection<TokioIo<TcpStream>, RequestBody>;

/// A request body going upstream: the client's, streamed, or empty (a
/// request re-sent to another replica; only bodiless requests are re-sent).
pub(crate) enum RequestBody {
    Client(Incoming),
    Empty,
}

impl hyper::body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Client(body) => std::pin::Pin::new(body).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            RequestBody::Client(body) => body.size_hint(),
            RequestBody::Empty => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// Idle connections kept per backend and worker thread; more are closed when
/// they come back.
pub(crate) const MAX_IDLE_PER_SHARD: usize = 512;

/// Upper bound on balancer worker threads: one pool shard each.
pub(crate) const POOL_SHARDS: usize = 64;

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
        Pool { shards: (0..POOL_SHARDS).map(|_| Mutex::new(VecDeque::new())).collect() }
    }

    fn shard(&self) -> std::sync::MutexGuard<'_, VecDeque<Upstream>> {
        let shard = &self.shards[worker_index() % POOL_SHARDS];
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
    pub(crate) send: http1::SendRequest<RequestBody>,
    /// The connection's I/O, driven by [`Upstream::poll_conn`]; `None` when
    /// it runs in its own task (upgrade connections).
    conn: Option<Pin<Box<Connection>>>,
    /// The connection future finished: the connection is closed.
    finished: bool,
    /// The response-head deadline's timer and the instant it is set for.
    timer: Option<(Pin<Box<Sleep>>, Instant)>,
    /// When the last request was sent on it.
    last_used: Option<Instant>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("finished", &self.finished).finish()
    }
}

impl Upstream {
    /// Lets the connection do whatever I/O it can (write the request, read
    /// the response); registers the current task for more.
    pub(crate) fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if self.finished {
            return;
        }
        if let Some(conn) = self.conn.as_mut() {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                self.finished = true;
                if let Err(error) = result {
                    tracing::debug!(%error, "Upstream connection ended with an error.");
                }
            }
        }
    }

    /// Open, driven inline, and free for a request.
    fn reusable(&self) -> bool {
        self.conn.is_some() && !self.finished && !self.send.is_closed()
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

/// Opens a new connection (TCP_NODELAY) within `timeout`. With `upgrades`,
/// its I/O runs in a task of its own that can hand the socket over to a
/// tunnel; otherwise the user drives it.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration, upgrades: bool) -> Result<Upstream, ConnectError> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::TimedOut),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    let (send, conn) = http1::Builder::new().handshake(TokioIo::new(tcp)).await.map_err(ConnectError::Handshake)?;
    if upgrades {
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "Upstream connection ended with an error.");
            }
        });
        return Ok(Upstream { send, conn: None, finished: false, timer: None, last_used: None });
    }
    Ok(Upstream { send, conn: Some(Box::pin(conn)), finished: false, timer: None, last_used: None })
}

/// Why [`send`] returned no response.
pub(crate) enum SendError {
    /// No response head within the deadline (the request may have been
    /// sent: never retried).
    TimedOut,
    /// hyper's error; it holds the request if it was never written.
    Failed(Box<hyper::client::conn::TrySendError<http::Request<RequestBody>>>),
}

/// Sends `req` on `up`, driving the connection until the response head (or
/// an error) arrives, or `timeout` passes.
///
/// The deadline uses the connection's own timer, re-armed only when it fires
/// early: a request costs a clock read, not a timer registration.
pub(crate) async fn send(
    up: &mut Upstream,
    req: http::Request<RequestBody>,
    timeout: Duration,
) -> Result<http::Response<Incoming>, SendError> {
    let now = Instant::now();
    up.last_used = Some(now);
    let deadline = now + timeout;
    let mut response = std::pin::pin!(up.send.try_send_request(req));
    std::future::poll_fn(|cx| {
        up.poll_conn(cx);
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(|e| SendError::Failed(Box::new(e))));
        }
        let timer = up.timer.get_or_insert_with(|| (Box::pin(tokio::time::sleep_until(deadline)), deadline));
        if timer.1 > deadline {
            timer.0.as_mut().reset(deadline);
            timer.1 = deadline;
        }
        loop {
            if timer.0.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= deadline {
                return Poll::Ready(Err(SendError::TimedOut));
            }
            // Set for an earlier request: move it on and wait again.
            timer.0.as_mut().reset(deadline);
            timer.1 = deadline;
        }
    })
    .await
}

impl Backend {
    /// Takes an idle pooled connection that is still open and ready.
    pub(crate) async fn checkout(&self) -> Option<Upstream> {
        loop {
            let mut up = self.pool.shard().pop_back()?;
            // Let it notice a close by the backend, and settle into waiting
            // for the next request.
            std::future::poll_fn(|cx| {
                up.poll_conn(cx);
                Poll::Ready(())
            })
            .await;
            if up.reusable() && up.send.is_ready() {
                return Some(up);
            }
            // closed, or not idle: dropped (outside the lock)
        }
    }

    /// Returns a connection whose last response ended cleanly.
    pub(crate) fn checkin(&self, up: Upstream) {
        if !up.reusable() {
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

/// Polls `up`'s connection from a body's `poll_frame`.
pub(crate) fn drive(up: &mut Option<Upstream>, cx: &mut Context<'_>) {
    if let Some(up) = up.as_mut() {
        up.poll_conn(cx);
    }
}

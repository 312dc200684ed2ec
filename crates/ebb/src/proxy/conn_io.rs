//! The client connection's socket, wrapped: request framing is tracked as
//! bytes are read ([`Framing`]), and the connection's two deadlines live here.
//!
//! - **Header read**: a request head must arrive whole within
//!   `header_read_timeout`, counted from the connection's accept for the first
//!   request and from the head's first byte for later ones. A slow sender
//!   (slowloris) gets `408` and the connection is closed.
//! - **Body**: while a request body is being received, the client's next
//!   bytes must arrive within `body_timeout` (time between reads, as nginx's
//!   `client_body_timeout`). A stalled body gets `408` (if no response has
//!   started) and the connection is closed: the read fails, so hyper aborts
//!   the request and the replica's connection is dropped, never reused.
//! - **Idle**: a keep-alive connection with no request in progress and no
//!   byte received for `idle_timeout` is closed (EOF to hyper: a clean close).
//! - **Send**: while the client does not take the bytes ebb writes (the
//!   socket is full), the next write must succeed within `send_timeout`
//!   (time between two successful writes, as nginx's `send_timeout`). Past
//!   it the write fails: hyper drops the connection, and with it the
//!   response body, so the replica's request ends (its upstream connection
//!   is closed and its `in_flight` slot freed) instead of waiting for a
//!   client that stopped reading. This also bounds memory: hyper buffers at
//!   most `max_buf_size` per connection and stops pulling the replica's body
//!   when its buffer is full, so a slow reader holds that and no more.
//!
//! hyper has its own `header_read_timeout`, but it starts when hyper begins to
//! wait for the next head, so it also caps how long a keep-alive connection
//! may sit idle; keeping both deadlines here keeps them independent.
//!
//! The deadlines cost no clock read while requests arrive whole: the clock is
//! read only when a read would block.

use ebb_core::config::ProxyConfig;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::framing::{Framing, Mode, Refusal, CUT_HEAD_END};
use super::front::Front;
use super::h2_flood::{Flood, FloodGuard};

/// The client's byte stream: a TCP socket, or TLS over one.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Writes a short last answer (a 408) if the socket takes it now; never
    /// waits.
    fn write_now(&mut self, bytes: &[u8]);
}

impl ClientStream for TcpStream {
    fn write_now(&mut self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn write_now(&mut self, bytes: &[u8]) {
        use std::io::Write as _;
        let (tcp, tls) = self.get_mut();
        if tls.writer().write_all(bytes).is_err() {
            return;
        }
        /// The socket as a `Write` that never blocks.
        struct TryWrite<'a>(&'a TcpStream);
        impl std::io::Write for TryWrite<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.try_write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        while tls.wants_write() {
            match tls.write_tls(&mut TryWrite(tcp)) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

/// What the connection's socket wrapper and its requests share.
pub(crate) struct ConnShared {
    /// What the listening socket serves (its connection settings, routes).
    pub(crate) front: Arc<Front>,
    /// The front's connection settings when this connection was accepted
    /// (`ebb apply` changes them for later connections only).
    pub(crate) config: Arc<ProxyConfig>,
    /// The client connected over TLS (`X-Forwarded-Proto: https`).
    pub(crate) tls: bool,
    /// The client's IP, ready to go into `X-Forwarded-For`.
    pub(crate) peer_ip: HeaderValue,
    /// The peer is in `trusted_proxies`.
    pub(crate) trusted: bool,
    /// Requests in progress on this connection (head received, response body
    /// not finished). The idle deadline runs only at zero.
    pub(crate) active: AtomicUsize,
    /// HTTP/1 heads the service has been called for.
    pub(crate) heads_served: AtomicU64,
    /// The first refused head: `(index + 1) << 2 | reason`, 0 when none.
    pub(crate) refused: AtomicU64,
    /// The connection became a tunnel (101 sent): stop tracking and timing.
    pub(crate) tunneled: AtomicBool,
    /// For tunnels, which outlive their connection's task.
    pub(crate) shutdown: CancellationToken,
    /// The balancer is shutting down: finish and close.
    stop: AtomicBool,
    /// The balancer is handing its clients over (another ebb takes the
    /// listening socket): answer with `Connection: close`, so that a
    /// keep-alive client reconnects instead of being cut while idle.
    closing: AtomicBool,
    /// Close now, whatever is in progress (a client that stopped taking an
    /// HTTP/2 stream, see `stall.rs`).
    cut: AtomicBool,
    /// The connection task's waker (a task's waker always wakes that task,
    /// so the first one is kept).
    task: Mutex<Option<Waker>>,
}

impl ConnShared {
    pub(crate) fn new(front: Arc<Front>, peer: SocketAddr, tls: bool, shutdown: CancellationToken) -> Self {
        let ip = peer.ip().to_canonical();
        let config = front.config();
        let trusted = config.trusted_proxies.iter().any(|t| t.to_canonical() == ip);
        let peer_ip = HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value");
        ConnShared {
            front,
            config,
            tls,
            peer_ip,
            trusted,
            active: AtomicUsize::new(0),
            heads_served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            tunneled: AtomicBool::new(false),
            shutdown,
            stop: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            task: Mutex::new(None),
        }
    }

    pub(crate) fn set_task(&self, waker: &Waker) {
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// From now on, every HTTP/1 answer on this connection closes it.
    pub(crate) fn close_after_each_answer(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake_task();
    }

    /// Asks the connection task to close the connection at once. True the
    /// first time.
    pub(crate) fn cut(&self) -> bool {
        let first = !self.cut.swap(true, Ordering::SeqCst);
        self.wake_task();
        first
    }

    pub(crate) fn cut_requested(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    fn wake_task(&self) {
        let waker = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// For an HTTP/1 request: counts it, and says whether the framing tracker
    /// refused its head.
    pub(crate) fn next_head_refusal(&self) -> Option<Refusal> {
        let index = self.heads_served.fetch_add(1, Ordering::Relaxed);
        let refused = self.refused.load(Ordering::Acquire);
        if refused != 0 && refused >> 2 == index + 1 {
            Refusal::from_code(refused & 3)
        } else {
            None
        }
    }
}

/// Marks one request in progress on a connection, until dropped.
pub(crate) struct ActiveGuard(Arc<ConnShared>);

impl ActiveGuard {
    pub(crate) fn new(conn: Arc<ConnShared>) -> Self {
        conn.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(conn)
    }

    pub(crate) fn conn(&self) -> &Arc<ConnShared> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Release);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Header,
    Body,
    Idle,
}

const BODY_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 45\r\n\r\n{\"error\":\"request body not received in time\"}";

const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 45\r\n\r\n{\"error\":\"request head not received in time\"}";

pub(crate) struct ConnIo<S = TcpStream> {
    tcp: S,
    framing: Framing,
    shared: Arc<ConnShared>,
    header_timeout: Duration,
    idle_timeout: Duration,
    body_timeout: Duration,
    /// The instant the sleep below is set for (always <= the deadline that
    /// matters, so it fires in time; when it fires early it is pushed on).
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    accepted: Instant,
    /// When a partial head was first seen waiting for more bytes.
    head_since: Option<Instant>,
    /// When the connection was first seen idle (no request, nothing to read).
    idle_since: Option<Instant>,
    /// When a read mid-body was first seen waiting for more bytes.
    body_since: Option<Instant>,
    /// `framing.heads()` when bytes were last written to the client: equal
    /// to the current count once a response to the latest head has begun.
    written_at_head: Option<u64>,
    /// The body deadline closed the connection: nothing more may be written
    /// after the 408.
    timed_out: bool,
    /// Stopped tracking: a tunnel, or HTTP/2.
    passthrough: bool,
    send_timeout: Duration,
    /// Since when writes have been blocked by a client that does not read.
    write_blocked_since: Option<Instant>,
    /// The send deadline's timer (made on the first blocked write).
    write_timer: Option<Pin<Box<Sleep>>>,
    /// The send deadline passed: every later write fails.
    send_timed_out: bool,
    /// The tracker cut the stream: hyper gets `cut_end`, then nothing.
    cut: bool,
    cut_end: &'static [u8],
    /// Bytes read from the client so far.
    read_total: u64,
    /// An HTTP/2 connection's flood counters.
    h2: Option<FloodGuard>,
    /// The connection flooded: nothing more is read, and it is closed when
    /// this fires (the GOAWAY has had time to go out).
    flood_cut: Option<Pin<Box<Sleep>>>,
}

/// How long a flooding HTTP/2 connection has to take its GOAWAY before it
/// is closed.
const FLOOD_GRACE: Duration = Duration::from_secs(1);

impl<S: ClientStream> ConnIo<S> {
    pub(crate) fn new(tcp: S, shared: Arc<ConnShared>) -> Self {
        let config = &shared.config;
        let header_timeout = config.header_read_timeout;
        let idle_timeout = config.idle_timeout;
        let body_timeout = config.body_timeout;
        let accepted = Instant::now();
        let timer_at = accepted + header_timeout.min(idle_timeout);
        ConnIo {
            tcp,
            framing: Framing::new(config.max_header_bytes),
            header_timeout,
            idle_timeout,
            body_timeout,
            timer: Box::pin(tokio::time::sleep_until(timer_at)),
            timer_at,
            accepted,
            head_since: None,
            idle_since: None,
            body_since: None,
            written_at_head: None,
            timed_out: false,
            passthrough: false,
            send_timeout: config.send_timeout,
            write_blocked_since: None,
            write_timer: None,
            send_timed_out: false,
            cut: false,
            cut_end: &[],
            read_total: 0,
            h2: None,
            flood_cut: None,
            shared,
        }
    }

    /// Feeds the tracker; `Some(n)`: only the first `n` bytes may reach
    /// hyper (the stream is cut, see `framing.rs`).
    fn on_bytes(&mut self, bytes: &[u8]) -> Option<usize> {
        self.idle_since = None;
        self.body_since = None;
        if self.passthrough {
            return None;
        }
        if self.shared.tunneled.load(Ordering::Relaxed) {
            self.framing.stop();
            self.passthrough = true;
            return None;
        }
        let before = self.framing.refused();
        let cut = self.framing.feed(bytes);
        if before.is_none() {
            if let Some((index, why)) = self.framing.refused() {
                self.shared.refused.store((index + 1) << 2 | why as u64, Ordering::Release);
            }
        }
        if !self.framing.in_partial_head() {
            self.head_since = None;
        }
        if self.framing.mode() != Mode::Http1 {
            self.passthrough = true;
        }
        cut
    }

    /// Hands hyper what is left of the end of a cut head.
    fn put_cut_end(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.cut_end.len().min(buf.remaining());
        buf.put_slice(&self.cut_end[..n]);
        self.cut_end = &self.cut_end[n..];
    }

    /// The deadline that applies while a read is blocked.
    fn deadline(&mut self, now: Instant) -> (Instant, Deadline) {
        let busy = self.shared.active.load(Ordering::Acquire) > 0;
        if !self.passthrough && self.framing.in_partial_body() && !self.shared.tunneled.load(Ordering::Relaxed) {
            let since = *self.body_since.get_or_insert(now);
            return (since + self.body_timeout, Deadline::Body);
        }
        if !self.passthrough && !busy && !self.shared.tunneled.load(Ordering::Relaxed) {
            if self.framing.in_partial_head() {
                let since = *self.head_since.get_or_insert(now);
                return (since + self.header_timeout, Deadline::Header);
            }
            if self.framing.heads() == 0 && self.framing.mode() == Mode::Http1 {
                // Nothing received yet: the first head is due from accept.
                return (self.accepted + self.header_timeout, Deadline::Header);
            }
        }
        if busy {
            // A request is in progress; look again one idle period later.
            self.idle_since = None;
            return (now + self.idle_timeout, Deadline::Idle);
        }
        let since = *self.idle_since.get_or_insert(now);
        (since + self.idle_timeout, Deadline::Idle)
    }

    /// Called when the socket has nothing to read: arms the timer, and
    /// answers the read with a close when a deadline has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.passthrough && self.shared.tunneled.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        let now = Instant::now();
        let (deadline, kind) = self.deadline(now);
        if self.timer_at > deadline {
            self.timer.as_mut().reset(deadline);
            self.timer_at = deadline;
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if now >= deadline && kind == Deadline::Body {
                tracing::debug!("Client stalled in the middle of a request body; closing.");
                if self.written_at_head != Some(self.framing.heads()) {
                    self.tcp.write_now(BODY_TIMEOUT);
                }
                self.framing.stop();
                self.timed_out = true;
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request body not received in time")));
            }
            if now >= deadline {
                let busy = self.shared.active.load(Ordering::Acquire) > 0;
                if busy {
                    // Not idle after all: push the check one period on.
                    let next = now + self.idle_timeout;
                    self.timer.as_mut().reset(next);
                    self.timer_at = next;
                    continue;
                }
                return match kind {
                    Deadline::Header if self.framing.in_partial_head() => {
                        tracing::debug!("Client did not send a whole request head in time; closing.");
                        self.tcp.write_now(REQUEST_TIMEOUT);
                        self.framing.stop();
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")))
                    }
                    // No request yet, or idle keep-alive: a clean EOF.
                    _ => Poll::Ready(Ok(())),
                };
            }
            self.timer.as_mut().reset(deadline);
            self.timer_at = deadline;
        }
    }
}

impl<S: ClientStream> ConnIo<S> {
    /// Counts an HTTP/2 client's frames; `Some(n)`: only the first `n` of
    /// these bytes may reach hyper, the connection flooded.
    fn on_h2_bytes(&mut self, bytes: &[u8]) -> Option<usize> {
        let before = self.read_total;
        self.read_total += bytes.len() as u64;
        if self.h2.is_none() {
            if self.framing.mode() != Mode::Http2 {
                return None;
            }
            self.h2 = Some(FloodGuard::new(before));
        }
        let guard = self.h2.as_mut()?;
        let (at, why) = guard.feed(bytes)?;
        let (streams, resets, control) = (guard.streams, guard.resets, guard.control);
        self.flooded(why, streams, resets, control);
        Some(at)
    }

    /// An HTTP/2 client flooded: GOAWAY, read nothing more, close soon.
    fn flooded(&mut self, why: Flood, streams: u64, resets: u64, control: u64) {
        tracing::warn!(
            front = %self.shared.front.label,
            client = ?self.shared.peer_ip,
            flood = why.as_str(),
            streams,
            resets,
            control_frames = control,
            "HTTP/2 client flooded; closing its connection (see docs/balancer.md#http2-floods)."
        );
        self.shared.front.stats().http2_floods.fetch_add(1, Ordering::Relaxed);
        self.shared.request_stop();
        self.flood_cut = Some(Box::pin(tokio::time::sleep(FLOOD_GRACE)));
    }

    /// After a flood: pending until the grace is over, then an error that
    /// drops the connection.
    fn poll_flood_cut(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let timer = self.flood_cut.as_mut().expect("only after a flood");
        std::task::ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "HTTP/2 flood")))
    }
}

impl<S: ClientStream> AsyncRead for ConnIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.flood_cut.is_some() {
            return this.poll_flood_cut(cx);
        }
        if this.cut {
            // The client's stream ended at a cut: the rest is never read.
            if !this.cut_end.is_empty() {
                this.put_cut_end(buf);
                return Poll::Ready(Ok(()));
            }
            return this.poll_deadline(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                if filled.len() > before {
                    if let Some(keep) = this.on_bytes(&filled[before..]) {
                        buf.set_filled(before + keep);
                        this.cut = true;
                        this.cut_end = CUT_HEAD_END;
                        this.put_cut_end(buf);
                    } else if let Some(keep) = this.on_h2_bytes(&buf.filled()[before..]) {
                        buf.set_filled(before + keep);
                        if keep == 0 {
                            // Nothing to hand over; an empty read would be EOF.
                            return this.poll_flood_cut(cx);
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl<S: ClientStream> ConnIo<S> {
    /// Bookkeeping after a write: a response to the latest head has begun,
    /// and the client is reading (the send deadline restarts). A blocked
    /// write is held to the send deadline.
    fn on_written(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) if n > 0 => {
                if let Some(guard) = &mut self.h2 {
                    guard.sent(n);
                }
                self.written_at_head = Some(self.framing.heads());
                self.write_blocked_since = None;
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.poll_send_deadline(cx),
            other => other,
        }
    }

    /// A write would block: pending until the socket takes bytes again, or
    /// an error once `send_timeout` has passed since it first blocked.
    fn poll_send_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let now = Instant::now();
        let deadline = *self.write_blocked_since.get_or_insert(now) + self.send_timeout;
        if now < deadline {
            let timer = self.write_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        tracing::debug!(timeout = ?self.send_timeout, "Client stopped reading the response; closing.");
        self.send_timed_out = true;
        // Counted once per connection, whether this or a stalled HTTP/2
        // stream (stall.rs) noticed first.
        if self.shared.cut() {
            self.shared.front.stats().send_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client did not read the response in time")))
    }

    fn closed_after_timeout() -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "connection closed after a timeout")))
    }
}

impl<S: ClientStream> AsyncWrite for ConnIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.timed_out || this.send_timed_out {
            return Self::closed_after_timeout();
        }
        let result = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.on_written(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.timed_out || this.send_timed_out {
            return Self::closed_after_timeout();
        }
        let result = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.on_written(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

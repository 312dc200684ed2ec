//! `send_timeout` for an HTTP/2 stream whose client stopped taking it.
//!
//! HTTP/2 flow control lets a client stop reading one stream without ever
//! blocking the socket: it just does not open the stream's window again.
//! hyper then stops polling that response body (it waits for window), so
//! neither the socket's send deadline (`conn_io.rs`) nor the body itself
//! notices, and the replica's request stays open for as long as the client
//! likes. So after each frame the body hands over, a [`StallWatch`] arms a
//! timer whose waker is its own: if `send_timeout` passes before hyper polls
//! the body again, the client connection is cut. That ends every stream on
//! the connection (nothing on the body's side can end just one), drops the
//! body, and frees the replica.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::conn_io::ConnShared;

pub(crate) struct StallWatch {
    /// Made on the first frame handed over.
    timer: Option<Pin<Box<Sleep>>>,
    state: Arc<StallState>,
}

struct StallState {
    /// When the last frame was handed over and not yet followed by a poll.
    handed_at: Mutex<Option<Instant>>,
    timeout: Duration,
    conn: Arc<ConnShared>,
}

impl StallState {
    fn handed_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.handed_at.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The timer's waker: cuts the connection if the stall is still on.
impl Wake for StallState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let stalled = self.handed_at().is_some_and(|at| at.elapsed() >= self.timeout);
        if stalled {
            tracing::debug!(timeout = ?self.timeout, "HTTP/2 client stopped taking a stream; closing the connection.");
            if self.conn.cut() {
                self.conn.front.stats().send_timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl StallWatch {
    pub(crate) fn new(conn: Arc<ConnShared>, timeout: Duration) -> Self {
        StallWatch { timer: None, state: Arc::new(StallState { handed_at: Mutex::new(None), timeout, conn }) }
    }

    /// hyper polls the body again: the client took what it was given.
    pub(crate) fn polled(&self) {
        *self.state.handed_at() = None;
    }

    /// A frame was handed to hyper: the client must take it (and hyper poll
    /// again) within `send_timeout`.
    pub(crate) fn handed_over(&mut self) {
        let now = Instant::now();
        *self.state.handed_at() = Some(now);
        let deadline = now + self.state.timeout;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().reset(deadline);
        let waker = Waker::from(self.state.clone());
        // Registers the waker; it fires once the deadline passes.
        let _ = timer.as_mut().poll(&mut Context::from_waker(&waker));
    }
}

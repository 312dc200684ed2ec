//! Response bodies: a backend's body, wrapped so that the request's
//! bookkeeping ends exactly when the body does, or a small local body.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::access_log::AccessRecord;
use super::conn_io::ActiveGuard;
use super::stall::StallWatch;
use super::upstream::{drive, Upstream};
use super::Backend;

/// One request dispatched to a backend. While it lives, the backend's
/// `in_flight` counts it and the client connection counts it as active.
/// Dropping it ends both; [`Dispatched::finish`] also returns the upstream
/// connection to the backend's pool.
pub(crate) struct Dispatched {
    backend: Arc<Backend>,
    /// The upstream connection, reusable once the response body has ended.
    conn: Option<Upstream>,
    _active: ActiveGuard,
    /// The service's balancer (a listener's connection may carry requests
    /// to several).
    proxy: Arc<super::ServiceProxy>,
    /// Counted in the service's active requests for the idle rule, and
    /// its end is activity (not for an ignored agent, nor without [idle]).
    activity: bool,
}

impl Dispatched {
    pub(crate) fn new(backend: Arc<Backend>, active: ActiveGuard, proxy: Arc<super::ServiceProxy>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        Dispatched { backend, conn: None, _active: active, proxy, activity: false }
    }

    /// Counts it as activity for the idle rule until it ends.
    pub(crate) fn count_as_activity(&mut self) {
        if !self.activity {
            self.activity = true;
            self.proxy.hold.active_started();
        }
    }

    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    pub(crate) fn set_conn(&mut self, conn: Upstream) {
        self.conn = Some(conn);
    }

    pub(crate) fn take_conn(&mut self) -> Option<Upstream> {
        self.conn.take()
    }

    /// Moves this dispatch to another backend (retry after a connect
    /// failure): the first one no longer counts it.
    pub(crate) fn redirect(&mut self, backend: Arc<Backend>) {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        let old = std::mem::replace(&mut self.backend, backend);
        old.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.conn = None;
    }

    pub(crate) fn active(&self) -> &ActiveGuard {
        &self._active
    }

    /// The response ended cleanly: the connection may serve another request.
    fn finish(mut self) {
        if let Some(conn) = self.conn.take() {
            self.backend.checkin(conn);
        }
    }
}

impl Drop for Dispatched {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        // A slot is free: wake one request queued under `max_in_flight`.
        let proxy = &self.proxy;
        if self.activity {
            proxy.hold.active_ended();
        }
        if proxy.peek().config.max_in_flight.is_some() {
            proxy.slot_freed.notify_one();
        }
    }
}

/// The body of every response the balancer sends.
pub struct ProxyBody {
    kind: Kind,
    /// The access log line of this request, written when the body is
    /// dropped; counts the bytes sent.
    record: Option<Box<AccessRecord>>,
}

enum Kind {
    Upstream { inner: Incoming, dispatched: Option<Dispatched>, stall: Option<StallWatch> },
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// `stall`: for an HTTP/2 client, the watch that cuts it if it stops
    /// taking this body (see `stall.rs`).
    pub(crate) fn upstream(inner: Incoming, dispatched: Dispatched, stall: Option<StallWatch>) -> Self {
        let mut body = ProxyBody { kind: Kind::Upstream { inner, dispatched: Some(dispatched), stall }, record: None };
        // A body known to be empty (HEAD, 204, 304, Content-Length: 0) may never
        // be polled: settle now.
        if let Kind::Upstream { inner, dispatched, .. } = &mut body.kind {
            if inner.is_end_stream() {
                if let Some(d) = dispatched.take() {
                    d.finish();
                }
            }
        }
        body
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        ProxyBody { kind: Kind::Full(if bytes.is_empty() { None } else { Some(bytes) }), record: None }
    }

    pub(crate) fn empty() -> Self {
        ProxyBody { kind: Kind::Full(None), record: None }
    }

    /// Logs this response's request when the body ends or is dropped.
    pub(crate) fn attach(&mut self, record: Box<AccessRecord>) {
        self.record = Some(record);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = this.poll_kind(cx);
        if let (Some(record), Poll::Ready(Some(Ok(frame)))) = (this.record.as_mut(), &polled) {
            if let Some(data) = frame.data_ref() {
                record.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl ProxyBody {
    fn poll_kind(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { inner, dispatched, stall } => {
                if let Some(stall) = stall.as_ref() {
                    stall.polled();
                }
                let mut polled = Pin::new(&mut *inner).poll_frame(cx);
                if polled.is_pending() {
                    // The upstream connection is driven from here: let it
                    // read, then look again.
                    if let Some(d) = dispatched.as_mut() {
                        drive(&mut d.conn, cx);
                        polled = Pin::new(&mut *inner).poll_frame(cx);
                    }
                }
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(mut d) = dispatched.take() {
                            drive(&mut d.conn, cx);
                            d.finish();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) => {
                        if inner.is_end_stream() {
                            if let Some(mut d) = dispatched.take() {
                                drive(&mut d.conn, cx);
                                d.finish();
                            }
                        } else if let Some(stall) = stall.as_mut() {
                            stall.handed_over();
                        }
                    }
                    Poll::Ready(Some(Err(error))) => {
                        tracing::debug!(%error, "Replica's response body failed.");
                        if let Some(mut d) = dispatched.take() {
                            d.conn = None;
                        }
                    }
                    Poll::Pending => {}
                }
                polled
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Kind::Upstream { inner, dispatched, .. } = &mut self.kind {
            if let Some(d) = dispatched.take() {
                if inner.is_end_stream() {
                    d.finish();
                }
                // else: dropped mid-body (client gone): the upstream
                // connection is closed with `d`, never reused.
            }
        }
    }
}

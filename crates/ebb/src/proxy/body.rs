//! Response bodies: a backend's body, wrapped so that the request's
//! bookkeeping ends exactly when the body does, or a small local body.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Why a response body broke off (the replica failed mid-body): hyper then
/// cuts the client's connection or stream.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

use super::access_log::AccessRecord;
use super::conn_io::ActiveGuard;
use super::stall::StallWatch;
use super::upstream::Upstream;
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
    /// Read from the replica's connection (in the dispatch) as the client
    /// takes it.
    Upstream {
        dispatched: Option<Dispatched>,
        stall: Option<StallWatch>,
    },
    /// The answer to an upgrade request that did not switch (hyper's
    /// connection, in its own task).
    Refused {
        inner: Incoming,
        dispatched: Option<Dispatched>,
    },
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// The body of the response whose head `dispatched`'s connection just
    /// read. `stall`: for an HTTP/2 client, the watch that cuts it if it
    /// stops taking this body (see `stall.rs`).
    pub(crate) fn upstream(dispatched: Dispatched, stall: Option<StallWatch>) -> Self {
        let mut dispatched = Some(dispatched);
        // A body known to be empty (HEAD, 204, 304, Content-Length: 0) may
        // never be polled: settle now.
        if dispatched.as_ref().is_some_and(|d| d.conn.as_ref().is_none_or(|c| c.conn.body_ended())) {
            if let Some(d) = dispatched.take() {
                d.finish();
            }
        }
        ProxyBody { kind: Kind::Upstream { dispatched, stall }, record: None }
    }

    /// The body of a non-101 answer to an upgrade request.
    pub(crate) fn upgrade_refused(inner: Incoming, dispatched: Dispatched) -> Self {
        ProxyBody { kind: Kind::Refused { inner, dispatched: Some(dispatched) }, record: None }
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
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
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
            Kind::Upstream { dispatched, .. } => dispatched.is_none(),
            Kind::Refused { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream { dispatched: None, .. } => SizeHint::with_exact(0),
            // The replica's own framing headers are relayed; hyper follows
            // them.
            Kind::Upstream { .. } => SizeHint::default(),
            Kind::Refused { inner, .. } => inner.size_hint(),
        }
    }
}

impl ProxyBody {
    fn poll_kind(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { dispatched, stall } => {
                let Some(d) = dispatched.as_mut() else { return Poll::Ready(None) };
                let Some(up) = d.conn.as_mut() else {
                    dispatched.take();
                    return Poll::Ready(None);
                };
                if let Some(stall) = stall.as_ref() {
                    stall.polled();
                }
                match up.conn.poll_data(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(data))) => {
                        if up.conn.body_ended() {
                            if let Some(d) = dispatched.take() {
                                d.finish();
                            }
                        } else if let Some(stall) = stall.as_mut() {
                            stall.handed_over();
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Poll::Ready(None) => {
                        if let Some(d) = dispatched.take() {
                            d.finish();
                        }
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(error))) => {
                        tracing::debug!(%error, "Replica's response body failed.");
                        if let Some(mut d) = dispatched.take() {
                            d.conn = None;
                        }
                        Poll::Ready(Some(Err(Box::new(error))))
                    }
                }
            }
            Kind::Refused { inner, dispatched } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                if matches!(polled, Poll::Ready(None | Some(Err(_)))) || inner.is_end_stream() {
                    dispatched.take();
                }
                polled.map_err(|e| Box::new(e) as BodyError)
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Kind::Upstream { dispatched, .. } = &mut self.kind {
            if let Some(d) = dispatched.take() {
                if d.conn.as_ref().is_some_and(|c| c.conn.body_ended()) {
                    d.finish();
                }
                // else: dropped mid-body (client gone): the upstream
                // connection is closed with `d`, never reused.
            }
        }
    }
}

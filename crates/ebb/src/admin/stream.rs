//! `GET /api/v1/events?follow=1`: the event log as Server-Sent Events.
//!
//! The stream subscribes to the live log *before* it copies the kept events,
//! so nothing falls between the two; sequence numbers drop the overlap. A
//! follower that falls behind the live channel is caught up from the kept
//! log. Each event is one SSE message: `id:` is its sequence number (a
//! reconnecting `EventSource` sends it back as `Last-Event-ID`), `data:` its
//! JSON. A comment every 15 s keeps proxies from closing an idle stream.
//! Streams end when the admin API shuts down, so graceful shutdown never
//! waits on a follower.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::{broadcast, mpsc};

use super::App;
use crate::wire::EventView;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A response body fed by a channel: ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// One SSE message for an event.
pub fn frame(event: &crate::events::Event) -> Bytes {
    let json = serde_json::to_string(&EventView::new(event)).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("id: {}\ndata: {json}\n\n", event.seq))
}

/// Starts a follower task and returns the streaming response.
pub(crate) fn events(app: &App, service: Option<String>, after: u64) -> Response {
    let log = app.state.events.clone();
    let shutdown = app.shutdown.clone();
    let mut live = log.subscribe();
    let backlog = log.list(service.as_deref(), after);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let wanted = |e: &crate::events::Event| service.as_deref().is_none_or(|s| e.service == s);
        let mut last = after;
        // Tell EventSource to reconnect after 2 s if the stream drops.
        if tx.send(Bytes::from_static(b"retry: 2000\n: ebb event stream\n\n")).await.is_err() {
            return;
        }
        for e in &backlog {
            last = e.seq;
            if tx.send(frame(e)).await.is_err() {
                return;
            }
        }
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = keep_alive.tick() => {
                    if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
                next = live.recv() => next,
            };
            let batch = match next {
                Ok(e) => vec![e],
                // Fell behind the live channel: catch up from the kept log.
                Err(broadcast::error::RecvError::Lagged(_)) => log.list(service.as_deref(), last),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for e in &batch {
                if e.seq <= last || !wanted(e) {
                    continue;
                }
                last = e.seq;
                if tx.send(frame(e)).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut response = Response::new(Body::new(ChannelBody(rx)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

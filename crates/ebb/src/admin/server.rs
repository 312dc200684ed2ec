//! The admin listener's accept loop: HTTP/1.1 with the balancer's
//! deadlines, and a shutdown that ends on time whatever clients do.
//!
//! `axum::serve` has neither: a client that sends half a request head holds
//! its connection, and graceful shutdown waits for it, for ever (`ebb down`
//! said "stopped" while `ebb up` kept the state directory locked). Here:
//!
//! - **Header read and idle**: a request head must arrive whole within
//!   [`HEADER_READ_TIMEOUT`], and a keep-alive connection waiting for its
//!   next request is closed after as long (hyper's header-read timer runs
//!   from the moment it waits for a head). Bodies have their own deadline
//!   ([`super::body::BODY_DEADLINE`]); a streamed response (the event stream)
//!   is not limited.
//! - **Shutdown**: the listener closes at once; connections are asked to
//!   finish (keep-alive off, event streams end) and are dropped after
//!   [`SHUTDOWN_GRACE`].
//! - **TLS** (`[admin] tls`): each connection's handshake (ALPN
//!   `http/1.1`) must finish within [`HEADER_READ_TIMEOUT`] too; a client
//!   that speaks plain HTTP to it gets the handshake's failure, never an
//!   answer. The certificate is the [`crate::tls::TlsState`]'s, reloaded
//!   like a listener's.

use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Peer;

/// A request head must arrive within this; also how long an idle keep-alive
/// connection is kept (the balancer's default `header_read_timeout`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`,
/// then returns within [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        // Finished connections leave the set as we go.
        while connections.try_join_next().is_some() {}
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and the like: wait a little rather than spin.
                    tracing::warn!(%error, "The admin API could not accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let peer = Peer { local: tcp.local_addr().unwrap_or(remote), remote, tls: tls.is_some() };
        // What `into_make_service_with_connect_info` would give the handlers.
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(ConnectInfo(peer))));
        let Some(tls) = &tls else {
            let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
            connections.spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(client = %remote, %error, "Admin connection ended with an error.");
                }
            });
            continue;
        };
        let (tls, http, watcher) = (tls.clone(), http.clone(), graceful.watcher());
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(client = %remote, %error, "Admin TLS handshake failed.");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %remote, "Admin TLS handshake did not finish in time.");
                    return;
                }
            };
            if let Err(error) = watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await {
                tracing::debug!(client = %remote, %error, "Admin connection ended with an error.");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "Admin API connections still open {} s after shutdown began; closing them.",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    connections.shutdown().await;
    Ok(())
}

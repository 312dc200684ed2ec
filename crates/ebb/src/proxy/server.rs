//! The accept loop and one task per client connection.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn_io::{ClientStream, ConnIo, ConnShared};
use super::forward::handle;
use super::front::Front;
use super::worker;
use ebb_core::config::ProxyConfig;

/// hyper's HTTP/1 read buffer cannot be smaller than this.
const MIN_BUF: usize = 8192;

/// The most an HTTP/2 stream buffers towards the client.
const H2_STREAM_SEND_BUF: usize = 64 * 1024;

/// Streams one HTTP/2 client may have open at once (HAProxy's default; the
/// RFC asks for at least 100). Past it, new streams are refused.
const H2_MAX_STREAMS: u32 = 100;

/// Streams ebb may reset because of the client's errors (refused past
/// `H2_MAX_STREAMS`, malformed) before the connection is closed with
/// GOAWAY (ENHANCE_YOUR_CALM). hyper's default is 1024.
const H2_MAX_ERROR_RESETS: usize = 200;

/// Streams the client may reset before they were taken up, before the
/// connection is closed the same way (h2's default). Resets after a stream
/// was taken up are counted by `h2_flood.rs`.
const H2_MAX_PENDING_RESETS: usize = 20;

/// HTTP/1.1 and HTTP/2 (prior knowledge) on the same port.
fn builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Both deadlines are kept by `ConnIo` (see there for why).
        .header_read_timeout(None)
        .keep_alive(true)
        // A head that outgrows the read buffer gets hyper's own 431; the
        // framing tracker enforces the exact `max_header_bytes` below that.
        .max_buf_size(config.max_header_bytes.max(MIN_BUF));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_local_error_reset_streams(H2_MAX_ERROR_RESETS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        // What one stream may queue for a client that opened a large window
        // but does not read (hyper's default is 400 KiB, times 100 streams).
        .max_send_buf_size(H2_STREAM_SEND_BUF);
    builder
}

/// The live client connections, so that shutdown can reach each one.
///
/// A connection task checks its own `stop` flag (one atomic load) on every
/// poll, instead of polling a shared cancellation future whose every poll
/// takes a lock shared by all connections.
#[derive(Default)]
struct Connections {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<ConnShared>>>,
    /// Accepted and not yet closed (counted from the accept, before a
    /// worker registers it), for `max_connections`.
    open: AtomicUsize,
    /// A connection closed: the accept loop may take another.
    closed: tokio::sync::Notify,
    /// Where the open count is published (Prometheus).
    stats: Option<Arc<Front>>,
    /// Connections close after each HTTP/1 answer (see `serve`).
    closing: std::sync::atomic::AtomicBool,
}

impl Connections {
    fn accepted(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        if let Some(front) = &self.stats {
            front.stats().open_connections.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(front) = &self.stats {
            front.stats().open_connections.fetch_sub(1, Ordering::Relaxed);
        }
        // A stored permit, so a close between the loop's check and its
        // wait is not missed.
        self.closed.notify_one();
    }

    fn add(&self, conn: Arc<ConnShared>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if self.closing.load(Ordering::Relaxed) {
            conn.close_after_each_answer();
        }
        live.insert(id, conn);
        id
    }

    fn remove(&self, id: u64) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Asks every live connection, and every one registered from now on,
    /// to close after its next HTTP/1 answer.
    fn close_after_each_answer(&self) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        self.closing.store(true, Ordering::Relaxed);
        for conn in live.values() {
            conn.close_after_each_answer();
        }
    }

    /// Asks every live connection to finish what it is doing and close.
    fn stop_all(&self) {
        let live: Vec<Arc<ConnShared>> =
            self.live.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for conn in live {
            conn.request_stop();
        }
    }
}

/// Serves on `listener` with one thread per core, each running its own
/// single-threaded tokio runtime (like HAProxy's and nginx's workers). This
/// task accepts and hands connections to the workers in turn; a worker keeps
/// each connection it gets, its requests, its upstream connections and its
/// timers on its thread. Nothing on a request's path crosses threads except
/// the counters and the routable snapshot.
pub(crate) async fn serve(
    listener: TcpListener,
    front: Arc<Front>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let builder = Arc::new(builder(&front.config()));
    let connections = Arc::new(Connections { stats: Some(front.clone()), ..Connections::default() });
    let mut workers = Vec::new();
    let mut finished = Vec::new();
    for index in 0..worker::count() {
        let (front, shutdown, builder, connections) =
            (front.clone(), shutdown.clone(), builder.clone(), connections.clone());
        let (hand, incoming) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
        let (done, worker_finished) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let spawned = std::thread::Builder::new().name(format!("ebb-proxy-{index}")).spawn(move || {
            let run = || -> std::io::Result<()> {
                worker::set_index(index);
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(worker(incoming, front, shutdown, builder, connections));
                Ok(())
            };
            let _ = done.send(run());
        });
        if let Err(error) = spawned {
            drop(workers); // the threads already started stop when their hand closes
            return Err(error);
        }
        workers.push(hand);
        finished.push(worker_finished);
    }

    let mut at_cap = false;
    let mut accept_errors = AcceptBackoff::default();
    let mut next = 0;
    loop {
        // Read each time round: `ebb apply` may change it.
        let max_connections = front.config().max_connections.map_or(usize::MAX, |n| n as usize);
        // HAProxy's maxconn: at the cap, stop accepting; clients wait in
        // the kernel's backlog until a connection closes, and descriptors
        // stay free for health checks and replicas.
        if connections.open.load(Ordering::Relaxed) >= max_connections {
            if !at_cap {
                at_cap = true;
                front.stats().connection_cap_reached.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    front = %front.label,
                    max_connections,
                    "Balancer reached max_connections: new clients wait in the listen backlog until a connection closes."
                );
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = connections.closed.notified() => continue,
            }
        }
        if at_cap {
            at_cap = false;
            tracing::info!(front = %front.label, max_connections, "Balancer below max_connections again: accepting.");
        }
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_errors.recovered(&front.label);
                    accepted
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead
                    // of spinning; the listener itself is still fine.
                    let pause = accept_errors.failed(&front.label, &error);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        connections.accepted();
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::debug!(%peer, %error, "Could not hand a connection over.");
                connections.closed();
                continue;
            }
        };
        if workers[next].send((tcp, peer)).is_err() {
            break; // a worker is gone (its runtime failed): stop
        }
        next = (next + 1) % workers.len();
    }
    drop(listener);
    let grace = hand_over_grace();
    if !grace.is_zero() {
        // Handing over to another ebb: keep-alive clients are told to
        // reconnect (`Connection: close` on their next answer) for a
        // while before the workers close what is left. An idle connection
        // closed under a client that is just sending on it fails that
        // request; one that is answered first does not, and the client's
        // next connection reaches the new ebb.
        connections.close_after_each_answer();
        let deadline = tokio::time::Instant::now() + grace;
        while connections.open.load(Ordering::Relaxed) > 0 {
            tokio::select! {
                _ = connections.closed.notified() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
    drop(workers);

    let mut result = Ok(());
    for worker_finished in finished {
        let outcome =
            worker_finished.await.unwrap_or_else(|_| Err(std::io::Error::other("balancer worker thread panicked")));
        if let (Ok(()), Err(e)) = (&result, outcome) {
            result = Err(e);
        }
    }
    // Idle upstream connections belong to the workers' event loops, now gone.
    for proxy in front.services() {
        for backend in proxy.routable().iter() {
            backend.close_idle();
        }
    }
    result
}

/// One worker thread: serves the connections it is handed until the hand
/// closes (shutdown), then lets them finish.
async fn worker(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    front: Arc<Front>,
    shutdown: CancellationToken,
    mut builder: Arc<auto::Builder<TokioExecutor>>,
    connections: Arc<Connections>,
) {
    let tasks = TaskTracker::new();
    let mut built_for = front.config();
    while let Some((tcp, peer)) = incoming.recv().await {
        let tcp = match TcpStream::from_std(tcp) {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::debug!(%peer, %error, "Could not take a connection over.");
                connections.closed();
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls = front.tls.as_ref().map(|tls| tls.acceptor());
        let shared = Arc::new(ConnShared::new(front.clone(), peer, tls.is_some(), shutdown.clone()));
        let id = connections.add(shared.clone());
        // Settings changed by `ebb apply` since the builder was made: a new
        // one for this and later connections.
        if !Arc::ptr_eq(&built_for, &shared.config) {
            built_for = shared.config.clone();
            builder = Arc::new(self::builder(&built_for));
        }
        let builder = builder.clone();
        let connections = connections.clone();
        let handshake_timeout = shared.config.header_read_timeout;
        tasks.spawn(async move {
            match tls {
                None => serve_connection(tcp, shared, &builder, peer).await,
                // The handshake is held to the header-read deadline: a
                // client that opens a connection and sends nothing (or
                // garbage) is closed like a slow HTTP client.
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    // A TLS-ALPN-01 validation (RFC 8737): the handshake
                    // was the whole answer; no HTTP on it.
                    Ok(Ok(mut stream)) if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) => {
                        tracing::debug!(%peer, "Answered a TLS-ALPN-01 validation handshake; closing.");
                        let close = tokio::io::AsyncWriteExt::shutdown(&mut stream);
                        let _ = tokio::time::timeout(handshake_timeout, close).await;
                    }
                    Ok(Ok(stream)) => serve_connection(stream, shared, &builder, peer).await,
                    Ok(Err(error)) => {
                        shared.front.stats().tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, %error, "TLS handshake failed.");
                    }
                    Err(_) => {
                        shared.front.stats().tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "TLS handshake not finished in time; closing.");
                    }
                },
            }
            connections.remove(id);
            connections.closed();
        });
    }
    // Every connection handed over before the hand closed is registered.
    connections.stop_all();
    tasks.close();
    tasks.wait().await;
}

/// How long a stopping balancer keeps its keep-alive connections, answering
/// each with `Connection: close`, before it closes the rest (see `serve`):
/// zero, unless ebb hands its listening sockets over (`ebb up --takeover`,
/// SIGTERM).
static HAND_OVER_GRACE_MS: AtomicU64 = AtomicU64::new(0);

/// At shutdown, give keep-alive clients `grace` to be told to reconnect
/// (see `serve`). Set when ebb leaves its sockets to another process.
pub fn hand_over_clients_on_shutdown(grace: Duration) {
    HAND_OVER_GRACE_MS.store(grace.as_millis() as u64, Ordering::SeqCst);
}

fn hand_over_grace() -> Duration {
    Duration::from_millis(HAND_OVER_GRACE_MS.load(Ordering::SeqCst))
}

/// Serves one client connection (plain or TLS) until it closes.
async fn serve_connection<S: ClientStream>(
    stream: S,
    shared: Arc<ConnShared>,
    builder: &auto::Builder<TokioExecutor>,
    peer: SocketAddr,
) {
    let io = TokioIo::new(ConnIo::new(stream, shared.clone()));
    let service = {
        let shared = shared.clone();
        service_fn(move |req| handle(shared.clone(), req))
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    let mut registered = false;
    let result = std::future::poll_fn(|cx| {
        if shared.cut_requested() {
            // Dropping the connection ends its streams and requests.
            return std::task::Poll::Ready(Err("client stopped taking a stream (send_timeout)".into()));
        }
        if !stopping {
            if !registered {
                shared.set_task(cx.waker());
                registered = true;
            }
            if shared.stop_requested() {
                // Finish the request in progress (HTTP/1) or the
                // open streams (HTTP/2, after GOAWAY), take no more.
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "Client connection ended with an error.");
    }
}

/// Failed accepts (EMFILE and the like): a pause that doubles from 10 ms to
/// 1 s while they last, and one log line per episode instead of one per
/// try.
#[derive(Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn failed(&mut self, service: &str, error: &std::io::Error) -> Duration {
        if self.failures == 0 {
            tracing::warn!(
                service,
                %error,
                "Balancer could not accept a connection; backing off until it can (see docs/balancer.md#file-descriptors)."
            );
        }
        self.failures = self.failures.saturating_add(1);
        (Self::FIRST * 2u32.saturating_pow(self.failures.min(8) - 1)).min(Self::MAX)
    }

    fn recovered(&mut self, service: &str) {
        if self.failures > 0 {
            tracing::info!(service, failed_accepts = self.failures, "Balancer accepts connections again.");
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_up_to_a_second_and_starts_over() {
        let mut b = AcceptBackoff::default();
        let error = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<u64> = (0..9).map(|_| b.failed("web", &error).as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.recovered("web");
        assert_eq!(b.failed("web", &error), Duration::from_millis(10));
    }
}

//! Upgrade requests (WebSocket and other `Connection: upgrade` protocols):
//! a fresh connection to the replica per request, spoken with hyper's
//! client, whose upgrade support hands both sockets over to a tunnel that
//! relays bytes both ways. Never pooled: after a 101 the connection is the
//! tunnel's; after any other answer it closes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode, Version};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::access_log::Served;
use super::body::{Dispatched, ProxyBody};
use super::forward::{answered, connect_failed, local_error};
use super::headers::strip_hop_by_hop;
use super::upstream::{connect_tcp, ConnectError, RequestBody};
use super::ServiceProxy;

/// Sends an upgrade request to `dispatched`'s replica (once more to another
/// on a failed connect) and relays the answer: a 101 becomes a tunnel
/// between the client's connection (`client`) and the replica's. With
/// `log_served`, the answer names the replica for the access log.
pub(super) async fn relay(
    proxy: &Arc<ServiceProxy>,
    mut dispatched: Dispatched,
    req: Request<RequestBody>,
    client: hyper::upgrade::OnUpgrade,
    config: &ebb_core::config::ProxyConfig,
    arrived: Instant,
    log_served: bool,
) -> Response<ProxyBody> {
    let mut retried = false;
    let mut send = loop {
        match connect(dispatched.backend().addr, config.connect_timeout).await {
            Ok(send) => break send,
            Err(error) => {
                if let Some(answer) = connect_failed(proxy, &mut dispatched, &mut retried, error) {
                    return answer;
                }
            }
        }
    };
    proxy.queue_time.record(arrived.elapsed());
    let sent = Instant::now();
    let mut response = match tokio::time::timeout(config.upstream_timeout, send.send_request(req)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            proxy.count_gateway_failure(dispatched.backend(), false);
            tracing::debug!(replica = %dispatched.backend().replica_id, %error, "Replica failed an upgrade request.");
            drop(dispatched);
            proxy.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            return local_error(proxy, StatusCode::BAD_GATEWAY, "replica failed to answer", false);
        }
        Err(_) => {
            proxy.count_gateway_failure(dispatched.backend(), false);
            drop(dispatched);
            proxy.stats.upstream_timeouts.fetch_add(1, Ordering::Relaxed);
            return local_error(proxy, StatusCode::GATEWAY_TIMEOUT, "replica did not answer in time", false);
        }
    };
    let head_rtt = sent.elapsed();
    answered(proxy, &dispatched, response.status(), arrived, head_rtt);
    if log_served {
        let backend = dispatched.backend().clone();
        response.extensions_mut().insert(Served { backend, upstream: head_rtt });
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers, true);
        dispatched.active().conn().tunneled.store(true, Ordering::Relaxed);
        spawn_tunnel(client, upstream, dispatched);
        return Response::from_parts(parts, ProxyBody::empty());
    }
    // Refused (or answered without switching): an ordinary answer.
    let (mut parts, body) = response.into_parts();
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, ProxyBody::upgrade_refused(body, dispatched))
}

/// A new connection whose I/O runs in a task of its own, with hyper's
/// upgrade support (the socket can become a tunnel).
async fn connect(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<http1::SendRequest<RequestBody>, ConnectError> {
    let tcp = connect_tcp(addr, timeout).await?;
    let (send, conn) = http1::Builder::new().handshake(TokioIo::new(tcp)).await.map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "Upstream connection ended with an error.");
        }
    });
    Ok(send)
}

/// Relays bytes both ways between the upgraded client and backend
/// connections. The dispatch (and so `in_flight`) lasts as long as the tunnel.
fn spawn_tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, dispatched: Dispatched) {
    let shutdown = dispatched.active().conn().shutdown.child_token();
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream);
        match (client, upstream) {
            (Ok(client), Ok(upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                tokio::select! {
                    result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "Tunnel closed with an error.");
                        }
                    }
                    _ = shutdown.cancelled() => {}
                }
            }
            (client, upstream) => {
                tracing::debug!(client_ok = client.is_ok(), upstream_ok = upstream.is_ok(), "Upgrade failed.");
            }
        }
        drop(dispatched);
    });
}

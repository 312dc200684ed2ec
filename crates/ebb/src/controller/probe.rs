//! Active health probes: one HTTP GET per interval on a fresh connection.
//!
//! Probes never share connections with user traffic, so they do not queue
//! behind it in the balancer's pool; a busy replica that still answers its
//! probe within `timeout` stays healthy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ebb_core::health::StatusMatcher;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// One probe's verdict and a short human explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub passed: bool,
    pub detail: String,
}

/// Probes `http://addr{path}` once; never takes longer than `timeout`.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration, matcher: &StatusMatcher) -> ProbeOutcome {
    let started = Instant::now();
    match tokio::time::timeout(timeout, get_status(addr, path)).await {
        Ok(Ok(status)) => {
            let took = started.elapsed().as_millis();
            if matcher.matches(status) {
                ProbeOutcome { passed: true, detail: format!("GET {path} -> {status} in {took} ms") }
            } else {
                ProbeOutcome {
                    passed: false,
                    detail: format!("GET {path} -> {status} in {took} ms, expected {}", matcher.as_str()),
                }
            }
        }
        Ok(Err(error)) => ProbeOutcome { passed: false, detail: format!("GET {path} failed: {error}") },
        Err(_) => ProbeOutcome {
            passed: false,
            detail: format!("GET {path} timed out after {}", humantime::format_duration(timeout)),
        },
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "ebb-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    // Read the (small) body so the replica sees a clean close.
    let _ = response.into_body().collect().await;
    conn.abort();
    Ok(status)
}

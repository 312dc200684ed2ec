//! Active health probes: one HTTP GET per interval on a fresh connection.
//!
//! Probes never share connections with user traffic, so they do not queue
//! behind it in the balancer's pool; a busy replica that still answers its
//! probe within `timeout` stays healthy.
//!
//! A probe that cannot even open its socket for ebb's own reason (ebb is out
//! of file descriptors, kernel buffers or local ports) says nothing about
//! the replica: it comes back with `ebb_fault` set and the controller holds
//! the replica's health instead of counting a failure. Otherwise a flood of
//! client connections would make ebb stop every healthy replica.

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
    /// The probe could not run for ebb's own reason (see the module doc):
    /// no verdict on the replica.
    pub ebb_fault: bool,
}

/// Why a probe got no status code.
#[derive(Debug)]
enum ProbeError {
    /// ebb could not open the connection for a reason of its own.
    Local(std::io::Error),
    /// The replica refused, reset, or spoke something else than HTTP.
    Replica(String),
}

/// Errors that come from ebb's own process or host, not from the peer:
/// out of descriptors (`EMFILE`, `ENFILE`), kernel buffers or memory
/// (`ENOBUFS`, `ENOMEM`), or local ports (`EADDRNOTAVAIL` on connect).
pub fn is_local_resource_error(error: &std::io::Error) -> bool {
    use nix::errno::Errno;
    let Some(code) = error.raw_os_error() else { return false };
    matches!(
        Errno::from_raw(code),
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM | Errno::EADDRNOTAVAIL
    )
}

/// Probes `http://addr{path}` once; never takes longer than `timeout`.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration, matcher: &StatusMatcher) -> ProbeOutcome {
    let started = Instant::now();
    match tokio::time::timeout(timeout, get_status(addr, path)).await {
        Ok(Ok(status)) => {
            let took = started.elapsed().as_millis();
            if matcher.matches(status) {
                ProbeOutcome { passed: true, detail: format!("GET {path} -> {status} in {took} ms"), ebb_fault: false }
            } else {
                ProbeOutcome {
                    passed: false,
                    detail: format!("GET {path} -> {status} in {took} ms, expected {}", matcher.as_str()),
                    ebb_fault: false,
                }
            }
        }
        Ok(Err(ProbeError::Replica(error))) => {
            ProbeOutcome { passed: false, detail: format!("GET {path} failed: {error}"), ebb_fault: false }
        }
        Ok(Err(ProbeError::Local(error))) => ProbeOutcome {
            passed: false,
            detail: format!("GET {path} could not run: ebb could not open a connection: {error}"),
            ebb_fault: true,
        },
        Err(_) => ProbeOutcome {
            passed: false,
            detail: format!("GET {path} timed out after {}", humantime::format_duration(timeout)),
            ebb_fault: false,
        },
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> Result<u16, ProbeError> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| match is_local_resource_error(&e) {
        true => ProbeError::Local(e),
        false => ProbeError::Replica(e.to_string()),
    })?;
    let replica = |e: &dyn std::fmt::Display| ProbeError::Replica(e.to_string());
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| replica(&e))?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "ebb-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| replica(&e))?;
    let response = sender.send_request(request).await.map_err(|e| replica(&e))?;
    let status = response.status().as_u16();
    // Read the (small) body so the replica sees a clean close.
    let _ = response.into_body().collect().await;
    conn.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ebbs_own_shortages_are_local() {
        let os = std::io::Error::from_raw_os_error;
        for local in [24, 23, 105, 12, 99] {
            // EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL on Linux
            assert!(is_local_resource_error(&os(local)), "{}", os(local));
        }
        for replica in [111, 104, 110, 113] {
            // ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH
            assert!(!is_local_resource_error(&os(replica)), "{}", os(replica));
        }
        assert!(!is_local_resource_error(&std::io::Error::other("no code")));
    }

    #[tokio::test]
    async fn a_refused_connection_is_the_replicas_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let outcome = probe(addr, "/gtg", Duration::from_secs(1), &StatusMatcher::default()).await;
        assert!(!outcome.passed && !outcome.ebb_fault, "{outcome:?}");
    }
}

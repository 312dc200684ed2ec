//! `ebb load`'s own HTTP/1.1 client end to end: the real binary against a
//! scripted server on 127.0.0.1 that answers each request with fixed bytes
//! (split across several writes), so every framing a server may use, and
//! broken responses, are seen as a user sees them: status counts, bytes
//! received, connections opened, error kinds. The server stops when its
//! guard drops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const EBB: &str = env!("CARGO_BIN_EXE_ebb");

/// What the server does after writing a response.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    KeepOpen,
    Close,
}

/// A server answering every request with `response` (written in pieces of
/// `piece` bytes), then `then`. Counts requests and connections.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start(response: &'static [u8], piece: usize, then: Then) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests, connections) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counted, opened) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                opened.fetch_add(1, Ordering::SeqCst);
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        // The requests here have no body: a head is a request.
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            counted.fetch_add(1, Ordering::SeqCst);
                            for part in response.chunks(piece) {
                                if tcp.write_all(part).await.is_err() {
                                    return;
                                }
                                tokio::task::yield_now().await;
                            }
                            if then == Then::Close {
                                return;
                            }
                        }
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        Scripted { addr, requests, connections, task }
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// `ebb load -n N -c 2 --json` against `server` (plus extra arguments).
async fn load(server: &Scripted, n: u64, extra: &[&str]) -> Value {
    let url = format!("http://{}/", server.addr);
    let n = n.to_string();
    let mut args = vec!["load", "-n", &n, "-c", "2", "--timeout", "5s", "--json"];
    args.extend_from_slice(extra);
    args.push(&url);
    let child = tokio::process::Command::new(EBB)
        .args(&args)
        .env("EBB_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ebb {args:?} did not finish within 30 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no count {key:?} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_with_extensions_and_trailers_are_counted_and_kept_alive() {
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Checksum: 7\r\n\r\n";
    let server = Scripted::start(response, 7, Then::KeepOpen).await;
    let v = load(&server, 40, &[]).await;
    assert_eq!((num(&v, "ok"), num(&v, "errors")), (40, 0), "{v}");
    assert_eq!(num(&v, "bytes_received"), 40 * 15, "the chunks' data only: {v}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 40);
    // Two workers, plus the reachability check.
    assert!(server.connections() <= 3, "{} connections", server.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_100_continue_is_skipped() {
    let response = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nok\n";
    let server = Scripted::start(response, 5, Then::KeepOpen).await;
    let v = load(&server, 20, &["-m", "POST", "-d", "x"]).await;
    assert_eq!(v["status_codes"], serde_json::json!({"201": 20}), "{v}");
    assert_eq!(num(&v, "bytes_received"), 60, "{v}");
    assert!(server.connections() <= 3, "{} connections", server.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_ends_are_not_reused() {
    let cases: [(&'static [u8], Then); 3] = [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", Then::Close),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", Then::Close),
        // No length: the body is what comes until the server closes.
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", Then::Close),
    ];
    for (response, then) in cases {
        let server = Scripted::start(response, 9, then).await;
        let v = load(&server, 20, &[]).await;
        let text = String::from_utf8_lossy(response);
        assert_eq!((num(&v, "ok"), num(&v, "errors")), (20, 0), "{text:?}: {v}");
        let body = text.split("\r\n\r\n").nth(1).unwrap().len() as u64;
        assert_eq!(num(&v, "bytes_received"), 20 * body, "{text:?}: {v}");
        // One connection per request, plus the reachability check.
        assert_eq!(server.connections(), 21, "{text:?}");
    }
    // HTTP/1.0 asking to keep the connection keeps it.
    let kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
    let server = Scripted::start(kept, 4, Then::KeepOpen).await;
    let v = load(&server, 20, &[]).await;
    assert_eq!(num(&v, "ok"), 20, "{v}");
    assert!(server.connections() <= 3, "{} connections", server.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_and_204_have_no_body() {
    let server = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 6, Then::KeepOpen).await;
    let v = load(&server, 10, &["-m", "HEAD"]).await;
    assert_eq!((num(&v, "ok"), num(&v, "bytes_received")), (10, 0), "{v}");
    assert!(server.connections() <= 3);
    let server = Scripted::start(b"HTTP/1.1 204 No Content\r\n\r\n", 3, Then::KeepOpen).await;
    let v = load(&server, 10, &[]).await;
    assert_eq!(v["status_codes"], serde_json::json!({"204": 10}), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_responses_are_failures_of_their_kind() {
    let cases: [(&'static [u8], Then, &str); 4] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", Then::KeepOpen, "invalid HTTP response"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", Then::KeepOpen, "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", Then::Close, "connection closed before"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", Then::Close, "connection closed before"),
    ];
    for (response, then, kind) in cases {
        let server = Scripted::start(response, 4, then).await;
        let v = load(&server, 6, &[]).await;
        let text = String::from_utf8_lossy(response);
        assert_eq!((num(&v, "ok"), num(&v, "errors")), (0, 6), "{text:?}: {v}");
        let kinds = v["error_kinds"].as_object().unwrap();
        assert!(kinds.len() == 1 && kinds.keys().all(|k| k.starts_with(kind)), "{text:?}: {v}");
    }
}

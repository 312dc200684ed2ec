//! The balancer's connection to a replica against hyper's client, on the
//! same bytes over real loopback sockets:
//!
//! - **Differential**: for generated responses (`http1::props::valid`:
//!   interim heads, every framing, HEAD/204/304, bodies that look like
//!   heads) written in random pieces, it relays the status, the headers
//!   (names, values, order) and the body's bytes that hyper's client reads.
//!   Mutated responses: never a panic, and whenever both accept one, they
//!   agree.
//! - **Requests**: what reaches the replica is the head as given and the
//!   body as given (`Content-Length`) or chunked (no length), as httparse
//!   reads it.
//! - **Reuse**: a connection carries a second request only when the first
//!   ended as HTTP/1.1 allows.
//!
//! `EBB_PROP_SEED=N` replays another seed; `EBB_PROP_CASES=N` runs more.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::http1::props::{mutate, valid};
use crate::prop_gen::cases;

/// What a client read: status, headers in order, body.
type Read = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

/// A one-connection server: reads a request head, then writes `pieces`
/// one by one and closes.
async fn serve_once(pieces: Vec<Vec<u8>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        for piece in pieces {
            if tcp.write_all(&piece).await.is_err() {
                return;
            }
            let _ = tcp.flush().await;
            tokio::task::yield_now().await;
        }
        let _ = tcp.shutdown().await;
        // Let the client read to the end before the socket goes.
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await;
    });
    addr
}

fn request(method: http::Method) -> (request::Parts, RequestBody) {
    let req = http::Request::builder().method(method).uri("/x").header("host", "web.test").body(()).unwrap();
    (req.into_parts().0, RequestBody::Empty)
}

/// The response as the balancer's connection reads it.
async fn ours(addr: SocketAddr, head_request: bool) -> Result<Read, ConnError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut conn = UpstreamConn::new(tcp);
    let (parts, body) = request(if head_request { http::Method::HEAD } else { http::Method::GET });
    conn.start(&parts, &Forwarding::default(), body);
    let head = std::future::poll_fn(|cx| conn.poll_head(cx)).await?;
    let mut body = Vec::new();
    while let Some(data) = std::future::poll_fn(|cx| conn.poll_data(cx)).await {
        body.extend_from_slice(&data?);
    }
    Ok((head.status.as_u16(), headers_of(&head.headers), body))
}

/// The same response as hyper's client reads it.
async fn hypers(addr: SocketAddr, head_request: bool) -> Result<Read, hyper::Error> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let method = if head_request { http::Method::HEAD } else { http::Method::GET };
    let req = http::Request::builder()
        .method(method)
        .uri("/x")
        .header("host", "web.test")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(req).await?;
    let status = response.status().as_u16();
    let headers = headers_of(response.headers());
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, headers, body))
}

fn headers_of(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect()
}

fn pieces(rng: &mut fastrand::Rng, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let most = if rng.bool() { 8 } else { 200 };
        let n = rng.usize(1..=rest.len().min(most));
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

fn seed() -> u64 {
    crate::prop_gen::seed(0x0b57_c0de)
}

/// Header order aside: hyper groups a repeated name's values together.
fn sorted(mut read: Read) -> Read {
    read.1.sort();
    read
}

#[tokio::test]
async fn relays_what_hypers_client_reads_from_the_same_bytes() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let mut read = 0;
    for _ in 0..cases(120) {
        let case = valid(&mut rng);
        let text = String::from_utf8_lossy(&case.bytes).into_owned();
        let ours = ours(serve_once(pieces(&mut rng, &case.bytes)).await, case.head_request).await;
        let hypers = hypers(serve_once(vec![case.bytes.clone()]).await, case.head_request).await;
        match (ours, hypers) {
            (Ok(ours), Ok(hypers)) => {
                read += 1;
                assert_eq!(ours.0, case.status, "{text:?}");
                assert_eq!(ours.2.len() as u64, case.body, "{text:?}");
                assert_eq!(sorted(ours), sorted(hypers), "{text:?}");
            }
            // Both refuse Transfer-Encoding in an HTTP/1.0 response (RFC
            // 9112 section 6.1: its framing is faulty).
            (Err(ConnError::Malformed(_)), Err(_)) if text.contains("HTTP/1.0 ") => {}
            (ours, hypers) => panic!("ours {ours:?}, hyper's {hypers:?} for {text:?}"),
        }
    }
    assert!(read >= cases(120) / 2, "{read} read");
}

#[tokio::test]
async fn mutated_responses_never_panic_and_agree_with_hyper_when_both_accept() {
    let mut rng = fastrand::Rng::with_seed(seed() ^ 1);
    let mut both = 0;
    for _ in 0..cases(120) {
        let mut case = valid(&mut rng);
        mutate(&mut rng, &mut case.bytes);
        let text = String::from_utf8_lossy(&case.bytes).into_owned();
        let ours = ours(serve_once(pieces(&mut rng, &case.bytes)).await, case.head_request).await;
        let hypers = hypers(serve_once(vec![case.bytes.clone()]).await, case.head_request).await;
        if let (Ok(ours), Ok(hypers)) = (ours, hypers) {
            both += 1;
            assert_eq!(sorted(ours), sorted(hypers), "{text:?}");
        }
    }
    assert!(both > 0, "some mutated responses stay readable");
}

/// A replica that records the bytes of one request (head and body, read
/// until the client's end of a chunked body or the given length) and
/// answers 200.
async fn recording_replica() -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            let Some(end) = text.find("\r\n\r\n") else { continue };
            let head = text[..end].to_ascii_lowercase();
            let body = &got[end + 4..];
            let done = if head.contains("transfer-encoding: chunked") {
                body.ends_with(b"0\r\n\r\n")
            } else if let Some(len) = head.split("content-length: ").nth(1) {
                body.len() >= len.split("\r\n").next().unwrap().trim().parse::<usize>().unwrap()
            } else {
                true
            };
            if done {
                break;
            }
        }
        tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
        let _ = tx.send(got);
    });
    (addr, rx)
}

/// A request body of the given pieces, as a client's streamed body.
fn streamed(pieces: &[&'static [u8]]) -> RequestBody {
    let frames = pieces.iter().map(|p| hyper::body::Frame::data(Bytes::from_static(p))).collect();
    RequestBody::Buffered(frames, None)
}

async fn send_recorded(parts: request::Parts, body: RequestBody) -> Vec<u8> {
    let (addr, got) = recording_replica().await;
    let mut conn = UpstreamConn::new(TcpStream::connect(addr).await.unwrap());
    conn.start(&parts, &Forwarding::default(), body);
    let head = std::future::poll_fn(|cx| conn.poll_head(cx)).await.unwrap();
    assert_eq!(head.status, 200);
    got.await.unwrap()
}

#[tokio::test]
async fn a_body_without_a_length_goes_up_chunked_and_one_with_a_length_as_it_is() {
    let (mut parts, _) = request(http::Method::POST);
    parts.headers.append("x-twice", HeaderValue::from_static("a"));
    parts.headers.append("x-twice", HeaderValue::from_static("b"));
    let got = send_recorded(parts, streamed(&[b"hello ", b"", b"world"])).await;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(&got).unwrap() else { panic!("incomplete head") };
    assert_eq!((parsed.method, parsed.path, parsed.version), (Some("POST"), Some("/x"), Some(1)));
    let names: Vec<(&str, &[u8])> = parsed.headers.iter().map(|h| (h.name, h.value)).collect();
    assert_eq!(
        names,
        [("host", &b"web.test"[..]), ("x-twice", b"a"), ("x-twice", b"b"), ("transfer-encoding", b"chunked")]
    );
    assert_eq!(&got[len..], b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n");

    let (mut parts, _) = request(http::Method::PUT);
    parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("11"));
    let got = send_recorded(parts, streamed(&[b"hello ", b"world"])).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("PUT /x HTTP/1.1\r\nhost: web.test\r\ncontent-length: 11\r\n\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello world"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
}

/// Serves `answers` one after the other on one connection (one per
/// request head read), then closes.
async fn keep_alive_replica(answers: Vec<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        for answer in answers {
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            tcp.write_all(answer).await.unwrap();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await;
    });
    addr
}

/// Sends one GET on `conn` and reads the answer whole.
async fn exchange(conn: &mut UpstreamConn) -> (u16, Vec<u8>) {
    let (parts, body) = request(http::Method::GET);
    conn.start(&parts, &Forwarding::default(), body);
    let head = std::future::poll_fn(|cx| conn.poll_head(cx)).await.unwrap();
    let mut body = Vec::new();
    while let Some(data) = std::future::poll_fn(|cx| conn.poll_data(cx)).await {
        body.extend_from_slice(&data.unwrap());
    }
    (head.status.as_u16(), body)
}

#[tokio::test]
async fn a_connection_is_reused_only_when_the_response_ended_as_http_1_1_allows() {
    let kept: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nx-t: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nhi",
    ];
    for first in kept {
        let addr = keep_alive_replica(vec![first, b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nnew"]).await;
        let mut conn = UpstreamConn::new(TcpStream::connect(addr).await.unwrap());
        let (status, _) = exchange(&mut conn).await;
        assert!(conn.reusable() && conn.still_open(), "after {:?}", String::from_utf8_lossy(first));
        assert!(status == 200 || status == 204);
        assert_eq!(exchange(&mut conn).await, (201, b"new".to_vec()));
    }
    let closed: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n",
    ];
    for first in closed {
        let addr = keep_alive_replica(vec![first]).await;
        let mut conn = UpstreamConn::new(TcpStream::connect(addr).await.unwrap());
        assert_eq!(exchange(&mut conn).await, (200, b"hi".to_vec()));
        assert!(!conn.reusable(), "after {:?}", String::from_utf8_lossy(first));
    }
}

#[tokio::test]
async fn an_unasked_101_and_a_response_cut_short_are_errors() {
    let addr = serve_once(vec![b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n".to_vec()]).await;
    assert!(matches!(ours(addr, false).await, Err(ConnError::SwitchedUnasked)));
    let addr = serve_once(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec()]).await;
    assert!(matches!(ours(addr, false).await, Err(ConnError::Closed)));
    let addr = serve_once(vec![b"HTTP/1.1 200 OK\r\ncontent-le".to_vec()]).await;
    assert!(matches!(ours(addr, false).await, Err(ConnError::Closed)));
    let addr = serve_once(vec![b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n".to_vec()]).await;
    assert!(matches!(ours(addr, false).await, Err(ConnError::Malformed(_))));
}

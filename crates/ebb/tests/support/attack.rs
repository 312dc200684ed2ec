//! A reusable table of hostile HTTP/1.1 requests and the answer a front door
//! owes each (RFC 9110 / 9112, as nginx and HAProxy answer them).
//!
//! [`run`] sends every case on its own connection to a listener and reports
//! what differs, so any listener (plain, and TLS or shared ones later) can
//! run the same cases: open a stream to it, hand it to [`run_case`]. The
//! replica behind the listener must answer a plain `GET`/`POST` with 200.
//!
//! Used from `tests/proxy.rs` as `#[path = "support/attack.rs"] mod attack;`
//! (not through `support/mod.rs`, so other test binaries do not build it).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Whether a case's request may reach the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replica {
    /// It must: the request is fine.
    Reaches,
    /// It must not: refused on its head.
    Never,
    /// The head goes up before the body is found broken: the replica may see
    /// a request start (and its body break off), never a whole one.
    Broken,
}

pub struct Case {
    pub name: &'static str,
    pub request: &'static [u8],
    /// The status of the first (only) answer.
    pub status: u16,
    pub replica: Replica,
}

const fn case(name: &'static str, request: &'static [u8], status: u16, replica: Replica) -> Case {
    Case { name, request, status, replica }
}

use Replica::*;

/// The cases. Each request closes its connection (`Connection: close`) or
/// is refused, so a case's answer is everything read until EOF.
pub const CASES: &[Case] = &[
    // --- a good request, so the table proves the listener works at all
    case("plain GET", b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n", 200, Reaches),
    case("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", 200, Reaches),
    case(
        "Connection: Host keeps Host",
        b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close, Host\r\n\r\n",
        200,
        Reaches,
    ),
    case(
        "lone chunked body",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        200,
        Reaches,
    ),
    // --- Host (RFC 9112 §3.2)
    case("two Host lines", b"GET / HTTP/1.1\r\nHost: web.test\r\nHost: evil.test\r\n\r\n", 400, Never),
    case("two equal Host lines", b"GET / HTTP/1.1\r\nHost: web.test\r\nhost: web.test\r\n\r\n", 400, Never),
    case("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400, Never),
    case("empty Host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400, Never),
    case("Host with userinfo", b"GET / HTTP/1.1\r\nHost: user@web.test\r\n\r\n", 400, Never),
    case("Host with a space", b"GET / HTTP/1.1\r\nHost: web test\r\n\r\n", 400, Never),
    case("Host with a path", b"GET / HTTP/1.1\r\nHost: web.test/x\r\n\r\n", 400, Never),
    case("Host port too large", b"GET / HTTP/1.1\r\nHost: web.test:65536\r\n\r\n", 400, Never),
    case("absolute form with userinfo", b"GET http://u@web.test/ HTTP/1.1\r\nHost: web.test\r\n\r\n", 400, Never),
    // --- Transfer-Encoding (RFC 9112 §6.1, §6.3)
    case(
        "identity, chunked",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        501,
        Never,
    ),
    case(
        "gzip, chunked",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        Never,
    ),
    case(
        "chunked, chunked",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
        Never,
    ),
    case(
        "two Transfer-Encoding lines",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        Never,
    ),
    case(
        "gzip line, then chunked line",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        Never,
    ),
    case(
        "chunked not last",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
        Never,
    ),
    case(
        "Content-Length and Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        Never,
    ),
    case(
        "Transfer-Encoding in HTTP/1.0",
        b"POST / HTTP/1.0\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        Never,
    ),
    // --- Content-Length
    case("Content-Length 2^63", b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 9223372036854775808\r\n\r\n", 400, Never),
    case("Content-Length 2^64-1", b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 18446744073709551615\r\n\r\n", 400, Never),
    case("Content-Length 2^64", b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 18446744073709551616\r\n\r\n", 400, Never),
    case(
        "two different Content-Lengths",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
        Never,
    ),
    // --- chunked bodies the client breaks
    case(
        "chunk size not hex",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
        400,
        Broken,
    ),
    case(
        "chunk size overflow",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nfffffffffffffffffffff\r\n",
        400,
        Broken,
    ),
    case(
        "chunk without CRLF",
        b"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY3\r\nabc\r\n0\r\n\r\n",
        400,
        Broken,
    ),
];

/// What one case got: the status of the first answer, how many answers, and
/// whether the connection was closed.
#[derive(Debug)]
pub struct Outcome {
    pub status: Option<u16>,
    pub answers: usize,
    pub closed: bool,
    pub text: String,
}

/// Sends `case.request` on `stream` and reads until EOF or `limit`.
pub async fn run_case<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, case: &Case, limit: Duration) -> Outcome {
    let _ = stream.write_all(case.request).await;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.strip_prefix("HTTP/1.").and_then(|t| t.get(2..5)).and_then(|s| s.parse().ok());
    // Status lines only (an echoed body may say "HTTP/1.1" too).
    let answers = text.starts_with("HTTP/1.") as usize + text.matches("\nHTTP/1.").count();
    Outcome { status, answers, closed, text }
}

/// Runs every case in `cases` against the plain TCP listener at `addr`;
/// `replica_requests` reads how many requests the replica has received and
/// `replica_whole` how many it received whole. Returns one line per
/// mismatch (empty: all passed).
pub async fn run(
    addr: std::net::SocketAddr,
    cases: &[Case],
    replica_requests: impl Fn() -> usize,
    replica_whole: impl Fn() -> usize,
) -> Vec<String> {
    let connect = || async move { tokio::net::TcpStream::connect(addr).await.expect("connect to the listener") };
    run_on(connect, cases, replica_requests, replica_whole).await
}

/// [`run`] over any stream `connect` opens (a TLS connection, say).
pub async fn run_on<S, F, Fut>(
    connect: F,
    cases: &[Case],
    replica_requests: impl Fn() -> usize,
    replica_whole: impl Fn() -> usize,
) -> Vec<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let mut failures = Vec::new();
    for case in cases {
        let (requests, whole) = (replica_requests(), replica_whole());
        let stream = connect().await;
        let got = run_case(stream, case, Duration::from_secs(5)).await;
        // What the replica saw: a body it saw break off may take a moment to
        // be counted, so look again for a while before calling it wrong.
        let replica_ok = |requests: usize, whole: usize| match case.replica {
            Reaches => whole == 1,
            Never => requests == 0,
            Broken => whole == 0,
        };
        let started = std::time::Instant::now();
        let (requests, whole) = loop {
            let seen = (replica_requests() - requests, replica_whole() - whole);
            if replica_ok(seen.0, seen.1) || started.elapsed() > Duration::from_secs(2) {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut wrong = Vec::new();
        if got.status != Some(case.status) {
            wrong.push(format!("status {:?}, want {}", got.status, case.status));
        }
        if got.answers != 1 {
            wrong.push(format!("{} answers", got.answers));
        }
        if !got.closed {
            wrong.push("connection left open".to_string());
        }
        if !replica_ok(requests, whole) {
            wrong.push(format!("replica saw {requests} requests, {whole} whole; want {:?}", case.replica));
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {}\n    answer: {:?}", case.name, wrong.join("; "), got.text));
        }
    }
    failures
}

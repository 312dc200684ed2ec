//! HTTP/2 floods written frame by frame (no client library: a library would
//! not send most of these), as a reusable table like `attack.rs`.
//!
//! [`flood`] opens one prior-knowledge HTTP/2 connection to a listener,
//! sends one [`Flood`]'s frames in a loop, reads what comes back and reports
//! how the connection ended. Any listener (plain, and TLS or shared ones
//! later) can run the same table.
//!
//! Used from `tests/proxy.rs` as `#[path = "support/h2flood.rs"] mod h2flood;`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One frame: 9-byte header, then the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK string literal, no Huffman (lengths under 127 only).
fn literal(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127);
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// The header block of `GET path` for `web.test`: static-table indexes and
/// literals without indexing, so the decoder's dynamic table stays empty.
pub fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing (static name 4)
    literal(&mut b, path.as_bytes());
    b.push(0x01); // :authority, literal without indexing (static name 1)
    literal(&mut b, b"web.test");
    b
}

/// One header `x-bomb-N: <value>` as a literal without indexing, new name.
fn bomb_header(out: &mut Vec<u8>, n: usize) {
    out.push(0x00);
    literal(out, format!("x-bomb-{n}").as_bytes());
    literal(out, &[b'v'; 100]);
}

/// The abuses, each bounded by the balancer in its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// CVE-2023-44487: HEADERS then RST_STREAM(CANCEL), new stream each time.
    RapidReset,
    /// Rapid reset paced so that each stream is taken up (and its request
    /// sent on) before it is reset: HEADERS in one write, their RST_STREAMs
    /// in the next, a moment later. Past h2's limit on resets of streams
    /// not yet accepted.
    PacedReset,
    /// Streams opened and left open (no END_STREAM), far past the limit,
    /// paced so that each is taken up (and its request sent on).
    Streams,
    /// Empty SETTINGS frames, each owed an ACK.
    Settings,
    /// PING frames, each owed an answer.
    Pings,
    /// One header list of ever more headers, over CONTINUATION frames that
    /// never end it.
    HeaderBomb,
    /// Empty CONTINUATION frames after a HEADERS that never ends.
    EmptyContinuations,
    /// Empty DATA frames (no END_STREAM) on an open stream.
    EmptyData,
    /// WINDOW_UPDATE frames of 1 byte on the connection.
    WindowUpdates,
}

pub const FLOODS: &[Flood] = &[
    Flood::RapidReset,
    Flood::PacedReset,
    Flood::Streams,
    Flood::Settings,
    Flood::Pings,
    Flood::HeaderBomb,
    Flood::EmptyContinuations,
    Flood::EmptyData,
    Flood::WindowUpdates,
];

impl Flood {
    /// Rounds per write, and the pause after each write (paced floods give
    /// the balancer time to take each stream up).
    fn pace(self) -> (u32, Duration) {
        match self {
            Flood::PacedReset | Flood::Streams => (10, Duration::from_millis(20)),
            _ => (64, Duration::ZERO),
        }
    }

    /// What round `i` (0, 1, 2, …) sends after the pause, if anything.
    fn after(self, i: u32) -> Vec<u8> {
        match self {
            Flood::PacedReset => frame(RST_STREAM, 0, 1 + 2 * i, &8u32.to_be_bytes()),
            _ => Vec::new(),
        }
    }

    /// The frames of round `i` (0, 1, 2, …).
    fn round(self, i: u32, path: &str) -> Vec<u8> {
        let stream = 1 + 2 * i;
        match self {
            Flood::PacedReset => frame(HEADERS, END_HEADERS | END_STREAM, stream, &get_block(path)),
            Flood::RapidReset => {
                let mut out = frame(HEADERS, END_HEADERS | END_STREAM, stream, &get_block(path));
                out.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes())); // CANCEL
                out
            }
            Flood::Streams => frame(HEADERS, END_HEADERS, stream, &get_block(path)),
            Flood::Settings => frame(SETTINGS, 0, 0, &[]),
            Flood::Pings => frame(PING, 0, 0, &u64::from(i).to_be_bytes()),
            Flood::HeaderBomb => {
                let mut block = Vec::new();
                if i == 0 {
                    block = get_block(path);
                }
                for n in 0..100 {
                    bomb_header(&mut block, i as usize * 100 + n);
                }
                if i == 0 {
                    frame(HEADERS, END_STREAM, 1, &block)
                } else {
                    frame(CONTINUATION, 0, 1, &block)
                }
            }
            Flood::EmptyContinuations => {
                if i == 0 {
                    frame(HEADERS, END_STREAM, 1, &get_block(path))
                } else {
                    frame(CONTINUATION, 0, 1, &[])
                }
            }
            Flood::EmptyData => {
                if i == 0 {
                    frame(HEADERS, END_HEADERS, 1, &get_block(path))
                } else {
                    frame(DATA, 0, 1, &[])
                }
            }
            Flood::WindowUpdates => frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
        }
    }
}

/// How one flood ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The error code of the balancer's last GOAWAY, if it sent one.
    pub goaway: Option<u32>,
    /// The balancer closed the connection (EOF, reset, or a write failed).
    pub closed: bool,
    /// Rounds sent before it closed (or `max_rounds`).
    pub rounds: u32,
    /// From the first frame to the close.
    pub elapsed: Duration,
    /// Response HEADERS frames received.
    pub responses: u32,
}

/// Sends `flood` on a new connection to `addr` (requests for `path`) until
/// the balancer closes it, `max_rounds` rounds are sent, or `limit` passes.
pub async fn flood(addr: SocketAddr, flood: Flood, path: &str, max_rounds: u32, limit: Duration) -> Outcome {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = tcp.into_split();
    let started = Instant::now();
    // The balancer's side, read all along (so its answers never block it).
    let reader = tokio::spawn(async move {
        let (mut goaway, mut responses) = (None, 0u32);
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match rx.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                match buf[3] {
                    HEADERS => responses += 1,
                    GOAWAY if len >= 8 => {
                        goaway = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
                    }
                    _ => {}
                }
                buf.drain(..9 + len);
            }
        }
        (goaway, responses, Instant::now())
    });

    let mut outcome = Outcome::default();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    let mut failed = tx.write_all(&hello).await.is_err();
    let (mut batch, mut later) = (Vec::new(), Vec::new());
    while !failed && outcome.rounds < max_rounds && started.elapsed() < limit && !reader.is_finished() {
        // Rounds go out in batches, as a flooder's would.
        batch.clear();
        later.clear();
        let (size, pause) = flood.pace();
        for _ in 0..size.min(max_rounds - outcome.rounds) {
            batch.extend(flood.round(outcome.rounds, path));
            later.extend(flood.after(outcome.rounds));
            outcome.rounds += 1;
        }
        failed = tokio::time::timeout(Duration::from_secs(1), tx.write_all(&batch)).await.is_ok_and(|r| r.is_err());
        tokio::time::sleep(pause).await;
        if !failed && !later.is_empty() {
            failed = tokio::time::timeout(Duration::from_secs(1), tx.write_all(&later)).await.is_ok_and(|r| r.is_err());
        }
        tokio::task::yield_now().await;
    }
    // Whatever made the loop stop, the balancer must close within a moment.
    let rest = limit.saturating_sub(started.elapsed()).max(Duration::from_secs(2));
    let mut reader = reader;
    match tokio::time::timeout(rest, &mut reader).await {
        Ok(Ok((goaway, responses, at))) => {
            outcome.closed = true;
            outcome.goaway = goaway;
            outcome.responses = responses;
            outcome.elapsed = at - started;
        }
        _ => {
            reader.abort();
            outcome.elapsed = started.elapsed();
        }
    }
    drop(tx);
    outcome
}

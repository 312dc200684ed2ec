//! Property and differential tests of the response reader: a bounded
//! number of seeded random cases, run by `cargo test` (so in CI).
//!
//! - **Valid responses** (interim 1xx heads, header names in any case and
//!   look-alikes of the framing headers, `Content-Length`, chunked bodies
//!   with extensions and trailers, read-to-close, HEAD/204/304, bodies that
//!   look like heads, bytes after the response): the reader ends the heads
//!   where httparse does, reports httparse's status, counts exactly the
//!   body's length, and leaves exactly the bytes after the response.
//! - **Mutated and random bytes**: never a panic; a response the reader
//!   accepts has the status httparse reads from its final head.
//! - **Any split**: every case read in random pieces, and (when short) split
//!   in two at every byte, gives the same result as read whole.
//!
//! `EBB_PROP_SEED=N` replays (or explores) another seed; `EBB_PROP_CASES=N`
//! runs more cases.

use super::tests::{read, read_counting_heads, Outcome};
use super::*;

use crate::prop_gen::{any_case, cases, token};

fn seed() -> u64 {
    crate::prop_gen::seed(0x10ad_5eed)
}

/// Body bytes, sometimes holding what looks like a response head or a
/// chunk's end.
fn body_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    crate::prop_gen::body_bytes(rng, len, b"\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length,
    Chunked,
    ToClose,
}

/// A valid response, and what reading it must give.
pub(crate) struct Case {
    pub(crate) bytes: Vec<u8>,
    pub(crate) head_request: bool,
    /// The heads' length (interim ones included).
    heads: usize,
    pub(crate) status: u16,
    pub(crate) body: u64,
    /// Bytes after the response.
    after: usize,
}

fn head_line(rng: &mut fastrand::Rng, version: &str, status: u16) -> String {
    let reason = ["OK", "Whatever", "", "Not Found Here"][rng.usize(..4)];
    format!("{version} {status} {reason}\r\n")
}

fn chunked_body(rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> u64 {
    let mut total = 0;
    for _ in 0..rng.usize(0..5) {
        let len = rng.usize(1..60);
        let mut size = format!("{}{len:x}", "0".repeat(rng.usize(0..3)));
        if rng.bool() {
            size = size.to_uppercase();
        }
        out.extend_from_slice(size.as_bytes());
        if rng.u8(..4) == 0 {
            out.extend_from_slice(b" \t");
        }
        for _ in 0..rng.usize(0..3) {
            let ext = match rng.bool() {
                true => format!(";{}={}", token(rng, 4), token(rng, 5)),
                false => format!(";{}=\"{} {}\"", token(rng, 3), token(rng, 2), token(rng, 2)),
            };
            out.extend_from_slice(ext.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body_bytes(rng, len));
        out.extend_from_slice(b"\r\n");
        total += len as u64;
    }
    out.extend_from_slice("0".repeat(rng.usize(1..4)).as_bytes());
    if rng.bool() {
        out.extend_from_slice(b";last=1");
    }
    out.extend_from_slice(b"\r\n");
    for _ in 0..rng.usize(0..3) {
        out.extend_from_slice(format!("X-Trailer-{}: {}\r\n", token(rng, 3), token(rng, 8)).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    total
}

/// Also the generator of `proxy/upstream_conn_tests.rs`.
pub(crate) fn valid(rng: &mut fastrand::Rng) -> Case {
    let mut bytes = Vec::new();
    let mut heads = 0;
    for _ in 0..rng.usize(0..3).saturating_sub(1) {
        let code = [100, 102, 103][rng.usize(..3)];
        let mut interim = head_line(rng, "HTTP/1.1", code);
        if rng.bool() {
            interim.push_str("Link: </style.css>; rel=preload\r\n");
        }
        interim.push_str("\r\n");
        heads += interim.len();
        bytes.extend_from_slice(interim.as_bytes());
    }
    let status = [200, 201, 204, 304, 404, 500, 503][rng.usize(..7)];
    let version = if rng.u8(..8) == 0 { "HTTP/1.0" } else { "HTTP/1.1" };
    let mut head = head_line(rng, version, status);
    for _ in 0..rng.usize(0..6) {
        // Names that start like the framing headers must not count as them.
        let name = ["server", "content-lengthy", "transfer-encodings", "x-connection", "content-type"][rng.usize(..5)];
        head.push_str(&format!("{}: {} {}\r\n", any_case(rng, name), token(rng, 6), token(rng, 3)));
    }
    let head_request = rng.u8(..8) == 0;
    let bodiless = head_request || status == 204 || status == 304;
    let framing = [Framing::Length, Framing::Chunked, Framing::ToClose][rng.usize(..3)];
    let len = rng.usize(0..300);
    match framing {
        Framing::Length => head.push_str(&format!("{}: {len}\r\n", any_case(rng, "content-length"))),
        Framing::Chunked => head.push_str(&format!("{}: chunked\r\n", any_case(rng, "transfer-encoding"))),
        Framing::ToClose => head.push_str(&format!("{}: close\r\n", any_case(rng, "connection"))),
    }
    head.push_str("\r\n");
    heads += head.len();
    bytes.extend_from_slice(head.as_bytes());
    let body = match framing {
        _ if bodiless => 0,
        Framing::Length | Framing::ToClose => {
            bytes.extend_from_slice(&body_bytes(rng, len));
            len as u64
        }
        Framing::Chunked => chunked_body(rng, &mut bytes),
    };
    // What follows a response that ends by itself stays unread.
    let mut after = 0;
    if (bodiless || framing != Framing::ToClose) && rng.u8(..4) == 0 {
        let extra = b"HTTP/1.1 200 OK\r\n\r\n";
        after = rng.usize(1..=extra.len());
        bytes.extend_from_slice(&extra[..after]);
    }
    Case { bytes, head_request, heads, status, body, after }
}

/// httparse's reading of the heads: their length and the final status
/// (interim 1xx heads skipped), or `None` when it finds no final head.
fn httparse_heads(bytes: &[u8]) -> Option<(usize, u16)> {
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(len) = response.parse(&bytes[at..]).ok()? else { return None };
        at += len;
        let code = response.code?;
        if code >= 200 {
            return Some((at, code));
        }
    }
}

fn random_pieces<'a>(rng: &mut fastrand::Rng, bytes: &'a [u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let most = if rng.bool() { 4 } else { 64 };
        let n = rng.usize(1..=rest.len().min(most));
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    pieces
}

/// Reading in random pieces, and split in two at every byte (when short),
/// gives what reading whole gives.
fn split_agrees(rng: &mut fastrand::Rng, bytes: &[u8], head_request: bool, whole: &Outcome) {
    let pieces = random_pieces(rng, bytes);
    assert_eq!(&read(head_request, &pieces), whole, "random pieces of {:?}", String::from_utf8_lossy(bytes));
    if bytes.len() <= 400 {
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(&read(head_request, &[a, b]), whole, "split at {at}: {:?}", String::from_utf8_lossy(bytes));
        }
    }
}

#[test]
fn valid_responses_agree_with_httparse_and_their_length() {
    let mut rng = fastrand::Rng::with_seed(seed());
    for _ in 0..cases(300) {
        let case = valid(&mut rng);
        let text = String::from_utf8_lossy(&case.bytes).into_owned();
        let (outcome, heads) = read_counting_heads(case.head_request, &[&case.bytes]);
        let (response, after) = outcome.unwrap_or_else(|e| panic!("{e:?} for {text:?}"));
        let (httparse_len, httparse_status) = httparse_heads(&case.bytes).expect("httparse reads the heads");
        assert_eq!((heads, httparse_len), (case.heads, case.heads), "where the heads end: {text:?}");
        assert_eq!((response.status, httparse_status), (case.status, case.status), "{text:?}");
        assert_eq!(response.bytes, case.body, "body length: {text:?}");
        assert_eq!(after, case.after, "bytes after the response: {text:?}");
        split_agrees(&mut rng, &case.bytes, case.head_request, &Ok((response, after)));
    }
}

pub(crate) fn mutate(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>) {
    const TOKENS: [&[u8]; 8] = [b"\r\n", b"\n", b";", b"0", b"ff", b" ", b":", b"HTTP/1.1 "];
    for _ in 0..rng.usize(1..4) {
        if bytes.is_empty() {
            return;
        }
        let at = rng.usize(..bytes.len());
        match rng.u8(..4) {
            0 => bytes[at] = rng.u8(..),
            1 => {
                bytes.remove(at);
            }
            2 => {
                let token = TOKENS[rng.usize(..TOKENS.len())];
                bytes.splice(at..at, token.iter().copied());
            }
            _ => bytes.truncate(at),
        }
    }
}

fn check_any(rng: &mut fastrand::Rng, bytes: &[u8], head_request: bool) {
    let whole = read(head_request, &[bytes]);
    if let Ok((response, _)) = whole {
        let (_, status) = httparse_heads(bytes).expect("an accepted response has a head httparse reads");
        assert_eq!(response.status, status, "{:?}", String::from_utf8_lossy(bytes));
    }
    split_agrees(rng, bytes, head_request, &whole);
}

#[test]
fn mutated_responses_never_panic_and_split_the_same() {
    let mut rng = fastrand::Rng::with_seed(seed() ^ 1);
    for _ in 0..cases(300) {
        let mut case = valid(&mut rng);
        mutate(&mut rng, &mut case.bytes);
        check_any(&mut rng, &case.bytes, case.head_request);
    }
}

#[test]
fn random_bytes_never_panic_and_split_the_same() {
    const TOKENS: [&[u8]; 12] = [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 100 Continue\r\n",
        b"Content-Length: 3\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"5\r\n",
        b"0\r\n",
        b";x=y",
        b"abc",
        b"\n",
        b"\xff",
    ];
    let mut rng = fastrand::Rng::with_seed(seed() ^ 2);
    for _ in 0..cases(300) {
        let mut bytes = Vec::new();
        for _ in 0..rng.usize(0..12) {
            bytes.extend_from_slice(TOKENS[rng.usize(..TOKENS.len())]);
        }
        let head_request = rng.u8(..8) == 0;
        check_any(&mut rng, &bytes, head_request);
    }
}

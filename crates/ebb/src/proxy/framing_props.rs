//! Property and differential tests of the framing tracker: a bounded number
//! of seeded random cases, run by `cargo test` (so in CI).
//!
//! - **Differential against httparse**: streams of well-formed pipelined
//!   requests (random methods, header names in any case, `Content-Length`,
//!   chunked bodies with extensions and trailers, bodies that look like
//!   request heads, empty lines between requests) are fed byte by byte; the
//!   tracker must complete each head exactly where httparse ends it, and
//!   refuse exactly the first head carrying both framing headers (or longer
//!   than the limit).
//! - **Any split**: for those streams and for random bytes made of HTTP's
//!   own tokens, feeding the bytes in random pieces gives the same heads,
//!   refusal, cut offset and mode as feeding them whole, and never panics.
//!
//! `EBB_PROP_SEED=N` replays (or explores) another seed; `EBB_PROP_CASES=N`
//! runs more cases.

use super::*;

use crate::prop_gen::{any_case, cases, token};

fn seed() -> u64 {
    crate::prop_gen::seed(0x005e_edeb)
}

/// How a generated request frames its body.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Body {
    None,
    Length(usize),
    Chunked,
    /// Both `Content-Length` and `Transfer-Encoding`: must be refused.
    Both,
}

/// Body bytes, sometimes holding what looks like a smuggled request head.
fn body_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    crate::prop_gen::body_bytes(
        rng,
        len,
        b"\r\nGET /smuggled HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
}

/// One request: its bytes, and its framing.
fn request(rng: &mut fastrand::Rng) -> (Vec<u8>, Body) {
    let method = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"][rng.usize(..6)];
    let version = if rng.u8(..10) == 0 { "HTTP/1.0" } else { "HTTP/1.1" };
    let path_len = rng.usize(0..20);
    let path = token(rng, path_len);
    let mut head = format!("{method} /{path}?q={} {version}\r\n", rng.u32(..));
    head.push_str(&format!("{}: {}.test\r\n", any_case(rng, "host"), token(rng, 8)));
    for _ in 0..rng.usize(0..6) {
        // Names that start like the framing headers must not count as them.
        let name = ["x-request-id", "content-lengthy", "transfer-encodings", "accept", "content-type"][rng.usize(..5)];
        head.push_str(&format!("{}: {} {}\r\n", any_case(rng, name), token(rng, 6), token(rng, 3)));
    }
    let body = match rng.u8(..10) {
        0..=3 => Body::None,
        4..=6 => Body::Length(rng.usize(0..300)),
        7..=8 => Body::Chunked,
        _ => Body::Both,
    };
    let mut bytes;
    match body {
        Body::None => {
            head.push_str("\r\n");
            bytes = head.into_bytes();
        }
        Body::Length(n) => {
            let space = if rng.bool() { " " } else { "" };
            head.push_str(&format!("{}:{space}{n}\r\n\r\n", any_case(rng, "content-length")));
            bytes = head.into_bytes();
            bytes.extend(body_bytes(rng, n));
        }
        Body::Chunked | Body::Both => {
            if body == Body::Both {
                head.push_str(&format!("{}: {}\r\n", any_case(rng, "content-length"), rng.usize(0..50)));
            }
            head.push_str(&format!("{}: {}\r\n\r\n", any_case(rng, "transfer-encoding"), any_case(rng, "chunked")));
            bytes = head.into_bytes();
            for _ in 0..rng.usize(0..4) {
                let size = rng.usize(1..200);
                let ext = if rng.bool() { format!(";name={}", token(rng, 4)) } else { String::new() };
                let hex = if rng.bool() { format!("{size:x}") } else { format!("{size:X}") };
                bytes.extend(format!("{hex}{ext}\r\n").into_bytes());
                bytes.extend(body_bytes(rng, size));
                bytes.extend(b"\r\n");
            }
            bytes.extend(b"0\r\n");
            for _ in 0..rng.usize(0..3) {
                bytes.extend(format!("x-trailer-{}: {}\r\n", token(rng, 3), token(rng, 5)).into_bytes());
            }
            bytes.extend(b"\r\n");
        }
    }
    (bytes, body)
}

/// What the tracker says after a stream, fed in `pieces` (sizes, cycled);
/// feeding stops at a cut, as the connection wrapper stops reading.
#[derive(Debug, PartialEq)]
struct Outcome {
    heads: u64,
    refused: Option<(u64, Refusal)>,
    cut_at: Option<usize>,
    mode: Mode,
    partial_head: bool,
    partial_body: bool,
}

fn run(stream: &[u8], max_head: usize, pieces: &[usize]) -> Outcome {
    let mut f = Framing::new(max_head);
    let (mut at, mut cut_at, mut i) = (0, None, 0);
    while at < stream.len() {
        let n = pieces[i % pieces.len()].clamp(1, stream.len() - at);
        i += 1;
        if let Some(keep) = f.feed(&stream[at..at + n]) {
            cut_at = Some(at + keep);
            break;
        }
        at += n;
    }
    Outcome {
        heads: f.heads(),
        refused: f.refused(),
        cut_at,
        mode: f.mode(),
        partial_head: f.in_partial_head(),
        partial_body: f.in_partial_body(),
    }
}

fn random_pieces(rng: &mut fastrand::Rng) -> Vec<usize> {
    (0..rng.usize(1..8)).map(|_| if rng.bool() { rng.usize(1..4) } else { rng.usize(1..200) }).collect()
}

#[test]
fn heads_end_where_httparse_ends_them_and_the_first_ambiguous_or_oversized_one_is_refused() {
    let mut rng = fastrand::Rng::with_seed(seed());
    for case in 0..cases(400) {
        let max_head = if rng.u8(..4) == 0 { rng.usize(60..200) } else { 8192 };
        let mut stream = Vec::new();
        // (offset where httparse says the head ends, its framing, head length)
        let mut expected = Vec::new();
        for _ in 0..rng.usize(1..6) {
            if rng.u8(..4) == 0 {
                stream.extend(b"\r\n"); // an empty line before a request is skipped
            }
            let start = stream.len();
            let (bytes, body) = request(&mut rng);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut headers);
            let head_len = match parsed.parse(&bytes) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("case {case}: httparse does not read the generated head ({other:?}): {bytes:?}"),
            };
            stream.extend(bytes);
            expected.push((start + head_len, body, head_len));
        }
        let refusal = expected.iter().enumerate().find_map(|(i, (_, body, len))| match (body, *len > max_head) {
            (Body::Both, _) => Some((i as u64, Refusal::AmbiguousLength)),
            (_, true) => Some((i as u64, Refusal::HeadTooLarge)),
            _ => None,
        });

        // Byte by byte: where each head completes.
        let mut f = Framing::new(max_head);
        let mut ends = Vec::new();
        for (offset, byte) in stream.iter().enumerate() {
            let before = f.heads();
            assert_eq!(f.feed(std::slice::from_ref(byte)), None, "case {case}: no length here is too large");
            if f.heads() > before {
                ends.push(offset + 1);
            }
        }
        let context =
            || format!("case {case} (seed {}), max_head {max_head}: {}", seed(), String::from_utf8_lossy(&stream));
        assert_eq!(f.refused(), refusal, "{}", context());
        let until = refusal.map_or(expected.len(), |(i, _)| i as usize + 1);
        let want: Vec<usize> = expected[..until].iter().map(|(end, _, _)| *end).collect();
        assert_eq!(ends, want, "{}", context());
        match refusal {
            Some(_) => assert_eq!(f.mode(), Mode::Off, "{}", context()),
            None => {
                assert_eq!(f.mode(), Mode::Http1, "{}", context());
                assert!(!f.in_partial_head() && !f.in_partial_body(), "{}", context());
            }
        }

        // And in random pieces: the same.
        let pieces = random_pieces(&mut rng);
        assert_eq!(run(&stream, max_head, &pieces), run(&stream, max_head, &[stream.len()]), "{}", context());
    }
}

/// Random bytes built from HTTP's own tokens (and some noise).
fn noise(rng: &mut fastrand::Rng) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"GET / HTTP/1.1",
        b"POST /x HTTP/1.1",
        b"PRI * HTTP/2.0",
        b"\r\n",
        b"\n",
        b"\r",
        b": ",
        b":",
        b"Content-Length",
        b"content-length",
        b"Transfer-Encoding",
        b"chunked",
        b"0",
        b"5",
        b"ff",
        b"99999999999999999999",
        b"9223372036854775807",
        b"9223372036854775808",
        b";ext",
        b" ",
        b"\t",
        b"abc",
        b"\r\n\r\n",
    ];
    let mut out = Vec::new();
    for _ in 0..rng.usize(1..60) {
        if rng.u8(..8) == 0 {
            out.push(rng.u8(..));
        } else {
            out.extend_from_slice(TOKENS[rng.usize(..TOKENS.len())]);
        }
    }
    out
}

#[test]
fn random_bytes_in_any_split_give_the_same_answer_and_never_panic() {
    let mut rng = fastrand::Rng::with_seed(seed() ^ 0x0bad_b17e);
    for case in 0..cases(3000) {
        let stream = noise(&mut rng);
        let max_head = [16, 64, 8192][rng.usize(..3)];
        let whole = run(&stream, max_head, &[stream.len()]);
        let pieces = random_pieces(&mut rng);
        let split = run(&stream, max_head, &pieces);
        assert_eq!(
            split,
            whole,
            "case {case} (seed {}), pieces {pieces:?}: {:?}",
            seed(),
            String::from_utf8_lossy(&stream)
        );
        if let Some(at) = whole.cut_at {
            assert!(at <= stream.len());
            assert_eq!(whole.refused.map(|(_, r)| r), Some(Refusal::LengthTooLarge), "only a too-large length cuts");
        }
    }
}

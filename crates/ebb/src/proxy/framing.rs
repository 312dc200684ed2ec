//! A second, minimal reader of the HTTP/1 request stream on a client
//! connection, running beside hyper's parser.
//!
//! hyper accepts a request carrying both `Content-Length` and
//! `Transfer-Encoding` (it drops the length, reads the body chunked and closes
//! the connection afterwards), and by the time the request reaches the service
//! one of the two headers is gone, so the service cannot tell. ebb answers such
//! a request with 400 instead (the classic request-smuggling shape), so this
//! tracker watches the raw bytes as they are read: it finds each request head,
//! notes its length and its framing headers, and skips the body by the same
//! rules hyper uses (`Content-Length` bytes, or chunks up to the last chunk and
//! its trailers). It never changes a byte; it only reports, per head, whether
//! that head must be refused.
//!
//! The tracker also tells the connection wrapper whether a head is partially
//! read (the header-read deadline runs then) and spots the HTTP/2 preface.
//!
//! When it meets something it cannot follow (a malformed length, a chunk size
//! that does not parse), hyper rejects that request with 400 and closes the
//! connection anyway, so the tracker just stops ([`Mode::Off`]).
//!
//! One refusal cannot wait for the end of the head: a `Content-Length` above
//! 2^63 − 1. hyper would answer the two largest values (2^64 − 2 and
//! 2^64 − 1) with its own 431 and pass the others on. So at the digit that
//! makes the length too large the tracker *cuts* the stream: [`Framing::feed`]
//! says how many of the bytes hyper may still see, the connection wrapper
//! ends the head right there (`\r\n\r\n`) and gives hyper nothing more, and
//! hyper hands that truncated head to the service in its turn (after any
//! earlier pipelined request), where the refusal is answered with 400.

/// Why a request head must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Both `Content-Length` and `Transfer-Encoding`: 400, connection closed.
    AmbiguousLength = 1,
    /// The head is longer than `max_header_bytes`: 431, connection closed.
    HeadTooLarge = 2,
    /// A `Content-Length` above 2^63 − 1: 400, connection closed. The head
    /// is cut at the offending digit (see the module doc).
    LengthTooLarge = 3,
}

impl Refusal {
    pub(crate) fn from_code(code: u64) -> Option<Refusal> {
        match code {
            1 => Some(Refusal::AmbiguousLength),
            2 => Some(Refusal::HeadTooLarge),
            3 => Some(Refusal::LengthTooLarge),
            _ => None,
        }
    }
}

/// What the connection carries, as far as the tracker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// HTTP/1 requests, being tracked.
    Http1,
    /// The HTTP/2 prior-knowledge preface was seen: nothing more to track.
    Http2,
    /// Lost track (malformed input that hyper refuses too) or stopped.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages (leading empty lines are skipped, as httparse does).
    Idle,
    RequestLine,
    LineStart,
    Name,
    Value,
    Body(u64),
    ChunkSize,
    ChunkExt,
    ChunkData(u64),
    ChunkDataEnd,
    TrailerLineStart,
    TrailerLine,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    Other,
    ContentLength,
    TransferEncoding,
}

const PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0";
/// What ends a head that was cut short (see [`Framing::feed`]).
pub(crate) const CUT_HEAD_END: &[u8] = b"\r\n\r\n";
/// The largest `Content-Length` passed on: many servers read the length
/// as an `i64`.
const MAX_LENGTH: u64 = i64::MAX as u64;
const NAME_BUF: usize = 17; // "transfer-encoding".len()

/// Tracks request framing over the bytes of one client connection.
#[derive(Debug)]
pub(crate) struct Framing {
    state: State,
    mode: Mode,
    max_head: usize,
    /// Heads completed so far (the index of the next head).
    heads: u64,
    /// First refused head: (index, why). Later heads are never reached
    /// because a refusal closes the connection.
    refused: Option<(u64, Refusal)>,
    // --- the head being read ---
    head_len: usize,
    saw_length: bool,
    saw_chunked: bool,
    length: u64,
    length_digits: bool,
    name: [u8; NAME_BUF],
    name_len: usize,
    header: Header,
    /// How much of the request line still matches the HTTP/2 preface.
    preface_match: usize,
    /// Set by a byte that cuts the stream (see [`Framing::feed`]).
    cut: bool,
    // --- the chunked body being skipped ---
    chunk: u64,
    chunk_digits: bool,
}

impl Framing {
    pub(crate) fn new(max_head: usize) -> Self {
        Framing {
            state: State::Idle,
            mode: Mode::Http1,
            max_head,
            heads: 0,
            refused: None,
            head_len: 0,
            saw_length: false,
            saw_chunked: false,
            length: 0,
            length_digits: false,
            name: [0; NAME_BUF],
            name_len: 0,
            header: Header::Other,
            preface_match: 0,
            cut: false,
            chunk: 0,
            chunk_digits: false,
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// The first refused head, if any: (head index from 0, reason).
    pub(crate) fn refused(&self) -> Option<(u64, Refusal)> {
        self.refused
    }

    /// True while some bytes of a request head have been read but not its end.
    pub(crate) fn in_partial_head(&self) -> bool {
        self.mode == Mode::Http1
            && matches!(self.state, State::RequestLine | State::LineStart | State::Name | State::Value)
    }

    /// True while a request body (sized or chunked, trailers included) has
    /// been announced by a head but not wholly read.
    pub(crate) fn in_partial_body(&self) -> bool {
        self.mode == Mode::Http1
            && matches!(
                self.state,
                State::Body(_)
                    | State::ChunkSize
                    | State::ChunkExt
                    | State::ChunkData(_)
                    | State::ChunkDataEnd
                    | State::TrailerLineStart
                    | State::TrailerLine
            )
    }

    /// Request heads completed so far.
    pub(crate) fn heads(&self) -> u64 {
        self.heads
    }

    /// Stops tracking (the connection was upgraded to a tunnel).
    pub(crate) fn stop(&mut self) {
        self.mode = Mode::Off;
        self.state = State::Done;
    }

    fn lose_track(&mut self) {
        self.stop();
    }

    /// Feeds bytes just read from the client, in order.
    ///
    /// Returns `Some(n)` when the stream must be cut: hyper may see only the
    /// first `n` of these bytes, then [`CUT_HEAD_END`], then nothing more
    /// (the refused head is answered and the connection closed). Tracking
    /// has stopped by then.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let total = bytes.len();
        let mut bytes = bytes;
        while !bytes.is_empty() {
            if self.mode != Mode::Http1 {
                return None;
            }
            match self.state {
                State::Body(left) => {
                    let n = (left as usize).min(bytes.len());
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 { State::Idle } else { State::Body(left) };
                    continue;
                }
                State::ChunkData(left) => {
                    let n = (left as usize).min(bytes.len());
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 { State::ChunkDataEnd } else { State::ChunkData(left) };
                    continue;
                }
                // Fast paths, byte for byte what `byte` would do: most of a
                // head is bytes that only count towards its length, so they
                // are skipped up to the next byte that matters (the hot path
                // of every request).
                State::RequestLine if self.preface_match == usize::MAX => {
                    bytes = self.skip_in_head(bytes, memchr::memchr(b'\n', bytes));
                }
                State::Value if self.header != Header::ContentLength => {
                    bytes = self.skip_in_head(bytes, memchr::memchr(b'\n', bytes));
                }
                State::Name => {
                    let end = memchr::memchr2(b':', b'\n', bytes).unwrap_or(bytes.len());
                    self.name_bytes(&bytes[..end]);
                    bytes = self.skip_in_head(bytes, Some(end));
                }
                State::ChunkExt | State::TrailerLine => {
                    bytes = &bytes[memchr::memchr(b'\n', bytes).unwrap_or(bytes.len())..];
                }
                _ => {}
            }
            if bytes.is_empty() {
                break;
            }
            let b = bytes[0];
            self.byte(b);
            if self.cut {
                return Some(total - bytes.len());
            }
            bytes = &bytes[1..];
        }
        None
    }

    fn byte(&mut self, b: u8) {
        match self.state {
            State::Idle => {
                if b == b'\r' || b == b'\n' {
                    return;
                }
                self.start_head();
                self.head_byte(b);
            }
            State::RequestLine | State::LineStart | State::Name | State::Value => self.head_byte(b),
            State::ChunkSize => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    match self.chunk.checked_mul(16).and_then(|c| c.checked_add(digit)) {
                        Some(c) => {
                            self.chunk = c;
                            self.chunk_digits = true;
                        }
                        None => self.lose_track(),
                    }
                }
                b';' | b' ' | b'\t' if self.chunk_digits => self.state = State::ChunkExt,
                b'\r' if self.chunk_digits => self.state = State::ChunkExt,
                b'\n' if self.chunk_digits => self.end_chunk_size(),
                _ => self.lose_track(),
            },
            State::ChunkExt => {
                if b == b'\n' {
                    self.end_chunk_size();
                }
            }
            State::ChunkDataEnd => {
                if b == b'\n' {
                    self.chunk = 0;
                    self.chunk_digits = false;
                    self.state = State::ChunkSize;
                }
            }
            State::TrailerLineStart => match b {
                b'\r' => {}
                b'\n' => self.state = State::Idle,
                _ => self.state = State::TrailerLine,
            },
            State::TrailerLine => {
                if b == b'\n' {
                    self.state = State::TrailerLineStart;
                }
            }
            State::Body(_) | State::ChunkData(_) | State::Done => {}
        }
    }

    fn end_chunk_size(&mut self) {
        self.state = if self.chunk == 0 { State::TrailerLineStart } else { State::ChunkData(self.chunk) };
    }

    fn start_head(&mut self) {
        self.state = State::RequestLine;
        self.head_len = 0;
        self.saw_length = false;
        self.saw_chunked = false;
        self.length = 0;
        self.length_digits = false;
        self.preface_match = if self.heads == 0 { 0 } else { usize::MAX };
    }

    fn head_byte(&mut self, b: u8) {
        self.head_len += 1;
        match self.state {
            State::RequestLine => {
                if b == b'\n' {
                    if self.preface_match == PREFACE_LINE.len() {
                        self.mode = Mode::Http2;
                        self.state = State::Done;
                        return;
                    }
                    self.state = State::LineStart;
                } else if self.preface_match < PREFACE_LINE.len() && PREFACE_LINE[self.preface_match] == b {
                    self.preface_match += 1;
                } else if !(b == b'\r' && self.preface_match == PREFACE_LINE.len()) {
                    self.preface_match = usize::MAX;
                }
            }
            State::LineStart => match b {
                b'\r' => {}
                b'\n' => self.end_head(),
                _ => {
                    self.state = State::Name;
                    self.name_len = 0;
                    self.name_byte(b);
                }
            },
            State::Name => {
                if b == b':' {
                    self.header = if self.name_len > NAME_BUF {
                        Header::Other
                    } else {
                        match &self.name[..self.name_len] {
                            b"content-length" => Header::ContentLength,
                            b"transfer-encoding" => Header::TransferEncoding,
                            _ => Header::Other,
                        }
                    };
                    match self.header {
                        Header::ContentLength => {
                            // Several Content-Length lines must agree (hyper
                            // refuses them otherwise); keep the last value.
                            self.saw_length = true;
                            self.length = 0;
                            self.length_digits = false;
                        }
                        Header::TransferEncoding => self.saw_chunked = true,
                        Header::Other => {}
                    }
                    self.state = State::Value;
                } else if b == b'\n' {
                    // A header line without a colon: hyper answers 400.
                    self.lose_track();
                } else {
                    self.name_byte(b);
                }
            }
            State::Value => {
                if b == b'\n' {
                    if self.header == Header::ContentLength && !self.length_digits {
                        self.lose_track();
                        return;
                    }
                    self.state = State::LineStart;
                } else if self.header == Header::ContentLength {
                    match b {
                        b'0'..=b'9' => match self.length.checked_mul(10).and_then(|l| l.checked_add((b - b'0') as u64))
                        {
                            Some(l) if l <= MAX_LENGTH => {
                                self.length = l;
                                self.length_digits = true;
                            }
                            _ => self.cut_head(Refusal::LengthTooLarge),
                        },
                        b' ' | b'\t' | b'\r' => {}
                        _ => self.lose_track(),
                    }
                }
            }
            _ => unreachable!("head_byte outside a head"),
        }
    }

    /// Counts the head bytes before `until` (all of them when `None`) and
    /// returns the rest, which starts with the byte that matters next.
    fn skip_in_head<'a>(&mut self, bytes: &'a [u8], until: Option<usize>) -> &'a [u8] {
        let n = until.unwrap_or(bytes.len());
        self.head_len += n;
        &bytes[n..]
    }

    /// `name_byte` for each of `bytes`, none of which is `:` or `\n`.
    fn name_bytes(&mut self, bytes: &[u8]) {
        if self.name_len < NAME_BUF {
            let take = bytes.len().min(NAME_BUF - self.name_len);
            for (slot, b) in self.name[self.name_len..self.name_len + take].iter_mut().zip(bytes) {
                *slot = b.to_ascii_lowercase();
            }
        }
        self.name_len = self.name_len.saturating_add(bytes.len());
    }

    fn name_byte(&mut self, b: u8) {
        if self.name_len < NAME_BUF {
            self.name[self.name_len] = b.to_ascii_lowercase();
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    /// Refuses the head being read before its end, and cuts the stream just
    /// before the current byte (the head counts as complete: hyper will see
    /// it end with [`CUT_HEAD_END`]).
    fn cut_head(&mut self, refusal: Refusal) {
        let index = self.heads;
        self.heads += 1;
        if self.refused.is_none() {
            self.refused = Some((index, refusal));
        }
        self.cut = true;
        self.stop();
    }

    fn end_head(&mut self) {
        let index = self.heads;
        self.heads += 1;
        let refusal = if self.saw_length && self.saw_chunked {
            Some(Refusal::AmbiguousLength)
        } else if self.head_len > self.max_head {
            Some(Refusal::HeadTooLarge)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if self.refused.is_none() {
                self.refused = Some((index, refusal));
            }
            // The answer closes the connection: nothing further matters.
            self.stop();
            return;
        }
        self.state = if self.saw_chunked {
            self.chunk = 0;
            self.chunk_digits = false;
            State::ChunkSize
        } else if self.saw_length && self.length > 0 {
            State::Body(self.length)
        } else {
            State::Idle
        };
    }
}

#[cfg(test)]
#[path = "framing_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(f: &mut Framing, input: &[u8], step: usize) {
        for piece in input.chunks(step) {
            f.feed(piece);
        }
    }

    #[test]
    fn counts_keep_alive_heads_with_bodies_in_any_split() {
        let input: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /y HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nabcde\r\n0\r\nx-trailer: 1\r\n\r\n\
\r\nGET /z HTTP/1.1\r\n\r\n";
        for step in [1, 2, 3, 7, 1000] {
            let mut f = Framing::new(1024);
            feed_all(&mut f, input, step);
            assert_eq!(f.heads(), 4, "step {step}");
            assert_eq!(f.refused(), None);
            assert!(!f.in_partial_head());
            assert_eq!(f.mode(), Mode::Http1);
        }
    }

    #[test]
    fn a_body_that_looks_like_a_smuggled_head_is_skipped() {
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        let mut f = Framing::new(1024);
        f.feed(&input);
        assert_eq!(f.heads(), 1);
        assert_eq!(f.refused(), None);
    }

    #[test]
    fn both_length_headers_refuse_that_head() {
        let input = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        let mut f = Framing::new(1024);
        feed_all(&mut f, input, 4);
        assert_eq!(f.refused(), Some((1, Refusal::AmbiguousLength)));
    }

    #[test]
    fn an_oversized_head_is_refused() {
        let input = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(300));
        let mut f = Framing::new(200);
        f.feed(input.as_bytes());
        assert_eq!(f.refused(), Some((0, Refusal::HeadTooLarge)));
    }

    #[test]
    fn partial_head_is_reported() {
        let mut f = Framing::new(1024);
        assert!(!f.in_partial_head());
        f.feed(b"GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(f.in_partial_head());
        f.feed(b"\r\n");
        assert!(!f.in_partial_head());
    }

    #[test]
    fn http2_preface_switches_mode() {
        let mut f = Framing::new(1024);
        f.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00");
        assert_eq!(f.mode(), Mode::Http2);
        assert!(!f.in_partial_head());
        let mut f = Framing::new(1024);
        f.feed(b"PRI * HTTP/1.1\r\n\r\n");
        assert_eq!(f.mode(), Mode::Http1);
    }

    #[test]
    fn a_length_above_i64_max_cuts_the_head_at_the_offending_digit() {
        let ok = b"POST / HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\n";
        let mut f = Framing::new(1024);
        assert_eq!(f.feed(ok), None);
        assert_eq!(f.refused(), None);
        assert!(f.in_partial_body());

        for value in ["9223372036854775808", "18446744073709551615", "18446744073709551616", "99999999999999999999999"]
        {
            let head = format!(
                "GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: {value}\r\nX-After: 1\r\n\r\n"
            );
            let first_digit = head.find(value).unwrap();
            for step in [1, 5, 1000] {
                let mut f = Framing::new(1024);
                let mut seen = 0;
                let mut cut_at = None;
                for piece in head.as_bytes().chunks(step) {
                    if let Some(n) = f.feed(piece) {
                        cut_at = Some(seen + n);
                        break;
                    }
                    seen += piece.len();
                }
                let cut_at = cut_at.unwrap_or_else(|| panic!("{value} step {step}: no cut"));
                // hyper sees the digits that still fit, then the head's end.
                let kept = &head[first_digit..cut_at];
                assert!(kept.parse::<u64>().unwrap() <= i64::MAX as u64, "{value}: {kept}");
                assert!(value.starts_with(kept), "{value}: {kept}");
                assert_eq!(f.refused(), Some((1, Refusal::LengthTooLarge)), "{value} step {step}");
                assert_eq!(f.heads(), 2);
                assert_eq!(f.mode(), Mode::Off);
                assert_eq!(f.feed(b"more"), None, "nothing after a cut");
            }
        }
    }

    /// A seeded generator of request heads, pipelined and mutated (bytes
    /// flipped, dropped, duplicated, digits inserted), fed in random splits:
    /// the tracker never panics and its reports stay consistent.
    #[test]
    fn random_and_mutated_heads_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"POST /x HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n",
            b"Host: a\r\n",
            b"Content-Length: 5\r\n",
            b"Content-Length: 18446744073709551615\r\n",
            b"content-length:9223372036854775808\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"transfer-encoding: gzip, chunked\r\n",
            b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            b"\r\n",
            b"\n",
            b"hello",
            b"5\r\nabcde\r\n",
            b"ffffffffffffffffffff\r\n",
            b"0\r\n\r\n",
            b"3;ext=\"x\"\r\nabc\r\n",
            b":",
            b" ",
            b"\x00\xff",
        ];
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..(next() % 24) {
                input.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            for _ in 0..(next() % 6) {
                if input.is_empty() {
                    break;
                }
                let at = (next() % input.len() as u64) as usize;
                match next() % 4 {
                    0 => input[at] = next() as u8,
                    1 => {
                        input.remove(at);
                    }
                    2 => input.insert(at, input[at]),
                    _ => input.insert(at, b'0' + (next() % 10) as u8),
                }
            }
            let mut f = Framing::new(64 + (next() % 512) as usize);
            let mut rest = &input[..];
            let mut heads = 0;
            while !rest.is_empty() {
                let n = 1 + (next() % 40) as usize;
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                rest = tail;
                let cut = f.feed(piece);
                assert!(f.heads() >= heads, "head count went back");
                heads = f.heads();
                if let Some((index, _)) = f.refused() {
                    assert!(index < f.heads());
                    assert_ne!(f.mode(), Mode::Http1, "tracking goes on after a refusal");
                }
                if let Some(n) = cut {
                    assert!(n < piece.len(), "a cut keeps fewer bytes than were fed");
                    assert_eq!(f.refused().map(|r| r.1), Some(Refusal::LengthTooLarge));
                    break;
                }
                let _ = (f.in_partial_head(), f.in_partial_body());
            }
        }
    }

    #[test]
    fn malformed_length_stops_tracking() {
        let mut f = Framing::new(1024);
        f.feed(b"POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n");
        assert_eq!(f.mode(), Mode::Off);
        assert!(!f.in_partial_head());
    }
}

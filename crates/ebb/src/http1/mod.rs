//! HTTP/1.1 responses on the wire, without I/O: the reader that both
//! `ebb load`'s workers (`load/http.rs`) and the balancer's connections to
//! replicas (`proxy/upstream_conn.rs`) follow a response with, and the
//! request bytes of `ebb load`'s run.
//!
//! The reader parses the head with `httparse`, skips interim 1xx heads,
//! then follows the body by its framing: `Content-Length`, chunked (with
//! extensions and trailers), or until the server closes. What it finds goes
//! to a [`Sink`]: `ebb load` keeps nothing (`()`), the balancer keeps the
//! final head and the body's bytes, as positions in what it fed. The bytes
//! come from the server: malformed input is an error value, never a panic.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

/// A response head longer than this is refused (hyper's client used 64 KiB).
pub const MAX_HEAD: usize = 64 * 1024;
/// At most this many header lines per head (hyper's default is 100).
const MAX_HEADERS: usize = 100;
/// Chunk extensions and trailers together, per response: they are skipped,
/// but a server sending them without end is malformed, not slow.
const MAX_SKIPPED: usize = 64 * 1024;

/// The bytes of the run's request: request line, headers, `Content-Length`
/// (for a body, or a method that defines one), body.
pub fn serialize(method: &Method, path: &Uri, headers: &HeaderMap, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(128 + body.len());
    write_request_head(&mut out, method, path, headers);
    // Like curl: POST, PUT and PATCH say their (possibly empty) length.
    if !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Why a 101 head is refused: the reader follows requests that did not ask
/// to upgrade.
pub const UNASKED_SWITCH: &str = "101 Switching Protocols without an upgrade request";

/// The request line (origin-form target, HTTP/1.1) and one line per header,
/// names as the `http` crate holds them (lowercase, like hyper's client);
/// the caller adds its framing headers and the empty line.
pub fn write_request_head(out: &mut Vec<u8>, method: &Method, target: &Uri, headers: &HeaderMap) {
    let target = target.path_and_query().map_or("/", |p| p.as_str());
    out.reserve(64 + target.len() + headers.len() * 32);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_header_lines(out, headers);
}

/// One `name: value` line per header.
pub fn write_header_lines<'a>(out: &mut Vec<u8>, headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Body bytes (chunked: the chunks' data only).
    pub bytes: u64,
    /// The server lets the connection carry another request.
    pub reusable: bool,
}

/// Why a response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Not HTTP/1.x as a client can follow it (the reason, for tests).
    Malformed(&'static str),
    /// The connection ended before the response did.
    Ended,
}

/// What [`Reader::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Everything usable was consumed; more bytes are needed.
    More,
    Done(Response),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Body bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the server closes.
    ToClose,
    Done,
}

/// Where the chunked decoder is (the states of RFC 9112 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk size's first hex digit.
    Start,
    Size(u64),
    /// Whitespace after the size.
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
}

/// Follows one response. Feed it the unconsumed bytes read so far; it says
/// how many it used. Bytes of an incomplete head are not consumed: the
/// caller keeps them and appends what it reads next.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The request was HEAD: no response has a body.
    head_request: bool,
    state: State,
    status: u16,
    bytes: u64,
    reusable: bool,
    skipped: usize,
    /// Bytes of the heads read (interim ones included), for the tests.
    heads: usize,
}

impl Reader {
    pub fn new(head_request: bool) -> Reader {
        Reader { head_request, state: State::Head, status: 0, bytes: 0, reusable: false, skipped: 0, heads: 0 }
    }

    /// Consumes a prefix of `input` (everything it can use), and says
    /// whether the response is complete.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Step), Bad> {
        self.feed_to(input, &mut ())
    }

    /// [`Reader::feed`], telling `sink` what it finds in `input`.
    #[inline]
    pub fn feed_to<S: Sink>(&mut self, input: &[u8], sink: &mut S) -> Result<(usize, Step), Bad> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                State::Done => return Ok((used, Step::Done(self.response()))),
                State::Head => match self.head(rest, used, sink)? {
                    Some(n) => {
                        used += n;
                        self.heads += n;
                    }
                    None => {
                        if rest.len() >= MAX_HEAD {
                            return Err(Bad::Malformed("response head too large"));
                        }
                        return Ok((used, Step::More));
                    }
                },
                _ if rest.is_empty() => return Ok((used, Step::More)),
                State::Length(left) => {
                    let n = left.min(rest.len() as u64);
                    sink.data(used, n as usize);
                    self.bytes += n;
                    used += n as usize;
                    self.state = if n == left { State::Done } else { State::Length(left - n) };
                }
                State::ToClose => {
                    sink.data(used, rest.len());
                    self.bytes += rest.len() as u64;
                    used += rest.len();
                }
                State::Chunked(chunk) => used += self.chunked(chunk, rest, used, sink)?,
            }
        }
    }

    /// The server closed the connection (or the stream ended).
    pub fn eof(&mut self) -> Result<Response, Bad> {
        match self.state {
            State::ToClose | State::Done => {
                self.state = State::Done;
                Ok(self.response())
            }
            _ => Err(Bad::Ended),
        }
    }

    /// Bytes of the heads read so far (interim heads included).
    #[cfg(test)]
    pub fn heads_len(&self) -> usize {
        self.heads
    }

    fn response(&self) -> Response {
        Response { status: self.status, bytes: self.bytes, reusable: self.reusable }
    }

    /// Parses one head from `input` (at `base` in what was fed): `None` when
    /// it is incomplete, else its length (the state then says what follows).
    fn head<S: Sink>(&mut self, input: &[u8], base: usize, sink: &mut S) -> Result<Option<usize>, Bad> {
        // Left uninitialised for httparse to fill: writing out all
        // `MAX_HEADERS` empty ones first cost 3 KiB of stores per response.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            input,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Bad::Malformed("too many headers")),
            Err(_) => return Err(Bad::Malformed("invalid response head")),
        };
        let status = parsed.code.ok_or(Bad::Malformed("no status"))?;
        if status == 101 {
            return Err(Bad::Malformed(UNASKED_SWITCH));
        }
        if status < 200 {
            // Interim (100 Continue, 103 Early Hints): the final head follows.
            return Ok(Some(len));
        }
        let framing = Framing::of(parsed.headers)?;
        sink.head(base, input, &parsed)?;
        let http11 = parsed.version == Some(1);
        self.status = status;
        let bodiless = self.head_request || status == 204 || status == 304;
        // HTTP/1.1 keeps the connection unless told to close, 1.0 only when
        // asked to keep it.
        let kept = if http11 { !framing.close } else { framing.keep_alive && !framing.close };
        self.reusable = kept;
        self.state = match framing.body {
            _ if bodiless => State::Done,
            Body::Chunked => State::Chunked(Chunk::Start),
            Body::Length(0) => State::Done,
            Body::Length(n) => State::Length(n),
            Body::ToClose => {
                self.reusable = false;
                State::ToClose
            }
        };
        // Both framings: the length cannot be trusted for the next response.
        if framing.both {
            self.reusable = false;
        }
        Ok(Some(len))
    }

    /// Steps the chunked decoder through `input` (not empty, at `base` in
    /// what was fed); returns the bytes used.
    fn chunked<S: Sink>(&mut self, mut chunk: Chunk, input: &[u8], base: usize, sink: &mut S) -> Result<usize, Bad> {
        let mut i = 0;
        while i < input.len() {
            if let Chunk::Data(left) = chunk {
                let n = left.min((input.len() - i) as u64);
                sink.data(base + i, n as usize);
                self.bytes += n;
                i += n as usize;
                chunk = if n == left { Chunk::DataCr } else { Chunk::Data(left - n) };
                continue;
            }
            let b = input[i];
            i += 1;
            chunk = match (chunk, b) {
                (Chunk::Start, _) => Chunk::Size(hex(b).ok_or(Bad::Malformed("chunk size is not hex"))?),
                (Chunk::Size(size), b' ' | b'\t') => Chunk::SizeLws(size),
                (Chunk::Size(size) | Chunk::SizeLws(size), b';') => Chunk::Extension(size),
                (Chunk::Size(size) | Chunk::SizeLws(size), b'\r') => Chunk::SizeLf(size),
                (Chunk::Size(size), _) => {
                    let digit = hex(b).ok_or(Bad::Malformed("invalid byte in chunk size"))?;
                    let size = size.checked_mul(16).ok_or(Bad::Malformed("chunk size too large"))?;
                    Chunk::Size(size + digit)
                }
                (Chunk::SizeLws(size), b' ' | b'\t') => Chunk::SizeLws(size),
                (Chunk::SizeLws(_), _) => return Err(Bad::Malformed("invalid byte after chunk size")),
                (Chunk::Extension(size), b'\r') => Chunk::SizeLf(size),
                (Chunk::Extension(_), b'\n') => return Err(Bad::Malformed("bare LF in chunk extension")),
                (Chunk::Extension(size), _) => {
                    self.skip()?;
                    Chunk::Extension(size)
                }
                (Chunk::SizeLf(0), b'\n') => Chunk::TrailerStart,
                (Chunk::SizeLf(size), b'\n') => Chunk::Data(size),
                (Chunk::SizeLf(_), _) => return Err(Bad::Malformed("chunk size line does not end in CRLF")),
                (Chunk::Data(_), _) => unreachable!("handled above"),
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Start,
                (Chunk::DataCr | Chunk::DataLf, _) => return Err(Bad::Malformed("chunk data does not end in CRLF")),
                (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::TrailerStart | Chunk::Trailer, _) => {
                    self.skip()?;
                    Chunk::Trailer
                }
                (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
                (Chunk::TrailerLf, _) => return Err(Bad::Malformed("trailer line does not end in CRLF")),
                (Chunk::EndLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(i);
                }
                (Chunk::EndLf, _) => return Err(Bad::Malformed("chunked body does not end in CRLF")),
            };
        }
        self.state = State::Chunked(chunk);
        Ok(i)
    }

    fn skip(&mut self) -> Result<(), Bad> {
        self.skipped += 1;
        match self.skipped > MAX_SKIPPED {
            true => Err(Bad::Malformed("chunk extensions and trailers too long")),
            false => Ok(()),
        }
    }
}

/// What a [`Reader`] tells about the bytes it reads. Positions are offsets
/// in the `input` of that [`Reader::feed_to`] call.
pub trait Sink {
    /// The final head, parsed from `input[at..]` (`head`'s slices point
    /// into `input`). An error refuses the response.
    fn head(&mut self, _at: usize, _input: &[u8], _head: &httparse::Response<'_, '_>) -> Result<(), Bad> {
        Ok(())
    }

    /// `len` bytes of the body's content at `at` (chunked: one chunk's data,
    /// or part of it).
    fn data(&mut self, _at: usize, _len: usize) {}
}

/// Keeps nothing (`ebb load` counts bytes only).
impl Sink for () {}

/// A connection's read buffer: bytes read but not yet consumed by the
/// [`Reader`] sit in `start..end`.
pub struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for InBuf {
    fn default() -> InBuf {
        InBuf { buf: vec![0; 16 * 1024], start: 0, end: 0 }
    }
}

impl InBuf {
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Room to read into: moves unread bytes to the front, or grows (an
    /// incomplete head longer than the buffer; the reader bounds it).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`InBuf::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

enum Body {
    Length(u64),
    Chunked,
    ToClose,
}

/// What a final head's headers say about its body and connection.
struct Framing {
    body: Body,
    /// Both `Transfer-Encoding` and `Content-Length`.
    both: bool,
    close: bool,
    keep_alive: bool,
}

impl Framing {
    fn of(headers: &[httparse::Header<'_>]) -> Result<Framing, Bad> {
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let (mut close, mut keep_alive) = (false, false);
        for header in headers {
            let name = header.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                for value in header.value.split(|&b| b == b',') {
                    let n = decimal(value.trim_ascii()).ok_or(Bad::Malformed("invalid Content-Length"))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(Bad::Malformed("conflicting Content-Length values"));
                    }
                    length = Some(n);
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Chunked when it is the last coding applied.
                let last = header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii).rfind(|c| !c.is_empty());
                chunked = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        // Transfer-Encoding overrides Content-Length (RFC 9112 section 6.3).
        let body = match (chunked, length) {
            (Some(true), _) => Body::Chunked,
            (Some(false), _) => Body::ToClose,
            (None, Some(n)) => Body::Length(n),
            (None, None) => Body::ToClose,
        };
        Ok(Framing { body, both: chunked.is_some() && length.is_some(), close, keep_alive })
    }
}

/// A `Content-Length` value: digits only, no overflow.
pub fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod props;

//! One worker's HTTP/1.1 connection and the request it repeats.
//!
//! Each worker owns at most one connection (TCP_NODELAY, kept alive; TLS
//! over it for an `https://` target, see [`super::tls`]) and drives it
//! from its own task. A request is one write of bytes serialized once per
//! run; the response is read into the connection's buffer and followed by
//! [`crate::http1::Reader`] (head parsed, body counted and dropped). One
//! request is in flight per connection: no pipelining. hyper is used only
//! by [`get_once`], off the hot path.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::tls::{Stream, TlsClient};
use crate::http1::{self as wire, InBuf, Reader, Step};

/// What every request of the run looks like, built once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as the user wrote it (for messages).
    pub url: String,
    pub addr: SocketAddr,
    method: Method,
    /// Origin form (`/path?query`), as HTTP/1.1 sends it.
    path: Uri,
    headers: HeaderMap,
    /// Sent within `wire`; kept whole for the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    body: Bytes,
    /// The whole request as sent: serialized once, written as is.
    wire: Bytes,
    keepalive: bool,
    pub timeout: Option<Duration>,
    /// For an `https://` URL.
    pub tls: Option<TlsClient>,
}

/// The parts of the URL `ebb load` needs, checked.
#[derive(Debug, Clone)]
pub struct ParsedUrl {
    pub host: String,
    pub port: u16,
    pub authority: String,
    pub path: Uri,
    /// `https://`.
    pub tls: bool,
}

/// Parses `http[s]://host[:port][/path][?query]`; a missing scheme means
/// `http://`. Errors are one line for the user.
pub fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    let full = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
    let uri: Uri =
        full.parse().map_err(|e| format!("malformed URL {url:?}: {e} (expected e.g. http://127.0.0.1:8080/path)"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        other => {
            return Err(format!("{url:?}: unsupported scheme {:?} (use http:// or https://)", other.unwrap_or("")))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("malformed URL {url:?}: no host (expected e.g. http://127.0.0.1:8080/path)"))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err(format!("malformed URL {url:?}: no host (expected e.g. http://127.0.0.1:8080/path)"));
    }
    if authority.as_str().contains('@') {
        return Err(format!("{url:?}: user info in the URL is not supported (send it with -H 'Authorization: …')"));
    }
    // `http` accepts any digits as a port; check the range here.
    let port_text = authority.as_str().rsplit_once(':').map(|(_, p)| p).filter(|p| !p.contains(']'));
    let port = match port_text {
        None | Some("") if tls => 443,
        None | Some("") => 80,
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("malformed URL {url:?}: port {text:?} is not between 1 and 65535"))?,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.is_empty() { "/" } else { path };
    Ok(ParsedUrl {
        host,
        port,
        authority: authority.as_str().to_string(),
        path: path.parse().map_err(|e| format!("malformed URL {url:?}: {e}"))?,
        tls,
    })
}

/// Request options from the command line.
pub struct RequestSpec<'a> {
    pub method: &'a str,
    pub headers: &'a [String],
    pub body: Bytes,
    pub content_type: Option<&'a str>,
    pub keepalive: bool,
    pub timeout: Option<Duration>,
    /// `--cacert`: trusted for an `https://` URL besides the public roots.
    pub cacert: Option<&'a std::path::Path>,
}

impl Target {
    /// Builds the request template; errors are one line for the user.
    pub fn new(url: &str, parsed: &ParsedUrl, addr: SocketAddr, spec: RequestSpec<'_>) -> Result<Target, String> {
        let method = Method::from_bytes(spec.method.as_bytes())
            .map_err(|_| format!("-m {:?} is not an HTTP method", spec.method))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::HOST,
            HeaderValue::from_str(&parsed.authority).map_err(|e| format!("bad host: {e}"))?,
        );
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("ebb-load/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(ct) = spec.content_type {
            let value =
                HeaderValue::from_str(ct).map_err(|_| format!("-T {ct:?} is not a valid Content-Type value"))?;
            headers.insert(http::header::CONTENT_TYPE, value);
        }
        for raw in spec.headers {
            let (name, value) = raw
                .split_once(':')
                .ok_or_else(|| format!("-H {raw:?}: expected \"Name: value\", e.g. -H 'Accept: application/json'"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("-H {raw:?}: {:?} is not a header name", name.trim()))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("-H {raw:?}: the value is not a valid header value"))?;
            if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
                return Err(format!("-H {raw:?}: ebb load sets {name} itself from the body"));
            }
            if name == http::header::HOST || name == http::header::USER_AGENT || name == http::header::CONTENT_TYPE {
                headers.insert(name, value); // replaces the default
            } else {
                headers.append(name, value);
            }
        }
        if !spec.keepalive {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let tls = match parsed.tls {
            true => Some(TlsClient::new(&parsed.host, spec.cacert)?),
            false => None,
        };
        Ok(Target {
            tls,
            url: url.to_string(),
            addr,
            wire: wire::serialize(&method, &parsed.path, &headers, &spec.body),
            method,
            path: parsed.path.clone(),
            headers,
            body: spec.body,
            keepalive: spec.keepalive,
            timeout: spec.timeout,
        })
    }

    /// What a listener routes the run's requests by (`Host` as sent, `-H`
    /// included), for following the service behind it.
    pub fn aim(&self) -> super::fleet::Aim {
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        super::fleet::Aim {
            addr: self.addr,
            host: self.headers.get(http::header::HOST).map(text),
            path: self.path.path().to_string(),
            method: self.method.as_str().to_string(),
            headers: self.headers.iter().map(|(n, v)| (n.as_str().to_string(), text(v))).collect(),
        }
    }

    /// Whether connections are reused (no `--disable-keepalive`).
    pub fn keepalive(&self) -> bool {
        self.keepalive
    }

    /// The request as hyper would send it (the tests compare the bytes).
    #[cfg(test)]
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Why a request got no response. Labels are fixed strings so counting
/// them allocates nothing, even when every request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    ConnectRefused,
    ConnectTimedOut,
    ConnectNoPorts,
    ConnectNoFiles,
    ConnectOther,
    Tls,
    Timeout,
    ClosedEarly,
    Reset,
    BadResponse,
    Other,
}

impl Failure {
    pub const ALL: [Failure; 11] = [
        Failure::ConnectRefused,
        Failure::ConnectTimedOut,
        Failure::ConnectNoPorts,
        Failure::ConnectNoFiles,
        Failure::ConnectOther,
        Failure::Tls,
        Failure::Timeout,
        Failure::ClosedEarly,
        Failure::Reset,
        Failure::BadResponse,
        Failure::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::ConnectRefused => "connect: connection refused",
            Failure::ConnectTimedOut => "connect: timed out",
            Failure::ConnectNoPorts => "connect: no local port left (use keep-alive or fewer connections)",
            Failure::ConnectNoFiles => "connect: too many open files (raise `ulimit -n` or lower -c)",
            Failure::ConnectOther => "connect: failed",
            Failure::Tls => "TLS handshake failed",
            Failure::Timeout => "timeout (no complete response within --timeout)",
            Failure::ClosedEarly => "connection closed before a complete response",
            Failure::Reset => "connection reset",
            Failure::BadResponse => "invalid HTTP response",
            Failure::Other => "other transport error",
        }
    }

    /// The request never left: the connection could not be opened.
    pub fn before_sending(self) -> bool {
        matches!(
            self,
            Failure::ConnectRefused
                | Failure::ConnectTimedOut
                | Failure::ConnectNoPorts
                | Failure::ConnectNoFiles
                | Failure::ConnectOther
                | Failure::Tls
        )
    }

    pub fn index(self) -> usize {
        self as usize
    }

    fn from_io(e: &std::io::Error) -> Failure {
        match e.kind() {
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted => Failure::Reset,
            std::io::ErrorKind::UnexpectedEof => Failure::ClosedEarly,
            _ => Failure::Other,
        }
    }

    fn from_bad(bad: wire::Bad) -> Failure {
        match bad {
            wire::Bad::Malformed(_) => Failure::BadResponse,
            wire::Bad::Ended => Failure::ClosedEarly,
        }
    }

    fn from_connect(e: &std::io::Error) -> Failure {
        const EMFILE: i32 = 24;
        if e.raw_os_error() == Some(EMFILE) {
            return Failure::ConnectNoFiles;
        }
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Failure::ConnectRefused,
            std::io::ErrorKind::TimedOut => Failure::ConnectTimedOut,
            std::io::ErrorKind::AddrNotAvailable => Failure::ConnectNoPorts,
            _ => Failure::ConnectOther,
        }
    }
}

/// The result of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A complete response: its status and body size.
    Response {
        status: u16,
        bytes: u64,
    },
    Failed(Failure),
}

/// A worker's connection and what it has read but not yet used.
pub struct Conn {
    stream: Stream,
    buf: InBuf,
}

impl Conn {
    /// Opens a connection (TCP_NODELAY), with `tls` its TLS handshake.
    pub async fn open(addr: SocketAddr, tls: Option<&TlsClient>) -> Result<Conn, Failure> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| Failure::from_connect(&e))?;
        let _ = tcp.set_nodelay(true);
        let stream = match tls {
            Some(tls) => tls.handshake(tcp).await.map_err(|_| Failure::Tls)?,
            None => Stream::Plain(tcp),
        };
        Ok(Conn { stream, buf: InBuf::default() })
    }

    /// Whether the connection can carry another request: reads once without
    /// waiting, so a connection the server closed while idle (or sent
    /// unasked-for bytes on) is dropped here rather than failing the next
    /// request. Costs no system call when the socket is known not readable.
    async fn usable(&mut self) -> bool {
        let Conn { stream, buf } = self;
        if !buf.unread().is_empty() {
            return false;
        }
        std::future::poll_fn(|cx| {
            let mut spare = ReadBuf::new(buf.spare());
            Poll::Ready(Pin::new(&mut *stream).poll_read(cx, &mut spare).is_pending())
        })
        .await
    }

    /// Writes the request and reads its response.
    async fn round_trip(&mut self, target: &Target) -> Result<wire::Response, Failure> {
        self.stream.write_all(&target.wire).await.map_err(|e| Failure::from_io(&e))?;
        // A no-op on plain TCP; TLS may hold the last record until flushed.
        self.stream.flush().await.map_err(|e| Failure::from_io(&e))?;
        let mut reader = Reader::new(target.method == Method::HEAD);
        loop {
            let n = match self.stream.read(self.buf.spare()).await {
                Ok(n) => n,
                // TLS without close_notify: the end of the stream all the same.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(Failure::from_io(&e)),
            };
            if n == 0 {
                let response = reader.eof().map_err(Failure::from_bad)?;
                return Ok(wire::Response { reusable: false, ..response });
            }
            self.buf.filled(n);
            let (used, step) = reader.feed(self.buf.unread()).map_err(Failure::from_bad)?;
            self.buf.consume(used);
            if let Step::Done(response) = step {
                return Ok(response);
            }
        }
    }
}

/// A worker's request deadline timer. Arming a fresh timer for every
/// request would cost two timer-wheel updates per request; this one is
/// reset lazily: when it fires before the current request's deadline it is
/// moved to that deadline, so it is touched about once per `--timeout`.
pub struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Default for Timer {
    fn default() -> Self {
        Timer { sleep: Box::pin(tokio::time::sleep_until(Instant::now() + Duration::from_secs(86_400 * 365))) }
    }
}

impl Timer {
    /// Resolves when `deadline` has passed.
    async fn expired(&mut self, deadline: Instant) {
        if self.sleep.deadline() > deadline {
            self.sleep.as_mut().reset(deadline);
        }
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= deadline {
                return;
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

/// Sends one request on the worker's connection (opening one if there is
/// none or it closed), reads the whole response, and leaves the connection
/// in `slot` when it can be reused. Gives up at `deadline` (the request's
/// start + `--timeout`); a request that times out loses its connection
/// (HTTP/1.1 cannot reuse it mid-response).
pub async fn exchange(
    target: &Target,
    slot: &mut Option<Conn>,
    timer: &mut Timer,
    deadline: Option<Instant>,
) -> RequestOutcome {
    let expired = async {
        match deadline {
            Some(deadline) => timer.expired(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);

    if let Some(conn) = slot {
        if !conn.usable().await {
            *slot = None;
        }
    }
    if slot.is_none() {
        tokio::select! {
            biased;
            // Boxed: connecting is rare, and keeps this future small.
            opened = Box::pin(Conn::open(target.addr, target.tls.as_ref())) => match opened {
                Ok(conn) => *slot = Some(conn),
                Err(failure) => return RequestOutcome::Failed(failure),
            },
            _ = &mut expired => return RequestOutcome::Failed(Failure::Timeout),
        }
    }
    let conn = slot.as_mut().expect("connected above");
    let outcome = tokio::select! {
        biased;
        result = conn.round_trip(target) => result,
        _ = &mut expired => Err(Failure::Timeout),
    };
    match outcome {
        Ok(response) => {
            if !(target.keepalive && response.reusable) {
                *slot = None;
            }
            RequestOutcome::Response { status: response.status, bytes: response.bytes }
        }
        Err(failure) => {
            *slot = None;
            RequestOutcome::Failed(failure)
        }
    }
}

/// One plain GET on a fresh connection, for the admin API's status.
pub async fn get_once(addr: SocketAddr, authority: &str, path: &str, limit: Duration) -> Result<(u16, Bytes), String> {
    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, driver) =
            http1::Builder::new().handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
        let request = Request::builder()
            .uri(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONNECTION, "close")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let work = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        tokio::pin!(work);
        tokio::pin!(driver);
        let mut finished = false;
        loop {
            tokio::select! {
                _ = &mut driver, if !finished => finished = true,
                result = &mut work => break result.map_err(|e| e.to_string()),
            }
        }
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("no answer within {}", humantime::format_duration(limit)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/api?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str(), u.path.to_string().as_str()),
            ("127.0.0.1", 8080, "127.0.0.1:8080", "/api?x=1")
        );
        let u = parse_url("localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.to_string().as_str()), ("localhost", 80, "/"));
        let u = parse_url("http://[::1]:9000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert!(parse_url("http://").unwrap_err().starts_with("malformed URL"));
        assert!(parse_url("not a url").unwrap_err().starts_with("malformed URL"));
        let https = parse_url("https://example.com/x").unwrap();
        assert!(https.tls && https.port == 443, "{https:?}");
        assert!(!parse_url("example.com").unwrap().tls);
        assert!(parse_url("ftp://example.com").unwrap_err().contains("unsupported scheme"));
        assert!(parse_url("http://127.0.0.1:99999/").unwrap_err().starts_with("malformed URL"));
    }

    #[test]
    fn headers_override_defaults_and_reject_framing() {
        let parsed = parse_url("http://127.0.0.1:1/").unwrap();
        let addr = "127.0.0.1:1".parse().unwrap();
        let spec = |headers: &'static [String]| RequestSpec {
            method: "POST",
            headers,
            body: Bytes::from_static(b"{}"),
            content_type: Some("application/json"),
            keepalive: false,
            timeout: None,
            cacert: None,
        };
        let headers: &'static [String] =
            Box::leak(Box::new(["Host: example".to_string(), "X-A: 1".into(), "X-A: 2".into()]));
        let t = Target::new("u", &parsed, addr, spec(headers)).unwrap();
        let r = t.request();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.headers()["host"], "example");
        assert_eq!(r.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["connection"], "close");
        let bad: &'static [String] = Box::leak(Box::new(["NoColon".to_string()]));
        assert!(Target::new("u", &parsed, addr, spec(bad)).unwrap_err().contains("expected \"Name: value\""));
        let framing: &'static [String] = Box::leak(Box::new(["Content-Length: 5".to_string()]));
        assert!(Target::new("u", &parsed, addr, spec(framing)).is_err());
    }
}

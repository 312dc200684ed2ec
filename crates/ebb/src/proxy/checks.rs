//! Rules a parsed request head must pass before anything goes upstream
//! (RFC 9110 / RFC 9112), checked on what hyper hands the service.
//!
//! hyper keeps every header line it parsed, so duplicates are still visible
//! here; but it accepts things a front door must not pass on: two `Host`
//! lines (the replica and `X-Forwarded-Host` could each take a different
//! one), a `Transfer-Encoding` that lists codings before `chunked` (it reads
//! the body chunked and the other codings are silently lost), a second
//! `Transfer-Encoding` line, and `Content-Length`s up to 2^64 − 3 (which
//! many servers read as a negative `i64`). Raw-byte checks live in
//! `framing.rs`; these are the ones the parsed head can answer.

use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Version};

/// Why a request head is refused. Every refusal closes the connection: after
/// a framing or Host problem nothing else on it can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// More than one `Host` line (RFC 9112 §3.2: 400).
    DuplicateHost,
    /// An HTTP/1.1 request without `Host`, or an HTTP/2 one with neither
    /// `:authority` nor `Host` (RFC 9112 §3.2, RFC 9113 §8.3.1: 400).
    MissingHost,
    /// A `Host` (or request-target authority) that is not `host[:port]`.
    InvalidHost,
    /// More than one `Transfer-Encoding` line.
    DuplicateTransferEncoding,
    /// `Transfer-Encoding` whose last coding is not `chunked`, that applies
    /// `chunked` twice, or that is not a list of tokens (RFC 9112 §6.3: 400).
    BadTransferEncoding,
    /// Codings other than `chunked` (`gzip, chunked`): ebb decodes only
    /// `chunked` (RFC 9112 §6.1: a coding the server does not understand
    /// gets 501).
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request (RFC 9112 §6.1: 400).
    TransferEncodingInHttp10,
    /// A `Content-Length` above 2^63 − 1.
    ContentLengthTooLarge,
}

impl Rejection {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Rejection::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `error` text of the JSON answer (see docs/balancer.md).
    pub(crate) fn message(self) -> &'static str {
        match self {
            Rejection::DuplicateHost => "request has more than one Host header",
            Rejection::MissingHost => "request has no Host header",
            Rejection::InvalidHost => "request has an invalid Host header",
            Rejection::DuplicateTransferEncoding => "request has more than one Transfer-Encoding header",
            Rejection::BadTransferEncoding => "request has an invalid Transfer-Encoding",
            Rejection::UnsupportedTransferCoding => "only the chunked transfer coding is supported",
            Rejection::TransferEncodingInHttp10 => "HTTP/1.0 request has a Transfer-Encoding",
            Rejection::ContentLengthTooLarge => "request Content-Length is too large",
        }
    }
}

/// Checks `Host`, `Transfer-Encoding` and `Content-Length`. `authority` is
/// the request target's authority (HTTP/2 `:authority`, or an absolute-form
/// HTTP/1 target), which wins over `Host` when forwarding.
pub(crate) fn check_head(version: Version, headers: &HeaderMap, authority: Option<&str>) -> Result<(), Rejection> {
    check_host(version, headers, authority)?;
    check_transfer_encoding(version, headers)?;
    check_content_length(headers)
}

fn check_host(version: Version, headers: &HeaderMap, authority: Option<&str>) -> Result<(), Rejection> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Rejection::DuplicateHost);
    }
    if let Some(host) = host {
        if !is_valid_host(host.as_bytes()) {
            return Err(Rejection::InvalidHost);
        }
    }
    if let Some(authority) = authority {
        if !is_valid_host(authority.as_bytes()) {
            return Err(Rejection::InvalidHost);
        }
    }
    let missing = match version {
        // RFC 9112 §3.2: even an absolute-form request carries `Host`.
        Version::HTTP_11 => host.is_none(),
        Version::HTTP_2 | Version::HTTP_3 => host.is_none() && authority.is_none(),
        // HTTP/1.0 predates `Host`.
        _ => false,
    };
    if missing {
        return Err(Rejection::MissingHost);
    }
    Ok(())
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2), with a
/// non-empty host and a port of at most 65535. No userinfo (`user@host`),
/// no spaces, no bytes outside ASCII.
pub(crate) fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        // IP-literal: an IPv6 address in brackets.
        let Some(close) = rest.iter().position(|&b| b == b']') else { return false };
        let Ok(inside) = std::str::from_utf8(&rest[..close]) else { return false };
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match &rest[close + 1..] {
            [] => (&rest[..close], None),
            [b':', port @ ..] => (&rest[..close], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    if host.is_empty() {
        return false;
    }
    if !value.starts_with(b"[") && !is_reg_name(host) {
        return false;
    }
    match port {
        None => true,
        Some(port) => {
            !port.is_empty()
                && port.len() <= 5
                && port.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(port).ok().and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p <= 65535)
        }
    }
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (an IPv4 address
/// is one too).
fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            b'%' => {
                let hex = host.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 2;
            }
            _ => return false,
        }
        i += 1;
    }
    true
}

fn check_transfer_encoding(version: Version, headers: &HeaderMap) -> Result<(), Rejection> {
    let mut lines = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(line) = lines.next() else { return Ok(()) };
    if version == Version::HTTP_10 || version == Version::HTTP_09 {
        return Err(Rejection::TransferEncodingInHttp10);
    }
    if lines.next().is_some() {
        return Err(Rejection::DuplicateTransferEncoding);
    }
    transfer_codings(line)
}

/// One `Transfer-Encoding` value: a lone `chunked` passes; `X, chunked`
/// (other codings first) is 501; anything else is 400.
fn transfer_codings(line: &HeaderValue) -> Result<(), Rejection> {
    let codings: Vec<&[u8]> = line.as_bytes().split(|&b| b == b',').map(|c| c.trim_ascii()).collect();
    let is_chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    // A coding is a token, maybe with parameters (`gzip;q=1`).
    let well_formed = codings
        .iter()
        .all(|c| !c.is_empty() && c.iter().all(|&b| is_tchar(b) || matches!(b, b';' | b'=' | b' ' | b'\t' | b'"')));
    let last_is_chunked = codings.last().is_some_and(|c| is_chunked(c));
    let chunked_count = codings.iter().filter(|c| is_chunked(c)).count();
    if !well_formed || !last_is_chunked || chunked_count != 1 {
        return Err(Rejection::BadTransferEncoding);
    }
    if codings.len() > 1 {
        return Err(Rejection::UnsupportedTransferCoding);
    }
    Ok(())
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_content_length(headers: &HeaderMap) -> Result<(), Rejection> {
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let digits = part.trim_ascii();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                // Not a number at all: hyper (HTTP/1) or h2 (HTTP/2)
                // refuses it before the service is called.
                continue;
            }
            let fits = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
                .is_some_and(|n| n <= i64::MAX as u64);
            if !fits {
                return Err(Rejection::ContentLengthTooLarge);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
        m
    }

    #[test]
    fn host_syntax() {
        for good in [
            "web.test",
            "web.test:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::7]",
            "xn--bcher-kva.example",
            "a_b-c~d",
            "caf%C3%A9.test",
            "localhost:0",
            "h:65535",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good} should be valid");
        }
        for bad in [
            "",
            ":80",
            "web.test:",
            "web.test:65536",
            "web.test:123456",
            "web.test:8o",
            "user@web.test",
            "web test",
            "web.test/path",
            "web.test?q",
            "web.test#f",
            "[::1",
            "[::1]x",
            "[not-ipv6]",
            "::1",
            "web.test:80:80",
            "%zz.test",
            "%4",
            "web\"test",
            "web\\test",
            "caf\u{e9}.test",
            "a<b",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?} should be invalid");
        }
    }

    /// (name, version, header lines, request-target authority, expected)
    type HostCase<'a> = (&'a str, Version, &'a [(&'a str, &'a str)], Option<&'a str>, Result<(), Rejection>);

    #[test]
    fn host_rules() {
        use Rejection::*;
        let v11 = Version::HTTP_11;
        let cases: &[HostCase] = &[
            ("one host", v11, &[("host", "web.test")], None, Ok(())),
            ("two hosts", v11, &[("host", "web.test"), ("host", "evil.test")], None, Err(DuplicateHost)),
            ("two equal hosts", v11, &[("host", "a"), ("host", "a")], None, Err(DuplicateHost)),
            ("no host 1.1", v11, &[], None, Err(MissingHost)),
            ("no host 1.1 absolute form", v11, &[], Some("web.test"), Err(MissingHost)),
            ("no host 1.0", Version::HTTP_10, &[], None, Ok(())),
            ("bad host 1.0", Version::HTTP_10, &[("host", "a b")], None, Err(InvalidHost)),
            ("empty host", v11, &[("host", "")], None, Err(InvalidHost)),
            ("userinfo", v11, &[("host", "u@web.test")], None, Err(InvalidHost)),
            ("bad authority", v11, &[("host", "web.test")], Some("u@web.test"), Err(InvalidHost)),
            ("h2 authority", Version::HTTP_2, &[], Some("web.test"), Ok(())),
            ("h2 host only", Version::HTTP_2, &[("host", "web.test")], None, Ok(())),
            ("h2 nothing", Version::HTTP_2, &[], None, Err(MissingHost)),
        ];
        for (name, version, headers, authority, want) in cases {
            assert_eq!(check_head(*version, &map(headers), *authority), *want, "{name}");
        }
    }

    #[test]
    fn transfer_encoding_rules() {
        use Rejection::*;
        let cases: &[(&str, &[&str], Result<(), Rejection>)] = &[
            ("lone chunked", &["chunked"], Ok(())),
            ("any case", &["Chunked"], Ok(())),
            ("spaces", &[" chunked "], Ok(())),
            ("identity first", &["identity, chunked"], Err(UnsupportedTransferCoding)),
            ("gzip first", &["gzip, chunked"], Err(UnsupportedTransferCoding)),
            ("unknown first", &["x-custom,chunked"], Err(UnsupportedTransferCoding)),
            ("chunked twice", &["chunked, chunked"], Err(BadTransferEncoding)),
            ("chunked not last", &["chunked, gzip"], Err(BadTransferEncoding)),
            ("no chunked", &["gzip"], Err(BadTransferEncoding)),
            ("empty", &[""], Err(BadTransferEncoding)),
            ("trailing comma", &["chunked,"], Err(BadTransferEncoding)),
            ("leading comma", &[",chunked"], Err(BadTransferEncoding)),
            ("junk", &["chunked@"], Err(BadTransferEncoding)),
            ("junk before", &["g{zip, chunked"], Err(BadTransferEncoding)),
            ("near miss", &["chunkedx"], Err(BadTransferEncoding)),
            ("two lines", &["chunked", "chunked"], Err(DuplicateTransferEncoding)),
            ("two lines, gzip first", &["gzip", "chunked"], Err(DuplicateTransferEncoding)),
        ];
        for (name, lines, want) in cases {
            let mut headers = map(&[("host", "web.test")]);
            for line in *lines {
                headers.append(header::TRANSFER_ENCODING, HeaderValue::from_bytes(line.as_bytes()).unwrap());
            }
            assert_eq!(check_head(Version::HTTP_11, &headers, None), *want, "{name}");
        }
        let headers = map(&[("transfer-encoding", "chunked")]);
        assert_eq!(check_head(Version::HTTP_10, &headers, None), Err(TransferEncodingInHttp10));
        assert_eq!(Rejection::UnsupportedTransferCoding.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(Rejection::BadTransferEncoding.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn content_length_rules() {
        let cases: &[(&str, Result<(), Rejection>)] = &[
            ("0", Ok(())),
            ("9223372036854775807", Ok(())),
            ("09223372036854775807", Ok(())),
            ("9223372036854775808", Err(Rejection::ContentLengthTooLarge)),
            ("18446744073709551615", Err(Rejection::ContentLengthTooLarge)),
            ("18446744073709551616", Err(Rejection::ContentLengthTooLarge)),
            ("99999999999999999999999999", Err(Rejection::ContentLengthTooLarge)),
            ("5, 9223372036854775808", Err(Rejection::ContentLengthTooLarge)),
        ];
        for (value, want) in cases {
            let headers = map(&[("host", "web.test"), ("content-length", value)]);
            assert_eq!(check_head(Version::HTTP_11, &headers, None), *want, "{value}");
        }
    }
}

//! Unit tests of the response reader, one per framing case, and of the
//! request bytes.

use super::*;

/// What reading a response gave: the response and how many bytes were
/// left unread after it, or why it failed.
pub(super) type Outcome = Result<(Response, usize), Bad>;

/// Reads `pieces` as successive reads into a connection's buffer (as
/// `exchange` does), then the end of the stream if the response is not
/// complete by then.
pub(super) fn read(head_request: bool, pieces: &[&[u8]]) -> Outcome {
    read_counting_heads(head_request, pieces).0
}

/// [`read`], and the bytes of the heads the reader went through.
pub(super) fn read_counting_heads(head_request: bool, pieces: &[&[u8]]) -> (Outcome, usize) {
    let mut reader = Reader::new(head_request);
    let outcome = read_with(&mut reader, pieces);
    (outcome, reader.heads_len())
}

fn read_with(reader: &mut Reader, pieces: &[&[u8]]) -> Outcome {
    let mut buf = InBuf::default();
    for (i, piece) in pieces.iter().enumerate() {
        let mut piece = *piece;
        while !piece.is_empty() {
            let spare = buf.spare();
            let n = spare.len().min(piece.len());
            spare[..n].copy_from_slice(&piece[..n]);
            buf.filled(n);
            piece = &piece[n..];
            let (used, step) = reader.feed(buf.unread())?;
            buf.consume(used);
            if let Step::Done(response) = step {
                let later: usize = pieces[i + 1..].iter().map(|p| p.len()).sum();
                let left = buf.unread().len() + piece.len() + later;
                return Ok((response, left));
            }
        }
    }
    let response = reader.eof()?;
    Ok((Response { reusable: false, ..response }, 0))
}

fn whole(bytes: &[u8]) -> Outcome {
    read(false, &[bytes])
}

fn ok(status: u16, bytes: u64, reusable: bool) -> Outcome {
    Ok((Response { status, bytes, reusable }, 0))
}

#[test]
fn content_length() {
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"), ok(200, 3, true));
    assert_eq!(whole(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"), ok(404, 0, true));
    // Repeated equal values are one length; different ones are malformed.
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi"), ok(200, 2, true));
    assert!(matches!(
        whole(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi"),
        Err(Bad::Malformed(_))
    ));
    assert!(matches!(whole(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), Err(Bad::Malformed(_))));
    assert!(matches!(
        whole(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        Err(Bad::Malformed(_))
    ));
    // Short body: the connection ended early.
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok"), Err(Bad::Ended));
    // Bytes after the body are left for the caller (it drops the connection).
    assert_eq!(
        whole(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1"),
        Ok((Response { status: 200, bytes: 2, reusable: true }, 8))
    );
}

#[test]
fn chunked() {
    let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1a; name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
    assert_eq!(whole(body), ok(200, 31, true));
    let trailers =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2 \r\nhi\r\n0\r\nX-Sum: 1\r\nX-More: 2\r\n\r\n";
    assert_eq!(whole(trailers), ok(200, 2, true));
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), ok(200, 0, true));
    for bad in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nhi\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nb\r\nhi\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rX",
    ] {
        assert!(matches!(whole(bad), Err(Bad::Malformed(_))), "{}", String::from_utf8_lossy(bad));
    }
    // Cut anywhere before the final CRLF: ended early.
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n"), Err(Bad::Ended));
    // Transfer-Encoding wins over Content-Length, and the connection is not reused.
    let both = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    assert_eq!(whole(both), ok(200, 2, false));
}

#[test]
fn endless_extensions_are_malformed() {
    let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
    bytes.resize(bytes.len() + MAX_SKIPPED + 1, b'x');
    assert!(matches!(whole(&bytes), Err(Bad::Malformed(_))));
}

#[test]
fn read_to_close() {
    // No length: the body ends when the server closes; never reused.
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"), ok(200, 9, false));
    assert_eq!(whole(b"HTTP/1.0 200 OK\r\n\r\nold"), ok(200, 3, false));
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz"), ok(200, 2, false));
}

#[test]
fn no_body() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    assert_eq!(read(true, &[head]), ok(200, 0, true), "HEAD");
    assert_eq!(whole(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"), ok(204, 0, true));
    assert_eq!(whole(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"), ok(304, 0, true));
}

#[test]
fn interim_heads_are_skipped() {
    let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n!";
    assert_eq!(whole(bytes), ok(201, 1, true));
    assert_eq!(whole(b"HTTP/1.1 100 Continue\r\n\r\n"), Err(Bad::Ended));
    assert!(matches!(whole(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"), Err(Bad::Malformed(_))));
}

#[test]
fn connection_reuse() {
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"), ok(200, 0, false));
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\nConnection: Upgrade, CLOSE\r\nContent-Length: 0\r\n\r\n"), ok(200, 0, false));
    assert_eq!(whole(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"), ok(200, 0, false));
    assert_eq!(whole(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"), ok(200, 0, true));
}

#[test]
fn garbage_and_limits() {
    assert!(matches!(whole(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(Bad::Malformed(_))));
    assert!(matches!(whole(b"HTTP/1.1 2000 OK\r\n\r\n"), Err(Bad::Malformed(_))));
    assert_eq!(whole(b""), Err(Bad::Ended));
    assert_eq!(whole(b"HTTP/1.1 200 OK\r\n"), Err(Bad::Ended));
    let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
    while long.len() <= MAX_HEAD {
        long.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    assert!(matches!(whole(&long), Err(Bad::Malformed(_))), "a head longer than the limit");
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(matches!(whole(&many), Err(Bad::Malformed(_))));
}

#[test]
fn a_head_split_across_reads_and_the_buffer_grows() {
    let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
    let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(read(false, &pieces), ok(200, 3, true));
    // A head larger than the initial buffer, delivered in one read.
    let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..10 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(4000)).as_bytes());
    }
    big.extend_from_slice(b"Content-Length: 1\r\n\r\n!");
    assert_eq!(whole(&big), ok(200, 1, true));
}

#[test]
fn request_bytes_are_what_hyper_would_send() {
    let headers_of = |raw: &[u8]| {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut request = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(len) = request.parse(raw).unwrap() else { panic!("partial") };
        let fields: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        (request.method.unwrap().to_string(), request.path.unwrap().to_string(), fields, raw[len..].to_vec())
    };
    let mut headers = HeaderMap::new();
    headers.insert("host", "example.test:8080".parse().unwrap());
    headers.append("x-a", "1".parse().unwrap());
    headers.append("x-a", "2".parse().unwrap());
    let path: Uri = "/api?x=1".parse().unwrap();
    let (method, target, fields, body) = headers_of(&serialize(&Method::POST, &path, &headers, b"{}"));
    assert_eq!((method.as_str(), target.as_str(), body.as_slice()), ("POST", "/api?x=1", &b"{}"[..]));
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(fields, pairs(&[("host", "example.test:8080"), ("x-a", "1"), ("x-a", "2"), ("content-length", "2")]));
    let (_, _, fields, body) = headers_of(&serialize(&Method::GET, &path, &headers, b""));
    assert!(body.is_empty() && !fields.iter().any(|(n, _)| n == "content-length"), "{fields:?}");
    let (_, _, fields, _) = headers_of(&serialize(&Method::PUT, &path, &headers, b""));
    assert!(fields.contains(&("content-length".into(), "0".into())), "an empty PUT says so");
}

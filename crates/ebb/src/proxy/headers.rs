//! Header hygiene: hop-by-hop headers, and the headers that say who the
//! client is (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::request_id::X_REQUEST_ID;

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub(crate) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// ebb terminates plain HTTP only.
pub(crate) static PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
pub(crate) static PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");
pub(crate) static CONNECTION_UPGRADE: HeaderValue = HeaderValue::from_static("upgrade");

/// End-to-end headers that `Connection` cannot remove: the message's target
/// and framing (`Host`, `Content-Length`, `Content-Type`) and the client
/// address headers ebb vouches for. RFC 9110 §7.6.1 lets a sender name any
/// header in `Connection`; a client must not use that to make a replica see
/// a request without its `Host` (or a trusted proxy's view of the client
/// without its `X-Forwarded-For`).
fn is_protected(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::CONTENT_TYPE
        || name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
        || name == X_FORWARDED_HOST
        || name == FORWARDED
        || name == X_REAL_IP
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): the fixed list and every
/// header named in `Connection` (except the [protected](is_protected) ones).
/// With `keep_upgrade` (an upgrade request or a 101 answer), `Upgrade` stays
/// and `Connection` is set to `upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names (a standard name compares as an enum) finds
    // which of the fixed list are there; most requests carry none, and a
    // hashed removal of each absent name cost more than the rest of this.
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name) && !(keep_upgrade && *name == header::UPGRADE))
        .cloned()
        .collect();
    if present.contains(&header::CONNECTION) {
        // The common cases ("keep-alive", "close", "upgrade") name headers that
        // the fixed list removes anyway; only collect the others.
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty()
                    || token.eq_ignore_ascii_case(b"keep-alive")
                    || token.eq_ignore_ascii_case(b"close")
                    || token.eq_ignore_ascii_case(b"upgrade")
                {
                    continue;
                }
                match HeaderName::from_bytes(token) {
                    Ok(name) if is_protected(&name) => {
                        tracing::debug!(header = %name, "Connection names an end-to-end header; kept.");
                    }
                    Ok(name) => named.push(name),
                    Err(_) => {}
                }
            }
        }
        for name in named {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            headers.remove(name);
        }
    }
    for name in present {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, CONNECTION_UPGRADE.clone());
    }
}

/// A header [`strip_hop_by_hop`] removes whatever `Connection` says:
/// `Connection` itself and the fixed list (RFC 9110 §7.6.1, and the
/// obsolete `Keep-Alive` and `Proxy-Connection`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// True when an HTTP/1.1 request asks to switch protocols (WebSocket...):
/// an `Upgrade` header and `upgrade` among the `Connection` tokens.
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")))
}

/// Sets the client-address headers on a map (see [`Forwarding::new`]).
#[cfg(test)]
pub(crate) fn set_forwarded(headers: &mut HeaderMap, peer: &HeaderValue, trusted: bool, host: Option<HeaderValue>) {
    Forwarding::new(headers, peer, trusted, host, false).apply(headers);
}

/// The headers ebb adds to one request on its way upstream, decided once
/// from what the client sent: the client-address ones ([`Forwarding::new`])
/// and, when ebb made it, `X-Request-Id` (`request_id.rs`). They are then
/// either set on a header map ([`apply`](Forwarding::apply), for requests
/// that go out through hyper) or written after the request's own headers as
/// it goes upstream ([`lines`](Forwarding::lines), after
/// [`take_replaced`](Forwarding::take_replaced)): inserting them grew the
/// request's map and hashed five names on every request (docs/benchmarks.md).
#[derive(Debug, Default)]
pub(crate) struct Forwarding {
    /// Each replaces every line of its name.
    set: [Option<(&'static HeaderName, HeaderValue)>; 6],
    /// Lines that go with no replacement: `X-Forwarded-Host` from an
    /// untrusted client whose request has no `Host`.
    remove: Option<&'static HeaderName>,
}

impl Forwarding {
    /// The headers that tell a replica who the client is: `X-Forwarded-For`,
    /// `-Proto`, `-Host`, `Forwarded` (RFC 7239) and `X-Real-IP`.
    ///
    /// From an untrusted peer, whatever the client sent is replaced: the
    /// peer's address, `http` (`https` for a client that came over TLS), and
    /// the `Host` it asked for; `Forwarded` becomes ebb's own element
    /// (`for=10.0.0.7;host="web.test";proto=http`). From a trusted proxy, the
    /// peer is appended to its `X-Forwarded-For`, ebb's element to its
    /// `Forwarded`, and its `-Proto`/`-Host`/`X-Real-IP` are kept (filled in
    /// when missing).
    pub(crate) fn new(
        headers: &HeaderMap,
        peer: &HeaderValue,
        trusted: bool,
        host: Option<HeaderValue>,
        https: bool,
    ) -> Forwarding {
        let element = forwarded_element(peer, host.as_ref(), https);
        let proto = if https { &PROTO_HTTPS } else { &PROTO_HTTP };
        let mut forwarding = Forwarding::default();
        if trusted {
            let missing = |name: &HeaderName| !headers.contains_key(name);
            forwarding.set = [
                Some((&FORWARDED, joined(headers, &FORWARDED, &element))),
                missing(&X_REAL_IP).then(|| (&X_REAL_IP, peer.clone())),
                Some((&X_FORWARDED_FOR, joined(headers, &X_FORWARDED_FOR, peer))),
                missing(&X_FORWARDED_PROTO).then(|| (&X_FORWARDED_PROTO, proto.clone())),
                host.filter(|_| missing(&X_FORWARDED_HOST)).map(|host| (&X_FORWARDED_HOST, host)),
                None,
            ];
        } else {
            forwarding.remove = host.is_none().then_some(&X_FORWARDED_HOST);
            forwarding.set = [
                Some((&FORWARDED, element)),
                Some((&X_REAL_IP, peer.clone())),
                Some((&X_FORWARDED_FOR, peer.clone())),
                Some((&X_FORWARDED_PROTO, proto.clone())),
                host.map(|host| (&X_FORWARDED_HOST, host)),
                None,
            ];
        }
        forwarding
    }

    /// Adds `X-Request-Id: id` (replacing any the client sent).
    pub(crate) fn with_request_id(mut self, id: Option<HeaderValue>) -> Forwarding {
        self.set[5] = id.map(|id| (&X_REQUEST_ID, id));
        self
    }

    /// Sets the headers on `headers`.
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        if let Some(name) = self.remove {
            headers.remove(name);
        }
        for (name, value) in self.set.into_iter().flatten() {
            headers.insert(name.clone(), value);
        }
    }

    /// Removes from `headers` every line that [`lines`](Self::lines)
    /// replaces (or that goes), so that the two together are what
    /// [`apply`](Self::apply) makes.
    pub(crate) fn take_replaced(&self, headers: &mut HeaderMap) {
        let replaced = |name: &HeaderName| {
            self.remove.is_some_and(|r| r == name) || self.set.iter().flatten().any(|(n, _)| *n == name)
        };
        // Most clients send none of them: one look at each name present
        // instead of a hashed removal of each name that is not.
        if headers.keys().any(replaced) {
            let names: Vec<HeaderName> = headers.keys().filter(|name| replaced(name)).cloned().collect();
            for name in names {
                headers.remove(name);
            }
        }
    }

    /// The headers to write after the request's own.
    pub(crate) fn lines(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.set.iter().flatten().map(|(name, value)| (*name, value))
    }
}

/// One value: every `name` line joined with `, ` and `tail` (or `tail`
/// alone).
fn joined(headers: &HeaderMap, name: &HeaderName, tail: &HeaderValue) -> HeaderValue {
    let mut joined: Vec<u8> = Vec::new();
    for value in headers.get_all(name) {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    if joined.is_empty() {
        return tail.clone();
    }
    joined.extend_from_slice(tail.as_bytes());
    HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).unwrap_or_else(|_| tail.clone())
}

/// One `Forwarded` element for this hop: `for=` the peer (an IPv6 address
/// quoted in brackets, RFC 7239 §6), `host=` the requested host (quoted: it
/// may hold a `:`), `proto=http`.
fn forwarded_element(peer: &HeaderValue, host: Option<&HeaderValue>, https: bool) -> HeaderValue {
    let mut value = Vec::with_capacity(64);
    value.extend_from_slice(b"for=");
    if peer.as_bytes().contains(&b':') {
        value.extend_from_slice(b"\"[");
        value.extend_from_slice(peer.as_bytes());
        value.extend_from_slice(b"]\"");
    } else {
        value.extend_from_slice(peer.as_bytes());
    }
    // A valid Host (checks.rs) holds no quote or backslash; be safe anyway.
    if let Some(host) = host.filter(|h| !h.as_bytes().iter().any(|&b| b == b'"' || b == b'\\')) {
        value.extend_from_slice(b";host=\"");
        value.extend_from_slice(host.as_bytes());
        value.push(b'"');
    }
    value.extend_from_slice(if https { b";proto=https" } else { b";proto=http" });
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
        .unwrap_or_else(|_| HeaderValue::from_static("for=unknown;proto=http"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn strips_fixed_list_and_connection_named_headers() {
        let mut m = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut m, false);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m["x-kept"], "3");
    }

    #[test]
    fn connection_cannot_strip_end_to_end_essentials() {
        let mut m = map(&[
            ("connection", "Host, content-length, Content-Type, x-forwarded-for, forwarded, x-real-ip, x-gone"),
            ("host", "web.test"),
            ("content-length", "3"),
            ("content-type", "text/plain"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-gone", "1"),
        ]);
        strip_hop_by_hop(&mut m, false);
        assert!(!m.contains_key("x-gone") && !m.contains_key("connection"), "{m:?}");
        for kept in ["host", "content-length", "content-type", "x-forwarded-for", "forwarded", "x-real-ip"] {
            assert!(m.contains_key(kept), "{kept} was stripped: {m:?}");
        }
    }

    #[test]
    fn forwarded_and_real_ip_untrusted_overwritten() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("10.0.0.1", Some("web"), "for=10.0.0.1;host=\"web\";proto=http"),
            ("10.0.0.1", Some("web:8080"), "for=10.0.0.1;host=\"web:8080\";proto=http"),
            ("::1", Some("[::1]:80"), "for=\"[::1]\";host=\"[::1]:80\";proto=http"),
            ("10.0.0.1", None, "for=10.0.0.1;proto=http"),
        ];
        for (peer, host, want) in cases {
            let mut m = map(&[
                ("forwarded", "for=6.6.6.6;proto=https"),
                ("forwarded", "for=7.7.7.7"),
                ("x-real-ip", "6.6.6.6"),
            ]);
            let host = host.map(|h| HeaderValue::from_str(h).unwrap());
            set_forwarded(&mut m, &HeaderValue::from_str(peer).unwrap(), false, host);
            let forwarded: Vec<_> = m.get_all("forwarded").iter().collect();
            assert_eq!(forwarded, [*want], "{peer} {m:?}");
            let real: Vec<_> = m.get_all("x-real-ip").iter().collect();
            assert_eq!(real, [*peer]);
        }
        // Nothing sent: set all the same.
        let mut m = HeaderMap::new();
        set_forwarded(&mut m, &HeaderValue::from_static("10.0.0.1"), false, Some(HeaderValue::from_static("web")));
        assert_eq!(m["forwarded"], "for=10.0.0.1;host=\"web\";proto=http");
        assert_eq!(m["x-real-ip"], "10.0.0.1");
    }

    #[test]
    fn forwarded_and_real_ip_trusted_kept_and_appended() {
        let mut m =
            map(&[("forwarded", "for=1.2.3.4;proto=https"), ("forwarded", "for=5.6.7.8"), ("x-real-ip", "1.2.3.4")]);
        set_forwarded(&mut m, &HeaderValue::from_static("10.0.0.1"), true, Some(HeaderValue::from_static("web")));
        assert_eq!(m["forwarded"], "for=1.2.3.4;proto=https, for=5.6.7.8, for=10.0.0.1;host=\"web\";proto=http");
        assert_eq!(m.get_all("forwarded").iter().count(), 1);
        assert_eq!(m["x-real-ip"], "1.2.3.4");
        let mut m = HeaderMap::new();
        set_forwarded(&mut m, &HeaderValue::from_static("10.0.0.1"), true, None);
        assert_eq!(m["forwarded"], "for=10.0.0.1;proto=http");
        assert_eq!(m["x-real-ip"], "10.0.0.1");
    }

    #[test]
    fn upgrade_is_kept_for_upgrades() {
        let mut m = map(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")]);
        assert!(is_upgrade_request(&m));
        strip_hop_by_hop(&mut m, true);
        assert_eq!(m["upgrade"], "websocket");
        assert_eq!(m["connection"], "upgrade");
        assert_eq!(m["sec-websocket-key"], "k");
    }

    #[test]
    fn forwarded_untrusted_overwrites() {
        let mut m =
            map(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https"), ("x-forwarded-host", "evil")]);
        set_forwarded(&mut m, &HeaderValue::from_static("10.0.0.1"), false, Some(HeaderValue::from_static("web")));
        assert_eq!(m["x-forwarded-for"], "10.0.0.1");
        assert_eq!(m["x-forwarded-proto"], "http");
        assert_eq!(m["x-forwarded-host"], "web");
    }

    #[test]
    fn forwarded_trusted_appends() {
        let mut m =
            map(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "5.6.7.8"), ("x-forwarded-proto", "https")]);
        set_forwarded(&mut m, &HeaderValue::from_static("10.0.0.1"), true, Some(HeaderValue::from_static("web")));
        assert_eq!(m["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.1");
        assert_eq!(m["x-forwarded-proto"], "https");
        assert_eq!(m["x-forwarded-host"], "web");
    }

    /// What goes upstream is the same whether the client-address headers
    /// are set on the map (upgrades) or written after it (the rest).
    #[test]
    fn written_lines_match_the_map() {
        let clients: &[&[(&str, &str)]] = &[
            &[("host", "web.test")],
            &[],
            &[("host", "web.test"), ("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")],
            &[("x-forwarded-host", "evil.test"), ("forwarded", "for=9.9.9.9"), ("x-real-ip", "9.9.9.9")],
            &[("host", "web.test"), ("x-forwarded-proto", "https"), ("accept", "*/*"), ("x-forwarded-host", "a")],
            &[("host", "web.test"), ("x-request-id", "a"), ("x-request-id", "b")],
        ];
        let peer = HeaderValue::from_static("10.0.0.7");
        for client in clients {
            for trusted in [false, true] {
                for https in [false, true] {
                    let headers = map(client);
                    let host = headers.get(header::HOST).cloned();
                    let (id, new) = super::super::request_id::of(&headers);
                    let id = new.then_some(id);
                    let mut on_map = headers.clone();
                    Forwarding::new(&headers, &peer, trusted, host.clone(), https)
                        .with_request_id(id.clone())
                        .apply(&mut on_map);
                    let mut written = headers.clone();
                    let forwarding = Forwarding::new(&headers, &peer, trusted, host, https).with_request_id(id);
                    forwarding.take_replaced(&mut written);
                    for (name, value) in forwarding.lines() {
                        written.append(name.clone(), value.clone());
                    }
                    let lines = |m: &HeaderMap| {
                        let mut all: Vec<(String, Vec<u8>)> =
                            m.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect();
                        all.sort();
                        all
                    };
                    assert_eq!(lines(&written), lines(&on_map), "{client:?} trusted={trusted} https={https}");
                    assert!(on_map.contains_key(&X_FORWARDED_FOR) && on_map.contains_key(&FORWARDED));
                    assert_eq!(on_map.get_all(&X_REQUEST_ID).iter().count(), 1, "one id: {client:?}");
                }
            }
        }
    }
}

//! Header hygiene: hop-by-hop headers and `X-Forwarded-*`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// ebb terminates plain HTTP only.
pub(crate) static PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
pub(crate) static CONNECTION_UPGRADE: HeaderValue = HeaderValue::from_static("upgrade");

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): the fixed list and every
/// header named in `Connection`. With `keep_upgrade` (an upgrade request or a
/// 101 answer), `Upgrade` stays and `Connection` is set to `upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if let Some(first) = headers.get(header::CONNECTION) {
        // The common cases ("keep-alive", "close", "upgrade") name headers that
        // the fixed list removes anyway; only collect the others.
        let mut named: Vec<HeaderName> = Vec::new();
        let single = headers.get_all(header::CONNECTION).iter().count() == 1;
        let mut collect = |value: &HeaderValue| {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty()
                    || token.eq_ignore_ascii_case(b"keep-alive")
                    || token.eq_ignore_ascii_case(b"close")
                    || token.eq_ignore_ascii_case(b"upgrade")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        };
        if single {
            collect(first);
        } else {
            for value in headers.get_all(header::CONNECTION) {
                collect(value);
            }
        }
        for name in named {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    if keep_upgrade {
        headers.insert(header::CONNECTION, CONNECTION_UPGRADE.clone());
    } else {
        headers.remove(header::UPGRADE);
    }
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

/// Sets `X-Forwarded-For`, `-Proto` and `-Host`.
///
/// From an untrusted peer, whatever the client sent is replaced: the peer's
/// address, `http`, and the `Host` it asked for. From a trusted proxy, the
/// peer is appended to its `X-Forwarded-For` and its `-Proto`/`-Host` are kept
/// (filled in when missing).
pub(crate) fn set_forwarded(headers: &mut HeaderMap, peer: &HeaderValue, trusted: bool, host: Option<HeaderValue>) {
    if trusted {
        let mut values = headers.get_all(&X_FORWARDED_FOR).iter();
        match (values.next(), values.next()) {
            (None, _) => {
                headers.insert(X_FORWARDED_FOR.clone(), peer.clone());
            }
            (Some(first), second) => {
                let mut joined = Vec::with_capacity(first.len() + peer.len() + 16);
                joined.extend_from_slice(first.as_bytes());
                if let Some(second) = second {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(second.as_bytes());
                    for more in values {
                        joined.extend_from_slice(b", ");
                        joined.extend_from_slice(more.as_bytes());
                    }
                }
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(peer.as_bytes());
                match HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
                    Ok(value) => {
                        headers.insert(X_FORWARDED_FOR.clone(), value);
                    }
                    Err(_) => {
                        headers.insert(X_FORWARDED_FOR.clone(), peer.clone());
                    }
                }
            }
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), PROTO_HTTP.clone());
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            if let Some(host) = host {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
        }
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), peer.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), PROTO_HTTP.clone());
        match host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
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
}

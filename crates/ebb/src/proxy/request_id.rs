//! `X-Request-Id`: kept when the client (or a proxy in front) sent a sane
//! one, else made here; passed to the replica and returned to the client,
//! so one id names a request in the client's report, the access log and
//! the replica's own log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id kept from a client.
const MAX_LEN: usize = 128;

/// The request's id: the one it carries if sane, else a new one (`true`),
/// which then replaces whatever the client sent on the request's way
/// upstream (`Forwarding`).
pub(crate) fn of(headers: &HeaderMap) -> (HeaderValue, bool) {
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(id), None) = (sent.next(), sent.next()) {
        if is_sane(id.as_bytes()) {
            return (id.clone(), false);
        }
    }
    (generate(), true)
}

/// Printable ASCII without spaces, at most 128 bytes: anything else from a
/// client is replaced, not passed on.
fn is_sane(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| (0x21..0x7f).contains(b))
}

/// 32 hex digits: a random prefix per ebb process and a counter, so ids
/// never repeat within a run and practically never across runs.
fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut text = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in prefix.to_be_bytes().iter().chain(n.to_be_bytes().iter()).enumerate() {
        text[2 * i] = HEX[(byte >> 4) as usize];
        text[2 * i + 1] = HEX[(byte & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_id_is_kept_and_others_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc-123"));
        assert_eq!(of(&headers), (HeaderValue::from_static("abc-123"), false));

        for bad in ["has space", "", &"x".repeat(129)] {
            let mut headers = HeaderMap::new();
            headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_str(bad).unwrap());
            let (id, new) = of(&headers);
            assert!(new && id.len() == 32, "{bad:?} replaced by a new id: {id:?}");
        }
        // Two ids: ambiguous, replaced by one.
        let mut headers = HeaderMap::new();
        headers.append(X_REQUEST_ID.clone(), HeaderValue::from_static("a"));
        headers.append(X_REQUEST_ID.clone(), HeaderValue::from_static("b"));
        assert!(of(&headers).1);
        assert!(of(&HeaderMap::new()).1);
    }

    #[test]
    fn new_ids_differ() {
        assert_ne!(generate(), generate());
    }
}

//! Request bodies of mutating calls, read and checked once, before any
//! handler runs: every endpoint (today's and any added later) gets the same
//! limits, and a body that is refused has changed nothing.
//!
//! - at most [`MAX_BODY`] bytes (larger: `413`), received within
//!   [`BODY_DEADLINE`] (slower: `408`);
//! - empty, or well-formed JSON whose top level is an object (or `null`,
//!   which optional bodies read as "no body"): anything else is `400`, so
//!   `[]`, `"stop"` or `{` never count as "no body";
//! - free text that ends up in events, logs or a replica's command line is
//!   checked for control characters by [`check_text`].

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::ApiError;

/// Largest request body accepted: 2 MiB (axum's own default limit, so the
/// `Json` extractor agrees).
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// A body must arrive whole within this: a client that sends half a body
/// and stalls holds no connection (and no shutdown) longer.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// After a `413`, up to this much more of the body is read and thrown away
/// so the client reads the answer instead of a connection reset.
const DISCARD_AT_MOST: usize = 16 * 1024 * 1024;

/// Reads the body of a mutating request and checks its shape; returns the
/// request with the body buffered for the handler.
pub(crate) async fn buffered(request: Request) -> Result<Request, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, body) = request.into_parts();
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        // Declared too large: nothing to gain from reading it (beyond what
        // lets the client see the answer).
        if declared.is_some_and(|n| n <= (MAX_BODY + DISCARD_AT_MOST) as u64) {
            discard(body).await;
        }
        return Err(too_large());
    }
    let read = tokio::time::timeout(BODY_DEADLINE, Limited::new(body, MAX_BODY).collect()).await;
    let bytes = match read {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} s; nothing was changed", BODY_DEADLINE.as_secs()),
            ))
        }
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(error)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read the request body: {error}")))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    check_shape(&bytes)?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {} MiB; nothing was changed", MAX_BODY / (1024 * 1024)),
    )
}

/// Reads and drops what the client still sends, within the deadline.
async fn discard(body: Body) {
    let _ = tokio::time::timeout(BODY_DEADLINE, Limited::new(body, DISCARD_AT_MOST).collect()).await;
}

/// Empty, or one JSON object (or `null`).
pub(crate) fn check_shape(bytes: &[u8]) -> Result<(), ApiError> {
    let text = bytes.trim_ascii();
    if text.is_empty() || text == b"null" {
        return Ok(());
    }
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("the request body is not JSON: {error}")));
    }
    if !text.starts_with(b"{") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object (or empty where the body is optional)",
        ));
    }
    Ok(())
}

/// What a free-text field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Text {
    /// One line (a reason, an env name, an image): no control character at
    /// all, so it cannot forge an event line or send a terminal escape.
    Line,
    /// A shell command or an env value: may span lines (`\n`) and hold
    /// tabs, as a script or a PEM value does; no other control character
    /// (NUL cannot even reach `exec`).
    Script,
}

/// Refuses a control character (C0, DEL, C1) in `value`, naming `field`
/// and where the character is.
pub(crate) fn check_text(field: &str, value: &str, kind: Text) -> Result<(), ApiError> {
    let allowed = |c: char| kind == Text::Script && (c == '\n' || c == '\t');
    match value.char_indices().find(|&(_, c)| c.is_control() && !allowed(c)) {
        None => Ok(()),
        Some((at, c)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{field} holds the control character U+{:04X} at byte {at}; {}; nothing was changed",
                c as u32,
                match kind {
                    Text::Line => "write it on one line of printable text",
                    Text::Script => "only newlines and tabs are allowed",
                }
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_empty_or_one_object() {
        for ok in ["", "  ", "null", "{}", r#" {"reason": "x"} "#] {
            assert!(check_shape(ok.as_bytes()).is_ok(), "{ok:?}");
        }
        for bad in ["{", "hello", "[]", "[{}]", "\"stop\"", "3", "true", "{} {}", "{\"a\":1}x"] {
            let err = check_shape(bad.as_bytes()).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn control_characters_are_refused_where_they_do_harm() {
        assert!(check_text("reason", "scale for the 9:00 peak", Text::Line).is_ok());
        assert!(check_text("reason", "ünïcödé ✓", Text::Line).is_ok());
        for bad in ["a\nb", "a\rb", "\u{1b}[31mred", "nul\0", "del\u{7f}", "c1\u{85}", "tab\t"] {
            assert!(check_text("reason", bad, Text::Line).is_err(), "{bad:?}");
        }
        assert!(check_text("command", "set -e\n\techo hi", Text::Script).is_ok());
        for bad in ["echo\0hi", "echo \u{1b}]0;pwned\u{7}", "a\rb"] {
            assert!(check_text("command", bad, Text::Script).is_err(), "{bad:?}");
        }
        let message = format!("{:?}", check_text("reason", "ab\u{1b}", Text::Line).unwrap_err());
        assert!(message.contains("U+001B at byte 2"), "{message}");
    }
}

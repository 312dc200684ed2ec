//! The dashboard at `/`: one HTML page, its script and its style sheet,
//! embedded in the binary (no CDN, no JS toolchain). The page polls
//! `/api/v1/status` and `/api/v1/metrics` once a second, follows
//! `/api/v1/events?follow=1`, and draws its graphs as SVG.
//!
//! **The token.** The page's controls (set desired, protect, roll back) call
//! mutating endpoints, which need the bearer token. The page carries it (in
//! a `<meta>` tag) only when all of these hold:
//! - the connection comes from a loopback address and its `Host` is a
//!   loopback name (so a DNS-rebinding page, whose Host is its own name,
//!   never gets it; the guard refuses such requests anyway);
//! - the client's socket belongs to the user who owns the token file
//!   (looked up in `/proc/net/tcp`), so another local user cannot fetch it
//!   from the page when the file's 0600 mode keeps them from reading it.
//!
//! Otherwise the page loads without it and asks for the token (kept in the
//! tab's `sessionStorage`). The page is served with a strict
//! Content-Security-Policy (scripts only from this origin, no framing) and
//! `Cache-Control: no-store`. docs/api.md has the whole threat model.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{auth, is_loopback_host, App, Peer};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const FAVICON_SVG: &str = include_str!("dashboard/favicon.svg");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Whether this request may be handed the token inside the page.
fn may_embed_token(app: &App, request: &Request) -> bool {
    let host_ok = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).is_some_and(is_loopback_host);
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<Peer>>().copied() else {
        return false;
    };
    host_ok
        && peer.remote.ip().is_loopback()
        && auth::peer_uid(peer.local, peer.remote).is_some_and(|uid| uid == app.state.token.owner_uid())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

async fn index(State(app): State<App>, request: Request) -> Response {
    let token = if may_embed_token(&app, &request) { app.state.token.reveal() } else { "" };
    let reads = if app.loopback_only { "open" } else { "token" };
    let page = INDEX_HTML
        .replace("{{token}}", &html_escape(token))
        .replace("{{reads}}", reads)
        .replace("{{version}}", env!("CARGO_PKG_VERSION"));
    let mut response = page.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page's conventions: values reach the page as text, never as
    /// HTML, and no inline script or style (the CSP refuses them).
    #[test]
    fn the_page_puts_values_in_as_text() {
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("outerHTML"), "app.js must use textContent");
        assert!(!APP_JS.contains("insertAdjacentHTML") && !APP_JS.contains("document.write"));
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="), "no inline script or style");
    }

    /// The saturation / host-full banner is an alert, hidden until needed;
    /// the scaling list and the series the charts draw are there.
    #[test]
    fn the_page_has_the_banner_and_the_scaling_list() {
        let banner = INDEX_HTML.lines().find(|l| l.contains(r#"id="banner""#)).expect("a banner");
        assert!(banner.contains(r#"role="alert""#) && banner.contains("hidden"), "{banner}");
        assert!(INDEX_HTML.contains(r#"id="scaling-events""#));
        assert_eq!(INDEX_HTML.matches("10 s avg").count(), 3, "the cards say they average 10 s");
        for series in ["'offered'", "'served'", "'shed'", "'queued'", "'queue'"] {
            assert!(APP_JS.contains(&format!("key: {series}")), "app.js draws {series}");
        }
        assert!(STYLE_CSS.contains("[hidden] { display: none !important; }"), "hidden wins over display");
    }
}

//! The dashboard at `/`: one HTML page, its script and its style sheet,
//! embedded in the binary (no CDN, no JS toolchain). The page polls
//! `/api/v1/status` and `/api/v1/metrics` once a second, follows
//! `/api/v1/events?follow=1`, and draws its graphs as SVG.
//!
//! **Signing in.** The page's controls (set desired, protect, roll back)
//! call mutating endpoints. The page never carries the admin token: every
//! replica runs as ebb's user and can fetch `/` from loopback, so a page that
//! embedded it would hand any replica (or an SSRF in one) the power to deploy
//! any command. Instead `ebb dashboard` prints a one-time login link
//! (`/login?ticket=…`, [`super::session`]); opening it sets an `HttpOnly;
//! SameSite=Strict` session cookie and the page's controls unlock (the page
//! says so with `<meta name="ebb-session" content="cookie">`; the script
//! never sees a secret). A token pasted into the page still works (kept in
//! the tab's `sessionStorage`). The page is served with a strict
//! Content-Security-Policy (scripts only from this origin, no framing) and
//! `Cache-Control: no-store`. docs/api.md has the whole threat model.

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiError, App};

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
        .route("/login", get(login))
}

/// `?ticket=` of a login link.
#[derive(Debug, serde::Deserialize)]
struct LoginQuery {
    ticket: Option<String>,
}

/// Spends a login link's ticket: sets the session cookie and sends the
/// browser to the dashboard (303, so a reload does not try the spent link).
async fn login(
    State(app): State<App>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<super::Peer>>>,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let ticket = query.ok().and_then(|Query(q)| q.ticket).unwrap_or_default();
    let session = app.sessions.lock().unwrap_or_else(|p| p.into_inner()).redeem(&ticket, std::time::Instant::now());
    let Some(session) = session else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this login link has been used or has expired (they work once, for 60 s); run `ebb dashboard` for a new one",
        )
        .into_response();
    };
    // Over TLS the cookie is never sent in the clear.
    let secure = if peer.is_some_and(|p| p.0 .0.tls) { "; Secure" } else { "" };
    let cookie = format!(
        "{}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        app.cookie,
        super::session::SESSION_TTL.as_secs()
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    tracing::info!("The dashboard signed in with a login link.");
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

async fn index(State(app): State<App>, request: Request) -> Response {
    let session = if super::has_session(&app, request.headers()) { "cookie" } else { "" };
    let reads = if app.loopback_only { "open" } else { "token" };
    let page = INDEX_HTML
        .replace("{{session}}", &html_escape(session))
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

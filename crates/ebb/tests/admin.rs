//! End-to-end tests of the admin API against the real binary (`ebb up`):
//! every endpoint's answers and error statuses, the bearer token and its
//! file, the lockout after wrong tokens, Host/Origin checks, the event
//! stream, the OpenAPI document (and schemathesis against it), and
//! Prometheus `/metrics` read by a real parser.
//!
//! The Python-based checks print a `SKIP:` line when their tool is missing
//! (`scripts/install-test-deps` installs it; CI runs that first).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn start(replicas: &str) -> Ebb {
    Ebb::start(|admin, listen| fast_config(admin, listen, replicas, ""))
}

/// Asserts an error answer: the status and a JSON body `{"error", "status"}`.
#[track_caller]
fn assert_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "no error message: {}", r.body);
    assert_eq!(v["status"], status, "{}", r.body);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{:?}", r.headers);
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn call(ebb: &Ebb, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Response {
    http_with_headers(ebb.admin, method, path, body, headers).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[test]
fn every_endpoint_answers_with_the_right_status() {
    let ebb = start("{ min = 1, max = 4, desired = 2 }");
    ebb.wait_in_service(2, Duration::from_secs(20));

    // The token file: 64 hex digits, mode 0600.
    let token_file = ebb.dir.path().join("state/admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode {mode:o}");
    let token = ebb.token();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let auth = bearer(&token);
    let with_token = [("Authorization", auth.as_str())];

    // Reads are open on loopback.
    let status = call(&ebb, "GET", "/api/v1/status", None, &[]);
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["services"][0]["name"], "web");
    let services = call(&ebb, "GET", "/api/v1/services", None, &[]).json();
    assert_eq!(services.as_array().unwrap().len(), 1);
    let web = call(&ebb, "GET", "/api/v1/services/web", None, &[]).json();
    assert_eq!(web["desired"], 2);
    assert_eq!(web["replicas"].as_array().unwrap().len(), 2);
    assert_error(&call(&ebb, "GET", "/api/v1/services/nope", None, &[]), 404);

    // Mutations need the token: missing or wrong -> 401 with WWW-Authenticate.
    let scale = r#"{"desired": 3}"#;
    let r = call(&ebb, "PUT", "/api/v1/services/web/desired", Some(scale), &[]);
    assert_error(&r, 401);
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    assert!(r.json()["error"].as_str().unwrap().contains("admin.token"), "the error says where the token is");
    let wrong = bearer(&"0".repeat(64));
    assert_error(&call(&ebb, "PUT", "/api/v1/services/web/desired", Some(scale), &[("Authorization", &wrong)]), 401);
    assert_error(
        &call(&ebb, "PUT", "/api/v1/services/web/desired", Some(scale), &[("Authorization", "Basic YWRtaW4=")]),
        401,
    );
    assert_eq!(ebb.replicas().len(), 2, "nothing changed");

    // Bad input -> 4xx, never 5xx.
    for bad in [
        "{",
        r#"{"desired": -1}"#,
        r#"{"desired": "3"}"#,
        r#"{"count": 3}"#,
        r#"{"desired": 3, "extra": 1}"#,
        "[]",
        r#"{"desired": 2000000}"#,
    ] {
        assert_error(&call(&ebb, "PUT", "/api/v1/services/web/desired", Some(bad), &with_token), 400);
    }
    let long_reason = format!(r#"{{"desired": 2, "reason": "{}"}}"#, "x".repeat(1001));
    assert_error(&call(&ebb, "PUT", "/api/v1/services/web/desired", Some(&long_reason), &with_token), 400);
    assert_error(&call(&ebb, "PUT", "/api/v1/services/nope/desired", Some(scale), &with_token), 404);
    let form = format!(
        "PUT /api/v1/services/web/desired HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{{\"desired\": 3}}",
        ebb.admin
    );
    assert_error(&http_raw(ebb.admin, &form).unwrap(), 415);

    // Scale out with the token: 200, the outcome, and a third replica.
    let r = call(&ebb, "PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 3, "reason": "test"}"#), &with_token);
    assert_eq!(r.status, 200, "{}", r.body);
    let outcome = r.json();
    assert_eq!(
        (outcome["service"].as_str(), outcome["from"].as_u64(), outcome["to"].as_u64()),
        (Some("web"), Some(2), Some(3))
    );
    assert!(outcome["clamped"].is_null());
    // Floats that are whole numbers are integers too (JSON Schema says so).
    let r = call(&ebb, "PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 3.0}"#), &with_token);
    assert_eq!(r.status, 200, "{}", r.body);
    // Above max: clamped, and says so.
    let r = call(&ebb, "PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 9}"#), &with_token);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["clamped"].as_str().is_some_and(|c| c.contains("max 4")), "{}", r.body);
    let r = call(&ebb, "PUT", "/api/v1/services/web/desired", Some(scale), &with_token);
    assert_eq!(r.json()["to"], 3);
    let three = ebb.wait_in_service(3, Duration::from_secs(20));

    // Replicas: list, one, unknown.
    let list = call(&ebb, "GET", "/api/v1/replicas", None, &[]).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|r| r["service"] == "web" && r["protected"].is_boolean()), "{list:?}");
    let id = three[0]["id"].as_str().unwrap().to_string();
    let one = call(&ebb, "GET", &format!("/api/v1/replicas/{id}"), None, &[]);
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], id.as_str());
    assert_error(&call(&ebb, "GET", "/api/v1/replicas/web-nope", None, &[]), 404);

    // Protect: token, body, unknown replica, then the flag in the status.
    let protect = format!("/api/v1/replicas/{id}/protect");
    assert_error(&call(&ebb, "POST", &protect, Some(r#"{"protected": true}"#), &[]), 401);
    for bad in ["", "{}", r#"{"protected": "yes"}"#, "nope"] {
        assert_error(&call(&ebb, "POST", &protect, Some(bad), &with_token), 400);
    }
    assert_error(
        &call(&ebb, "POST", "/api/v1/replicas/web-nope/protect", Some(r#"{"protected": true}"#), &with_token),
        404,
    );
    let r = call(&ebb, "POST", &protect, Some(r#"{"protected": true}"#), &with_token);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replica"], id.as_str());
    wait_for("the replica to show as protected", Duration::from_secs(5), || {
        ebb.replicas().iter().any(|r| r["id"] == id.as_str() && r["protected"] == true).then_some(())
    });
    let r = call(&ebb, "POST", &protect, Some(r#"{"protected": false}"#), &with_token);
    assert_eq!(r.status, 200, "{}", r.body);

    // Interrupt: token, body, unknown replica (a real one is interrupted last).
    let interrupt = format!("/api/v1/replicas/{}/interrupt", three[1]["id"].as_str().unwrap());
    assert_error(&call(&ebb, "POST", &interrupt, Some("{}"), &[]), 401);
    assert_error(&call(&ebb, "POST", &interrupt, Some(r#"{"notice_s": "soon"}"#), &with_token), 400);
    assert_error(&call(&ebb, "POST", &interrupt, Some(r#"{"notice_s": 999999}"#), &with_token), 400);
    assert_error(&call(&ebb, "POST", "/api/v1/replicas/web-nope/interrupt", Some("{}"), &with_token), 404);

    // Deploy and rollback: token, unknown service, bad body; then either
    // accepted (202) or, until they are wired, 501 with a JSON error.
    for action in ["deploy", "rollback"] {
        let path = format!("/api/v1/services/web/{action}");
        assert_error(&call(&ebb, "POST", &path, Some("{}"), &[]), 401);
        assert_error(&call(&ebb, "POST", &format!("/api/v1/services/nope/{action}"), Some("{}"), &with_token), 404);
        assert_error(&call(&ebb, "POST", &path, Some(r#"{"nope": 1}"#), &with_token), 400);
    }
    let r = call(&ebb, "POST", "/api/v1/services/web/rollback", Some("{}"), &with_token);
    if r.status == 501 {
        assert_error(&r, 501);
        println!("note: rollback is not wired yet (501)");
    } else {
        assert!(matches!(r.status, 202 | 409), "rollback: {} {}", r.status, r.body);
    }

    // Events: list, filters, errors.
    let events = call(&ebb, "GET", "/api/v1/events", None, &[]).json();
    let events = events.as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "scaled" && e["to"] == 3 && e["reason"].as_str().unwrap().contains("test")),
        "{events:?}"
    );
    let last = events.last().unwrap()["seq"].as_u64().unwrap();
    let after = call(&ebb, "GET", &format!("/api/v1/events?service=web&after={last}"), None, &[]).json();
    assert!(after.as_array().unwrap().iter().all(|e| e["seq"].as_u64().unwrap() > last));
    assert_error(&call(&ebb, "GET", "/api/v1/events?service=nope", None, &[]), 404);
    assert_error(&call(&ebb, "GET", "/api/v1/events?after=abc", None, &[]), 400);
    assert_error(&call(&ebb, "GET", "/api/v1/events?after=-1", None, &[]), 400);
    assert_error(&call(&ebb, "GET", "/api/v1/events?follow=maybe", None, &[]), 400);
    assert_error(&call(&ebb, "GET", "/api/v1/events?colour=blue", None, &[]), 400);

    // Metrics history: one point a second.
    let points = wait_for("metric points", Duration::from_secs(10), || {
        let r = call(&ebb, "GET", "/api/v1/metrics?service=web", None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        (v.as_array().unwrap().len() >= 2).then_some(v)
    });
    let p = &points.as_array().unwrap()[0];
    for key in [
        "time_ms",
        "desired",
        "in_service",
        "pending",
        "requests_per_s",
        "in_flight",
        "p50_ms",
        "p99_ms",
        "cpu_mean",
        "replica_cpu",
    ] {
        assert!(p.get(key).is_some(), "point lacks {key}: {p}");
    }
    let newest = points.as_array().unwrap().last().unwrap()["time_ms"].as_u64().unwrap();
    let since = call(&ebb, "GET", &format!("/api/v1/metrics?service=web&since={newest}"), None, &[]).json();
    assert!(since.as_array().unwrap().iter().all(|p| p["time_ms"].as_u64().unwrap() > newest));
    assert_eq!(call(&ebb, "GET", "/api/v1/metrics", None, &[]).status, 200, "the only service is the default");
    assert_error(&call(&ebb, "GET", "/api/v1/metrics?service=nope", None, &[]), 404);
    assert_error(&call(&ebb, "GET", "/api/v1/metrics?since=-5", None, &[]), 400);
    assert_error(&call(&ebb, "GET", "/api/v1/metrics?since=yesterday", None, &[]), 400);

    // Unknown paths and methods: JSON errors, 405 with Allow.
    assert_error(&call(&ebb, "GET", "/api/v1/nope", None, &[]), 404);
    let r = call(&ebb, "DELETE", "/api/v1/status", None, &with_token);
    assert_error(&r, 405);
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")), "{:?}", r.headers);

    // Browser safety: foreign Host (DNS rebinding), foreign Origin (CSRF).
    let rebinding =
        format!("GET /api/v1/status HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n", ebb.admin.port());
    assert_error(&http_raw(ebb.admin, &rebinding).unwrap(), 403);
    assert_error(&call(&ebb, "GET", "/api/v1/status", None, &[("Origin", "http://evil.example")]), 403);
    assert_error(
        &call(
            &ebb,
            "PUT",
            "/api/v1/services/web/desired",
            Some(scale),
            &[("Authorization", &auth), ("Origin", "http://evil.example")],
        ),
        403,
    );
    let own = format!("http://{}", ebb.admin);
    assert_eq!(call(&ebb, "GET", "/api/v1/status", None, &[("Origin", &own)]).status, 200);

    // The dashboard: HTML with a strict CSP; it never carries the token,
    // not even for the token file's owner on loopback.
    let page = call(&ebb, "GET", "/", None, &[]);
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("script-src 'self'") && c.contains("frame-ancestors 'none'")));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(!page.body.contains(&token), "the page must not carry the token");
    for asset in ["/app.js", "/style.css", "/favicon.svg"] {
        assert_eq!(call(&ebb, "GET", asset, None, &[]).status, 200, "{asset}");
    }
    // With a foreign Host the page is refused outright.
    let rebinding = format!("GET / HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n", ebb.admin.port());
    let r = http_raw(ebb.admin, &rebinding).unwrap();
    assert_eq!(r.status, 403);
    assert!(!r.body.contains(&token));

    // A real interruption: accepted, recorded, replaced.
    let r = call(&ebb, "POST", &interrupt, Some(r#"{"notice_s": 30}"#), &with_token);
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for("a replica_interrupted event", Duration::from_secs(5), || {
        ebb.events().iter().any(|e| e["kind"] == "replica_interrupted").then_some(())
    });

    // Shutdown: token needed; then 202 and ebb exits.
    assert_error(&call(&ebb, "POST", "/api/v1/shutdown", Some("{}"), &[]), 401);
    let log_before_exit = ebb.up_log();
    let r = call(&ebb, "POST", "/api/v1/shutdown", None, &with_token);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["status"], "stopping");
    let mut ebb = ebb;
    assert_eq!(ebb.wait_exit(Duration::from_secs(30)), Some(0));
    let log = ebb.up_log();
    assert!(!log.contains(&token) && !log_before_exit.contains(&token), "the token must never be logged:\n{log}");
}

#[test]
fn the_cli_sends_the_token() {
    let ebb = start("{ min = 1, max = 3, desired = 1 }");
    ebb.wait_in_service(1, Duration::from_secs(20));
    let out = ebb.cli(&["scale", "web", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("desired 1 -> 2"));
    ebb.wait_in_service(2, Duration::from_secs(20));

    // Without a readable token, the CLI's error names the file.
    let token_file = ebb.dir.path().join("state/admin.token");
    let saved = std::fs::read(&token_file).unwrap();
    std::fs::remove_file(&token_file).unwrap();
    let out = ebb.cli(&["scale", "web", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.token"), "{err}");
    assert!(!err.contains(std::str::from_utf8(&saved).unwrap().trim()), "the token must not be printed");
    std::fs::write(&token_file, &saved).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn wrong_tokens_are_locked_out_but_never_the_right_one() {
    let ebb = start("{ min = 1, max = 2, desired = 1 }");
    let token = ebb.token();
    let right = bearer(&token);
    let body = Some(r#"{"desired": 1}"#);
    for i in 0..10 {
        let wrong = bearer(&format!("{:064x}", i));
        let r = call(&ebb, "PUT", "/api/v1/services/web/desired", body, &[("Authorization", &wrong)]);
        assert_error(&r, 401);
    }
    // Locked out now: another wrong token gets 429, with Retry-After, and
    // only after a second (each guess costs the guesser time)...
    let wrong = bearer(&"f".repeat(64));
    let sent = Instant::now();
    let r = call(&ebb, "PUT", "/api/v1/services/web/desired", body, &[("Authorization", &wrong)]);
    assert!(sent.elapsed() >= Duration::from_millis(900), "answered after {:?}", sent.elapsed());
    assert_error(&r, 429);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // ...but wrong tokens never lock the right one out (nor slow it): the
    // operator's calls and the CLI go on working from the same address.
    let sent = Instant::now();
    let r = call(
        &ebb,
        "PUT",
        "/api/v1/services/web/desired",
        Some(r#"{"desired": 2, "reason": "during a lockout"}"#),
        &[("Authorization", &right)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(sent.elapsed() < Duration::from_millis(900), "the right token waited {:?}", sent.elapsed());
    assert_eq!(r.json()["to"], 2);
    let r = call(&ebb, "GET", "/api/v1/status", None, &[("Authorization", &right)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let out = ebb.cli(&["scale", "web", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // And the lockout still holds for guesses.
    assert_error(&call(&ebb, "PUT", "/api/v1/services/web/desired", body, &[("Authorization", &wrong)]), 429);
    // A call without a token is no guess: a plain 401, and open reads work.
    assert_error(&call(&ebb, "PUT", "/api/v1/services/web/desired", body, &[]), 401);
    assert_eq!(call(&ebb, "GET", "/api/v1/status", None, &[]).status, 200);
    let metrics = call(&ebb, "GET", "/metrics", None, &[]).body;
    assert!(metrics.contains("ebb_admin_auth_failures_total 10"), "{metrics}");
    assert!(metrics.contains("ebb_admin_auth_lockouts_total 2"), "{metrics}");
    assert!(!ebb.up_log().contains(&token), "the token must never be logged");
}

/// Reads the event stream until `done` says so or `timeout` passes.
fn read_stream(stream: &mut TcpStream, timeout: Duration, mut done: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading the event stream: {e}"),
        }
        if done(&text) {
            return text;
        }
    }
    panic!("the event stream did not deliver in {timeout:?}:\n{text}");
}

#[test]
fn the_event_stream_delivers_a_scaled_event() {
    let ebb = start("{ min = 1, max = 3, desired = 1 }");
    ebb.wait_in_service(1, Duration::from_secs(20));
    let last = ebb.events().last().unwrap()["seq"].as_u64().unwrap();

    let mut stream = TcpStream::connect(ebb.admin).unwrap();
    write!(stream, "GET /api/v1/events?follow=1&service=web&after={last} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n", ebb.admin).unwrap();
    let head = read_stream(&mut stream, Duration::from_secs(5), |t| t.contains("ebb event stream"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");

    let r = ebb.admin_call("PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 2, "reason": "stream test"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let text = read_stream(&mut stream, Duration::from_secs(10), |t| t.contains("\"kind\":\"scaled\""));
    let data = text.lines().find(|l| l.starts_with("data: ") && l.contains("\"kind\":\"scaled\"")).unwrap();
    let event: serde_json::Value = serde_json::from_str(&data["data: ".len()..]).unwrap();
    assert_eq!((event["from"].as_u64(), event["to"].as_u64()), (Some(1), Some(2)), "{event}");
    assert!(event["reason"].as_str().unwrap().contains("stream test"));
    assert!(event["seq"].as_u64().unwrap() > last);
    assert!(text.contains(&format!("id: {}", event["seq"])), "each message carries its id:\n{text}");
    // The replica it starts follows on the same stream (perhaps already in
    // the text read so far).
    if !text.contains("\"kind\":\"replica_started\"") {
        read_stream(&mut stream, Duration::from_secs(10), |t| t.contains("\"kind\":\"replica_started\""));
    }

    // Last-Event-ID resumes after that event: nothing before it again.
    let seq = event["seq"].as_u64().unwrap();
    let mut resumed = TcpStream::connect(ebb.admin).unwrap();
    write!(resumed, "GET /api/v1/events?follow=1 HTTP/1.1\r\nHost: {}\r\nLast-Event-ID: {seq}\r\n\r\n", ebb.admin)
        .unwrap();
    let text = read_stream(&mut resumed, Duration::from_secs(5), |t| t.contains("\"kind\":\"replica_started\""));
    assert!(!text.contains("\"kind\":\"scaled\""), "{text}");
}

#[test]
fn openapi_document_lists_every_endpoint() {
    let ebb = start("{ min = 1, max = 2, desired = 1 }");
    let r = call(&ebb, "GET", "/api/v1/openapi.json", None, &[]);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("get", "/api/v1/status"),
        ("get", "/api/v1/services"),
        ("get", "/api/v1/services/{name}"),
        ("put", "/api/v1/services/{name}/desired"),
        ("post", "/api/v1/services/{name}/deploy"),
        ("post", "/api/v1/services/{name}/rollback"),
        ("get", "/api/v1/replicas"),
        ("get", "/api/v1/replicas/{id}"),
        ("post", "/api/v1/replicas/{id}/protect"),
        ("post", "/api/v1/replicas/{id}/interrupt"),
        ("get", "/api/v1/events"),
        ("get", "/api/v1/metrics"),
        ("get", "/api/v1/certs"),
        ("post", "/api/v1/certs/renew"),
        ("post", "/api/v1/certs/reload"),
        ("post", "/api/v1/plan"),
        ("post", "/api/v1/apply"),
        ("post", "/api/v1/shutdown"),
        ("post", "/api/v1/dashboard/login"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/services/{name}/forecast"),
    ];
    for (method, path) in expected {
        let op = &paths.get(path).unwrap_or_else(|| panic!("missing {path}"))[method];
        assert!(op.is_object(), "missing {method} {path}");
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path} documents no success");
        if method != "get" {
            assert!(responses.contains_key("401"), "{method} {path} documents no 401");
            assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{method} {path} needs the token");
        }
    }
    assert_eq!(paths.len(), expected.len(), "an undocumented path? {:?}", paths.keys().collect::<Vec<_>>());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in
        ["ErrorBody", "ServiceView", "ReplicaView", "EventView", "MetricsPoint", "SetDesiredRequest", "ProtectRequest"]
    {
        assert!(schemas.contains_key(s), "missing schema {s}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    if let Err(why) = python_with("schemathesis") {
        println!("SKIP: schemathesis run against the admin API: {why} (scripts/install-test-deps installs it)");
        return;
    }
    let ebb = start("{ min = 1, max = 3, desired = 1 }");
    ebb.wait_in_service(1, Duration::from_secs(20));
    let mut args: Vec<String> = [
        "--checks",
        "all",
        "--exclude-path",
        "/api/v1/shutdown",
        // This fleet has no ACME listener: every renewal is a 404 (covered
        // with a real ACME server by tests/acme.rs).
        "--exclude-path",
        "/api/v1/certs/renew",
        // Nor a listener with certificate files: every reload is a 404
        // (covered by tests/listeners.rs).
        "--exclude-path",
        "/api/v1/certs/reload",
        // Their body is a config file: run below without the check that
        // every schema-valid body is accepted (a TOML error is a 400).
        "--exclude-path",
        "/api/v1/plan",
        "--exclude-path",
        "/api/v1/apply",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    // Endpoints not wired yet answer 501 to valid input; leave them out
    // until they are (they are covered by the status tests above).
    for action in ["deploy", "rollback"] {
        let r = ebb.admin_call("POST", &format!("/api/v1/services/web/{action}"), Some("{}"));
        if r.status == 501 {
            println!("note: {action} answers 501 (not wired yet); schemathesis leaves it out");
            args.extend(["--exclude-path".into(), format!("/api/v1/services/{{name}}/{action}")]);
        }
    }
    run_schemathesis(&ebb, &args);
    // `ebb plan` and `ebb apply` with whatever text: no server error, every
    // answer as documented, and the fleet unchanged (a random file is a
    // config error, or refused: its admin address and state_dir differ).
    let before = ebb.replicas().iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
    run_schemathesis(
        &ebb,
        &[
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--include-path",
            "/api/v1/plan",
            "--include-path",
            "/api/v1/apply",
        ]
        .map(String::from),
    );
    let after = ebb.replicas().iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
    assert_eq!(before, after, "random files applied changed nothing");
}

fn run_schemathesis(ebb: &Ebb, checks: &[String]) {
    let token = ebb.token();
    let mut args: Vec<String> = [
        "-m",
        "schemathesis.cli",
        "run",
        "--max-examples",
        "12",
        "--request-timeout",
        "5",
        "--seed",
        "20261124",
        "--generation-database",
        "none",
        "--no-color",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(checks.iter().cloned());
    args.extend(["-H".into(), format!("Authorization: Bearer {token}")]);
    args.push(format!("http://{}/api/v1/openapi.json", ebb.admin));
    let mut child = Command::new("python3")
        .args(&args)
        .current_dir(ebb.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run schemathesis");
    // Bounded: a stuck run is killed.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    let out = out.replace(&token, "<token>");
    let status = status.unwrap_or_else(|| panic!("schemathesis did not finish within 300 s:\n{out}"));
    assert!(status.success(), "schemathesis found problems:\n{out}");
    // A warning (plan/apply reject most generated text: it is not a config
    // file) replaces "No issues found"; a failure would be listed.
    assert!(out.contains("No issues found") || (out.contains(" passed") && !out.contains("FAILURES")), "{out}");
    println!("{}", out.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"));
}

#[test]
fn prometheus_metrics_parse_with_a_real_parser() {
    let ebb = start("{ min = 1, max = 3, desired = 2 }");
    let replicas = ebb.wait_in_service(2, Duration::from_secs(20));
    // Some traffic, a manual scale, and a second of history.
    for _ in 0..20 {
        let r = http(ebb.listen, "GET", "/gtg", None).unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(ebb.admin_call("PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 3}"#)).status, 200);
    ebb.wait_in_service(3, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1200));

    let plain = call(&ebb, "GET", "/metrics", None, &[]);
    assert_eq!(plain.status, 200);
    assert!(
        plain.header("content-type").is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        plain.headers
    );
    let om = call(
        &ebb,
        "GET",
        "/metrics",
        None,
        &[("Accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")],
    );
    assert!(om.header("content-type").is_some_and(|c| c.starts_with("application/openmetrics-text")));
    assert!(om.body.trim_end().ends_with("# EOF"));

    // Checks that need no parser.
    for name in [
        "ebb_service_desired_replicas",
        "ebb_service_in_service_replicas",
        "ebb_service_pending_replicas",
        "ebb_scaling_actions_total",
        "ebb_health_check_transitions_total",
        "ebb_replica_requests_total",
        "ebb_replica_in_flight_requests",
        "ebb_replica_cpu_percent",
        "ebb_replica_memory_rss_bytes",
    ] {
        assert!(plain.body.contains(&format!("# TYPE {name} ")), "missing {name}:\n{}", plain.body);
    }

    if let Err(why) = python_with("prometheus_client") {
        println!("SKIP: parsing /metrics with a real Prometheus parser: {why} (scripts/install-test-deps installs it)");
        return;
    }
    let dir = ebb.dir.path();
    let prom = parse_with_python(&plain.body, false, dir)
        .unwrap_or_else(|e| panic!("the Prometheus parser refused /metrics: {e}\n{}", plain.body));
    let open = parse_with_python(&om.body, true, dir)
        .unwrap_or_else(|e| panic!("the OpenMetrics parser refused /metrics: {e}\n{}", om.body));
    // The value of the sample `type name{labels}` (parsers print 3 or 3.0).
    let value = |lines: &[String], sample: &str| -> Option<f64> {
        lines.iter().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    };
    for lines in [&prom, &open] {
        assert_eq!(value(lines, "gauge ebb_service_desired_replicas{service=web}"), Some(3.0), "{lines:#?}");
        assert_eq!(value(lines, "gauge ebb_service_in_service_replicas{service=web}"), Some(3.0), "{lines:#?}");
        assert_eq!(
            value(lines, "counter ebb_scaling_actions_total{direction=out,policy=manual,service=web}"),
            Some(1.0),
            "{lines:#?}"
        );
        assert_eq!(
            value(lines, "counter ebb_health_check_transitions_total{result=healthy,service=web}"),
            Some(3.0),
            "{lines:#?}"
        );
        assert!(lines.iter().any(|l| l.starts_with("gauge ebb_replica_memory_rss_bytes{replica=")), "{lines:#?}");
        assert!(lines.iter().any(|l| l.starts_with("gauge ebb_replica_cpu_percent{replica=")), "{lines:#?}");
        // ebb's own process, by the standard names.
        assert!(value(lines, "counter process_cpu_seconds_total{}").is_some_and(|v| v > 0.0), "{lines:#?}");
        assert!(value(lines, "gauge process_resident_memory_bytes{}").is_some_and(|v| v > 1e6), "{lines:#?}");
        assert!(value(lines, "gauge process_open_fds{}").is_some_and(|v| v >= 3.0), "{lines:#?}");
        assert!(value(lines, "gauge process_start_time_seconds{}").is_some_and(|v| v > 1.7e9), "{lines:#?}");
    }
    // The 20 health checks sent through the balancer are counted per replica.
    let answered: f64 = prom
        .iter()
        .filter(|l| l.starts_with("counter ebb_replica_requests_total{class=other,"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let old: Vec<&str> = replicas.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(answered >= 20.0, "requests counted: {answered} (replicas {old:?})\n{}", plain.body);
    // Latency histograms: the service's counts every request answered, its
    // +Inf bucket equals its count, and each replica has its own.
    for lines in [&prom, &open] {
        let count = value(lines, "histogram ebb_service_request_duration_seconds_count{service=web}")
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert!(count >= 20.0, "service latency count {count}");
        assert_eq!(
            value(lines, "histogram ebb_service_request_duration_seconds_bucket{le=+Inf,service=web}"),
            Some(count)
        );
        let fast = value(lines, "histogram ebb_service_request_duration_seconds_bucket{le=0.25,service=web}").unwrap();
        assert!(fast >= 20.0, "health checks answer in well under 250 ms: {fast}");
        assert!(
            lines.iter().any(|l| l.starts_with("histogram ebb_replica_request_duration_seconds_count{replica=")),
            "{lines:#?}"
        );
        assert!(
            value(lines, "histogram ebb_service_queue_duration_seconds_count{service=web}").is_some(),
            "{lines:#?}"
        );
    }
    println!("parsed {} Prometheus and {} OpenMetrics samples", prom.len(), open.len());
}

#[test]
fn a_replica_token_protects_only_its_own_replica() {
    let ebb = start("{ min = 1, max = 3, desired = 2 }");
    let replicas = ebb.wait_in_service(2, Duration::from_secs(20));
    let (me, other) = (replicas[0]["id"].as_str().unwrap(), replicas[1]["id"].as_str().unwrap());
    let pid = replicas[0]["pid"].as_u64().unwrap();
    let Some(own) = replica_env(pid, "EBB_REPLICA_TOKEN") else {
        panic!("replica {me} (pid {pid}) has no EBB_REPLICA_TOKEN in its environment");
    };
    assert_ne!(own, ebb.token());
    let auth = bearer(&own);
    let with_own = [("Authorization", auth.as_str())];
    let on = Some(r#"{"protected": true}"#);
    let r = call(&ebb, "POST", &format!("/api/v1/replicas/{me}/protect"), on, &with_own);
    assert_eq!(r.status, 200, "{}", r.body);
    // Nothing else: not another replica, not scaling, not shutting down.
    assert_error(&call(&ebb, "POST", &format!("/api/v1/replicas/{other}/protect"), on, &with_own), 401);
    assert_error(&call(&ebb, "POST", &format!("/api/v1/replicas/{me}/interrupt"), Some("{}"), &with_own), 401);
    assert_error(&call(&ebb, "PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 1}"#), &with_own), 401);
    assert_error(&call(&ebb, "POST", "/api/v1/shutdown", Some("{}"), &with_own), 401);
    let off = Some(r#"{"protected": false}"#);
    assert_eq!(call(&ebb, "POST", &format!("/api/v1/replicas/{me}/protect"), off, &with_own).status, 200);
}

/// Bodies are checked before anything is applied: malformed JSON, another
/// type, or too large is refused with a JSON error, and the fleet runs on
/// unchanged (issue 13, item 12).
#[test]
fn refused_bodies_change_nothing() {
    let ebb = start("{ min = 1, max = 3, desired = 2 }");
    let replicas = ebb.wait_in_service(2, Duration::from_secs(20));
    let auth = bearer(&ebb.token());
    let with_token = [("Authorization", auth.as_str())];
    let events_before = ebb.events().len();

    // Shutdown: only nothing or `{}` stops the fleet.
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(3 * 1024 * 1024));
    for (bad, status) in
        [("{", 400), ("hello", 400), ("[]", 400), ("\"stop\"", 400), (r#"{"now": true}"#, 400), (big.as_str(), 413)]
    {
        let r = call(&ebb, "POST", "/api/v1/shutdown", Some(bad), &with_token);
        assert_error(&r, status);
        assert_eq!(call(&ebb, "GET", "/api/v1/status", None, &[]).status, 200, "ebb still answers after {:.20}", bad);
    }
    // Every mutating endpoint reads its body the same way.
    let id = replicas[0]["id"].as_str().unwrap();
    for path in [
        format!("/api/v1/replicas/{id}/interrupt"),
        format!("/api/v1/replicas/{id}/protect"),
        "/api/v1/services/web/deploy".into(),
        "/api/v1/services/web/rollback".into(),
    ] {
        for bad in ["[]", "{", "[{\"notice_s\": 1}]"] {
            assert_error(&call(&ebb, "POST", &path, Some(bad), &with_token), 400);
        }
        assert_error(&call(&ebb, "POST", &path, Some(&big), &with_token), 413);
    }
    assert_error(&call(&ebb, "PUT", "/api/v1/services/web/desired", Some(&big), &with_token), 413);

    // Control characters in what a deploy runs or what an event says.
    let deploy = "/api/v1/services/web/deploy";
    for bad in [
        r#"{"command": "{ebb} demo-app --port $PORT\u0000"}"#,
        r#"{"command": "echo \u001b]0;owned\u0007"}"#,
        r#"{"env": {"A": "x\u0000y"}}"#,
        r#"{"env": {"A\u001b": "x"}}"#,
        r#"{"env": {"A": "1"}, "reason": "ok\n2026-01-01T00:00:00.000Z  web  scaled  - 2->0  forged"}"#,
    ] {
        let r = call(&ebb, "POST", deploy, Some(bad), &with_token);
        assert_error(&r, 400);
        assert!(r.json()["error"].as_str().unwrap().contains("control character"), "{}", r.body);
    }
    let r = call(
        &ebb,
        "PUT",
        "/api/v1/services/web/desired",
        Some(r#"{"desired": 3, "reason": "\u001b[2J"}"#),
        &with_token,
    );
    assert_error(&r, 400);

    // Nothing was applied: same replicas, desired, version, and no event.
    std::thread::sleep(Duration::from_millis(500));
    let web = call(&ebb, "GET", "/api/v1/services/web", None, &[]).json();
    assert_eq!((web["desired"].as_u64(), web["version"].as_u64()), (Some(2), Some(1)), "{web}");
    let now: Vec<_> = ebb.wait_in_service(2, Duration::from_secs(5)).iter().map(|r| r["id"].clone()).collect();
    let before: Vec<_> = replicas.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(now, before, "no replica was interrupted or replaced");
    let events = ebb.events();
    assert_eq!(events.len(), events_before, "no event: {:#?}", &events[events_before..]);

    // `{}` (or no body) still stops it.
    let r = call(&ebb, "POST", "/api/v1/shutdown", Some("{}"), &with_token);
    assert_eq!(r.status, 202, "{}", r.body);
    let mut ebb = ebb;
    assert_eq!(ebb.wait_exit(Duration::from_secs(30)), Some(0));
}

/// The admin token is never handed out to a request that carries no
/// credential: a replica (same user, loopback) fetching the dashboard gets
/// no secret; the dashboard signs in with the one-time link `ebb dashboard`
/// prints, which sets an `HttpOnly; SameSite=Strict` session cookie
/// (issue 13, item 10).
#[test]
fn the_dashboard_signs_in_with_a_login_link_and_never_gets_the_token() {
    let ebb = Ebb::start(|admin, listen| {
        fast_config(admin, listen, "{ min = 1, max = 3, desired = 1 }", "").replace(
            r#"command = "{ebb} demo-app --port $PORT""#,
            r#"command = 'curl -s -o "$EBB_STATE_DIR/page-seen-by-replica.html" "$EBB_ADMIN_URL/"; exec {ebb} demo-app --port $PORT'"#,
        )
    });
    ebb.wait_in_service(1, Duration::from_secs(20));
    let token = ebb.token();

    // What a replica gets from the admin port with a plain GET.
    let seen = ebb.dir.path().join("state/page-seen-by-replica.html");
    let page = wait_for("the replica's fetch of the dashboard", Duration::from_secs(10), || {
        std::fs::read_to_string(&seen).ok()
    });
    assert!(page.contains("<title>ebb</title>"), "{page}");
    assert!(!page.contains(&token), "a replica was handed the admin token");
    assert!(page.contains(r#"<meta name="ebb-session" content="">"#), "{page}");

    // A login link: made only with the token, works once.
    assert_error(&call(&ebb, "POST", "/api/v1/dashboard/login", None, &[]), 401);
    let out = ebb.cli(&["dashboard"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout.lines().find(|l| l.starts_with("http://")).unwrap_or_else(|| panic!("no link: {stdout}"));
    assert!(!url.contains(&token), "the link is not the token");
    let path = url.strip_prefix(&format!("http://{}", ebb.admin)).unwrap_or_else(|| panic!("{url}"));
    let r = call(&ebb, "GET", path, None, &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/"));
    let set_cookie = r.header("set-cookie").expect("a session cookie").to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains(&token), "the cookie is not the token");
    assert_error(&call(&ebb, "GET", path, None, &[]), 403);
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    // The signed-in page knows it may change things, and it can.
    let page = call(&ebb, "GET", "/", None, &[("Cookie", &cookie)]);
    assert!(page.body.contains(r#"<meta name="ebb-session" content="cookie">"#), "{}", page.body);
    assert!(!page.body.contains(&token));
    let own = format!("http://{}", ebb.admin);
    let scale = Some(r#"{"desired": 2, "reason": "dashboard session"}"#);
    let r = call(&ebb, "PUT", "/api/v1/services/web/desired", scale, &[("Cookie", &cookie), ("Origin", &own)]);
    assert_eq!(r.status, 200, "{}", r.body);
    // Only from the page itself, and only with a live session.
    assert_error(&call(&ebb, "PUT", "/api/v1/services/web/desired", scale, &[("Cookie", &cookie)]), 403);
    assert_error(
        &call(
            &ebb,
            "PUT",
            "/api/v1/services/web/desired",
            scale,
            &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        ),
        403,
    );
    let forged = format!("{}={}", cookie.split('=').next().unwrap(), "0".repeat(64));
    assert_error(
        &call(&ebb, "PUT", "/api/v1/services/web/desired", scale, &[("Cookie", &forged), ("Origin", &own)]),
        401,
    );
    assert!(!ebb.up_log().contains(&token), "the token must never be logged");
}

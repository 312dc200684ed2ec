//! A worker pool scaled on a Prometheus instant query: the answer's value
//! is a string (as Prometheus writes it), read as the pool's backlog.

mod support;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::Ebb;

/// A stand-in for Prometheus's HTTP API: `GET /api/v1/query?query=…`
/// answers the current `value` as a one-series vector; every query string
/// seen is kept.
fn fake_prometheus(value: Arc<AtomicU64>, seen: Arc<Mutex<Vec<String>>>) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 4096];
            let n = stream.read(&mut head).unwrap_or(0);
            let request = String::from_utf8_lossy(&head[..n]).to_string();
            let target = request.split_whitespace().nth(1).unwrap_or("").to_string();
            seen.lock().unwrap().push(target.clone());
            let body = if target.starts_with("/api/v1/query?query=") {
                format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1733238000.5,"{}"]}}]}}}}"#,
                    value.load(Ordering::Relaxed)
                )
            } else {
                r#"{"status":"error","error":"not found"}"#.to_string()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn a_worker_pool_follows_a_prometheus_query() {
    let value = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let prometheus = fake_prometheus(value.clone(), seen.clone());
    let ebb = Ebb::start(|admin, _listen| {
        format!(
            r#"state_dir = "state"
[admin]
listen = "{admin}"

[service.scraper]
kind = "worker"
command = "sleep 600"
replicas = {{ min = 1, max = 4, desired = 1 }}
stop_timeout = "2s"

[service.scraper.metric_source]
prometheus = "http://{prometheus}"
query = 'sum(queue_messages{{queue="pages"}})'
interval = "1s"

[[service.scraper.scaling.target_tracking]]
name = "pages-per-worker"
metric = "items_per_replica"
target = 10
window = "1s"
scale_out_cooldown = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"
"#
        )
    });
    ebb.wait_in_service(1, Duration::from_secs(30));
    // 25 messages, 10 per worker: ceil(25 / 10) = 3.
    value.store(25, Ordering::Relaxed);
    ebb.wait_in_service(3, Duration::from_secs(30));
    let scaled = ebb.events().into_iter().find(|e| e["kind"] == "scaled" && e["to"] == 3).expect("scaled to 3");
    assert!(scaled["reason"].as_str().unwrap().contains("items_per_replica"), "{scaled}");
    let queries = seen.lock().unwrap().clone();
    assert!(
        queries.iter().any(|q| q == "/api/v1/query?query=sum%28queue%5Fmessages%7Bqueue%3D%22pages%22%7D%29"),
        "the query is sent URL-encoded: {queries:?}"
    );
}

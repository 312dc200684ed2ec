//! `ebb load` end to end: the real binary against in-process HTTP servers on
//! 127.0.0.1 (port 0). Each test is bounded to a few seconds; servers stop
//! when their guard drops.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::Instant;

const EBB: &str = env!("CARGO_BIN_EXE_ebb");

/// What the test server answers: a status and how long to wait first.
struct Reply {
    status: u16,
    delay: Duration,
}

/// What the test server saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    connections: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    first: OnceLock<Instant>,
    /// Method, headers and body of the last request.
    last: Mutex<Option<(String, Vec<(String, String)>, Vec<u8>)>>,
}

/// An HTTP/1.1 server on 127.0.0.1:0; `reply(n, since_first)` decides the
/// answer to the n-th request (from 1). Stops when dropped.
struct Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(reply: impl Fn(u64, Duration) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let reply = Arc::new(reply);
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let (seen, reply) = (shared.clone(), reply.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (seen, reply) = (seen.clone(), reply.clone());
                        async move {
                            let n = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
                            let first = *seen.first.get_or_init(Instant::now);
                            let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                            let method = request.method().to_string();
                            let headers = request
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            let body =
                                request.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            *seen.last.lock().unwrap() = Some((method, headers, body));
                            let Reply { status, delay } = reply(n, first.elapsed());
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                            let mut response = Response::new(Full::new(Bytes::from_static(b"hello\n")));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        Server { addr, seen, task }
    }

    async fn ok() -> Server {
        Server::start(|_, _| Reply { status: 200, delay: Duration::ZERO }).await
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

/// The finished `ebb load` process.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

async fn ebb_load(args: &[&str]) -> Run {
    ebb_load_in(Path::new("."), args).await
}

async fn ebb_load_in(dir: &Path, args: &[&str]) -> Run {
    let child = tokio::process::Command::new(EBB)
        .current_dir(dir)
        .arg("load")
        .args(args)
        .env("EBB_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ebb load {args:?} did not finish within 30 s"))
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Rows of an `--output-csv` file, as maps from column to cell.
fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{line}");
            header.iter().cloned().zip(cells.into_iter().map(String::from)).collect()
        })
        .collect()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no number {key:?} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_is_exact_and_json_has_every_field() {
    let server = Server::ok().await;
    let run = ebb_load(&["-n", "537", "-c", "13", "--json", &server.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(server.requests(), 537);
    let v = run.json();
    for key in [
        "requests",
        "ok",
        "errors",
        "duration_s",
        "rps",
        "latency_ms",
        "status_codes",
        "error_kinds",
        "dropped",
        "model",
    ] {
        assert!(v.get(key).is_some(), "no {key:?} in {v}");
    }
    for key in ["p50", "p90", "p95", "p99", "p999", "max"] {
        assert!(v["latency_ms"][key].as_f64().unwrap() > 0.0, "latency_ms.{key} in {v}");
    }
    assert_eq!((num(&v, "requests"), num(&v, "ok"), num(&v, "errors")), (537.0, 537.0, 0.0));
    assert_eq!(v["status_codes"]["200"], 537);
    assert_eq!(v["model"], "closed");
    assert!(num(&v, "rps") > 0.0 && num(&v, "duration_s") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_bounds_the_requests_in_flight() {
    let server = Server::start(|_, _| Reply { status: 200, delay: Duration::from_millis(20) }).await;
    let run = ebb_load(&["-n", "140", "-c", "7", &server.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(server.requests(), 140);
    let max = server.seen.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=7).contains(&max), "the server saw {max} requests at once with -c 7");
    // One keep-alive connection per worker (plus the reachability check).
    let connections = server.seen.connections.load(Ordering::SeqCst);
    assert!(connections <= 8, "{connections} connections for 7 workers");
    // The text summary, hey-like.
    for part in [
        "Summary:",
        "Requests/sec:",
        "Latency distribution:",
        "99% in",
        "Status code distribution:",
        "[200] 140 responses",
    ] {
        assert!(run.stdout.contains(part), "no {part:?} in:\n{}", run.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_keeps_the_rate() {
    let server = Server::ok().await;
    let run = ebb_load(&["--rate", "200", "-z", "2s", "--json", &server.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sent = server.requests();
    assert!((360..=440).contains(&sent), "--rate 200 for 2 s sent {sent}");
    let v = run.json();
    assert_eq!(v["model"], "open");
    assert_eq!(num(&v, "requests") as u64, sent);
    assert!((1.8..=2.5).contains(&num(&v, "duration_s")), "{v}");
    assert!((160.0..=220.0).contains(&num(&v, "rps")), "{v}");
}

/// The server freezes for one second. The open model counts each request's
/// latency from when it was due, so the stall shows in p99; the closed
/// model (which stops sending while it waits) hides it in everything but max.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_latency_counts_from_the_schedule() {
    fn freeze(_: u64, since_first: Duration) -> Reply {
        let (from, to) = (Duration::from_millis(500), Duration::from_millis(1500));
        let delay = if since_first >= from && since_first < to { to - since_first } else { Duration::ZERO };
        Reply { status: 200, delay }
    }
    let (open_server, closed_server) = (Server::start(freeze).await, Server::start(freeze).await);
    let (open_url, closed_url) = (open_server.url(), closed_server.url());
    let open_args = ["--rate", "200", "-z", "2500ms", "--json", &open_url];
    let closed_args = ["-c", "2", "-q", "100", "-z", "2500ms", "--json", &closed_url];
    let (open, closed) = tokio::join!(ebb_load(&open_args), ebb_load(&closed_args));
    let (open, closed) = (open.json(), closed.json());
    assert_eq!(num(&open, "dropped"), 0.0, "{open}");
    let open_p99 = open["latency_ms"]["p99"].as_f64().unwrap();
    assert!(open_p99 >= 800.0, "open model p99 {open_p99} ms hides a 1 s stall: {open}");
    let open_p90 = open["latency_ms"]["p90"].as_f64().unwrap();
    assert!(open_p90 >= 400.0, "a third of the requests were due during the stall: {open}");
    let closed_p99 = closed["latency_ms"]["p99"].as_f64().unwrap();
    let closed_max = closed["latency_ms"]["max"].as_f64().unwrap();
    assert!(closed_max >= 800.0, "{closed}");
    assert!(closed_p99 < 300.0, "the closed model is expected to hide the stall (coordinated omission): {closed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_ramp_up_second_by_second() {
    let server = Server::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("run.csv");
    let run = ebb_load(&["--stages", "3s:0->300", "--output-csv", csv.to_str().unwrap(), &server.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = csv_rows(&csv);
    let sent: Vec<u64> = rows.iter().take(3).map(|r| r["sent"].parse().unwrap()).collect();
    // Seconds of a 0->300 ramp over 3 s carry 50, 150 and 250 requests.
    assert!(sent.windows(2).all(|w| w[1] > w[0] + 50), "per-second requests {sent:?} do not ramp");
    let total = server.requests();
    assert!((430..=470).contains(&total), "{total}");
    let targets: Vec<f64> = rows.iter().take(3).map(|r| r["target_rps"].parse().unwrap()).collect();
    assert!(targets.windows(2).all(|w| w[1] > w[0]), "{targets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_replayed() {
    let server = Server::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("day.csv");
    std::fs::write(&trace, "second,rate\n0,50\n1,150\n2,0\n").unwrap();
    let csv = dir.path().join("run.csv");
    let run =
        ebb_load(&["--trace", trace.to_str().unwrap(), "--output-csv", csv.to_str().unwrap(), "--json", &server.url()])
            .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(server.requests(), 200);
    let rows = csv_rows(&csv);
    let sent: Vec<u64> = rows.iter().map(|r| r["sent"].parse().unwrap()).collect();
    assert!(sent.len() >= 3, "{sent:?}");
    assert!((40..=60).contains(&sent[0]) && (135..=165).contains(&sent[1]) && sent[2] <= 15, "{sent:?}");
}

/// `ebb load --trace` and `ebb simulate --trace` read one format with one
/// reader: the same files pass, and fail with the same `file:line` message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_simulate_read_the_same_trace_files() {
    let server = Server::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "ebb.toml",
        "[admin]\nlisten = \"127.0.0.1:19980\"\n\n[service.web]\ncommand = \"sleep 1000\"\nlisten = \"127.0.0.1:19981\"\nreplicas = { min = 1, max = 4, desired = 1 }\n",
    );
    write("good.csv", "second,rate\n# warm-up\n0,20\n1,40\n\n2,0\n");
    write("gap.csv", "second,rate\n0,20\n3,40\n");
    write("bad.csv", "second,rate\n0,20\n1,20,3\n");
    let simulate = |file: &str| {
        std::process::Command::new(EBB)
            .current_dir(dir.path())
            .args(["-f", "ebb.toml", "simulate", "-q", "--trace", file])
            .env("EBB_LOG", "warn")
            .output()
            .unwrap()
    };

    let live = ebb_load_in(dir.path(), &["--trace", "good.csv", "--json", &server.url()]).await;
    assert_eq!(live.code, 0, "{}", live.stderr);
    assert_eq!(server.requests(), 60, "20 then 40 then 0 req/s, one second each");
    let sim = simulate("good.csv");
    assert!(sim.status.success(), "{}", String::from_utf8_lossy(&sim.stderr));
    let out = String::from_utf8_lossy(&sim.stdout);
    assert!(out.contains("good.csv (3 s, peak 40 req/s"), "{out}");

    for (file, message) in [
        (
            "gap.csv",
            "gap.csv:3: gap in the trace: second 3 follows second 0 (seconds 1 to 2 are missing); give one row per second, with rate 0 where there were no requests",
        ),
        ("bad.csv", "bad.csv:3: malformed line: expected two columns `second,rate`, found \"1,20,3\""),
    ] {
        let live = ebb_load_in(dir.path(), &["--trace", file, &server.url()]).await;
        assert_eq!(live.code, 2, "{file}: {}", live.stderr);
        assert_eq!(live.stderr.trim(), format!("error: --trace {message}"), "{file}");
        let sim = simulate(file);
        assert_eq!(sim.status.code(), Some(2), "{file}");
        assert_eq!(String::from_utf8_lossy(&sim.stderr).trim(), format!("error: {message}"), "{file}");
    }
    assert_eq!(server.requests(), 60, "a refused trace sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_has_one_row_per_second() {
    let server = Server::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("run.csv");
    let run = ebb_load(&["--rate", "100", "-z", "2s", "--output-csv", csv.to_str().unwrap(), &server.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let header = std::fs::read_to_string(&csv).unwrap().lines().next().unwrap().to_string();
    assert_eq!(header, "time_s,sent,ok,errors,rps,p50_ms,p99_ms,in_service,desired,target_rps,dropped");
    let rows = csv_rows(&csv);
    assert!((2..=3).contains(&rows.len()), "{} rows", rows.len());
    let first = &rows[0];
    assert!((0.9..=1.3).contains(&first["time_s"].parse::<f64>().unwrap()), "{first:?}");
    assert!((90..=110).contains(&first["ok"].parse::<u64>().unwrap()), "{first:?}");
    assert_eq!(first["errors"], "0");
    assert!(first["p50_ms"].parse::<f64>().unwrap() > 0.0 && first["p99_ms"].parse::<f64>().unwrap() > 0.0);
    assert_eq!(first["in_service"], "", "no fleet was followed");
    let ok: u64 = rows.iter().map(|r| r["ok"].parse::<u64>().unwrap()).sum();
    assert_eq!(ok, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_are_counted_and_5xx_are_errors() {
    let server = Server::start(|n, _| Reply {
        status: if n % 4 == 0 {
            503
        } else if n % 5 == 0 {
            404
        } else {
            200
        },
        delay: Duration::ZERO,
    })
    .await;
    let run = ebb_load(&["-n", "100", "-c", "4", "--json", &server.url()]).await;
    assert_eq!(run.code, 0, "5xx responses are results, not a failure to send: {}", run.stderr);
    let v = run.json();
    // 25 multiples of 4 (503); 15 multiples of 5 that are not (404, still ok).
    assert_eq!(v["status_codes"], serde_json::json!({"200": 60, "404": 15, "503": 25}));
    assert_eq!((num(&v, "ok"), num(&v, "errors")), (75.0, 25.0));
    let text = ebb_load(&["-n", "100", "-c", "4", &server.url()]).await;
    assert!(
        text.stdout.contains("[503] 25 responses") && text.stdout.contains("Error distribution:"),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_errors() {
    let server = Server::start(|n, _| Reply {
        status: 200,
        delay: if n % 2 == 0 { Duration::from_secs(2) } else { Duration::ZERO },
    })
    .await;
    let started = std::time::Instant::now();
    let run = ebb_load(&["-n", "10", "-c", "5", "--timeout", "200ms", "--json", &server.url()]).await;
    assert!(started.elapsed() < Duration::from_secs(2), "timed-out requests were waited for");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(num(&v, "errors"), 5.0, "{v}");
    assert_eq!(num(&v, "ok"), 5.0, "{v}");
    let kinds = v["error_kinds"].as_object().unwrap();
    assert_eq!(kinds.len(), 1, "{v}");
    let (kind, count) = kinds.iter().next().unwrap();
    assert!(kind.starts_with("timeout"), "{kind}");
    assert_eq!(count, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_headers_and_body_are_sent() {
    let server = Server::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, br#"{"from":"file"}"#).unwrap();
    let url = format!("{}candidate/ada?x=1", server.url());
    let run = ebb_load(&[
        "-n",
        "3",
        "-m",
        "POST",
        "-H",
        "X-Test: one",
        "-H",
        "X-Test: two",
        "-T",
        "application/json",
        "-D",
        body_file.to_str().unwrap(),
        &url,
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (method, headers, body) = server.seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(method, "POST");
    assert_eq!(body, br#"{"from":"file"}"#);
    let values = |name: &str| headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    assert_eq!(values("x-test"), ["one", "two"]);
    assert_eq!(values("content-type"), ["application/json"]);
    assert_eq!(values("host"), [server.addr.to_string()]);
    // A body with no method would go on a GET: refused, with the fix.
    let run = ebb_load(&["-n", "1", "-d", "inline", &server.url()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("give the method"), "{}", run.stderr);
    let run = ebb_load(&["-n", "1", "-m", "PUT", "-d", "inline", "-H", "Host: example.test", &server.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (method, headers, body) = server.seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(method, "PUT");
    assert_eq!(body, b"inline");
    assert!(headers.contains(&("host".into(), "example.test".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_reuses_connections_unless_disabled() {
    let kept = Server::ok().await;
    let run = ebb_load(&["-n", "40", "-c", "2", &kept.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(kept.seen.connections.load(Ordering::SeqCst) <= 3);
    let fresh = Server::ok().await;
    let run = ebb_load(&["-n", "40", "-c", "2", "--disable-keepalive", &fresh.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(fresh.requests(), 40);
    // One per request, plus the reachability check.
    assert_eq!(fresh.seen.connections.load(Ordering::SeqCst), 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_bounds_a_closed_run() {
    let server = Server::start(|_, _| Reply { status: 200, delay: Duration::from_millis(5) }).await;
    let run = ebb_load(&["-c", "4", "-z", "1s", "--json", &server.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert!((0.95..=1.5).contains(&num(&v, "duration_s")), "{v}");
    assert!(num(&v, "requests") > 100.0, "{v}");
    assert_eq!(num(&v, "requests") as u64, server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("bad.csv");
    std::fs::write(&trace, "second,rate\n0,10\n1,ten\n").unwrap();
    let trace = trace.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["http://"], "malformed URL"),
        (vec!["http://127.0.0.1:99999/"], "malformed URL"),
        (vec!["ftp://127.0.0.1/"], "unsupported scheme \"ftp\" (use http:// or https://)"),
        (vec!["--cacert", "/nonexistent/ca.pem", "https://127.0.0.1:9/"], "--cacert: cannot read /nonexistent/ca.pem"),
        (vec!["--cacert", &trace, "https://127.0.0.1:9/"], "holds no PEM certificate"),
        (vec!["--cacert", &trace, "http://127.0.0.1:9/"], "--cacert is for an https:// target or --ebb URL"),
        (vec!["--rate", "-5", "http://127.0.0.1:9/"], "--rate must be a number of requests per second > 0 (got -5)"),
        (vec!["--rate", "0", "http://127.0.0.1:9/"], "--rate must be"),
        (vec!["-q", "-1", "http://127.0.0.1:9/"], "-q must be"),
        (vec!["-n", "0", "http://127.0.0.1:9/"], "-n must be at least 1"),
        (
            vec!["--stages", "30s:0->200,2x:200", "http://127.0.0.1:9/"],
            "stage 2 (\"2x:200\") at column 12: bad duration \"2x\"",
        ),
        (vec!["--trace", &trace, "http://127.0.0.1:9/"], "bad.csv:3: malformed line: rate \"ten\" is not a number"),
        (vec!["--trace", "/nonexistent/day.csv", "http://127.0.0.1:9/"], "cannot read the file"),
        (vec!["-H", "NoColon", "http://127.0.0.1:9/"], "expected \"Name: value\""),
        (vec!["--ebb", "ftp://x", "http://127.0.0.1:9/"], "--ebb"),
    ];
    for (args, expected) in cases {
        let run = ebb_load(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {}", run.stderr);
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(expected),
            "{args:?}: {:?} lacks {expected:?}",
            lines[0]
        );
        assert!(run.stdout.is_empty(), "{args:?}");
    }
    // Argument errors that clap catches also exit 2.
    for args in [
        vec!["--rate", "5", "-q", "5", "http://127.0.0.1:9/"],
        vec!["-z", "10x", "http://127.0.0.1:9/"],
        vec!["-c", "-3", "http://127.0.0.1:9/"],
    ] {
        let run = ebb_load(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host_is_a_clear_error() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let run = ebb_load(&["-n", "10", &format!("http://127.0.0.1:{port}/")]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].contains("connection refused") || lines[0].contains("Connection refused"), "{}", lines[0]);
    assert!(lines[0].contains("nothing was sent"), "{}", lines[0]);
}

/// A stand-in for ebb's admin API: service `web` listens on `listen`, with
/// 3 desired replicas, 1 in service at the first poll and 2 after.
async fn fake_admin(listen: SocketAddr) -> (SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let listen = listen.to_string();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let polls = Arc::new(AtomicU64::new(0));
    let counter = polls.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = admin.accept().await else { continue };
            let (listen, counter) = (listen.clone(), counter.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let listen = listen.clone();
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        assert_eq!(request.uri().path(), "/api/v1/status");
                        let doc = serde_json::json!({"services": [
                            {"name": "other", "listen": "127.0.0.1:1", "desired": 9, "in_service": 9},
                            {"name": "web", "listen": listen, "desired": 3, "in_service": if n == 0 { 1 } else { 2 }, "pending": 1, "replicas": []},
                        ]});
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(doc.to_string()))))
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    (admin_addr, polls, task)
}

/// `--ebb`: the fleet's desired and in-service replicas appear in the live
/// lines, the CSV and the JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_is_followed_through_the_admin_api() {
    let target = Server::ok().await;
    let (admin_addr, polls, admin_task) = fake_admin(target.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("run.csv");
    let admin_url = format!("http://{admin_addr}");
    let run = ebb_load(&[
        "--rate",
        "50",
        "-z",
        "2s",
        "--ebb",
        &admin_url,
        "--output-csv",
        csv.to_str().unwrap(),
        "--json",
        &target.url(),
    ])
    .await;
    admin_task.abort();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["fleet"], serde_json::json!({"service": "web", "desired": 3, "in_service": 2}));
    let rows = csv_rows(&csv);
    assert!(rows.iter().all(|r| r["desired"] == "3"), "{rows:?}");
    assert!(rows.iter().any(|r| r["in_service"] == "2"), "{rows:?}");
    assert!(run.stderr.contains("web: 2 in service / 3 desired"), "{}", run.stderr);
    assert!(polls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_with_a_summary() {
    let server = Server::start(|_, _| Reply { status: 200, delay: Duration::from_millis(2) }).await;
    let child = tokio::process::Command::new(EBB)
        .args(["load", "-c", "4", "-z", "30s", &server.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("stopped on Ctrl-C")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("interrupted"), "{stdout}");
    assert!(stdout.contains("[200]"), "{stdout}");
    assert!(server.requests() > 50);
}

/// Without `--ebb`, a target that is one of the local ebb's balancers (per
/// `./ebb.toml`'s admin API) is recognised and its fleet followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ebb_balancer_is_recognised() {
    let target = Server::ok().await;
    let (admin_addr, _polls, admin_task) = fake_admin(target.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[admin]\nlisten = \"{admin_addr}\"\n\n[service.web]\ncommand = \"true\"\nlisten = \"{}\"\n",
        target.addr
    );
    std::fs::write(dir.path().join("ebb.toml"), config).unwrap();
    let run = ebb_load_in(dir.path(), &["-n", "20", "--json", &target.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("following web through ebb's admin API"), "{}", run.stderr);
    assert_eq!(run.json()["fleet"]["service"], "web");
    // A config elsewhere, named with -f as for every command.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::rename(dir.path().join("ebb.toml"), elsewhere.path().join("fleet.toml")).unwrap();
    let config = elsewhere.path().join("fleet.toml");
    let run = ebb_load_in(dir.path(), &["-f", config.to_str().unwrap(), "-n", "5", "--json", &target.url()]).await;
    assert_eq!(run.json()["fleet"]["service"], "web", "{}", run.stderr);
    // Another target on the same machine is not mistaken for it.
    let other = Server::ok().await;
    let run = ebb_load_in(dir.path(), &["-n", "5", "--json", &other.url()]).await;
    assert_eq!(run.json()["fleet"], Value::Null);
    admin_task.abort();
}

/// The open model bounds what is outstanding: at most -c in flight and -c
/// waiting; requests due beyond that are dropped and counted, not queued
/// without limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_drops_what_it_cannot_send_in_time() {
    let server = Server::start(|_, _| Reply { status: 200, delay: Duration::from_millis(500) }).await;
    let run = ebb_load(&["--rate", "100", "-z", "1s", "-c", "5", "--json", &server.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let (sent, dropped) = (num(&v, "sent") as u64, num(&v, "dropped") as u64);
    assert_eq!(sent + dropped, 100, "{v}");
    assert!(dropped >= 60, "{v}");
    assert_eq!(server.requests(), sent);
    assert!(server.seen.max_in_flight.load(Ordering::SeqCst) <= 5);
    // Requests that waited for a free connection count the wait.
    assert!(num(&v["latency_ms"], "max") >= 900.0, "{v}");
    let text = ebb_load(&["--rate", "100", "-z", "1s", "-c", "5", &server.url()]).await;
    assert!(text.stdout.contains("Dropped:") && text.stdout.contains("raise -c"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tools_spellings_are_mapped_or_refused_and_non_2xx_is_reported_apart() {
    let server = Server::ok().await;
    // hey's -disable-keepalive: one connection per request, no body.
    let run = ebb_load(&["-n", "5", "-c", "1", "-disable-keepalive", &server.url()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (method, _, body) = server.seen.last.lock().unwrap().clone().unwrap();
    assert_eq!((method.as_str(), body.len()), ("GET", 0), "not -d isable-keepalive");
    // wrk's -d 3s is a duration, not a body.
    let run = ebb_load(&["-d", "3s", &server.url()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("did you mean -z 3s"), "{}", run.stderr);
    // hey's -h2 does not print help and exit 0.
    let run = ebb_load(&["-h2", &server.url()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    // Non-2xx answers are counted apart, as ab does.
    let missing = Server::start(|_, _| Reply { status: 404, delay: Duration::ZERO }).await;
    let run = ebb_load(&["-n", "3", "-c", "1", &missing.url()]).await;
    assert!(run.stdout.contains("Non-2xx responses: 3"), "{}", run.stdout);
}

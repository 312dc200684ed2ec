//! `ebb demo-app` tested as its clients see it: the real binary on a free
//! port, spoken to over raw HTTP/1.1, every contract of `docs/demo-app.md`
//! checked exactly. Timing bounds are loose on purpose: these tests run on a
//! small, busy machine.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// One running `ebb demo-app`; killed when dropped, so a failing test leaves
/// no process behind.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Replica {
    /// Starts a replica on a free port with the database `db`.
    fn start(db: &Path, extra_args: &[&str]) -> Replica {
        let mut command = demo_app_command();
        command.arg("--db").arg(db).args(extra_args);
        Replica::spawn(command)
    }

    /// Spawns `command` (a `demo-app` on port 0) and waits for its
    /// `listening on <addr>` line.
    fn spawn(command: Command) -> Replica {
        Replica::launch(command).ready()
    }

    /// Spawns `command` without waiting for it to listen, so that several
    /// replicas can start at once.
    fn launch(mut command: Command) -> Starting {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("spawn ebb demo-app");
        let stdout = child.stdout.take().expect("piped stdout");
        let (line_tx, line) = mpsc::channel();
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = line_tx.send(line);
            // Keep draining, so a later write to stdout never hits a closed pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        // The guard owns the child from here: if the line never comes, it is killed.
        Starting { replica: Replica { child, addr: SocketAddr::from(([0, 0, 0, 0], 0)) }, line }
    }

    fn get(&self, target: &str) -> Reply {
        http(self.addr, "GET", target, None)
    }

    fn post(&self, target: &str, body: Option<&str>) -> Reply {
        http(self.addr, "POST", target, body)
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the replica");
    }

    /// Waits for the process to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the replica did not exit within {timeout:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A replica that has not yet said where it listens.
struct Starting {
    replica: Replica,
    line: mpsc::Receiver<String>,
}

impl Starting {
    /// Waits for the `listening on <addr>` line, which must be exactly that.
    fn ready(mut self) -> Replica {
        let line = self.line.recv_timeout(Duration::from_secs(30)).expect("no `listening on` line within 30 s");
        let addr = line
            .strip_suffix('\n')
            .and_then(|line| line.strip_prefix("listening on "))
            .unwrap_or_else(|| panic!("expected exactly `listening on <addr>`, got {line:?}"));
        self.replica.addr = addr.parse().unwrap_or_else(|e| panic!("bad address {addr:?}: {e}"));
        self.replica
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ebb demo-app --port 0`, with a quiet log and none of the environment
/// variables that would change its defaults.
fn demo_app_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ebb"));
    command.args(["demo-app", "--port", "0"]).env("EBB_LOG", "warn");
    for var in ["PORT", "EBB_REPLICA_ID", "EBB_DEMO_DB", "EBB_DEMO_CPU_BUDGET", "EBB_STATE_DIR", "EBB_SERVICE"] {
        command.env_remove(var);
    }
    command
}

/// A response, read to the end of the connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Asserts a JSON error: the status and a `{"message": "..."}` body.
    fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        let message = self.json()["message"].as_str().map(str::to_owned);
        assert!(message.is_some_and(|m| !m.is_empty()), "expected a JSON message: {self:?}");
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`, so the
/// response ends where the connection does).
fn http(addr: SocketAddr, method: &str, target: &str, body: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        request += &format!("Content-Type: text/plain\r\nContent-Length: {}\r\n", body.len());
    }
    request += "\r\n";
    request += body.unwrap_or_default();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    parse_response(&raw)
        .unwrap_or_else(|| panic!("{method} {target}: bad response {:?}", String::from_utf8_lossy(&raw)))
}

fn parse_response(raw: &[u8]) -> Option<Reply> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_owned() };
    Some(Reply { status, headers, body })
}

fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body += after.get(..size)?;
        rest = after.get(size + 2..)?;
    }
}

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.sqlite");
    (dir, db)
}

#[test]
fn root_is_an_invalid_request() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &[]);
    let reply = app.get("/");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json(), json!({"status": "invalid request"}));
    assert_eq!(app.post("/", None).status, 405);
}

#[test]
fn good_to_go_is_empty_unless_details_are_asked_for() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &["--replica-id", "web-7"]);

    let reply = app.get("/gtg");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "");

    // `details` counts whatever its value, even none.
    for target in ["/gtg?details", "/gtg?details=", "/gtg?details=true", "/gtg?details=false", "/gtg?x=1&details"] {
        let reply = app.get(target);
        assert_eq!(reply.status, 200, "{target}");
        assert_eq!(reply.json(), json!({"connected": "true", "instance-id": "web-7"}), "{target}");
    }
    let reply = app.get("/gtg?detailsx=1");
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));

    assert_eq!(app.post("/gtg", None).status, 405);
}

#[test]
fn candidates_are_stored_listed_and_url_decoded() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &[]);

    // Nothing stored yet: the seed's plain-text 404s.
    for target in ["/candidates", "/candidate/John%20Smith"] {
        let reply = app.get(target);
        assert_eq!((reply.status, reply.body.as_str()), (404, "Not Found"), "{target}");
    }

    let reply = app.post("/candidate/John%20Smith", None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"CandidateName": "John Smith"}));
    assert!(reply.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{reply:?}");

    let reply = app.get("/candidate/John%20Smith");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!([{"CandidateName": "John Smith"}]));

    // A body is ignored; posting a name again updates it, no duplicate.
    let reply = app.post("/candidate/John%20Smith", Some("{\"anything\": 1}"));
    assert_eq!((reply.status, reply.json()), (200, json!({"CandidateName": "John Smith"})));
    assert_eq!(app.get("/candidate/John%20Smith").json(), json!([{"CandidateName": "John Smith"}]));

    // Non-ASCII and an encoded slash are part of the name.
    assert_eq!(app.post("/candidate/Jos%C3%A9", None).json(), json!({"CandidateName": "José"}));
    assert_eq!(app.post("/candidate/a%2Fb", None).json(), json!({"CandidateName": "a/b"}));
    assert_eq!(app.get("/candidate/a%2Fb").json(), json!([{"CandidateName": "a/b"}]));

    let reply = app.get("/candidates");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!([{"CandidateName": "John Smith"}, {"CandidateName": "José"}, {"CandidateName": "a/b"}])
    );

    // Still unknown names are 404, matched exactly.
    let reply = app.get("/candidate/John");
    assert_eq!((reply.status, reply.body.as_str()), (404, "Not Found"));
}

#[test]
fn bad_candidate_names_and_methods_are_refused() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &[]);
    // Malformed escapes and bytes that are not UTF-8: 400 with a message,
    // and nothing stored.
    for target in ["/candidate/%zz", "/candidate/a%2", "/candidate/%ff", "/candidate/%C3"] {
        app.post(target, None).assert_error(400);
        app.get(target).assert_error(400);
    }
    assert_eq!(app.get("/candidates").status, 404);

    assert_eq!(app.get("/candidate/").status, 404);
    assert_eq!(http(app.addr, "DELETE", "/candidate/x", None).status, 405);
    assert_eq!(app.post("/candidates", None).status, 405);
}

#[test]
fn unknown_paths_are_not_found() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &[]);
    for target in ["/nope", "/gtg/", "/candidate", "/candidate/a/b", "/api/1"] {
        let reply = app.get(target);
        assert_eq!((reply.status, reply.body.as_str()), (404, "Not Found"), "{target}");
    }
}

#[test]
fn api_returns_52_random_letters() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &[]);
    let letters = |reply: Reply| -> String {
        assert_eq!(reply.status, 200);
        // The keys come in numeric order ("0", "1", ..., "51"), not sorted as strings.
        let positions: Vec<usize> =
            (0..52).map(|i| reply.body.find(&format!("\"{i}\":")).expect("every key")).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "keys out of order: {}", reply.body);
        let object = reply.json();
        let object = object.as_object().expect("a JSON object");
        assert_eq!(object.len(), 52);
        (0..52)
            .map(|i| {
                let value = object.get(&i.to_string()).unwrap_or_else(|| panic!("key {i:?} missing"));
                let letter = value.as_str().expect("a string");
                assert!(letter.len() == 1 && letter.chars().all(|c| c.is_ascii_alphabetic()), "{letter:?}");
                letter.to_owned()
            })
            .collect()
    };
    let first = letters(app.get("/api"));
    let second = letters(app.get("/api"));
    assert_ne!(first, second, "two answers of 52 random letters were equal");
    assert_eq!(app.post("/api", None).status, 405);
}

#[test]
fn work_burns_cpu_and_sleeps_as_asked() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &["--replica-id", "w1"]);

    let reply = app.get("/work");
    assert_eq!(reply.status, 200);
    let report = reply.json();
    let keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{report}");
    for key in ["replica_id", "cpu_ms", "sleep_ms", "queued_ms", "elapsed_ms"] {
        assert!(keys.contains(&key), "{key} missing from {report}");
    }
    assert_eq!(
        (report["replica_id"].as_str(), report["cpu_ms"].as_u64(), report["sleep_ms"].as_u64()),
        (Some("w1"), Some(0), Some(0))
    );

    let started = Instant::now();
    let report = app.get("/work?cpu_ms=50").json();
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!((report["cpu_ms"].as_u64(), report["sleep_ms"].as_u64()), (Some(50), Some(0)));
    assert!(report["elapsed_ms"].as_u64().unwrap() >= 50, "{report}");

    let started = Instant::now();
    let report = app.get("/work?cpu_ms=20&sleep_ms=100").json();
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert_eq!((report["cpu_ms"].as_u64(), report["sleep_ms"].as_u64()), (Some(20), Some(100)));
    assert!(report["elapsed_ms"].as_u64().unwrap() >= 120, "{report}");

    // An empty value counts as absent.
    assert_eq!(app.get("/work?cpu_ms=&sleep_ms=0").json()["cpu_ms"], json!(0));
}

#[test]
fn work_refuses_bad_values_with_a_message() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &[]);
    for target in [
        "/work?cpu_ms=abc",
        "/work?cpu_ms=-1",
        "/work?cpu_ms=1.5",
        "/work?cpu_ms=60001",
        "/work?sleep_ms=99999999999999999999999",
        "/work?cpu_ms=10&sleep_ms=x",
    ] {
        app.get(target).assert_error(400);
    }
    assert_eq!(app.post("/work", None).status, 405);
}

#[test]
fn stats_count_requests_and_posts() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &["--replica-id", "s1"]);
    app.get("/gtg");
    app.get("/nope");
    app.post("/candidate/a", None);
    app.post("/candidate/b", Some("x"));
    app.post("/candidate/%zz", None);
    app.get("/work");
    let reply = app.get("/stats");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"replica_id": "s1", "requests": 6, "posts": 2, "work": 1, "in_flight": 0}));
    // Reading the counters does not change them.
    assert_eq!(app.get("/stats").json()["requests"], json!(6));
}

#[test]
fn replicas_share_one_database() {
    let (_dir, db) = temp_db();
    let a = Replica::start(&db, &["--replica-id", "a"]);
    let b = Replica::start(&db, &["--replica-id", "b"]);
    assert_eq!(a.post("/candidate/John%20Smith", None).status, 200);
    assert_eq!(b.get("/candidate/John%20Smith").json(), json!([{"CandidateName": "John Smith"}]));
    assert_eq!(b.post("/candidate/Ada", None).status, 200);
    let expected = json!([{"CandidateName": "John Smith"}, {"CandidateName": "Ada"}]);
    assert_eq!(a.get("/candidates").json(), expected);
    assert_eq!(b.get("/candidates").json(), expected);
    assert_eq!(a.get("/gtg?details").json()["instance-id"], json!("a"));
    assert_eq!(b.get("/gtg?details").json()["instance-id"], json!("b"));
}

#[test]
fn replicas_may_create_the_database_at_the_same_time() {
    let (_dir, db) = temp_db();
    let starting: Vec<Starting> = (0..4)
        .map(|i| {
            let mut command = demo_app_command();
            command.arg("--db").arg(&db).args(["--replica-id", &format!("r{i}")]);
            Replica::launch(command)
        })
        .collect();
    let replicas: Vec<Replica> = starting.into_iter().map(Starting::ready).collect();
    thread::scope(|s| {
        for (i, replica) in replicas.iter().enumerate() {
            s.spawn(move || assert_eq!(replica.post(&format!("/candidate/c{i}"), None).status, 200));
        }
    });
    for replica in &replicas {
        assert_eq!(replica.get("/candidates").json().as_array().map(Vec::len), Some(4));
    }
}

#[test]
fn database_and_replica_id_default_from_the_environment() {
    let state = tempfile::tempdir().unwrap();
    let mut command = demo_app_command();
    command.env("EBB_STATE_DIR", state.path()).env("EBB_SERVICE", "web");
    let app = Replica::spawn(command);
    assert_eq!(app.post("/candidate/x", None).status, 200);
    assert!(state.path().join("web-candidates.sqlite").exists());
    let id = format!("demo-{}", app.child.id());
    assert_eq!(app.get("/gtg?details").json()["instance-id"], json!(id));

    let mut command = demo_app_command();
    command.env("EBB_REPLICA_ID", "from-env").env("EBB_DEMO_DB", state.path().join("other.sqlite"));
    let app = Replica::spawn(command);
    assert_eq!(app.get("/gtg?details").json()["instance-id"], json!("from-env"));
    assert_eq!(app.get("/candidates").status, 404, "the EBB_DEMO_DB file is a different, empty database");
    assert!(state.path().join("other.sqlite").exists());
}

#[test]
fn cpu_budget_queues_work_beyond_it() {
    let (_dir, db) = temp_db();
    let app = Replica::start(&db, &["--cpu-budget", "0.25"]);
    // 40 ms of CPU at a quarter core takes about 160 ms on its own.
    let started = Instant::now();
    let report = app.get("/work?cpu_ms=40").json();
    assert!(started.elapsed() >= Duration::from_millis(120), "{report}");

    // Two at once: one waits for the other, about 320 ms in all.
    let started = Instant::now();
    let reports: Vec<Value> = thread::scope(|s| {
        let requests: Vec<_> = (0..2).map(|_| s.spawn(|| app.get("/work?cpu_ms=40").json())).collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?} {reports:?}");
    let queued: Vec<u64> = reports.iter().map(|r| r["queued_ms"].as_u64().unwrap()).collect();
    assert!(queued.iter().max().unwrap() >= &80, "the second request should wait for the first: {reports:?}");
    assert!(queued.iter().min().unwrap() < &80, "the first request should not wait: {reports:?}");
}

#[test]
fn bad_cpu_budget_is_refused_at_start() {
    for budget in ["0", "-0.5", "abc"] {
        let output = demo_app_command().arg(format!("--cpu-budget={budget}")).output().unwrap();
        assert!(!output.status.success(), "--cpu-budget {budget} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--cpu-budget"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let (_dir, db) = temp_db();
    let mut app = Replica::start(&db, &[]);
    let addr = app.addr;
    let in_flight = thread::spawn(move || http(addr, "GET", "/work?sleep_ms=500", None));
    thread::sleep(Duration::from_millis(150));
    app.signal(Signal::SIGTERM);
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["sleep_ms"], json!(500));
    let status = app.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(addr).is_err(), "still accepting after exit");
}

#[test]
fn ctrl_c_exits_0() {
    let (_dir, db) = temp_db();
    let mut app = Replica::start(&db, &[]);
    app.signal(Signal::SIGINT);
    let status = app.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

//! Shared helpers for end-to-end tests that run the real `ebb` binary.
//!
//! Everything here targets 127.0.0.1 only, is bounded in time, and the
//! [`Ebb`] guard stops ebb and every replica it started, even when a test
//! fails.

#![allow(dead_code)]

pub mod local_swarm;
pub mod s1;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod docker;
#[allow(unused_imports)] // only the container tests use it
pub use docker::*;

pub const EBB: &str = env!("CARGO_BIN_EXE_ebb");

/// A free loopback port for a test listener, bound and released.
///
/// Picked below the kernel's ephemeral range (32768+): a port taken from
/// that range can be reused as the local port of any outgoing connection
/// (load tests open thousands) between the check here and ebb's bind, and
/// ebb then fails with "address in use". And below the process driver's
/// replica ports (20000–32000), which parallel tests' replicas take. Each
/// test process starts at its own offset so test binaries rarely meet.
pub fn free_port() -> u16 {
    const FIRST: u32 = 15_000;
    const SPAN: u32 = 5_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = (FIRST + (base + n * 37) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends one request on a fresh connection (`Connection: close`).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Response> {
    http_with_headers(addr, method, path, body, &[])
}

pub fn http_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    request.push_str("\r\n");
    if let Some(b) = body {
        request.push_str(b);
    }
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Sends `raw` (a whole HTTP/1.1 request, `Connection: close`) as is and
/// reads the response: for requests `http_with_headers` cannot make (another
/// content type, no Host).
pub fn http_raw(addr: SocketAddr, raw: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(raw.as_bytes())?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    parse_response(&bytes)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(status_line))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Ok(Response { status, headers, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `ebb up` in a temp directory; stopped (with all its replicas:
/// SIGINT, then SIGKILL to ebb and every replica group still alive) when
/// dropped.
pub struct Ebb {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub admin: SocketAddr,
    pub listen: SocketAddr,
    child: Option<Child>,
    /// `ebb up` processes a takeover replaced (they exit on their own;
    /// killed on drop if they have not).
    previous: Vec<Child>,
    /// Every replica pid ever seen, killed on drop if still alive.
    seen_pids: std::cell::RefCell<Vec<u32>>,
}

/// A config for one service `web` of demo-app replicas with fast health
/// checks. `extra` is appended inside `[service.web]` (before the health table).
pub fn fast_config(admin: SocketAddr, listen: SocketAddr, replicas: &str, extra: &str) -> String {
    format!(
        r#"state_dir = "state"

[admin]
listen = "{admin}"

[service.web]
command = "{{ebb}} demo-app --port $PORT"
listen = "{listen}"
replicas = {replicas}
stop_timeout = "5s"
drain_timeout = "5s"
{extra}

[service.web.health]
path = "/gtg"
interval = "200ms"
timeout = "150ms"
healthy_threshold = 2
unhealthy_threshold = 2
matcher = "200"
grace_period = "0s"
"#
    )
}

impl Ebb {
    /// Writes the config produced by `make(admin, listen)` and starts `ebb up`.
    pub fn start(make: impl FnOnce(SocketAddr, SocketAddr) -> String) -> Ebb {
        Self::start_under(&[], make)
    }

    /// Like [`Ebb::start`], with `ebb up` run under a wrapper command such
    /// as `["prlimit", "--nofile=256:256"]`.
    pub fn start_under(wrapper: &[&str], make: impl FnOnce(SocketAddr, SocketAddr) -> String) -> Ebb {
        Self::start_until(wrapper, make, |ebb| {
            http(ebb.admin, "GET", "/api/v1/status", None).is_ok_and(|r| r.status == 200)
        })
    }

    /// Like [`Ebb::start_under`], waiting until `ready` holds instead of
    /// until the admin API answers plain HTTP (an admin API with `[admin]
    /// tls`: `ready` can run `ebb status`).
    pub fn start_until(
        wrapper: &[&str],
        make: impl FnOnce(SocketAddr, SocketAddr) -> String,
        ready: impl Fn(&Ebb) -> bool,
    ) -> Ebb {
        let dir = tempfile::tempdir().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("ebb.toml");
        std::fs::write(&config, make(admin, listen)).unwrap();
        let child = spawn_up_under(wrapper, dir.path(), &config);
        let mut ebb =
            Ebb { dir, config, admin, listen, child: Some(child), previous: Vec::new(), seen_pids: Default::default() };
        ebb.wait_until(ready);
        ebb
    }

    /// Waits until the admin API answers. If `ebb up` exits first, the
    /// test fails at once with its log instead of after a silent timeout.
    pub fn wait_admin(&mut self) {
        self.wait_until(|ebb| http(ebb.admin, "GET", "/api/v1/status", None).is_ok_and(|r| r.status == 200));
    }

    fn wait_until(&mut self, ready: impl Fn(&Ebb) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ready(self) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("ebb up exited ({status}) before its admin API answered:\n{}", self.up_log());
            }
            if Instant::now() > deadline {
                panic!("timed out after 20s waiting for the admin API to answer; ebb up's log:\n{}", self.up_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills `ebb up` with SIGKILL, as a crash would: its replicas live on
    /// in their own process groups.
    pub fn kill_up(&mut self) {
        let mut child = self.child.take().expect("ebb up is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts `ebb up` again on the same config and state directory and
    /// waits until its admin API answers.
    pub fn restart_up(&mut self) {
        assert!(self.child.is_none(), "ebb up is still running");
        self.child = Some(spawn_up(self.dir.path(), &self.config));
        self.wait_admin();
    }

    /// Starts `ebb up ARGS` again on the same config and state directory
    /// (after the previous one exited) and waits until its admin API answers.
    pub fn restart_up_with(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "ebb up is still running");
        self.child = Some(spawn_up_with(Path::new(EBB), args, self.dir.path(), &self.config));
        self.wait_admin();
    }

    /// Starts `BINARY -f CONFIG up --takeover` beside the running `ebb up`;
    /// from now on the guard stops the new one, and the old one (which
    /// should exit on its own) is [`Ebb::wait_previous_exit`]'s.
    pub fn start_takeover(&mut self, binary: &Path) {
        let old = self.child.take().expect("ebb up is running");
        self.previous.push(old);
        self.child = Some(spawn_up_with(binary, &["--takeover"], self.dir.path(), &self.config));
    }

    /// Waits for the `ebb up` a takeover replaced to exit; its status.
    pub fn wait_previous_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.previous.last_mut().expect("a takeover was started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("the old ebb up did not exit within {timeout:?}\n{}", self.up_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to `ebb up`.
    pub fn signal_up(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.up_pid() as i32), signal).unwrap();
    }

    /// The admin API's bearer token, as `ebb up` wrote it in the state
    /// directory (`state/admin.token` next to the config of `fast_config`).
    pub fn token(&self) -> String {
        let path = self.dir.path().join("state").join("admin.token");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).trim().to_string()
    }

    /// An admin API call with `Authorization: Bearer <token>`.
    pub fn admin_call(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        let auth = format!("Bearer {}", self.token());
        http_with_headers(self.admin, method, path, body, &[("Authorization", &auth)])
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The pid of the `ebb up` process.
    pub fn up_pid(&self) -> u32 {
        self.child.as_ref().expect("ebb up is running").id()
    }

    pub fn up_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ebb-up.log")).unwrap_or_default()
    }

    /// Runs an ebb CLI command against this instance.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(EBB).arg("-f").arg(&self.config).args(args).output().expect("run ebb")
    }

    pub fn status(&self) -> serde_json::Value {
        let r = http(self.admin, "GET", "/api/v1/status", None).expect("status");
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        self.note_pids(&v);
        v
    }

    /// Remembers the replicas of a status document read some other way
    /// (`ebb status --json`, HTTPS), to kill them on drop if need be.
    pub fn note_pids(&self, v: &serde_json::Value) {
        let mut seen = self.seen_pids.borrow_mut();
        for s in v["services"].as_array().unwrap() {
            for r in s["replicas"].as_array().unwrap() {
                if let Some(pid) = r["pid"].as_u64() {
                    if !seen.contains(&(pid as u32)) {
                        seen.push(pid as u32);
                    }
                }
            }
        }
    }

    /// The `web` service's replicas in the status document.
    pub fn replicas(&self) -> Vec<serde_json::Value> {
        self.status()["services"][0]["replicas"].as_array().unwrap().clone()
    }

    /// Waits until exactly `n` replicas are in service and healthy.
    pub fn wait_in_service(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        wait_for(&format!("{n} replicas in service"), timeout, || {
            let replicas = self.replicas();
            let healthy: Vec<_> =
                replicas.iter().filter(|r| r["state"] == "in_service" && r["healthy"] == true).cloned().collect();
            (healthy.len() == n && replicas.len() == n).then_some(healthy)
        })
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        http(self.admin, "GET", "/api/v1/events", None).unwrap().json().as_array().unwrap().clone()
    }

    pub fn seen_pids(&self) -> Vec<u32> {
        self.seen_pids.borrow().clone()
    }

    /// How `ebb up` ended, if it has (a signal shows as such); `None` while
    /// it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// Waits for `ebb up` to exit and returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                panic!("ebb up did not exit within {timeout:?}\n{}", self.up_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An example config from the repository (`path` relative to its root)
/// with this test's own ports and state directory, and `image` in place of
/// the example's (container examples).
pub fn example_config(path: &str, image: Option<&str>, admin: SocketAddr, listen: SocketAddr) -> String {
    let text = std::fs::read_to_string(format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("state_dir") {
            out.push_str("state_dir = \"state\"\n");
        } else if trimmed.starts_with("listen") && out.trim_end().ends_with("[admin]") {
            out.push_str(&format!("listen = \"{admin}\"\n"));
        } else if trimmed.starts_with("listen") {
            out.push_str(&format!("listen = \"{listen}\"\n"));
        } else if let (true, Some(image)) = (trimmed.starts_with("image"), image) {
            out.push_str(&format!("image = \"{image}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Spawns `ebb -f CONFIG up`, its output appended to `DIR/ebb-up.log`.
pub fn spawn_up(dir: &Path, config: &Path) -> Child {
    spawn_up_under(&[], dir, config)
}

/// Spawns `BINARY -f CONFIG up ARGS`, its output appended to `DIR/ebb-up.log`.
pub fn spawn_up_with(binary: &Path, args: &[&str], dir: &Path, config: &Path) -> Child {
    spawn(&[], binary, args, dir, config)
}

/// [`spawn_up`] under a wrapper command (`prlimit ...`), which must exec
/// ebb so that the child is ebb itself.
pub fn spawn_up_under(wrapper: &[&str], dir: &Path, config: &Path) -> Child {
    spawn(wrapper, Path::new(EBB), &[], dir, config)
}

/// `[WRAPPER...] BINARY -f CONFIG up ARGS`, output appended to `DIR/ebb-up.log`.
fn spawn(wrapper: &[&str], binary: &Path, args: &[&str], dir: &Path, config: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("ebb-up.log")).unwrap();
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut c = Command::new(program);
            c.args(wrapper_args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    command
        .arg("-f")
        .arg(config)
        .arg("up")
        .args(args)
        .env("EBB_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn ebb up")
}

/// A replica's environment variable, read from `/proc/<pid>/environ`.
pub fn replica_env(pid: u64, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; count it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

impl Drop for Ebb {
    fn drop(&mut self) {
        for mut previous in self.previous.drain(..) {
            let _ = previous.kill();
            let _ = previous.wait();
        }
        if let Some(mut child) = self.child.take() {
            // SIGINT drains and stops the replicas too (SIGTERM would
            // leave them running for the next `ebb up`).
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.seen_pids.borrow().iter() {
            if pid_alive(*pid) {
                // Replicas run in their own process group (pgid = pid).
                // Not `kill -KILL -PID`: procps-ng 4.0.2 reads `-1234` as
                // signal options and sends kill(-1): every process.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        remove_control_groups(&self.dir.path().join("state"), &self.seen_pids.borrow());
    }
}

/// Removes the control groups ebb made for this state directory (an `ebb
/// up` killed with SIGKILL leaves them), once the replicas seen are gone.
/// Only this directory's: another test's ebb may be starting a replica in
/// a group of its own at this very moment.
fn remove_control_groups(state_dir: &Path, pids: &[u32]) {
    let Ok(state_dir) = state_dir.canonicalize() else { return };
    let base = ebb::driver::cgroup::parent_name(&state_dir);
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for hierarchy in ["", "unified", "cpu", "cpuacct", "memory", "pids"] {
        let parent = Path::new("/sys/fs/cgroup").join(hierarchy).join(&base);
        let Ok(children) = std::fs::read_dir(&parent) else { continue };
        for child in children.flatten().filter(|c| c.file_type().is_ok_and(|t| t.is_dir())) {
            let _ = std::fs::remove_dir(child.path());
        }
        let _ = std::fs::remove_dir(&parent);
    }
}

/// Reads a file's text, for debugging output in assertion messages.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Reads the first line of a child's stdout.
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    line
}

/// Clients sending `GET path` in a loop (pausing `pause` between requests),
/// counting every request and every failure (transport error or non-200).
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(target: SocketAddr, clients: usize, path: &'static str, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        match http(target, "GET", path, None) {
                            Ok(r) if r.status == 200 => {}
                            Ok(r) => failures.lock().unwrap().push(format!("{} {}", r.status, r.body)),
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load { stop, sent, failures, threads }
    }

    /// Keeps the clients sending until at least `count` requests went out
    /// in all (or `within` passed), so that a short episode (a deploy that
    /// fails its health gate in a second) is still judged on enough
    /// requests, its aftermath included.
    pub fn until_sent(&self, count: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.sent.load(Ordering::Relaxed) < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients; returns (requests sent, failures).
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (self.sent.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

/// Where a Python module can be imported, or why not.
pub fn python_with(module: &str) -> Result<(), String> {
    match Command::new("python3").args(["-c", &format!("import {module}")]).output() {
        Err(e) => Err(format!("python3 is not available ({e})")),
        Ok(o) if !o.status.success() => Err(format!("the Python module {module} is not installed")),
        Ok(_) => Ok(()),
    }
}

/// Parses Prometheus text with Python's prometheus_client (`openmetrics`:
/// its OpenMetrics parser) and returns `name{labels} value` lines.
pub fn parse_with_python(text: &str, openmetrics: bool, dir: &Path) -> Result<Vec<String>, String> {
    let file = dir.join(if openmetrics { "metrics.om.txt" } else { "metrics.prom.txt" });
    std::fs::write(&file, text).unwrap();
    let parser = if openmetrics { "prometheus_client.openmetrics.parser" } else { "prometheus_client.parser" };
    let script = format!(
        "import sys\nfrom {parser} import text_string_to_metric_families as parse\n\
         for f in parse(open(sys.argv[1]).read()):\n    \
             for s in f.samples:\n        \
                 labels = ','.join(f'{{k}}={{v}}' for k, v in sorted(s.labels.items()))\n        \
                 print(f'{{f.type}} {{s.name}}{{{{{{labels}}}}}} {{s.value}}')\n"
    );
    let out = Command::new("python3").arg("-c").arg(&script).arg(&file).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

//! Upgrading ebb itself and what carries over between runs: `ebb up
//! --takeover` from another binary under load (no failed request, no
//! refused connection, the same replica processes), `ebb up --fresh`, and
//! `ebb down --forget`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const BOOT: Duration = Duration::from_secs(30);

fn sorted_pids(replicas: &[serde_json::Value]) -> Vec<u64> {
    let mut pids: Vec<u64> = replicas.iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    pids.sort();
    pids
}

/// Clients that each send `GET /gtg` on a fresh connection in a loop and
/// count every request, every refused connection, every other failure,
/// and the longest request (connect to the end of the answer).
struct TimedLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    longest_us: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl TimedLoad {
    fn start(target: SocketAddr, clients: usize) -> TimedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, refused, longest_us) = (Arc::default(), Arc::<AtomicU64>::default(), Arc::<AtomicU64>::default());
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, sent, refused, longest_us, failures): (Arc<AtomicBool>, Arc<AtomicU64>, _, _, _) =
                    (stop.clone(), Arc::clone(&sent), refused.clone(), longest_us.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        let started = Instant::now();
                        let outcome = http(target, "GET", "/gtg", None);
                        longest_us.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                        match outcome {
                            Ok(r) if r.status == 200 => {}
                            Ok(r) => failures.lock().unwrap().push(format!("{} {}", r.status, r.body)),
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        TimedLoad { stop, sent, refused, longest_us, failures, threads }
    }

    /// Stops the clients: (requests, refused, other failures, longest).
    fn finish(self) -> (u64, u64, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.failures.lock().unwrap().clone(),
            Duration::from_micros(self.longest_us.load(Ordering::Relaxed)),
        )
    }
}

/// `ebb load` as a child process, killed if the test ends first.
struct LoadProcess(Option<std::process::Child>);

impl LoadProcess {
    /// `ebb load` with `workers` keep-alive connections for `duration`.
    fn start(target: SocketAddr, workers: usize, duration: &str) -> LoadProcess {
        let child = std::process::Command::new(EBB)
            .args(["load", "-c", &workers.to_string(), "-z", duration, "--json", &format!("http://{target}/gtg")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ebb load");
        LoadProcess(Some(child))
    }

    /// Its JSON summary, once it has finished.
    fn summary(mut self) -> serde_json::Value {
        let out = self.0.take().unwrap().wait_with_output().unwrap();
        assert!(out.status.success(), "ebb load failed: {}", String::from_utf8_lossy(&out.stdout));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for LoadProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn takeover_by_a_new_binary_under_load_fails_no_request_and_restarts_no_replica() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 4, desired = 2 }", ""));
    let before = ebb.wait_in_service(2, BOOT);
    let pids = sorted_pids(&before);
    let old_pid = ebb.up_pid();
    let last_seq_before = ebb.events().iter().filter_map(|e| e["seq"].as_u64()).max().unwrap();
    let token_before = ebb.token();
    // The "new version": a copy of this build elsewhere.
    let new_binary = ebb.dir.path().join("ebb-new");
    std::fs::copy(EBB, &new_binary).unwrap();

    // Two kinds of clients: a new connection per request, and `ebb load`'s
    // keep-alive connections (told to reconnect by `Connection: close`).
    let load = TimedLoad::start(ebb.listen, 4);
    let keep_alive = LoadProcess::start(ebb.listen, 4, "4s");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    ebb.start_takeover(&new_binary);
    let old_exit = ebb.wait_previous_exit(Duration::from_secs(30));
    let old_gone = started.elapsed();
    ebb.wait_admin();
    let new_pid = ebb.up_pid();
    let after = ebb.wait_in_service(2, BOOT);
    // Keep the load on the new ebb for a while.
    std::thread::sleep(Duration::from_millis(1000));
    let (sent, refused, failures, longest) = load.finish();
    let summary = keep_alive.summary();
    eprintln!(
        "takeover under load: {sent} requests (4 clients, a new connection each), {} failed, {refused} refused, longest request {longest:?}; old ebb exited {old_gone:?} after the takeover began",
        failures.len()
    );
    eprintln!(
        "takeover under load: ebb load (4 keep-alive connections, 4 s): {} requests, {} errors {}, longest request {} ms",
        summary["requests"], summary["errors"], summary["error_kinds"], summary["latency_ms"]["max"]
    );

    assert!(old_exit.success(), "the old ebb exits cleanly: {old_exit}\n{}", ebb.up_log());
    assert!(!pid_alive(old_pid), "the old ebb has exited");
    assert_ne!(new_pid, old_pid);
    assert_eq!(std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap(), new_binary.canonicalize().unwrap());
    assert!(sent > 100, "clients were sending throughout ({sent})");
    assert_eq!(refused, 0, "no connection refused");
    assert!(failures.is_empty(), "{} of {sent} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(summary["requests"].as_u64().unwrap() > 100, "{summary}");
    assert_eq!(summary["errors"], 0, "keep-alive clients are handed over without an error: {summary}");
    assert_eq!(sorted_pids(&after), pids, "the same replica processes, not restarted");
    assert_eq!(ebb.token(), token_before, "the admin token stays");

    let events = ebb.events();
    let upgraded = events.iter().find(|e| e["kind"] == "ebb_upgraded").unwrap_or_else(|| panic!("{events:#?}"));
    let reason = upgraded["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("(pid {new_pid}) took over from ebb")) && reason.contains(&format!("(pid {old_pid})")),
        "{reason}"
    );
    assert!(upgraded["seq"].as_u64().unwrap() > last_seq_before, "the event log continues: {upgraded}");
    assert!(events.iter().any(|e| e["seq"].as_u64() == Some(last_seq_before)), "the old events are kept");
    assert_eq!(events.iter().filter(|e| e["kind"] == "replica_adopted").count(), 2, "{events:#?}");
    assert!(
        !events.iter().any(|e| e["kind"] == "replica_stopped"
            || e["kind"] == "replica_started" && e["seq"].as_u64().unwrap() > last_seq_before),
        "nothing stopped or started: {events:#?}"
    );
    let log = ebb.up_log();
    assert!(log.contains("ebb: --takeover: ebb"), "{log}");
    assert!(log.contains("serves the fleet now (its replicas kept running)"), "{log}");
    // The new ebb answers takeovers in turn, on a private socket.
    use std::os::unix::fs::PermissionsExt;
    let socket = std::fs::metadata(ebb.dir.path().join("state/takeover.sock")).expect("the new ebb's takeover socket");
    assert_eq!(socket.permissions().mode() & 0o777, 0o600);

    // The new ebb is an ordinary one: `ebb down` stops the fleet.
    let down = ebb.cli(&["down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    ebb.wait_exit(Duration::from_secs(30));
    for pid in pids {
        assert!(!pid_alive(pid as u32), "replica {pid} stopped by ebb down");
    }
}

#[test]
fn takeover_without_a_running_ebb_says_so_and_starts_normally() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 2, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);
    ebb.signal_up(nix::sys::signal::Signal::SIGINT);
    ebb.wait_exit(Duration::from_secs(30));
    ebb.restart_up_with(&["--takeover"]);
    ebb.wait_in_service(1, BOOT);
    let log = ebb.up_log();
    assert!(log.contains("ebb: --takeover: no ebb is running on"), "{log}");
    assert!(log.contains("starting normally"), "{log}");
}

/// `ebb up` says where desired capacity comes from; `--fresh` starts from
/// the file and retires the adopted replicas beyond it the ordinary way.
#[test]
fn desired_capacity_is_said_at_start_and_fresh_starts_from_the_file() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 4, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);
    assert!(ebb.up_log().contains("(desired 1 (from the file), min 1, max 4)"), "{}", ebb.up_log());
    assert_eq!(ebb.admin_call("PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 3}"#)).status, 200);
    let three = sorted_pids(&ebb.wait_in_service(3, BOOT));

    ebb.signal_up(nix::sys::signal::Signal::SIGTERM);
    ebb.wait_exit(Duration::from_secs(30));
    let seen = ebb.up_log().len();
    ebb.restart_up();
    ebb.wait_in_service(3, BOOT);
    let log = ebb.up_log()[seen..].to_string();
    assert!(
        log.contains("desired 3 (kept from the last run; the file says 1 — `ebb up --fresh` to start from the file)"),
        "{log}"
    );

    ebb.signal_up(nix::sys::signal::Signal::SIGTERM);
    ebb.wait_exit(Duration::from_secs(30));
    let seen = ebb.up_log().len();
    ebb.restart_up_with(&["--fresh"]);
    let one = ebb.wait_in_service(1, BOOT);
    let log = ebb.up_log()[seen..].to_string();
    assert!(log.contains("desired 1 (from the file, --fresh; the last run left 3)"), "{log}");
    assert!(three.contains(&one[0]["pid"].as_u64().unwrap()), "the one kept is an adopted replica");
    assert_eq!(ebb.status()["services"][0]["desired"], 1);
    let events = ebb.events();
    assert!(
        events.iter().any(|e| e["kind"] == "scaled" && e["reason"].as_str().unwrap().starts_with("ebb up --fresh")),
        "{events:#?}"
    );
    wait_for("the two extra replicas to be stopped", BOOT, || {
        three.iter().filter(|p| pid_alive(**p as u32)).count().eq(&1).then_some(())
    });
}

/// `ebb down --forget` stops the fleet and forgets it: the next `ebb up`
/// starts from the file; the admin token and the events stay.
#[test]
fn down_forget_stops_the_fleet_and_forgets_desired_capacity() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 4, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);
    assert_eq!(ebb.admin_call("PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 2}"#)).status, 200);
    let pids = sorted_pids(&ebb.wait_in_service(2, BOOT));
    let token = ebb.token();
    let last_seq = ebb.events().iter().filter_map(|e| e["seq"].as_u64()).max().unwrap();

    let down = ebb.cli(&["down", "--forget"]);
    let stdout = String::from_utf8_lossy(&down.stdout);
    assert!(down.status.success(), "{stdout}{}", String::from_utf8_lossy(&down.stderr));
    assert!(stdout.contains("ebb: forgot the fleet: 1 service record (desired capacity, versions)"), "{stdout}");
    assert!(stdout.contains("the admin token, events and metric history are kept"), "{stdout}");
    ebb.wait_exit(Duration::from_secs(30));
    for pid in &pids {
        assert!(!pid_alive(*pid as u32), "replica {pid} stopped");
    }

    let seen = ebb.up_log().len();
    ebb.restart_up();
    ebb.wait_in_service(1, BOOT);
    assert!(ebb.up_log()[seen..].contains("(desired 1 (from the file), min 1, max 4)"), "{}", ebb.up_log());
    assert_eq!(ebb.status()["services"][0]["desired"], 1);
    assert_eq!(ebb.token(), token, "the admin token is kept");
    assert!(ebb.events().iter().any(|e| e["seq"].as_u64() == Some(last_seq)), "the events are kept");
}

/// An ebb that holds the state directory but does not answer takeovers
/// (an older ebb: here its socket file is removed) is named, and left
/// serving: nothing was handed over.
#[test]
fn takeover_of_an_ebb_that_does_not_answer_is_refused_with_what_to_do() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 2, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);
    std::fs::remove_file(ebb.dir.path().join("state/takeover.sock")).unwrap();
    let out = std::process::Command::new(EBB).arg("-f").arg(&ebb.config).args(["up", "--takeover"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("--takeover: an ebb (pid {}) holds", ebb.up_pid()))
            && stderr.contains("does not answer on")
            && stderr.contains("stop it with SIGTERM"),
        "{stderr}"
    );
    assert_eq!(http(ebb.listen, "GET", "/gtg", None).unwrap().status, 200, "the running ebb still serves");
}

//! The seed stories as their authors ran them, with real clients (ab, hey)
//! against the time-compressed examples: under overload the fleet never
//! shrinks while requests queue, grows on the demand the balancer sees,
//! stops when the host is full, and says why at every step.
//!
//! Each scenario keeps the 2-core machine busy on purpose, so they run one
//! at a time. Every process they start is a child of the test (ab, hey,
//! `ebb load`) or a replica of the `Ebb` guard, which stops everything on
//! drop.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn time_of(event: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(event["time"].as_str().unwrap()).unwrap()
}

/// Scale-ins recorded between `from` and `until`.
fn scale_ins_between(events: &[serde_json::Value], from: SystemTime, until: SystemTime) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "scaled" && e["to"].as_u64() < e["from"].as_u64())
        .filter(|e| (from..=until).contains(&time_of(e)))
        .cloned()
        .collect()
}

/// Polls the status document four times a second while a scenario runs:
/// the fleet's timeline, with what held it and what the balancer saw.
struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<serde_json::Value>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(admin: std::net::SocketAddr) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(r) = http(admin, "GET", "/api/v1/status", None) {
                    if r.status == 200 {
                        v.lock().unwrap().push(r.json()["services"][0].clone());
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Watch { stop, seen, thread: Some(thread) }
    }

    fn finish(mut self) -> Vec<serde_json::Value> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap().clone()
    }

    /// One line per change of (desired, holding), for failure messages and
    /// the test log.
    fn story(seen: &[serde_json::Value]) -> String {
        let mut out = Vec::new();
        let mut last = String::new();
        for s in seen {
            let line = format!("desired {} in service {} holding {}", s["desired"], s["in_service"], s["holding"]);
            if line != last {
                out.push(line.clone());
                last = line;
            }
        }
        out.join("\n")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A figure from ab's report: `Complete requests:      100000`.
fn ab_figure(report: &str, label: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.trim_start().starts_with(label))?;
    line[line.find(':')? + 1..].split_whitespace().next()?.parse().ok()
}

/// A percentile row of ab's report: `  99%   4700`.
fn ab_percentile(report: &str, p: &str) -> Option<f64> {
    report.lines().find(|l| l.trim_start().starts_with(p))?.split_whitespace().nth(1)?.parse().ok()
}

/// The number hey prints on a line of its summary: `  Requests/sec: 97.8`.
fn hey_figure(report: &str, label: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.trim_start().starts_with(label))?;
    line[line.find(':')? + 1..].split_whitespace().next()?.parse().ok()
}

fn require(tool: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().status.success();
    assert!(found, "{tool} is not installed: scripts/install-test-deps installs it");
}

/// Story S3 as its author ran it: `ab -n 100000 -c 1000` against the fast
/// example from one replica. A thousand clients against 8 slots per
/// replica: requests queue, and the fleet grows on that demand. No replica
/// is killed for being busy, and the fleet never shrinks during the burst.
#[test]
fn s3_ab_burst_from_one_replica_grows_on_demand_and_never_shrinks_during_it() {
    let _serial = one_at_a_time();
    require("ab");
    let ebb = Ebb::start(|admin, listen| example_config("examples/s3-ecs-django/ebb.fast.toml", None, admin, listen));
    ebb.wait_in_service(1, Duration::from_secs(30));
    let watch = Watch::start(ebb.admin);
    let started = SystemTime::now();
    let out = Command::new("ab")
        .args(["-q", "-r", "-s", "30", "-t", "20", "-n", "100000", "-c", "1000"])
        .arg(format!("http://{}/work?cpu_ms=10", ebb.listen))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let ended = SystemTime::now();
    std::thread::sleep(Duration::from_secs(1));
    let seen = watch.finish();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ab failed:\n{report}");
    let complete = ab_figure(&report, "Complete requests").unwrap();
    let rate = ab_figure(&report, "Requests per second").unwrap();
    eprintln!(
        "s3 ab -c 1000 from 1: {complete} requests, {rate} req/s, p50 {:?} ms, p99 {:?} ms, non-2xx {:?}\n{}",
        ab_percentile(&report, "50%"),
        ab_percentile(&report, "99%"),
        ab_figure(&report, "Non-2xx responses"),
        Watch::story(&seen)
    );

    let events = ebb.events();
    for kind in ["replica_unhealthy", "replica_exited"] {
        assert!(!events.iter().any(|e| e["kind"] == kind), "a busy replica was {kind}: {events:#?}");
    }
    let grew: Vec<_> =
        events.iter().filter(|e| e["kind"] == "scaled" && e["to"].as_u64() > e["from"].as_u64()).collect();
    assert!(!grew.is_empty(), "the queue says the fleet must grow\n{}", Watch::story(&seen));
    assert!(
        events.iter().any(|e| e["kind"] == "saturated" && e["reason"].as_str().unwrap().contains("requests queued")),
        "saturation is an event with its numbers: {events:#?}"
    );
    let shrank = scale_ins_between(&events, started, ended);
    assert!(shrank.is_empty(), "scale-in during the burst: {shrank:#?}\n{}", Watch::story(&seen));
    assert!(
        seen.iter().any(|s| s["saturation"]["saturated"] == true && s["saturation"]["queued"].as_u64() > Some(0)),
        "status showed the queue"
    );
}

/// Story S3's second run: `hey -z 20s -c 1000` starting from 4 replicas.
/// A CPU reading that dips while the host juggles a thousand connections
/// must not shrink a fleet whose balancer holds a queue.
#[test]
fn s3_hey_burst_from_four_replicas_never_shrinks_during_it() {
    let _serial = one_at_a_time();
    require("hey");
    let ebb = Ebb::start(|admin, listen| example_config("examples/s3-ecs-django/ebb.fast.toml", None, admin, listen));
    ebb.wait_in_service(1, Duration::from_secs(30));
    let scaled = ebb.cli(&["scale", "web", "4"]);
    assert!(scaled.status.success(), "{}", String::from_utf8_lossy(&scaled.stderr));
    ebb.wait_in_service(4, Duration::from_secs(30));
    let watch = Watch::start(ebb.admin);
    let started = SystemTime::now();
    let out = Command::new("hey")
        .args(["-z", "20s", "-c", "1000", "-t", "30"])
        .arg(format!("http://{}/work?cpu_ms=10", ebb.listen))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let ended = SystemTime::now();
    let seen = watch.finish();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hey failed:\n{report}");
    eprintln!(
        "s3 hey -c 1000 from 4: {:?} req/s\n{}\n{}",
        hey_figure(&report, "Requests/sec"),
        report.lines().filter(|l| l.contains("% in") || l.contains("[")).collect::<Vec<_>>().join("\n"),
        Watch::story(&seen)
    );
    let events = ebb.events();
    for kind in ["replica_unhealthy", "replica_exited"] {
        assert!(!events.iter().any(|e| e["kind"] == kind), "a busy replica was {kind}: {events:#?}");
    }
    // From the first second of load (the manual scale's own cooldown may
    // end just before it) to the end of the burst.
    let shrank = scale_ins_between(&events, started + Duration::from_secs(1), ended);
    assert!(shrank.is_empty(), "scale-in during the burst: {shrank:#?}\n{}", Watch::story(&seen));
    assert!(seen.iter().all(|s| s["desired"].as_u64() >= Some(4)), "{}", Watch::story(&seen));
}

/// Process groups of the service's replicas, as `ebb status` lists them.
fn replica_pids(ebb: &Ebb) -> Vec<i32> {
    ebb.replicas().iter().filter_map(|r| r["pid"].as_i64()).map(|p| p as i32).collect()
}

/// Resumes every replica it stopped, even when the test fails midway.
struct Thaw(Vec<i32>);

impl Drop for Thaw {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT);
        }
    }
}

/// A host stall, made reproducible: every replica frozen for 0.6 s of each
/// second (SIGSTOP / SIGCONT of its process group; short enough that no
/// health check fails 5 times in a row). CPU readings drop to about half
/// while requests queue at the balancer. Before, the CPU policy shrank the
/// fleet in the middle of this; now it holds, and says why.
#[test]
fn a_host_stall_that_queues_requests_never_shrinks_the_fleet() {
    let _serial = one_at_a_time();
    let ebb = Ebb::start(|admin, listen| example_config("examples/s3-ecs-django/ebb.fast.toml", None, admin, listen));
    ebb.wait_in_service(1, Duration::from_secs(30));
    assert!(ebb.cli(&["scale", "web", "5"]).status.success());
    ebb.wait_in_service(5, Duration::from_secs(30));
    // 60 clients against 5 × 8 slots: a queue of about 20 at all times.
    let load = Load::start(ebb.listen, 60, "/work?cpu_ms=10", Duration::ZERO);
    std::thread::sleep(Duration::from_secs(4));
    let watch = Watch::start(ebb.admin);
    let pids = replica_pids(&ebb);
    assert_eq!(pids.len(), 5);
    let thaw = Thaw(pids.clone());
    let stall_started = SystemTime::now();
    let until = Instant::now() + Duration::from_secs(15);
    let mut lowest_cpu = f64::MAX;
    while Instant::now() < until {
        for &pid in &pids {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP);
        }
        std::thread::sleep(Duration::from_millis(600));
        for &pid in &pids {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT);
        }
        std::thread::sleep(Duration::from_millis(400));
        let cpus: Vec<f64> = ebb.replicas().iter().filter_map(|r| r["cpu"].as_f64()).collect();
        if !cpus.is_empty() {
            lowest_cpu = lowest_cpu.min(cpus.iter().sum::<f64>() / cpus.len() as f64);
        }
    }
    drop(thaw);
    let stall_ended = SystemTime::now();
    let (sent, failures) = load.finish();
    let seen = watch.finish();
    eprintln!(
        "stall: {sent} requests, {} failed, lowest mean cpu {lowest_cpu:.0}%\n{}",
        failures.len(),
        Watch::story(&seen)
    );

    let events = ebb.events();
    let shrank = scale_ins_between(&events, stall_started, stall_ended);
    assert!(shrank.is_empty(), "scale-in during the stall: {shrank:#?}\n{}", Watch::story(&seen));
    assert!(seen.iter().all(|s| s["desired"] == 5), "{}", Watch::story(&seen));
    assert!(lowest_cpu < 70.0, "the stall made CPU readings drop (lowest mean {lowest_cpu:.0}%)");
    assert!(
        seen.iter().any(|s| s["holding"].as_str().is_some_and(|h| h.contains("saturat"))),
        "status said the fleet is held by saturation\n{}",
        Watch::story(&seen)
    );
    for kind in ["replica_unhealthy", "replica_exited"] {
        assert!(!events.iter().any(|e| e["kind"] == kind), "a frozen replica was {kind}: {events:#?}");
    }
}

/// Story S2 as its author ran it, stepping `hey -q 5`, `-q 10`, `-q 20`
/// (hey's 50 workers) against the fast example's CPU endpoint. The fleet
/// grows; when eight quarter-core replicas are the whole 2-core host it
/// stops and says *host full*; it never shrinks under load; it shrinks
/// back after.
#[test]
fn s2_hey_steps_grow_the_fleet_until_the_host_is_full_and_shrink_it_after() {
    let _serial = one_at_a_time();
    require("hey");
    let ebb =
        Ebb::start(|admin, listen| example_config("examples/s2-http-scale-out/ebb.fast.toml", None, admin, listen));
    ebb.wait_in_service(1, Duration::from_secs(30));
    let watch = Watch::start(ebb.admin);
    let started = SystemTime::now();
    let mut rates = Vec::new();
    for q in ["5", "10", "20"] {
        let out = Command::new("hey")
            .args(["-q", q, "-z", "15s", "-t", "30"])
            .arg(format!("http://{}/work?cpu_ms=20", ebb.listen))
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "hey -q {q} failed:\n{report}");
        rates.push((q, hey_figure(&report, "Requests/sec")));
    }
    let ended = SystemTime::now();
    let status = ebb.status();
    let service = &status["services"][0];
    let max = service["max"].as_u64().unwrap();
    let peak = ebb.events().iter().filter_map(|e| e["to"].as_u64()).max().unwrap_or(1);
    eprintln!(
        "s2 hey -q 5/10/20 -c 50: served {rates:?}; peak desired {peak}\n{}",
        Watch::story(&watch.seen.lock().unwrap())
    );

    let events = ebb.events();
    let shrank = scale_ins_between(&events, started, ended);
    assert!(shrank.is_empty(), "scale-in under load: {shrank:#?}");
    assert!(peak > 1, "the fleet grew");
    let host_full = events.iter().find(|e| e["kind"] == "host_full");
    match host_full {
        Some(e) => {
            let reason = e["reason"].as_str().unwrap();
            assert!(reason.starts_with("host full: "), "{reason}");
            assert!(reason.contains("more local replicas would not add capacity"), "{reason}");
        }
        // A host with more cores than this machine kind may hold max.
        None => assert_eq!(peak, max, "neither host full nor max reached: {events:#?}"),
    }

    // After the load: back to min.
    wait_for("the fleet to shrink back to 1", Duration::from_secs(90), || {
        (ebb.status()["services"][0]["desired"] == 1).then_some(())
    });
    let seen = watch.finish();
    if host_full.is_some() {
        assert!(
            seen.iter().any(|s| s["holding"].as_str().is_some_and(|h| h.starts_with("host full"))),
            "status said host full\n{}",
            Watch::story(&seen)
        );
    }
}

/// `ebb validate` warns, with the numbers and the fix, when a web service
/// can ask for more CPUs than the host has (S2's max 20 × 0.25 = 5 CPUs).
#[test]
fn validate_warns_when_a_web_service_can_outgrow_the_host() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let file = format!("{}/../../examples/s2-http-scale-out/ebb.fast.toml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(EBB).args(["validate", &file]).output().unwrap();
    assert!(out.status.success(), "a warning, not an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cores >= 5 {
        println!("SKIP validate warning: this host has {cores} CPUs, S2's 5 fit");
        assert!(!stderr.contains("may ask for"), "{stderr}");
        return;
    }
    assert!(
        stderr.contains(&format!(
            "warning: service api may ask for 5 CPUs at max (replicas.max 20 × cpu 0.25) on this host of {cores}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("or run it on Swarm"), "{stderr}");
}

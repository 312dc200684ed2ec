//! End to end: `ebb up` runs a fleet of demo-app replicas behind its balancer;
//! what a user sees through the balancer, `ebb status`, `ebb scale` and
//! `ebb down`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

const BOOT: Duration = Duration::from_secs(30);

#[test]
fn a_fleet_of_two_serves_the_demo_app_contracts_through_the_balancer() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 2, max = 4, desired = 2 }", ""));
    let replicas = ebb.wait_in_service(2, BOOT);
    let ids: Vec<String> = replicas.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let ports: Vec<u16> = replicas.iter().map(|r| r["port"].as_u64().unwrap() as u16).collect();
    let lb = ebb.listen;

    let r = http(lb, "GET", "/", None).unwrap();
    assert_eq!((r.status, r.json()), (400, serde_json::json!({"status": "invalid request"})));

    let r = http(lb, "GET", "/gtg", None).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    // Both replicas answer through the balancer, each with its own id.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = http(lb, "GET", "/gtg?details", None).unwrap();
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["connected"], "true");
        seen.insert(v["instance-id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ids.iter().cloned().collect(), "the balancer spreads requests over both replicas");

    // POST through one replica, GET through the other: one shared store.
    let first: std::net::SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let second: std::net::SocketAddr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
    let r = http(first, "POST", "/candidate/John%20Smith", Some("")).unwrap();
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"CandidateName": "John Smith"})));
    let r = http(second, "GET", "/candidate/John%20Smith", None).unwrap();
    assert_eq!((r.status, r.json()), (200, serde_json::json!([{"CandidateName": "John Smith"}])));
    let r = http(lb, "GET", "/candidates", None).unwrap();
    assert_eq!((r.status, r.json()), (200, serde_json::json!([{"CandidateName": "John Smith"}])));
    let r = http(lb, "GET", "/candidate/Nobody", None).unwrap();
    assert_eq!((r.status, r.body.trim()), (404, "Not Found"));

    let r = http(lb, "GET", "/api", None).unwrap();
    assert_eq!(r.status, 200);
    let api = r.json();
    let object = api.as_object().unwrap();
    assert_eq!(object.len(), 52);
    for i in 0..52 {
        let letter = object[&i.to_string()].as_str().unwrap();
        assert!(letter.len() == 1 && letter.chars().all(|c| c.is_ascii_alphabetic()), "{letter:?}");
    }

    // `ebb status` shows the table a user reads.
    let out = ebb.cli(&["status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    for header in ["REPLICA", "STATE", "HEALTH", "PID", "PORT", "AGE", "CPU", "IN-FLIGHT", "REQUESTS", "PROTECTED"] {
        assert!(table.contains(header), "{table}");
    }
    for id in &ids {
        assert!(table.contains(id.as_str()), "{table}");
    }
    assert!(table.contains("in_service") && table.contains("healthy"), "{table}");

    // `ebb status --json` has the documented shape.
    let out = ebb.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let service = &v["services"][0];
    assert_eq!(service["name"], "web");
    assert_eq!(service["desired"], 2);
    assert_eq!(service["in_service"], 2);
    let requests: u64 = service["replicas"].as_array().unwrap().iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert!(requests >= 45, "requests served are counted per replica: {requests}");
    for r in service["replicas"].as_array().unwrap() {
        for key in ["id", "state", "healthy", "pid", "port", "version", "in_flight", "requests"] {
            assert!(r.get(key).is_some(), "replica lacks {key}: {r}");
        }
    }
}

#[test]
fn a_replica_killed_with_sigkill_leaves_the_rotation_and_is_replaced_without_client_errors() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 2, max = 4, desired = 2 }", ""));
    let replicas = ebb.wait_in_service(2, BOOT);
    let victim_id = replicas[0]["id"].as_str().unwrap().to_string();
    let victim_pid = replicas[0]["pid"].as_u64().unwrap() as u32;

    // A client doing idempotent GETs in a loop, counting every failure.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let client = {
        let (stop, sent, failures, lb) = (stop.clone(), sent.clone(), failures.clone(), ebb.listen);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match http(lb, "GET", "/gtg?details", None) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.lock().unwrap().push(format!("{} {}", r.status, r.body)),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let status = std::process::Command::new("kill").args(["-KILL", &victim_pid.to_string()]).status().unwrap();
    assert!(status.success());

    // Replaced: the victim gone, two replicas in service again.
    wait_for("the killed replica to leave", BOOT, || {
        ebb.replicas().iter().all(|r| r["id"] != victim_id.as_str()).then_some(())
    });
    ebb.wait_in_service(2, BOOT);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    let failures = failures.lock().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    eprintln!("kill -9 under GET load: {sent} requests sent, {} failed", failures.len());
    assert!(sent > 50, "the client kept sending ({sent})");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let events = ebb.events();
    let exited = events
        .iter()
        .find(|e| e["kind"] == "replica_exited" && e["replica"] == victim_id.as_str())
        .unwrap_or_else(|| panic!("no exit event for {victim_id}: {events:#?}"));
    assert!(exited["reason"].as_str().unwrap().contains("signal 9"), "{exited}");
    assert!(!pid_alive(victim_pid));
}

/// A replica frozen with requests in hand looks like one on a lost node: no
/// answer, no reset. Once its health checks fail, the GETs it holds go to
/// the other replica at once, long before `stop_timeout` (which would kill
/// it and reset them) or `upstream_timeout` (a 504) would end them.
#[test]
fn gets_held_by_a_replica_that_stops_answering_are_answered_by_another_once_it_fails() {
    let ebb = Ebb::start(|admin, listen| {
        let extra = "[service.web.proxy]\nupstream_timeout = \"30s\"\n";
        fast_config(admin, listen, "{ min = 2, max = 2, desired = 2 }", extra)
            .replace("stop_timeout = \"5s\"", "stop_timeout = \"20s\"")
    });
    let replicas = ebb.wait_in_service(2, BOOT);
    let victim_id = replicas[0]["id"].as_str().unwrap().to_string();
    let victim_pid = replicas[0]["pid"].as_u64().unwrap().to_string();
    /// Thaws the frozen replica however the test ends (ebb's stop waits
    /// for it otherwise).
    struct Thaw(String);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-CONT", "--", &format!("-{}", self.0)]).status();
        }
    }
    let frozen = std::process::Command::new("kill").args(["-STOP", "--", &format!("-{victim_pid}")]).status().unwrap();
    let _thaw = Thaw(victim_pid);
    assert!(frozen.success());

    // Four clients doing GETs one after another until the frozen replica is
    // out: each that lands on it waits, held.
    let started = std::time::Instant::now();
    let out = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (out, lb) = (out.clone(), ebb.listen);
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !out.load(Ordering::Relaxed) {
                    let sent = std::time::Instant::now();
                    let answer = http(lb, "GET", "/gtg?details", None).map(|r| (r.status, r.body));
                    answers.push((answer.map_err(|e| e.to_string()), sent.elapsed()));
                }
                answers
            })
        })
        .collect();
    wait_for("the frozen replica out of the rotation", Duration::from_secs(10), || {
        let replicas = ebb.replicas();
        (!replicas.iter().any(|r| r["id"] == victim_id.as_str() && r["healthy"] == true)).then_some(())
    });
    out.store(true, Ordering::Relaxed);
    let answers: Vec<_> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    eprintln!(
        "frozen replica: {} GETs, slowest {:.2} s, all done {:.2} s after the freeze",
        answers.len(),
        slowest.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for (answer, took) in &answers {
        let (status, body) = answer.as_ref().unwrap_or_else(|e| panic!("a GET failed after {took:?}: {e}"));
        assert_eq!(*status, 200, "{body}");
        assert!(!body.contains(victim_id.as_str()), "the frozen replica answered: {body}");
    }
    // Some GET was held by the frozen replica (it took its health checks'
    // time), and none waited for the stop or the timeout.
    assert!(slowest > Duration::from_millis(300), "no GET was held: {answers:?}");
    assert!(slowest < Duration::from_secs(5), "a held GET waited {slowest:?}");
}

#[test]
fn ebb_down_drains_and_leaves_no_replica_process_behind() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 4, desired = 3 }", ""));
    ebb.wait_in_service(3, BOOT);
    let pids = ebb.seen_pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|p| pid_alive(*p)));

    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"));
    assert_eq!(ebb.wait_exit(Duration::from_secs(30)), Some(0), "{}", ebb.up_log());
    for pid in pids {
        assert!(!pid_alive(pid), "replica pid {pid} is still running after `ebb down`");
    }
    // And the balancer no longer listens.
    assert!(http(ebb.listen, "GET", "/gtg", None).is_err());
    let out = ebb.cli(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"), "{}", String::from_utf8_lossy(&out.stderr));
    // `ebb down` again: the fleet is already down, which is not an error.
    let again = ebb.cli(&["down"]);
    let said = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(again.status.success(), "{said}{}", String::from_utf8_lossy(&again.stderr));
    assert!(said.contains("nothing to stop (the fleet is already down)"), "{said}");
}

#[test]
fn sigint_to_ebb_up_stops_everything_too() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 2, desired = 2 }", ""));
    ebb.wait_in_service(2, BOOT);
    let pids = ebb.seen_pids();
    ebb.signal_up(nix::sys::signal::Signal::SIGINT);
    assert_eq!(ebb.wait_exit(Duration::from_secs(30)), Some(0));
    for pid in pids {
        assert!(!pid_alive(pid), "replica pid {pid} survived SIGINT to ebb up");
    }
    let log = ebb.up_log();
    assert!(
        log.contains("ebb: stopping (SIGINT): balancers finish in-flight requests, then replicas drain and stop"),
        "{log}"
    );
    assert!(log.contains("ebb: stopped"), "{log}");
}

/// SIGTERM (systemctl stop/restart, `kill`) stops ebb only: the replicas
/// keep running, `ebb down` without an ebb says where they are, and the
/// next `ebb up` adopts the very same processes.
#[test]
fn sigterm_stops_ebb_only_and_the_next_ebb_up_adopts_the_same_replicas() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 3, desired = 2 }", ""));
    let before = ebb.wait_in_service(2, BOOT);
    let mut pids: Vec<u64> = before.iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    pids.sort();
    ebb.signal_up(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(ebb.wait_exit(Duration::from_secs(30)), Some(0), "{}", ebb.up_log());
    for pid in &pids {
        assert!(pid_alive(*pid as u32), "replica pid {pid} did not survive SIGTERM to ebb up");
    }
    let log = ebb.up_log();
    assert!(log.contains("ebb: stopping ebb only (SIGTERM)"), "{log}");
    assert!(log.contains("ebb: exited; the replicas keep running: the next `ebb up` adopts them"), "{log}");
    // `ebb down` with no ebb running says what was left and how to stop it.
    let down = ebb.cli(&["down"]);
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(!down.status.success(), "{stderr}");
    assert!(stderr.contains("left 2 replicas") && stderr.contains("`ebb up` adopts them, then `ebb down`"), "{stderr}");

    ebb.restart_up();
    let after = ebb.wait_in_service(2, BOOT);
    let mut pids_after: Vec<u64> = after.iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    pids_after.sort();
    assert_eq!(pids_after, pids, "the same processes, adopted, not restarted");
    let events = ebb.events();
    let left = events.iter().find(|e| e["kind"] == "fleet_left").unwrap_or_else(|| panic!("{events:#?}"));
    assert!(left["reason"].as_str().unwrap().contains("leaves 2 replicas running"), "{left}");
    assert_eq!(events.iter().filter(|e| e["kind"] == "replica_adopted").count(), 2, "{events:#?}");
    assert!(!events.iter().any(|e| e["kind"] == "replica_stopped"), "nothing was stopped: {events:#?}");
}

#[test]
fn scale_sets_desired_within_bounds_and_records_an_event() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 3, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);

    let out = ebb.cli(&["scale", "web", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web: desired 1 -> 3");
    // The status asked for right after the answer already shows it (the
    // controller answers once it has published the change).
    let status = ebb.status();
    let web = status["services"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap();
    assert_eq!(web["desired"], 3, "{web}");
    ebb.wait_in_service(3, BOOT);

    let out = ebb.cli(&["scale", "web", "10"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web: desired 3 -> 3; capped: max 3 reached (wanted 10)");

    let out = ebb.cli(&["scale", "web", "1"]);
    assert!(out.status.success());
    ebb.wait_in_service(1, BOOT);

    let out = ebb.cli(&["scale", "nosuch", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named \"nosuch\""));

    let scaled: Vec<(u64, u64)> = ebb
        .events()
        .iter()
        .filter(|e| e["kind"] == "scaled")
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
        .collect();
    assert_eq!(scaled, vec![(1, 3), (3, 3), (3, 1)]);
    let events = ebb.cli(&["events", "web"]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(text.contains("scaled") && text.contains("desired 1 -> 3: manual (ebb scale)"), "{text}");
    assert!(text.contains("desired 3 -> 3: manual (ebb scale); capped: max 3 reached (wanted 10)"), "{text}");
    assert!(text.contains("replica_draining") && text.contains("scale-in"), "{text}");
}

#[test]
fn a_command_that_keeps_crashing_backs_off_instead_of_looping_hot() {
    let ebb = Ebb::start(|admin, listen| {
        fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", "")
            .replace("{ebb} demo-app --port $PORT", "echo boom >&2; exit 3")
    });
    std::thread::sleep(Duration::from_secs(4));
    let events = ebb.events();
    let starts = events.iter().filter(|e| e["kind"] == "replica_started").count();
    assert!(starts >= 2, "it retried: {events:#?}");
    // 0.5 s, 1 s, 2 s backoff: at most ~5 starts in 4 s, never hundreds.
    assert!(starts <= 6, "{starts} starts in 4 s is a hot loop");
    let exited = events.iter().find(|e| e["kind"] == "replica_exited").expect("an exit event");
    assert!(exited["reason"].as_str().unwrap().contains("exited with status 3"), "{exited}");
    assert!(events.iter().any(|e| e["kind"] == "backoff"), "{events:#?}");
    let status = ebb.status();
    let holding = status["services"][0]["holding"].as_str().unwrap_or("");
    assert!(holding.is_empty() || holding.contains("crash-loop backoff"), "{holding}");
    // The replica's stderr is in its log, for `ebb logs`.
    let id = exited["replica"].as_str().unwrap();
    let out = ebb.cli(&["logs", id]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "boom\n");
}

#[test]
fn up_refuses_an_invalid_config_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ebb.toml");
    let admin = free_port();
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[service.web]\ncommand = \"sleep 100\"\nlisten = \"127.0.0.1:{}\"\nreplicas = {{ min = 2, max = 4, desired = 5 }}\n",
            free_port()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(EBB).arg("-f").arg(&config).arg("up").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ebb.toml:7:"), "names file and line: {stderr}");
    assert!(stderr.contains("desired"), "{stderr}");
    assert!(!dir.path().join(".ebb").exists(), "nothing was created");

    let out = std::process::Command::new(EBB).arg("validate").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), stderr);
}

#[test]
fn up_refuses_a_listen_address_in_use_and_starts_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ebb.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:{}\"\n\n[service.web]\ncommand = \"sleep 31.4159\"\nlisten = \"{taken_addr}\"\nreplicas = {{ min = 1, max = 1 }}\n",
            free_port()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(EBB).arg("-f").arg(&config).arg("up").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&taken_addr.to_string()) && stderr.contains("in use"), "{stderr}");
    assert!(
        stderr.contains("ebb.toml:6:10: error: [service.web] cannot listen on"),
        "names file, line, column and service: {stderr}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let ps = std::process::Command::new("pgrep").args(["-f", "sleep 31.4159"]).output().unwrap();
    assert!(ps.stdout.is_empty(), "no replica was started: {}", String::from_utf8_lossy(&ps.stdout));
}

/// A second `ebb up` on a state directory in use is refused before it
/// binds or starts anything, and names the first one's pid; the first
/// keeps its fleet.
#[test]
fn a_second_ebb_up_on_the_same_state_directory_is_refused_and_changes_nothing() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 2, max = 2, desired = 2 }", ""));
    let before = ebb.wait_in_service(2, Duration::from_secs(20));
    // Another config (other ports), the same state directory.
    let other = ebb.dir.path().join("other.toml");
    let text = std::fs::read_to_string(&ebb.config).unwrap();
    let text = text
        .replace(&ebb.admin.to_string(), &format!("127.0.0.1:{}", free_port()))
        .replace(&ebb.listen.to_string(), &format!("127.0.0.1:{}", free_port()));
    std::fs::write(&other, text).unwrap();
    let out = std::process::Command::new(EBB).arg("-f").arg(&other).arg("up").output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("another ebb (pid {})", ebb.up_pid())) && stderr.contains("state directory"),
        "{stderr}"
    );
    let ids = |rs: &[serde_json::Value]| rs.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&ebb.replicas()), ids(&before), "the first ebb's fleet is untouched");
}

/// A client that sends half a request to the admin API neither holds its
/// connection for ever nor keeps `ebb up` alive after `ebb down`; and
/// `ebb down` returns only once ebb has exited (issue 13, item 5).
#[test]
fn half_sent_admin_requests_neither_outlive_ebb_down_nor_their_deadline() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 2, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);

    // Half a head: the connection is closed once the header-read deadline
    // (10 s) passes, without waiting for the client.
    let mut slow = TcpStream::connect(ebb.admin).unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let sent = Instant::now();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let held = sent.elapsed();
    assert!(held >= Duration::from_secs(9) && held < Duration::from_secs(15), "closed after {held:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Half a head and half a body, held open across `ebb down`.
    let mut head = TcpStream::connect(ebb.admin).unwrap();
    head.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap();
    let mut body = TcpStream::connect(ebb.admin).unwrap();
    write!(
        body,
        "PUT /api/v1/services/web/desired HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"desired\"",
        ebb.admin,
        ebb.token()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let out = ebb.cli(&["down"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ebb: stopped"));
    // `ebb down` returned only once `ebb up` had exited: no slack here.
    assert_eq!(ebb.wait_exit(Duration::ZERO), Some(0), "ebb down returned before ebb up exited");
    // Within drain_timeout (5 s) + a few seconds, whatever the clients did.
    assert!(took < Duration::from_secs(5 + 5), "ebb down took {took:?}");
    drop((head, body));

    // The state directory is free at once: a new `ebb up` starts.
    ebb.restart_up();
    ebb.wait_in_service(1, BOOT);
}

/// The state directory and the replicas' logs are not readable by other
/// users (issue 13, item 13).
#[test]
fn the_state_directory_and_replica_logs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 2, desired = 1 }", ""));
    let replicas = ebb.wait_in_service(1, BOOT);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let state = ebb.dir.path().join("state");
    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&state.join("logs")), 0o700, "log directory");
    let log = state.join("logs").join(format!("{}.log", replicas[0]["id"].as_str().unwrap()));
    assert_eq!(mode(&log), 0o640, "replica log {}", log.display());
}

/// `ebb validate` refuses a device, a FIFO or a huge file at once, with a
/// message, instead of reading for ever (issue 13, item 13).
#[test]
fn validate_refuses_what_is_not_a_config_file() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let big = dir.path().join("big.toml");
    std::fs::File::create(&big).unwrap().set_len(64 * 1024 * 1024).unwrap();
    for (path, says) in [
        (std::path::PathBuf::from("/dev/zero"), "a character device, not a regular file"),
        (fifo, "a FIFO"),
        (big, "larger than 4 MiB"),
    ] {
        let mut child =
            Command::new(EBB).arg("validate").arg(&path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ebb validate {} did not return within 10 s", path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(stderr.contains(says) && stderr.contains(&*path.to_string_lossy()), "{}: {stderr}", path.display());
    }
}

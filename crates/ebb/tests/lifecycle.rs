//! Zero-downtime lifecycle, end to end under continuous load from a client
//! that counts every failure: deploys (rolling, blue-green, rolled back),
//! protection and interruption.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const BOOT: Duration = Duration::from_secs(30);

fn assert_no_failures(what: &str, sent: u64, failures: &[String]) {
    eprintln!("{what}: {sent} requests sent, {} failed", failures.len());
    assert!(sent > 100, "{what}: the client kept sending ({sent})");
    assert!(
        failures.is_empty(),
        "{what}: {} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

fn versions(ebb: &Ebb) -> Vec<u64> {
    ebb.replicas().iter().map(|r| r["version"].as_u64().unwrap()).collect()
}

fn deploy_config(admin: std::net::SocketAddr, listen: std::net::SocketAddr, strategy: &str) -> String {
    let mut config = fast_config(admin, listen, "{ min = 1, max = 6, desired = 3 }", "");
    config.push_str(&format!(
        "\n[service.web.deploy]\nstrategy = \"{strategy}\"\ndeploy_timeout = \"10s\"\nbake_time = \"1s\"\n"
    ));
    config
}

#[test]
fn a_rolling_deploy_replaces_every_replica_with_zero_failed_requests() {
    let ebb = Ebb::start(|admin, listen| deploy_config(admin, listen, "rolling"));
    ebb.wait_in_service(3, BOOT);
    let load = Load::start(ebb.listen, 4, "/gtg?details", Duration::from_millis(2));
    let out = ebb.cli(&["deploy", "web", "--env", "RELEASE=2"]);
    let (sent, failures) = load.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("rolling v1 -> v2"), "progress is shown: {stdout}");
    assert!(stdout.contains("now on v2"), "{stdout}");
    assert_no_failures("rolling deploy", sent, &failures);
    ebb.wait_in_service(3, BOOT);
    assert_eq!(versions(&ebb), vec![2, 2, 2]);
    assert!(ebb.events().iter().any(|e| e["kind"] == "deploy_succeeded"));

    // Through the API, the caller's reason is kept with the event.
    let r = ebb.admin_call("POST", "/api/v1/services/web/rollback", Some(r#"{"reason": "RELEASE=2 breaks checkout"}"#));
    assert_eq!(r.status, 202, "{}", r.body);
    let started = ebb.events().into_iter().filter(|e| e["kind"] == "deploy_started").last().unwrap();
    assert_eq!(started["reason"], "rollback: deploy v2 -> v3 with the spec of v1: RELEASE=2 breaks checkout");
}

#[test]
fn a_blue_green_deploy_switches_traffic_at_once_with_zero_failed_requests() {
    let ebb = Ebb::start(|admin, listen| deploy_config(admin, listen, "blue-green"));
    ebb.wait_in_service(3, BOOT);
    let load = Load::start(ebb.listen, 4, "/gtg?details", Duration::from_millis(2));
    let out = ebb.cli(&["deploy", "web", "--env", "RELEASE=2"]);
    let (sent, failures) = load.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_no_failures("blue-green deploy", sent, &failures);
    ebb.wait_in_service(3, BOOT);
    assert_eq!(versions(&ebb), vec![2, 2, 2]);
}

#[test]
fn a_deploy_that_never_becomes_healthy_is_rolled_back_and_exits_non_zero() {
    let ebb = Ebb::start(|admin, listen| deploy_config(admin, listen, "rolling"));
    ebb.wait_in_service(3, BOOT);
    let load = Load::start(ebb.listen, 4, "/gtg?details", Duration::from_millis(2));
    // Starts, but never listens: it never passes a health check.
    let out = ebb.cli(&["deploy", "web", "--command", "sleep 30"]);
    // The health gate fails the deploy within a second or so: the clients
    // go on through the rollback until the old version serves everything.
    ebb.wait_in_service(3, BOOT);
    load.until_sent(200, Duration::from_secs(20));
    let (sent, failures) = load.finish();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert_no_failures("failed deploy", sent, &failures);
    assert!(versions(&ebb).iter().all(|v| *v != 2), "no replica of the failed version is left: {:?}", versions(&ebb));
    assert!(ebb.events().iter().any(|e| e["kind"] == "deploy_rolled_back"));

    // Nothing to roll back to, a deploy with nothing new: clear errors, nothing changed.
    let out = ebb.cli(&["deploy", "web"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to deploy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_protected_replica_is_never_chosen_for_scale_in_until_released() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 4, desired = 3 }", ""));
    let replicas = ebb.wait_in_service(3, BOOT);
    let keep = replicas[0]["id"].as_str().unwrap().to_string();
    let out = ebb.cli(&["protect", &keep]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ebb.replicas().iter().any(|r| r["id"] == keep.as_str() && r["protected"] == true));

    assert!(ebb.cli(&["scale", "web", "1"]).status.success());
    let left = ebb.wait_in_service(1, BOOT);
    assert_eq!(left[0]["id"], keep.as_str(), "the protected replica stayed");

    // Protected and over desired: scale-in waits for it, and says so.
    assert!(ebb.cli(&["scale", "web", "2"]).status.success());
    ebb.wait_in_service(2, BOOT);
    let out = ebb.cli(&["protect", &keep, "--off"]);
    assert!(out.status.success());
    assert!(ebb.cli(&["scale", "web", "1"]).status.success());
    ebb.wait_in_service(1, BOOT);

    let out = ebb.cli(&["protect", "web-nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("web-nosuch"));
}

#[test]
fn an_interrupted_replica_is_replaced_before_it_stops_with_zero_failed_requests() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 4, desired = 2 }", ""));
    let replicas = ebb.wait_in_service(2, BOOT);
    let victim = replicas[0]["id"].as_str().unwrap().to_string();
    let load = Load::start(ebb.listen, 4, "/gtg?details", Duration::from_millis(2));
    let out = ebb.cli(&["interrupt", &victim, "--notice", "60s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the interrupted replica to leave", BOOT, || {
        ebb.replicas().iter().all(|r| r["id"] != victim.as_str()).then_some(())
    });
    let after = ebb.wait_in_service(2, BOOT);
    load.until_sent(200, Duration::from_secs(20));
    let (sent, failures) = load.finish();
    assert_no_failures("interruption", sent, &failures);
    assert!(after.iter().all(|r| r["id"] != victim.as_str()));

    // The replacement was in service before the interrupted replica drained.
    let before: Vec<&str> = replicas.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let replacement = after.iter().map(|r| r["id"].as_str().unwrap()).find(|id| !before.contains(id)).unwrap();
    let events = ebb.events();
    let position = |kind: &str, replica: &str| {
        events
            .iter()
            .position(|e| e["kind"] == kind && e["replica"] == replica)
            .unwrap_or_else(|| panic!("no {kind} for {replica}: {events:#?}"))
    };
    assert!(position("replica_in_service", replacement) < position("replica_draining", &victim), "{events:#?}");
}

#[test]
fn scale_in_from_eight_to_two_under_load_fails_no_request() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 8, desired = 8 }", ""));
    ebb.wait_in_service(8, BOOT);
    let load = Load::start(ebb.listen, 4, "/gtg?details", Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(300));
    assert!(ebb.cli(&["scale", "web", "2"]).status.success());
    ebb.wait_in_service(2, BOOT);
    std::thread::sleep(Duration::from_millis(300));
    load.until_sent(200, Duration::from_secs(20));
    let (sent, failures) = load.finish();
    assert_no_failures("scale-in 8 -> 2", sent, &failures);
    let drained = ebb.events().iter().filter(|e| e["kind"] == "replica_draining").count();
    assert_eq!(drained, 6, "six replicas left the rotation before stopping");
}

#[test]
fn kill_9_under_post_load_fails_at_most_the_requests_in_flight_and_loses_no_acknowledged_post() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 2, max = 4, desired = 2 }", ""));
    let replicas = ebb.wait_in_service(2, BOOT);
    let victim_pid = replicas[0]["pid"].as_u64().unwrap();
    let clients = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (stop, acknowledged, failures, lb) = (stop.clone(), acknowledged.clone(), failures.clone(), ebb.listen);
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let name = format!("c{t}-{i}");
                    match http(lb, "POST", &format!("/candidate/{name}"), Some("")) {
                        Ok(r) if r.status == 200 => acknowledged.lock().unwrap().push(name),
                        Ok(r) => failures.lock().unwrap().push(format!("{} {}", r.status, r.body)),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    std::process::Command::new("kill").args(["-KILL", &victim_pid.to_string()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ebb.wait_in_service(2, BOOT);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!("kill -9 under POST load: {} POSTs acknowledged, {} failed", acknowledged.len(), failures.len());
    assert!(acknowledged.len() > 50);
    assert!(failures.len() <= clients, "at most the {clients} requests in flight may fail: {failures:?}");
    // Every acknowledged POST is stored (one shared store behind all replicas).
    let stored = http(ebb.listen, "GET", "/candidates", None).unwrap().json();
    let names: std::collections::HashSet<&str> =
        stored.as_array().unwrap().iter().map(|c| c["CandidateName"].as_str().unwrap()).collect();
    for name in &acknowledged {
        assert!(names.contains(name.as_str()), "acknowledged POST {name} was lost");
    }
}

#[test]
fn a_protected_worker_is_never_stopped_by_scale_in_and_stops_once_released() {
    let ebb = Ebb::start(|admin, _listen| {
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"{admin}\"\n\n[service.scraper]\nkind = \"worker\"\ncommand = \"sleep 600\"\nreplicas = {{ min = 0, max = 3, desired = 2 }}\nstop_timeout = \"2s\"\n"
        )
    });
    let workers = ebb.wait_in_service(2, BOOT);
    let (a, b) = (workers[0]["id"].as_str().unwrap().to_string(), workers[1]["id"].as_str().unwrap().to_string());
    for id in [&a, &b] {
        assert!(ebb.cli(&["protect", id]).status.success());
    }
    assert!(ebb.cli(&["scale", "scraper", "0"]).status.success());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ebb.replicas().len(), 2, "busy (protected) workers are never stopped by scale-in");
    let holding = ebb.status()["services"][0]["holding"].as_str().unwrap_or("").to_string();
    assert!(holding.contains("protected"), "status says why: {holding:?}");
    let table = String::from_utf8(ebb.cli(&["status"]).stdout).unwrap();
    let row = |id: &str| {
        table.lines().find(|l| l.trim_start().starts_with(id)).unwrap_or_else(|| panic!("{table}")).to_string()
    };
    assert!(
        row(&a).trim_end().ends_with("yes") && row(&b).trim_end().ends_with("yes"),
        "the table shows protection: {table}"
    );

    assert!(ebb.cli(&["protect", &a, "--off"]).status.success());
    let left = wait_for("the released worker to stop", BOOT, || {
        let r = ebb.replicas();
        (r.len() == 1).then_some(r)
    });
    assert_eq!(left[0]["id"], b.as_str(), "only the released worker left");
    let stopped = ebb.events().into_iter().find(|e| e["kind"] == "replica_stopped" && e["replica"] == a.as_str());
    let stopped = stopped.unwrap_or_else(|| panic!("{:#?}", ebb.events()));
    assert_eq!(stopped["reason"], "replica stopped (ended by SIGTERM, as asked)");
}

/// A replica that ignores SIGTERM is killed after `stop_timeout`, and its
/// `replica_stopped` event says so (the fix is in the app or the timeout).
#[test]
fn a_replica_that_ignores_sigterm_is_killed_after_stop_timeout_and_the_event_says_so() {
    let ebb = Ebb::start(|admin, _listen| {
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"{admin}\"\n\n[service.stubborn]\nkind = \"worker\"\ncommand = \"trap '' TERM; while :; do sleep 0.1; done\"\nreplicas = {{ min = 0, max = 1, desired = 1 }}\nstop_timeout = \"1s\"\n"
        )
    });
    let workers = ebb.wait_in_service(1, BOOT);
    let id = workers[0]["id"].as_str().unwrap().to_string();
    let asked = Instant::now();
    assert!(ebb.cli(&["scale", "stubborn", "0"]).status.success());
    let stopped = wait_for("the stubborn replica to be stopped", BOOT, || {
        ebb.events().into_iter().find(|e| e["kind"] == "replica_stopped" && e["replica"] == id.as_str())
    });
    assert!(asked.elapsed() >= Duration::from_millis(900), "SIGKILL only after stop_timeout: {:?}", asked.elapsed());
    assert_eq!(
        stopped["reason"],
        "replica stopped (killed with SIGKILL: still running 1s after SIGTERM (stop_timeout))"
    );
}

/// What a refused request must leave as it was: desired, version, the
/// running deploy, every replica with its version, and the deploys started.
fn fingerprint(ebb: &Ebb) -> serde_json::Value {
    let status = ebb.status();
    let s = &status["services"][0];
    let mut replicas: Vec<(String, u64)> = s["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["version"].as_u64().unwrap()))
        .collect();
    replicas.sort();
    let deploys_started = ebb.events().iter().filter(|e| e["kind"] == "deploy_started").count();
    serde_json::json!({
        "desired": s["desired"],
        "version": s["version"],
        "deploy": s["deploy"]["to_version"],
        "replicas": replicas,
        "deploys_started": deploys_started,
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a refused CLI call: exit 2 and `message` on stderr.
#[track_caller]
fn assert_cli_refused(out: &std::process::Output, message: &str) {
    assert_eq!(out.status.code(), Some(2), "stdout: {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), stderr(out));
    assert!(stderr(out).contains(message), "expected {message:?} in: {}", stderr(out));
}

/// Asserts an API error: the status, and a JSON message containing `message`.
#[track_caller]
fn assert_api_refused(r: &Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(message), "expected {message:?} in {:?}", r.body);
}

#[test]
fn bad_deploy_rollback_and_replica_requests_are_refused_and_change_nothing() {
    let ebb = Ebb::start(|admin, listen| {
        let mut config = fast_config(admin, listen, "{ min = 1, max = 4, desired = 2 }", "");
        config.push_str("\n[service.web.deploy]\ndeploy_timeout = \"20s\"\n");
        config
    });
    ebb.wait_in_service(2, BOOT);
    let before = fingerprint(&ebb);

    // Nothing to roll back to: one version only, no deploy running.
    let r = ebb.admin_call("POST", "/api/v1/services/web/rollback", None);
    assert_api_refused(&r, 409, "nothing to roll back to");
    assert_cli_refused(&ebb.cli(&["rollback", "web"]), "nothing to roll back to");

    // Malformed deploys: refused before anything starts.
    assert_cli_refused(&ebb.cli(&["deploy", "web", "--env", "NOEQUALS"]), "not NAME=value");
    assert_cli_refused(&ebb.cli(&["deploy", "web", "--env", "PORT=1"]), "PORT is set by ebb");
    assert_cli_refused(&ebb.cli(&["deploy", "web", "--command", "   "]), "command is empty");
    assert_cli_refused(&ebb.cli(&["deploy", "web"]), "nothing to deploy");
    assert_cli_refused(&ebb.cli(&["deploy", "nope", "--env", "A=1"]), "no service named \"nope\"");
    assert_cli_refused(&ebb.cli(&["rollback", "nope"]), "no service named \"nope\"");
    let deploy = "/api/v1/services/web/deploy";
    assert_api_refused(&ebb.admin_call("POST", deploy, Some(r#"{"env": {"EBB_VERSION": "9"}}"#)), 400, "set by ebb");
    assert_api_refused(&ebb.admin_call("POST", deploy, Some(r#"{"env": {"A=B": "1"}}"#)), 400, "not a valid variable");
    assert_api_refused(&ebb.admin_call("POST", deploy, Some(r#"{"env": {"": "1"}}"#)), 400, "not a valid variable");
    assert_api_refused(&ebb.admin_call("POST", deploy, Some(r#"{"command": ""}"#)), 400, "command is empty");
    assert_api_refused(&ebb.admin_call("POST", deploy, Some(r#"{"env": {"A": 1}}"#)), 400, "");

    // Unknown replicas.
    for action in [&["protect", "web-nosuch"][..], &["protect", "web-nosuch", "--off"], &["interrupt", "web-nosuch"]] {
        let out = ebb.cli(action);
        assert!(!out.status.success(), "{action:?}");
        assert!(stderr(&out).contains("no replica \"web-nosuch\""), "{action:?}: {}", stderr(&out));
    }
    assert_eq!(fingerprint(&ebb), before, "refused requests changed nothing");

    // A deploy that stays running (its replica never passes a health check)...
    let out = ebb.cli(&["deploy", "web", "--command", "sleep 60", "--no-wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the v2 replica to be launched", BOOT, || (ebb.replicas().len() == 3).then_some(()));
    let running = fingerprint(&ebb);
    assert_eq!((running["deploy"].as_u64(), running["version"].as_u64()), (Some(2), Some(1)), "{running}");

    // ... so a second deploy is refused, by the API and the CLI, and changes nothing.
    let r = ebb.admin_call("POST", deploy, Some(r#"{"env": {"RELEASE": "3"}}"#));
    assert_api_refused(&r, 409, "a deploy is already running (v1 -> v2)");
    assert_cli_refused(&ebb.cli(&["deploy", "web", "--env", "RELEASE=3"]), "a deploy is already running (v1 -> v2)");
    assert_cli_refused(
        &ebb.cli(&["deploy", "web", "--strategy", "blue-green", "--env", "RELEASE=3"]),
        "already running",
    );
    assert_eq!(fingerprint(&ebb), running, "the running deploy is untouched");

    // `ebb rollback` ends it (exit 1: rolled back, saying why); then there
    // is nothing left to roll back to.
    let out = ebb.cli(&["rollback", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("rolled back to v1") && stderr(&out).contains("ebb rollback"), "{}", stderr(&out));
    ebb.wait_in_service(2, BOOT);
    assert_eq!(versions(&ebb), vec![1, 1]);
    assert_cli_refused(&ebb.cli(&["rollback", "web"]), "nothing to roll back to");
    let after = fingerprint(&ebb);
    assert_eq!((&after["desired"], &after["version"]), (&before["desired"], &before["version"]));
}

#[test]
fn a_deploy_whose_command_does_not_start_is_rolled_back_and_says_why() {
    let ebb = Ebb::start(|admin, listen| deploy_config(admin, listen, "rolling"));
    ebb.wait_in_service(3, BOOT);
    let before = fingerprint(&ebb);
    let out = ebb.cli(&["deploy", "web", "--command", "/nonexistent/ebb-test-app --port $PORT"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let err = stderr(&out);
    // The exit message names the replica, what happened and where its output is.
    assert!(err.contains("rolled back to v1") && err.contains("exited with status 127"), "{err}");
    let failed =
        err.split("ebb logs ").nth(1).and_then(|s| s.split('`').next()).unwrap_or_else(|| panic!("{err}")).to_string();
    let logs = ebb.cli(&["logs", &failed]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("not found"), "{failed}: {:?}", logs);
    let events = ebb.events();
    let rolled_back = events.iter().find(|e| e["kind"] == "deploy_rolled_back").expect("a deploy_rolled_back event");
    assert!(rolled_back["reason"].as_str().unwrap().contains("exited with status 127"), "{rolled_back}");

    ebb.wait_in_service(3, BOOT);
    let after = fingerprint(&ebb);
    assert_eq!((&after["desired"], &after["version"]), (&before["desired"], &before["version"]));
    assert_eq!(versions(&ebb), vec![1, 1, 1], "every replica is the old version");
}

/// S4's pool: workers scaled on an external number (a command that prints a
/// queue's length) with target tracking on `items_per_replica`; scale-in
/// keeps the busy (protected) worker.
#[test]
fn a_worker_pool_follows_its_queue_length_and_scale_in_keeps_the_busy_worker() {
    let queue_dir = tempfile::tempdir().unwrap();
    let queue = queue_dir.path().join("queue.txt");
    std::fs::write(&queue, "0\n").unwrap();
    let queue_path = queue.display().to_string();
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
command = "cat '{queue_path}'"
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
    let pool = |n: usize| ebb.wait_in_service(n, BOOT);
    pool(1);
    let scaled_to = |to: u64| {
        let events = ebb.events();
        events.into_iter().find(|e| e["kind"] == "scaled" && e["to"] == to)
    };

    // 25 waiting items, 10 per worker: ceil(25 / 10) = 3 workers.
    std::fs::write(&queue, "25\n").unwrap();
    pool(3);
    let up = scaled_to(3).expect("a scaled event to 3");
    let reason = up["reason"].as_str().unwrap();
    assert!(reason.contains("pages-per-worker") && reason.contains("items_per_replica"), "{reason}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ebb.replicas().len(), 3, "3 workers hold 25 items at about 10 each: no flapping");

    // 100 items want 10 workers: max is 4.
    std::fs::write(&queue, "100\n").unwrap();
    let workers = pool(4);
    assert_eq!(ebb.status()["services"][0]["desired"], 4);

    // The youngest worker would leave first (scale-in takes the youngest);
    // it is busy, so it protects itself, and the queue empties.
    let busy =
        workers.iter().min_by(|a, b| a["age_s"].as_f64().unwrap().total_cmp(&b["age_s"].as_f64().unwrap())).unwrap()
            ["id"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(ebb.cli(&["protect", &busy]).status.success());
    std::fs::write(&queue, "0\n").unwrap();
    let left = pool(1);
    assert_eq!(left[0]["id"], busy.as_str(), "the busy worker was kept; the idle ones left");
    let down = scaled_to(1).expect("a scaled event to 1");
    assert!(down["reason"].as_str().unwrap().contains("items_per_replica"), "{down}");
    assert!(!ebb.events().iter().any(|e| e["kind"] == "replica_stopped" && e["replica"] == busy.as_str()));
}

/// The S4 example's own workers (`examples/s4-scraper/ebb.fast.toml`, with
/// 1 s jobs): they take pages off the queue, protect themselves while they
/// work, and no worker leaves while it is protected, through a scale-out
/// and the scale-in after the queue empties.
#[test]
fn the_s4_example_workers_protect_themselves_and_no_busy_worker_is_stopped() {
    for tool in ["curl", "flock", "chrt", "timeout"] {
        let found = std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
        if !found.status.success() {
            println!("SKIP: the S4 example's workers need {tool}");
            return;
        }
    }
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/s4-scraper/ebb.fast.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let queue_dir = tempfile::tempdir().unwrap();
    let queue = queue_dir.path().join("queue.txt");
    std::fs::write(&queue, "0\n").unwrap();
    let ebb = Ebb::start(|admin, listen| {
        let text = text
            .replace("127.0.0.1:19904", &admin.to_string())
            .replace("127.0.0.1:18084", &listen.to_string())
            .replace("state_dir = \".ebb-fast\"", "state_dir = \"state\"")
            .replace("examples/s4-scraper/scrape-queue.txt", &queue.display().to_string())
            .replace("JOB_SECONDS = \"5\"", "JOB_SECONDS = \"1\"");
        assert!(
            text.contains("JOB_SECONDS = \"1\"") && text.contains("state_dir = \"state\""),
            "the example changed: {text}"
        );
        text
    });
    let workers = || {
        let status = ebb.status();
        let pool = status["services"].as_array().unwrap().iter().find(|s| s["name"] == "scraper").unwrap().clone();
        pool["replicas"].as_array().unwrap().clone()
    };
    wait_for("one worker in service", BOOT, || {
        (workers().iter().filter(|w| w["state"] == "in_service").count() == 1).then_some(())
    });

    // 30 pages: 3 workers, each busy (protected) with one page at a time.
    std::fs::write(&queue, "30\n").unwrap();
    wait_for("3 busy workers", BOOT, || {
        let w = workers();
        (w.len() == 3 && w.iter().filter(|w| w["protected"] == true).count() >= 2).then_some(())
    });
    // Most pages still waiting: empty the queue; scale-in to 1 follows,
    // and must wait for every page in progress.
    std::fs::write(&queue, "0\n").unwrap();
    wait_for("the pool back to 1 idle worker", BOOT, || {
        let w = workers();
        (w.len() == 1 && w[0]["protected"] == false).then_some(())
    });

    let events: Vec<serde_json::Value> = ebb.events().into_iter().filter(|e| e["service"] == "scraper").collect();
    let mut busy = std::collections::HashSet::new();
    let (mut jobs, mut left) = (0, 0);
    for e in &events {
        let replica = e["replica"].as_str().unwrap_or_default().to_string();
        match e["kind"].as_str().unwrap() {
            "replica_protected" => {
                jobs += 1;
                busy.insert(replica);
            }
            "replica_unprotected" => {
                busy.remove(&replica);
            }
            "replica_draining" | "replica_stopped" => {
                left += 1;
                assert!(!busy.contains(&replica), "{replica} left while busy: {events:#?}");
            }
            _ => {}
        }
    }
    assert!(jobs >= 3, "the workers protected themselves for their pages: {events:#?}");
    assert!(left >= 2, "two workers left on scale-in: {events:#?}");
}

#[test]
fn a_deploy_with_no_option_rolls_out_what_the_config_file_says_now() {
    let ebb = Ebb::start(|admin, listen| deploy_config(admin, listen, "rolling"));
    ebb.wait_in_service(3, BOOT);
    // Nothing changed in the file: nothing to deploy, exit 2.
    let out = ebb.cli(&["deploy", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already runs what the config file says"));

    // A broken edit is refused with the config error; nothing changes.
    let original = std::fs::read_to_string(&ebb.config).unwrap();
    std::fs::write(&ebb.config, original.replace("[service.web]\n", "[service.web]\nenv = { RELEASE = 2 }\n")).unwrap();
    let out = ebb.cli(&["deploy", "web"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("ebb.toml:7:19: error"), "file, line and column are named: {stderr}");
    let api = ebb.admin_call("POST", "/api/v1/services/web/deploy", None);
    assert_eq!(api.status, 400, "{}", api.body);
    assert!(api.body.contains("nothing was deployed") && api.body.contains("ebb.toml:7:19"), "{}", api.body);
    assert_eq!(versions(&ebb), vec![1, 1, 1]);

    // A good edit rolls out, under load, with no failed request.
    std::fs::write(&ebb.config, original.replace("[service.web]\n", "[service.web]\nenv = { RELEASE = \"2\" }\n"))
        .unwrap();
    let load = Load::start(ebb.listen, 4, "/gtg?details", Duration::from_millis(2));
    let out = ebb.cli(&["deploy", "web"]);
    let (sent, failures) = load.finish();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_no_failures("deploy from the config file", sent, &failures);
    let replicas = ebb.wait_in_service(3, BOOT);
    assert_eq!(versions(&ebb), vec![2, 2, 2]);
    for r in &replicas {
        assert_eq!(replica_env(r["pid"].as_u64().unwrap(), "RELEASE").as_deref(), Some("2"), "{r}");
    }
}

/// `ports`: local replicas listen only in the service's range (a host with
/// port rules), and the range shows in every replica's port.
#[test]
fn replicas_listen_in_the_configured_port_range() {
    let (first, last) = (24_100u16, 24_109u16);
    let ebb = Ebb::start(|admin, listen| {
        fast_config(admin, listen, "{ min = 3, max = 3, desired = 3 }", &format!("ports = \"{first}-{last}\""))
    });
    let replicas = ebb.wait_in_service(3, BOOT);
    for r in &replicas {
        let port = r["port"].as_u64().unwrap() as u16;
        assert!((first..=last).contains(&port), "replica {} listens on {port}, outside {first}-{last}", r["id"]);
    }
}

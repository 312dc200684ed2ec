//! Zero-downtime lifecycle, end to end under continuous load from a client
//! that counts every failure: deploys (rolling, blue-green, rolled back),
//! protection and interruption.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    let (sent, failures) = load.finish();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert_no_failures("failed deploy", sent, &failures);
    ebb.wait_in_service(3, BOOT);
    assert!(versions(&ebb).iter().all(|v| *v != 2), "no replica of the failed version is left: {:?}", versions(&ebb));
    assert!(ebb.events().iter().any(|e| e["kind"] == "deploy_rolled_back"));

    // Nothing to roll back to, a deploy with nothing new: clear errors, nothing changed.
    let out = ebb.cli(&["deploy", "web"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to deploy"), "{}", String::from_utf8_lossy(&out.stderr));
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
    let (sent, failures) = load.finish();
    assert_no_failures("interruption", sent, &failures);
    assert!(after.iter().all(|r| r["id"] != victim.as_str()));

    // The replacement was in service before the interrupted replica drained.
    let before: Vec<&str> = replicas.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let replacement = after.iter().map(|r| r["id"].as_str().unwrap()).find(|id| !before.contains(id)).unwrap();
    let events = ebb.events();
    let position = |kind: &str, replica: &str| {
        events.iter().position(|e| e["kind"] == kind && e["replica"] == replica).unwrap_or_else(|| panic!("no {kind} for {replica}: {events:#?}"))
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

    assert!(ebb.cli(&["protect", &a, "--off"]).status.success());
    let left = wait_for("the released worker to stop", BOOT, || {
        let r = ebb.replicas();
        (r.len() == 1).then_some(r)
    });
    assert_eq!(left[0]["id"], b.as_str(), "only the released worker left");
    assert!(ebb.events().iter().any(|e| e["kind"] == "replica_stopped" && e["replica"] == a.as_str()));
}

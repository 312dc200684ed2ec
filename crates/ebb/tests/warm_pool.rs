//! The warm pool end to end (`[service.NAME.warm_pool]`, docs/idle.md):
//! demo-app replicas started ahead of need and suspended beside the fleet;
//! a scale-out resumes one (the same process, no boot) and the pool
//! refills; members are never routed nor counted; they survive an ebb
//! restart as pool members; a new spec replaces them.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{fast_config, http, wait_for, Ebb};

/// `fast_config` with `replicas` and a warm pool of `size`.
fn pool_config(admin: SocketAddr, listen: SocketAddr, replicas: &str, size: u32) -> String {
    format!("{}\n[service.web.warm_pool]\nsize = {size}\n", fast_config(admin, listen, replicas, ""))
}

fn web(ebb: &Ebb) -> serde_json::Value {
    ebb.status()["services"][0].clone()
}

fn events_of(ebb: &Ebb, kind: &str) -> Vec<serde_json::Value> {
    ebb.events().into_iter().filter(|e| e["kind"] == kind).collect()
}

/// The state letter of a process (`T` when stopped by SIGSTOP).
fn process_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Waits until the fleet has `fleet` healthy replicas in service and the
/// pool `pooled` suspended (SIGSTOPped) members; returns both lists.
fn wait_settled(ebb: &Ebb, fleet: usize, pooled: usize) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    wait_for(&format!("{fleet} in service and {pooled} suspended in the pool"), Duration::from_secs(40), || {
        let replicas = ebb.replicas();
        let (members, serving): (Vec<_>, Vec<_>) = replicas.into_iter().partition(|r| r["pooled"] == true);
        let frozen = members.iter().all(|r| r["pid"].as_u64().and_then(process_state) == Some('T'));
        let healthy = serving.iter().all(|r| r["state"] == "in_service" && r["healthy"] == true);
        let line = web(ebb)["warm_pool"].as_str().map(str::to_string);
        (serving.len() == fleet
            && members.len() == pooled
            && frozen
            && healthy
            && line == Some(format!("warm pool: {pooled} suspended (size {pooled})")))
        .then_some((serving, members))
    })
}

#[test]
fn a_scale_out_resumes_a_warm_replica_instead_of_booting_one_and_the_pool_refills() {
    let ebb = Ebb::start(|admin, listen| pool_config(admin, listen, "{ min = 1, max = 3, desired = 1 }", 1));
    let (serving, members) = wait_settled(&ebb, 1, 1);
    let (warm_id, warm_pid) = (members[0]["id"].as_str().unwrap().to_string(), members[0]["pid"].as_u64().unwrap());
    let status = web(&ebb);
    assert_eq!((status["desired"].as_u64(), status["in_service"].as_u64()), (Some(1), Some(1)), "{status}");
    let filled = events_of(&ebb, "warm_pool_filled");
    assert_eq!(filled.len(), 1, "{filled:?}");
    assert!(filled[0]["reason"].as_str().unwrap().contains("1 of 1 ready"), "{filled:?}");

    // Not routed: every request goes to the fleet's replica.
    for _ in 0..20 {
        assert_eq!(http(ebb.listen, "GET", "/gtg", None).unwrap().status, 200);
    }
    let replicas = ebb.replicas();
    let requests = |id: &str| replicas.iter().find(|r| r["id"] == id).unwrap()["requests"].as_u64().unwrap();
    assert_eq!(requests(&warm_id), 0, "{replicas:?}");
    assert!(requests(serving[0]["id"].as_str().unwrap()) >= 20);

    // Prometheus counts it apart from the fleet.
    let metrics = http(ebb.admin, "GET", "/metrics", None).unwrap().body;
    for (state, n) in [("in_service", 1), ("warm_pool", 1)] {
        let line = format!("ebb_service_replicas{{service=\"web\",state=\"{state}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line}{metrics}");
    }

    // `ebb status` shows the pool.
    let text = String::from_utf8(ebb.cli(&["status"]).stdout).unwrap();
    assert!(text.contains("  warm pool: 1 suspended (size 1)\n"), "{text}");
    assert!(text.lines().any(|l| l.contains(&warm_id) && l.contains("warm_pool")), "{text}");

    let started_before = events_of(&ebb, "replica_started").len();
    assert_eq!(started_before, 2, "one for the fleet, one for the pool");
    let asked = Instant::now();
    let out = ebb.cli(&["scale", "web", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // In service at once: the same process, thawed.
    let taken = wait_for("the warm replica in service", Duration::from_secs(5), || {
        ebb.replicas().into_iter().find(|r| r["id"] == warm_id.as_str() && r["pooled"] == false && r["healthy"] == true)
    });
    let in_service_after = asked.elapsed();
    assert_eq!(taken["pid"].as_u64(), Some(warm_pid), "the same process: {taken}");
    assert_eq!(taken["state"], "in_service");
    assert_ne!(process_state(warm_pid), Some('T'), "thawed");
    assert!(in_service_after < Duration::from_secs(3), "took {in_service_after:?}");
    let used = wait_for("warm_replica_used", Duration::from_secs(5), || events_of(&ebb, "warm_replica_used").pop());
    assert_eq!(used["replica"], warm_id.as_str());
    assert!(used["reason"].as_str().unwrap().contains("resumed in"), "{used}");
    assert_eq!(web(&ebb)["in_service"], 2);

    // It takes requests.
    wait_for("the taken replica serves", Duration::from_secs(10), || {
        http(ebb.listen, "GET", "/gtg", None).unwrap();
        let r = ebb.replicas().into_iter().find(|r| r["id"] == warm_id.as_str())?;
        (r["requests"].as_u64()? > 0).then_some(())
    });

    // The pool refills with a fresh boot; the fleet booted nothing.
    let (serving, members) = wait_settled(&ebb, 2, 1);
    assert!(serving.iter().any(|r| r["id"] == warm_id.as_str()));
    assert_ne!(members[0]["id"], warm_id.as_str());
    let started: Vec<_> = events_of(&ebb, "replica_started");
    assert_eq!(started.len(), started_before + 1, "only the refill booted: {started:?}");
    assert_eq!(started.last().unwrap()["replica"], members[0]["id"]);
    assert_eq!(events_of(&ebb, "warm_pool_filled").len(), 2);
}

/// SIGTERM leaves the fleet and its pool for the next ebb: the pool member
/// is thawed first (a frozen process group would get the kernel's SIGHUP
/// once ebb is gone), adopted back into the pool, and suspended again.
#[test]
fn a_restarted_ebb_adopts_its_pool_members_as_pool_members() {
    let mut ebb = Ebb::start(|admin, listen| pool_config(admin, listen, "{ min = 1, max = 2, desired = 1 }", 1));
    let (serving, members) = wait_settled(&ebb, 1, 1);
    let (fleet_pid, warm_pid) = (serving[0]["pid"].as_u64().unwrap(), members[0]["pid"].as_u64().unwrap());
    ebb.signal_up(nix::sys::signal::Signal::SIGTERM);
    ebb.wait_exit(Duration::from_secs(30));
    assert_ne!(process_state(warm_pid), Some('T'), "thawed before ebb left\n{}", ebb.up_log());
    ebb.restart_up();
    let (serving, members) = wait_settled(&ebb, 1, 1);
    assert_eq!(serving[0]["pid"].as_u64(), Some(fleet_pid));
    assert_eq!(members[0]["pid"].as_u64(), Some(warm_pid), "adopted into the pool: {members:?}");
    let status = web(&ebb);
    assert_eq!((status["in_service"].as_u64(), status["desired"].as_u64()), (Some(1), Some(1)), "{status}");
}

/// A new spec (`ebb apply` with a new env) replaces the pool's member with
/// one of the new version; a pool of 0 (the table removed) stops it.
#[test]
fn a_new_spec_replaces_the_pool_member_and_removing_the_pool_stops_it() {
    let ebb = Ebb::start(|admin, listen| pool_config(admin, listen, "{ min = 1, max = 2, desired = 1 }", 1));
    let (_, members) = wait_settled(&ebb, 1, 1);
    let old = members[0]["id"].as_str().unwrap().to_string();
    let config = std::fs::read_to_string(&ebb.config).unwrap();
    let edited = config.replace("drain_timeout = \"5s\"\n", "drain_timeout = \"5s\"\nenv = { COLOUR = \"blue\" }\n");
    std::fs::write(&ebb.config, &edited).unwrap();
    let out = ebb.cli(&["apply", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let members = wait_for("a pool member of version 2", Duration::from_secs(60), || {
        let (_, members) = wait_settled(&ebb, 1, 1);
        (members[0]["version"] == 2).then_some(members)
    });
    assert_ne!(members[0]["id"], old.as_str());
    let drained = events_of(&ebb, "replica_draining");
    assert!(
        drained.iter().any(|e| e["replica"] == old.as_str()
            && e["reason"].as_str().unwrap().contains("warm pool: replaced by one of the current version")),
        "{drained:?}"
    );

    // No pool: its member is thawed and stopped, the fleet untouched.
    let pid = members[0]["pid"].as_u64().unwrap();
    let without = edited.replace("[service.web.warm_pool]\nsize = 1\n", "");
    std::fs::write(&ebb.config, without).unwrap();
    let out = ebb.cli(&["apply", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the pool member gone", Duration::from_secs(20), || {
        (ebb.replicas().iter().all(|r| r["pooled"] == false) && !support::pid_alive(pid as u32)).then_some(())
    });
    assert!(web(&ebb)["warm_pool"].is_null());
    assert_eq!(web(&ebb)["in_service"], 1);
    // Thawed before it was stopped: it took its SIGTERM, no SIGKILL after
    // stop_timeout.
    let id = members[0]["id"].as_str().unwrap();
    let stopped = wait_for("its stop event", Duration::from_secs(10), || {
        events_of(&ebb, "replica_stopped").into_iter().find(|e| e["replica"] == id)
    });
    assert!(!stopped["reason"].as_str().unwrap().contains("SIGKILL"), "{stopped}");
}

//! `[cluster]` on a real local swarm (`scripts/local-swarm up 2`): replicas
//! reserve a quarter of a node's CPUs each, the target is 30 % of the
//! nodes' CPUs. Raising desired to 9 needs more than 2 nodes hold (8 fit,
//! 1 waits "no suitable node"): ebb runs `add_node` (`scripts/local-swarm
//! add`), node3 joins and the waiting replica runs there, in service.
//! Lowering desired to 1 with node3's replica protected: ebb drains node2
//! (no replica) and removes it, and keeps node3 while the replica is
//! protected. Released under GET load: ebb pauses node3, replaces its
//! replica on node1 first, then removes node3 (`remove_node`), with no
//! failed request. Events explain each step. The guards (`Ebb`, then `LocalSwarm`) remove everything, added
//! nodes too, also when the test fails.
//!
//! Needs root and dockerd: elsewhere it prints `SKIP:` and returns.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::local_swarm::{running_tasks, script, LocalSwarm};
use support::*;

#[test]
fn reserved_cpu_above_the_target_adds_a_node_that_gets_replicas_then_it_is_drained_and_removed() {
    let Some(swarm) = LocalSwarm::up(2, "10.233.0") else { return };
    std::env::set_var("DOCKER_HOST", swarm.manager());
    std::env::set_var("EBB_SWARM_NODE_HOST", swarm.node_host());
    // Each node's dockerd reports this machine's CPUs (C): four replicas fill one.
    let nano = swarm.docker(&["node", "inspect", "-f", "{{.Description.Resources.NanoCPUs}}", "node1"]);
    let node_cpus = nano.trim().parse::<f64>().expect("node1's NanoCPUs") / 1e9;
    let cpus = node_cpus / 4.0;
    // In units of C, one node holds 0.3 C at the 30 % target:
    // 2 replicas: 0.5 of 2 = 25 %: ceil(0.5 / 0.3) = 2 nodes, as many as there are.
    // 9 replicas: 8 fit (4 per node), 1 pending: ceil(2.25 / 0.3) = 8, max 3.
    // 1 replica: ceil(0.25 / 0.3) = 1 node (min 1): the workers go, one at a time.
    let script = script().canonicalize().unwrap();
    let env = format!(
        "EBB_LOCAL_SWARM_DIR={} EBB_LOCAL_SWARM_SUBNET={} EBB_LOCAL_SWARM_IMAGES={}",
        swarm.dir.display(),
        swarm.subnet,
        swarm.image
    );
    let image = swarm.image.clone();
    let ebb = Ebb::start(|admin, listen| {
        format!(
            r#"state_dir = "state"

[admin]
listen = "{admin}"

[service.api]
driver = "swarm"
image = "{image}"
container_port = 8080
cpus = {cpus}
memory = "128MiB"
command = ["/ebb", "demo-app", "--host", "0.0.0.0"]
listen = "{listen}"
replicas = {{ min = 1, max = 10, desired = 2 }}
stop_timeout = "2s"
drain_timeout = "2s"

[service.api.health]
path = "/api"
interval = "300ms"
timeout = "200ms"
healthy_threshold = 2
unhealthy_threshold = 2

[cluster]
target_reserved_cpu = 30
nodes = {{ min = 1, max = 3 }}
add_node = "{env} {script} add"
remove_node = "{env} {script} remove {{node}}"
scale_out_cooldown = "5s"
scale_in_cooldown = "8s"
add_node_timeout = "3m"
"#,
            script = script.display()
        )
    });
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let service = ebb::driver::swarm::swarm_service_name("api", 1, &state);
    ebb.wait_in_service(2, Duration::from_secs(60));
    let cluster = wait_for("the cluster section", Duration::from_secs(15), || {
        let c = ebb.status()["cluster"].clone();
        (c["active_nodes"] == 2).then_some(c)
    });
    assert_eq!(cluster["wanted_nodes"], 2, "{cluster:#}");
    assert_eq!(cluster["nodes"].as_array().unwrap().len(), 2, "{cluster:#}");
    let text = String::from_utf8_lossy(&ebb.cli(&["status"]).stdout).into_owned();
    assert!(text.contains("cluster  2 of 1-3 nodes active, 2 wanted"), "{text}");

    // Up: more than 30 % of 2 nodes reserved, and a replica with no room.
    let scaled = Instant::now();
    let out = ebb.cli(&["scale", "api", "9"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let adding = wait_for("a node_adding event", Duration::from_secs(60), || event(&ebb, "node_adding"));
    let decided = scaled.elapsed();
    assert!(adding.contains("> target 30 %: adding a node (3 nodes wanted"), "{adding}");
    let added = wait_for("node3 to join", Duration::from_secs(180), || event(&ebb, "node_added"));
    let joined = scaled.elapsed();
    assert!(added.starts_with("node node3 joined the swarm: added "), "{added}");
    let on_node3 = wait_for("9 replicas in service, one on node3", Duration::from_secs(120), || {
        let tasks = running_tasks(&swarm, &service);
        let healthy = ebb.replicas().iter().filter(|r| r["state"] == "in_service" && r["healthy"] == true).count();
        (healthy == 9 && tasks.values().any(|n| n == "node3")).then(|| scaled.elapsed())
    });
    let status = ebb.status();
    let cluster = &status["cluster"];
    println!("{}", String::from_utf8_lossy(&ebb.cli(&["status"]).stdout));
    assert_eq!(cluster["active_nodes"], 3, "{cluster:#}");
    assert_eq!(cluster["pending_cpus"], 0.0, "{cluster:#}");
    let node3 = cluster["nodes"].as_array().unwrap().iter().find(|n| n["hostname"] == "node3").cloned();
    assert!(node3.is_some_and(|n| n["replicas"].as_u64() >= Some(1)), "{cluster:#}");
    println!(
        "MEASURE: add_node to a node running replicas: decided {:.1} s after `ebb scale`, node3 added {:.1} s after the decision, a replica in service on it {:.1} s after the decision ({added})",
        decided.as_secs_f64(),
        (joined - decided).as_secs_f64(),
        (on_node3 - decided).as_secs_f64()
    );

    // Down to 1, keeping the replica on node3 (protected from scale-in):
    // node2 runs none and goes; node3 stays while its replica is protected.
    let tasks = running_tasks(&swarm, &service);
    let ids: BTreeMap<String, String> =
        serde_json::from_str(&read(&state.join("swarm-replicas.json"))).expect("task -> replica ids");
    let kept =
        tasks.iter().find(|(_, n)| *n == "node3").and_then(|(t, _)| ids.get(t)).cloned().expect("node3's replica");
    let out = ebb.cli(&["protect", &kept]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lowered = Instant::now();
    let out = ebb.cli(&["scale", "api", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let held = wait_for("node2 removed, node3 kept for its protected replica", Duration::from_secs(180), || {
        let cluster = ebb.status()["cluster"].clone();
        let reason = cluster["reason"].as_str().unwrap_or_default().to_string();
        (event(&ebb, "node_removed").is_some() && reason.contains("node node3 runs 1 protected replica"))
            .then(|| (reason, lowered.elapsed()))
    });
    let (held, held_after) = held;
    assert!(held.ends_with("(kept until released)"), "{held}");
    let draining = events_of(&ebb, "node_draining");
    assert_eq!(draining.len(), 1, "{draining:#?}");
    assert!(draining[0].contains("≤ target 30 %: draining node node2 (0 ebb replicas to move)"), "{}", draining[0]);
    let removed = events_of(&ebb, "node_removed");
    assert!(removed[0].starts_with("node node2 is drained and runs no ebb replica: removing it"), "{}", removed[0]);

    // Released under GET load: node3's replica is replaced on node1 before
    // it leaves (the fleet's only replica: a stop first would fail
    // requests), then node3 is removed.
    let load = Load::start(ebb.listen, 4, "/api", Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(500));
    let released = Instant::now();
    let out = ebb.cli(&["protect", &kept, "--off"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gone = wait_for("node3 removed", Duration::from_secs(180), || {
        (events_of(&ebb, "node_removed").len() == 2).then(|| released.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (sent, failures) = load.finish();
    assert!(failures.is_empty(), "{} of {sent} GETs failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    let draining = events_of(&ebb, "node_draining");
    assert!(draining[1].contains("draining node node3 (1 ebb replica to move)"), "{}", draining[1]);
    assert!(draining[1].ends_with("each replica is replaced elsewhere before it leaves"), "{}", draining[1]);
    let removed = events_of(&ebb, "node_removed");
    assert!(removed[1].starts_with("node node3 is drained and runs no ebb replica: removing it"), "{}", removed[1]);
    // Replacement first: a new replica in service before node3's left.
    let events = ebb.events();
    let seq_of =
        |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().find(|e| pred(e)).map(|e| e["seq"].as_u64().unwrap());
    let old_leaves =
        seq_of(&|e| e["kind"] == "replica_draining" && e["replica"] == kept.as_str()).expect("node3's replica left");
    let new_serves = seq_of(&|e| {
        e["kind"] == "replica_in_service"
            && e["replica"] != kept.as_str()
            && e["seq"].as_u64().unwrap()
                > seq_of(&|e| e["kind"] == "node_draining" && e["reason"].as_str().unwrap().contains("node3")).unwrap()
    })
    .expect("a replacement in service");
    assert!(
        new_serves < old_leaves,
        "node3's replica left (event {old_leaves}) before its replacement served ({new_serves})"
    );
    let nodes = swarm.docker(&["node", "ls", "--format", "{{.Hostname}}"]);
    assert_eq!(nodes.trim(), "node1", "{nodes}");
    assert!(!swarm.dir.join("node2").exists() && !swarm.dir.join("node3").exists(), "a removed node's dockerd is left");
    ebb.wait_in_service(1, Duration::from_secs(60));
    let tasks = running_tasks(&swarm, &service);
    assert!(tasks.len() == 1 && tasks.values().all(|n| n == "node1"), "{tasks:?}");
    let cluster = wait_for("1 active node", Duration::from_secs(15), || {
        let c = ebb.status()["cluster"].clone();
        (c["active_nodes"] == 1 && c["nodes"].as_array().unwrap().len() == 1).then_some(c)
    });
    assert_eq!(cluster["wanted_nodes"], 1, "{cluster:#}");
    println!(
        "MEASURE: scale-in: node2 removed and node3 held for its protected replica {:.1} s after `ebb scale api 1`; once released, node3's replica replaced first and node3 removed {:.1} s later; {sent} GETs, 0 failed",
        held_after.as_secs_f64(),
        gone.as_secs_f64(),
    );
    for e in ebb.events().iter().filter(|e| e["service"] == "cluster" || e["kind"] == "replica_start_failed") {
        println!("event {} {}: {}", e["kind"], e["service"], e["reason"]);
    }
    assert!(event(&ebb, "node_action_failed").is_none(), "{:?}", event(&ebb, "node_action_failed"));
    // add_node's contract: the node joins ready to run the image.
    let start_failed = event(&ebb, "replica_start_failed").unwrap_or_default();
    assert!(!start_failed.contains("No such image"), "{start_failed}");
}

/// The reasons of every event of `kind`, oldest first.
fn events_of(ebb: &Ebb, kind: &str) -> Vec<String> {
    ebb.events()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The reason of the last event of `kind`, if any.
fn event(ebb: &Ebb, kind: &str) -> Option<String> {
    ebb.events().iter().rev().find(|e| e["kind"] == kind).map(|e| e["reason"].as_str().unwrap_or_default().to_string())
}

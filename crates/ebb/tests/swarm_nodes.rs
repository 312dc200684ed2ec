//! ebb on a real multi-node Docker Swarm: `scripts/local-swarm up 3` (three
//! dockerd nodes on this machine, each in its own network namespace), made
//! once by the one test here and removed by a guard (`down`) even when it
//! fails. Phases, on that one swarm:
//!
//! 1. k replicas start in parallel (about one start time, not k);
//! 2. they spread over the nodes, ebb reaches each on its node's address,
//!    reads CPU for tasks on every node, and stops exactly the task it chose
//!    on another node;
//! 3. story S2's fast example (`examples/docker/ebb.swarm.toml`) under
//!    `ebb load`: the fleet grows onto two nodes or more, ebb reports CPU
//!    for the tasks on the workers, no request fails, and it shrinks back to
//!    one replica once the load stops;
//! 4. under GET load, a node is killed: its replicas are detected lost and
//!    replaced on the other nodes, no client sees an error (GETs in flight
//!    on the lost replica are sent again elsewhere), and an event names the
//!    node;
//! 5. a node is labelled `ebb.drain` under GET load: ebb moves its replicas
//!    replacement first (never fewer serving), 0 failed GETs, then sets the
//!    node to drain.
//!
//! Needs root and dockerd: elsewhere it prints `SKIP:` and returns.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb::driver::{ContainerSpec, Driver, Engine, ReplicaHandle, ReplicaSpec, RunningReplica, SwarmDriver};
use ebb_core::config::CommandSpec;
use support::local_swarm::{running_tasks, LocalSwarm};
use support::*;

fn spec(image: &str, dir: &Path, replica: &str) -> ReplicaSpec {
    ReplicaSpec {
        service: "nodes".into(),
        replica_id: replica.into(),
        version: 1,
        command: CommandSpec::Argv(Vec::new()),
        env: BTreeMap::new(),
        state_dir: dir.to_path_buf(),
        log_path: dir.join("logs").join(format!("{replica}.log")),
        container: Some(ContainerSpec {
            image: image.to_string(),
            container_port: 8080,
            cpus: Some(0.25),
            memory: Some(256 << 20),
            stop_timeout: Duration::from_secs(2),
            options: Default::default(),
        }),
        ports: None,
        limits: None,
    }
}

fn task_of(replica: &RunningReplica) -> String {
    match &replica.handle {
        ReplicaHandle::Swarm { task, .. } => task.clone(),
        other => panic!("not a swarm task: {other:?}"),
    }
}

#[test]
fn a_three_node_swarm_parallel_starts_every_node_reached_and_a_lost_node_replaced() {
    let Some(swarm) = LocalSwarm::up(3, "10.232.0") else { return };
    // The in-process driver talks to the manager, and to each node's engine.
    std::env::set_var("DOCKER_HOST", swarm.manager());
    std::env::set_var("EBB_SWARM_NODE_HOST", swarm.node_host());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(driver_phases(&swarm));
    s2_scales_out_across_nodes_and_back_in(&swarm);
    ebb_loses_a_node(&swarm);
}

async fn driver_phases(swarm: &LocalSwarm) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_path_buf();
    let driver: Arc<dyn Driver> =
        Arc::new(SwarmDriver::new(Engine::connect().await.expect("the manager answers")).await.expect("a manager"));

    // One start: the time k parallel starts are measured against.
    let started = Instant::now();
    let first = driver.start(&spec(&swarm.image, &state, "nodes-0")).await.expect("one replica starts");
    let one = started.elapsed();

    // 1. Four more at once: in parallel, not 4 × one start.
    let started = Instant::now();
    let specs: Vec<ReplicaSpec> = (1..=4).map(|i| spec(&swarm.image, &state, &format!("nodes-{i}"))).collect();
    let results = futures_util::future::join_all(specs.iter().map(|s| driver.start(s))).await;
    let four = started.elapsed();
    let mut replicas: Vec<RunningReplica> = results.into_iter().map(|r| r.expect("a replica starts")).collect();
    replicas.insert(0, first);
    println!(
        "MEASURE: one swarm replica starts in {:.2} s; 4 more at once in {:.2} s",
        one.as_secs_f64(),
        four.as_secs_f64()
    );
    assert!(
        four < one.max(Duration::from_millis(500)) * 7 / 2,
        "4 starts took {four:?}, one {one:?}: they ran one after another"
    );
    let tasks: BTreeSet<String> = replicas.iter().map(task_of).collect();
    assert_eq!(tasks.len(), 5, "each replica its own task: {tasks:?}");

    // 2. Spread over the nodes; each task answers on its node's address.
    let service = ebb::driver::swarm::swarm_service_name("nodes", 1, &state);
    let nodes = running_tasks(swarm, &service);
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    let distinct: BTreeSet<&String> = nodes.values().collect();
    assert!(distinct.len() >= 2, "the replicas run on one node: {nodes:?}");
    for r in &replicas {
        assert!(r.addr.ip().to_string().starts_with("10.232.0."), "{} at {}", r.replica_id, r.addr);
        let answer = wait_for_answer(r.addr);
        assert_eq!(answer, 200, "{} at {}", r.replica_id, r.addr);
    }
    // CPU read for every task, on whichever node: two readings.
    let _ = driver.usage(&replicas).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let usage = driver.usage(&replicas).await;
    for r in &replicas {
        assert!(usage.contains_key(&r.replica_id), "no CPU for {} on its node: {usage:?}", r.replica_id);
    }

    // Scale-in: ebb's choice leaves, on a node that is not ebb's (node1).
    let remote = replicas
        .iter()
        .position(|r| nodes.get(&task_of(r)).is_some_and(|n| n != "node1"))
        .expect("a replica on another node than the manager");
    let chosen = replicas.remove(remote);
    let chosen_task = task_of(&chosen);
    driver.stop(&chosen, Duration::from_secs(2)).await.expect("the chosen replica stops");
    let left = wait_for("the count to settle at 4", Duration::from_secs(20), || {
        let now = running_tasks(swarm, &service);
        (now.len() == 4).then_some(now)
    });
    assert!(!left.contains_key(&chosen_task), "Swarm kept the task ebb stopped: {left:?}");
    for r in &replicas {
        assert!(left.contains_key(&task_of(r)), "{} was removed instead of {}", r.replica_id, chosen.replica_id);
    }

    // All at once, in parallel too.
    let stops = replicas.iter().map(|r| driver.stop(r, Duration::from_secs(2)));
    for result in futures_util::future::join_all(stops).await {
        result.expect("a replica stops");
    }
    wait_for("the Swarm services to go", Duration::from_secs(40), || {
        (!swarm
            .docker(&["service", "ls", "-q", "--filter", &format!("name={service}")])
            .contains(char::is_alphanumeric))
        .then_some(())
    });
}

fn wait_for_answer(addr: SocketAddr) -> u16 {
    wait_for("the task to answer", Duration::from_secs(20), || http(addr, "GET", "/api", None).ok().map(|r| r.status))
}

/// S2's target tracking (CPU 80 % of `cpus = 0.25`) on three nodes: a
/// rising `ebb load` grows the fleet onto at least two nodes with no failed
/// request, and ebb's status carries CPU for a replica on a worker node
/// (read from that node's engine); once the load stops, the fleet shrinks
/// back to one replica and the retired tasks go.
fn s2_scales_out_across_nodes_and_back_in(swarm: &LocalSwarm) {
    let mut ebb =
        Ebb::start(|admin, listen| example_config("examples/docker/ebb.swarm.toml", Some(&swarm.image), admin, listen));
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let service = ebb::driver::swarm::swarm_service_name("api", 1, &state);
    ebb.wait_in_service(1, Duration::from_secs(60));
    let url = format!("http://{}/work?cpu_ms=5", ebb.listen);
    let load = std::thread::spawn(move || {
        Command::new(EBB)
            .args(["load", &url, "--stages", "6s:5->120,16s:120", "--timeout", "10s", "--json"])
            .output()
            .unwrap()
    });
    // While the load runs: the widest spread of running tasks over nodes,
    // and a CPU reading in ebb's status for a replica on a worker node.
    let mut widest: BTreeMap<String, String> = BTreeMap::new();
    let mut remote_cpu: Option<(String, String, f64)> = None;
    while !load.is_finished() {
        let tasks = running_tasks(swarm, &service);
        let spread = |t: &BTreeMap<String, String>| t.values().collect::<BTreeSet<_>>().len();
        if spread(&tasks) > spread(&widest) {
            widest = tasks.clone();
        }
        if remote_cpu.is_none() {
            let ids: BTreeMap<String, String> =
                serde_json::from_str(&read(&state.join("swarm-replicas.json"))).unwrap_or_default();
            let replicas = ebb.replicas();
            remote_cpu = tasks.iter().filter(|(_, node)| *node != "node1").find_map(|(task, node)| {
                let id = ids.get(task)?;
                let replica = replicas.iter().find(|r| r["id"] == id.as_str())?;
                Some((id.clone(), node.clone(), replica["cpu"].as_f64()?))
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = load.join().unwrap();
    assert!(out.status.success(), "ebb load: {}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scaled: Vec<serde_json::Value> = ebb.events().into_iter().filter(|e| e["kind"] == "scaled").collect();
    let peak = scaled.iter().filter_map(|e| e["to"].as_u64()).max().unwrap_or(1);
    let nodes: BTreeSet<&String> = widest.values().collect();
    println!(
        "MEASURE: S2 on 3 nodes: {} requests, {} failed; peak {peak} replicas on {} node(s) {widest:?}; CPU of a worker's replica {remote_cpu:?}",
        summary["requests"], summary["errors"], nodes.len()
    );
    assert_eq!(summary["errors"], 0, "no request failed: {summary}\n{}", ebb.up_log());
    assert!(peak >= 2, "the fleet grew under load: {scaled:#?}");
    assert!(nodes.len() >= 2, "the grown fleet spans two nodes or more: {widest:?}");
    let (replica, node, _) = remote_cpu.expect("ebb's status has CPU for a replica on a worker node");
    assert!(node != "node1", "{replica} on {node}");

    // Back in: the load is gone, CPU falls, the fleet returns to one.
    wait_for("the fleet to scale back in to 1", Duration::from_secs(60), || {
        (ebb.status()["services"][0]["desired"] == 1 && ebb.replicas().len() == 1).then_some(())
    });
    assert!(
        ebb.events().iter().any(|e| e["kind"] == "scaled" && e["to"].as_u64() < e["from"].as_u64()),
        "scale-in was an event"
    );
    wait_for("the retired tasks to go", Duration::from_secs(30), || {
        (running_tasks(swarm, &service).len() == 1).then_some(())
    });
    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "ebb down: {}", String::from_utf8_lossy(&out.stderr));
    ebb.wait_exit(Duration::from_secs(60));
    wait_for("ebb down to remove its Swarm service", Duration::from_secs(40), || {
        (!swarm
            .docker(&["service", "ls", "-q", "--filter", &format!("name={service}")])
            .contains(char::is_alphanumeric))
        .then_some(())
    });
}

/// ebb up on the swarm, 3 replicas under GET load; a node with a replica is
/// killed: replaced on the others, 0 client errors, an event names it.
fn ebb_loses_a_node(swarm: &LocalSwarm) {
    let mut ebb = Ebb::start(|admin, listen| {
        let config = example_config("examples/docker/ebb.swarm.toml", Some(&swarm.image), admin, listen);
        // A fixed fleet of 3: what changes is only the node loss.
        let config = config
            .replace("replicas = { min = 1, max = 20, desired = 1 }", "replicas = { min = 3, max = 3, desired = 3 }");
        // A GET in flight on the lost replica is sent again elsewhere once
        // the replica fails (about 1 s), long before this timeout.
        let config = config
            .replace("[service.api.health]", "[service.api.proxy]\nupstream_timeout = \"10s\"\n\n[service.api.health]");
        config[..config.find("[[service.api.scaling").unwrap()].to_string()
    });
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let service = ebb::driver::swarm::swarm_service_name("api", 1, &state);
    ebb.wait_in_service(3, Duration::from_secs(60));
    // CPU is reported for every task, on whichever node it runs.
    wait_for("CPU for every replica", Duration::from_secs(15), || {
        let replicas = ebb.replicas();
        replicas.iter().all(|r| r["cpu"].is_number()).then_some(())
    });

    let tasks = running_tasks(swarm, &service);
    let victim = tasks.values().find(|n| *n != "node1").cloned().expect("a replica on a worker node");
    let ids: BTreeMap<String, String> =
        serde_json::from_str(&read(&state.join("swarm-replicas.json"))).expect("task -> replica ids");
    let lost: Vec<String> =
        tasks.iter().filter(|(_, n)| **n == victim).filter_map(|(t, _)| ids.get(t).cloned()).collect();
    assert!(!lost.is_empty(), "tasks {tasks:?}, ids {ids:?}");

    let load = Load::start(ebb.listen, 4, "/api", Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    swarm.run(&["kill", &victim]);
    // What Swarm did, every 500 ms (printed if it does not settle).
    let (history, stop_history) =
        (Arc::new(std::sync::Mutex::new(String::new())), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let recorder = {
        let (history, stop) = (history.clone(), stop_history.clone());
        let (manager, service) = (swarm.manager(), service.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = |args: &[&str]| {
                    let o = Command::new("docker").arg("-H").arg(&manager).args(args).output().unwrap();
                    String::from_utf8_lossy(&o.stdout).into_owned()
                };
                let count = out(&["service", "inspect", "-f", "{{.Spec.Mode.Replicated.Replicas}}", &service]);
                let tasks = out(&[
                    "service",
                    "ps",
                    &service,
                    "--format",
                    "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}}",
                ]);
                let line = format!(
                    "+{:.1}s count {}{}\n",
                    killed.elapsed().as_secs_f64(),
                    count.trim(),
                    tasks.lines().map(|l| format!("\n   {l}")).collect::<String>()
                );
                history.lock().unwrap().push_str(&line);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let detected = wait_for("the lost replicas out of the rotation", Duration::from_secs(30), || {
        let replicas = ebb.replicas();
        let serving = |id: &String| replicas.iter().any(|r| r["id"] == id.as_str() && r["healthy"] == true);
        (!lost.iter().any(serving)).then(|| killed.elapsed())
    });
    let replaced = loop {
        // (The ebb log says whether a start was placed elsewhere.)
        let replicas = ebb.replicas();
        let healthy: Vec<_> = replicas
            .iter()
            .filter(|r| r["state"] == "in_service" && r["healthy"] == true)
            .filter(|r| !lost.iter().any(|l| r["id"] == l.as_str()))
            .collect();
        if healthy.len() == 3 {
            break killed.elapsed();
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let log = ebb.up_log();
            panic!(
                "no 3 replicas on the other nodes after 60 s: {replicas:#?}\ntasks {:?}\nlog tail:\n{}",
                running_tasks(swarm, &service),
                &log[log.len().saturating_sub(6000)..]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(1));
    let (sent, failures) = load.finish();
    println!(
        "MEASURE: node {victim} killed with {} replica(s): out of the rotation in {:.2} s, replaced in {:.2} s; {sent} GETs, {} failed",
        lost.len(),
        detected.as_secs_f64(),
        replaced.as_secs_f64(),
        failures.len()
    );
    println!("GET failures: {:?}", &failures[..failures.len().min(5)]);
    // GETs already written to the lost replica are sent again elsewhere
    // once it fails: no client sees an error.
    assert!(failures.is_empty(), "{} of {sent} GETs failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    // Once Swarm sees the node down (~15 s), the lost task is shut down, the
    // count comes back to 3 running tasks, none on that node, and an event
    // names the node.
    let settled = Instant::now();
    loop {
        let now = running_tasks(swarm, &service);
        if now.len() == 3 && !now.values().any(|n| *n == victim) {
            break;
        }
        if settled.elapsed() > Duration::from_secs(60) {
            let log = ebb.up_log();
            panic!(
                "Swarm did not settle without {victim}: history {}\nlog tail:\n{}",
                history.lock().unwrap(),
                &log[log.len().saturating_sub(5000)..]
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_history.store(true, std::sync::atomic::Ordering::Relaxed);
    recorder.join().unwrap();
    wait_for("an event naming the lost node", Duration::from_secs(30), || {
        ebb.events().iter().any(|e| e.to_string().contains(&format!("node {victim}"))).then_some(())
    });
    ebb.wait_in_service(3, Duration::from_secs(10));

    // A node that runs a replica is labelled ebb.drain: ebb pauses it, starts
    // each replacement on another node and retires the old replica only once
    // the replacement serves (never fewer than 3 serving; Swarm's own
    // `--availability drain` stops the task first), then sets it to drain.
    let tasks = running_tasks(swarm, &service);
    let drained =
        tasks.values().find(|n| *n != "node1" && **n != victim).cloned().expect("a replica on the last worker");
    let load = Load::start(ebb.listen, 4, "/api", Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let node_id = swarm.docker(&["node", "inspect", "-f", "{{.ID}}", &drained]);
    swarm.docker(&["node", "update", "--label-add", "ebb.drain=true", node_id.trim()]);
    let mut fewest_serving = usize::MAX;
    let moved = wait_for("the replicas off the labelled node", Duration::from_secs(60), || {
        let now = running_tasks(swarm, &service);
        let healthy = ebb.replicas().iter().filter(|r| r["state"] == "in_service" && r["healthy"] == true).count();
        fewest_serving = fewest_serving.min(healthy);
        (now.len() == 3 && healthy == 3 && !now.values().any(|n| *n == drained)).then(|| started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (sent, failures) = load.finish();
    println!(
        "MEASURE: node {drained} labelled ebb.drain: its replicas moved in {:.2} s, never fewer than {fewest_serving} serving; {sent} GETs, {} failed",
        moved.as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "{} of {sent} GETs failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(fewest_serving >= 3, "replacement first: {fewest_serving} replicas served at one point, not 3");
    wait_for("the emptied node set to drain, and events naming it", Duration::from_secs(20), || {
        let availability = swarm.docker(&["node", "inspect", "-f", "{{.Spec.Availability}}", node_id.trim()]);
        let events = ebb.events();
        let named = |kind: &str| {
            events.iter().any(|e| e["kind"] == kind && e["reason"].as_str().unwrap_or("").contains(&drained))
        };
        (availability.trim() == "drain" && named("node_draining") && named("node_drained")).then_some(())
    });
    ebb.kill_up();
}

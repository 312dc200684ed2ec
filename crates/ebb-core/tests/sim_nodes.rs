//! `ebb simulate --node-pool`: replicas need room on a node, the ones
//! without wait (pending) until the live cluster decision's new node has
//! booted, and the extra nodes are drained and removed after the load.
//!
//! Nodes of 2 CPUs, replicas of 0.5: 4 per node. Target 50 %: one node
//! holds 1.0 reserved CPU (2 replicas) at target.

use std::time::Duration;

use ebb_core::cluster::ClusterConfig;
use ebb_core::config::{Bounds, Replicas};
use ebb_core::scaling::{Metric, ScalingConfig, TargetTracking};
use ebb_core::sim::{simulate, FleetModel, NodePoolModel, Policy, Run, SimOptions, Trace};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn run(boot: u64) -> Run {
    let mut t = TargetTracking::new(Metric::Cpu, 80.0);
    t.window = s(10);
    t.scale_out_cooldown = s(10);
    t.scale_in_cooldown = s(30);
    t.scale_in_stabilization = s(30);
    let policy = Policy {
        name: "cpu".into(),
        scaling: ScalingConfig { target_tracking: vec![t], ..Default::default() },
        replicas: Replicas { bounds: Bounds { min: 1, max: 20 }, desired: 2 },
        idle: None,
        warm_pool: None,
    };
    let cluster = ClusterConfig {
        target_reserved_cpu: 50.0,
        nodes: Bounds { min: 2, max: 5 },
        add_node: "add".into(),
        remove_node: "remove {node}".into(),
        scale_out_cooldown: s(10),
        scale_in_cooldown: s(60),
        add_node_timeout: s(600),
    };
    let pool = NodePoolModel { cluster, boot: s(boot), cpus: 2.0, replica_cpus: 0.5 };
    let options = SimOptions { node_pool: Some(pool), ..Default::default() };
    // 60 req/s (2 replicas of 50 at 80 %), 450 req/s from 300 s to 900 s
    // (12 replicas), then 60 again until 1800 s.
    let rates: Vec<f64> = (0..1800).map(|t| if (300..900).contains(&t) { 450.0 } else { 60.0 }).collect();
    let model = FleetModel { capacity: 50.0, boot: s(5), ..Default::default() };
    simulate(&policy, &model, &Trace::new(rates, "step"), &options)
}

#[test]
fn replicas_wait_for_room_until_a_node_boots_then_the_extra_nodes_go() {
    let run = run(60);
    let at = |t: usize| run.seconds[t];
    assert_eq!(at(299).nodes, 2, "min 2 nodes before the step");
    // 2 nodes hold 8: beyond, replicas wait for the first added node.
    // (A second's desired is decided at its end: the next second shows it.)
    let waiting = run.seconds[300..].windows(2).find(|w| w[0].desired > 8).expect("the fleet wants more than 8")[1];
    assert!(waiting.pending > 0 && waiting.nodes == 2, "{waiting:?}");
    let adding: Vec<_> = run.events.iter().filter(|e| e.kind == "node_adding").collect();
    assert!(!adding.is_empty(), "{:#?}", run.events);
    // 5 replicas: 2.5 of 4.0 = 62 %: ceil(2.5 / 1.0) = 3 nodes, before any waits.
    assert!(
        adding[0]
            .reason
            .starts_with("reserved CPU 2.50 of 2 nodes' 4.00 = 62 % > target 50 %: adding a node (3 nodes wanted)"),
        "{}",
        adding[0].reason
    );
    for e in run.events.iter().filter(|e| e.kind.starts_with("node_")) {
        println!("{:>5} {} {}", e.at, e.kind, e.reason);
    }
    // The first node is ready one node boot (60 s) after its decision.
    let added = run.events.iter().find(|e| e.kind == "node_added").expect("a node joins");
    assert_eq!(added.at, adding[0].at + 60, "{added:?}");
    assert!(added.reason.contains("added 60.0 s after the decision"), "{}", added.reason);
    // 12 replicas in service at last, on at least 3 nodes (4 per node).
    let full = run.seconds[300..900].iter().find(|s| s.in_service >= 12).expect("12 replicas in service");
    assert!(full.nodes >= 3, "{full:?}");
    // After the load: back to 2 nodes; each removal drained a worker first.
    assert_eq!(at(1799).nodes, 2, "{:?}", at(1799));
    let drained: Vec<_> = run.events.iter().filter(|e| e.kind == "node_draining").collect();
    let removed: Vec<_> = run.events.iter().filter(|e| e.kind == "node_removed").collect();
    assert!(!drained.is_empty() && drained.len() == removed.len(), "{:#?}", run.events);
    assert!(drained.iter().all(|e| !e.reason.contains("node node1 ")), "never the manager: {drained:#?}");
    for (d, r) in drained.iter().zip(&removed) {
        assert!(r.at >= d.at, "removed after its drain: {d:?} {r:?}");
    }
}

#[test]
fn a_slower_node_boot_keeps_replicas_waiting_longer() {
    // Seconds with a replica waiting for room: more with a 3 min boot.
    let waiting = |run: &Run| run.seconds.iter().filter(|s| s.pending > 0).count();
    let (fast, slow) = (run(30), run(180));
    assert!(waiting(&slow) > waiting(&fast) + 100, "fast {} s, slow {} s", waiting(&fast), waiting(&slow));
    assert!(slow.summary.slo_violation_seconds >= fast.summary.slo_violation_seconds);
}

//! `cluster::decide`: when ebb adds a Swarm node, drains one, removes it,
//! as tables of snapshots with the arithmetic in comments. Nodes have
//! 2 CPUs, the target is 30 % (one node holds 0.6 reserved CPUs at target).

use ebb_core::cluster::{decide, ClusterAction, ClusterConfig, ClusterInput, NodeFacts};
use ebb_core::scaling::Bounds;
use std::time::Duration;

fn config() -> ClusterConfig {
    ClusterConfig {
        target_reserved_cpu: 30.0,
        nodes: Bounds { min: 2, max: 3 },
        add_node: "add".into(),
        remove_node: "remove {node}".into(),
        scale_out_cooldown: Duration::from_secs(60),
        scale_in_cooldown: Duration::from_secs(300),
        add_node_timeout: Duration::from_secs(600),
    }
}

/// Node K (node1 the manager) with `replicas` of 0.25 CPUs each.
fn node(k: u32, replicas: u32) -> NodeFacts {
    NodeFacts {
        id: format!("id{k}"),
        hostname: format!("node{k}"),
        cpus: 2.0,
        ready: true,
        active: true,
        manager: k == 1,
        drained_by_ebb: false,
        reserved: 0.25 * f64::from(replicas),
        replicas,
        protected: 0,
    }
}

fn at(s: u64, nodes: Vec<NodeFacts>) -> ClusterInput {
    ClusterInput { now: Duration::from_secs(s), nodes, ..Default::default() }
}

fn drain(k: u32) -> ClusterAction {
    ClusterAction::Drain { id: format!("id{k}"), hostname: format!("node{k}") }
}

fn remove(k: u32) -> ClusterAction {
    ClusterAction::Remove { id: format!("id{k}"), hostname: format!("node{k}") }
}

#[test]
fn reservations_above_the_target_add_a_node_and_say_why() {
    // 5 × 0.25 = 1.25 of 4.00 = 31 % > 30 %: ceil(1.25 / 0.6) = ceil(2.08) = 3.
    let d = decide(&config(), &at(1000, vec![node(1, 3), node(2, 2)]));
    assert_eq!(d.action, ClusterAction::AddNode);
    assert_eq!((d.active, d.wanted), (2, 3));
    assert_eq!(d.reason, "reserved CPU 1.25 of 2 nodes' 4.00 = 31 % > target 30 %: adding a node (3 nodes wanted)");
}

#[test]
fn at_the_target_nothing_changes() {
    // 4 × 0.25 = 1.00 of 4.00 = 25 %: ceil(1.0 / 0.6) = 2, as many as there are.
    let d = decide(&config(), &at(1000, vec![node(1, 2), node(2, 2)]));
    assert_eq!(d.action, ClusterAction::Hold);
    assert_eq!(d.wanted, 2);
    // 1.2 of 4.0 is exactly 30 %: ceil(1.2 / 0.6) = 2, not 3 (float noise forgiven).
    let mut nodes = vec![node(1, 0), node(2, 0)];
    nodes[0].reserved = 1.2;
    assert_eq!(decide(&config(), &at(1000, nodes)).action, ClusterAction::Hold);
}

#[test]
fn pending_replicas_count_as_demand_and_max_caps_it() {
    // Both nodes full (8 × 0.25 each = 2.0 + 2.0) and 1.0 pending:
    // ceil(5.0 / 0.6) = 9, capped at max 3.
    let input = ClusterInput { pending: 1.0, ..at(1000, vec![node(1, 8), node(2, 8)]) };
    let d = decide(&config(), &input);
    assert_eq!(d.action, ClusterAction::AddNode);
    assert_eq!(d.wanted, 3);
    assert!(d.reason.contains("4.00 + 1.00 pending of 2 nodes' 4.00 = 125 %"), "{}", d.reason);
    assert!(d.reason.ends_with("(3 nodes wanted, max 3)"), "{}", d.reason);
    // At max already: hold, and say so.
    let input = ClusterInput { pending: 1.0, ..at(1000, vec![node(1, 8), node(2, 8), node(3, 8)]) };
    let d = decide(&config(), &input);
    assert_eq!(d.action, ClusterAction::Hold);
    assert!(d.reason.contains("at the maximum"), "{}", d.reason);
}

#[test]
fn an_add_under_way_and_the_scale_out_cooldown_hold() {
    let busy = vec![node(1, 4), node(2, 4)]; // 2.0 of 4.0 = 50 %: 4 wanted, max 3
    let adding = ClusterInput { adding: true, last_add: Some(Duration::from_secs(990)), ..at(1000, busy.clone()) };
    let d = decide(&config(), &adding);
    assert_eq!(d.action, ClusterAction::Hold);
    assert!(d.reason.starts_with("waiting for add_node"), "{}", d.reason);
    // The add finished 10 s ago (its node joined, then failed): 50 s left.
    let cooling = ClusterInput { last_add: Some(Duration::from_secs(990)), ..at(1000, busy.clone()) };
    let d = decide(&config(), &cooling);
    assert_eq!(d.action, ClusterAction::Hold);
    assert!(d.reason.ends_with("in the scale-out cooldown for 50 s"), "{}", d.reason);
    let after = ClusterInput { last_add: Some(Duration::from_secs(930)), ..at(1000, busy) };
    assert_eq!(decide(&config(), &after).action, ClusterAction::AddNode);
}

#[test]
fn scale_in_drains_the_worker_with_fewest_replicas_never_a_manager() {
    // 2 × 0.25 = 0.5 of 6.0 = 8 %: ceil(0.5 / 0.6) = 1, min 2: drain one of 3.
    // node1 (the manager) runs none, node2 one, node3 one: node3 (a tie,
    // the last to join) is drained, not node1.
    let d = decide(&config(), &at(1000, vec![node(1, 0), node(2, 1), node(3, 1)]));
    assert_eq!(d.action, drain(3));
    assert_eq!(d.wanted, 2);
    assert!(d.reason.contains("draining node node3 (1 ebb replica to move)"), "{}", d.reason);
    assert!(d.reason.ends_with("(2 nodes wanted, min 2)"), "{}", d.reason);
    // Fewer replicas wins over the name.
    let d = decide(&config(), &at(1000, vec![node(1, 0), node(2, 0), node(3, 2)]));
    assert_eq!(d.action, drain(2));
    // At min: nothing to drain.
    assert_eq!(decide(&config(), &at(1000, vec![node(1, 0), node(2, 0)])).action, ClusterAction::Hold);
}

#[test]
fn a_node_running_a_protected_replica_is_not_drained() {
    // As above, 2 of 3 nodes wanted: node3 (fewest replicas) would go, but
    // its replica is protected, so node2 goes instead.
    let protected = |k, replicas| NodeFacts { protected: 1, ..node(k, replicas) };
    let d = decide(&config(), &at(1000, vec![node(1, 0), node(2, 2), protected(3, 1)]));
    assert_eq!(d.action, drain(2));
    // Every worker keeps one: nothing is drained, and the reason says why.
    let d = decide(&config(), &at(1000, vec![node(1, 0), protected(2, 1), protected(3, 1)]));
    assert_eq!(d.action, ClusterAction::Hold);
    assert!(d.reason.ends_with("but node node2 runs 1 protected replica (kept until released)"), "{}", d.reason);
}

#[test]
fn scale_in_waits_for_its_cooldown_and_never_calls_for_an_add_back() {
    let quiet = vec![node(1, 1), node(2, 1), node(3, 0)];
    // Added 100 s ago: 200 s of the 5 min scale-in cooldown left.
    let input = ClusterInput { last_add: Some(Duration::from_secs(900)), ..at(1000, quiet.clone()) };
    let d = decide(&config(), &input);
    assert_eq!(d.action, ClusterAction::Hold);
    assert!(d.reason.ends_with("in the scale-in cooldown for 3 min 20 s"), "{}", d.reason);
    // 3 × 0.25 = 0.75 on 3 nodes: ceil(0.75 / 0.6) = 2 < 3: a drain; on
    // the 2 left it is 0.75 of 4.0 = 19 %, under the target: no add back.
    let mut three = quiet;
    three[0].replicas = 2;
    three[0].reserved = 0.5;
    assert_eq!(decide(&config(), &at(1000, three)).action, drain(3));
    let d = decide(&config(), &at(1000, vec![node(1, 2), node(2, 1)]));
    assert_eq!(d.action, ClusterAction::Hold);
}

#[test]
fn a_drained_node_is_removed_only_once_it_runs_no_ebb_replica() {
    let draining = |replicas| NodeFacts { active: false, drained_by_ebb: true, ..node(3, replicas) };
    let d = decide(&config(), &at(1000, vec![node(1, 1), node(2, 1), draining(1)]));
    assert_eq!(d.action, ClusterAction::Hold);
    assert!(d.reason.contains("waiting for node node3 to drain (1 ebb replica left)"), "{}", d.reason);
    let d = decide(&config(), &at(1000, vec![node(1, 1), node(2, 2), draining(0)]));
    assert_eq!(d.action, remove(3));
    assert!(d.reason.starts_with("node node3 is drained and runs no ebb replica: removing it"), "{}", d.reason);
    // A node someone else drained (maintenance) is never removed.
    let theirs = NodeFacts { active: false, ..node(3, 0) };
    assert_eq!(decide(&config(), &at(1000, vec![node(1, 1), node(2, 1), theirs])).action, ClusterAction::Hold);
}

#[test]
fn demand_back_while_a_node_drains_makes_it_active_again() {
    // 2.0 on node1 and node2 = 50 % of their 4.0: 3 wanted; node3 drains.
    let draining = NodeFacts { active: false, drained_by_ebb: true, ..node(3, 1) };
    let d = decide(&config(), &at(1000, vec![node(1, 4), node(2, 4), draining]));
    assert_eq!(d.action, ClusterAction::Activate { id: "id3".into(), hostname: "node3".into() });
    assert!(d.reason.contains("making node node3 active again"), "{}", d.reason);
}

#[test]
fn down_nodes_are_no_capacity() {
    // node2 down: node1 alone, 1.0 of 2.0 = 50 % > 30 %: ceil(1.0 / 0.6) = 2 > 1.
    let down = NodeFacts { ready: false, ..node(2, 0) };
    let d = decide(&config(), &at(1000, vec![node(1, 4), down]));
    assert_eq!(d.action, ClusterAction::AddNode);
    assert_eq!(d.active, 1);
    assert!(d.reason.contains("of 1 node's 2.00 = 50 %"), "{}", d.reason);
}

// ---------------------------------------------------------------------------
// A node a user asked ebb to empty (label `ebb.drain`), replacement first.
// ---------------------------------------------------------------------------

#[test]
fn a_labelled_node_is_paused_then_emptied_then_drained() {
    use ebb_core::node_drain::{moves_replicas_off, requested_drain, Availability, RequestedDrain};
    let table = [
        // (availability, ebb replicas on it) -> step
        (Availability::Active, 2, RequestedDrain::Pause),
        (Availability::Active, 0, RequestedDrain::Pause),
        (Availability::Pause, 2, RequestedDrain::MoveReplicas),
        (Availability::Pause, 0, RequestedDrain::Finish),
        (Availability::Drain, 1, RequestedDrain::Done),
        (Availability::Drain, 0, RequestedDrain::Done),
    ];
    for (availability, replicas, step) in table {
        assert_eq!(requested_drain(availability, replicas), step, "{availability:?} with {replicas} replicas");
    }
    // Replicas move only once the node takes no new task (a replacement
    // must not land where the old one leaves), and from ebb's own drains.
    assert!(!moves_replicas_off(false, true, Availability::Active));
    assert!(moves_replicas_off(false, true, Availability::Pause));
    assert!(moves_replicas_off(false, true, Availability::Drain));
    assert!(moves_replicas_off(true, false, Availability::Pause));
    assert!(!moves_replicas_off(false, false, Availability::Pause), "someone else's pause moves nothing");
}

//! A node pool in the simulator (`ebb simulate --node-pool`): replicas
//! need room on a node (`replica_cpus` of its `cpus`), a replica with no
//! room waits (pending, as Swarm's "no suitable node"), and the same
//! [`cluster::decide`] as live adds a node (ready `boot` later), drains
//! one (its replicas leave and are replaced elsewhere) and removes it.
//! Decided every 2 s of virtual time, as the live task polls.

use crate::cluster::{self, ClusterAction, ClusterConfig, ClusterInput, NodeFacts};
use std::time::Duration;

use super::engine::SimEvent;

/// `--node-pool boot=90s,cpus=2` with the file's `[cluster]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePoolModel {
    pub cluster: ClusterConfig,
    /// From `add_node` to the node ready for replicas.
    pub boot: Duration,
    /// CPUs of a node.
    pub cpus: f64,
    /// CPUs a replica reserves (the service's `cpus`).
    pub replica_cpus: f64,
}

impl NodePoolModel {
    /// Replicas one node holds.
    pub fn slots(&self) -> u32 {
        if self.replica_cpus <= 0.0 {
            return u32::MAX;
        }
        (self.cpus / self.replica_cpus + 1e-9).floor() as u32
    }
}

/// How often the cluster decides (the live task's poll).
const DECIDE_EVERY_MS: u64 = 2000;

#[derive(Debug, Clone)]
struct Node {
    number: u32,
    /// ms of virtual time; in the future while it boots.
    ready_at: u64,
    added_at: u64,
    announced: bool,
    draining: bool,
    replicas: u32,
}

/// The nodes of a run.
#[derive(Debug, Clone)]
pub(super) struct Nodes {
    model: NodePoolModel,
    nodes: Vec<Node>,
    next: u32,
    last_add: Option<Duration>,
    last_remove: Option<Duration>,
}

impl Nodes {
    /// `nodes.min` nodes, ready from the start; node1 is the manager.
    pub(super) fn new(model: NodePoolModel) -> Nodes {
        let count = model.cluster.nodes.min.max(1);
        let nodes = (1..=count)
            .map(|number| Node { number, ready_at: 0, added_at: 0, announced: true, draining: false, replicas: 0 })
            .collect();
        Nodes { model, nodes, next: count + 1, last_add: None, last_remove: None }
    }

    /// A node with room at `now` (ms) for one more replica, the one with
    /// the fewest (Swarm's spread), or `None`: the replica waits.
    pub(super) fn place(&mut self, now: u64) -> Option<u32> {
        let slots = self.model.slots();
        let node = self
            .nodes
            .iter_mut()
            .filter(|n| n.ready_at <= now && !n.draining && n.replicas < slots)
            .min_by_key(|n| (n.replicas, n.number))?;
        node.replicas += 1;
        Some(node.number)
    }

    pub(super) fn release(&mut self, number: u32) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.number == number) {
            node.replicas = node.replicas.saturating_sub(1);
        }
    }

    /// Ready nodes at `now` (ms): the pool's size in the second's numbers.
    pub(super) fn ready(&self, now: u64) -> u32 {
        self.nodes.iter().filter(|n| n.ready_at <= now).count() as u32
    }

    /// One step at `now` (ms): nodes that finished booting are announced;
    /// every 2 s the cluster decides with `waiting` replicas pending.
    /// Returns the node drained, if one was: its replicas leave.
    pub(super) fn step(&mut self, now: u64, waiting: u32, events: &mut Vec<SimEvent>) -> Option<u32> {
        let at = now / 1000;
        let event =
            |kind: &'static str, reason: String| SimEvent { at, kind, replica: None, from: None, to: None, reason };
        for node in self.nodes.iter_mut().filter(|n| !n.announced && n.ready_at <= now) {
            node.announced = true;
            events.push(event(
                "node_added",
                format!(
                    "node node{} joined the swarm: added {:.1} s after the decision (simulated node boot; {:.2} CPUs)",
                    node.number,
                    (node.ready_at - node.added_at) as f64 / 1000.0,
                    self.model.cpus
                ),
            ));
        }
        if !now.is_multiple_of(DECIDE_EVERY_MS) {
            return None;
        }
        let facts: Vec<NodeFacts> = self
            .nodes
            .iter()
            .filter(|n| n.ready_at <= now)
            .map(|n| NodeFacts {
                id: n.number.to_string(),
                hostname: format!("node{}", n.number),
                cpus: self.model.cpus,
                ready: true,
                active: !n.draining,
                manager: n.number == 1,
                drained_by_ebb: n.draining,
                reserved: f64::from(n.replicas) * self.model.replica_cpus,
                replicas: n.replicas,
                // The simulator has no scale-in protection.
                protected: 0,
            })
            .collect();
        let input = ClusterInput {
            now: Duration::from_millis(now),
            nodes: facts,
            pending: f64::from(waiting) * self.model.replica_cpus,
            adding: self.nodes.iter().any(|n| n.ready_at > now),
            last_add: self.last_add,
            last_remove: self.last_remove,
        };
        let decision = cluster::decide(&self.model.cluster, &input);
        let number = |id: &str| id.parse::<u32>().unwrap_or(0);
        match decision.action {
            ClusterAction::Hold => None,
            ClusterAction::AddNode => {
                let ready_at = now + self.model.boot.as_millis() as u64;
                let node =
                    Node { number: self.next, ready_at, added_at: now, announced: false, draining: false, replicas: 0 };
                self.next += 1;
                self.nodes.push(node);
                self.last_add = Some(input.now);
                events.push(event("node_adding", decision.reason));
                None
            }
            ClusterAction::Activate { id, .. } => {
                self.nodes.iter_mut().filter(|n| n.number == number(&id)).for_each(|n| n.draining = false);
                events.push(event("node_activated", decision.reason));
                None
            }
            ClusterAction::Drain { id, .. } => {
                self.nodes.iter_mut().filter(|n| n.number == number(&id)).for_each(|n| n.draining = true);
                self.last_remove = Some(input.now);
                events.push(event("node_draining", decision.reason));
                Some(number(&id))
            }
            ClusterAction::Remove { id, .. } => {
                self.nodes.retain(|n| n.number != number(&id));
                self.last_remove = Some(input.now);
                events.push(event("node_removed", decision.reason));
                None
            }
        }
    }
}

//! The second level of capacity: the Swarm nodes replicas are placed on.
//!
//! Replicas reserve CPU on their node (`cpus`); `[cluster]` keeps the
//! reserved share of the nodes' CPUs near `target_reserved_cpu` by adding a
//! node (the user's `add_node` command) or draining then removing one
//! (`remove_node`), like cluster-autoscaler and nomad-autoscaler call a
//! cloud provider. [`decide`] is a pure function of one snapshot and `now`;
//! the live cluster task feeds it what Swarm says every few seconds.
//!
//! The arithmetic is target tracking's (`ceil(sum / target)`), with nodes
//! for replicas:
//!
//! ```text
//! wanted = ceil((reserved + pending) / (target × CPUs per node))
//! ```
//!
//! e.g. 1.25 CPUs reserved on 2 nodes of 2 CPUs at target 30 %:
//! `ceil(1.25 / (0.30 × 2)) = ceil(2.08) = 3` nodes. The ceiling is also
//! the hysteresis: a node is removed only when the rest hold the
//! reservations at or below the target, so a removal never calls for an add.

use crate::scaling::target::ceil_count;
use crate::scaling::{Bounds, Time};
use std::time::Duration;

/// `[cluster]` in `ebb.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Percent of the active nodes' CPUs that replicas may reserve (1–100).
    pub target_reserved_cpu: f64,
    /// How many nodes (ready, active) the cluster keeps.
    pub nodes: Bounds,
    /// Shell command that adds one node to the swarm (`sh -c`).
    pub add_node: String,
    /// Shell command that removes a node; `{node}` is its hostname.
    pub remove_node: String,
    /// No add within this long of the last add.
    pub scale_out_cooldown: Duration,
    /// No drain within this long of the last add or removal.
    pub scale_in_cooldown: Duration,
    /// How long `add_node` (and the node it adds joining) may take.
    pub add_node_timeout: Duration,
}

impl ClusterConfig {
    pub const DEFAULT_SCALE_OUT_COOLDOWN: Duration = Duration::from_secs(60);
    pub const DEFAULT_SCALE_IN_COOLDOWN: Duration = Duration::from_secs(300);
    pub const DEFAULT_ADD_NODE_TIMEOUT: Duration = Duration::from_secs(600);
    /// `remove_node`'s placeholder for the node's hostname.
    pub const NODE_PLACEHOLDER: &'static str = "{node}";
}

/// One Swarm node as the cluster task sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub id: String,
    pub hostname: String,
    /// CPUs the node offers to tasks.
    pub cpus: f64,
    /// Swarm says ready (false: down, unknown, disconnected).
    pub ready: bool,
    /// Availability `active` (not `drain` or `pause`): new tasks may land.
    pub active: bool,
    /// A manager: never drained or removed by ebb (quorum, and ebb talks
    /// to one).
    pub manager: bool,
    /// ebb drained it to remove it (a node drained by someone else is
    /// left alone).
    pub drained_by_ebb: bool,
    /// CPUs reserved on it by ebb's replicas.
    pub reserved: f64,
    /// ebb replicas (tasks) it runs.
    pub replicas: u32,
    /// Of those, replicas under scale-in protection: their node is not
    /// drained (as cluster-autoscaler keeps a node with a pod that may not
    /// be evicted).
    pub protected: u32,
}

/// What the cluster looks like at `now`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterInput {
    pub now: Time,
    pub nodes: Vec<NodeFacts>,
    /// CPUs wanted by ebb replicas Swarm could not place (pending: "no
    /// suitable node"): demand the nodes cannot hold.
    pub pending: f64,
    /// An `add_node` is running (or its node has not joined yet).
    pub adding: bool,
    /// When the last `add_node` started.
    pub last_add: Option<Time>,
    /// When the last drain (the start of a removal) was decided.
    pub last_remove: Option<Time>,
}

/// One step towards the wanted node count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAction {
    /// Run `add_node`.
    AddNode,
    /// Make a node ebb drained active again (cheaper than adding one).
    Activate {
        id: String,
        hostname: String,
    },
    /// Take the node out of placement and move ebb's replicas off it,
    /// replacement first (each replica is replaced elsewhere before it
    /// leaves), then the node is removed.
    Drain {
        id: String,
        hostname: String,
    },
    /// Run `remove_node` for a node ebb drained that runs no ebb replica.
    Remove {
        id: String,
        hostname: String,
    },
    Hold,
}

/// [`decide`]'s answer: the action, the numbers behind it and a sentence a
/// user reads in an event or in `ebb status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterDecision {
    pub action: ClusterAction,
    /// Active, ready nodes: where replicas can land.
    pub active: u32,
    /// Nodes the reservations want, within `nodes`.
    pub wanted: u32,
    /// Reserved (placed and pending) over the active nodes' CPUs, percent.
    pub reserved_percent: f64,
    pub reason: String,
}

/// The one step to take now (at most one: the next snapshot shows its
/// effect before another is decided).
pub fn decide(config: &ClusterConfig, input: &ClusterInput) -> ClusterDecision {
    let now = input.now;
    let active: Vec<&NodeFacts> = input.nodes.iter().filter(|n| n.ready && n.active).collect();
    let count = active.len() as u32;
    let cpus: f64 = active.iter().map(|n| n.cpus).sum();
    let placed: f64 = input.nodes.iter().map(|n| n.reserved).sum();
    let reserved = placed + input.pending;
    let percent = if cpus > 0.0 { reserved / cpus * 100.0 } else { 0.0 };
    let target = config.target_reserved_cpu;
    // Nodes are alike in a pool: the mean active node stands for a new one.
    let per_node =
        if count > 0 { cpus / f64::from(count) } else { input.nodes.iter().map(|n| n.cpus).fold(0.0, f64::max) };
    let raw_wanted = if per_node > 0.0 { ceil_count(reserved / (target / 100.0 * per_node)) } else { count };
    let wanted = config.nodes.clamp(raw_wanted);
    let pending = if input.pending > 0.0 { format!(" + {:.2} pending", input.pending) } else { String::new() };
    let numbers = format!(
        "reserved CPU {placed:.2}{pending} of {count} {} {cpus:.2} = {percent:.0} %",
        if count == 1 { "node's" } else { "nodes'" }
    );
    let wants = format!("{wanted} node{} wanted", if wanted == 1 { "" } else { "s" });
    let capped = if raw_wanted > wanted {
        format!(", max {}", config.nodes.max)
    } else if raw_wanted < wanted {
        format!(", min {}", config.nodes.min)
    } else {
        String::new()
    };
    let out = |action: ClusterAction, reason: String| ClusterDecision {
        action,
        active: count,
        wanted,
        reserved_percent: percent,
        reason,
    };
    let hold = |reason: String| out(ClusterAction::Hold, reason);

    // A node ebb drained is removed once no ebb replica runs on it, whatever
    // the load: if more nodes are wanted again, an active one was kept.
    if wanted <= count {
        if let Some(node) = input.nodes.iter().find(|n| n.drained_by_ebb && n.replicas == 0 && !n.manager) {
            return out(
                ClusterAction::Remove { id: node.id.clone(), hostname: node.hostname.clone() },
                format!("node {} is drained and runs no ebb replica: removing it ({numbers}, {wants})", node.hostname),
            );
        }
    }
    if input.adding {
        return hold(format!("waiting for add_node: the new node has not joined yet ({numbers}, {wants})"));
    }
    let over = format!("{numbers} > target {target} %");
    let under = format!("{numbers} ≤ target {target} %");
    if wanted > count {
        // Demand came back while a node drains: keep that one instead.
        if let Some(node) = input.nodes.iter().find(|n| n.drained_by_ebb && n.ready) {
            return out(
                ClusterAction::Activate { id: node.id.clone(), hostname: node.hostname.clone() },
                format!("{over}: making node {} active again instead of adding one ({wants}{capped})", node.hostname),
            );
        }
        if let Some(left) = cooldown_left(input.last_add, config.scale_out_cooldown, now) {
            return hold(format!("{over}: {wants}, in the scale-out cooldown for {}", secs(left)));
        }
        return out(ClusterAction::AddNode, format!("{over}: adding a node ({wants}{capped})"));
    }
    // One removal at a time: the drained node's replicas move first.
    if let Some(node) = input.nodes.iter().find(|n| n.drained_by_ebb && n.replicas > 0) {
        return hold(format!(
            "{under}: waiting for node {} to drain ({} ebb replica{} left)",
            node.hostname,
            node.replicas,
            if node.replicas == 1 { "" } else { "s" }
        ));
    }
    if wanted < count {
        let last = input.last_add.max(input.last_remove);
        if let Some(left) = cooldown_left(last, config.scale_in_cooldown, now) {
            return hold(format!("{under}: {wants}, in the scale-in cooldown for {}", secs(left)));
        }
        // The fewest ebb replicas to move; among equals the last to join
        // (highest hostname), so the first nodes stay. A node running a
        // protected replica stays.
        let workers: Vec<&&NodeFacts> = active.iter().filter(|n| !n.manager).collect();
        let victim = workers
            .iter()
            .filter(|n| n.protected == 0)
            .min_by(|a, b| a.replicas.cmp(&b.replicas).then_with(|| b.hostname.cmp(&a.hostname)));
        let Some(node) = victim else {
            if let Some(kept) = workers.first() {
                return hold(format!(
                    "{under}: {wants}, but node {} runs {} protected replica{} (kept until released)",
                    kept.hostname,
                    kept.protected,
                    if kept.protected == 1 { "" } else { "s" }
                ));
            }
            return hold(format!("{under}: {wants}, but every active node is a manager (never removed)"));
        };
        return out(
            ClusterAction::Drain { id: node.id.clone(), hostname: node.hostname.clone() },
            format!(
                "{under}: draining node {} ({} ebb replica{} to move) to remove it ({wants}{capped})",
                node.hostname,
                node.replicas,
                if node.replicas == 1 { "" } else { "s" }
            ),
        );
    }
    if raw_wanted > wanted && percent > target {
        return hold(format!("{over}: {wants}{capped}: at the maximum"));
    }
    hold(format!("{numbers}, target {target} %: {wants}{capped}"))
}

fn cooldown_left(last: Option<Time>, cooldown: Duration, now: Time) -> Option<Duration> {
    let until = last? + cooldown;
    (until > now).then(|| until - now)
}

fn secs(d: Duration) -> String {
    crate::scaling::metrics::duration(d)
}

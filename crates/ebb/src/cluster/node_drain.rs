//! The node-drain task: empties, replacement first, each Swarm node a user
//! labelled `ebb.drain` (`docker node update --label-add ebb.drain=true
//! NODE`), with or without `[cluster]`. It reads Swarm only while the
//! running fleet has a Swarm service (also one `ebb apply` added), and
//! connects to the manager then. The steps are the core's
//! ([`ebb_core::node_drain`]): pause the node, move each ebb replica off it
//! (its replacement in service elsewhere before it leaves), then set the
//! node to drain. Each step is an event naming the node.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bollard::models::NodeSpecAvailabilityEnum;
use ebb_core::node_drain::{moves_replicas_off, requested_drain, Availability, RequestedDrain};
use tokio_util::sync::CancellationToken;

use super::{move_replicas_off, read_snapshot, set_availability, Moves, POLL, SUBJECT};
use crate::driver::Engine;
use crate::events::{EventKind, EventLog, NewEvent};

/// A node carrying the `ebb.drain` label, as the last snapshot saw it.
#[derive(Debug, Clone)]
pub(crate) struct LabelledNode {
    pub id: String,
    pub hostname: String,
    pub availability: Availability,
    /// ebb replicas (tasks) still on it.
    pub replicas: u32,
}

/// What the task needs from `ebb up`.
pub struct NodeDrainTask {
    /// ebb's Swarm services carry it in `ebb.state_dir`.
    pub state_dir: PathBuf,
    pub events: Arc<EventLog>,
    pub services: Arc<crate::apply::Services>,
}

impl NodeDrainTask {
    pub async fn run(self, stop: CancellationToken) {
        // The manager, once a Swarm service runs (the swarm driver's engine).
        let mut manager: Option<bollard::Docker> = None;
        // When ebb paused each node (for the time its replicas took to move).
        let mut paused_at: HashMap<String, Instant> = HashMap::new();
        let mut moves = Moves::default();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            if !self.services.values().iter().any(|h| h.status().driver == "swarm") {
                continue;
            }
            let docker = match manager.as_ref() {
                Some(docker) => docker,
                None => match Engine::connect().await {
                    Ok(engine) => manager.insert(engine.docker),
                    Err(e) => {
                        tracing::debug!(error = %e, "Cannot reach the swarm's manager; no node drain this time.");
                        continue;
                    }
                },
            };
            let snapshot = match read_snapshot(docker, &self.state_dir, &self.services).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "Cannot read the swarm's nodes; no node drain this time.");
                    continue;
                }
            };
            paused_at.retain(|id, _| snapshot.requested.iter().any(|n| &n.id == id));
            for node in &snapshot.requested {
                match requested_drain(node.availability, node.replicas) {
                    RequestedDrain::Pause => {
                        match set_availability(docker, &node.id, NodeSpecAvailabilityEnum::PAUSE, None).await {
                            Ok(()) => {
                                paused_at.insert(node.id.clone(), Instant::now());
                                self.record(
                                    EventKind::NodeDraining,
                                    format!(
                                        "node {} is labelled ebb.drain: paused, its {} ebb replica(s) move to other nodes, each replaced before it leaves",
                                        node.hostname, node.replicas
                                    ),
                                );
                            }
                            Err(e) => self.record(
                                EventKind::NodeActionFailed,
                                format!("cannot pause node {} to drain it: {e}", node.hostname),
                            ),
                        }
                    }
                    RequestedDrain::Finish => {
                        match set_availability(docker, &node.id, NodeSpecAvailabilityEnum::DRAIN, None).await {
                            Ok(()) => {
                                let took = paused_at
                                    .remove(&node.id)
                                    .map(|t| format!(" (replicas moved in {:.1} s)", t.elapsed().as_secs_f64()))
                                    .unwrap_or_default();
                                self.record(
                                    EventKind::NodeDrained,
                                    format!("node {} runs no ebb replica any more: set to drain{took}", node.hostname),
                                );
                            }
                            Err(e) => self.record(
                                EventKind::NodeActionFailed,
                                format!("cannot set node {} to drain: {e}", node.hostname),
                            ),
                        }
                    }
                    RequestedDrain::MoveReplicas | RequestedDrain::Done => {}
                }
            }
            let from: HashSet<&str> = snapshot
                .requested
                .iter()
                .filter(|n| moves_replicas_off(false, true, n.availability))
                .map(|n| n.id.as_str())
                .collect();
            move_replicas_off(&self.services, &snapshot, &from, &mut moves).await;
        }
    }

    fn record(&self, kind: EventKind, reason: String) {
        self.events.record(NewEvent::new(SUBJECT, kind, reason));
    }
}

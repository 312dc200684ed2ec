//! The cluster task (`[cluster]`): every few seconds it reads the Swarm
//! nodes and the tasks of ebb's replicas from the manager, asks the core's
//! [`ebb_core::cluster::decide`] for one step, and takes it: runs the
//! user's `add_node` / `remove_node` command (`sh -c`, in the config file's
//! directory, with a timeout), or drains / reactivates a node through the
//! Swarm API. Each step is an event with the core's reason; the last
//! snapshot is the `cluster` section of `/api/v1/status`.
//!
//! A node ebb drains carries the label `ebb.cluster=drained`: it survives
//! an ebb restart, and a node someone else drained is left alone.
//!
//! [`node_drain`] empties a node a user labelled `ebb.drain`, replacement
//! first, with or without `[cluster]`; it shares this file's snapshot of
//! Swarm and its way of moving replicas.

pub mod node_drain;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState, TaskState};
use bollard::query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder, UpdateNodeOptions};
use ebb_core::cluster::{decide, ClusterAction, ClusterConfig, ClusterInput, NodeFacts};
use ebb_core::node_drain::{Availability, DRAIN_REQUEST_LABEL};
use tokio_util::sync::CancellationToken;

use crate::driver::docker::{message_of, LABEL_REPLICA, LABEL_SERVICE, LABEL_STATE_DIR};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::wire::{ClusterStatus, NodeStatus};

/// How often Swarm is read.
const POLL: Duration = Duration::from_secs(2);
/// The node label that marks a drain as ebb's.
pub const DRAINED_LABEL: &str = "ebb.cluster";
/// What a command's output keeps in an event.
const OUTPUT_TAIL: usize = 600;
/// `service` of the cluster's events.
const SUBJECT: &str = "cluster";
/// How long a replica on a node being drained waits for its replacement
/// before it leaves anyway (its interruption notice).
const MOVE_NOTICE: Duration = Duration::from_secs(120);

/// The last snapshot, for the status document.
#[derive(Default)]
pub struct ClusterBoard(Mutex<Option<ClusterStatus>>);

impl ClusterBoard {
    pub fn status(&self) -> Option<ClusterStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the task needs from `ebb up`.
pub struct ClusterTask {
    pub config: ClusterConfig,
    /// The manager ebb drives.
    pub docker: bollard::Docker,
    /// ebb's services carry it in `ebb.state_dir` (others' are not counted).
    pub state_dir: PathBuf,
    /// Where the commands run (the config file's directory).
    pub workdir: PathBuf,
    pub events: Arc<EventLog>,
    pub board: Arc<ClusterBoard>,
    /// ebb's services: which replicas are protected, and whom to ask to
    /// replace a replica before its node goes.
    pub services: Arc<crate::apply::Services>,
}

/// An `add_node` under way: the command, then its node joining.
struct Adding {
    started: Instant,
    /// Node ids before the command ran: a new ready one is the added node.
    before: HashSet<String>,
    /// The command's result, once it ended (Ok: how long it took).
    done: Option<Result<Duration, String>>,
    result: tokio::sync::oneshot::Receiver<Result<Duration, String>>,
}

impl ClusterTask {
    pub async fn run(self, stop: CancellationToken) {
        let epoch = Instant::now();
        let mut adding: Option<Adding> = None;
        let (mut last_add, mut last_remove) = (None, None);
        let mut last_error: Option<String> = None;
        let mut last_reason = String::new();
        // Replicas asked to move off a node ebb is draining, and the
        // controller's last refusal for each one it refused.
        let mut moves = Moves::default();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let snapshot = match self.snapshot().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the swarm's nodes and tasks; the cluster holds.");
                    continue;
                }
            };
            // The add under way: its command's end, then its node joining.
            if let Some(add) = adding.as_mut() {
                if add.done.is_none() {
                    if let Ok(result) = add.result.try_recv() {
                        add.done = Some(result);
                    }
                }
                let joined = snapshot.nodes.iter().find(|n| n.ready && !add.before.contains(&n.id));
                let waited = add.started.elapsed();
                // Added once the command ended well and its node is ready
                // (a node may join before the command has made it ready,
                // e.g. loaded its images).
                let failed = match (&add.done, joined) {
                    (Some(Err(e)), _) => Some(e.clone()),
                    (Some(Ok(took)), Some(node)) => {
                        self.record(
                            EventKind::NodeAdded,
                            format!(
                                "node {} joined the swarm: added {:.1} s after the decision (add_node took {:.1} s; {:.2} CPUs)",
                                node.hostname,
                                waited.as_secs_f64(),
                                took.as_secs_f64(),
                                node.cpus
                            ),
                        );
                        last_error = None;
                        adding = None;
                        None
                    }
                    _ if waited > self.config.add_node_timeout => Some(format!(
                        "no new node joined the swarm within add_node_timeout ({})",
                        humantime::format_duration(self.config.add_node_timeout)
                    )),
                    _ => None,
                };
                if let Some(why) = failed {
                    let text = format!("add_node failed: {why}");
                    self.record(EventKind::NodeActionFailed, text.clone());
                    last_error = Some(text);
                    adding = None;
                }
            }
            let now = epoch.elapsed();
            let input = ClusterInput {
                now,
                nodes: snapshot.nodes.clone(),
                pending: snapshot.pending,
                adding: adding.is_some(),
                last_add,
                last_remove,
            };
            let decision = decide(&self.config, &input);
            self.publish(&snapshot, &decision, last_error.clone());
            if decision.reason != last_reason {
                tracing::debug!(reason = %decision.reason, "Cluster.");
                last_reason = decision.reason.clone();
            }
            let outcome = match &decision.action {
                ClusterAction::Hold => Ok(()),
                ClusterAction::AddNode => {
                    self.record(EventKind::NodeAdding, decision.reason.clone());
                    last_add = Some(now);
                    adding = Some(self.start_add(&snapshot));
                    Ok(())
                }
                ClusterAction::Activate { id, hostname } => self
                    .set_availability(id, NodeSpecAvailabilityEnum::ACTIVE, false)
                    .await
                    .map(|()| self.record(EventKind::NodeActivated, decision.reason.clone()))
                    .map_err(|e| format!("cannot make node {hostname} active: {e}")),
                ClusterAction::Drain { id, hostname } => {
                    last_remove = Some(now);
                    // Paused, not drained: Swarm places nothing new there
                    // but stops nothing; ebb replaces each replica first.
                    self.set_availability(id, NodeSpecAvailabilityEnum::PAUSE, true)
                        .await
                        .map(|()| {
                            self.record(
                                EventKind::NodeDraining,
                                format!("{}; each replica is replaced elsewhere before it leaves", decision.reason),
                            )
                        })
                        .map_err(|e| format!("cannot drain node {hostname}: {e}"))
                }
                ClusterAction::Remove { id, hostname } => {
                    last_remove = Some(now);
                    let started = Instant::now();
                    // What else runs there (not ebb's) moves now.
                    let drained = self.set_availability(id, NodeSpecAvailabilityEnum::DRAIN, true).await;
                    if let Err(e) = drained {
                        tracing::warn!(node = %hostname, error = %e, "Could not set the node to drain before removing it.");
                    }
                    match self.remove(hostname, &stop).await {
                        Ok(()) => {
                            self.record(
                                EventKind::NodeRemoved,
                                format!(
                                    "{} (remove_node took {:.1} s)",
                                    decision.reason,
                                    started.elapsed().as_secs_f64()
                                ),
                            );
                            Ok(())
                        }
                        Err(e) => Err(format!("remove_node {hostname} failed: {e}")),
                    }
                }
            };
            match outcome {
                Ok(()) if decision.action != ClusterAction::Hold => last_error = None,
                Ok(()) => {}
                Err(e) => {
                    self.record(EventKind::NodeActionFailed, e.clone());
                    last_error = Some(e);
                }
            }
            self.move_replicas_off_draining_nodes(&snapshot, &mut moves).await;
        }
    }

    /// Moves ebb's replicas off the nodes ebb is draining, replacement
    /// first ([`move_replicas_off`]).
    async fn move_replicas_off_draining_nodes(&self, snapshot: &Snapshot, moves: &mut Moves) {
        let draining: HashSet<&str> =
            snapshot.nodes.iter().filter(|n| n.drained_by_ebb).map(|n| n.id.as_str()).collect();
        move_replicas_off(&self.services, snapshot, &draining, moves).await;
    }

    fn record(&self, kind: EventKind, reason: String) {
        self.events.record(NewEvent::new(SUBJECT, kind, reason));
    }

    /// Runs `add_node` in the background: a node may take minutes to boot,
    /// and the status keeps saying what the cluster waits for.
    fn start_add(&self, snapshot: &Snapshot) -> Adding {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (command, workdir, timeout) =
            (self.config.add_node.clone(), self.workdir.clone(), self.config.add_node_timeout);
        tokio::spawn(async move {
            let started = Instant::now();
            let result = run_command(&command, &workdir, timeout).await.map(|_| started.elapsed());
            let _ = tx.send(result);
        });
        Adding {
            started: Instant::now(),
            before: snapshot.nodes.iter().map(|n| n.id.clone()).collect(),
            done: None,
            result: rx,
        }
    }

    async fn remove(&self, hostname: &str, stop: &CancellationToken) -> Result<(), String> {
        // The hostname goes into a shell command: only a plain name.
        if hostname.is_empty() || !hostname.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
            return Err(format!("the hostname {hostname:?} is not a plain name; not passed to a shell"));
        }
        let command = self.config.remove_node.replace(ClusterConfig::NODE_PLACEHOLDER, hostname);
        tokio::select! {
            result = run_command(&command, &self.workdir, self.config.add_node_timeout) => result.map(|_| ()),
            _ = stop.cancelled() => Err("ebb is stopping".into()),
        }
    }

    /// Drain (labelled as ebb's) or make active again (label removed).
    async fn set_availability(&self, id: &str, to: NodeSpecAvailabilityEnum, ours: bool) -> Result<(), String> {
        set_availability(&self.docker, id, to, Some(ours)).await
    }

    async fn snapshot(&self) -> Result<Snapshot, String> {
        read_snapshot(&self.docker, &self.state_dir, &self.services).await
    }

    fn publish(&self, snapshot: &Snapshot, decision: &ebb_core::cluster::ClusterDecision, last_error: Option<String>) {
        let nodes = snapshot
            .nodes
            .iter()
            .map(|n| NodeStatus {
                hostname: n.hostname.clone(),
                id: n.id.clone(),
                role: if n.manager { "manager" } else { "worker" }.into(),
                state: if n.ready { "ready" } else { "down" }.into(),
                availability: if n.active {
                    "active"
                } else if n.drained_by_ebb {
                    "drain"
                } else {
                    "drain or pause"
                }
                .into(),
                drained_by_ebb: n.drained_by_ebb,
                cpus: n.cpus,
                reserved_cpus: n.reserved,
                replicas: n.replicas,
            })
            .collect();
        let status = ClusterStatus {
            target_reserved_cpu: self.config.target_reserved_cpu,
            min_nodes: self.config.nodes.min,
            max_nodes: self.config.nodes.max,
            active_nodes: decision.active,
            wanted_nodes: decision.wanted,
            reserved_cpus: snapshot.nodes.iter().map(|n| n.reserved).sum(),
            pending_cpus: snapshot.pending,
            reserved_percent: decision.reserved_percent,
            reason: decision.reason.clone(),
            last_error,
            nodes,
        };
        *self.board.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }
}

/// The replicas on draining nodes that were asked to move, and why the
/// controller refused the others (each refusal is logged once, not at
/// every poll while it lasts).
#[derive(Debug, Default)]
pub(crate) struct Moves {
    asked: HashSet<String>,
    refused: HashMap<String, String>,
}

/// Asks the controller to replace, replacement first, each ebb replica on
/// one of `nodes` (an interruption notice: it leaves once its replacement is
/// in service, or at the notice's end). Asked once per replica (`moves`
/// remembers); a replica the controller refused is asked again next time.
async fn move_replicas_off(
    services: &crate::apply::Services,
    snapshot: &Snapshot,
    nodes: &HashSet<&str>,
    moves: &mut Moves,
) {
    let on_nodes: Vec<&Placed> = snapshot.replicas.iter().filter(|p| nodes.contains(p.node.as_str())).collect();
    let still_there = |id: &String| on_nodes.iter().any(|p| &p.replica == id);
    moves.asked.retain(|id| still_there(id));
    moves.refused.retain(|id, _| still_there(id));
    for placed in on_nodes.iter() {
        let id = &placed.replica;
        if moves.asked.contains(id) {
            continue;
        }
        let Some(handle) = services.get(&placed.service) else { continue };
        match handle.interrupt(id, MOVE_NOTICE).await {
            Ok(_) => {
                moves.refused.remove(id);
                moves.asked.insert(id.clone());
            }
            Err(e) => {
                let error = e.to_string();
                if moves.refused.get(id) != Some(&error) {
                    tracing::warn!(replica = %id, %error, "Could not move the replica off a draining node; asking again every poll.");
                    moves.refused.insert(id.clone(), error);
                }
            }
        }
    }
}

/// Sets a node's availability. `ours`: `Some(true)` labels the drain as
/// ebb's (`ebb.cluster`), `Some(false)` removes that label, `None` leaves the
/// labels alone.
pub(crate) async fn set_availability(
    docker: &bollard::Docker,
    id: &str,
    to: NodeSpecAvailabilityEnum,
    ours: Option<bool>,
) -> Result<(), String> {
    // Swarm refuses an update from a stale version: read, then write.
    for _ in 0..5 {
        let node = docker.inspect_node(id).await.map_err(|e| message_of(&e))?;
        let version = node.version.and_then(|v| v.index).unwrap_or(0) as i64;
        let mut spec = node.spec.unwrap_or_default();
        spec.availability = Some(to);
        let labels = spec.labels.get_or_insert_with(HashMap::new);
        match ours {
            Some(true) => {
                labels.insert(DRAINED_LABEL.into(), "drained".into());
            }
            Some(false) => {
                labels.remove(DRAINED_LABEL);
            }
            None => {}
        }
        match docker.update_node(id, spec, UpdateNodeOptions { version }).await {
            Ok(()) => return Ok(()),
            Err(e) if message_of(&e).contains("out of sequence") => continue,
            Err(e) => return Err(message_of(&e)),
        }
    }
    Err("the node kept changing under the update".into())
}

/// The nodes, what ebb's replicas reserve on each, where each replica runs,
/// and what waits.
async fn read_snapshot(
    docker: &bollard::Docker,
    state_dir: &std::path::Path,
    services_of_ebb: &crate::apply::Services,
) -> Result<Snapshot, String> {
    let nodes = docker.list_nodes(None).await.map_err(|e| message_of(&e))?;
    let filters = HashMap::from([("label", vec![format!("{LABEL_STATE_DIR}={}", state_dir.to_string_lossy())])]);
    let options = ListServicesOptionsBuilder::new().filters(&filters).build();
    let services = docker.list_services(Some(options)).await.map_err(|e| message_of(&e))?;
    // Each Swarm service is one replica of one of ebb's services
    // (labels `ebb.replica`, `ebb.service`).
    let replica_of: HashMap<String, Placed> = services
        .iter()
        .filter_map(|s| {
            let labels = s.spec.as_ref()?.labels.as_ref()?;
            let placed = Placed {
                replica: labels.get(LABEL_REPLICA)?.clone(),
                service: labels.get(LABEL_SERVICE)?.clone(),
                node: String::new(),
            };
            Some((s.id.clone()?, placed))
        })
        .collect();
    let ids: HashSet<String> = services.into_iter().filter_map(|s| s.id).collect();
    let protected: HashSet<String> = services_of_ebb
        .values()
        .iter()
        .flat_map(|h| h.status().replicas.into_iter().filter(|r| r.protected).map(|r| r.id))
        .collect();
    // Every task of them, also those Swarm is shutting down (a drained
    // node's): a node runs an ebb replica until its container stopped.
    let tasks = match ids.is_empty() {
        true => Vec::new(),
        false => {
            let filters = HashMap::from([("service", ids.iter().cloned().collect::<Vec<_>>())]);
            let options = ListTasksOptionsBuilder::new().filters(&filters).build();
            docker.list_tasks(Some(options)).await.map_err(|e| message_of(&e))?
        }
    };
    let mut per_node: HashMap<String, (f64, u32, u32)> = HashMap::new();
    let mut replicas = Vec::new();
    let mut pending = 0.0;
    for task in tasks.iter().filter(|t| t.service_id.as_ref().is_some_and(|s| ids.contains(s))) {
        let cpus = task
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.reservations.as_ref())
            .and_then(|r| r.nano_cpus)
            .unwrap_or(0) as f64
            / 1e9;
        let state = task.status.as_ref().and_then(|s| s.state);
        let wanted = task.desired_state == Some(TaskState::RUNNING);
        let alive = matches!(
            state,
            Some(
                TaskState::ASSIGNED
                    | TaskState::ACCEPTED
                    | TaskState::PREPARING
                    | TaskState::READY
                    | TaskState::STARTING
                    | TaskState::RUNNING
            )
        );
        match task.node_id.as_deref().filter(|n| !n.is_empty()) {
            // Not placed: Swarm found no node with room.
            None if wanted && matches!(state, Some(TaskState::PENDING | TaskState::NEW | TaskState::ALLOCATED)) => {
                pending += cpus
            }
            None => {}
            // Ended (or failed to start): no longer on its node.
            Some(_) if !alive => {}
            Some(node) => {
                let replica = task.service_id.as_ref().and_then(|s| replica_of.get(s));
                let entry = per_node.entry(node.to_string()).or_default();
                entry.0 += cpus;
                entry.1 += 1;
                entry.2 += u32::from(replica.is_some_and(|r| protected.contains(&r.replica)));
                if let Some(replica) = replica.filter(|_| wanted) {
                    replicas.push(Placed { node: node.to_string(), ..replica.clone() });
                }
            }
        }
    }
    let mut requested = Vec::new();
    let mut nodes: Vec<NodeFacts> = nodes
        .into_iter()
        .map(|n| {
            let id = n.id.unwrap_or_default();
            let spec = n.spec.unwrap_or_default();
            let (reserved, replicas, protected) = per_node.get(&id).copied().unwrap_or_default();
            if spec.labels.as_ref().is_some_and(|l| l.contains_key(DRAIN_REQUEST_LABEL)) {
                requested.push(node_drain::LabelledNode {
                    id: id.clone(),
                    hostname: n.description.as_ref().and_then(|d| d.hostname.clone()).unwrap_or_else(|| id.clone()),
                    availability: match spec.availability {
                        Some(NodeSpecAvailabilityEnum::PAUSE) => Availability::Pause,
                        Some(NodeSpecAvailabilityEnum::DRAIN) => Availability::Drain,
                        _ => Availability::Active,
                    },
                    replicas,
                });
            }
            NodeFacts {
                hostname: n.description.as_ref().and_then(|d| d.hostname.clone()).unwrap_or_else(|| id.clone()),
                cpus: n.description.as_ref().and_then(|d| d.resources.as_ref()).and_then(|r| r.nano_cpus).unwrap_or(0)
                    as f64
                    / 1e9,
                ready: n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY),
                active: spec.availability == Some(NodeSpecAvailabilityEnum::ACTIVE),
                manager: spec.role == Some(NodeSpecRoleEnum::MANAGER),
                // Paused while ebb moves its replicas off, then drained
                // just before its removal.
                drained_by_ebb: spec.labels.as_ref().is_some_and(|l| l.contains_key(DRAINED_LABEL))
                    && matches!(
                        spec.availability,
                        Some(NodeSpecAvailabilityEnum::PAUSE | NodeSpecAvailabilityEnum::DRAIN)
                    ),
                reserved,
                replicas,
                protected,
                id,
            }
        })
        .collect();
    // In a stable order for status (Swarm lists them as it likes).
    nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    Ok(Snapshot { nodes, pending, replicas, requested })
}

struct Snapshot {
    nodes: Vec<NodeFacts>,
    /// CPUs of ebb's tasks Swarm has not placed.
    pending: f64,
    /// ebb's replicas placed on a node and meant to run.
    replicas: Vec<Placed>,
    /// Nodes labelled `ebb.drain` (a user asked ebb to empty them).
    requested: Vec<node_drain::LabelledNode>,
}

/// One of ebb's replicas, the service it belongs to, and its node's id.
#[derive(Clone)]
struct Placed {
    replica: String,
    service: String,
    node: String,
}

/// `sh -c COMMAND` in `workdir`, killed after `timeout`; its stdout on
/// success, else why with the tail of its output.
pub async fn run_command(command: &str, workdir: &std::path::Path, timeout: Duration) -> Result<String, String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(workdir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => return Err(format!("`{command}` did not end within {}", humantime::format_duration(timeout))),
        Ok(Err(e)) => return Err(format!("`{command}`: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let text = text.trim();
    let tail = match text.char_indices().rev().nth(OUTPUT_TAIL) {
        Some((at, _)) => format!("…{}", &text[at..]),
        None => text.to_string(),
    };
    Err(format!("`{command}` exited with {}: {tail}", out.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_that_fails_says_its_status_and_the_tail_of_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let out =
            run_command("echo started; echo quota exceeded >&2; exit 3", dir.path(), Duration::from_secs(10)).await;
        assert_eq!(
            out.unwrap_err(),
            "`echo started; echo quota exceeded >&2; exit 3` exited with exit status: 3: started\nquota exceeded"
        );
        // In the config file's directory, stdout kept.
        std::fs::write(dir.path().join("here"), "").unwrap();
        assert_eq!(run_command("ls", dir.path(), Duration::from_secs(10)).await.unwrap(), "here\n");
        let long = run_command("yes x | head -c 5000; exit 1", dir.path(), Duration::from_secs(10)).await.unwrap_err();
        assert!(long.len() < 800 && long.contains(": …x"), "{long}");
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = run_command("sleep 30", dir.path(), Duration::from_millis(300)).await;
        assert_eq!(out.unwrap_err(), "`sleep 30` did not end within 300ms");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

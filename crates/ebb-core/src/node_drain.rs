//! A node someone asked ebb to empty, replacement first.
//!
//! `docker node update --availability drain` makes Swarm stop the node's
//! tasks at once and start their replacements at the same time, so for a
//! moment the fleet is short of those replicas. A user who labels the node
//! instead (`docker node update --label-add ebb.drain=true NODE`) gets what
//! `[cluster]` does to a node it removes: ebb pauses the node (Swarm places
//! nothing new there and stops nothing), starts each of its replicas'
//! replacements on another node and retires the old one only once the
//! replacement is in service, then sets the node to drain (what else runs
//! there moves, Swarm's way). It works with or without `[cluster]`, and
//! ebb never removes such a node: the user asked for it to be emptied, not
//! deleted.

/// The node label that asks ebb to empty a node (any value).
pub const DRAIN_REQUEST_LABEL: &str = "ebb.drain";

/// A node's availability, as Swarm says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

/// What to do now with a node that carries [`DRAIN_REQUEST_LABEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedDrain {
    /// Still active: pause it first, so no replacement lands there.
    Pause,
    /// Paused, ebb replicas still on it: each gets an interruption notice
    /// (replaced elsewhere, then retired).
    MoveReplicas,
    /// Paused and no ebb replica left: set it to drain.
    Finish,
    /// Drained: nothing more to do.
    Done,
}

/// The step for a labelled node with `replicas` ebb replicas on it.
pub fn requested_drain(availability: Availability, replicas: u32) -> RequestedDrain {
    match (availability, replicas) {
        (Availability::Drain, _) => RequestedDrain::Done,
        (Availability::Active, _) => RequestedDrain::Pause,
        (Availability::Pause, 0) => RequestedDrain::Finish,
        (Availability::Pause, _) => RequestedDrain::MoveReplicas,
    }
}

/// Whether the replicas on a node get interruption notices: a node ebb
/// drains to remove it (`[cluster]`), or one a user asked ebb to empty,
/// once it no longer takes new tasks.
pub fn moves_replicas_off(drained_by_ebb: bool, drain_requested: bool, availability: Availability) -> bool {
    drained_by_ebb || (drain_requested && availability != Availability::Active)
}

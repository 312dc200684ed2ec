//! ebb's pure decision-making core.
//!
//! **Architecture invariant:** nothing in this crate does I/O, spawns a thread
//! or reads a clock. Time is always an argument. The live controller and the
//! simulator call the same functions with the same inputs and get the same
//! decisions.
//!
//! - [`config`]: the `ebb.toml` model, parsed from a string, validated with
//!   file/line/column errors.
//! - [`health`]: the consecutive-counter health state machine and the ALB-style
//!   status matcher.
//! - [`outlier`]: passive outlier detection: which replicas leave the
//!   rotation for a while because they fail their requests, and when they
//!   return.
//! - [`balance`]: choosing a replica for a request (least outstanding with
//!   power-of-two-choices, round robin).
//! - [`scaling`]: the autoscaler: metric windows, target tracking, step
//!   scaling with alarms, scheduled actions, cooldowns, warm-up, saturation;
//!   every decision explained as data.
//! - [`fleet`]: the fleet planner: how many replicas to launch or retire,
//!   which one leaves, crash-loop backoff, interruption notices, which
//!   replicas are routable.
//! - [`deploy`]: the deploy planner: the steps of a rolling or blue-green
//!   deploy, health-gated with automatic rollback, as actions with reasons.
//! - [`cluster`]: the second level of capacity: when to add a Swarm node,
//!   drain one, remove it (target tracking on the CPU replicas reserve).
//! - [`routing`]: a listener's routing rules (host, path prefix, methods,
//!   headers; first match wins) and the request facts they read.
//! - [`sim`]: the simulator engine (`ebb simulate`): traffic traces and
//!   shapes, a fleet and queueing model, and the same autoscaler run in
//!   virtual time.

pub mod balance;
pub mod cluster;
pub mod config;
pub mod deploy;
pub mod fleet;
pub mod health;
pub mod node_drain;
pub mod outlier;
pub mod routing;
pub mod scaling;
pub mod sim;

/// `1 replica`, `3 replicas`: the count as every message writes it.
pub fn replicas(n: u32) -> String {
    format!("{n} replica{}", if n == 1 { "" } else { "s" })
}

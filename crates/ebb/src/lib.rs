//! ebb: an elastic fleet of replicas behind its own load balancer.
//!
//! Layout (see ARCHITECTURE.md for the full map):
//! - [`proxy`]: the data plane — one HTTP balancer per service, routing on an
//!   atomically swapped snapshot of routable replicas.
//! - [`driver`]: where replicas run (local processes now; Docker/Swarm later),
//!   behind one trait.
//! - [`controller`]: the reconciler — keeps each service at its desired count,
//!   runs health checks, replaces failed replicas, drains on the way out.
//! - [`admin`]: the admin HTTP API on loopback (status, scale, shutdown).
//! - [`cli`]: the `ebb` command line.
//! - [`demo_app`]: the built-in workload of the seed stories (`ebb demo-app`).

pub mod admin;
pub mod cli;
pub mod controller;
pub mod demo_app;
pub mod driver;
pub mod proxy;

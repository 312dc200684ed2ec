//! ebb: an elastic fleet of replicas behind its own load balancer.
//!
//! Layout (see ARCHITECTURE.md for the full map):
//! - [`proxy`]: the data plane — one HTTP balancer per service, routing on an
//!   atomically swapped snapshot of routable replicas.
//!   A `[listener.NAME]` routes each request to one service's balancer
//!   (`proxy::Front`).
//! - [`tls`]: TLS termination for listeners: certificate files, SNI,
//!   reload on change.
//! - [`listeners`]: the running listeners, for status and Prometheus.
//! - [`driver`]: where replicas run (local processes, Docker containers,
//!   Swarm tasks), behind one trait.
//! - [`controller`]: the executor of each service — gathers the facts about
//!   its replicas, asks the pure core (`ebb_core::fleet`, `scaling`,
//!   `deploy`, `outlier`) what to do, and does it: starts, probes, drains,
//!   stops, publishes the routable set and the status.
//! - [`admin`]: the admin HTTP API (status, scale, deploy, events, metrics,
//!   dashboard).
//! - [`events`]: the event log — every change with its reason.
//! - [`wire`]: the admin API's JSON (status document, request bodies, answers), shared by the API, the CLI and `ebb load`.
//! - [`fd_limit`]: the open-file limit raised at start, and the client
//!   connection budget derived from it.
//! - [`up`]: `ebb up`, wiring it all together, and the shutdown order;
//!   [`shutdown`]: what SIGINT, SIGTERM and `ebb down` mean; [`takeover`]:
//!   `ebb up --takeover`; [`carry_over`]: desired capacity across restarts.
//! - [`cli`] and [`client`]: the `ebb` command line and its admin API client.
//! - [`demo_app`]: the built-in workload of the seed stories (`ebb demo-app`).

pub mod acme;
pub mod admin;
pub mod apply;
pub mod carry_over;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config_file;
pub mod controller;
pub mod demo_app;
pub mod driver;
pub mod events;
pub mod fd_limit;
pub mod http1;
pub mod listeners;
pub mod load;
pub mod metrics;
#[cfg(test)]
mod prop_gen;
pub mod proxy;
pub mod replica_logs;
pub mod shutdown;
pub mod simulate;
pub mod state;
pub mod status;
pub mod takeover;
pub mod tls;
pub mod up;
pub mod wire;

/// Ctrl-C or SIGTERM: what ends `ebb load` and a calibration (`ebb up`
/// tells them apart: `shutdown.rs`).
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

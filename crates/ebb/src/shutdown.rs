//! What ends `ebb up`, and what it means for the fleet.
//!
//! - `ebb down` (`POST /api/v1/shutdown`) and **SIGINT** (Ctrl-C at a
//!   terminal) stop the fleet: balancers finish in-flight requests, then
//!   every replica drains and stops.
//! - **SIGTERM** (what `systemctl stop`/`restart`, `docker stop` and a
//!   plain `kill` send) stops **ebb only**: balancers finish in-flight
//!   requests, the state is saved, and the replicas keep running for the
//!   next `ebb up` to adopt. A service manager restarting ebb therefore
//!   never restarts the fleet.
//! - A takeover (`ebb up --takeover`, see `takeover.rs`) is a SIGTERM
//!   whose successor already holds the sockets.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// How this `ebb up` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Drain and stop every replica (`ebb down`, SIGINT).
    Fleet { why: &'static str },
    /// Save and exit, leaving the replicas running (SIGTERM, takeover).
    Leave { why: String },
}

impl Stop {
    pub fn leaves_fleet(&self) -> bool {
        matches!(self, Stop::Leave { .. })
    }

    /// The `ebb: ` line printed when stopping begins.
    pub fn announce(&self) -> String {
        match self {
            Stop::Fleet { why } => {
                format!("ebb: stopping ({why}): balancers finish in-flight requests, then replicas drain and stop")
            }
            Stop::Leave { why } => format!(
                "ebb: stopping ebb only ({why}): balancers finish in-flight requests, the state is saved, and the replicas keep running \
                 for the next `ebb up` to adopt. To stop the fleet, run `ebb down` (or press Ctrl-C) while ebb runs"
            ),
        }
    }
}

impl Stop {
    /// The last `ebb: ` line; `successor` is who took over, if anyone did.
    pub fn farewell(&self, successor: Option<String>) -> String {
        match (self, successor) {
            (Stop::Fleet { .. }, _) => "ebb: stopped".to_string(),
            (Stop::Leave { .. }, Some(successor)) => {
                format!("ebb: exited; {successor} serves the fleet now (its replicas kept running)")
            }
            (Stop::Leave { .. }, None) => "ebb: exited; the replicas keep running: the next `ebb up` adopts them (then `ebb down` stops the fleet)".to_string(),
        }
    }
}

/// How long a balancer that hands its socket over keeps its keep-alive
/// connections, answering each with `Connection: close`, so that their
/// clients reconnect (to the next ebb) instead of being cut while idle.
pub const HAND_OVER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl Stop {
    /// Sets up what stopping this way takes, before the stop begins: the
    /// sockets kept for a takeover are let go; to leave the fleet,
    /// controllers save and exit without stopping replicas, and balancers
    /// hand their keep-alive clients over.
    pub fn prepare(&self) {
        crate::takeover::release_all();
        if self.leaves_fleet() {
            crate::controller::leave_fleet_on_shutdown();
            crate::proxy::hand_over_clients_on_shutdown(HAND_OVER_GRACE);
        }
    }
}

/// Waits for `ebb down`, SIGINT, SIGTERM or a takeover.
pub async fn wait(stop_requested: &CancellationToken, taken_over: &CancellationToken) -> Stop {
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    };
    let int = async {
        match int.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop_requested.cancelled() => Stop::Fleet { why: "ebb down" },
        _ = int => Stop::Fleet { why: "SIGINT" },
        _ = term => Stop::Leave { why: "SIGTERM".to_string() },
        _ = taken_over.cancelled() => Stop::Leave { why: "taken over by `ebb up --takeover`".to_string() },
    }
}

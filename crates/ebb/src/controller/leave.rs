//! Leaving the fleet: ebb exits and its replicas keep running, for the
//! next `ebb up` (or the ebb taking over) to adopt. What SIGTERM and a
//! takeover do; `ebb down` and SIGINT drain and stop instead
//! (`ServiceController::shut_down`).
//!
//! Leaving waits (briefly) for starts and stops in progress to report, so
//! that the replica records saved describe processes that exist; then it
//! saves and says, in the event log, what it left running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{input, Input, ServiceController, Snapshot};
use crate::events::{EventKind, NewEvent};

/// Set once `ebb up` has decided to leave the fleet; read by every
/// controller when its shutdown token fires. One `ebb up` per process.
static LEAVING: AtomicBool = AtomicBool::new(false);

/// At shutdown, controllers save and exit instead of stopping replicas.
/// Call before cancelling the controllers' shutdown token.
pub fn leave_fleet_on_shutdown() {
    LEAVING.store(true, Ordering::SeqCst);
}

pub(super) fn leaving() -> bool {
    LEAVING.load(Ordering::SeqCst)
}

impl ServiceController {
    /// Resumes the replicas scale to zero suspended: a stopped process
    /// group whose parent exits gets SIGHUP from the kernel (an orphaned
    /// process group), and the next ebb adopts them awake anyway.
    async fn thaw_before_leaving(&mut self) {
        let driver = self.fleet.driver().clone();
        for r in self.fleet.replicas.iter_mut().filter(|r| r.suspended) {
            let Some(running) = r.running.as_ref() else { continue };
            match tokio::time::timeout(Duration::from_secs(5), driver.resume(running)).await {
                Ok(Ok(())) => {
                    r.suspended = false;
                    r.pause.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(error)) => {
                    tracing::warn!(service = %self.ctx.name, %error, "Could not resume a replica before leaving it.")
                }
                Err(_) => {
                    tracing::warn!(service = %self.ctx.name, replica = %r.id, "Resuming a replica before leaving it took over 5 s.")
                }
            }
        }
    }
}

/// How long leaving waits for starts and stops in progress to report.
const SETTLE: Duration = Duration::from_secs(10);

impl ServiceController {
    /// Saves and exits, leaving every replica running.
    pub(super) async fn leave(&mut self, rx: &mut mpsc::UnboundedReceiver<Input>, snapshot: &watch::Sender<Snapshot>) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        // Nothing new is launched from here on (no reconcile): only what
        // is already under way is let finish.
        while self.fleet.replicas.iter().any(|r| r.running.is_none() || r.stopping) {
            let input = tokio::select! {
                input = rx.recv() => input,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(input) = input else { break };
            match input {
                Input::Command(command) => input::refuse_while_shutting_down(command, self.ctx.name.clone()),
                input @ (Input::Started { .. } | Input::Stopped { .. } | Input::Exited { .. }) => self.handle(input),
                Input::Probe { .. }
                | Input::Usage { .. }
                | Input::External { .. }
                | Input::WorkerReady { .. }
                | Input::Forecast { .. }
                | Input::FreezeFailed { .. }
                | Input::PoolFrozen { .. } => {}
            }
            self.persist();
        }
        self.thaw_before_leaving().await;
        self.persist();
        let mut left: Vec<String> = self
            .fleet
            .replicas
            .iter()
            .filter_map(|r| {
                let running = r.running.as_ref()?;
                let at = running.pid.map_or_else(|| running.addr.to_string(), |pid| format!("pid {pid}"));
                Some(format!("{} ({at})", r.id))
            })
            .collect();
        left.sort();
        let unsettled = self.fleet.replicas.iter().filter(|r| r.running.is_none() || r.stopping).count();
        let mut reason = format!(
            "ebb is exiting and leaves {} replica{} running for the next `ebb up` to adopt{}{}",
            left.len(),
            if left.len() == 1 { "" } else { "s" },
            if left.is_empty() { String::new() } else { format!(": {}", left.join(", ")) },
            if unsettled > 0 {
                format!(
                    " ({unsettled} still starting or stopping after {}; the next ebb adopts or stops them)",
                    humantime::format_duration(SETTLE)
                )
            } else {
                String::new()
            }
        );
        reason.push_str("; `ebb down` stops the fleet");
        self.ctx.record(NewEvent::new(&self.ctx.name, EventKind::FleetLeft, reason));
        snapshot.send_replace(self.snapshot());
    }
}

//! What wakes a service's controller: the closed set of [`Input`]s, and the
//! background readers that produce the timed ones off the loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::command::{ControlCommand, LifecycleError, ScaleOutcome};
use super::publish::Snapshot;
use super::{metric_source, probe, SAMPLE_EVERY};
use crate::driver::{Driver, DriverError, ExitReason, RunningReplica};
use crate::metrics::cpu::GroupUsage;

/// The closed set of things that wake a controller.
#[derive(Debug)]
pub(super) enum Input {
    Command(ControlCommand),
    Probe {
        replica: String,
        outcome: probe::ProbeOutcome,
    },
    /// The driver's answer to a start; its error is worded only where it
    /// becomes an event.
    Started {
        replica: String,
        result: Result<RunningReplica, DriverError>,
    },
    Exited {
        replica: String,
        reason: ExitReason,
    },
    Stopped {
        replica: String,
        result: Result<ExitReason, DriverError>,
    },
    /// Once a second: CPU and memory by replica id; time to decide.
    Usage {
        at: Instant,
        usage: HashMap<String, GroupUsage>,
    },
    /// A new forecast of a metric, for the predictive policies that read it.
    Forecast {
        metric: ebb_core::scaling::Metric,
        state: ebb_core::scaling::ForecastState,
    },
    /// A worker ran through its grace period: it is in service.
    WorkerReady {
        replica: String,
    },
    /// A reading of the external metric source, or why it failed.
    External {
        at: Instant,
        reading: Result<f64, String>,
    },
    /// The driver could not suspend (or resume) a replica (scale to zero's
    /// `suspend` mode): it is replaced.
    FreezeFailed {
        replica: String,
        error: DriverError,
    },
    /// The driver suspended a warm pool member (`suspended`) or resumed
    /// one a scale-out took; `took` is how long the driver call lasted.
    PoolFrozen {
        replica: String,
        suspended: bool,
        took: std::time::Duration,
    },
}

/// Reads the CPU and memory of the service's replicas once a second through
/// the driver, off the controller's loop (it scans `/proc` or asks the
/// engine), and hands the readings in.
pub(super) async fn sample_usage(
    driver: Arc<dyn Driver>,
    snapshot: watch::Receiver<Snapshot>,
    inbox: mpsc::UnboundedSender<Input>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Samples are stamped with the tick's time, not the time the read
        // finished: decisions then fall on whole seconds, as in `ebb
        // simulate`, and a 3 s cooldown is not missed by a few ms of reading.
        let at = tokio::select! {
            _ = stop.cancelled() => return,
            at = every.tick() => at.into_std(),
        };
        let running = snapshot.borrow().running.clone();
        let usage = tokio::select! {
            _ = stop.cancelled() => return,
            usage = driver.usage(&running) => usage,
        };
        if inbox.send(Input::Usage { at, usage }).is_err() {
            return;
        }
    }
}

/// Reads the service's external metric (`[service.NAME.metric_source]`,
/// e.g. a queue length) every `interval`, off the controller's loop. The
/// source is watched: `ebb apply` may set, change or remove it.
pub(super) async fn read_metric_source(
    mut source: watch::Receiver<Option<ebb_core::config::MetricSource>>,
    inbox: mpsc::UnboundedSender<Input>,
    stop: CancellationToken,
) {
    loop {
        let Some(current) = source.borrow_and_update().clone() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = source.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return,
                },
            }
        };
        let mut every = tokio::time::interval(current.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = source.changed() => match changed {
                    Ok(()) => break,
                    Err(_) => return,
                },
                _ = every.tick() => {}
            }
            // A reading may take at most one interval (and never less than 1 s).
            let limit = current.interval.max(Duration::from_secs(1));
            let reading = match tokio::time::timeout(limit, metric_source::read(&current.reading)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no reading within {}", humantime::format_duration(limit))),
            };
            if inbox.send(Input::External { at: Instant::now(), reading }).is_err() {
                return;
            }
        }
    }
}

/// Answers a command that arrives while the service shuts down: nothing is
/// changed any more.
pub(super) fn refuse_while_shutting_down(command: ControlCommand, service: String) {
    match command {
        ControlCommand::SetDesired { reply, .. } => {
            let clamped = Some("ebb is shutting down".into());
            let _ = reply.send(ScaleOutcome { service, from: 0, to: 0, clamped });
        }
        ControlCommand::Protect { reply, .. } | ControlCommand::Interrupt { reply, .. } => {
            let _ = reply.send(Err(LifecycleError::ShuttingDown { service }));
        }
        ControlCommand::Deploy { reply, .. } | ControlCommand::Rollback { reply, .. } => {
            let _ = reply.send(Err(LifecycleError::ShuttingDown { service }));
        }
        ControlCommand::Reconfigure { reply, .. } => {
            let _ = reply.send(Err(LifecycleError::ShuttingDown { service }));
        }
    }
}

//! The simulator: replay traffic against a scaling policy in virtual time
//! (`ebb simulate`, docs/simulate.md; the model and its limits in
//! docs/simulation.md).
//!
//! **One brain, two clocks.** Each virtual second the engine builds the
//! [`ServiceSample`](crate::scaling::ServiceSample) the live controller
//! would have read, and calls the very same
//! [`Autoscaler`](crate::scaling::Autoscaler) (`observe`, then `decide`)
//! that `ebb up` calls; the changes it returns become the decision log,
//! worded by the same `Display` impls as live events. The fleet follows
//! the same [fleet planner](crate::fleet) as live: what to launch, which
//! replica leaves, crash-loop backoff. Nothing here reads a clock or does I/O: time is a count of
//! seconds from 0, the wall clock handed to scheduled actions is
//! `start_unix + seconds`, and randomness (failures, noise) comes from a
//! seeded generator, so the same inputs and seed give the same run.
//!
//! - [`trace`]: the offered load, one rate per second (CSV, access logs).
//! - [`shape`]: built-in traffic shapes (`step`, `spike`, `diurnal`…).
//! - [`queue`]: the queueing model (CPU, queue time, latency per second).
//! - [`presets`]: AWS, HPA and Knative defaults as ebb policies.
//! - [`engine`]: the second-by-second loop, [`simulate`].
//! - [`summary`]: SLOs, flaps, and the totals of a run.
//! - [`forecasting`]: predictive policies fed the trace's past, and how
//!   good their forecasts were.
//! - [`elasticity`]: the demand and the SPEC elasticity scores.
//! - [`baseline`]: the oracle and static-peak baselines.
//! - [`nodes`]: a node pool (`--node-pool`): replicas wait for room, and
//!   the live cluster decision adds, drains and removes nodes.
//! - [`rng`]: SplitMix64, the seeded generator.

pub mod baseline;
pub mod elasticity;
pub mod engine;
pub mod forecasting;
pub mod nodes;
pub mod presets;
pub mod queue;
pub mod rng;
pub mod shape;
pub mod summary;
pub mod trace;

pub use baseline::baselines;
pub use elasticity::Scores;
pub use engine::{simulate, simulate_against, FleetModel, Policy, Run, Second, SimEvent, SimOptions};
pub use forecasting::{ForecastReport, Versus};
pub use nodes::NodePoolModel;
pub use presets::Preset;
pub use queue::Flow;
pub use shape::parse_shape;
pub use summary::{Slo, Summary};
pub use trace::Trace;

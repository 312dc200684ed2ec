//! How fast a day runs. Ignored by default (a debug build is 10–30× slower
//! than release); `scripts/bench-simulate` measures the real binary.
//!
//!     cargo test --release -p ebb-core --test sim_speed -- --ignored --nocapture

use ebb_core::config::ReplicaBounds;
use ebb_core::scaling::{Metric, ScalingConfig, TargetTracking};
use ebb_core::sim::{parse_shape, simulate, FleetModel, Policy, SimOptions};
use std::time::{Duration, Instant};

fn day(peak_replicas: u32) -> (Duration, u32) {
    // Peak load needs `peak_replicas` at 80 % of 50 req/s each.
    let peak = f64::from(peak_replicas) * 40.0;
    let trace = parse_shape(&format!("diurnal:base={},peak={peak}", peak / 5.0), 0).unwrap();
    let policy = Policy {
        name: "cpu-80".into(),
        scaling: ScalingConfig {
            warmup: Duration::from_secs(30),
            target_tracking: vec![TargetTracking::new(Metric::Cpu, 80.0)],
            ..Default::default()
        },
        bounds: ReplicaBounds { min: 1, max: peak_replicas, desired: 1 },
    };
    let started = Instant::now();
    let run = simulate(&policy, &FleetModel::default(), &trace, &SimOptions::default());
    (started.elapsed(), run.summary.max_desired)
}

#[test]
#[ignore]
fn a_day_of_a_large_fleet() {
    for n in std::env::var("SIM_SIZES").map(|s| s.split(",").map(|x| x.parse().unwrap()).collect::<Vec<u32>>()).unwrap_or(vec![1_000, 10_000]) {
        let (took, max) = day(n);
        eprintln!("24 h at 1 s, up to {n} replicas: {took:?} (max desired {max})");
    }
}

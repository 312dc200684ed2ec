//! Each preset follows its anchor's documented arithmetic, on a
//! hand-worked case run through the simulator (the same autoscaler as
//! live): AWS target tracking `ceil(n × value / target)`, the HPA
//! `ceil(n × value / target)` outside a ±10 % tolerance, Knative's KPA
//! `ceil(observed / target)` with no tolerance.

use std::time::Duration;

use ebb_core::config::{Bounds, Replicas};
use ebb_core::scaling::ScalingConfig;
use ebb_core::sim::{simulate, FleetModel, Policy, Preset, Run, SimOptions, Trace};

/// `preset` on CPU at 80 % (no target tracking of its own), `replicas`
/// from the start, a constant `rate` for `seconds`, 50 req/s per replica:
/// CPU is `rate / (replicas × 50)`.
fn run(preset: Preset, replicas: u32, rate: f64, seconds: usize) -> Run {
    let policy = Policy {
        name: preset.name().into(),
        scaling: preset.scaling(&ScalingConfig::default()),
        replicas: Replicas { bounds: Bounds { min: 1, max: 50 }, desired: replicas },
        idle: None,
        warm_pool: None,
    };
    let model = FleetModel { capacity: 50.0, boot: Duration::from_secs(5), ..Default::default() };
    simulate(&policy, &model, &Trace::new(vec![rate; seconds], "flat"), &SimOptions::default())
}

fn changes(run: &Run) -> Vec<(u64, u32, u32)> {
    run.events.iter().filter_map(|e| Some((e.at, e.from?, e.to?))).collect()
}

#[test]
fn aws_scales_in_only_as_far_as_the_target_allows() {
    // The case: 2 replicas at 65.3 % (65.3 req/s of 100) are below
    // 90 % of the target for 15 min, so the low alarm fires; ceil(2 × 65.3
    // / 80) = ceil(1.63) = 2: no scale-in (percent steps removed one, and
    // the survivor ran at 130.6 %).
    let r = run(Preset::Aws, 2, 65.3, 3600);
    assert_eq!(changes(&r), [], "{:?}", r.events);
    // 2 at 30 % (30 req/s): ceil(2 × 30 / 80) = ceil(0.75) = 1, once the
    // low alarm has 15 breaching minutes; the one left runs at 60 %, still
    // under 72 %, but ceil(1 × 60 / 80) = 1: it stays.
    let r = run(Preset::Aws, 2, 30.0, 3600);
    assert_eq!(changes(&r).iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(), [(2, 1)]);
    let (at, ..) = changes(&r)[0];
    assert!((900..=901).contains(&at), "after 15 one-minute periods: {at}");
    assert!(r.events[0].reason.ends_with("ceil(2 × 30.0 / 80) = 1"), "{}", r.events[0].reason);
}

#[test]
fn aws_scales_out_in_proportion_after_three_minutes() {
    // 3 replicas at 92.4 % (138.6 req/s of 150): ceil(3 × 92.4 / 80) =
    // ceil(3.47) = 4 after 3 breaching minutes; then 4 at 69.3 %: within
    // 72..80, nothing fires.
    let r = run(Preset::Aws, 3, 138.6, 1800);
    let c = changes(&r);
    assert_eq!(c.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(), [(3, 4)], "{:?}", r.events);
    assert!((180..=181).contains(&c[0].0), "{c:?}");
    assert!(r.events[0].reason.ends_with("ceil(3 × 92.4 / 80) = 4"), "{}", r.events[0].reason);
}

#[test]
fn hpa_resizes_in_proportion_outside_its_tolerance() {
    // 3 at 92.4 %: ratio 1.155 is outside 0.9..1.1: ceil(3 × 92.4 / 80)
    // = 4, after its 15 s window.
    let r = run(Preset::Hpa, 3, 138.6, 120);
    let c = changes(&r);
    assert_eq!((c[0].1, c[0].2), (3, 4), "{:?}", r.events);
    assert!(r.events[0].reason.ends_with("ceil(3 × 92.4 / 80) = 4"), "{}", r.events[0].reason);
    // 10 at 86 % (430 req/s): ratio 1.075, inside the tolerance: no change.
    assert_eq!(changes(&run(Preset::Hpa, 10, 430.0, 600)), []);
}

#[test]
fn kpa_resizes_to_the_observed_load_over_the_target_with_no_tolerance() {
    // 10 at 86 %: no tolerance, ceil(10 × 86 / 80) = ceil(10.75) = 11
    // (the HPA holds here); the window is the 60 s stable window.
    let r = run(Preset::Kpa, 10, 430.0, 600);
    let c = changes(&r);
    assert_eq!((c[0].1, c[0].2), (10, 11), "{:?}", r.events);
    assert!(r.events[0].reason.ends_with("ceil(10 × 86.0 / 80) = 11"), "{}", r.events[0].reason);
}

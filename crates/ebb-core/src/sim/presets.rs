//! Built-in policies that model the anchors' default autoscalers, written
//! with the same [`ScalingConfig`] types as any `ebb.toml` policy so they
//! run through the same autoscaler: `--preset aws|hpa|kpa`.
//!
//! Each tracks the service's own metric and target (its first target
//! tracking policy), or `cpu` at 80 % when it has none, and keeps the
//! service's `warmup` and scheduled actions.
//!
//! - **`aws`**, AWS target tracking as ECS service auto scaling sets it
//!   up: two CloudWatch alarms, *high* (3 of 3 one-minute averages above
//!   the target) and *low* (15 of 15 below 90 % of it), each resizing the
//!   service in proportion, `ceil(n × value / target)`, value the newest
//!   breaching minute; cooldowns of 300 s (the ECS defaults). ebb's alarms
//!   slide with time rather than align to clock minutes.
//! - **`hpa`**, the Kubernetes Horizontal Pod Autoscaler's defaults: the
//!   metric over the last 15 s (metrics-server's resolution), a 10 %
//!   tolerance, one decision per 15 s sync (modelled as 15 s cooldowns),
//!   scale-up by at most `max(+100 %, +4)` per 15 s, scale-down to the
//!   highest recommendation of the last 300 s.
//! - **`kpa`**, the Knative Pod Autoscaler's defaults: the metric over a
//!   60 s stable window, no tolerance, a 2 s tick; panic mode (ebb's burst)
//!   when the 6 s panic window reaches 200 % of the target, which scales
//!   out at once and holds scale-in for 60 s; scale-down by at most half
//!   per tick, scale-up by up to 1000×.

use crate::scaling::{
    AdjustmentType, Alarm, Burst, Comparison, Metric, RateLimit, SaturationConfig, ScalingConfig, Statistic,
    StepAdjustment, StepPolicy, TargetTracking,
};
use std::time::Duration;

/// One of the built-in policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    Aws,
    Hpa,
    Kpa,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Aws, Preset::Hpa, Preset::Kpa];

    pub fn from_name(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == name)
    }

    /// `aws`, `hpa`, `kpa`: the preset's name in tables and charts.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Aws => "aws",
            Preset::Hpa => "hpa",
            Preset::Kpa => "kpa",
        }
    }

    /// One line for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Preset::Aws => "AWS target tracking (ECS defaults): out after 3 × 1 min above target, in after 15 × 1 min below 90 % of it, cooldowns 300 s",
            Preset::Hpa => "Kubernetes HPA defaults: 15 s sync and metric window, ±10 % tolerance, ×2 or +4 per 15 s up, 300 s scale-down stabilisation",
            Preset::Kpa => "Knative KPA defaults: 60 s stable window, 6 s panic window at 200 %, 2 s tick, at most halving per tick",
        }
    }

    /// The metric and target the presets track for a service.
    pub fn tracked(service: &ScalingConfig) -> (Metric, f64) {
        service.target_tracking.first().map_or((Metric::Cpu, 80.0), |t| (t.metric, t.target))
    }

    /// The preset's policies for a service with this scaling config.
    pub fn scaling(self, service: &ScalingConfig) -> ScalingConfig {
        let (metric, target) = Self::tracked(service);
        let mut config = ScalingConfig {
            warmup: service.warmup,
            target_tracking: Vec::new(),
            step: Vec::new(),
            scheduled: service.scheduled.clone(),
            // The anchors' predictive scaling is a separate product: a
            // preset is their reactive default alone.
            predictive: Vec::new(),
            burst: None,
            // The anchors have no view of a balancer's queue: emulate them
            // faithfully, without ebb's saturation rules.
            saturation: SaturationConfig { hold_scale_in: false, scale_out: false, ..Default::default() },
            freeze: crate::scaling::FreezeConfig { enabled: false, ..Default::default() },
            shadow: None,
        };
        match self {
            Preset::Aws => config.step = aws_alarms(metric, target),
            Preset::Hpa => {
                let mut t = TargetTracking::new(metric, target);
                t.name = "hpa".into();
                t.window = Duration::from_secs(15);
                t.scale_out_cooldown = Duration::from_secs(15);
                t.scale_in_cooldown = Duration::from_secs(15);
                t.scale_in_stabilization = Duration::from_secs(300);
                t.scale_out_rate = RateLimit::DEFAULT_SCALE_OUT;
                t.scale_in_rate = RateLimit::DEFAULT_SCALE_IN;
                config.target_tracking.push(t);
            }
            Preset::Kpa => {
                let tick = Duration::from_secs(2);
                let mut t = TargetTracking::new(metric, target);
                t.name = "kpa".into();
                t.tolerance = 0.0;
                t.window = Duration::from_secs(60);
                t.scale_out_cooldown = tick;
                t.scale_in_cooldown = tick;
                t.scale_in_stabilization = Duration::ZERO;
                t.scale_out_rate = RateLimit { percent: 99_900.0, replicas: 0, period: tick };
                t.scale_in_rate = RateLimit { percent: 50.0, replicas: 0, period: tick };
                config.target_tracking.push(t);
                config.burst =
                    Some(Burst { window: Duration::from_secs(6), threshold: 2.0, duration: Duration::from_secs(60) });
            }
        }
        config
    }
}

/// AWS target tracking's two alarms, each resizing in proportion to the
/// breaching value: `ceil(n × value / target)` (one step covering the
/// whole breach). AWS documents that target tracking "adds capacity
/// proportional to the metric value" and scales in "more gradually";
/// percent steps would not do: AWS's step rounding turns any change under
/// one replica into one (2 replicas at 65.3 % of a target of 80: −15 % is
/// −0.3, rounded to −1), a scale-in that puts the metric over the target
/// and flaps.
fn aws_alarms(metric: Metric, target: f64) -> Vec<StepPolicy> {
    let alarm = |comparison, threshold, periods| Alarm {
        metric,
        statistic: Statistic::Average,
        comparison,
        threshold,
        period: Duration::from_secs(60),
        evaluation_periods: periods,
        datapoints_to_alarm: periods,
    };
    let cooldown = Duration::from_secs(300);
    let adjustment_type = AdjustmentType::proportional(target);
    vec![
        StepPolicy {
            name: "aws-out".into(),
            alarm: alarm(Comparison::Greater, target, 3),
            adjustment_type,
            steps: vec![StepAdjustment { lower: Some(0.0), upper: None, adjustment: 0 }],
            min_adjustment_magnitude: None,
            cooldown,
            on_missing_metrics: Default::default(),
        },
        StepPolicy {
            name: "aws-in".into(),
            alarm: alarm(Comparison::Less, target * 0.9, 15),
            adjustment_type,
            steps: vec![StepAdjustment { lower: None, upper: Some(0.0), adjustment: 0 }],
            min_adjustment_magnitude: None,
            cooldown,
            on_missing_metrics: Default::default(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::check_steps;

    #[test]
    fn aws_alarms_resize_in_proportion() {
        for policy in aws_alarms(Metric::Cpu, 80.0) {
            check_steps(&policy.steps, policy.alarm.comparison, |i| format!("step {i}")).unwrap();
        }
        let [out, inn] = <[StepPolicy; 2]>::try_from(aws_alarms(Metric::Cpu, 80.0)).unwrap();
        let resize = |p: &StepPolicy, n: u32, v: f64| p.resize(p.step_for(v).unwrap(), n, v);
        // 3 replicas at 92.4 %: ceil(3 × 92.4 / 80) = ceil(3.47) = 4.
        assert_eq!(resize(&out, 3, 92.4), 4);
        // 10 at 100 %: ceil(12.5) = 13.
        assert_eq!(resize(&out, 10, 100.0), 13);
        // 10 at 40 %: ceil(10 × 40 / 80) = 5; at 70 %: ceil(8.75) = 9.
        assert_eq!(resize(&inn, 10, 40.0), 5);
        assert_eq!(resize(&inn, 10, 70.0), 9);
        // The case: 2 at 65.3 %: ceil(2 × 65.3 / 80) = ceil(1.63)
        // = 2, no scale-in (percent steps gave 1).
        assert_eq!(resize(&inn, 2, 65.3), 2);
        // 2 at 30 %: ceil(0.75) = 1.
        assert_eq!(resize(&inn, 2, 30.0), 1);
    }

    #[test]
    fn presets_track_the_services_metric() {
        let mut service = ScalingConfig::default();
        assert_eq!(Preset::tracked(&service), (Metric::Cpu, 80.0));
        service.target_tracking.push(TargetTracking::new(Metric::RequestsPerReplica, 40.0));
        let hpa = Preset::Hpa.scaling(&service);
        assert_eq!((hpa.target_tracking[0].metric, hpa.target_tracking[0].target), (Metric::RequestsPerReplica, 40.0));
        assert!(Preset::Kpa.scaling(&service).burst.is_some());
        assert_eq!(Preset::Aws.scaling(&service).step[1].alarm.threshold, 36.0);
        assert_eq!(Preset::from_name("hpa"), Some(Preset::Hpa));
        assert_eq!(Preset::from_name("gke"), None);
    }
}

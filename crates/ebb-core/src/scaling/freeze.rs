//! The scale-in freeze: no scale-in while the signals say the load is
//! not what it seems.
//!
//! Two things make low numbers lie (open asks in nomad-autoscaler and
//! KEDA after real outages):
//!
//! - **a 5xx spike**: replicas that fail fast look idle (low CPU, short
//!   latency), and an upstream outage often ends in a retry storm;
//! - **a traffic collapse within seconds**: real load never halves in
//!   30 s; a broken upstream, DNS or client does, and its traffic comes
//!   back all at once.
//!
//! While either holds, and for `hold` after it ends, the fleet does not
//! shrink. Scale-out is untouched, so the freeze can only cost replicas,
//! never capacity: that is why it is on by default. The rule reads the
//! balancer's [`Demand`] per second and is pure, like every other rule.

use super::metrics::duration;
use super::saturation::Demand;
use super::Time;
use std::fmt;
use std::time::Duration;

/// `[service.NAME.scaling.freeze]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreezeConfig {
    /// Off only when the config says `enabled = false`.
    pub enabled: bool,
    /// Freeze while 5xx answers are more than this share of the answers
    /// over `window` (1 turns the rule off).
    pub error_ratio: f64,
    /// Freeze while the offered rate of the last [`RECENT`] is lower than
    /// the rest of `window`'s by more than this share (1 turns it off).
    pub traffic_drop: f64,
    /// How far back both rules look.
    pub window: Duration,
    /// How long the freeze lasts after the last second either rule held.
    pub hold: Duration,
}

impl FreezeConfig {
    pub const DEFAULT_ERROR_RATIO: f64 = 0.2;
    pub const DEFAULT_TRAFFIC_DROP: f64 = 0.5;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
    pub const DEFAULT_HOLD: Duration = Duration::from_secs(300);

    /// The history the rules read.
    pub fn history_needed(&self) -> Duration {
        if self.enabled {
            self.window
        } else {
            Duration::ZERO
        }
    }
}

impl Default for FreezeConfig {
    /// On: 5xx above 20 % over 30 s, or traffic down by half within 30 s,
    /// then 5 min (one default scale-in cooldown).
    fn default() -> Self {
        Self {
            enabled: true,
            error_ratio: Self::DEFAULT_ERROR_RATIO,
            traffic_drop: Self::DEFAULT_TRAFFIC_DROP,
            window: Self::DEFAULT_WINDOW,
            hold: Self::DEFAULT_HOLD,
        }
    }
}

/// The newest part of the window, compared with the rest of it for the
/// traffic drop: long enough that one slow second is not a collapse.
pub const RECENT: Duration = Duration::from_secs(5);
/// The fewest answers in the window for a 5xx ratio to mean anything (1
/// failure out of 2 requests is not a spike).
pub const MIN_ANSWERS: f64 = 20.0;
/// The lowest offered rate (req/s) a drop is measured from: from 2 req/s
/// to 0 is a quiet minute, not an outage.
pub const MIN_TRAFFIC: f64 = 5.0;

/// What froze scale-in.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Errors { ratio: f64, threshold: f64, window: Duration },
    TrafficDrop { before: f64, after: f64, threshold: f64, window: Duration },
}

impl Trigger {
    /// How bad: the 5xx share, or the share of traffic lost.
    pub fn severity(&self) -> f64 {
        match *self {
            Trigger::Errors { ratio, .. } => ratio,
            Trigger::TrafficDrop { before, after, .. } => 1.0 - after / before,
        }
    }
}

impl fmt::Display for Trigger {
    /// `5xx at 35% of answers over 30 s (freeze above 20%)` /
    /// `traffic fell 80% within 30 s (120.0 -> 24.0 req/s; freeze above 50%)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        match *self {
            Trigger::Errors { ratio, threshold, window } => write!(
                f,
                "5xx at {} of answers over {} (freeze above {})",
                pct(ratio),
                duration(window),
                pct(threshold)
            ),
            Trigger::TrafficDrop { before, after, threshold, window } => write!(
                f,
                "traffic fell {} within {} ({before:.1} -> {after:.1} req/s; freeze above {})",
                pct(1.0 - after / before),
                duration(window),
                pct(threshold)
            ),
        }
    }
}

/// Whether scale-in must freeze at `now`, from the balancer's seconds
/// within the window (`demand`, oldest first, as
/// [`MetricHistory::demand`](super::MetricHistory::demand) gives them).
/// The 5xx rule is checked first: it is the more direct evidence.
pub fn assess(demand: &[(Time, Demand)], now: Time, config: &FreezeConfig) -> Option<Trigger> {
    if !config.enabled {
        return None;
    }
    let start = now.saturating_sub(config.window);
    let within = || demand.iter().filter(move |(at, _)| *at > start && *at <= now).map(|(at, d)| (*at, d));

    let answers: f64 = within().map(|(_, d)| d.answered_per_s.max(0.0)).sum();
    let errors: f64 = within().map(|(_, d)| d.errors_per_s.max(0.0)).sum();
    if answers >= MIN_ANSWERS && config.error_ratio < 1.0 {
        let ratio = errors / answers;
        if ratio > config.error_ratio {
            return Some(Trigger::Errors { ratio, threshold: config.error_ratio, window: config.window });
        }
    }

    if config.traffic_drop < 1.0 {
        let split = now.saturating_sub(RECENT);
        let mean = |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        let before = mean(within().filter(|(at, _)| *at <= split).map(|(_, d)| d.offered_per_s).collect());
        let after = mean(within().filter(|(at, _)| *at > split).map(|(_, d)| d.offered_per_s).collect());
        if let (Some(before), Some(after)) = (before, after) {
            if before >= MIN_TRAFFIC && after < before * (1.0 - config.traffic_drop) {
                return Some(Trigger::TrafficDrop {
                    before,
                    after,
                    threshold: config.traffic_drop,
                    window: config.window,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Time {
        Duration::from_secs(n)
    }

    /// 30 seconds ending at t = 100: `offered(t)` req/s, `errors(t)` of
    /// `answered(t)` answers.
    fn seconds(
        offered: impl Fn(u64) -> f64,
        answered: impl Fn(u64) -> f64,
        errors: impl Fn(u64) -> f64,
    ) -> Vec<(Time, Demand)> {
        (71..=100)
            .map(|t| {
                let d = Demand {
                    offered_per_s: offered(t),
                    answered_per_s: answered(t),
                    errors_per_s: errors(t),
                    ..Default::default()
                };
                (s(t), d)
            })
            .collect()
    }

    #[test]
    fn hand_computed_cases() {
        let config = FreezeConfig::default();
        struct Case {
            name: &'static str,
            demand: Vec<(Time, Demand)>,
            want: Option<&'static str>,
        }
        #[rustfmt::skip]
        let cases = [
            // 30 s × 100 answers, 35 of each 100 are 5xx: 1050 / 3000 = 35 %.
            Case { name: "5xx spike", demand: seconds(|_| 100.0, |_| 100.0, |_| 35.0),
                   want: Some("5xx at 35% of answers over 30 s (freeze above 20%)") },
            // Exactly 20 % is not above 20 %.
            Case { name: "5xx at the threshold", demand: seconds(|_| 100.0, |_| 100.0, |_| 20.0), want: None },
            // 10 s of 60 % errors in 30 s of 100 answers: 600 / 3000 = 20 %: not above.
            Case { name: "a short burst diluted by the window", demand: seconds(|_| 100.0, |_| 100.0, |t| if t > 90 { 60.0 } else { 0.0 }), want: None },
            // 11 s of 60 %: 660 / 3000 = 22 %.
            Case { name: "a longer burst", demand: seconds(|_| 100.0, |_| 100.0, |t| if t > 89 { 60.0 } else { 0.0 }),
                   want: Some("5xx at 22% of answers over 30 s (freeze above 20%)") },
            // 19 answers in the window, all 5xx: too few to tell.
            Case { name: "too few answers", demand: seconds(|_| 1.0, |t| if t > 81 { 1.0 } else { 0.0 }, |t| if t > 81 { 1.0 } else { 0.0 }), want: None },
            // 25 s at 120 req/s, then 5 s at 24: 1 - 24 / 120 = 80 % down.
            Case { name: "traffic collapse", demand: seconds(|t| if t > 95 { 24.0 } else { 120.0 }, |_| 0.0, |_| 0.0),
                   want: Some("traffic fell 80% within 30 s (120.0 -> 24.0 req/s; freeze above 50%)") },
            // 120 -> 60 is exactly half: not more than half.
            Case { name: "traffic halves exactly", demand: seconds(|t| if t > 95 { 60.0 } else { 120.0 }, |_| 0.0, |_| 0.0), want: None },
            // A steady decline of 1 req/s each second: the first 25 s average
            // 200 - 83 = 117, the last 5 s 200 - 98 = 102: 13 % down.
            Case { name: "a steady decline", demand: seconds(|t| 200.0 - t as f64, |_| 0.0, |_| 0.0), want: None },
            // From 4 req/s to 0: below the 5 req/s a drop is measured from.
            Case { name: "quiet traffic going idle", demand: seconds(|t| if t > 95 { 0.0 } else { 4.0 }, |_| 0.0, |_| 0.0), want: None },
            // Traffic up: never a freeze.
            Case { name: "traffic surge", demand: seconds(|t| if t > 95 { 500.0 } else { 100.0 }, |_| 0.0, |_| 0.0), want: None },
        ];
        for c in cases {
            let got = assess(&c.demand, s(100), &config).map(|t| t.to_string());
            assert_eq!(got.as_deref(), c.want, "{}", c.name);
        }
    }

    #[test]
    fn a_share_of_one_or_enabled_false_turns_a_rule_off() {
        let spike = seconds(|t| if t > 95 { 0.0 } else { 100.0 }, |_| 100.0, |_| 90.0);
        let errors_off = FreezeConfig { error_ratio: 1.0, ..Default::default() };
        assert!(matches!(assess(&spike, s(100), &errors_off), Some(Trigger::TrafficDrop { .. })));
        let both_off = FreezeConfig { error_ratio: 1.0, traffic_drop: 1.0, ..Default::default() };
        assert_eq!(assess(&spike, s(100), &both_off), None);
        let disabled = FreezeConfig { enabled: false, ..Default::default() };
        assert_eq!(assess(&spike, s(100), &disabled), None);
    }
}

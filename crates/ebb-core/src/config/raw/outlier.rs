//! `[service.NAME.proxy.outlier]`: passive outlier detection's raw table and
//! its checks. The type it produces, `OutlierConfig`, lives in
//! `crate::outlier` next to the detector that uses it.

use super::Check;
use crate::config::value::{Dur, Int, Number};
use crate::outlier::OutlierConfig;
use crate::scaling::metrics::duration as human;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an outlier table like [service.web.proxy.outlier]")]
pub(super) struct RawOutlier {
    enabled: Option<Spanned<bool>>,
    consecutive_5xx: Option<Spanned<Int>>,
    consecutive_gateway_failures: Option<Spanned<Int>>,
    failure_percent: Option<Spanned<Number>>,
    failure_window: Option<Spanned<Dur>>,
    failure_min_requests: Option<Spanned<Int>>,
    base_ejection_time: Option<Spanned<Dur>>,
    max_ejection_time: Option<Spanned<Dur>>,
    max_ejection_percent: Option<Spanned<Int>>,
}

/// A streak longer than this is no longer "in a row" in any useful sense.
const MAX_STREAK: i64 = 1000;
/// The ratio window is a recent past, not a history.
const WINDOW: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(600);
/// An ejection of a day is a replica that should have been replaced.
const MAX_EJECTION: Duration = Duration::from_secs(24 * 3600);

impl Check<'_> {
    pub(super) fn outlier(&mut self, raw: RawOutlier) -> OutlierConfig {
        let d = OutlierConfig::default();
        let streak = |check: &mut Self, key: &str, raw: &Option<Spanned<Int>>, default: u32| {
            let Some(raw) = raw else { return default };
            match raw.get_ref().0 {
                n @ 1..=MAX_STREAK => n as u32,
                n => {
                    check.problem(
                        raw.span(),
                        format!("proxy.outlier.{key} must be between 1 and {MAX_STREAK} in a row, not {n}; to turn outlier detection off, write enabled = false"),
                    );
                    default
                }
            }
        };
        let consecutive_5xx = streak(self, "consecutive_5xx", &raw.consecutive_5xx, d.consecutive_5xx);
        let consecutive_gateway_failures = streak(
            self,
            "consecutive_gateway_failures",
            &raw.consecutive_gateway_failures,
            d.consecutive_gateway_failures,
        );
        let failure_percent = match &raw.failure_percent {
            None => d.failure_percent,
            Some(p) => match p.get_ref().0 {
                v if v > 0.0 && v <= 100.0 => v,
                v => {
                    self.problem(
                        p.span(),
                        format!("proxy.outlier.failure_percent is a share of requests above 0 and at most 100, e.g. 50, not {v}"),
                    );
                    d.failure_percent
                }
            },
        };
        let failure_window = match &raw.failure_window {
            None => d.failure_window,
            Some(w) if !WINDOW.contains(&w.get_ref().0) => {
                self.problem(
                    w.span(),
                    format!(
                        "proxy.outlier.failure_window must be between {} and {}, not {}",
                        human(*WINDOW.start()),
                        human(*WINDOW.end()),
                        human(w.get_ref().0)
                    ),
                );
                d.failure_window
            }
            Some(w) => w.get_ref().0,
        };
        let failure_min_requests = match &raw.failure_min_requests {
            None => d.failure_min_requests,
            Some(n) => match n.get_ref().0 {
                v @ 1..=1_000_000 => v as u32,
                v => {
                    self.problem(
                        n.span(),
                        format!("proxy.outlier.failure_min_requests must be between 1 and 1000000 requests, not {v}"),
                    );
                    d.failure_min_requests
                }
            },
        };
        let base_ejection_time =
            self.ejection_time("base_ejection_time", &raw.base_ejection_time, d.base_ejection_time);
        let max_ejection_time = self.ejection_time("max_ejection_time", &raw.max_ejection_time, d.max_ejection_time);
        if max_ejection_time < base_ejection_time {
            // Blame the key that was written; max when both were.
            if let Some(s) = raw.max_ejection_time.as_ref().or(raw.base_ejection_time.as_ref()) {
                let default = |written: bool| if written { "" } else { ", the default" };
                self.problem(
                    s.span(),
                    format!(
                        "proxy.outlier.max_ejection_time ({}{}) is below base_ejection_time ({}{}); the first ejection would already exceed the cap: raise max_ejection_time or lower base_ejection_time",
                        human(max_ejection_time),
                        default(raw.max_ejection_time.is_some()),
                        human(base_ejection_time),
                        default(raw.base_ejection_time.is_some()),
                    ),
                );
            }
        }
        let max_ejection_percent = match &raw.max_ejection_percent {
            None => d.max_ejection_percent,
            Some(p) => match p.get_ref().0 {
                v @ 1..=100 => v as u32,
                v => {
                    self.problem(
                        p.span(),
                        format!("proxy.outlier.max_ejection_percent must be between 1 and 100 percent of the replicas, not {v}; to turn outlier detection off, write enabled = false"),
                    );
                    d.max_ejection_percent
                }
            },
        };
        OutlierConfig {
            enabled: raw.enabled.map_or(d.enabled, |e| e.into_inner()),
            consecutive_5xx,
            consecutive_gateway_failures,
            failure_percent,
            failure_window,
            failure_min_requests,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent,
        }
    }

    fn ejection_time(&mut self, key: &str, raw: &Option<Spanned<Dur>>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        let d = raw.get_ref().0;
        if d < Duration::from_secs(1) || d > MAX_EJECTION {
            self.problem(
                raw.span(),
                format!(
                    "proxy.outlier.{key} must be between 1 s and 24 h, not {}; the default is {}",
                    human(d),
                    human(default)
                ),
            );
            return default;
        }
        d
    }
}

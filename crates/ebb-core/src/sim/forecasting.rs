//! Predictive policies in a simulation: the trace's past is their
//! history. Each virtual hour (as live) the forecast is made again from
//! the seconds simulated so far, and handed to the autoscaler; each
//! 5-minute bucket, once over, is scored against the forecast that was
//! current when it began and against the two naive baselines, so the run
//! reports how good the forecast was (MAPE), honestly, next to "same time
//! yesterday" and "same time last week".

use crate::scaling::forecast::{DailyChoice, Series, BUCKET_S, DAY, MAPE_FLOOR, MAX_HISTORY, WEEK};
use crate::scaling::{Autoscaler, Forecast, ForecastState, Metric, PredictivePolicy};

/// How often the forecast is made again (live does the same).
pub const REFRESH_S: i64 = 3600;

/// How the forecasts of a run did, as MAPE in percent over the 5-minute
/// buckets that had a forecast; each baseline beside the forecast on the
/// same buckets (those with a day, or a week, of history before them).
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastReport {
    /// The policy whose forecast is scored (the first predictive one).
    pub policy: String,
    pub metric: Metric,
    /// Hours of the run that had a forecast.
    pub hours: f64,
    pub mape: Option<f64>,
    /// (the forecast's MAPE, "same time yesterday"'s) on the same buckets.
    pub yesterday: Option<Versus>,
    /// (the forecast's MAPE, "same time last week"'s) on the same buckets.
    pub last_week: Option<Versus>,
    /// The model of the last forecast, e.g. `Holt-Winters, weekly season, γ 0.3`.
    pub model: Option<String>,
    /// Hours the forecast was trusted (beat the baselines in its backtest),
    /// so a `forecast_and_scale` policy could act.
    pub trusted_hours: f64,
}

/// A bucket scored: actual, forecast, a day before, a week before.
type Scored = (f64, f64, Option<f64>, Option<f64>);

/// The forecaster's side of one simulation.
pub(super) struct Forecasting {
    policies: Vec<PredictivePolicy>,
    start_unix: i64,
    /// Per bucket since the first one, per metric (requests, cpu): the sum
    /// and count of the seconds.
    buckets: Vec<[(f64, u32); 2]>,
    /// The first bucket's start (Unix s).
    first_bucket: i64,
    /// The latest forecast per metric.
    latest: [Option<Forecast>; 2],
    /// The model chosen per metric, once a day.
    chosen: [DailyChoice; 2],
    /// Each bucket scored: actual, forecast, a day before, a week before.
    scored: Vec<Scored>,
    forecast_seconds: u64,
    trusted_seconds: u64,
}

impl Forecasting {
    pub fn new(policies: &[PredictivePolicy], start_unix: i64) -> Option<Forecasting> {
        if policies.is_empty() {
            return None;
        }
        Some(Forecasting {
            policies: policies.to_vec(),
            start_unix,
            buckets: Vec::new(),
            first_bucket: start_unix.div_euclid(BUCKET_S) * BUCKET_S,
            latest: [None, None],
            chosen: [DailyChoice::default(); 2],
            scored: Vec::new(),
            forecast_seconds: 0,
            trusted_seconds: 0,
        })
    }

    /// The metric whose forecast the report scores: the first policy's.
    fn scored_metric(&self) -> usize {
        slot_of(self.policies[0].metric)
    }

    /// Second `s` is over: its offered requests/s and the service's total
    /// CPU (sum over replicas, % of one allotment). On the hour, forecast
    /// again and tell the autoscaler.
    pub fn second(&mut self, s: u64, requests: f64, cpu_total: f64, autoscaler: &mut Autoscaler) {
        let wall = self.start_unix + s as i64;
        let index = ((wall - self.first_bucket) / BUCKET_S) as usize;
        if index >= self.buckets.len() {
            if index > 0 && index == self.buckets.len() {
                self.score(index - 1);
            }
            self.buckets.resize(index + 1, [(0.0, 0); 2]);
        }
        for (slot, value) in self.buckets[index].iter_mut().zip([requests, cpu_total]) {
            slot.0 += value;
            slot.1 += 1;
        }
        if let Some(latest) = &self.latest[self.scored_metric()] {
            self.forecast_seconds += 1;
            if latest.trusted() {
                self.trusted_seconds += 1;
            }
        }
        let end = wall + 1;
        if end.rem_euclid(REFRESH_S) == 0 {
            self.refresh(end, autoscaler);
        }
    }

    fn mean(&self, index: usize, metric: usize) -> Option<f64> {
        let (sum, n) = self.buckets.get(index)?[metric];
        (n > 0).then(|| sum / f64::from(n))
    }

    fn series(&self, end: i64, metric: usize) -> Series {
        let whole = (((end - self.first_bucket) / BUCKET_S).max(0) as usize).min(self.buckets.len());
        let from = whole.saturating_sub((MAX_HISTORY.as_secs() as i64 / BUCKET_S) as usize);
        let values = (from..whole).map(|i| self.mean(i, metric)).collect();
        Series { start_unix: self.first_bucket + from as i64 * BUCKET_S, values }
    }

    fn refresh(&mut self, end: i64, autoscaler: &mut Autoscaler) {
        for metric in [0, 1] {
            let used = self.policies.iter().any(|p| slot_of(p.metric) == metric);
            if !used {
                continue;
            }
            let series = self.series(end, metric);
            let state = ForecastState::from(self.chosen[metric].forecast(&series));
            self.latest[metric] = match &state {
                ForecastState::Ready(f) => Some(f.clone()),
                _ => None,
            };
            for (i, policy) in self.policies.iter().enumerate() {
                if slot_of(policy.metric) == metric {
                    autoscaler.set_forecast(i, state.clone());
                }
            }
        }
    }

    /// Scores a bucket that is over against the forecast current when it
    /// began, and the baselines.
    fn score(&mut self, index: usize) {
        let metric = self.scored_metric();
        let Some(actual) = self.mean(index, metric) else { return };
        let at = self.first_bucket + index as i64 * BUCKET_S;
        let Some(predicted) = self.latest[metric].as_ref().and_then(|f| f.at(at)) else { return };
        let past = |lag: usize| index.checked_sub(lag).and_then(|i| self.mean(i, metric));
        self.scored.push((actual, predicted, past(DAY), past(WEEK)));
    }

    pub fn report(&self) -> ForecastReport {
        let policy = &self.policies[0];
        // As in the backtest: buckets under 5 % of the mean load are left
        // out (a percentage of almost nothing says nothing).
        let mean = self.scored.iter().map(|s| s.0).sum::<f64>() / self.scored.len().max(1) as f64;
        let counted: Vec<_> = self.scored.iter().filter(|s| s.0 > mean * MAPE_FLOOR && s.0 > 0.0).collect();
        let error = |actual: f64, p: f64| (actual - p).abs() / actual;
        let mean_pct = |e: &[f64]| 100.0 * e.iter().sum::<f64>() / e.len() as f64;
        let all: Vec<f64> = counted.iter().map(|s| error(s.0, s.1)).collect();
        let versus = |pick: &dyn Fn(&Scored) -> Option<f64>| {
            let pairs: Vec<(f64, f64)> =
                counted.iter().filter_map(|s| pick(s).map(|b| (error(s.0, s.1), error(s.0, b)))).collect();
            let (f, b): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
            (!f.is_empty()).then(|| Versus {
                hours: f.len() as f64 * BUCKET_S as f64 / 3600.0,
                forecast: mean_pct(&f),
                baseline: mean_pct(&b),
            })
        };
        ForecastReport {
            policy: policy.name.clone(),
            metric: policy.metric,
            hours: self.forecast_seconds as f64 / 3600.0,
            mape: (!all.is_empty()).then(|| mean_pct(&all)),
            yesterday: versus(&|s| s.2),
            last_week: versus(&|s| s.3),
            model: self.latest[slot_of(policy.metric)].as_ref().map(|f| f.model.to_string()),
            trusted_hours: self.trusted_seconds as f64 / 3600.0,
        }
    }
}

/// The forecast against a baseline on the buckets both have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Versus {
    pub hours: f64,
    pub forecast: f64,
    pub baseline: f64,
}

fn slot_of(metric: Metric) -> usize {
    usize::from(metric == Metric::Cpu)
}

//! Predictive policies, live: once an hour (and at once when `ebb apply`
//! changes which metrics are forecast) the service's recorded history —
//! the state file's per-minute points for the last 14 days and the
//! per-second ones in memory — is handed to the pure forecaster
//! (`ebb_core::scaling::forecast`) on a blocking thread. The result goes
//! to the controller's inbox for the autoscaler, and to the handle for
//! the API and dashboard. The model is chosen by the backtest once a day
//! (it tests whole days); the forecast itself is made hourly.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use ebb_core::scaling::forecast::{DailyChoice, Series, BUCKET_S, MAX_HISTORY};
use ebb_core::scaling::{ForecastState, Metric, PredictivePolicy};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Input;
use crate::clock::unix_ms;
use crate::metrics::history::{MetricsHistory, ServicePoint};
use crate::state::StateStore;
use crate::wire::{ForecastPolicy, ForecastSkill, ForecastView};

/// What the API shows, one entry per forecast metric.
pub type Forecasts = Arc<RwLock<Vec<ForecastView>>>;

/// How often the forecast is made again.
const REFRESH: Duration = Duration::from_secs(3600);
/// The first forecast waits this long after start (adoption, the first
/// samples) so that it does not compete with starting the fleet.
const FIRST_AFTER: Duration = Duration::from_secs(2);

pub(super) struct Forecaster {
    pub service: String,
    pub store: Option<StateStore>,
    pub history: Arc<MetricsHistory>,
    /// The predictive policies in force (`ebb apply` sends new ones).
    pub policies: watch::Receiver<Vec<PredictivePolicy>>,
    pub inbox: mpsc::UnboundedSender<Input>,
    pub shown: Forecasts,
}

impl Forecaster {
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let mut chosen: HashMap<Metric, DailyChoice> = HashMap::new();
        let mut wait = FIRST_AFTER;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                changed = self.policies.changed() => if changed.is_err() { return },
            }
            wait = REFRESH;
            let policies = self.policies.borrow_and_update().clone();
            if policies.is_empty() {
                self.shown.write().unwrap_or_else(|p| p.into_inner()).clear();
                continue;
            }
            let points = self.points().await;
            let mut views = Vec::new();
            for metric in PredictivePolicy::METRICS {
                let readers: Vec<&PredictivePolicy> = policies.iter().filter(|p| p.metric == metric).collect();
                if readers.is_empty() {
                    continue;
                }
                let now = SystemTime::now();
                let end = (unix_ms(now) / 1000) as i64;
                let mut choice = chosen.remove(&metric).unwrap_or_default();
                let values: Vec<(i64, f64)> = points.iter().filter_map(|p| value(p, metric)).collect();
                let made = tokio::task::spawn_blocking(move || {
                    let made = choice.forecast(&Series::from_points(values, end));
                    (choice, made)
                })
                .await;
                let state = match made {
                    Ok((choice, made)) => {
                        chosen.insert(metric, choice);
                        ForecastState::from(made)
                    }
                    Err(panicked) => {
                        tracing::error!(service = %self.service, %panicked, "The forecaster failed.");
                        continue;
                    }
                };
                views.push(view(metric, &readers, &state, unix_ms(now)));
                if self.inbox.send(Input::Forecast { metric, state }).is_err() {
                    return;
                }
            }
            *self.shown.write().unwrap_or_else(|p| p.into_inner()) = views;
        }
    }

    /// The last 14 days: per-minute points from the state file, then the
    /// per-second ones in memory.
    async fn points(&self) -> Vec<ServicePoint> {
        let now_ms = unix_ms(SystemTime::now());
        let since_ms = now_ms.saturating_sub(MAX_HISTORY.as_millis() as u64);
        let recent = self.history.since(since_ms);
        let oldest_in_memory = recent.first().map_or(now_ms, |p| p.time_ms);
        let mut points = Vec::new();
        if let Some(store) = &self.store {
            match store.minute_history(&self.service, since_ms).await {
                Ok(older) => points.extend(older.into_iter().filter(|p| p.time_ms + 60_000 <= oldest_in_memory)),
                Err(error) => {
                    tracing::warn!(service = %self.service, %error, "Forecasting without the state file's history.")
                }
            }
        }
        points.extend(recent);
        points
    }
}

/// A point's value of a forecast metric, at its Unix second: the
/// requests that arrived (offered, when the balancer counted them), or
/// the total CPU of the replicas in service.
fn value(point: &ServicePoint, metric: Metric) -> Option<(i64, f64)> {
    let at = (point.time_ms / 1000) as i64 - 1;
    let v = match metric {
        Metric::Cpu => point.cpu_mean? * f64::from(point.in_service),
        _ => point.traffic.as_ref().map_or(point.requests_per_s, |t| t.offered_per_s),
    };
    v.is_finite().then_some((at, v))
}

fn view(metric: Metric, readers: &[&PredictivePolicy], state: &ForecastState, made_at_ms: u64) -> ForecastView {
    let policies = readers
        .iter()
        .map(|p| ForecastPolicy { name: p.name.clone(), mode: p.mode.to_string(), target: p.target })
        .collect();
    let mut view = ForecastView {
        metric: metric.as_str().to_string(),
        policies,
        state: "too_little_history".into(),
        detail: String::new(),
        model: None,
        skill: None,
        trusted: false,
        history_s: 0,
        gaps_s: 0,
        made_at_ms,
        start_ms: 0,
        step_s: BUCKET_S as u64,
        values: Vec::new(),
    };
    match state {
        ForecastState::NotYet => view.detail = "no forecast yet".into(),
        ForecastState::TooLittleHistory(t) => {
            view.detail = t.to_string();
            view.history_s = t.have.as_secs();
        }
        ForecastState::Ready(f) => {
            view.state = "ready".into();
            view.detail = f.describe();
            view.model = Some(f.model.to_string());
            view.skill = f.skill.map(|s| ForecastSkill {
                days: s.days,
                mape: s.mape,
                yesterday_mape: s.yesterday,
                last_week_mape: s.last_week,
            });
            view.trusted = f.trusted();
            view.history_s = f.history.as_secs();
            view.gaps_s = f.gaps.as_secs();
            view.start_ms = (f.start_unix.max(0) as u64) * 1000;
            view.values = f.values.clone();
        }
    }
    view
}

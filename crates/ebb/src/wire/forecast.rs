//! `GET /api/v1/services/{name}/forecast`: what each predictive policy's
//! forecast says (drawn on the dashboard beside the real load).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The forecast of one metric of a service, shared by the predictive
/// policies that forecast it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ForecastView {
    /// `requests_per_replica` (the service's requests/s are forecast) or
    /// `cpu` (its total CPU, % of one replica's allotment).
    #[schema(example = "requests_per_replica")]
    pub metric: String,
    /// The predictive policies that read it, with their mode.
    pub policies: Vec<ForecastPolicy>,
    /// `ready`, `too_little_history` or `failed`.
    #[schema(example = "ready")]
    pub state: String,
    /// What the state means in words, e.g. `5 h of history, needs 24 h to
    /// forecast`, or the model and how it did in its backtest.
    pub detail: String,
    /// e.g. `Holt-Winters, weekly season, γ 0.3`.
    pub model: Option<String>,
    /// The backtest: MAPE %, beside the naive baselines on the same days.
    pub skill: Option<ForecastSkill>,
    /// It beat every baseline: a `forecast_and_scale` policy acts on it.
    pub trusted: bool,
    /// History learnt from, and the gaps in it (ebb was down), seconds.
    pub history_s: u64,
    pub gaps_s: u64,
    /// When it was made, Unix ms.
    pub made_at_ms: u64,
    /// The first forecast bucket's start (Unix ms), the bucket length, and
    /// one value per bucket (48 h).
    pub start_ms: u64,
    pub step_s: u64,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ForecastPolicy {
    pub name: String,
    /// `forecast_only` or `forecast_and_scale`.
    pub mode: String,
    pub target: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ForecastSkill {
    pub days: u32,
    pub mape: f64,
    pub yesterday_mape: Option<f64>,
    pub last_week_mape: Option<f64>,
}

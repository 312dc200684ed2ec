//! How a predictive policy's forecasts did in a run, in the text and JSON
//! outputs: MAPE over the run, and beside each naive baseline on the
//! buckets that baseline has history for.

use ebb_core::sim::{ForecastReport, Run, Versus};
use serde::Serialize;

/// `--json`: a run's `forecast` object.
#[derive(Debug, Serialize)]
pub struct JsonForecast {
    pub policy: String,
    pub metric: String,
    pub hours: f64,
    pub mape: Option<f64>,
    /// The forecast's and "same time yesterday"'s MAPE on the same buckets.
    pub vs_yesterday: Option<JsonVersus>,
    /// The forecast's and "same time last week"'s MAPE on the same buckets.
    pub vs_last_week: Option<JsonVersus>,
    pub trusted_hours: f64,
    pub model: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct JsonVersus {
    pub hours: f64,
    pub forecast_mape: f64,
    pub baseline_mape: f64,
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn json(report: &ForecastReport) -> JsonForecast {
    let versus = |v: &Versus| JsonVersus {
        hours: round(v.hours),
        forecast_mape: round(v.forecast),
        baseline_mape: round(v.baseline),
    };
    JsonForecast {
        policy: report.policy.clone(),
        metric: report.metric.as_str().to_string(),
        hours: round(report.hours),
        mape: report.mape.map(round),
        vs_yesterday: report.yesterday.as_ref().map(versus),
        vs_last_week: report.last_week.as_ref().map(versus),
        trusted_hours: round(report.trusted_hours),
        model: report.model.clone(),
    }
}

/// One paragraph per run with a predictive policy, for the text output.
pub fn text(runs: &[Run]) -> String {
    let mut out = String::new();
    for run in runs {
        let Some(r) = &run.forecast else { continue };
        out.push_str(&format!("forecast of predictive {} ({}) in {}: ", r.policy, r.metric.as_str(), run.policy));
        match r.mape {
            None => out.push_str("no forecast (a forecast needs 24 h of the trace before it)\n"),
            Some(mape) => {
                out.push_str(&format!("MAPE {mape:.1} % over {:.0} h", r.hours));
                let versus = |name: &str, v: &Option<Versus>| match v {
                    Some(v) => format!(
                        "; {:.1} % vs {:.1} % for same time {name} (on the {:.0} h with a {name} before them)",
                        v.forecast, v.baseline, v.hours
                    ),
                    None => String::new(),
                };
                out.push_str(&versus("yesterday", &r.yesterday));
                out.push_str(&versus("last week", &r.last_week));
                out.push_str(&format!(
                    "; trusted to act {:.0} h; last model: {}\n",
                    r.trusted_hours,
                    r.model.as_deref().unwrap_or("none")
                ));
            }
        }
    }
    out
}

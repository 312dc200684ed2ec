//! `[[service.NAME.scaling.predictive]]`.

use super::Names;
use crate::config::value::{Dur, Number};
use crate::scaling::{Metric, PredictiveMode, PredictivePolicy};
use serde::Deserialize;
use serde_spanned::Spanned;

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a predictive policy like [[service.web.scaling.predictive]] with metric = "requests_per_replica", target = 40"#
)]
pub(in crate::config::raw) struct RawPredictive {
    name: Option<Spanned<String>>,
    metric: Option<Spanned<String>>,
    target: Option<Spanned<Number>>,
    mode: Option<Spanned<String>>,
    launch_ahead: Option<Spanned<Dur>>,
}

impl crate::config::raw::Check<'_> {
    pub(super) fn predictive(&mut self, i: usize, raw: Spanned<RawPredictive>, names: &mut Names) -> PredictivePolicy {
        let at = raw.span();
        let raw = raw.into_inner();
        let allowed = || PredictivePolicy::METRICS.map(|m| format!("\"{}\"", m.as_str())).join(" or ");
        let metric = match &raw.metric {
            None => {
                self.problem(
                    at.clone(),
                    format!("predictive policy has no metric; add one: metric = {} (what is forecast)", allowed()),
                );
                Metric::RequestsPerReplica
            }
            Some(m) => match Metric::from_name(m.get_ref()).filter(|m| PredictivePolicy::METRICS.contains(m)) {
                Some(metric) => metric,
                None => {
                    self.problem(
                        m.span(),
                        format!(
                            "a predictive policy forecasts load, so its metric is {}, not {:?}",
                            allowed(),
                            m.get_ref()
                        ),
                    );
                    Metric::RequestsPerReplica
                }
            },
        };
        let name = self.name(raw.name, names, || format!("predictive-{metric}"), i);
        let example = match metric {
            Metric::Cpu => "target = 60 (% CPU per replica)",
            _ => "target = 40 (requests/s per replica)",
        };
        let target = match &raw.target {
            None => {
                self.problem(
                    at.clone(),
                    format!(
                        "predictive policy `{name}` has no target; add what one replica should carry, e.g. {example}"
                    ),
                );
                1.0
            }
            Some(t) => self.above_zero("target", t, &format!("e.g. {example}")),
        };
        let mode = match &raw.mode {
            None => PredictiveMode::default(),
            Some(m) => PredictiveMode::from_name(m.get_ref()).unwrap_or_else(|| {
                self.problem(
                    m.span(),
                    format!(
                        "mode is \"forecast_only\" (record and show the forecast) or \"forecast_and_scale\" (act on it), not {:?}",
                        m.get_ref()
                    ),
                );
                PredictiveMode::default()
            }),
        };
        let launch_ahead = raw.launch_ahead.map(|v| {
            let d = v.get_ref().0;
            if d > std::time::Duration::from_secs(6 * 3600) {
                self.problem(
                    v.span(),
                    "launch_ahead is at most 6h (it is how long a replica takes to be ready); leave it out to use the measured boot time",
                );
            }
            d
        });
        PredictivePolicy { name, metric, target, mode, launch_ahead }
    }
}

//! Forecasting a service's load from its recorded history, for
//! predictive scaling ([`super::predictive`]).
//!
//! Pure: the history comes in as data (points with their Unix time), the
//! forecast goes out as data. The live controller feeds it ebb's state
//! file (per-minute history, 30 days kept); the simulator feeds it the
//! trace's past seconds.
//!
//! **The models, and how one is chosen.** History is averaged into
//! 5-minute buckets (at most the last 14 days; a bucket without points is
//! a gap, e.g. ebb was down). Two candidates, both additive Holt-Winters
//! (level, damped trend, seasonal offsets), with fixed, explainable
//! parameters: one with a daily season, one with a weekly season (only
//! with 8 days or more: a week to learn the season, and a day to test
//! it). Each is tested by a rolling-origin backtest over the last days of
//! history (up to 7): fitted on the history before a day, it forecasts
//! that whole day, and its MAPE against what happened is kept. The
//! candidate with the lowest median of those days' MAPEs is chosen (a
//! median: one day unlike the others, a flash crowd, does not decide).
//!
//! **The yardsticks.** The same days are forecast by the two trivial
//! baselines, "same time yesterday" and "same time last week" (Grafana's
//! "predictive" trigger is the latter). A forecast is *trusted* only when
//! its MAPE is lower than both baselines' (the weekly one where a week of
//! history exists): a model that cannot beat last week's numbers is worse
//! than no model, and a predictive policy does not act on it.

use std::fmt;
use std::time::Duration;

/// The forecaster's resolution.
pub const BUCKET_S: i64 = 300;
/// Buckets in a day and in a week.
pub const DAY: usize = (86_400 / BUCKET_S) as usize;
pub const WEEK: usize = 7 * DAY;
/// Less than this and there is nothing to learn a day's shape from.
pub const MIN_HISTORY: Duration = Duration::from_secs(86_400);
/// The most history used.
pub const MAX_HISTORY: Duration = Duration::from_secs(14 * 86_400);
/// How far ahead a forecast reaches.
pub const HORIZON: Duration = Duration::from_secs(48 * 3600);
/// Buckets whose actual value is below this share of the history's mean
/// are left out of MAPE: a percentage error on near-zero load (a quiet
/// night) says nothing and would swamp the figure.
pub(crate) const MAPE_FLOOR: f64 = 0.05;
/// The most days of backtest.
const BACKTEST_DAYS: usize = 7;

/// A metric at a fixed 5-minute step: the mean of the points in each
/// bucket, `None` for a bucket without any (a gap).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The Unix time the first bucket starts, a multiple of [`BUCKET_S`].
    pub start_unix: i64,
    pub values: Vec<Option<f64>>,
}

impl Series {
    /// Buckets the points (Unix seconds, value) that fall in the
    /// [`MAX_HISTORY`] before `end_unix` (exclusive). The series ends at
    /// the last whole bucket before `end_unix`, so a forecast starts
    /// where the partial bucket does. Non-finite values are ignored.
    pub fn from_points(points: impl IntoIterator<Item = (i64, f64)>, end_unix: i64) -> Series {
        let end = end_unix.div_euclid(BUCKET_S) * BUCKET_S;
        let start = end - MAX_HISTORY.as_secs() as i64;
        let n = ((end - start) / BUCKET_S) as usize;
        let mut sums = vec![(0.0, 0u32); n];
        for (at, value) in points {
            if at < start || at >= end || !value.is_finite() {
                continue;
            }
            let slot = &mut sums[((at - start) / BUCKET_S) as usize];
            slot.0 += value;
            slot.1 += 1;
        }
        let mut values: Vec<Option<f64>> =
            sums.into_iter().map(|(sum, count)| (count > 0).then(|| sum / f64::from(count))).collect();
        // Leading gaps are not history (ebb did not exist yet).
        let first = values.iter().position(Option::is_some).unwrap_or(values.len());
        values.drain(..first);
        Series { start_unix: start + first as i64 * BUCKET_S, values }
    }

    /// Where the series ends: the start of the first forecast bucket.
    pub fn end_unix(&self) -> i64 {
        self.start_unix + self.values.len() as i64 * BUCKET_S
    }

    /// From the first recorded bucket to the end.
    pub fn span(&self) -> Duration {
        Duration::from_secs(self.values.len() as u64 * BUCKET_S as u64)
    }

    /// Buckets without data inside the span.
    pub fn gaps(&self) -> usize {
        self.values.iter().filter(|v| v.is_none()).count()
    }
}

/// A forecasting model: additive Holt-Winters with a daily or a weekly
/// season, and how fast its seasonal offsets learn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    pub season: Season,
    /// Seasonal smoothing (γ): how far an offset moves toward what it saw
    /// each time its bucket comes round. High relearns a changed shape in
    /// days; low averages noise out over more seasons.
    pub gamma: f64,
}

/// The season a model learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Season {
    Daily,
    Weekly,
}

impl Season {
    fn buckets(self) -> usize {
        match self {
            Season::Daily => DAY,
            Season::Weekly => WEEK,
        }
    }

    /// `daily` / `weekly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Season::Daily => "daily",
            Season::Weekly => "weekly",
        }
    }
}

/// The seasonal smoothings tried for each season.
const GAMMAS: [f64; 3] = [0.1, 0.3, 0.6];

impl fmt::Display for Model {
    /// `Holt-Winters, weekly season, γ 0.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Holt-Winters, {} season, γ {}", self.season.as_str(), self.gamma)
    }
}

/// How the chosen model did in the backtest, beside the baselines, as
/// MAPE in percent over the same days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Skill {
    /// Days of backtest.
    pub days: u32,
    pub mape: f64,
    /// "Same time yesterday".
    pub yesterday: Option<f64>,
    /// "Same time last week" (needs 8 days of history).
    pub last_week: Option<f64>,
}

impl Skill {
    /// Better than every baseline that could be computed (and at least
    /// one could).
    pub fn beats_baselines(&self) -> bool {
        let baselines = [self.yesterday, self.last_week];
        baselines.iter().any(Option::is_some) && baselines.iter().flatten().all(|&b| self.mape < b)
    }
}

impl fmt::Display for Skill {
    /// `MAPE 8.1 % vs 14.0 % for same time last week, 21.3 % for same
    /// time yesterday (median day of 7 days of backtest)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MAPE {:.1} %", self.mape)?;
        let mut sep = " vs";
        if let Some(w) = self.last_week {
            write!(f, "{sep} {w:.1} % for same time last week")?;
            sep = ",";
        }
        if let Some(y) = self.yesterday {
            write!(f, "{sep} {y:.1} % for same time yesterday")?;
        }
        let days = self.days;
        write!(f, " (median day of {days} day{} of backtest)", if days == 1 { "" } else { "s" })
    }
}

/// A forecast: one value per bucket from `start_unix`, [`HORIZON`] long.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub start_unix: i64,
    pub model: Model,
    pub values: Vec<f64>,
    /// `None` with less than 2 days of history (nothing to test on).
    pub skill: Option<Skill>,
    /// The history it learnt from, and its gaps.
    pub history: Duration,
    pub gaps: Duration,
}

impl Forecast {
    /// The forecast for the bucket holding `unix`, if within the horizon.
    pub fn at(&self, unix: i64) -> Option<f64> {
        let i = (unix - self.start_unix).div_euclid(BUCKET_S);
        usize::try_from(i).ok().and_then(|i| self.values.get(i).copied())
    }

    /// The highest forecast of the buckets overlapping `[from, to]`, and
    /// when that bucket starts.
    pub fn peak(&self, from: i64, to: i64) -> Option<(f64, i64)> {
        let mut best: Option<(f64, i64)> = None;
        let mut t = from.div_euclid(BUCKET_S) * BUCKET_S;
        while t <= to {
            if let Some(v) = self.at(t) {
                if best.is_none_or(|(b, _)| v > b) {
                    best = Some((v, t.max(from)));
                }
            }
            t += BUCKET_S;
        }
        best
    }

    /// Trusted to act on: tested, and better than the baselines.
    pub fn trusted(&self) -> bool {
        self.skill.is_some_and(|s| s.beats_baselines())
    }

    /// How its backtest went, or that it had none yet.
    pub fn skill_text(&self) -> String {
        self.skill.map_or_else(|| "not yet tested: needs 2 days of history".into(), |s| s.to_string())
    }

    /// The model, its backtest and the history it learnt from, gaps
    /// included: `Holt-Winters, weekly season, γ 0.3; MAPE 8.1 % vs …
    /// (median day of 7 days of backtest); 14 d of history, 6 h of it missing`.
    pub fn describe(&self) -> String {
        let d = super::metrics::duration;
        let mut text = format!("{}; {}; {} of history", self.model, self.skill_text(), d(self.history));
        if !self.gaps.is_zero() {
            text.push_str(&format!(", {} of it missing (ebb was down)", d(self.gaps)));
        }
        text
    }
}

/// Why there is no forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLittleHistory {
    pub have: Duration,
    pub need: Duration,
}

impl fmt::Display for TooLittleHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = super::metrics::duration;
        write!(f, "{} of history, needs {} to forecast", d(self.have), d(self.need))
    }
}

/// The model a backtest chose, and how it did: what [`forecast_with`]
/// needs. Choosing tests every candidate on up to 7 days, so callers that
/// forecast often (hourly) choose once a day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub model: Model,
    /// `None` with less than 2 days of history (nothing to test on).
    pub skill: Option<Skill>,
}

/// Learns the series and forecasts [`HORIZON`] ahead of its end.
pub fn forecast(series: &Series) -> Result<Forecast, TooLittleHistory> {
    let choice = choose(series)?;
    forecast_with(series, choice)
}

/// The rolling-origin backtest: each candidate forecasts each of the last
/// days from the history before it; the lowest median day's MAPE wins,
/// and is compared with the naive baselines' on the same days.
pub fn choose(series: &Series) -> Result<Choice, TooLittleHistory> {
    let values = &series.values;
    let have = values.len() - values.iter().rev().take_while(|v| v.is_none()).count();
    if have < DAY {
        return Err(TooLittleHistory { have: series.span(), need: MIN_HISTORY });
    }
    let days = values.len() / DAY;
    // The weekly model needs a week to learn and days to be tested on.
    let weekly = days >= 8;
    let test_days = if weekly { (days - 7).min(BACKTEST_DAYS) } else { (days - 1).min(BACKTEST_DAYS) };
    let seasons: &[Season] = if weekly { &[Season::Daily, Season::Weekly] } else { &[Season::Daily] };
    let candidates = seasons.iter().flat_map(|&season| GAMMAS.map(|gamma| Model { season, gamma }));
    let floor = mean(values) * MAPE_FLOOR;
    let fallback = Model { season: Season::Daily, gamma: GAMMAS[1] };
    if test_days == 0 {
        return Ok(Choice { model: fallback, skill: None });
    }
    let origins: Vec<usize> = (1..=test_days).map(|d| values.len() - d * DAY).collect();
    // Each day is scored on its own and the days' median counts: one
    // day unlike the others (a flash crowd, an outage) does not decide
    // which model wins, nor whether it beat the baselines.
    let mut best: Option<(Model, f64)> = None;
    for model in candidates {
        let daily = origins.iter().filter_map(|&origin| {
            let predicted = holt_winters(&values[..origin], model, DAY)?;
            let mut errors = Errors::default();
            for (i, p) in predicted.iter().enumerate() {
                errors.add(values[origin + i], Some(*p), floor);
            }
            errors.mape()
        });
        if let Some(mape) = median(daily) {
            if best.is_none_or(|(_, b)| mape < b) {
                best = Some((model, mape));
            }
        }
    }
    let baseline = |lag: usize| {
        median(origins.iter().filter_map(|&origin| {
            let mut errors = Errors::default();
            for t in origin..origin + DAY {
                let past = t.checked_sub(lag).and_then(|p| values[p]);
                errors.add(values[t], past, floor);
            }
            errors.mape()
        }))
    };
    Ok(match best {
        Some((model, mape)) => Choice {
            model,
            skill: Some(Skill { days: test_days as u32, mape, yesterday: baseline(DAY), last_week: baseline(WEEK) }),
        },
        None => Choice { model: fallback, skill: None },
    })
}

/// Forecasts made often (hourly, live and in simulation) with the model
/// chosen once a day: the backtest tests whole days, so a day's choice
/// holds for its hours, and choosing (every candidate on up to 7 days) is
/// the costly part.
#[derive(Debug, Clone, Copy, Default)]
pub struct DailyChoice {
    /// The day (Unix s / 86 400) of the choice, and the choice.
    chosen: Option<(i64, Choice)>,
}

impl DailyChoice {
    /// A forecast from the series' end, choosing the model again on a new
    /// day.
    pub fn forecast(&mut self, series: &Series) -> Result<Forecast, TooLittleHistory> {
        let day = series.end_unix().div_euclid(86_400);
        let choice = match self.chosen {
            Some((chosen_on, choice)) if chosen_on == day => choice,
            _ => choose(series)?,
        };
        self.chosen = Some((day, choice));
        forecast_with(series, choice)
    }
}

/// Forecasts [`HORIZON`] ahead of the series' end with a chosen model.
pub fn forecast_with(series: &Series, choice: Choice) -> Result<Forecast, TooLittleHistory> {
    let horizon = (HORIZON.as_secs() as i64 / BUCKET_S) as usize;
    let values = holt_winters(&series.values, choice.model, horizon)
        .ok_or(TooLittleHistory { have: series.span(), need: MIN_HISTORY })?;
    Ok(Forecast {
        start_unix: series.end_unix(),
        model: choice.model,
        values,
        skill: choice.skill,
        history: series.span(),
        gaps: Duration::from_secs(series.gaps() as u64 * BUCKET_S as u64),
    })
}

/// Absolute percentage errors, summed.
#[derive(Default)]
struct Errors {
    sum: f64,
    count: u32,
}

impl Errors {
    fn add(&mut self, actual: Option<f64>, predicted: Option<f64>, floor: f64) {
        if let (Some(a), Some(p)) = (actual, predicted) {
            if a > floor && a > 0.0 {
                self.sum += (a - p).abs() / a;
                self.count += 1;
            }
        }
    }

    fn mape(&self) -> Option<f64> {
        (self.count > 0).then(|| 100.0 * self.sum / f64::from(self.count))
    }
}

/// The median of some numbers; `None` for none.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

fn mean(values: &[Option<f64>]) -> f64 {
    let (sum, n) = values.iter().flatten().fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / f64::from(n)
    }
}

/// Smoothing of the level (per bucket) and of the trend, and the
/// damping of the trend: fixed so that a decision's reason can name the
/// model by its season and γ alone. The level moves slowly (a time
/// constant of about a day): a faster level soaks up the day's shape and
/// leaves the seasonal offsets to drift (a level at 0.05 forecast 3× the
/// real noon load days after a change of shape); the seasons carry the
/// shape. The trend is small and damped so that a 48 h forecast does not
/// run away.
const ALPHA: f64 = 0.003;
const BETA: f64 = 0.001;
const PHI: f64 = 0.98;

/// Additive Holt-Winters with a damped trend: fits `values` (gaps filled
/// with the model's own one-step forecast) and forecasts `horizon`
/// buckets after them, never below zero. The forecast reads each offset
/// smoothed with its two neighbours (a load's shape does not jump in five
/// minutes; noise does). `None` without a whole first season holding any
/// data.
fn holt_winters(values: &[Option<f64>], model: Model, horizon: usize) -> Option<Vec<f64>> {
    let season = model.season.buckets();
    let gamma = model.gamma;
    if values.len() < season {
        return None;
    }
    let first = &values[..season];
    let level0 = {
        let (sum, n) = first.iter().flatten().fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
        if n == 0 {
            return None;
        }
        sum / f64::from(n)
    };
    let mut offsets: Vec<f64> = first.iter().map(|v| v.map_or(0.0, |v| v - level0)).collect();
    let mut level = level0;
    let mut trend = 0.0;
    for (t, value) in values.iter().enumerate().skip(season) {
        let s = offsets[t % season];
        let x = value.unwrap_or(level + PHI * trend + s);
        let new_level = ALPHA * (x - s) + (1.0 - ALPHA) * (level + PHI * trend);
        trend = BETA * (new_level - level) + (1.0 - BETA) * PHI * trend;
        offsets[t % season] = gamma * (x - new_level) + (1.0 - gamma) * s;
        level = new_level;
    }
    let n = values.len();
    let mut damped = 0.0;
    let mut power = 1.0;
    Some(
        (1..=horizon)
            .map(|h| {
                power *= PHI;
                damped += power;
                let i = (n + h - 1) % season;
                let offset = (offsets[(i + season - 1) % season] + offsets[i] + offsets[(i + 1) % season]) / 3.0;
                (level + damped * trend + offset).max(0.0)
            })
            .collect(),
    )
}

//! The forecaster on synthetic traces whose shape is known: errors stay
//! bounded, the model choice follows the shape, too little history and
//! gaps are said.

use ebb_core::scaling::forecast::{forecast, Season, Series, BUCKET_S, DAY};
use ebb_core::sim::rng::Rng;
use std::f64::consts::PI;
use std::time::Duration;

/// Monday 2026-01-05 00:00 UTC.
const MONDAY: i64 = 1_767_571_200;

/// Requests/s at `t` (Unix s): a daily wave peaking at `peak_hour`,
/// weekends at half, times `level`.
fn shape(t: i64, peak_hour: f64, weekly: bool, level: f64) -> f64 {
    let day = (t - MONDAY).div_euclid(86_400);
    let hour = (t - MONDAY).rem_euclid(86_400) as f64 / 3600.0;
    let daily = 100.0 + 80.0 * (2.0 * PI * (hour - peak_hour + 6.0) / 24.0).sin();
    let weekend = if weekly && day.rem_euclid(7) >= 5 { 0.5 } else { 1.0 };
    daily * weekend * level
}

/// One point a minute over `days` from Monday, with ±`noise` relative
/// noise.
fn points(days: i64, noise: f64, seed: u64, f: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
    let mut rng = Rng::new(seed);
    (0..days * 1440)
        .map(|m| {
            let t = MONDAY + m * 60;
            (t, f(t) * (1.0 + noise * (2.0 * rng.unit() - 1.0)))
        })
        .collect()
}

/// MAPE of the forecast's next 24 h against the noise-free truth.
fn error_next_day(series: &Series, f: impl Fn(i64) -> f64) -> f64 {
    let forecast = forecast(series).expect("enough history");
    let mut sum = 0.0;
    for i in 0..DAY as i64 {
        let t = series.end_unix() + i * BUCKET_S;
        let truth = (0..5).map(|m| f(t + m * 60)).sum::<f64>() / 5.0;
        sum += (forecast.at(t).unwrap() - truth).abs() / truth;
    }
    100.0 * sum / DAY as f64
}

#[test]
fn too_little_history_says_how_much_it_has_and_needs() {
    let series =
        Series::from_points(points(1, 0.0, 1, |t| shape(t, 14.0, false, 1.0)).into_iter().take(720), MONDAY + 43_200);
    let err = forecast(&series).unwrap_err();
    assert_eq!(err.have, Duration::from_secs(12 * 3600));
    assert_eq!(err.to_string(), "12 h of history, needs 24 h to forecast");
}

#[test]
fn a_daily_and_weekly_shape_is_forecast_within_ten_percent_and_beats_the_baselines() {
    let truth = |t| shape(t, 14.0, true, 1.0);
    let series = Series::from_points(points(14, 0.2, 7, truth), MONDAY + 14 * 86_400);
    assert_eq!(series.span(), Duration::from_secs(14 * 86_400));
    let f = forecast(&series).unwrap();
    assert_eq!(f.model.season, Season::Weekly, "weekends are half: only the weekly season knows");
    let skill = f.skill.unwrap();
    assert_eq!(skill.days, 7);
    assert!(skill.beats_baselines(), "{skill}");
    assert!(skill.mape < skill.last_week.unwrap() && skill.mape < skill.yesterday.unwrap());
    // Monday again: the weekday shape, not Sunday's.
    let error = error_next_day(&series, truth);
    assert!(error < 10.0, "next day's MAPE {error:.1} %");
    assert!(f.trusted());
}

#[test]
fn a_daily_shape_with_one_week_is_forecast_by_the_daily_model() {
    let truth = |t| shape(t, 9.0, false, 1.0);
    let series = Series::from_points(points(5, 0.1, 3, truth), MONDAY + 5 * 86_400);
    let f = forecast(&series).unwrap();
    assert_eq!(f.model.season, Season::Daily);
    let skill = f.skill.unwrap();
    assert_eq!((skill.days, skill.last_week), (4, None), "no week of history: only yesterday to beat");
    assert!(skill.beats_baselines(), "{skill}");
    assert!(error_next_day(&series, truth) < 10.0);
}

#[test]
fn a_change_of_shape_switches_the_model_from_weekly_to_daily() {
    // Two weeks of one weekly shape: the weekly model wins.
    let steady = |t| shape(t, 14.0, true, 1.0);
    let f = forecast(&Series::from_points(points(14, 0.1, 5, steady), MONDAY + 14 * 86_400)).unwrap();
    assert_eq!(f.model.season, Season::Weekly);

    // The same, but from day 8 the weekends stop being quiet and the
    // peak moves to the evening (a product launch): what the weekly season
    // learnt is stale, the daily one relearns within days.
    let changed = |t: i64| {
        if t < MONDAY + 8 * 86_400 {
            shape(t, 14.0, true, 1.0)
        } else {
            shape(t, 20.0, false, 1.5)
        }
    };
    let series = Series::from_points(points(14, 0.1, 5, changed), MONDAY + 14 * 86_400);
    let f = forecast(&series).unwrap();
    assert_eq!(f.model.season, Season::Daily, "{:?}", f.skill);
    let skill = f.skill.unwrap();
    assert!(skill.mape < skill.last_week.unwrap(), "last week is stale: {skill}");
    // Days after the change "same time yesterday" still knows better than
    // a model relearning its season: the forecast is not trusted to act.
    assert!(skill.mape > skill.yesterday.unwrap() && !f.trusted(), "{skill}");
}

#[test]
fn noise_alone_is_not_trusted_when_last_week_is_as_good() {
    // A perfectly repeating week without noise: same time last week is
    // exact, and no smoothing model can beat an error of zero.
    let exact = |t| shape(t, 14.0, true, 1.0);
    let f = forecast(&Series::from_points(points(14, 0.0, 1, exact), MONDAY + 14 * 86_400)).unwrap();
    let skill = f.skill.unwrap();
    assert!(skill.last_week.unwrap() < 1e-9);
    assert!(!f.trusted(), "{skill}");
}

#[test]
fn gaps_in_history_are_bridged_and_counted() {
    let truth = |t| shape(t, 14.0, false, 1.0);
    // ebb was down for 6 hours on day 3.
    let down = (MONDAY + 2 * 86_400 + 3600)..(MONDAY + 2 * 86_400 + 7 * 3600);
    let pts: Vec<_> = points(4, 0.1, 9, truth).into_iter().filter(|(t, _)| !down.contains(t)).collect();
    let series = Series::from_points(pts, MONDAY + 4 * 86_400);
    assert_eq!(series.gaps(), 72, "6 h of 5-minute buckets");
    let f = forecast(&series).unwrap();
    assert_eq!(f.gaps, Duration::from_secs(6 * 3600));
    assert!(f.describe().ends_with("; 96 h of history, 6 h of it missing (ebb was down)"), "{}", f.describe());
    assert!(error_next_day(&series, truth) < 10.0);
}

#[test]
fn the_peak_covers_the_launch_window() {
    let series = Series::from_points(points(3, 0.0, 1, |t| shape(t, 12.0, false, 1.0)), MONDAY + 3 * 86_400);
    let f = forecast(&series).unwrap();
    // From 11:00 to 13:00 the peak is around noon, near 180.
    let (peak, at) = f.peak(f.start_unix + 11 * 3600, f.start_unix + 13 * 3600).unwrap();
    assert!((peak - 180.0).abs() < 10.0, "{peak}");
    assert!((at - (f.start_unix + 12 * 3600)).abs() <= 1800, "{at}");
    assert_eq!(f.at(f.start_unix - 1), None, "before the forecast");
    assert_eq!(f.at(f.start_unix + 49 * 3600), None, "beyond 48 h");
}

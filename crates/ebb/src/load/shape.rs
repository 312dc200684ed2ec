//! Traffic shapes for the open model: a constant rate, `--stages` (ramps and
//! holds) and `--trace` (a recorded `second,rate` CSV, read by the
//! simulator's reader).
//!
//! A shape is a list of segments whose rate changes linearly from `from` to
//! `to` over `duration`. The number of requests due by time `t` is the
//! integral of the rate, `N(t)`; request `i` (counted from 0) is due at the
//! `t` where `N(t) = i`. For a constant rate that is `i / rate`, as in wrk2
//! and vegeta. Everything here is pure: no clock, no I/O.

use std::time::Duration;

/// One piece of a shape: the rate goes linearly from `from` to `to`.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    /// Seconds after the start of the run.
    start: f64,
    /// Seconds; `f64::INFINITY` for a constant rate bounded only by `-n`.
    duration: f64,
    /// Requests per second at `start`.
    from: f64,
    /// Requests per second at `start + duration`.
    to: f64,
    /// Requests due before this segment starts (`N(start)`).
    before: f64,
}

impl Segment {
    /// Requests due during this segment.
    fn count(&self) -> f64 {
        if self.from == self.to {
            if self.from == 0.0 {
                0.0
            } else {
                self.from * self.duration
            }
        } else {
            (self.from + self.to) / 2.0 * self.duration
        }
    }

    fn rate_at(&self, offset: f64) -> f64 {
        if self.from == self.to {
            self.from
        } else {
            self.from + (self.to - self.from) * (offset / self.duration)
        }
    }

    /// Seconds into the segment at which `x` requests of it are due.
    fn offset_of(&self, x: f64) -> f64 {
        if self.from == self.to {
            return x / self.from;
        }
        // N(τ) = from·τ + a·τ², a = (to − from) / (2·duration). Solved for τ
        // in the form that stays exact when a → 0 and for ramps down.
        let a = (self.to - self.from) / (2.0 * self.duration);
        let b = self.from;
        let root = (b * b + 4.0 * a * x).max(0.0).sqrt();
        let denominator = b + root;
        if denominator <= 0.0 {
            0.0
        } else {
            (2.0 * x / denominator).min(self.duration)
        }
    }
}

/// A traffic shape: the target arrival rate over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    segments: Vec<Segment>,
}

impl Shape {
    fn from_pieces(pieces: impl IntoIterator<Item = (f64, f64, f64)>) -> Shape {
        let mut segments: Vec<Segment> = Vec::new();
        let (mut start, mut before) = (0.0, 0.0);
        for (duration, from, to) in pieces {
            let segment = Segment { start, duration, from, to, before };
            start += duration;
            before += segment.count();
            segments.push(segment);
        }
        Shape { segments }
    }

    /// `rate` requests per second for `duration` (or until `-n` stops it).
    pub fn constant(rate: f64, duration: Option<Duration>) -> Shape {
        let seconds = duration.map_or(f64::INFINITY, |d| d.as_secs_f64());
        Shape::from_pieces([(seconds, rate, rate)])
    }

    /// Parses `--stages`, e.g. `30s:0->200,2m:200,30s:200->0`: each stage is
    /// `DURATION:RATE` (hold) or `DURATION:FROM->TO` (linear ramp).
    /// Errors name the stage and its column (1-based, in characters).
    pub fn parse_stages(text: &str) -> Result<Shape, String> {
        let mut pieces = Vec::new();
        let mut column = 1;
        for (index, raw) in text.split(',').enumerate() {
            let stage_column = column + (raw.len() - raw.trim_start().len());
            column += raw.chars().count() + 1;
            let stage = raw.trim();
            let at = |offset: usize, what: String| {
                format!("stage {} ({:?}) at column {}: {what}", index + 1, stage, stage_column + offset)
            };
            if stage.is_empty() {
                return Err(at(0, "empty stage (expected DURATION:RATE or DURATION:FROM->TO, e.g. 30s:0->200)".into()));
            }
            let Some((duration_text, rates)) = stage.split_once(':') else {
                return Err(at(0, "expected DURATION:RATE or DURATION:FROM->TO, e.g. 2m:200 or 30s:0->200".into()));
            };
            let duration = parse_duration(duration_text.trim())
                .map_err(|e| at(0, format!("bad duration {:?}: {e} (e.g. 30s, 2m, 1h)", duration_text.trim())))?;
            if duration.is_zero() {
                return Err(at(0, "a stage must last longer than 0s".into()));
            }
            let rates_column = duration_text.chars().count() + 1;
            let (from, to) = match rates.split_once("->") {
                Some((from, to)) => {
                    let to_column = rates_column + from.chars().count() + 2;
                    (parse_rate(from).map_err(|e| at(rates_column, e))?, parse_rate(to).map_err(|e| at(to_column, e))?)
                }
                None => {
                    let rate = parse_rate(rates).map_err(|e| at(rates_column, e))?;
                    (rate, rate)
                }
            };
            pieces.push((duration.as_secs_f64(), from, to));
        }
        let shape = Shape::from_pieces(pieces);
        if shape.expected_requests() < 1.0 {
            return Err("the stages add up to no request at all (every rate is 0)".into());
        }
        Ok(shape)
    }

    /// A `--trace` file's shape: one second per row at that row's rate. The
    /// file is read by `ebb_core::sim::Trace::parse_csv`, the reader of
    /// `ebb simulate --trace` too, so one file means the same to both.
    pub fn from_trace(trace: &ebb_core::sim::Trace) -> Result<Shape, String> {
        let shape = Shape::from_pieces(trace.rates.iter().map(|&rate| (1.0, rate, rate)));
        if shape.expected_requests() < 1.0 {
            return Err(format!("{}: the trace adds up to no request at all (every rate is 0)", trace.source));
        }
        Ok(shape)
    }

    /// Cuts the shape at `limit` (for `-z` with `--stages` or `--trace`).
    pub fn truncate(&self, limit: Duration) -> Shape {
        let limit = limit.as_secs_f64();
        let mut pieces = Vec::new();
        for s in &self.segments {
            if s.start >= limit {
                break;
            }
            let duration = s.duration.min(limit - s.start);
            let to = if duration < s.duration { s.rate_at(duration) } else { s.to };
            pieces.push((duration, s.from, to));
        }
        Shape::from_pieces(pieces)
    }

    /// Total length in seconds (infinite for a constant rate without `-z`).
    pub fn duration(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.start + s.duration)
    }

    /// Requests the shape asks for in all (infinite without an end).
    pub fn expected_requests(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.before + s.count())
    }

    /// The target rate at `t` seconds after the start (0 after the end).
    pub fn rate_at(&self, t: f64) -> f64 {
        let k = self.segments.partition_point(|s| s.start + s.duration <= t);
        self.segments.get(k).map_or(0.0, |s| s.rate_at((t - s.start).max(0.0)))
    }

    /// The highest rate anywhere in the shape.
    pub fn peak(&self) -> f64 {
        self.segments.iter().map(|s| s.from.max(s.to)).fold(0.0, f64::max)
    }

    /// Seconds after the start at which request `i` (from 0) is due, or
    /// `None` when the shape ends before it.
    pub fn due(&self, i: u64) -> Option<f64> {
        let x = i as f64;
        let k = self.segments.partition_point(|s| s.before + s.count() <= x);
        let s = self.segments.get(k)?;
        Some(s.start + s.offset_of(x - s.before))
    }

    /// `describe` for the header line: `200 req/s` or `3 stages, peak 200 req/s`.
    pub fn describe(&self) -> String {
        match self.segments.as_slice() {
            [one] if one.from == one.to => format!("{} req/s", fmt_rate(one.from)),
            segments => format!("{} segments, peak {} req/s", segments.len(), fmt_rate(self.peak())),
        }
    }
}

fn fmt_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.2}")
    }
}

/// A rate: a finite number ≥ 0.
fn parse_rate(text: &str) -> Result<f64, String> {
    let text = text.trim();
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        Ok(_) => Err(format!("rate {text:?} must be a number ≥ 0 (requests per second)")),
        Err(_) => Err(format!("rate {text:?} is not a number (requests per second)")),
    }
}

/// A duration as users write it for hey and for ebb's config: `30s`, `2m`,
/// `1h30m`, `250ms`; a bare number is seconds (hey's `-t 5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok(Duration::from_secs_f64(seconds));
        }
        return Err(format!("{text:?} must be ≥ 0"));
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests_in(shape: &Shape, from: f64, to: f64) -> usize {
        (0..).map_while(|i| shape.due(i)).filter(|&t| t >= from && t < to).count()
    }

    #[test]
    fn constant_rate_is_i_over_rate() {
        let shape = Shape::constant(200.0, Some(Duration::from_secs(2)));
        assert_eq!(shape.due(0), Some(0.0));
        assert_eq!(shape.due(1), Some(0.005));
        assert_eq!(shape.due(399), Some(1.995));
        assert_eq!(shape.due(400), None);
        assert_eq!(shape.expected_requests(), 400.0);
    }

    #[test]
    fn constant_rate_without_duration_never_ends() {
        let shape = Shape::constant(10.0, None);
        assert_eq!(shape.due(1_000_000), Some(100_000.0));
        assert!(shape.duration().is_infinite());
    }

    #[test]
    fn stages_ramp_hold_and_ramp_down() {
        let shape = Shape::parse_stages("10s:0->100, 5s:100, 10s:100->0").unwrap();
        assert_eq!(shape.duration(), 25.0);
        // 500 requests up, 500 held, 500 down.
        assert_eq!(shape.expected_requests(), 1500.0);
        assert_eq!(shape.rate_at(5.0), 50.0);
        assert_eq!(shape.rate_at(12.0), 100.0);
        assert_eq!(shape.rate_at(20.0), 50.0);
        assert_eq!(shape.rate_at(30.0), 0.0);
        // A ramp: each second carries more requests than the one before.
        let per_second: Vec<usize> = (0..10).map(|s| requests_in(&shape, s as f64, s as f64 + 1.0)).collect();
        assert!(per_second.windows(2).all(|w| w[0] < w[1]), "{per_second:?}");
        // Second k of a 0->100 ramp over 10 s carries 10k+5 requests (±1 for rounding).
        for (k, &n) in per_second.iter().enumerate() {
            assert!((n as i64 - (10 * k as i64 + 5)).abs() <= 1, "second {k}: {n}");
        }
        assert_eq!(requests_in(&shape, 10.0, 15.0), 500);
        let down: Vec<usize> = (15..25).map(|s| requests_in(&shape, s as f64, s as f64 + 1.0)).collect();
        assert!(down.windows(2).all(|w| w[0] > w[1]), "{down:?}");
        let total = (0..).map_while(|i| shape.due(i)).count();
        assert!((1499..=1500).contains(&total), "{total}");
    }

    #[test]
    fn due_times_are_monotonic_across_segments() {
        let shape = Shape::parse_stages("3s:5->50,2s:50,4s:50->1,1s:0,2s:7").unwrap();
        let times: Vec<f64> = (0..).map_while(|i| shape.due(i)).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(*times.last().unwrap() < shape.duration());
        // Nothing is due during the 1 s at rate 0.
        assert_eq!(requests_in(&shape, 9.0001, 9.9999), 0);
    }

    #[test]
    fn stage_errors_name_the_stage_and_column() {
        let e = Shape::parse_stages("30s:0->200,2x:200").unwrap_err();
        assert!(e.starts_with("stage 2 (\"2x:200\") at column 12: bad duration \"2x\""), "{e}");
        let e = Shape::parse_stages("30s:0->200,1m:200->-5").unwrap_err();
        assert_eq!(e, "stage 2 (\"1m:200->-5\") at column 20: rate \"-5\" must be a number ≥ 0 (requests per second)");
        let e = Shape::parse_stages("30s:abc").unwrap_err();
        assert_eq!(e, "stage 1 (\"30s:abc\") at column 5: rate \"abc\" is not a number (requests per second)");
        let e = Shape::parse_stages("30s").unwrap_err();
        assert!(e.starts_with("stage 1 (\"30s\") at column 1: expected DURATION:RATE"), "{e}");
        let e = Shape::parse_stages("30s:10,,1m:5").unwrap_err();
        assert!(e.starts_with("stage 2 (\"\") at column 8: empty stage"), "{e}");
        let e = Shape::parse_stages("0s:10").unwrap_err();
        assert!(e.contains("longer than 0s"), "{e}");
        let e = Shape::parse_stages("10s:0,5s:0->0").unwrap_err();
        assert!(e.contains("no request at all"), "{e}");
    }

    fn trace(text: &str) -> Result<Shape, String> {
        Shape::from_trace(&ebb_core::sim::Trace::parse_csv(text, "day.csv")?)
    }

    #[test]
    fn trace_rows_are_one_second_each() {
        let shape = trace("second,rate\n# a comment\n0,10\n\n1,10\n2,30\n3,0\n4,0\n5,20\n").unwrap();
        assert_eq!(shape.duration(), 6.0);
        assert_eq!(shape.expected_requests(), 10.0 * 2.0 + 30.0 + 0.0 + 20.0);
        assert_eq!(requests_in(&shape, 0.0, 1.0), 10);
        assert_eq!(requests_in(&shape, 1.0, 2.0), 10);
        assert_eq!(requests_in(&shape, 2.0, 3.0), 30);
        assert_eq!(requests_in(&shape, 3.0, 5.0), 0);
        assert_eq!(requests_in(&shape, 5.0, 6.0), 20);
    }

    #[test]
    fn trace_seconds_count_from_the_first_row() {
        let shape = trace("1700000000,5\n1700000001,7\n").unwrap();
        assert_eq!(shape.duration(), 2.0);
        assert_eq!(shape.expected_requests(), 12.0);
    }

    #[test]
    fn trace_errors_carry_the_line_number() {
        // The reader's own messages are tested in ebb-core (sim_trace.rs).
        assert!(trace("second,rate\n0,10\n1,-3\n").unwrap_err().starts_with("day.csv:3: negative rate -3"));
        assert!(trace("0,10\n2,30\n").unwrap_err().starts_with("day.csv:2: gap in the trace"));
        assert_eq!(
            trace("0,0\n1,0\n").unwrap_err(),
            "day.csv: the trace adds up to no request at all (every rate is 0)"
        );
    }

    #[test]
    fn truncate_cuts_a_ramp_at_its_current_rate() {
        let shape = Shape::parse_stages("10s:0->100,10s:100").unwrap().truncate(Duration::from_secs(5));
        assert_eq!(shape.duration(), 5.0);
        assert_eq!(shape.expected_requests(), 125.0);
        assert_eq!(shape.rate_at(4.999).round(), 50.0);
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("10x").is_err());
    }
}

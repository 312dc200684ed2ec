//! Built-in traffic shapes: `--shape NAME[:key=value,…]`.
//!
//! | shape | parameters (defaults) | rate at second `t` |
//! |---|---|---|
//! | `constant` | `rate=100`, `duration=1h` | `rate` |
//! | `step` | `base=50`, `peak=400`, `at=5m`, `hold` (to the end), `duration=1h` | `peak` from `at` for `hold`, else `base` |
//! | `spike` | `base=50`, `peak=500`, `at=10m`, `hold=1m`, `ramp=0`, `duration=1h` | `base`, rising linearly over `ramp` to `peak` at `at`, `peak` for `hold`, back down over `ramp` |
//! | `sawtooth` | `base=50`, `peak=400`, `period=10m`, `duration=1h` | rises linearly from `base` to `peak` over each `period`, then drops |
//! | `diurnal` | `base=20`, `peak=200`, `peak_at=14h`, `period=24h`, `duration=24h` | a cosine day: `peak` at `peak_at`, `base` half a period away |
//!
//! Every shape also takes `noise=F` (default 0): each second's rate is
//! multiplied by `1 + F × N(0, 1)` (never below 0), drawn from the
//! simulation's seed, so the same seed gives the same trace. Times are
//! seconds (`300`) or durations (`5m`, `1h30m`); rates are requests per
//! second.

use super::rng::Rng;
use super::trace::Trace;
use std::time::Duration;

/// The longest trace a shape makes (and, in practice, a simulation runs).
pub const MAX_SHAPE_DURATION: Duration = Duration::from_secs(31 * 86_400);

/// Builds the trace `spec` describes (`step:base=50,peak=400,at=300`).
pub fn parse_shape(spec: &str, seed: u64) -> Result<Trace, String> {
    let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
    let name = name.trim();
    let keys: &[&str] = match name {
        "constant" => &["rate", "duration", "noise"],
        "step" => &["base", "peak", "at", "hold", "duration", "noise"],
        "spike" => &["base", "peak", "at", "hold", "ramp", "duration", "noise"],
        "sawtooth" => &["base", "peak", "period", "duration", "noise"],
        "diurnal" => &["base", "peak", "peak_at", "period", "duration", "noise"],
        _ => {
            return Err(format!(
                "unknown shape {name:?}: use constant, step, spike, sawtooth or diurnal, e.g. `step:base=50,peak=400,at=5m`"
            ))
        }
    };
    let mut p = Params { shape: name, values: Vec::new() };
    for pair in params.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("shape {name}: {pair:?} is not `key=value` (e.g. `{name}:peak=400`)"));
        };
        let key = key.trim();
        if !keys.contains(&key) {
            return Err(format!("shape {name}: unknown parameter {key:?}; {name} takes {}", keys.join(", ")));
        }
        p.values.push((key.to_string(), value.trim().to_string()));
    }

    let default_duration = if name == "diurnal" { 86_400.0 } else { 3_600.0 };
    let duration = p.time("duration", default_duration)?;
    if duration < 1.0 || duration > MAX_SHAPE_DURATION.as_secs_f64() {
        return Err(format!("shape {name}: duration must be from 1 s to 31 days"));
    }
    let n = duration as usize;
    let noise = p.number("noise", 0.0)?;
    let rate: Box<dyn Fn(f64) -> f64> = match name {
        "constant" => {
            let rate = p.number("rate", 100.0)?;
            Box::new(move |_| rate)
        }
        "step" => {
            let (base, peak, at) = (p.number("base", 50.0)?, p.number("peak", 400.0)?, p.time("at", 300.0)?);
            let hold = p.time("hold", f64::INFINITY)?;
            Box::new(move |t| if t >= at && t < at + hold { peak } else { base })
        }
        "spike" => {
            let (base, peak, at) = (p.number("base", 50.0)?, p.number("peak", 500.0)?, p.time("at", 600.0)?);
            let (hold, ramp) = (p.time("hold", 60.0)?, p.time("ramp", 0.0)?);
            Box::new(move |t| {
                if t >= at && t < at + hold {
                    peak
                } else if ramp > 0.0 && t >= at - ramp && t < at {
                    base + (peak - base) * (t - (at - ramp)) / ramp
                } else if ramp > 0.0 && t >= at + hold && t < at + hold + ramp {
                    peak - (peak - base) * (t - (at + hold)) / ramp
                } else {
                    base
                }
            })
        }
        "sawtooth" => {
            let (base, peak, period) = (p.number("base", 50.0)?, p.number("peak", 400.0)?, p.time("period", 600.0)?);
            if period < 1.0 {
                return Err(format!("shape {name}: period must be at least 1 s"));
            }
            Box::new(move |t| base + (peak - base) * (t % period) / period)
        }
        _ => {
            let (base, peak) = (p.number("base", 20.0)?, p.number("peak", 200.0)?);
            let (peak_at, period) = (p.time("peak_at", 14.0 * 3600.0)?, p.time("period", 86_400.0)?);
            if period < 1.0 {
                return Err(format!("shape {name}: period must be at least 1 s"));
            }
            Box::new(move |t| {
                base + (peak - base) * (1.0 + (std::f64::consts::TAU * (t - peak_at) / period).cos()) / 2.0
            })
        }
    };
    let mut rng = Rng::new(seed ^ 0x5348_4150_4553); // "SHAPES": not the failure stream
    let rates = (0..n)
        .map(|s| {
            let r = rate(s as f64).max(0.0);
            let r = if noise > 0.0 { (r * (1.0 + noise * rng.normal())).max(0.0) } else { r };
            // Three decimals: what the CSV shows is what was simulated.
            (r * 1000.0).round() / 1000.0
        })
        .collect();
    Ok(Trace::new(rates, format!("shape {spec}")))
}

struct Params<'a> {
    shape: &'a str,
    values: Vec<(String, String)>,
}

impl Params<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        self.values.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn number(&self, key: &str, default: f64) -> Result<f64, String> {
        let Some(v) = self.raw(key) else { return Ok(default) };
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(format!("shape {}: {key}={v:?} is not a number ≥ 0", self.shape)),
        }
    }

    /// Seconds: a bare number or a duration (`5m`).
    fn time(&self, key: &str, default: f64) -> Result<f64, String> {
        let Some(v) = self.raw(key) else { return Ok(default) };
        if let Ok(x) = v.parse::<f64>() {
            if x.is_finite() && x >= 0.0 {
                return Ok(x.floor());
            }
        }
        humantime::parse_duration(v).map(|d| d.as_secs() as f64).map_err(|_| {
            format!("shape {}: {key}={v:?} is not a time (seconds, or a duration such as 5m or 1h30m)", self.shape)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_their_parameters() {
        let t = parse_shape("step:base=10,peak=100,at=5,duration=10", 0).unwrap();
        assert_eq!(t.rates, vec![10.0, 10.0, 10.0, 10.0, 10.0, 100.0, 100.0, 100.0, 100.0, 100.0]);
        let t = parse_shape("step:base=10,peak=100,at=2,hold=3,duration=6", 0).unwrap();
        assert_eq!(t.rates, vec![10.0, 10.0, 100.0, 100.0, 100.0, 10.0]);
        let t = parse_shape("spike:base=0,peak=10,at=3,hold=2,ramp=2,duration=9", 0).unwrap();
        assert_eq!(t.rates, vec![0.0, 0.0, 5.0, 10.0, 10.0, 10.0, 5.0, 0.0, 0.0]);
        let t = parse_shape("sawtooth:base=0,peak=4,period=4,duration=6", 0).unwrap();
        assert_eq!(t.rates, vec![0.0, 1.0, 2.0, 3.0, 0.0, 1.0]);
        let t = parse_shape("diurnal", 0).unwrap();
        assert_eq!(t.len(), 86_400);
        assert_eq!(t.rates[14 * 3600], 200.0);
        assert_eq!(t.rates[2 * 3600], 20.0);
        let t = parse_shape("constant:rate=7,duration=2m", 0).unwrap();
        assert_eq!((t.len(), t.rates[0]), (120, 7.0));
    }

    #[test]
    fn noise_is_seeded() {
        let a = parse_shape("constant:rate=100,noise=0.2,duration=60", 1).unwrap();
        let b = parse_shape("constant:rate=100,noise=0.2,duration=60", 1).unwrap();
        let c = parse_shape("constant:rate=100,noise=0.2,duration=60", 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.rates, c.rates);
        assert!(a.rates.iter().any(|&r| r != 100.0));
    }

    #[test]
    fn bad_shapes_say_what_is_wrong() {
        assert!(parse_shape("square", 0).unwrap_err().starts_with("unknown shape \"square\""));
        assert_eq!(
            parse_shape("step:height=3", 0).unwrap_err(),
            "shape step: unknown parameter \"height\"; step takes base, peak, at, hold, duration, noise"
        );
        assert!(parse_shape("step:peak=lots", 0).unwrap_err().contains("peak=\"lots\" is not a number"));
        assert!(parse_shape("step:at=soon", 0).unwrap_err().contains("at=\"soon\" is not a time"));
        assert!(parse_shape("step:peak", 0).unwrap_err().contains("is not `key=value`"));
        assert!(parse_shape("step:duration=0", 0).unwrap_err().contains("duration must be"));
    }
}

//! Health: a pure consecutive-counter state machine (ALB semantics) and the
//! status-code matcher (`"200,300-310"`).
//!
//! A replica starts *unknown* (not routable). `healthy_threshold` consecutive
//! passing probes make it healthy; `unhealthy_threshold` consecutive failures
//! make it unhealthy. Each observation says whether the state flipped, so the
//! caller can emit exactly one event per transition.

use std::fmt;

/// Health as the balancer sees it. Only `Healthy` replicas are routable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No verdict yet (just started); not routable.
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Consecutive-counter health tracker for one replica.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    state: Health,
    consecutive_passes: u32,
    consecutive_failures: u32,
}

/// A change of health state caused by one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTransition {
    pub from: Health,
    pub to: Health,
    /// How many consecutive probes agreed to cause the flip.
    pub consecutive: u32,
}

impl HealthTracker {
    pub fn new(healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self {
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
            state: Health::Unknown,
            consecutive_passes: 0,
            consecutive_failures: 0,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// New thresholds (`ebb apply`): the state and the counts so far stay;
    /// the next observation is judged by the new numbers.
    pub fn set_thresholds(&mut self, healthy_threshold: u32, unhealthy_threshold: u32) {
        self.healthy_threshold = healthy_threshold.max(1);
        self.unhealthy_threshold = unhealthy_threshold.max(1);
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Records one probe result; returns the transition when the state flips.
    pub fn observe(&mut self, passed: bool) -> Option<HealthTransition> {
        let from = self.state;
        if passed {
            self.consecutive_failures = 0;
            self.consecutive_passes = self.consecutive_passes.saturating_add(1);
            if self.state != Health::Healthy && self.consecutive_passes >= self.healthy_threshold {
                self.state = Health::Healthy;
                return Some(HealthTransition { from, to: Health::Healthy, consecutive: self.consecutive_passes });
            }
        } else {
            self.consecutive_passes = 0;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            // An unknown replica that fails is only "unhealthy" once the threshold
            // is reached, the same as a healthy one: a single slow probe never ejects.
            if self.state != Health::Unhealthy && self.consecutive_failures >= self.unhealthy_threshold {
                self.state = Health::Unhealthy;
                return Some(HealthTransition { from, to: Health::Unhealthy, consecutive: self.consecutive_failures });
            }
        }
        None
    }
}

/// ALB-style matcher: a comma-separated list of codes and inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatcher {
    ranges: Vec<(u16, u16)>,
    source: String,
}

/// Why a matcher string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MatcherError(pub String);

impl StatusMatcher {
    pub fn parse(spec: &str) -> Result<Self, MatcherError> {
        let mut ranges = Vec::new();
        for part in spec.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(MatcherError(format!(
                    "empty entry in matcher {spec:?}; expected codes or ranges like \"200,300-310\""
                )));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (parse_code(lo.trim(), spec)?, parse_code(hi.trim(), spec)?),
                None => {
                    let c = parse_code(part, spec)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(MatcherError(format!(
                    "range {part:?} in matcher {spec:?} is backwards; write it low-high, e.g. \"300-310\""
                )));
            }
            ranges.push((lo, hi));
        }
        Ok(Self { ranges, source: spec.to_string() })
    }

    pub fn matches(&self, status: u16) -> bool {
        self.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl Default for StatusMatcher {
    fn default() -> Self {
        Self::parse("200").expect("static matcher")
    }
}

fn parse_code(s: &str, spec: &str) -> Result<u16, MatcherError> {
    match s.parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) => Ok(c),
        _ => Err(MatcherError(format!(
            "{s:?} in matcher {spec:?} is not an HTTP status code (100-599); expected e.g. \"200,300-310\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s1_thresholds_need_three_passes_and_two_failures() {
        // Story S1: healthy 3, unhealthy 2.
        let mut t = HealthTracker::new(3, 2);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.state(), Health::Unknown, "two passes are not enough");
        let flip = t.observe(true).expect("third pass flips");
        assert_eq!(flip, HealthTransition { from: Health::Unknown, to: Health::Healthy, consecutive: 3 });
        assert_eq!(t.observe(false), None, "one slow probe never ejects");
        assert_eq!(t.state(), Health::Healthy);
        assert_eq!(t.observe(true), None, "a pass resets the failure count");
        assert_eq!(t.observe(false), None);
        let flip = t.observe(false).expect("second consecutive failure flips");
        assert_eq!(flip.to, Health::Unhealthy);
        assert_eq!(t.observe(false), None, "no repeated transition");
        t.observe(true);
        t.observe(true);
        assert_eq!(t.observe(true).map(|f| f.to), Some(Health::Healthy));
    }

    #[test]
    fn matcher_accepts_codes_and_ranges() {
        let m = StatusMatcher::parse("200,300-310").unwrap();
        for (code, want) in
            [(200, true), (201, false), (299, false), (300, true), (305, true), (310, true), (311, false), (500, false)]
        {
            assert_eq!(m.matches(code), want, "code {code}");
        }
    }

    #[test]
    fn matcher_rejects_nonsense_with_a_fix() {
        for (spec, needle) in [
            ("", "empty entry"),
            ("200,", "empty entry"),
            ("abc", "not an HTTP status code"),
            ("310-300", "backwards"),
            ("99", "not an HTTP status code"),
            ("200-700", "not an HTTP status code"),
        ] {
            let err = StatusMatcher::parse(spec).unwrap_err();
            assert!(err.0.contains(needle), "{spec:?} gave {err}");
        }
    }
}

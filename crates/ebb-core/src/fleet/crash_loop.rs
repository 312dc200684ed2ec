//! Crash-loop backoff: replicas that keep failing before they reach service
//! are not restarted in a tight loop.

use crate::scaling::Time;
use std::fmt;
use std::time::Duration;

/// The hold after the second failure in a row; it doubles with each one after.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The longest hold.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Failures in a row before any replica reached service, and the hold on
/// starts they set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashLoop {
    streak: u32,
    hold_until: Option<Time>,
}

/// A hold on starts, as [`CrashLoop::failed_before_service`] sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Replicas that failed in a row before reaching service.
    pub streak: u32,
    pub delay: Duration,
    pub until: Time,
}

impl fmt::Display for Backoff {
    /// `3 replicas in a row failed before reaching service; next start in 1s`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} replicas in a row failed before reaching service; next start in {}",
            self.streak,
            humantime::format_duration(self.delay)
        )
    }
}

impl CrashLoop {
    /// A replica failed (would not start, crashed, failed its checks)
    /// without ever reaching service. From the second in a row on, starts
    /// are held: the returned backoff says for how long.
    pub fn failed_before_service(&mut self, now: Time) -> Option<Backoff> {
        self.streak += 1;
        if self.streak < 2 {
            return None;
        }
        let factor = 1u32 << (self.streak - 2).min(10);
        let delay = (BACKOFF_FIRST * factor).min(BACKOFF_MAX);
        let until = now + delay;
        self.hold_until = Some(until);
        Some(Backoff { streak: self.streak, delay, until })
    }

    /// A replica reached service: the loop is broken.
    pub fn reached_service(&mut self) {
        self.streak = 0;
        self.hold_until = None;
    }

    /// Until when starts are held, if they are at `now`.
    pub fn holds_until(&self, now: Time) -> Option<Time> {
        self.hold_until.filter(|until| now < *until)
    }

    /// Failures in a row so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// For status: `crash-loop backoff: 3 replicas failed in a row, next
    /// start in 2 s`, while starts are held.
    pub fn describe(&self, now: Time) -> Option<String> {
        let until = self.holds_until(now)?;
        Some(format!(
            "crash-loop backoff: {} replicas failed in a row, next start in {:.0} s",
            self.streak,
            (until - now).as_secs_f64().ceil()
        ))
    }
}

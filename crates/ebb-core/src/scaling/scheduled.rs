//! Scheduled actions: at cron times (UTC or a time zone), set min, max and/or desired
//! capacity (AWS scheduled actions), e.g. business hours.
//!
//! **min and max are levels; desired is an event.** The bounds in force at
//! any moment are the service's `replicas` bounds with every action's most
//! recent firing applied in time order, so after a restart at 10:00 on a
//! Monday the `0 8 * * MON-FRI` action's `min = 4` is already in force:
//! nothing depends on ebb having been running at 08:00. `desired` is
//! applied only when ebb sees the firing time pass while it runs (a
//! restart must not undo what the policies did since).
//!
//! When an action leaves min above max (one action raised min, a later one
//! lowered max), the values the newer action set win and the other bound
//! follows them.

use super::cron::{CivilTime, Cron};
use super::Bounds;

/// One `[[service.NAME.scaling.scheduled]]` action.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledAction {
    /// Names the action in events (`scheduled-1` unless set).
    pub name: String,
    pub cron: Cron,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub desired: Option<u32>,
}

impl ScheduledAction {
    /// `business-hours (0 8 * * MON-FRI UTC): min 4`.
    fn describe(&self) -> String {
        let mut set = Vec::new();
        for (key, v) in [("min", self.min), ("max", self.max), ("desired", self.desired)] {
            if let Some(v) = v {
                set.push(format!("{key} {v}"));
            }
        }
        format!("{} (`{}` {}): {}", self.name, self.cron, self.cron.zone_name(), set.join(", "))
    }
}

/// A scheduled action firing.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Firing {
    pub action: usize,
    /// Unix seconds of the firing minute.
    pub at: i64,
}

/// The bounds in force and who set them.
#[derive(Debug, Clone)]
pub(super) struct Schedule {
    /// The service's `replicas` bounds with every firing so far applied.
    pub bounds: Bounds,
    /// The action that last changed the bounds, and when, for reasons.
    pub set_by: Option<(String, String)>,
    /// The wall time of the previous call; `None` before the first.
    last_wall: Option<i64>,
}

impl Schedule {
    pub fn new(base: Bounds) -> Self {
        Self { bounds: base, set_by: None, last_wall: None }
    }

    /// Brings the bounds up to `wall` (Unix seconds) and returns the action
    /// whose `desired` fired since the previous call, if any (the latest
    /// such firing). The first call only sets the level.
    pub fn advance(&mut self, actions: &[ScheduledAction], wall: i64) -> Option<Firing> {
        let Some(last) = self.last_wall.replace(wall) else {
            // Level: every action's latest firing, in time order.
            let mut firings: Vec<Firing> = actions
                .iter()
                .enumerate()
                .filter_map(|(action, a)| a.cron.latest_at_or_before(wall).map(|at| Firing { action, at }))
                .collect();
            firings.sort_by_key(|f| (f.at, f.action));
            for f in &firings {
                self.apply(&actions[f.action], f.at);
            }
            return None;
        };
        if wall <= last {
            // The wall clock stood still or stepped back: keep the furthest
            // time seen, so nothing fires twice.
            self.last_wall = Some(last);
            return None;
        }
        let mut firings: Vec<Firing> = actions
            .iter()
            .enumerate()
            .filter_map(|(action, a)| {
                // Fired in (last, wall]; of several firings (a long gap) only
                // the latest matters, as for the level above.
                let at = a.cron.latest_at_or_before(wall)?;
                (at > last).then_some(Firing { action, at })
            })
            .collect();
        firings.sort_by_key(|f| (f.at, f.action));
        let mut fired_desired = None;
        for f in firings {
            self.apply(&actions[f.action], f.at);
            if actions[f.action].desired.is_some() {
                fired_desired = Some(f);
            }
        }
        fired_desired
    }

    fn apply(&mut self, action: &ScheduledAction, at: i64) {
        let before = self.bounds;
        let (mut min, mut max) = (action.min.unwrap_or(self.bounds.min), action.max.unwrap_or(self.bounds.max));
        if min > max {
            if action.max.is_some() && action.min.is_none() {
                min = max;
            } else {
                max = min;
            }
        }
        self.bounds = Bounds { min, max };
        if self.bounds != before || action.min.is_some() || action.max.is_some() {
            self.set_by = Some((action.name.clone(), format!("{} at {}", action.describe(), CivilTime::from_unix(at))));
        }
    }
}

/// The next firing of any action after `wall`: (action index, Unix seconds).
pub(super) fn next_firing(actions: &[ScheduledAction], wall: i64) -> Option<(usize, i64)> {
    actions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.cron.next_after(wall).map(|at| (i, at)))
        .min_by_key(|&(i, at)| (at, i))
}

pub(super) fn describe(action: &ScheduledAction, at: i64) -> String {
    format!("scheduled action {} fired at {}", action.describe(), CivilTime::from_unix(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-02 00:00 UTC, a Monday.
    const MONDAY: i64 = 1_793_577_600;

    fn action(name: &str, cron: &str, min: Option<u32>, max: Option<u32>, desired: Option<u32>) -> ScheduledAction {
        ScheduledAction { name: name.into(), cron: Cron::parse(cron).unwrap(), min, max, desired }
    }

    fn business_hours() -> Vec<ScheduledAction> {
        vec![
            action("open", "0 8 * * MON-FRI", Some(4), None, Some(4)),
            action("close", "0 18 * * MON-FRI", Some(1), None, None),
        ]
    }

    #[test]
    fn bounds_are_a_level_after_a_restart() {
        let actions = business_hours();
        let base = Bounds { min: 1, max: 10 };
        let mut s = Schedule::new(base);
        assert_eq!(s.advance(&actions, MONDAY + 10 * 3600), None, "desired does not fire retroactively");
        assert_eq!(s.bounds, Bounds { min: 4, max: 10 });
        assert!(s.set_by.as_ref().unwrap().1.contains("2026-11-02 08:00 UTC"), "{:?}", s.set_by);

        let mut s = Schedule::new(base);
        s.advance(&actions, MONDAY + 20 * 3600);
        assert_eq!(s.bounds, Bounds { min: 1, max: 10 }, "after closing");
    }

    #[test]
    fn desired_fires_when_the_time_passes() {
        let actions = business_hours();
        let mut s = Schedule::new(Bounds { min: 1, max: 10 });
        s.advance(&actions, MONDAY + 7 * 3600 + 59 * 60 + 59);
        assert_eq!(s.bounds.min, 1);
        let fired = s.advance(&actions, MONDAY + 8 * 3600).unwrap();
        assert_eq!((fired.action, fired.at), (0, MONDAY + 8 * 3600));
        assert_eq!(s.bounds.min, 4);
        assert_eq!(s.advance(&actions, MONDAY + 8 * 3600 + 1), None, "fires once");
        assert_eq!(s.advance(&actions, MONDAY + 18 * 3600 + 30), None, "close sets no desired");
        assert_eq!(s.bounds.min, 1);
    }

    #[test]
    fn a_long_gap_applies_firings_in_time_order() {
        let actions = business_hours();
        let mut s = Schedule::new(Bounds { min: 1, max: 10 });
        s.advance(&actions, MONDAY);
        // Suspended from Monday 00:00 to Monday 19:00: open then close.
        let fired = s.advance(&actions, MONDAY + 19 * 3600).unwrap();
        assert_eq!(fired.action, 0, "the desired of `open` still fires");
        assert_eq!(s.bounds.min, 1, "close came last");
    }

    #[test]
    fn conflicting_bounds_follow_the_newer_action() {
        let actions = vec![
            action("raise-min", "0 8 * * *", Some(6), Some(8), None),
            action("lower-max", "0 9 * * *", None, Some(3), None),
        ];
        let mut s = Schedule::new(Bounds { min: 1, max: 10 });
        s.advance(&actions, MONDAY + 10 * 3600);
        assert_eq!(s.bounds, Bounds { min: 3, max: 3 });
    }

    #[test]
    fn the_clock_going_back_fires_nothing() {
        let actions = business_hours();
        let mut s = Schedule::new(Bounds { min: 1, max: 10 });
        s.advance(&actions, MONDAY + 9 * 3600);
        assert_eq!(s.advance(&actions, MONDAY + 7 * 3600), None);
        assert_eq!(s.advance(&actions, MONDAY + 8 * 3600), None, "08:00 was already seen");
        assert_eq!(s.bounds.min, 4);
    }

    #[test]
    fn next_firing_is_the_earliest() {
        let actions = business_hours();
        assert_eq!(next_firing(&actions, MONDAY + 9 * 3600), Some((1, MONDAY + 18 * 3600)));
        assert_eq!(next_firing(&actions, MONDAY + 4 * 86_400 + 19 * 3600), Some((0, MONDAY + 7 * 86_400 + 8 * 3600)));
    }
}

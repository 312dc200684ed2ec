//! Which replicas leave on scale-in.
//!
//! The order protects work in progress and prefers what would go anyway:
//!
//! 1. never a **protected** replica (busy with work that must not be cut:
//!    story S4's batch job);
//! 2. replicas **not yet in service** first: they serve nobody yet;
//! 3. then replicas of an **old version** (a deploy would replace them);
//! 4. then the **fewest requests in flight** (the shortest drain);
//! 5. then the **youngest** (the oldest have warm caches and proven
//!    health; AWS's default also ends with the newest instance as the
//!    tie-breaker after launch template age);
//! 6. then the id, so the choice is the same every time.
//!
//! Picking is all this does: the caller takes a picked replica out of the
//! rotation and drains it before stopping it.

use std::time::Duration;

/// A replica that could leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleInCandidate {
    pub id: String,
    /// Protected from scale-in (`ebb protect`, a busy worker).
    pub protected: bool,
    /// Runs the service's current spec/version.
    pub current_version: bool,
    /// In the rotation now (as opposed to still starting).
    pub in_service: bool,
    pub in_flight: u64,
    /// Time since it was started.
    pub age: Duration,
}

/// Up to `count` replicas to remove, in the order they should go. Fewer
/// when not enough are unprotected.
pub fn pick_for_scale_in(candidates: &[ScaleInCandidate], count: usize) -> Vec<&ScaleInCandidate> {
    let mut eligible: Vec<&ScaleInCandidate> = candidates.iter().filter(|c| !c.protected).collect();
    eligible.sort_by(|a, b| {
        (a.in_service, a.current_version, a.in_flight, a.age, &a.id).cmp(&(
            b.in_service,
            b.current_version,
            b.in_flight,
            b.age,
            &b.id,
        ))
    });
    eligible.truncate(count);
    eligible
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, protected: bool, current: bool, in_service: bool, in_flight: u64, age_s: u64) -> ScaleInCandidate {
        ScaleInCandidate {
            id: id.into(),
            protected,
            current_version: current,
            in_service,
            in_flight,
            age: Duration::from_secs(age_s),
        }
    }

    fn ids(picked: Vec<&ScaleInCandidate>) -> Vec<&str> {
        picked.into_iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn the_order_of_preference() {
        let fleet = [
            c("busy-protected", true, false, false, 0, 1), // would be first, but protected
            c("old-idle", false, false, true, 0, 900),
            c("current-busy", false, true, true, 9, 60),
            c("current-idle-old", false, true, true, 0, 900),
            c("current-idle-young", false, true, true, 0, 60),
            c("starting", false, true, false, 0, 5),
            c("old-busy", false, false, true, 3, 900),
        ];
        assert_eq!(
            ids(pick_for_scale_in(&fleet, 10)),
            ["starting", "old-idle", "old-busy", "current-idle-young", "current-idle-old", "current-busy"]
        );
        assert_eq!(ids(pick_for_scale_in(&fleet, 2)), ["starting", "old-idle"]);
        assert!(pick_for_scale_in(&fleet, 0).is_empty());
    }

    #[test]
    fn protected_replicas_are_never_picked() {
        let fleet = [c("a", true, true, true, 0, 1), c("b", true, false, false, 0, 1)];
        assert!(pick_for_scale_in(&fleet, 2).is_empty());
    }

    #[test]
    fn ties_break_on_the_id() {
        let fleet = [c("web-2", false, true, true, 0, 10), c("web-1", false, true, true, 0, 10)];
        assert_eq!(ids(pick_for_scale_in(&fleet, 1)), ["web-1"]);
    }
}

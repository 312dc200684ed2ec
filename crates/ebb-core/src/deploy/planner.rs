//! [`Deploy`]: one running deploy and its `step` function.
//!
//! Each step reads the fleet, sorts it into the *target* version (the new
//! one; the previous one while rolling back) and the *others*, and
//! converges: retire others, launch the target, within the strategy's
//! limits. Then it checks the gates: has the new version taken over, is the
//! bake time over, are protected replicas still holding the end. The rules
//! are in the module doc (`deploy/mod.rs`).

use super::{human, n_replicas, span, DeployAction, DeployConfig, DeployOutcome, Phase, Progress, ReplicaPhase};
use super::{ReplicaView, RollbackRefused, Strategy};
use crate::scaling::Time;
use std::collections::BTreeSet;
use std::time::Duration;

/// One running deploy: `from_version -> to_version`.
#[derive(Debug, Clone)]
pub struct Deploy {
    /// As given, except that `max_surge` 0 with `max_unavailable` 0 (no
    /// way forward; the config file refuses it) is taken as `max_surge` 1.
    config: DeployConfig,
    bake: Duration,
    from: u64,
    to: u64,
    started_at: Time,
    phase: Phase,
    /// Desired capacity at the last step (for progress).
    desired: u32,
    /// The routing filter in force (blue-green): only this version is routable.
    route: Option<u64>,
    /// The filter last announced with a `Route` action.
    announced: Option<Option<u64>>,
    /// When the new version took over: rolling, `desired` new replicas in
    /// service and every unprotected old one retired; blue-green, the
    /// traffic switch. The bake time counts from here.
    took_over: Option<Time>,
    rollback: Option<Rollback>,
    outcome: Option<DeployOutcome>,
    /// Every replica id seen, so a new one can be matched to a launch.
    seen: BTreeSet<String>,
    /// Launches asked for and not yet seen in a view: (version, when).
    pending: Vec<(u64, Time)>,
    /// Replicas asked to retire: gone, whatever the view says.
    retired: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Rollback {
    since: Time,
    reason: String,
    /// When no unprotected new-version replica was left.
    cleared: Option<Time>,
}

/// How [`Deploy::converge`] may change the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Rolling: retire within `max_unavailable`, launch within `max_surge`.
    Gradual,
    /// Blue-green before the bake time is over: launch only.
    LaunchOnly,
    /// Blue-green after the traffic moved: retire every other replica at
    /// once (they get no traffic), launch what is missing.
    AtOnce,
}

/// The fleet sorted for one step: the target version against the others.
/// Failed, leaving and retired replicas are not in it.
struct Census<'a> {
    version: u64,
    in_service: Vec<&'a ReplicaView>,
    starting: Vec<&'a ReplicaView>,
    /// Launches of the target version not yet seen.
    pending: u32,
    others_in_service: Vec<&'a ReplicaView>,
    others_starting: Vec<&'a ReplicaView>,
}

impl Census<'_> {
    fn in_service(&self) -> u32 {
        self.in_service.len() as u32
    }

    /// Target replicas in service, starting, or asked for.
    fn live(&self) -> u32 {
        self.in_service() + self.starting.len() as u32 + self.pending
    }

    fn others(&self) -> impl Iterator<Item = &&ReplicaView> {
        self.others_in_service.iter().chain(&self.others_starting)
    }

    fn protected_others(&self) -> Vec<&ReplicaView> {
        let mut p: Vec<&ReplicaView> = self.others().filter(|r| r.protected).copied().collect();
        p.sort_by(|a, b| a.id.cmp(&b.id));
        p
    }

    fn others_in_service_count(&self) -> u32 {
        self.others_in_service.len() as u32
    }
}

/// `web-3 (v1), web-4 (v1)`.
fn list(rs: &[&ReplicaView]) -> String {
    rs.iter().map(|r| format!("{} (v{})", r.id, r.version)).collect::<Vec<_>>().join(", ")
}

type Wait = Option<(String, Option<Time>)>;

impl Deploy {
    /// A deploy from `from_version` to `to_version` (a newer version
    /// number), starting `now`. Nothing happens until the first [`step`].
    ///
    /// [`step`]: Deploy::step
    pub fn start(config: &DeployConfig, from_version: u64, to_version: u64, now: Time) -> Deploy {
        let mut config = config.clone();
        if config.max_surge == 0 && config.max_unavailable == 0 {
            config.max_surge = 1;
        }
        let (phase, route) = match config.strategy {
            Strategy::Rolling => (Phase::Rolling, None),
            Strategy::BlueGreen => (Phase::Starting, Some(from_version)),
        };
        Deploy {
            bake: config.effective_bake_time(),
            config,
            from: from_version,
            to: to_version,
            started_at: now,
            phase,
            desired: 0,
            route,
            announced: None,
            took_over: None,
            rollback: None,
            outcome: None,
            seen: BTreeSet::new(),
            pending: Vec::new(),
            retired: BTreeSet::new(),
        }
    }

    /// What to do now, given desired capacity and every replica of the
    /// service. Idempotent: asked again with the same view (or one that shows
    /// the actions applied), it does not launch or retire twice. Returns
    /// nothing once the deploy has finished.
    pub fn step(&mut self, now: Time, desired: u32, replicas: &[ReplicaView]) -> Vec<DeployAction> {
        if self.outcome.is_some() {
            return Vec::new();
        }
        self.desired = desired;
        self.note_arrivals(replicas);
        if self.rollback.is_none() && self.watching(now) {
            if let Some(reason) = self.health_gate(now, replicas) {
                self.begin_rollback(now, reason);
            }
        }
        let mut out = Vec::new();
        let wait = match (self.rollback.is_some(), self.config.strategy) {
            (true, _) => self.roll_back(now, desired, replicas, &mut out),
            (false, Strategy::Rolling) => self.rolling(now, desired, replicas, &mut out),
            (false, Strategy::BlueGreen) => self.blue_green(now, desired, replicas, &mut out),
        };
        if out.is_empty() {
            if let Some((reason, until)) = wait {
                out.push(DeployAction::Wait { reason, until });
            }
        }
        out
    }

    /// `ebb rollback`: roll back at the next step (call [`step`] at once).
    /// Refused, changing nothing, when the deploy has finished, is already
    /// rolling back, or is blue-green past its bake time (the old set is
    /// gone: deploy the previous version again instead).
    ///
    /// [`step`]: Deploy::step
    pub fn rollback(&mut self, now: Time, reason: impl Into<String>) -> Result<(), RollbackRefused> {
        let refuse = |message: String| Err(RollbackRefused { message });
        if let Some(outcome) = &self.outcome {
            return refuse(format!("the deploy of v{} is over ({outcome}); there is nothing to roll back", self.to));
        }
        if let Some(rb) = &self.rollback {
            return refuse(format!("already rolling back v{} -> v{} ({})", self.to, self.from, rb.reason));
        }
        if self.config.strategy == Strategy::BlueGreen && self.bake_end().is_some_and(|end| now >= end) {
            return refuse(format!(
                "the bake time of v{} is over and the v{} set is being retired; deploy v{} again to go back",
                self.to, self.from, self.from
            ));
        }
        self.begin_rollback(now, reason.into());
        Ok(())
    }

    /// How far the deploy has got, counted in `replicas` (the same view as
    /// for [`step`](Deploy::step)).
    pub fn progress(&self, replicas: &[ReplicaView]) -> Progress {
        let mut p = Progress {
            strategy: self.config.strategy.as_str(),
            from_version: self.from,
            to_version: self.to,
            phase: self.phase.as_str(),
            desired: self.desired,
            new_in_service: 0,
            new_starting: 0,
            new_draining: 0,
            old_in_service: 0,
            old_starting: 0,
            old_draining: 0,
            protected: Vec::new(),
            rollback_reason: self.rollback.as_ref().map(|r| r.reason.clone()),
        };
        let target = self.target_version();
        for r in replicas {
            let new = r.version == self.to;
            let leaving = r.state == ReplicaPhase::Leaving || self.retired.contains(&r.id);
            let counter = match (new, leaving, r.state) {
                (true, true, _) => &mut p.new_draining,
                (false, true, _) => &mut p.old_draining,
                (_, _, ReplicaPhase::Failed) => continue,
                (true, _, ReplicaPhase::InService) => &mut p.new_in_service,
                (true, _, _) => &mut p.new_starting,
                (false, _, ReplicaPhase::InService) => &mut p.old_in_service,
                (false, _, _) => &mut p.old_starting,
            };
            *counter += 1;
            if r.protected && !leaving && r.version != target {
                p.protected.push(r.id.clone());
            }
        }
        p.protected.sort();
        p
    }

    /// Where the deploy is, as of the last step.
    pub fn phase(&self) -> Phase {
        self.phase.clone()
    }

    /// How it ended; `None` while it runs.
    pub fn outcome(&self) -> Option<&DeployOutcome> {
        self.outcome.as_ref()
    }

    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// The version the deploy converges on: the new one, or the previous
    /// one once it rolls back. After `Finish`, the version the service runs.
    pub fn target_version(&self) -> u64 {
        if self.rollback.is_some() {
            self.from
        } else {
            self.to
        }
    }

    pub fn from_version(&self) -> u64 {
        self.from
    }

    pub fn to_version(&self) -> u64 {
        self.to
    }

    pub fn strategy(&self) -> Strategy {
        self.config.strategy
    }

    pub fn started_at(&self) -> Time {
        self.started_at
    }

    /// The settings in force.
    pub fn config(&self) -> &DeployConfig {
        &self.config
    }

    /// The routing filter in force: `Some(v)` while only replicas of `v`
    /// may get traffic (blue-green), `None` when every in-service replica
    /// may (rolling, and after `Finish`). The same as the last `Route`.
    pub fn routes_only(&self) -> Option<u64> {
        if self.outcome.is_some() {
            None
        } else {
            self.route
        }
    }

    // -----------------------------------------------------------------
    // The stages.
    // -----------------------------------------------------------------

    fn rolling(&mut self, now: Time, desired: u32, replicas: &[ReplicaView], out: &mut Vec<DeployAction>) -> Wait {
        let who = format!("rolling v{} -> v{}", self.from, self.to);
        let c = self.census(self.to, replicas);
        let left = self.converge(now, desired, &c, Mode::Gradual, &who, out);
        if self.took_over.is_none() {
            if c.in_service() >= desired && left == 0 {
                self.took_over = Some(now);
            } else {
                self.phase = Phase::Rolling;
                return Some(self.waiting_for_new(&c, desired, &who, "old"));
            }
        }
        self.after_takeover(now, &c, left, &who, out)
    }

    fn blue_green(&mut self, now: Time, desired: u32, replicas: &[ReplicaView], out: &mut Vec<DeployAction>) -> Wait {
        let who = format!("blue-green v{} -> v{}", self.from, self.to);
        let (from, to) = (self.from, self.to);
        let c = self.census(to, replicas);
        if self.took_over.is_none() {
            if c.in_service() < desired {
                self.announce(
                    Some(from),
                    format!("{who}: traffic stays on v{from} while the new set of v{to} starts"),
                    out,
                );
                self.converge(now, desired, &c, Mode::LaunchOnly, &who, out);
                self.phase = Phase::Starting;
                return Some(self.waiting_for_new(&c, desired, &who, "traffic on"));
            }
            self.took_over = Some(now);
            self.route = Some(to);
            let kept = c.others_in_service_count();
            self.announce(
                Some(to),
                format!(
                    "{who}: {}/{desired} v{to} in service; all traffic moves from v{from} to v{to} at once; {} of v{from} kept out of the traffic for bake_time {}",
                    c.in_service(),
                    n_replicas(kept),
                    span(self.bake)
                ),
                out,
            );
        }
        let baking = self.bake_end().is_some_and(|end| now < end);
        let mode = if baking { Mode::LaunchOnly } else { Mode::AtOnce };
        let left = self.converge(now, desired, &c, mode, &who, out);
        self.after_takeover(now, &c, left, &who, out)
    }

    /// Both strategies once the new version has taken over: bake, wait for
    /// protected old replicas, finish.
    fn after_takeover(&mut self, now: Time, c: &Census<'_>, left: u32, who: &str, out: &mut Vec<DeployAction>) -> Wait {
        let bake_end = self.bake_end().expect("taken over");
        let old = if self.config.strategy == Strategy::BlueGreen {
            format!("; v{} kept out of the traffic for a rollback", self.from)
        } else {
            String::new()
        };
        if now < bake_end {
            self.phase = Phase::Baking { until: bake_end };
            let why = format!(
                "{who}: baking: v{} has taken over and is watched for failures for bake_time {}{old}",
                self.to,
                human(self.bake)
            );
            return Some((why, Some(bake_end)));
        }
        if left > 0 {
            // Rolling, after a scale change: old replicas still to retire.
            self.phase = Phase::Rolling;
            return Some(self.waiting_for_new(c, self.desired, who, "old"));
        }
        let protected = c.protected_others();
        let deadline = bake_end + self.config.protected_wait;
        if !protected.is_empty() && now < deadline {
            self.phase = Phase::WaitingForProtected { until: deadline };
            return Some((self.waiting_for_protected(who, &protected), Some(deadline)));
        }
        let mut reason = format!(
            "{who} succeeded: {}/{} v{} in service, every unprotected older replica retired",
            c.in_service(),
            self.desired,
            self.to
        );
        if !protected.is_empty() {
            reason += &format!(
                "; protected {} kept after protected_wait {}: retired when released",
                list(&protected),
                human(self.config.protected_wait)
            );
        }
        self.finish(DeployOutcome::Succeeded, reason, out);
        None
    }

    fn roll_back(&mut self, now: Time, desired: u32, replicas: &[ReplicaView], out: &mut Vec<DeployAction>) -> Wait {
        let rb = self.rollback.clone().expect("rolling back");
        let (from, to) = (self.from, self.to);
        let who = format!("rolling back v{to} -> v{from} ({})", rb.reason);
        let mode = match self.config.strategy {
            Strategy::Rolling => Mode::Gradual,
            Strategy::BlueGreen => {
                self.route = Some(from);
                self.announce(Some(from), format!("{who}: all traffic back to v{from} at once"), out);
                Mode::AtOnce
            }
        };
        let c = self.census(from, replicas);
        let left = self.converge(now, desired, &c, mode, &who, out);
        self.phase = Phase::RollingBack { reason: rb.reason.clone() };
        let deadline = rb.since + self.config.deploy_timeout;
        let protected = c.protected_others();
        if left == 0 {
            let cleared = *self.rollback.as_mut().expect("rolling back").cleared.get_or_insert(now);
            let protected_until = cleared + self.config.protected_wait;
            if protected.is_empty() || now >= protected_until.min(deadline) {
                let mut reason = format!(
                    "rolled back v{to} -> v{from} ({}): {}/{desired} v{from} in service, {} starting, every unprotected v{to} replica retired",
                    rb.reason,
                    c.in_service(),
                    c.starting.len() as u32 + c.pending,
                );
                if !protected.is_empty() {
                    reason += &format!("; protected {} kept: retired when released", list(&protected));
                }
                self.finish(DeployOutcome::RolledBack { reason: rb.reason }, reason, out);
                return None;
            }
            return Some((self.waiting_for_protected(&who, &protected), Some(protected_until.min(deadline))));
        }
        if now >= deadline {
            let reason = format!(
                "rollback of v{to} -> v{from} ({}) incomplete after deploy_timeout {}: {}/{desired} v{from} in service, {} v{to} left; ordinary reconciliation takes over",
                rb.reason,
                human(self.config.deploy_timeout),
                c.in_service(),
                n_replicas(left)
            );
            self.finish(DeployOutcome::RolledBack { reason: rb.reason }, reason, out);
            return None;
        }
        let why = format!(
            "{who}: waiting for v{from} to come into service before retiring more v{to} ({}/{desired} v{from} in service, {} starting; {} of v{to} left)",
            c.in_service(),
            c.starting.len() as u32 + c.pending,
            n_replicas(left)
        );
        Some((why, Some(deadline)))
    }

    // -----------------------------------------------------------------
    // Pieces.
    // -----------------------------------------------------------------

    /// Retires other versions and launches the target, as `mode` allows.
    /// Returns how many unprotected replicas of other versions are still
    /// live afterwards.
    fn converge(
        &mut self,
        now: Time,
        desired: u32,
        c: &Census<'_>,
        mode: Mode,
        who: &str,
        out: &mut Vec<DeployAction>,
    ) -> u32 {
        let v = c.version;
        let mut left = 0;
        if mode == Mode::LaunchOnly {
            left = c.others().filter(|r| !r.protected).count() as u32;
        } else {
            // Starting replicas of other versions serve nobody: retire at once.
            for r in c.others_starting.iter().filter(|r| !r.protected) {
                self.retire(
                    r,
                    format!("{who}: retiring {} (v{}, still starting: it serves nobody)", r.id, r.version),
                    out,
                );
            }
            let mut old: Vec<&ReplicaView> = c.others_in_service.iter().filter(|r| !r.protected).copied().collect();
            old.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
            let unavailable = self.config.max_unavailable;
            let floor = desired.saturating_sub(unavailable);
            let mut capacity = c.in_service() + c.others_in_service_count();
            for r in old {
                let reason = match mode {
                    Mode::Gradual if capacity <= floor => {
                        left += 1;
                        continue;
                    }
                    Mode::Gradual => {
                        capacity -= 1;
                        format!(
                            "{who}: {}/{desired} v{v} in service, retiring {} (v{}, oldest first), in-service capacity stays {capacity} >= {desired} - {unavailable} max_unavailable",
                            c.in_service(),
                            r.id,
                            r.version
                        )
                    }
                    _ => format!(
                        "{who}: {}/{desired} v{v} in service and serving all traffic; retiring {} (v{})",
                        c.in_service(),
                        r.id,
                        r.version
                    ),
                };
                self.retire(r, reason, out);
            }
        }

        let live = c.live();
        let need = desired.saturating_sub(live);
        let count = match mode {
            Mode::Gradual => {
                let surge = self.config.max_surge;
                let running = live + left;
                let count = need.min((desired + surge).saturating_sub(running));
                if count > 0 {
                    out.push(DeployAction::Launch {
                        version: v,
                        count,
                        reason: format!(
                            "{who}: {}/{desired} v{v} in service, {} starting; launching {}: {} running <= {desired} + {surge} max_surge",
                            c.in_service(),
                            live - c.in_service(),
                            n_replicas(count),
                            running + count
                        ),
                    });
                }
                count
            }
            Mode::LaunchOnly | Mode::AtOnce => {
                if need > 0 {
                    out.push(DeployAction::Launch {
                        version: v,
                        count: need,
                        reason: format!(
                            "{who}: {}/{desired} v{v} in service, {} starting; launching {} for the full set of {desired}",
                            c.in_service(),
                            live - c.in_service(),
                            n_replicas(need)
                        ),
                    });
                }
                need
            }
        };
        self.pending.extend(std::iter::repeat_n((v, now), count as usize));
        left
    }

    fn retire(&mut self, r: &ReplicaView, reason: String, out: &mut Vec<DeployAction>) {
        if self.retired.insert(r.id.clone()) {
            out.push(DeployAction::Retire { id: r.id.clone(), reason });
        }
    }

    fn announce(&mut self, only_version: Option<u64>, reason: String, out: &mut Vec<DeployAction>) {
        if self.announced != Some(only_version) {
            self.announced = Some(only_version);
            out.push(DeployAction::Route { only_version, reason });
        }
    }

    fn finish(&mut self, outcome: DeployOutcome, reason: String, out: &mut Vec<DeployAction>) {
        self.phase = match &outcome {
            DeployOutcome::Succeeded => Phase::Succeeded,
            DeployOutcome::RolledBack { reason } => Phase::RolledBack { reason: reason.clone() },
        };
        self.outcome = Some(outcome.clone());
        out.push(DeployAction::Finish { outcome, reason });
    }

    fn begin_rollback(&mut self, now: Time, reason: String) {
        self.phase = Phase::RollingBack { reason: reason.clone() };
        self.rollback = Some(Rollback { since: now, reason, cleared: None });
    }

    /// The end of the bake time, once the new version has taken over.
    fn bake_end(&self) -> Option<Time> {
        self.took_over.map(|t| t + self.bake)
    }

    /// Rolling forward, before the bake time is over: failures roll back.
    fn watching(&self, now: Time) -> bool {
        self.bake_end().is_none_or(|end| now < end)
    }

    /// Why the new version must be rolled back, if it must.
    fn health_gate(&self, now: Time, replicas: &[ReplicaView]) -> Option<String> {
        let timeout = self.config.deploy_timeout;
        let when = if self.took_over.is_some() { "within the bake time" } else { "during the deploy" };
        let new = || replicas.iter().filter(|r| r.version == self.to && !self.retired.contains(&r.id));
        if let Some(r) = new().find(|r| r.state == ReplicaPhase::Failed) {
            return Some(format!("{} (v{}) failed {when}", r.id, r.version));
        }
        if let Some(r) =
            new().find(|r| r.state == ReplicaPhase::Starting && now.saturating_sub(r.started_at) >= timeout)
        {
            return Some(format!(
                "{} (v{}) not in service {} after its start (deploy_timeout)",
                r.id,
                r.version,
                human(now.saturating_sub(r.started_at))
            ));
        }
        if let Some(&(_, at)) = self.pending.iter().find(|&&(v, at)| v == self.to && now.saturating_sub(at) >= timeout)
        {
            return Some(format!(
                "a v{} replica launched {} ago never appeared (deploy_timeout {})",
                self.to,
                human(now.saturating_sub(at)),
                human(timeout)
            ));
        }
        None
    }

    /// A new replica id matches the oldest pending launch of its version.
    fn note_arrivals(&mut self, replicas: &[ReplicaView]) {
        for r in replicas {
            if self.seen.insert(r.id.clone()) {
                if let Some(i) = self.pending.iter().position(|&(v, _)| v == r.version) {
                    self.pending.remove(i);
                }
            }
        }
    }

    fn census<'a>(&self, version: u64, replicas: &'a [ReplicaView]) -> Census<'a> {
        let mut c = Census {
            version,
            in_service: Vec::new(),
            starting: Vec::new(),
            pending: self.pending.iter().filter(|&&(v, _)| v == version).count() as u32,
            others_in_service: Vec::new(),
            others_starting: Vec::new(),
        };
        for r in replicas.iter().filter(|r| !self.retired.contains(&r.id)) {
            let list = match (r.version == version, r.state) {
                (true, ReplicaPhase::InService) => &mut c.in_service,
                (true, ReplicaPhase::Starting) => &mut c.starting,
                (false, ReplicaPhase::InService) => &mut c.others_in_service,
                (false, ReplicaPhase::Starting) => &mut c.others_starting,
                (_, ReplicaPhase::Failed | ReplicaPhase::Leaving) => continue,
            };
            list.push(r);
        }
        c
    }

    fn waiting_for_protected(&self, who: &str, protected: &[&ReplicaView]) -> String {
        let one = protected.len() == 1;
        format!(
            "{who}: waiting for protected {} {} to be released; finishing without {} after protected_wait {}",
            if one { "replica" } else { "replicas" },
            list(protected),
            if one { "it" } else { "them" },
            human(self.config.protected_wait)
        )
    }

    /// "Waiting for the new version to come into service", with the earliest
    /// deadline of the deploy timeout.
    fn waiting_for_new(&self, c: &Census<'_>, desired: u32, who: &str, others: &str) -> (String, Option<Time>) {
        let timeout = self.config.deploy_timeout;
        let starting = c.starting.len() as u32 + c.pending;
        let until = c
            .starting
            .iter()
            .map(|r| r.started_at + timeout)
            .chain(self.pending.iter().filter(|&&(v, _)| v == c.version).map(|&(_, at)| at + timeout))
            .min();
        let others = if others == "traffic on" {
            format!("traffic stays on v{}", self.from)
        } else {
            format!("{} old in service", c.others_in_service_count())
        };
        let why = format!(
            "{who}: waiting for v{} to come into service: {}/{desired} in service, {starting} starting; {others}",
            c.version,
            c.in_service()
        );
        (why, until)
    }
}

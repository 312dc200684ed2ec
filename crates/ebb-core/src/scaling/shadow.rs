//! Shadow policies: "what would this policy do right now", on live
//! traffic, without letting it act.
//!
//! A [`Shadow`] is a second [`Autoscaler`] (the same type, so the rules are
//! identical) built from the service's scaling config with its target
//! tracking and step policies replaced by the shadow ones
//! ([`ScalingConfig::shadow_config`]). It is fed the same samples and asked
//! every second like the active one, but keeps its own desired count,
//! starting at the live one: its changes are reported, never applied.
//! Its metric readings come from the real fleet; target tracking sizes on
//! their sum (`ceil(sum / target)`), which does not depend on how many
//! replicas the shadow thinks it runs.

use super::decision::{Change, Decision};
use super::metrics::ServiceSample;
use super::step::StepPolicy;
use super::target::TargetTracking;
use super::{Autoscaler, Bounds, FleetView, ScalingConfig, Time};

/// `[service.NAME.scaling.shadow]`: policies that are evaluated but never
/// applied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShadowPolicies {
    pub target_tracking: Vec<TargetTracking>,
    pub step: Vec<StepPolicy>,
}

impl ShadowPolicies {
    pub fn is_empty(&self) -> bool {
        self.target_tracking.is_empty() && self.step.is_empty()
    }
}

/// The shadow of one service's autoscaler.
#[derive(Debug, Clone)]
pub struct Shadow {
    autoscaler: Autoscaler,
    /// What the shadow would run; `None` until its first decision, which
    /// starts from the live desired count.
    desired: Option<u32>,
}

impl Shadow {
    /// `None` when the config has no shadow policies.
    pub fn new(config: &ScalingConfig, bounds: Bounds) -> Option<Shadow> {
        let config = config.shadow_config()?;
        Some(Shadow { autoscaler: Autoscaler::new(&config, bounds), desired: None })
    }

    /// `ebb apply`: new shadow policies (or none: `None`), keeping the
    /// history, clocks and desired count of a shadow that stays.
    pub fn reconfigure(this: Option<Shadow>, config: &ScalingConfig, bounds: Bounds) -> Option<Shadow> {
        let shadow_config = config.shadow_config()?;
        match this {
            Some(mut shadow) => {
                shadow.autoscaler.reconfigure(&shadow_config, bounds);
                Some(shadow)
            }
            None => Shadow::new(config, bounds),
        }
    }

    /// Adds the same sample the active autoscaler got.
    pub fn observe(&mut self, sample: ServiceSample) {
        self.autoscaler.observe(sample);
    }

    /// Decides as the active autoscaler would, from the shadow's own
    /// desired count (the live one at first); the fleet's in-service and
    /// pending counts are the real ones. A change moves only the shadow's
    /// count.
    pub fn decide(&mut self, now: Time, wall_unix_s: i64, fleet: &FleetView) -> Decision {
        let desired = *self.desired.get_or_insert(fleet.desired);
        let decision = self.autoscaler.decide(now, wall_unix_s, &FleetView { desired, ..*fleet });
        self.desired = Some(decision.to());
        decision
    }

    /// What the shadow would run now; `None` before its first decision.
    pub fn desired(&self) -> Option<u32> {
        self.desired
    }

    pub fn autoscaler(&self) -> &Autoscaler {
        &self.autoscaler
    }

    /// For the `shadow` event: `shadow target-rps would scale out 3 -> 5:
    /// <reason>` (with what capped it, if anything).
    pub fn describe(change: &Change) -> String {
        let verb = match change.direction() {
            Some(d) => format!("scale {d} {} -> {}", change.from, change.to),
            None => format!("stay at {}", change.to),
        };
        let mut text = format!("shadow {} would {verb}: {}", change.policy, change.reason);
        if let Some(cap) = &change.capped {
            text.push_str(&format!("; capped: {cap}"));
        }
        text
    }
}

//! `[service.NAME.idle]`: scale to zero's raw table and its checks. The
//! type it produces, `IdleConfig`, lives in `crate::fleet::idle` next to
//! the rules that use it.
//!
//! Also the rule that ties it to `replicas.min`: a web service may have
//! `min = 0` only with `[idle]` (otherwise nothing would ever wake it), and
//! a worker cannot have `[idle]` (it has no balancer to hold requests).

use super::Check;
use crate::config::value::{Dur, Int};
use crate::config::{DriverKind, ServiceKind};
use crate::fleet::idle::{IdleConfig, IdleMode};
use crate::scaling::metrics::duration as human;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::ops::Range;
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = r#"an idle table like [service.web.idle] with after = "5m""#)]
pub(super) struct RawIdle {
    after: Option<Spanned<Dur>>,
    mode: Option<Spanned<String>>,
    hold_timeout: Option<Spanned<Dur>>,
    max_held: Option<Spanned<Int>>,
    ignore_user_agents: Option<Vec<Spanned<String>>>,
}

/// A request held longer than this is better answered.
const MAX_HOLD: Duration = Duration::from_secs(600);
/// Held requests are memory; this bounds it.
const MAX_HELD: i64 = 100_000;

impl RawIdle {
    /// The first key written, to point at.
    fn first_span(&self) -> Option<Range<usize>> {
        [
            self.after.as_ref().map(|s| s.span()),
            self.mode.as_ref().map(|s| s.span()),
            self.hold_timeout.as_ref().map(|s| s.span()),
            self.max_held.as_ref().map(|s| s.span()),
            self.ignore_user_agents.as_ref().and_then(|v| v.first()).map(|s| s.span()),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start)
    }
}

impl Check<'_> {
    /// `[service.NAME.idle]` and `min = 0`. `min_zero` is where
    /// `replicas.min = 0` was written, if it was.
    pub(super) fn idle(
        &mut self,
        service: &Spanned<String>,
        kind: ServiceKind,
        kind_span: Option<Range<usize>>,
        driver: DriverKind,
        raw: Option<RawIdle>,
        min_zero: Option<Range<usize>>,
    ) -> Option<IdleConfig> {
        let name = service.get_ref();
        let Some(raw) = raw else {
            if let (Some(span), ServiceKind::Web) = (min_zero, kind) {
                self.problem(
                    span,
                    format!(
                        r#"replicas.min = 0 on web service `{name}` needs a [service.{name}.idle] table: a service at zero is woken by the requests its balancer holds; add [service.{name}.idle] with after = "5m", or set min = 1"#
                    ),
                );
            }
            return None;
        };
        if kind == ServiceKind::Worker {
            let span = raw.first_span().or(kind_span).unwrap_or(service.span());
            self.problem(
                span,
                format!(
                    r#"service `{name}` is a worker: it has no load balancer to hold requests while it wakes, so [service.{name}.idle] does nothing; remove it (a worker scales to zero with replicas.min = 0 and a scaling policy), or make it kind = "web""#
                ),
            );
            return None;
        }
        let after = match &raw.after {
            None => {
                let span = raw.first_span().unwrap_or(service.span());
                self.problem(
                    span,
                    format!(
                        r#"[service.{name}.idle] needs after, how long without a request before the service goes idle, e.g. after = "5m"; remove the table to keep it always up"#
                    ),
                );
                Duration::from_secs(300)
            }
            Some(a) if a.get_ref().0 < IdleConfig::MIN_AFTER => {
                self.problem(
                    a.span(),
                    format!("idle.after must be at least {}, e.g. after = \"5m\"", human(IdleConfig::MIN_AFTER)),
                );
                Duration::from_secs(300)
            }
            Some(a) => a.get_ref().0,
        };
        let mode = match &raw.mode {
            None => IdleMode::default(),
            Some(m) => match IdleMode::from_name(m.get_ref()) {
                Some(IdleMode::Suspend) if driver == DriverKind::Swarm => {
                    self.problem(
                        m.span(),
                        r#"the swarm driver cannot suspend a task (Swarm has no pause); use mode = "stop", or the docker or process driver"#,
                    );
                    IdleMode::Stop
                }
                Some(mode) => mode,
                None => {
                    self.problem(
                        m.span(),
                        format!(r#"unknown idle mode {:?}; expected "stop" or "suspend""#, m.get_ref()),
                    );
                    IdleMode::default()
                }
            },
        };
        let hold_timeout = match &raw.hold_timeout {
            None => IdleConfig::DEFAULT_HOLD_TIMEOUT,
            Some(h) if h.get_ref().0.is_zero() || h.get_ref().0 > MAX_HOLD => {
                self.problem(
                    h.span(),
                    format!("idle.hold_timeout must be more than 0 and at most {}", human(MAX_HOLD)),
                );
                IdleConfig::DEFAULT_HOLD_TIMEOUT
            }
            Some(h) => h.get_ref().0,
        };
        let max_held = match &raw.max_held {
            None => IdleConfig::DEFAULT_MAX_HELD,
            Some(m) => match m.get_ref().0 {
                n @ 1..=MAX_HELD => n as u32,
                n => {
                    self.problem(m.span(), format!("idle.max_held must be between 1 and {MAX_HELD}, not {n}"));
                    IdleConfig::DEFAULT_MAX_HELD
                }
            },
        };
        let mut ignore_user_agents = Vec::new();
        for agent in raw.ignore_user_agents.unwrap_or_default() {
            if agent.get_ref().trim().is_empty() {
                self.problem(agent.span(), "an empty ignore_user_agents entry would match every request; remove it");
            } else {
                ignore_user_agents.push(agent.into_inner());
            }
        }
        Some(IdleConfig { after, mode, hold_timeout, max_held, ignore_user_agents })
    }
}

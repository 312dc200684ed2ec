//! `[service.NAME.warm_pool]`: the warm pool's raw table and its checks.
//! The type it produces, `WarmPoolConfig`, lives in
//! `crate::fleet::warm_pool` next to the rules that use it.

use super::Check;
use crate::config::value::Int;
use crate::config::{DriverKind, ServiceKind};
use crate::fleet::warm_pool::WarmPoolConfig;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::ops::Range;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a warm pool table like [service.web.warm_pool] with size = 2")]
pub(super) struct RawWarmPool {
    size: Option<Spanned<Int>>,
    /// Only "suspend": written to say so, refused otherwise.
    mode: Option<Spanned<String>>,
}

impl Check<'_> {
    /// `[service.NAME.warm_pool]`: `max` is `replicas.max`.
    pub(super) fn warm_pool(
        &mut self,
        service: &Spanned<String>,
        kind: ServiceKind,
        driver: DriverKind,
        raw: Option<RawWarmPool>,
        max: u32,
    ) -> Option<WarmPoolConfig> {
        let raw = raw?;
        let name = service.get_ref();
        let first = [raw.size.as_ref().map(|s| s.span()), raw.mode.as_ref().map(|m| m.span())]
            .into_iter()
            .flatten()
            .min_by_key(|s: &Range<usize>| s.start)
            .unwrap_or(service.span());
        if kind == ServiceKind::Worker {
            self.problem(
                first,
                format!(
                    r#"service `{name}` is a worker: a worker takes work as soon as it starts, so a pool member would take jobs and then be frozen with them; remove [service.{name}.warm_pool], or make it kind = "web""#
                ),
            );
            return None;
        }
        if driver == DriverKind::Swarm {
            self.problem(
                first,
                r#"the swarm driver cannot keep a warm pool: a pool member is suspended, and Swarm has no pause; remove the warm_pool table, or use the docker or process driver"#,
            );
            return None;
        }
        if let Some(mode) = raw.mode.as_ref().filter(|m| m.get_ref() != "suspend") {
            self.problem(
                mode.span(),
                format!(
                    r#"warm_pool.mode {:?}: a warm pool is always suspended (a stopped replica keeps nothing ebb could resume: a process has no disk to keep, unlike a stopped EC2 instance); write mode = "suspend" or remove mode"#,
                    mode.get_ref()
                ),
            );
        }
        let size = match &raw.size {
            None => {
                self.problem(
                    first,
                    format!(
                        "[service.{name}.warm_pool] needs size, how many suspended replicas to keep beside the fleet, e.g. size = 2"
                    ),
                );
                return None;
            }
            Some(s) => s,
        };
        match size.get_ref().0 {
            n if n < 1 || n > i64::from(WarmPoolConfig::MAX_SIZE) => {
                self.problem(
                    size.span(),
                    format!(
                        "warm_pool.size must be between 1 and {}, not {n}; remove the table for no pool",
                        WarmPoolConfig::MAX_SIZE
                    ),
                );
                None
            }
            n if n > i64::from(max) => {
                self.problem(
                    size.span(),
                    format!(
                        "warm_pool.size ({n}) is more than replicas.max ({max}): a scale-out never takes more than max replicas from the pool; set size = {max} or less"
                    ),
                );
                None
            }
            n => Some(WarmPoolConfig { size: n as u32 }),
        }
    }
}

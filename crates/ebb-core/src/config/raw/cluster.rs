//! `[cluster]`: the Swarm nodes as a second level of capacity. The type it
//! produces, `ClusterConfig`, lives in `crate::cluster` next to the rule
//! that uses it.

use super::Check;
use crate::cluster::ClusterConfig;
use crate::config::value::{Dur, Int, Number};
use crate::config::{DriverKind, ServiceConfig};
use crate::scaling::Bounds;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a [cluster] table with target_reserved_cpu = 30, nodes = { min = 2, max = 5 }, add_node = "..." and remove_node = "... {node}""#
)]
pub(super) struct RawCluster {
    target_reserved_cpu: Option<Spanned<Number>>,
    nodes: Option<Spanned<RawNodes>>,
    add_node: Option<Spanned<String>>,
    remove_node: Option<Spanned<String>>,
    scale_out_cooldown: Option<Spanned<Dur>>,
    scale_in_cooldown: Option<Spanned<Dur>>,
    add_node_timeout: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table like nodes = { min = 2, max = 5 }")]
struct RawNodes {
    min: Option<Spanned<Int>>,
    max: Option<Spanned<Int>>,
}

/// More nodes than this is a typo, not a local cluster.
const MAX_NODES: i64 = 1000;

impl Check<'_> {
    /// `[cluster]`: only beside a swarm service (the nodes are Swarm's).
    pub(super) fn cluster(
        &mut self,
        raw: Option<RawCluster>,
        services: &BTreeMap<String, ServiceConfig>,
    ) -> Option<ClusterConfig> {
        let raw = raw?;
        let first: Option<Range<usize>> = [
            raw.target_reserved_cpu.as_ref().map(|v| v.span()),
            raw.nodes.as_ref().map(|v| v.span()),
            raw.add_node.as_ref().map(|v| v.span()),
            raw.remove_node.as_ref().map(|v| v.span()),
            raw.scale_out_cooldown.as_ref().map(|v| v.span()),
            raw.scale_in_cooldown.as_ref().map(|v| v.span()),
            raw.add_node_timeout.as_ref().map(|v| v.span()),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start);
        let Some(first) = first else {
            // No key to point at: the table's header.
            let header = self.source.find("[cluster]").map_or(0..0, |at| at..at + "[cluster]".len());
            self.problem(
                header,
                r#"[cluster] is empty; give it target_reserved_cpu = 30, nodes = { min = 2, max = 5 }, add_node = "..." and remove_node = "... {node}", or remove it"#,
            );
            return None;
        };
        if !services.values().any(|s| s.driver == DriverKind::Swarm) {
            self.problem(
                first,
                r#"[cluster] scales the nodes of a Docker Swarm, but no service has driver = "swarm"; remove [cluster], or set driver = "swarm" on a service"#,
            );
            return None;
        }
        let example = r#"e.g. target_reserved_cpu = 30"#;
        let target = match &raw.target_reserved_cpu {
            None => {
                self.problem(
                    first.clone(),
                    format!("[cluster] needs target_reserved_cpu, the percent of the nodes' CPUs replicas may reserve, {example}"),
                );
                None
            }
            Some(t) if !(1.0..=100.0).contains(&t.get_ref().0) => {
                self.problem(
                    t.span(),
                    format!(
                        "cluster.target_reserved_cpu is a percent between 1 and 100, not {}; {example}",
                        t.get_ref().0
                    ),
                );
                None
            }
            Some(t) => Some(t.get_ref().0),
        };
        let nodes = match &raw.nodes {
            None => {
                self.problem(first.clone(), "[cluster] needs nodes = { min = N, max = M }, how many nodes to keep, e.g. nodes = { min = 2, max = 5 }");
                None
            }
            Some(n) => self.nodes(n),
        };
        let add_node =
            self.node_command("add_node", &raw.add_node, &first, r#"e.g. add_node = "/usr/local/bin/new-node""#);
        let remove_node = self.node_command(
            "remove_node",
            &raw.remove_node,
            &first,
            r#"e.g. remove_node = "/usr/local/bin/drop-node {node}""#,
        );
        if let Some(r) = &raw.remove_node {
            if remove_node.is_some() && !r.get_ref().contains(ClusterConfig::NODE_PLACEHOLDER) {
                self.problem(
                    r.span(),
                    format!(
                        r#"cluster.remove_node must name the node to remove with {{node}} (its hostname), e.g. remove_node = "{} {{node}}""#,
                        r.get_ref().trim()
                    ),
                );
            }
        }
        let positive = |check: &mut Self, key: &str, raw: &Option<Spanned<Dur>>, default: Duration| {
            check.positive(&format!("cluster.{key}"), raw, default)
        };
        let scale_out_cooldown =
            positive(self, "scale_out_cooldown", &raw.scale_out_cooldown, ClusterConfig::DEFAULT_SCALE_OUT_COOLDOWN);
        let scale_in_cooldown =
            positive(self, "scale_in_cooldown", &raw.scale_in_cooldown, ClusterConfig::DEFAULT_SCALE_IN_COOLDOWN);
        let add_node_timeout =
            positive(self, "add_node_timeout", &raw.add_node_timeout, ClusterConfig::DEFAULT_ADD_NODE_TIMEOUT);
        Some(ClusterConfig {
            target_reserved_cpu: target?,
            nodes: nodes?,
            add_node: add_node?,
            remove_node: remove_node?,
            scale_out_cooldown,
            scale_in_cooldown,
            add_node_timeout,
        })
    }

    fn nodes(&mut self, raw: &Spanned<RawNodes>) -> Option<Bounds> {
        let example = "e.g. nodes = { min = 2, max = 5 }";
        let (Some(min), Some(max)) = (&raw.get_ref().min, &raw.get_ref().max) else {
            self.problem(raw.span(), format!("cluster.nodes needs both min and max, {example}"));
            return None;
        };
        for (key, v) in [("min", min), ("max", max)] {
            let n = v.get_ref().0;
            if !(1..=MAX_NODES).contains(&n) {
                self.problem(v.span(), format!("cluster.nodes.{key} must be between 1 and {MAX_NODES}, not {n}"));
                return None;
            }
        }
        let (lo, hi) = (min.get_ref().0, max.get_ref().0);
        if lo > hi {
            self.problem(min.span(), format!("cluster.nodes.min ({lo}) is above max ({hi}); lower min or raise max"));
            return None;
        }
        Some(Bounds { min: lo as u32, max: hi as u32 })
    }

    fn node_command(
        &mut self,
        key: &str,
        raw: &Option<Spanned<String>>,
        first: &Range<usize>,
        example: &str,
    ) -> Option<String> {
        match raw {
            None => {
                self.problem(first.clone(), format!("[cluster] needs {key}, the shell command ebb runs, {example}"));
                None
            }
            Some(c) if c.get_ref().trim().is_empty() => {
                self.problem(c.span(), format!("cluster.{key} is empty; {example}"));
                None
            }
            Some(c) => Some(c.get_ref().clone()),
        }
    }
}

//! `placement.spread` across a service's replicas on Swarm.
//!
//! Swarm applies a spread preference among the tasks of one Swarm service,
//! and each ebb replica is a Swarm service of its own, so Swarm alone never
//! balances ebb's replicas over, say, zones. ebb does it: a new replica's
//! service gets the constraint `ATTRIBUTE==VALUE` for the value (of the
//! nodes it may run on) that the fewest of the service's replicas are
//! pinned to now. The counts come from the replicas' own Swarm services
//! (each carries its pin), so they survive an ebb restart.

use std::collections::{BTreeMap, BTreeSet};

use bollard::models::{Node, NodeSpecAvailabilityEnum, NodeState, Service};

/// A node attribute's value, as Swarm's constraints read it.
pub(crate) fn attribute(node: &Node, attr: &str) -> Option<String> {
    let spec = node.spec.as_ref();
    let description = node.description.as_ref();
    if let Some(label) = attr.strip_prefix("node.labels.") {
        return spec?.labels.as_ref()?.get(label).cloned();
    }
    if let Some(label) = attr.strip_prefix("engine.labels.") {
        return description?.engine.as_ref()?.labels.as_ref()?.get(label).cloned();
    }
    match attr {
        "node.id" => node.id.clone(),
        "node.hostname" => description?.hostname.clone(),
        "node.role" => spec?.role.map(|r| r.to_string()),
        "node.platform.os" => description?.platform.as_ref()?.os.clone(),
        "node.platform.arch" => description?.platform.as_ref()?.architecture.clone(),
        _ => None,
    }
}

/// Whether a node meets every constraint (`A==V`, `A!=V`); a node without
/// the attribute fails `==` and meets `!=`, as in Swarm.
pub(crate) fn satisfies(node: &Node, constraints: &[String]) -> bool {
    constraints.iter().all(|c| {
        let (attr, value, equal) = match c.split_once("!=") {
            Some((a, v)) => (a, v, false),
            None => match c.split_once("==") {
                Some((a, v)) => (a, v, true),
                None => return true,
            },
        };
        let actual = attribute(node, attr.trim());
        (actual.as_deref() == Some(value.trim())) == equal
    })
}

/// Whether Swarm may place a new task on the node now.
pub(crate) fn usable(node: &Node) -> bool {
    let ready = node.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY);
    let active = node.spec.as_ref().and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE);
    ready && active
}

/// How many of `services` are pinned to each value of `attr`.
pub(crate) fn pinned(services: &[Service], attr: &str) -> BTreeMap<String, usize> {
    let prefix = format!("{attr}==");
    let mut counts = BTreeMap::new();
    for service in services {
        let constraints = service
            .spec
            .as_ref()
            .and_then(|s| s.task_template.as_ref())
            .and_then(|t| t.placement.as_ref())
            .and_then(|p| p.constraints.as_ref());
        for value in constraints.into_iter().flatten().filter_map(|c| c.strip_prefix(&prefix)) {
            *counts.entry(value.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// The value the fewest replicas are pinned to, among `values` (ties: the
/// first in order, so the choice is the same every time); `None` when
/// there is none.
pub(crate) fn least_used(values: &BTreeSet<String>, counts: &BTreeMap<String, usize>) -> Option<String> {
    values.iter().min_by_key(|v| counts.get(*v).copied().unwrap_or(0)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{NodeDescription, NodeSpec, NodeStatus, ServiceSpec, TaskSpec, TaskSpecPlacement};
    use std::collections::HashMap;

    fn node(id: &str, zone: Option<&str>, role: &str) -> Node {
        Node {
            id: Some(id.into()),
            spec: Some(NodeSpec {
                labels: Some(zone.map(|z| HashMap::from([("zone".to_string(), z.to_string())])).unwrap_or_default()),
                role: role.parse().ok(),
                availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
                ..Default::default()
            }),
            description: Some(NodeDescription { hostname: Some(format!("host-{id}")), ..Default::default() }),
            status: Some(NodeStatus { state: Some(NodeState::READY), ..Default::default() }),
            ..Default::default()
        }
    }

    fn pinned_to(constraints: &[&str]) -> Service {
        Service {
            spec: Some(ServiceSpec {
                task_template: Some(TaskSpec {
                    placement: Some(TaskSpecPlacement {
                        constraints: Some(constraints.iter().map(|c| c.to_string()).collect()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn attributes_and_constraints_read_as_swarm_reads_them() {
        let n = node("n1", Some("a"), "worker");
        assert_eq!(attribute(&n, "node.labels.zone").as_deref(), Some("a"));
        assert_eq!(attribute(&n, "node.hostname").as_deref(), Some("host-n1"));
        assert_eq!(attribute(&n, "node.role").as_deref(), Some("worker"));
        assert_eq!(attribute(&n, "node.labels.rack"), None);
        assert!(satisfies(&n, &["node.role==worker".into(), "node.labels.zone != b".into()]));
        assert!(!satisfies(&n, &["node.role==manager".into()]));
        assert!(!satisfies(&n, &["node.labels.rack==1".into()]), "no such label: == fails");
        assert!(satisfies(&n, &["node.labels.rack!=1".into()]), "no such label: != holds");
        assert!(usable(&n));
    }

    #[test]
    fn a_new_replica_goes_to_the_value_with_the_fewest() {
        let services = [
            pinned_to(&["node.role==worker", "node.labels.zone==a"]),
            pinned_to(&["node.labels.zone==a"]),
            pinned_to(&["node.labels.zone==b"]),
            pinned_to(&["node.role==worker"]),
        ];
        let counts = pinned(&services, "node.labels.zone");
        assert_eq!(counts, BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)]));
        let values: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        assert_eq!(least_used(&values, &counts).as_deref(), Some("c"));
        let values: BTreeSet<String> = ["a", "b"].map(String::from).into();
        assert_eq!(least_used(&values, &counts).as_deref(), Some("b"));
        assert_eq!(least_used(&BTreeSet::new(), &counts), None);
    }
}

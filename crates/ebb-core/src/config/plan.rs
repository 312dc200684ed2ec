//! What applying a new `ebb.toml` to a running ebb would change: [`plan`].
//!
//! Keys are compared as the two files write them (dotted paths in the
//! user's own spelling, a policy by its name), and each difference gets
//! its consequence: applied in place, a rolling deploy, replicas started
//! from now on, a service started or drained, a listener opened or closed,
//! or refused (it needs a restart: nothing is applied then). Pure: the
//! caller passes how many replicas each service runs.

use std::collections::BTreeMap;
use std::fmt;

use super::{CommandSpec, Config, ContainerOptions, ListenerConfig, ServiceConfig};
use crate::replicas;

/// `+`, `~` or `-`, as Terraform prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Change,
    Remove,
}

impl Op {
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Change => '~',
            Op::Remove => '-',
        }
    }
}

/// What a change is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Service(String),
    Listener(String),
    /// ebb itself: `state_dir`, `[admin]`.
    Ebb,
}

/// What applying a change does to the running fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Taken by the running parts at once; no replica restarts.
    InPlace,
    /// Replicas started from now on get it; running ones keep theirs
    /// (`ebb deploy` replaces them).
    NewReplicas,
    /// The spec changed: a deploy with the service's strategy replaces
    /// this many replicas.
    RollingDeploy { replaced: u32 },
    /// A new service: its balancer and this many replicas start.
    StartService { replicas: u32 },
    /// A removed service: its replicas drain and stop.
    DrainService { replicas: u32 },
    /// A new listener is bound and starts serving.
    OpenListener,
    /// A removed listener stops accepting; its open connections finish.
    CloseListener,
    /// Cannot change on a running ebb: the whole apply is refused.
    Refused { fix: String },
}

impl Effect {
    fn describe(&self) -> String {
        match self {
            Effect::InPlace => "applied in place".into(),
            Effect::NewReplicas => "for replicas started from now on; running ones keep theirs".into(),
            Effect::RollingDeploy { replaced } => format!("rolling deploy, {} replaced", replicas(*replaced)),
            Effect::StartService { replicas: n } => replicas(*n),
            Effect::DrainService { replicas: n } => format!("drained, {} stopped", replicas(*n)),
            Effect::OpenListener => "opened".into(),
            Effect::CloseListener => "stops accepting; open connections finish".into(),
            Effect::Refused { fix } => format!("cannot be applied to a running ebb: {fix}"),
        }
    }
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChange {
    pub op: Op,
    pub subject: Subject,
    /// The dotted key inside the subject (`health.interval`,
    /// `scaling.target_tracking[cpu].target`), or what changed in words
    /// (`route added: host api.example.com -> api`); `None` for a whole
    /// service or listener added or removed.
    pub key: Option<String>,
    /// The value as the old and the new file write it (TOML), when there
    /// is one.
    pub from: Option<String>,
    pub to: Option<String>,
    pub effect: Effect,
}

impl fmt::Display for PlannedChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.op.symbol();
        let effect = self.effect.describe();
        let Some(key) = &self.key else {
            let subject = match &self.subject {
                Subject::Service(name) => format!("service {name}"),
                Subject::Listener(name) => format!("listener {name}"),
                Subject::Ebb => "ebb".into(),
            };
            return write!(f, "{op} {subject} ({effect})");
        };
        match &self.subject {
            Subject::Service(name) => write!(f, "{op} {name}: {key}")?,
            Subject::Listener(name) => write!(f, "{op} listener {name}: {key}")?,
            Subject::Ebb => write!(f, "{op} {key}")?,
        }
        match (&self.from, &self.to) {
            (Some(from), Some(to)) => write!(f, " {from} -> {to}")?,
            (None, Some(to)) => write!(f, " (unset) -> {to}")?,
            (Some(from), None) => write!(f, " {from} -> (unset)")?,
            (None, None) => {}
        }
        write!(f, " ({effect})")
    }
}

/// Everything applying a file would change, services first (by name), then
/// listeners, then ebb's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<PlannedChange>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes that make the whole apply impossible.
    pub fn refused(&self) -> impl Iterator<Item = &PlannedChange> {
        self.changes.iter().filter(|c| matches!(c.effect, Effect::Refused { .. }))
    }

    /// Services whose replicas a deploy replaces.
    pub fn deploys(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for change in &self.changes {
            if let (Effect::RollingDeploy { .. }, Subject::Service(name)) = (&change.effect, &change.subject) {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        names
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        Ok(())
    }
}

/// What applying `new` to an ebb running `old` would change. `running`
/// is each service's current replica count (for the consequences; a
/// service missing from it counts its file's `desired`).
pub fn plan(old: &Config, new: &Config, running: &BTreeMap<String, u32>) -> Plan {
    let old_raw = raw_table(old);
    let new_raw = raw_table(new);
    let mut changes = Vec::new();
    let running_of = |s: &ServiceConfig| running.get(&s.name).copied().unwrap_or(s.replicas.desired);

    for name in union(old.services.keys(), new.services.keys()) {
        let subject = Subject::Service(name.clone());
        match (old.services.get(&name), new.services.get(&name)) {
            (None, Some(s)) => {
                changes.push(whole(Op::Add, subject, Effect::StartService { replicas: s.replicas.desired }))
            }
            (Some(s), None) => {
                changes.push(whole(Op::Remove, subject, Effect::DrainService { replicas: running_of(s) }))
            }
            (Some(before), Some(after)) => {
                let keys = diff_keys(
                    &section(&old_raw, "service", &name),
                    &section(&new_raw, "service", &name),
                    &|path, i| policy_name(before, after, path, i),
                );
                let spec_changed = spec(before) != spec(after);
                for (key, from, to) in keys {
                    let effect = service_effect(&key, spec_changed, running_of(before));
                    changes.push(changed(&subject, key, from, to, effect));
                }
            }
            (None, None) => unreachable!("a name from one of the two maps"),
        }
    }

    for name in union(old.listeners.keys(), new.listeners.keys()) {
        let subject = Subject::Listener(name.clone());
        match (old.listeners.get(&name), new.listeners.get(&name)) {
            (None, Some(_)) => changes.push(whole(Op::Add, subject, Effect::OpenListener)),
            (Some(_), None) => changes.push(whole(Op::Remove, subject, Effect::CloseListener)),
            (Some(before), Some(after)) => {
                let keys =
                    diff_keys(&section(&old_raw, "listener", &name), &section(&new_raw, "listener", &name), &|_, _| {
                        None
                    });
                let switches_tls = before.tls.is_some() != after.tls.is_some();
                for (key, from, to) in keys.into_iter().filter(|(k, _, _)| !k.starts_with("route")) {
                    let effect = listener_effect(&key, switches_tls);
                    changes.push(changed(&subject, key, from, to, effect));
                }
                changes.extend(route_changes(&subject, before, after));
            }
            (None, None) => unreachable!("a name from one of the two maps"),
        }
    }

    let ebb_keys = |raw: &toml::Table| {
        let mut top = raw.clone();
        top.remove("service");
        top.remove("listener");
        top
    };
    for (key, from, to) in diff_keys(&ebb_keys(&old_raw), &ebb_keys(&new_raw), &|_, _| None) {
        let fix = if key.starts_with("admin.tls") {
            "the admin API's certificate is read from these files at start (changed files are reloaded); restart ebb to name others (`ebb up --takeover` keeps the fleet running)"
        } else if key.starts_with("admin") {
            "the admin API's address is bound at start; restart ebb (`ebb up --takeover` keeps the fleet running)"
        } else if key.starts_with("cluster") {
            "the cluster task reads [cluster] when ebb starts; restart ebb (`ebb up --takeover` keeps the fleet and the nodes running)"
        } else {
            "the state directory holds the fleet's records; stop ebb and move it by hand"
        };
        changes.push(PlannedChange {
            op: Op::Change,
            subject: Subject::Ebb,
            key: Some(key),
            from,
            to,
            effect: Effect::Refused { fix: fix.into() },
        });
    }
    // A state_dir written differently may still be the same directory.
    if old.state_dir == new.state_dir {
        changes.retain(|c| !(c.subject == Subject::Ebb && c.key.as_deref() == Some("state_dir")));
    }
    Plan { changes }
}

/// One key of a service or listener, changed.
fn changed(subject: &Subject, key: String, from: Option<String>, to: Option<String>, effect: Effect) -> PlannedChange {
    PlannedChange { op: Op::Change, subject: subject.clone(), key: Some(key), from, to, effect }
}

fn whole(op: Op, subject: Subject, effect: Effect) -> PlannedChange {
    PlannedChange { op, subject, key: None, from: None, to: None, effect }
}

fn union<'a>(a: impl Iterator<Item = &'a String>, b: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = a.chain(b).cloned().collect();
    names.sort();
    names.dedup();
    names
}

/// What a replica is started from: a change here is a new version.
type Spec<'a> = (&'a CommandSpec, &'a BTreeMap<String, String>, Option<(&'a str, &'a ContainerOptions)>);

fn spec(s: &ServiceConfig) -> Spec<'_> {
    (&s.command, &s.env, s.container.as_ref().map(|c| (c.image.as_str(), &c.options)))
}

fn service_effect(key: &str, spec_changed: bool, running: u32) -> Effect {
    let top = key.split(['.', '[']).next().unwrap_or(key);
    match top {
        "command" | "env" | "image" | "mounts" | "networks" | "user" | "labels" | "placement" if spec_changed => {
            Effect::RollingDeploy { replaced: running }
        }
        // Written differently, started the same way.
        "command" | "env" | "image" | "mounts" | "networks" | "user" | "labels" | "placement" => Effect::InPlace,
        "container_port" | "cpus" | "memory" | "ports" => Effect::NewReplicas,
        "driver" | "kind" => Effect::Refused {
            fix: format!("a service cannot change its {top} while it runs; add it under a new name (the old one drains), or stop ebb and start it again"),
        },
        "listen" => Effect::Refused {
            fix: "a listen address is bound at start; restart ebb (`ebb up --takeover` keeps the fleet running), or route the service through a [listener.NAME]".into(),
        },
        _ => Effect::InPlace,
    }
}

fn listener_effect(key: &str, switches_tls: bool) -> Effect {
    let top = key.split(['.', '[']).next().unwrap_or(key);
    match top {
        "tls" if switches_tls => Effect::Refused {
            fix: "a listener cannot switch between plain HTTP and TLS while it runs; add a TLS listener under a new name (the old one closes), or restart ebb (`ebb up --takeover`)".into(),
        },
        "listen" | "http" => Effect::Refused {
            fix: "a listener's addresses are bound at start; add a listener under a new name (the old one closes), or restart ebb (`ebb up --takeover`)".into(),
        },
        "tls" if key.starts_with("tls.acme") => Effect::Refused {
            fix: "ACME settings are read at start; restart ebb (`ebb up --takeover` keeps the fleet running)".into(),
        },
        _ => Effect::InPlace,
    }
}

/// Routes are compared by what they match and where they send it, so an
/// inserted route reads as one route added, not every later one changed.
fn route_changes(subject: &Subject, before: &ListenerConfig, after: &ListenerConfig) -> Vec<PlannedChange> {
    let line = |r: &crate::routing::Route| format!("{} -> {}", r.describe(), r.service);
    let old: Vec<String> = before.routes.routes.iter().map(line).collect();
    let new: Vec<String> = after.routes.routes.iter().map(line).collect();
    if old == new {
        return Vec::new();
    }
    let mut left = new.clone();
    let mut changes = Vec::new();
    let change = |key: String| PlannedChange {
        op: Op::Change,
        subject: subject.clone(),
        key: Some(key),
        from: None,
        to: None,
        effect: Effect::InPlace,
    };
    for route in &old {
        match left.iter().position(|r| r == route) {
            Some(i) => {
                left.remove(i);
            }
            None => changes.push(change(format!("route removed: {route}"))),
        }
    }
    for route in left {
        changes.push(change(format!("route added: {route}")));
    }
    if changes.is_empty() {
        changes.push(change(format!("routes reordered: {}", new.join("; "))));
    }
    changes
}

/// The policy an array element is, by its name (given or made up), so a
/// change reads `scaling.target_tracking[cpu].target`.
fn policy_name(before: &ServiceConfig, after: &ServiceConfig, path: &str, i: usize) -> Option<String> {
    let names = |s: &ServiceConfig| -> Vec<String> {
        match path {
            "scaling.target_tracking" => s.scaling.target_tracking.iter().map(|p| p.name.clone()).collect(),
            "scaling.step" => s.scaling.step.iter().map(|p| p.name.clone()).collect(),
            "scaling.shadow.target_tracking" => {
                s.scaling.shadow.iter().flat_map(|sh| &sh.target_tracking).map(|p| p.name.clone()).collect()
            }
            "scaling.shadow.step" => s.scaling.shadow.iter().flat_map(|sh| &sh.step).map(|p| p.name.clone()).collect(),
            "scaling.scheduled" => s.scaling.scheduled.iter().map(|p| p.name.clone()).collect(),
            "scaling.predictive" => s.scaling.predictive.iter().map(|p| p.name.clone()).collect(),
            _ => Vec::new(),
        }
    };
    names(after).get(i).or(names(before).get(i)).cloned()
}

/// The file as TOML (it parsed once already, so it parses again).
fn raw_table(config: &Config) -> toml::Table {
    config.source.parse::<toml::Table>().unwrap_or_default()
}

/// `[KIND.NAME]` of a file, or an empty table.
fn section(raw: &toml::Table, kind: &str, name: &str) -> toml::Table {
    raw.get(kind).and_then(|v| v.get(name)).and_then(|v| v.as_table()).cloned().unwrap_or_default()
}

/// Every leaf key that differs: `(dotted key, old value, new value)`, in
/// key order. Tables nest with `.`; an array of tables is indexed by
/// `label(path, i)` or the position; other arrays are values.
fn diff_keys(
    old: &toml::Table,
    new: &toml::Table,
    label: &dyn Fn(&str, usize) -> Option<String>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let mut before = BTreeMap::new();
    let mut after = BTreeMap::new();
    flatten("", &toml::Value::Table(old.clone()), label, &mut before);
    flatten("", &toml::Value::Table(new.clone()), label, &mut after);
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| (k.clone(), before.get(k).cloned(), after.get(k).cloned()))
        .collect()
}

fn flatten(
    path: &str,
    value: &toml::Value,
    label: &dyn Fn(&str, usize) -> Option<String>,
    out: &mut BTreeMap<String, String>,
) {
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                flatten(&join(key), value, label, out);
            }
        }
        toml::Value::Array(items) if !items.is_empty() && items.iter().all(|v| v.is_table()) => {
            for (i, item) in items.iter().enumerate() {
                let index = label(path, i).unwrap_or_else(|| i.to_string());
                flatten(&format!("{path}[{index}]"), item, label, out);
            }
        }
        other => {
            out.insert(path.to_string(), other.to_string());
        }
    }
}

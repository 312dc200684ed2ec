//! `mounts`, `networks`, `user`, `labels` and `placement` on a
//! `[service.NAME]`: their raw shapes and checks. The types they produce,
//! [`ContainerOptions`] and its parts, live in `config.rs`.
//!
//! A mount is written as compose writes it: a short string
//! `"SOURCE:TARGET[:ro|rw]"` (a source that is absolute or starts with `./`
//! or `../` is a bind mount of that host path, anything else a named
//! volume), or a table `{ type, source, target, read_only }` (the only way
//! to write a tmpfs). A relative bind source is resolved against the config
//! file's directory, as `state_dir` is, so the file means the same thing
//! wherever ebb is started from.

use super::Check;
use crate::config::{ContainerOptions, DriverKind, Mount, MountKind, Placement};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

/// The raw keys, as `RawService` holds them.
#[derive(Default)]
pub(super) struct RawContainerOptions {
    pub mounts: Option<Vec<Spanned<RawMount>>>,
    pub networks: Option<Vec<Spanned<String>>>,
    pub user: Option<Spanned<String>>,
    pub labels: Option<LabelTable>,
    pub placement: Option<RawPlacement>,
}

/// One `mounts` entry: a short string or a table.
pub(super) enum RawMount {
    Short(String),
    Table(RawMountTable),
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a mount table like { type = "bind", source = "/srv/data", target = "/data", read_only = true }"#
)]
pub(super) struct RawMountTable {
    #[serde(rename = "type")]
    kind: Option<String>,
    source: Option<String>,
    target: Option<String>,
    read_only: Option<bool>,
}

struct RawMountVisitor;

impl<'de> Visitor<'de> for RawMountVisitor {
    type Value = RawMount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            r#"a mount: "SOURCE:TARGET[:ro]" or a table like { type = "volume", source = "data", target = "/data" }"#,
        )
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<RawMount, E> {
        Ok(RawMount::Short(s.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawMount, A::Error> {
        RawMountTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawMount::Table)
    }
}

impl<'de> Deserialize<'de> for RawMount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawMountVisitor)
    }
}

/// `labels = { key = "value" }`, keys spanned for the checks, file order.
#[derive(Default)]
pub(super) struct LabelTable(Vec<(Spanned<String>, String)>);

struct LabelTableVisitor;

impl<'de> Visitor<'de> for LabelTableVisitor {
    type Value = LabelTable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a table of labels like { team = "search", "com.example.tier" = "web" } (string values)"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LabelTable, A::Error> {
        let mut labels = Vec::new();
        while let Some(entry) = map.next_entry::<Spanned<String>, String>()? {
            labels.push(entry);
        }
        Ok(LabelTable(labels))
    }
}

impl<'de> Deserialize<'de> for LabelTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(LabelTableVisitor)
    }
}

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a placement table like { spread = "node.labels.zone", constraints = ["node.role==worker"] }"#
)]
pub(super) struct RawPlacement {
    spread: Option<Spanned<String>>,
    constraints: Option<Vec<Spanned<String>>>,
}

/// Node attributes Swarm places by (constraints and spread).
const NODE_ATTRIBUTES: [&str; 5] = ["node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch"];
const LABEL_ATTRIBUTES: [&str; 2] = ["node.labels.", "engine.labels."];

fn is_node_attribute(a: &str) -> bool {
    NODE_ATTRIBUTES.contains(&a) || LABEL_ATTRIBUTES.iter().any(|p| a.len() > p.len() && a.starts_with(p))
}

/// A Docker volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_volume_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `.` and `..` removed without touching the file system (the engine
/// wants a clean absolute path; the directory may not exist yet here).
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn one_word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Check<'_> {
    /// The container options of a service; `None` (after a problem for each
    /// key written) for the process driver.
    pub(super) fn container_options(
        &mut self,
        name: &Spanned<String>,
        driver: DriverKind,
        raw: RawContainerOptions,
    ) -> ContainerOptions {
        let service = name.get_ref().clone();
        if !driver.is_container() {
            let first_label = raw.labels.as_ref().and_then(|l| l.0.first().map(|(k, _)| k.span()));
            let written = [
                ("mounts", raw.mounts.as_ref().map(|m| m.first().map(|v| v.span()))),
                ("networks", raw.networks.as_ref().map(|n| n.first().map(|v| v.span()))),
                ("user", raw.user.as_ref().map(|u| Some(u.span()))),
                ("labels", raw.labels.as_ref().map(|_| first_label)),
                ("placement", raw.placement.as_ref().map(placement_span)),
            ];
            for (key, span) in written {
                if let Some(span) = span {
                    self.problem(
                        span.unwrap_or(name.span()),
                        format!(r#"{key} only applies to containers; add driver = "docker" (or "swarm") to service `{service}`, or remove {key}"#),
                    );
                }
            }
            return ContainerOptions::default();
        }
        let mut options = ContainerOptions::default();
        let mut targets: BTreeMap<String, usize> = BTreeMap::new();
        for entry in raw.mounts.unwrap_or_default() {
            let span = entry.span();
            if let Some(mount) = self.mount(span.clone(), entry.into_inner()) {
                let line = self.line_of(&span);
                if let Some(first) = targets.insert(mount.target.clone(), line) {
                    self.problem(
                        span,
                        format!("two mounts at {} (the other on line {first}); give each its own target", mount.target),
                    );
                    continue;
                }
                options.mounts.push(mount);
            }
        }
        for network in raw.networks.unwrap_or_default() {
            let n = network.get_ref();
            if !one_word(n) {
                self.problem(
                    network.span(),
                    format!("network {n:?} is not a network name; write one like \"backend\""),
                );
            } else if matches!(n.as_str(), "host" | "none") {
                self.problem(
                    network.span(),
                    format!("network {n:?} has no published port for the balancer to reach; use a bridge (docker) or overlay (swarm) network, or leave networks out"),
                );
            } else if options.networks.contains(n) {
                self.problem(network.span(), format!("network {n:?} is listed twice; remove one"));
            } else {
                options.networks.push(network.into_inner());
            }
        }
        if let Some(user) = raw.user {
            let u = user.get_ref();
            if !one_word(u) || u.matches(':').count() > 1 || u.starts_with(':') || u.ends_with(':') {
                self.problem(
                    user.span(),
                    format!(r#"user {u:?} is not a user; write "UID[:GID]" or a name in the image, e.g. "1000:1000" or "app""#),
                );
            } else {
                options.user = Some(user.into_inner());
            }
        }
        for (key, value) in raw.labels.unwrap_or_default().0 {
            let k = key.get_ref();
            if k.trim().is_empty() || k.contains('\0') || value.contains('\0') {
                self.problem(key.span(), format!("label {k:?} needs a name and no NUL characters"));
            } else if k.to_ascii_lowercase().starts_with("ebb.") {
                self.problem(
                    key.span(),
                    format!("label {k:?}: ebb.* labels are ebb's own (how it finds its replicas after a restart); use another prefix, e.g. \"app.{}\"", &k[4..]),
                );
            } else {
                options.labels.insert(key.into_inner(), value);
            }
        }
        if let Some(placement) = raw.placement {
            options.placement = self.placement(name, driver, placement);
        }
        options
    }

    fn mount(&mut self, span: Range<usize>, raw: RawMount) -> Option<Mount> {
        let example = r#"e.g. "./data:/data", "cache:/cache:ro" or { type = "tmpfs", target = "/tmp" }"#;
        let (kind, source, target, read_only) = match raw {
            RawMount::Short(text) => {
                let parts: Vec<&str> = text.split(':').collect();
                let read_only = match parts.get(2).copied() {
                    None | Some("rw") => false,
                    Some("ro") => true,
                    Some(mode) => {
                        self.problem(
                            span,
                            format!(
                                "mount {text:?}: unknown mode {mode:?}; write ro or rw after the target, {example}"
                            ),
                        );
                        return None;
                    }
                };
                if !(2..=3).contains(&parts.len()) || parts[0].is_empty() || parts[1].is_empty() {
                    self.problem(span, format!("mount {text:?} is not SOURCE:TARGET[:ro]; {example}"));
                    return None;
                }
                let source = parts[0];
                let kind = match source.starts_with('/') || source.starts_with("./") || source.starts_with("../") {
                    true => MountKind::Bind,
                    false => MountKind::Volume,
                };
                (kind, Some(source.to_string()), parts[1].to_string(), read_only)
            }
            RawMount::Table(table) => {
                let kind = match table.kind.as_deref() {
                    Some("bind") => MountKind::Bind,
                    Some("volume") => MountKind::Volume,
                    Some("tmpfs") => MountKind::Tmpfs,
                    other => {
                        let what = other
                            .map(|t| format!("unknown mount type {t:?}"))
                            .unwrap_or("a mount table with no type".into());
                        self.problem(span, format!(r#"{what}; write type = "bind", "volume" or "tmpfs""#));
                        return None;
                    }
                };
                let Some(target) = table.target else {
                    self.problem(
                        span,
                        format!(r#"a {} mount with no target; add target = "/path/inside""#, kind.as_str()),
                    );
                    return None;
                };
                (kind, table.source, target, table.read_only.unwrap_or(false))
            }
        };
        if !target.starts_with('/') || target == "/" || !one_word(&target) {
            self.problem(
                span,
                format!(
                    "mount target {target:?} must be an absolute path inside the container (not / itself); {example}"
                ),
            );
            return None;
        }
        let source = match (kind, source) {
            (MountKind::Tmpfs, None) => None,
            (MountKind::Tmpfs, Some(_)) => {
                self.problem(span, "a tmpfs mount has no source (it is memory); remove source");
                return None;
            }
            (_, None) => {
                self.problem(
                    span,
                    format!(r#"a {} mount with no source; add source = "...", {example}"#, kind.as_str()),
                );
                return None;
            }
            (MountKind::Volume, Some(v)) if !is_volume_name(&v) => {
                self.problem(
                    span,
                    format!(r#"mount source {v:?} is neither a volume name (letters, digits, _ . -) nor a host path; a bind source is absolute or starts with ./ or ../ (relative to this file's directory)"#),
                );
                return None;
            }
            (MountKind::Volume, Some(v)) => Some(v),
            (MountKind::Bind, Some(path)) => {
                let relative = path.starts_with("./") || path.starts_with("../") || path == "." || path == "..";
                if !(path.starts_with('/') || relative) || path.contains('\0') {
                    self.problem(
                        span,
                        format!("bind source {path:?} is relative; write an absolute host path, or start it with ./ or ../ (relative to this file's directory)"),
                    );
                    return None;
                }
                // Relative to the config file, as state_dir is (the ebb
                // crate makes it absolute against its working directory:
                // this parse does no I/O).
                let base = self.file.parent().unwrap_or(Path::new(""));
                Some(clean(&base.join(&path)).to_string_lossy().into_owned())
            }
        };
        Some(Mount { kind, source, target, read_only })
    }

    fn placement(&mut self, name: &Spanned<String>, driver: DriverKind, raw: RawPlacement) -> Placement {
        if driver != DriverKind::Swarm {
            self.problem(
                placement_span(&raw).unwrap_or(name.span()),
                format!(r#"placement applies to the swarm driver (it chooses among nodes); service `{}` runs on the local Docker engine: remove placement, or use driver = "swarm""#, name.get_ref()),
            );
            return Placement::default();
        }
        let mut placement = Placement::default();
        if let Some(spread) = raw.spread {
            if is_node_attribute(spread.get_ref()) {
                placement.spread = Some(spread.into_inner());
            } else {
                self.problem(
                    spread.span(),
                    format!(r#"spread {:?} is not a node attribute; write "node.id", "node.hostname" or "node.labels.NAME" (e.g. "node.labels.zone")"#, spread.get_ref()),
                );
            }
        }
        for c in raw.constraints.unwrap_or_default() {
            let text = c.get_ref();
            let parts = text.split_once("==").or_else(|| text.split_once("!="));
            match parts.map(|(a, b)| (a.trim(), b.trim())) {
                Some((attr, value)) if is_node_attribute(attr) && !value.is_empty() => {
                    placement.constraints.push(text.clone());
                }
                _ => self.problem(
                    c.span(),
                    format!(r#"constraint {text:?} is not ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE over a node attribute; e.g. "node.role==worker" or "node.labels.zone!=eu-1""#),
                ),
            }
        }
        placement
    }
}

/// Where a placement table is written (its first key's value).
fn placement_span(raw: &RawPlacement) -> Option<Range<usize>> {
    let constraint = raw.constraints.as_ref().and_then(|c| c.first().map(|c| c.span()));
    [raw.spread.as_ref().map(|s| s.span()), constraint].into_iter().flatten().min_by_key(|s| s.start)
}

//! What `ebb up` carries over from the last run, said out loud.
//!
//! Desired capacity survives restarts (the state store keeps the last
//! value a user or a policy set), unless ebb.toml's `replicas.desired` was
//! edited since (the file wins) or `ebb up --fresh` asks to start from the
//! file. `ebb up` prints, per service, which it is and why; `--fresh`
//! keeps everything else (versions, certificates, history, events, the
//! admin token), and adopted replicas beyond the file's desired are
//! retired the ordinary way.

use std::collections::BTreeMap;
use std::fmt;

use ebb_core::config::Config;

use crate::events::{EventKind, EventLog, NewEvent};
use crate::state::Restored;

/// `ebb up`'s options.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpOptions {
    /// Take over from the ebb running on the same state directory
    /// (`takeover.rs`).
    pub takeover: bool,
    /// Start from the file's `replicas.desired`, not the last run's.
    pub fresh: bool,
}

/// Where a service's desired capacity at start comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No earlier run (or none of this service).
    File,
    /// The file's, which is also where the last run ended.
    FileAsLastRun,
    /// The last run's; the file says `file`. `clamped_from`: the stored
    /// value, when the bounds changed it.
    Kept { file: u32, clamped_from: Option<u32> },
    /// The file's, because its `replicas.desired` changed (from `was`)
    /// since the last run, which ended at `last`.
    FileEdited { was: u32, last: u32 },
    /// The file's, by `--fresh`; the last run ended at `last`.
    Fresh { last: u32 },
}

/// A service's desired capacity at start and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub desired: u32,
    pub origin: Origin,
}

impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.desired;
        match &self.origin {
            Origin::File => write!(f, "desired {d} (from the file)"),
            Origin::FileAsLastRun => write!(f, "desired {d} (from the file, as the last run left it)"),
            Origin::Kept { file, clamped_from: None } => write!(
                f,
                "desired {d} (kept from the last run; the file says {file} — `ebb up --fresh` to start from the file)"
            ),
            Origin::Kept { file, clamped_from: Some(stored) } => write!(
                f,
                "desired {d} (kept from the last run's {stored}, within the file's min/max; the file says {file} — `ebb up --fresh` to start from the file)"
            ),
            Origin::FileEdited { was, last } => write!(
                f,
                "desired {d} (from the file: its replicas.desired changed from {was} since the last run, which left {last})"
            ),
            Origin::Fresh { last } => write!(f, "desired {d} (from the file, --fresh; the last run left {last})"),
        }
    }
}

/// Each service's desired capacity at start, by the rule the controller
/// applies (`ServiceRecord::resumes_desired`). With `fresh`, the stored
/// records are changed to start from the file (the controller then keeps
/// the file's value, and its versions).
pub fn desired_at_start(config: &Config, restored: &mut Restored, fresh: bool) -> BTreeMap<String, Desired> {
    let mut out = BTreeMap::new();
    for service in config.services.values() {
        let file = service.replicas.desired;
        let origin = match restored.services.get_mut(&service.name) {
            None => Origin::File,
            Some(record) if fresh => {
                let last = record.desired;
                record.desired = file;
                record.config_desired = file;
                match last == file {
                    true => Origin::FileAsLastRun,
                    false => Origin::Fresh { last },
                }
            }
            Some(record) if record.resumes_desired(file) => {
                let kept = service.replicas.bounds.clamp(record.desired);
                let clamped_from = (kept != record.desired).then_some(record.desired);
                if kept == file {
                    Origin::FileAsLastRun
                } else {
                    out.insert(
                        service.name.clone(),
                        Desired { desired: kept, origin: Origin::Kept { file, clamped_from } },
                    );
                    continue;
                }
            }
            Some(record) => Origin::FileEdited { was: record.config_desired, last: record.desired },
        };
        out.insert(service.name.clone(), Desired { desired: file, origin });
    }
    out
}

/// Records a `scaled` event for each service `--fresh` moved.
pub fn record_fresh(events: &EventLog, desired: &BTreeMap<String, Desired>) {
    for (name, d) in desired {
        if let Origin::Fresh { last } = d.origin {
            let mut event = NewEvent::new(
                name,
                EventKind::Scaled,
                format!("ebb up --fresh: desired {} from ebb.toml (the last run left {last})", d.desired),
            );
            event.from = Some(last);
            event.to = Some(d.desired);
            events.record(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ServiceRecord;

    fn config(desired: u32) -> Config {
        let text = format!(
            "[service.web]\ncommand = \"true\"\nlisten = \"127.0.0.1:18999\"\nreplicas = {{ min = 1, max = 5, desired = {desired} }}\n"
        );
        Config::parse(&text, std::path::Path::new("ebb.toml")).unwrap()
    }

    fn restored(desired: u32, config_desired: u32) -> Restored {
        let mut restored = Restored::default();
        restored.services.insert(
            "web".into(),
            ServiceRecord {
                name: "web".into(),
                desired,
                version: 1,
                config_desired,
                specs: BTreeMap::new(),
                config_spec: serde_json::Value::Null,
                last_deploy: None,
            },
        );
        restored
    }

    #[test]
    fn each_origin_is_said_with_its_numbers() {
        let c = config(1);
        let first = desired_at_start(&c, &mut Restored::default(), false);
        assert_eq!(first["web"].to_string(), "desired 1 (from the file)");

        let kept = desired_at_start(&c, &mut restored(4, 1), false);
        assert_eq!(
            kept["web"].to_string(),
            "desired 4 (kept from the last run; the file says 1 — `ebb up --fresh` to start from the file)"
        );

        let clamped = desired_at_start(&c, &mut restored(9, 1), false);
        assert_eq!(clamped["web"].desired, 5);
        assert!(clamped["web"].to_string().contains("last run's 9, within the file's min/max"), "{}", clamped["web"]);

        let edited = desired_at_start(&c, &mut restored(4, 2), false);
        assert_eq!(edited["web"].desired, 1);
        assert!(edited["web"].to_string().contains("changed from 2 since the last run, which left 4"));

        let mut stored = restored(4, 1);
        let fresh = desired_at_start(&c, &mut stored, true);
        assert_eq!(fresh["web"].to_string(), "desired 1 (from the file, --fresh; the last run left 4)");
        let record = &stored.services["web"];
        assert!(record.resumes_desired(1) && record.desired == 1, "the controller starts from the file: {record:?}");

        let same = desired_at_start(&c, &mut restored(1, 1), false);
        assert_eq!(same["web"].origin, Origin::FileAsLastRun);
    }
}

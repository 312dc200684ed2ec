//! Local replicas' log files (`<state_dir>/logs/<replica>.log`) do not grow
//! forever: past `logs.max_size` a file is rotated, and the files of
//! replicas gone for `logs.retention` are removed.
//!
//! A replica writes its log itself (its stdout and stderr are the file,
//! opened with `O_APPEND`), so that it outlives ebb. Rotation is therefore
//! copy-then-truncate, as logrotate's `copytruncate`: the replica keeps its
//! descriptor and its next write lands at the start of the emptied file.
//! Lines written between the copy and the truncation (a few milliseconds
//! every `max_size` bytes) are lost; that is the price of a log that needs
//! no pipe through ebb.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ebb_core::config::LogsConfig;

/// How often the logs directory is looked at.
pub const TIDY_EVERY: Duration = Duration::from_secs(10);

/// What one look at the directory did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tidied {
    /// Replicas whose log was rotated.
    pub rotated: Vec<String>,
    /// Replicas whose logs were removed (gone past retention).
    pub removed: Vec<String>,
}

/// Rotates and removes in `dir`. `policies`: each service's settings (a
/// log belongs to the service its id starts with); `live`: replicas that
/// run now, whose logs are never removed.
pub fn tidy(
    dir: &Path,
    policies: &BTreeMap<String, LogsConfig>,
    live: &BTreeSet<String>,
    now: SystemTime,
) -> std::io::Result<Tidied> {
    let mut done = Tidied::default();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(done) };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".log") else { continue };
        let Some(policy) = service_of(id).and_then(|s| policies.get(s)) else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if !live.contains(id) {
            let idle_for = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if idle_for >= policy.retention {
                remove_all(dir, id)?;
                done.removed.push(id.to_string());
            }
            continue;
        }
        if meta.len() > policy.max_size {
            rotate(dir, id, policy.keep)?;
            done.rotated.push(id.to_string());
        }
    }
    done.rotated.sort();
    done.removed.sort();
    Ok(done)
}

/// `web-3f9c1a` → `web`: replica ids are `<service>-<6 hex digits>`.
fn service_of(id: &str) -> Option<&str> {
    let (service, suffix) = id.rsplit_once('-')?;
    (suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit())).then_some(service)
}

fn rotated(dir: &Path, id: &str, n: u32) -> PathBuf {
    dir.join(format!("{id}.log.{n}"))
}

/// `<id>.log.(keep-1)` → `.keep`, …, `<id>.log` copied to `.1`, then
/// `<id>.log` emptied in place.
fn rotate(dir: &Path, id: &str, keep: u32) -> std::io::Result<()> {
    let live = dir.join(format!("{id}.log"));
    if keep > 0 {
        let _ = std::fs::remove_file(rotated(dir, id, keep));
        for n in (1..keep).rev() {
            let from = rotated(dir, id, n);
            if from.exists() {
                std::fs::rename(&from, rotated(dir, id, n + 1))?;
            }
        }
        std::fs::copy(&live, rotated(dir, id, 1))?;
    }
    std::fs::OpenOptions::new().write(true).open(&live)?.set_len(0)
}

fn remove_all(dir: &Path, id: &str) -> std::io::Result<()> {
    let prefix = format!("{id}.log");
    for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rotated_copy = name.strip_prefix(&prefix).is_some_and(|rest| {
            rest.is_empty() || rest.strip_prefix('.').is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        });
        if rotated_copy {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Every [`TIDY_EVERY`]: each service's current `logs` settings and live
/// replicas from `running`, until `stop`.
pub async fn keep_tidy(
    running: std::sync::Arc<crate::apply::Running>,
    state_dir: PathBuf,
    stop: tokio_util::sync::CancellationToken,
) {
    let dir = state_dir.join("logs");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TIDY_EVERY) => {}
        }
        let policies = running.log_policies().await;
        let live: BTreeSet<String> = running
            .services
            .values()
            .iter()
            .flat_map(|handle| handle.status().replicas.into_iter().map(|r| r.id))
            .collect();
        let dir = dir.clone();
        let result = tokio::task::spawn_blocking(move || tidy(&dir, &policies, &live, SystemTime::now())).await;
        match result {
            Ok(Ok(done)) => {
                for id in done.rotated {
                    tracing::info!(replica = %id, "Rotated the replica's log (logs.max_size).");
                }
                for id in done.removed {
                    tracing::info!(replica = %id, "Removed the log of a replica gone past logs.retention.");
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "Could not tidy the replicas' logs."),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn policy(max_size: u64, keep: u32) -> BTreeMap<String, LogsConfig> {
        BTreeMap::from([("web".to_string(), LogsConfig { max_size, keep, retention: Duration::from_secs(3600) })])
    }

    #[test]
    fn a_full_log_is_rotated_and_the_writer_goes_on_at_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-abc123.log");
        // The replica's own descriptor, as the process driver opens it.
        let mut writer = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let live = BTreeSet::from(["web-abc123".to_string()]);
        for round in 1..=4 {
            writer.write_all(format!("round {round}\n").repeat(20).as_bytes()).unwrap();
            let done = tidy(dir.path(), &policy(100, 2), &live, SystemTime::now()).unwrap();
            assert_eq!(done.rotated, vec!["web-abc123"]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "emptied in place");
        }
        writer.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n", "the replica writes at the start");
        let one = std::fs::read_to_string(dir.path().join("web-abc123.log.1")).unwrap();
        let two = std::fs::read_to_string(dir.path().join("web-abc123.log.2")).unwrap();
        assert!(one.starts_with("round 4") && two.starts_with("round 3"), "{one:?} {two:?}");
        assert!(!dir.path().join("web-abc123.log.3").exists(), "keep = 2");
        // Under the size: left alone.
        let done = tidy(dir.path(), &policy(100, 2), &live, SystemTime::now()).unwrap();
        assert_eq!(done, Tidied::default());
    }

    #[test]
    fn logs_of_gone_replicas_are_removed_after_retention_and_live_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["web-aaaaaa.log", "web-aaaaaa.log.1", "web-bbbbbb.log", "web-aaaaaa.log.txt", "api-cccccc.log"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let live = BTreeSet::from(["web-bbbbbb".to_string()]);
        let soon = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(tidy(dir.path(), &policy(1 << 20, 3), &live, soon).unwrap(), Tidied::default());
        let later = SystemTime::now() + Duration::from_secs(3601);
        let done = tidy(dir.path(), &policy(1 << 20, 3), &live, later).unwrap();
        assert_eq!(done.removed, vec!["web-aaaaaa"]);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        // A live replica's log, another file, and a service without a
        // policy here (another config) are kept.
        assert_eq!(left, vec!["api-cccccc.log", "web-aaaaaa.log.txt", "web-bbbbbb.log"]);
    }

    #[test]
    fn keep_zero_empties_without_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web-abcdef.log"), "y".repeat(200)).unwrap();
        let live = BTreeSet::from(["web-abcdef".to_string()]);
        tidy(dir.path(), &policy(100, 0), &live, SystemTime::now()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

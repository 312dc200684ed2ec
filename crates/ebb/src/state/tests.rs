use super::*;
use crate::events::EventKind;

fn service(name: &str, desired: u32) -> ServiceRecord {
    ServiceRecord {
        name: name.into(),
        desired,
        version: 2,
        config_desired: 2,
        specs: BTreeMap::from([(1, serde_json::json!({"command": "a"})), (2, serde_json::json!({"command": "b"}))]),
        config_spec: serde_json::json!({"command": "a"}),
        last_deploy: None,
    }
}

fn replica(id: &str, service: &str) -> ReplicaRecord {
    ReplicaRecord {
        id: id.into(),
        service: service.into(),
        version: 2,
        handle: serde_json::json!({"kind": "process", "pid": 4242, "start_ticks": 99}),
        addr: "127.0.0.1:4000".parse().unwrap(),
        protected: true,
        started_ms: 1_700_000_000_000,
        token: "0123abcd".into(),
        pooled: false,
    }
}

fn event(seq: u64) -> Event {
    Event {
        seq,
        time: "2026-11-25T00:00:00.000Z".into(),
        service: "web".into(),
        replica: None,
        kind: EventKind::Scaled,
        from: Some(2),
        to: Some(3),
        reason: format!("event {seq}"),
    }
}

fn point(time_ms: u64, desired: u32, p99: f64) -> ServicePoint {
    ServicePoint {
        time_ms,
        desired,
        in_service: desired,
        pending: 0,
        requests_per_s: 100.0,
        in_flight: 3,
        p50_ms: Some(1.0),
        p99_ms: Some(p99),
        cpu_mean: Some(50.0),
        replica_cpu: vec![("web-1".into(), 50.0)],
        traffic: None,
        shadow_desired: None,
    }
}

#[tokio::test]
async fn what_is_synced_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let recent = crate::clock::unix_ms(std::time::SystemTime::now()) - 5_000;
    {
        let (store, restored) = StateStore::open(dir.path(), 100).unwrap();
        assert!(restored.services.is_empty() && restored.replicas.is_empty() && restored.events.is_empty());
        store.save_service(service("web", 3));
        store.save_replica(replica("web-a", "web"));
        store.save_replica(replica("web-b", "web"));
        store.forget_replica("web-b");
        store.record_event(&event(1));
        store.record_point("web", &point(recent, 3, 9.0));
        store.close().await;
    }
    let (_store, restored) = StateStore::open(dir.path(), 100).unwrap();
    assert_eq!(restored.services["web"], service("web", 3));
    assert_eq!(restored.replicas["web"], vec![replica("web-a", "web")]);
    assert_eq!(restored.events, vec![event(1)]);
    assert_eq!(restored.history["web"], vec![point(recent, 3, 9.0)]);
}

#[tokio::test]
async fn the_event_log_keeps_only_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = StateStore::open(dir.path(), 3).unwrap();
        for seq in 1..=10 {
            store.record_event(&event(seq));
        }
        store.close().await;
    }
    let (_store, restored) = StateStore::open(dir.path(), 3).unwrap();
    let kept: Vec<u64> = restored.events.iter().map(|e| e.seq).collect();
    assert_eq!(kept, vec![8, 9, 10]);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATE_FILE);
    let garbage = b"this is not sqlite, but someone's notes\n".repeat(200);
    std::fs::write(&path, &garbage).unwrap();
    let message = StateStore::open(dir.path(), 10).unwrap_err().to_string();
    assert!(message.contains("unreadable") && message.contains("will not overwrite"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(std::fs::read(&path).unwrap() == garbage, "the file must be untouched");
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATE_FILE);
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    let message = StateStore::open(dir.path(), 10).unwrap_err().to_string();
    assert!(message.contains("not one of ebb's"), "{message}");
    let left: String = Connection::open(&path).unwrap().query_row("SELECT text FROM notes", [], |r| r.get(0)).unwrap();
    assert_eq!(left, "mine");
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = StateStore::open(dir.path(), 10).unwrap();
        store.save_service(service("web", 4));
        store.close().await;
    }
    let path = dir.path().join(STATE_FILE);
    Connection::open(&path).unwrap().execute_batch(&format!("PRAGMA user_version = {};", SCHEMA_VERSION + 1)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let message = StateStore::open(dir.path(), 10).unwrap_err().to_string();
    assert!(
        message.contains("newer ebb") && message.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{message}"
    );
    assert!(std::fs::read(&path).unwrap() == before, "the file must be untouched");
}

#[tokio::test]
async fn history_older_than_a_day_is_folded_into_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let now = crate::clock::unix_ms(std::time::SystemTime::now());
    let old_minute = (now - SECOND_RETENTION_MS - 10 * 60_000) / 60_000 * 60_000;
    {
        let (store, _) = StateStore::open(dir.path(), 10).unwrap();
        store.record_point("web", &point(old_minute + 1_000, 2, 10.0));
        store.record_point("web", &point(old_minute + 2_000, 4, 30.0));
        store.record_point("web", &point(now - 1_000, 3, 5.0));
        store.close().await;
    }
    // Folding runs in the writer; run it directly here.
    let mut conn = Connection::open(dir.path().join(STATE_FILE)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    fold_history(&mut conn, now).unwrap();
    drop(conn);
    let (_store, restored) = StateStore::open(dir.path(), 10).unwrap();
    assert_eq!(restored.history["web"].len(), 1, "only the last day stays per second");
    let minutes = _store.minute_history("web", 0).await.unwrap();
    assert_eq!(minutes, read_minute_history_closed(dir.path(), _store).await);
    assert_eq!(minutes.len(), 1);
    assert_eq!(minutes[0].time_ms, old_minute);
    assert_eq!(minutes[0].desired, 4, "the minute keeps its highest capacity");
    assert_eq!(minutes[0].p99_ms, Some(30.0), "and its worst p99");
}

/// Once the store is closed, the file reads the same from outside.
async fn read_minute_history_closed(dir: &std::path::Path, store: StateStore) -> Vec<ServicePoint> {
    store.close().await;
    read_minute_history(dir, "web", 0).unwrap()
}

/// A lost write is never answered as saved: not by the sync that follows
/// it, and not by any later one (the lost record is not written again).
#[tokio::test]
async fn once_a_write_is_lost_every_later_sync_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = StateStore::open(dir.path(), 100).unwrap();
    store.save_replica(replica("web-1", "web"));
    store.sync().await.expect("a healthy store saves");
    // Break the file under the writer: every replica write fails from now.
    store.exec("DROP TABLE replicas");
    store.save_replica(replica("web-2", "web"));
    let lost = store.sync().await.expect_err("the write was lost");
    assert!(lost.contains("replicas"), "{lost}");
    // A later write that works does not make the lost one saved.
    store.record_event(&event(1));
    assert_eq!(store.sync().await, Err(lost));
    store.close().await;
}

/// Two ebbs on one state directory would adopt and stop each other's
/// replicas: the second is refused, with the first one's pid, until the
/// first is gone.
#[tokio::test]
async fn a_second_ebb_on_the_same_state_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = StateStore::open(dir.path(), 100).unwrap();
    let refused = StateStore::open(dir.path(), 100).expect_err("the directory is taken");
    let message = refused.to_string();
    assert!(matches!(refused, StateError::Locked { .. }), "{message}");
    assert!(message.contains(&format!("pid {}", std::process::id())) && message.contains("state_dir"), "{message}");
    store.close().await;
    let (again, _) = StateStore::open(dir.path(), 100).expect("free once the first is closed");
    again.close().await;
}

/// An event or metric point ebb cannot read does not keep it from starting:
/// it is skipped, and everything else comes back.
#[tokio::test]
async fn an_unreadable_event_or_point_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = StateStore::open(dir.path(), 100).unwrap();
    store.save_replica(replica("web-1", "web"));
    store.record_event(&event(1));
    store.sync().await.unwrap();
    store.close().await;
    let other = Connection::open(dir.path().join(STATE_FILE)).unwrap();
    other
        .execute_batch(
            "INSERT INTO events (seq, event) VALUES (2, '{\"not\": \"an event\"}');
         INSERT INTO history_second (service, time_ms, point) VALUES ('web', 1, '{\"requests_per_s\": null}');",
        )
        .unwrap();
    drop(other);
    let (store, restored) = StateStore::open(dir.path(), 100).expect("opens despite the bad rows");
    assert_eq!(restored.events.len(), 1);
    assert_eq!(restored.replicas["web"].len(), 1);
    store.close().await;
}

/// The WAL index lives in memory, never in a memory-mapped `state.db-shm`:
/// a shared-memory file that cannot be made (here a directory stands in
/// its place, which stops root too) neither keeps the store from opening
/// nor from writing, and none is created.
#[tokio::test]
async fn the_store_needs_no_shared_memory_file() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join(format!("{STATE_FILE}-shm"));
    std::fs::create_dir(&shm).unwrap();
    let (store, _) = StateStore::open(dir.path(), 100).expect("opens without a -shm file");
    store.save_service(service("web", 3));
    store.record_event(&event(1));
    store.sync().await.expect("writes without a -shm file");
    store.close().await;
    assert!(shm.is_dir(), "left as it was");
    std::fs::remove_dir(&shm).unwrap();
    let (store, restored) = StateStore::open(dir.path(), 100).unwrap();
    assert_eq!(restored.services["web"], service("web", 3));
    store.save_service(service("web", 4));
    store.sync().await.unwrap();
    assert!(!shm.exists(), "no memory-mapped WAL index is ever created");
    store.close().await;
}

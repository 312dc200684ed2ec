//! The state store: what must survive ebb's own death.
//!
//! One SQLite file, `<state_dir>/state.db` (WAL in exclusive locking mode,
//! so no memory-mapped `-shm` file; `synchronous = FULL`), holds
//! per service the desired capacity and the specs of its versions; per
//! replica how to recognise it after a restart (driver handle, address,
//! version, protection); the event log (bounded); and the metric history
//! (per second for 24 h, per minute for 30 days beyond).
//!
//! Reads happen once, in [`StateStore::open`], before anything starts.
//! Writes go to one writer thread in order and are committed in batches;
//! [`StateStore::sync`] resolves once everything queued before it is on disk,
//! which is what the admin API awaits before it answers 2xx.
//!
//! The file is never overwritten when it cannot be understood: a file that
//! is not an ebb state database, or one written by a newer ebb (schema
//! version above [`SCHEMA_VERSION`]), is refused with what to do.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::events::{Event, EventStore};
use crate::metrics::history::{PointTraffic, ServicePoint};

/// The schema this ebb writes and the newest it reads.
pub const SCHEMA_VERSION: i64 = 1;
/// SQLite `application_id` marking the file as ebb's ("ebb1").
const APPLICATION_ID: i64 = 0x6562_6231;
/// The file's name inside the state directory.
pub const STATE_FILE: &str = "state.db";
/// Per-second history older than this is folded into per-minute rows.
const SECOND_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// Per-minute history older than this is deleted.
const MINUTE_RETENTION_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// Largest number of queued writes committed in one transaction.
const BATCH: usize = 512;

/// Why the state store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "the state file {path} is unreadable ({cause}); ebb will not overwrite it. \
         Restore it from a backup, or move it away to start with a fresh state \
         (ebb then forgets desired capacity, versions and running replicas)"
    )]
    Unreadable { path: PathBuf, cause: String },
    #[error(
        "the state file {path} was written by a newer ebb (schema version {found}; this ebb reads up to {SCHEMA_VERSION}); \
         ebb will not touch it. Run the newer ebb, or move the file away to start with a fresh state"
    )]
    Newer { path: PathBuf, found: i64 },
    #[error("the state file {path} could not be written: {cause}")]
    Write { path: PathBuf, cause: String },
    #[error(
        "another ebb ({holder}) is running with the state directory {dir}; two would adopt and stop each other's replicas. \
         Stop it (`ebb status`, `ebb down`), or give this config its own state_dir"
    )]
    Locked { dir: PathBuf, holder: String },
}

/// What a service needs to come back as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    /// Desired capacity as last set by a user or a policy.
    pub desired: u32,
    /// The version new replicas run.
    pub version: u64,
    /// `replicas.desired` in the config when `desired` was stored: a config
    /// edited since then wins over the stored value.
    pub config_desired: u32,
    /// The spec of each version still needed (current and previous), as
    /// the controller serialises it.
    pub specs: BTreeMap<u64, serde_json::Value>,
    /// The config's own spec when stored, to notice an edited config.
    pub config_spec: serde_json::Value,
    /// The last finished deploy, for `ebb status`.
    #[serde(default)]
    pub last_deploy: Option<serde_json::Value>,
}

impl ServiceRecord {
    /// Whether a restarted ebb resumes the stored `desired`: only when
    /// ebb.toml's `replicas.desired` is still what it was when stored (an
    /// edited file wins). `ebb up --fresh` starts from the file regardless.
    pub fn resumes_desired(&self, config_desired: u32) -> bool {
        self.config_desired == config_desired
    }
}

/// One replica as a restarted ebb needs to recognise it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    pub id: String,
    pub service: String,
    pub version: u64,
    /// The driver's `ReplicaHandle` (pid + start time, container id), as JSON.
    pub handle: serde_json::Value,
    pub addr: std::net::SocketAddr,
    pub protected: bool,
    /// Unix milliseconds when it was started.
    pub started_ms: u64,
    /// Its own token (`EBB_REPLICA_TOKEN`), so it can still protect itself
    /// after ebb restarts. The file is mode 0600 for this reason.
    #[serde(default)]
    pub token: String,
    /// A warm pool member: adopted back into the pool, not the fleet.
    #[serde(default)]
    pub pooled: bool,
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Restored {
    pub services: HashMap<String, ServiceRecord>,
    /// Replica records by service.
    pub replicas: HashMap<String, Vec<ReplicaRecord>>,
    /// The newest events, oldest first.
    pub events: Vec<Event>,
    /// Per-second points of the last 24 h by service, oldest first.
    pub history: HashMap<String, Vec<ServicePoint>>,
}

enum Op {
    Service(Box<ServiceRecord>),
    Replica(Box<ReplicaRecord>),
    ForgetReplica(String),
    /// A service removed by `ebb apply`: its record and replica records
    /// (its metric history stays, for a service put back).
    ForgetService(String),
    Event(Box<Event>),
    Point(String, Box<ServicePoint>),
    Sync(tokio::sync::oneshot::Sender<Result<(), String>>),
    /// Reads a service's per-minute history after `since_ms`: the writer's
    /// connection is the only one while ebb runs (it holds the file's lock).
    MinuteHistory(String, u64, tokio::sync::oneshot::Sender<Result<Vec<ServicePoint>, StateError>>),
    /// Runs SQL on the writer's connection (tests break the file with it).
    #[cfg(test)]
    Exec(String),
    /// Commit, close the file (checkpointing the WAL), then answer.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// A handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    ops: mpsc::Sender<Op>,
    path: PathBuf,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").field("path", &self.path).finish()
    }
}

impl EventStore for StateStore {
    fn record_event(&self, event: &Event) {
        StateStore::record_event(self, event);
    }
}

impl StateStore {
    /// Opens (or creates) `<state_dir>/state.db`, reads what it holds, and
    /// starts the writer thread. `keep_events` bounds the stored event log.
    pub fn open(state_dir: &Path, keep_events: usize) -> Result<(StateStore, Restored), StateError> {
        let path = state_dir.join(STATE_FILE);
        let lock = lock_state_dir(state_dir)?;
        let mut conn = open_checked(&path)?;
        // What is older than 24 h is folded into minutes first, so memory
        // gets only the last day, one point a second.
        if let Err(error) = fold_history(&mut conn, crate::clock::unix_ms(std::time::SystemTime::now())) {
            tracing::warn!(path = %path.display(), %error, "Could not fold old metric history.");
        }
        let restored = read_all(&conn).map_err(|e| unreadable(&path, e))?;
        let (ops, rx) = mpsc::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("ebb-state".into())
            .spawn(move || write_loop(conn, lock, rx, thread_path, keep_events.max(1) as i64))
            .map_err(|e| StateError::Write { path: path.clone(), cause: e.to_string() })?;
        Ok((StateStore { ops, path }, restored))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn save_service(&self, record: ServiceRecord) {
        self.send(Op::Service(Box::new(record)));
    }

    pub fn save_replica(&self, record: ReplicaRecord) {
        self.send(Op::Replica(Box::new(record)));
    }

    pub fn forget_replica(&self, id: &str) {
        self.send(Op::ForgetReplica(id.to_string()));
    }

    /// Forgets a removed service once its replicas are gone: a restart
    /// neither restores its desired count nor looks for its replicas.
    pub fn forget_service(&self, name: &str) {
        self.send(Op::ForgetService(name.to_string()));
    }

    pub fn record_event(&self, event: &Event) {
        self.send(Op::Event(Box::new(event.clone())));
    }

    pub fn record_point(&self, service: &str, point: &ServicePoint) {
        self.send(Op::Point(service.to_string(), Box::new(point.clone())));
    }

    /// Resolves once every write queued before this call is committed, or
    /// with why it could not be.
    pub async fn sync(&self) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Sync(tx));
        rx.await.unwrap_or_else(|_| Err("the state writer has stopped".into()))
    }

    /// A service's per-minute history after `since_ms` (beyond the last
    /// 24 h), oldest first, read by the writer after what is queued.
    pub async fn minute_history(&self, service: &str, since_ms: u64) -> Result<Vec<ServicePoint>, StateError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::MinuteHistory(service.to_string(), since_ms, tx));
        rx.await.unwrap_or_else(|_| {
            Err(StateError::Write { path: self.path.clone(), cause: "the state writer has stopped".into() })
        })
    }

    #[cfg(test)]
    fn exec(&self, sql: &str) {
        self.send(Op::Exec(sql.to_string()));
    }

    /// Commits what is queued and closes the file; later writes through
    /// any handle are dropped. Resolves once the file is closed.
    pub async fn close(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Close(tx));
        let _ = rx.await;
    }

    fn send(&self, op: Op) {
        // The writer only stops when every handle is gone.
        let _ = self.ops.send(op);
    }
}

/// The lock file an ebb holds for as long as its state writer runs.
pub const LOCK_FILE: &str = "state.lock";

/// Whether an ebb (this or another process) holds `<state_dir>`'s lock
/// right now: what `ebb down` waits on, since the lock goes only when that
/// ebb has closed its state file and is exiting (or has died).
pub fn state_dir_in_use(state_dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(state_dir.join(LOCK_FILE)) else { return false };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Takes `<state_dir>/state.lock` (flock, exclusive, non-blocking) and
/// writes this pid in it, for the message another ebb gets.
fn lock_state_dir(state_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, StateError> {
    use std::io::{Seek, Write};
    let path = state_dir.join(LOCK_FILE);
    let write_error = |e: &dyn std::fmt::Display| StateError::Write { path: path.clone(), cause: e.to_string() };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| write_error(&e))?;
    // A lock whose holder is dead a moment ago can still be held briefly:
    // by a replica that the dead ebb had forked and that has not reached
    // its exec yet (it shares the descriptor until then; joining its
    // control group takes milliseconds). Such a holder lets go on its own.
    let mut file = file;
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    let locked = loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                let holder_alive = read_holder(&back).is_some_and(|pid| nix::sys::signal::kill(pid, None).is_ok());
                if holder_alive {
                    break Err((back, nix::errno::Errno::EWOULDBLOCK));
                }
                file = back;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other,
        }
    };
    match locked {
        Ok(mut lock) => {
            let pid = std::process::id().to_string();
            let written = lock.set_len(0).and_then(|()| lock.rewind()).and_then(|()| lock.write_all(pid.as_bytes()));
            written.map_err(|e| write_error(&e))?;
            Ok(lock)
        }
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = match read_holder(&file) {
                None => "pid unknown".to_string(),
                Some(pid) => format!("pid {pid}"),
            };
            Err(StateError::Locked { dir: state_dir.to_path_buf(), holder })
        }
        Err((_, errno)) => Err(write_error(&errno)),
    }
}

/// How long a lock left by a dead ebb may stay held (see `lock_state_dir`).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// The pid written in the lock file by its holder.
fn read_holder(file: &std::fs::File) -> Option<nix::unistd::Pid> {
    use std::io::{Read, Seek};
    let mut file = file;
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok().map(nix::unistd::Pid::from_raw)
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError::Unreadable { path: path.to_path_buf(), cause: e.to_string() }
}

/// Opens the file, refusing anything that is not an ebb state file of a
/// schema this ebb understands, then creates or upgrades the schema.
fn open_checked(path: &Path) -> Result<Connection, StateError> {
    let existed = path.exists();
    if !existed {
        // Created private: it holds the replicas' own tokens.
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StateError::Write { path: path.to_path_buf(), cause: e.to_string() })?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| unreadable(path, e))?;
    // Before the first access: in exclusive locking mode SQLite keeps the
    // WAL index in heap memory instead of a memory-mapped `state.db-shm`.
    // A shared-memory file that cannot be written (a full disk, a file made
    // read-only or immutable) then fails a write with an error, which the
    // store reports (503 "could not be saved"), instead of killing ebb
    // with SIGBUS. ebb already owns the directory (`state.lock`), so no
    // other process needs to share the file while it runs.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(|e| unreadable(path, e))?;
    // A writer of an earlier run may still be closing the file.
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| unreadable(path, e))?;
    // Reading the header pragmas is the first access: garbage fails here,
    // before anything is written.
    let read_header = |conn: &Connection| -> rusqlite::Result<(i64, i64, i64)> {
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        Ok((app, version, tables))
    };
    let (app, version, tables) = read_header(&conn).map_err(|e| unreadable(path, e))?;
    if existed && tables > 0 && app != APPLICATION_ID {
        return Err(unreadable(path, "it is an SQLite database, but not one of ebb's"));
    }
    if version > SCHEMA_VERSION {
        return Err(StateError::Newer { path: path.to_path_buf(), found: version });
    }
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;",
    )
    .map_err(|e| unreadable(path, e))?;
    if version < SCHEMA_VERSION {
        create_schema(&conn).map_err(|e| StateError::Write { path: path.to_path_buf(), cause: e.to_string() })?;
    }
    Ok(conn)
}

fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS services (name TEXT PRIMARY KEY, record TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS replicas (id TEXT PRIMARY KEY, service TEXT NOT NULL, record TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS history_second (
             service TEXT NOT NULL, time_ms INTEGER NOT NULL, point TEXT NOT NULL,
             PRIMARY KEY (service, time_ms));
         CREATE TABLE IF NOT EXISTS history_minute (
             service TEXT NOT NULL, minute_ms INTEGER NOT NULL, point TEXT NOT NULL,
             PRIMARY KEY (service, minute_ms));
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    ))
}

fn read_all(conn: &Connection) -> Result<Restored, String> {
    fn json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, String> {
        serde_json::from_str(text).map_err(|e| format!("a stored {what} is malformed: {e}"))
    }
    let query = |sql: &str| -> Result<Vec<(String, String)>, String> {
        let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
    };
    let mut restored = Restored::default();
    for (name, text) in query("SELECT name, record FROM services")? {
        restored.services.insert(name, json("service", &text)?);
    }
    for (service, text) in query("SELECT service, record FROM replicas ORDER BY id")? {
        restored.replicas.entry(service).or_default().push(json("replica", &text)?);
    }
    // The story and the graphs are not needed to run: a row ebb cannot
    // read is skipped (and counted in the log), never a reason to refuse.
    let mut skipped = 0usize;
    for (_, text) in query("SELECT '', event FROM events ORDER BY seq")? {
        match json("event", &text) {
            Ok(event) => restored.events.push(event),
            Err(_) => skipped += 1,
        }
    }
    for (service, text) in query("SELECT service, point FROM history_second ORDER BY service, time_ms")? {
        match json("metric point", &text) {
            Ok(point) => restored.history.entry(service).or_default().push(point),
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(skipped, "Skipped stored events or metric points ebb cannot read.");
    }
    Ok(restored)
}

/// A failed batch is tried again after these pauses before the store
/// gives up (a busy or briefly full disk).
const RETRY_PAUSES: [std::time::Duration; 2] =
    [std::time::Duration::from_millis(100), std::time::Duration::from_secs(1)];

/// The writer thread. It holds the state directory's lock for as long as it
/// runs; the kernel drops it when ebb dies, however it dies (the file is
/// close-on-exec, so replicas do not inherit it).
fn write_loop(
    mut conn: Connection,
    lock: nix::fcntl::Flock<std::fs::File>,
    rx: mpsc::Receiver<Op>,
    path: PathBuf,
    keep_events: i64,
) {
    let mut last_prune_ms = 0u64;
    let mut closing = None;
    // Once a batch is lost, every later sync says so: what was lost may be
    // what a later caller's answer depends on (its write can have gone in
    // the lost batch while its sync comes in the next), and the controller
    // does not write unchanged records again.
    let mut broken: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut waiting = Vec::new();
        let mut reads = Vec::new();
        let mut writes = Vec::with_capacity(batch.len());
        for op in batch {
            match op {
                Op::Sync(reply) => waiting.push(reply),
                Op::MinuteHistory(service, since_ms, reply) => reads.push((service, since_ms, reply)),
                #[cfg(test)]
                Op::Exec(sql) => {
                    if let Err(error) = conn.execute_batch(&sql) {
                        tracing::warn!(%error, "Test SQL failed.");
                    }
                }
                // Ops queued after a close are dropped with the channel.
                Op::Close(reply) => {
                    closing = Some(reply);
                    break;
                }
                write => writes.push(write),
            }
        }
        let mut result = apply(&mut conn, &writes, keep_events);
        for pause in RETRY_PAUSES {
            if result.is_ok() {
                break;
            }
            std::thread::sleep(pause);
            result = apply(&mut conn, &writes, keep_events);
        }
        if let Err(error) = result {
            tracing::error!(
                path = %path.display(), %error,
                "Could not write the state file: changes from now on are not saved and every change the admin API is asked for answers 503. Fix the cause (disk full? permissions?) and restart ebb."
            );
            broken.get_or_insert(error.to_string());
        }
        let answer = match &broken {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        };
        for tx in waiting {
            let _ = tx.send(answer.clone());
        }
        for (service, since_ms, tx) in reads {
            let _ = tx.send(query_points(&conn, &path, "history_minute", "minute_ms", &service, since_ms));
        }
        if closing.is_some() {
            break;
        }
        // Fold and prune history once a minute.
        let now = crate::clock::unix_ms(std::time::SystemTime::now());
        if now.saturating_sub(last_prune_ms) >= 60_000 {
            last_prune_ms = now;
            if let Err(error) = fold_history(&mut conn, now) {
                tracing::warn!(path = %path.display(), %error, "Could not fold old metric history.");
            }
        }
    }
    drop(conn);
    // Released before a close is answered: whoever waited may open it next.
    drop(lock);
    if let Some(tx) = closing {
        let _ = tx.send(());
    }
}

/// Writes one batch in one transaction: all of it or none.
fn apply(conn: &mut Connection, writes: &[Op], keep_events: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut wrote_events = false;
    for op in writes {
        match op {
            Op::Service(record) => {
                tx.execute(
                    "INSERT OR REPLACE INTO services (name, record) VALUES (?1, ?2)",
                    params![record.name, to_json(&**record)],
                )?;
            }
            Op::Replica(record) => {
                tx.execute(
                    "INSERT OR REPLACE INTO replicas (id, service, record) VALUES (?1, ?2, ?3)",
                    params![record.id, record.service, to_json(&**record)],
                )?;
            }
            Op::ForgetReplica(id) => {
                tx.execute("DELETE FROM replicas WHERE id = ?1", params![id])?;
            }
            Op::ForgetService(name) => {
                tx.execute("DELETE FROM services WHERE name = ?1", params![name])?;
                tx.execute("DELETE FROM replicas WHERE service = ?1", params![name])?;
            }
            Op::Event(event) => {
                tx.execute(
                    "INSERT OR REPLACE INTO events (seq, event) VALUES (?1, ?2)",
                    params![event.seq as i64, to_json(&**event)],
                )?;
                wrote_events = true;
            }
            Op::Point(service, point) => {
                tx.execute(
                    "INSERT OR REPLACE INTO history_second (service, time_ms, point) VALUES (?1, ?2, ?3)",
                    params![service, point.time_ms as i64, to_json(&**point)],
                )?;
            }
            Op::Sync(_) | Op::Close(_) | Op::MinuteHistory(..) => {}
            #[cfg(test)]
            Op::Exec(_) => {}
        }
    }
    if wrote_events {
        tx.execute("DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events) - ?1", params![keep_events])?;
    }
    tx.commit()
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("state records serialise")
}

/// Folds per-second points older than 24 h into one point per minute
/// (means of the numbers, max of the counts), and drops minutes older than
/// 30 days.
fn fold_history(conn: &mut Connection, now_ms: u64) -> rusqlite::Result<()> {
    // Whole minutes only: a minute folded in two parts would average its
    // first part's mean in as one sample.
    let cutoff = (now_ms.saturating_sub(SECOND_RETENTION_MS) / 60_000 * 60_000) as i64;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let old: Vec<(String, String)> = {
        let mut stmt =
            tx.prepare("SELECT service, point FROM history_second WHERE time_ms < ?1 ORDER BY service, time_ms")?;
        let rows = stmt.query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut minutes: BTreeMap<(String, u64), Vec<ServicePoint>> = BTreeMap::new();
    for (service, text) in old {
        if let Ok(point) = serde_json::from_str::<ServicePoint>(&text) {
            minutes.entry((service, point.time_ms / 60_000 * 60_000)).or_default().push(point);
        }
    }
    for ((service, minute_ms), points) in minutes {
        let existing: Option<String> = tx
            .query_row(
                "SELECT point FROM history_minute WHERE service = ?1 AND minute_ms = ?2",
                params![service, minute_ms as i64],
                |r| r.get(0),
            )
            .optional()?;
        let mut all = points;
        if let Some(point) = existing.and_then(|t| serde_json::from_str::<ServicePoint>(&t).ok()) {
            all.push(point);
        }
        let folded = fold_points(minute_ms, &all);
        tx.execute(
            "INSERT OR REPLACE INTO history_minute (service, minute_ms, point) VALUES (?1, ?2, ?3)",
            params![service, minute_ms as i64, to_json(&folded)],
        )?;
    }
    tx.execute("DELETE FROM history_second WHERE time_ms < ?1", params![cutoff])?;
    tx.execute(
        "DELETE FROM history_minute WHERE minute_ms < ?1",
        params![now_ms.saturating_sub(MINUTE_RETENTION_MS) as i64],
    )?;
    tx.commit()
}

/// One point standing for several: means of rates, latencies and CPU; the
/// highest replica counts (what capacity the minute needed).
fn fold_points(minute_ms: u64, points: &[ServicePoint]) -> ServicePoint {
    let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
    let n = points.len().max(1) as f64;
    ServicePoint {
        time_ms: minute_ms,
        desired: points.iter().map(|p| p.desired).max().unwrap_or(0),
        in_service: points.iter().map(|p| p.in_service).max().unwrap_or(0),
        pending: points.iter().map(|p| p.pending).max().unwrap_or(0),
        requests_per_s: points.iter().map(|p| p.requests_per_s).sum::<f64>() / n,
        in_flight: points.iter().map(|p| p.in_flight).max().unwrap_or(0),
        p50_ms: mean(points.iter().filter_map(|p| p.p50_ms).collect()),
        p99_ms: points.iter().filter_map(|p| p.p99_ms).reduce(f64::max),
        cpu_mean: mean(points.iter().filter_map(|p| p.cpu_mean).collect()),
        replica_cpu: Vec::new(),
        traffic: fold_traffic(points),
        shadow_desired: points.iter().filter_map(|p| p.shadow_desired).max(),
    }
}

/// Traffic over a minute: mean rates, the longest queue, saturated or host
/// full if any second was.
fn fold_traffic(points: &[ServicePoint]) -> Option<PointTraffic> {
    let seconds: Vec<&PointTraffic> = points.iter().filter_map(|p| p.traffic.as_ref()).collect();
    let n = seconds.len();
    (n > 0).then(|| PointTraffic {
        offered_per_s: seconds.iter().map(|t| t.offered_per_s).sum::<f64>() / n as f64,
        queued: seconds.iter().map(|t| t.queued).max().unwrap_or(0),
        shed_per_s: (seconds.iter().map(|t| u64::from(t.shed_per_s)).sum::<u64>() / n as u64) as u32,
        queue_ms: seconds.iter().filter_map(|t| t.queue_ms).reduce(f64::max),
        saturated: seconds.iter().any(|t| t.saturated),
        host_full: seconds.iter().any(|t| t.host_full),
    })
}

/// `ebb down --forget`: removes what the state file keeps about the fleet
/// (service records: desired capacity and versions; replica records), so
/// that the next `ebb up` starts from the file. Events and metric history
/// stay (what happened, not what to resume); certificates, the ACME
/// account and the admin token are separate files and stay too. Takes the
/// state directory's lock: refused while an ebb runs there. Returns how
/// many service and replica records were removed.
pub fn forget_fleet(state_dir: &Path) -> Result<(usize, usize), StateError> {
    let path = state_dir.join(STATE_FILE);
    if !path.exists() {
        return Ok((0, 0));
    }
    let _lock = lock_state_dir(state_dir)?;
    let conn = open_checked(&path)?;
    let write = |e: rusqlite::Error| StateError::Write { path: path.clone(), cause: e.to_string() };
    let services = conn.execute("DELETE FROM services", []).map_err(write)?;
    let replicas = conn.execute("DELETE FROM replicas", []).map_err(write)?;
    Ok((services, replicas))
}

/// How many replica records the state file holds (replicas the last run
/// left running, or that died since): `None` when there is no file or it
/// cannot be read.
pub fn replica_records(state_dir: &Path) -> Option<usize> {
    let path = state_dir.join(STATE_FILE);
    if !path.exists() {
        return None;
    }
    let conn = open_read_only(&path).ok()?;
    conn.query_row("SELECT count(*) FROM replicas", [], |r| r.get::<_, i64>(0)).ok().map(|n| n as usize)
}

/// Reads a service's recorded history since `since_ms` straight from the
/// state file (no running ebb needed): one point a minute beyond the last
/// 24 h, one a second within it, oldest first. `Ok(None)` when there is no
/// state file.
pub fn read_history(state_dir: &Path, service: &str, since_ms: u64) -> Result<Option<Vec<ServicePoint>>, StateError> {
    let path = state_dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let conn = open_read_only(&path)?;
    let mut points = query_points(&conn, &path, "history_minute", "minute_ms", service, since_ms)?;
    let first_second = points.len();
    points.extend(query_points(&conn, &path, "history_second", "time_ms", service, since_ms)?);
    // A minute not yet folded overlaps the seconds: keep the seconds.
    if let Some(first) = points.get(first_second).map(|p| p.time_ms) {
        points.retain(|p| p.time_ms >= first || p.time_ms + 60_000 <= first);
    }
    Ok(Some(points))
}

/// Reads the per-minute history of a service (beyond the last 24 h) from
/// the file of an ebb that is not running ([`StateStore::minute_history`]
/// while it runs: it holds the file exclusively).
pub fn read_minute_history(state_dir: &Path, service: &str, since_ms: u64) -> Result<Vec<ServicePoint>, StateError> {
    let path = state_dir.join(STATE_FILE);
    query_points(&open_read_only(&path)?, &path, "history_minute", "minute_ms", service, since_ms)
}

fn open_read_only(path: &Path) -> Result<Connection, StateError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| unreadable(path, e))?;
    // The running ebb may be writing.
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| unreadable(path, e))?;
    Ok(conn)
}

/// A service's points from one history table after `since_ms`, oldest
/// first. `table` and `time_column` are this module's own names.
fn query_points(
    conn: &Connection,
    path: &Path,
    table: &str,
    time_column: &str,
    service: &str,
    since_ms: u64,
) -> Result<Vec<ServicePoint>, StateError> {
    let sql = format!("SELECT point FROM {table} WHERE service = ?1 AND {time_column} > ?2 ORDER BY {time_column}");
    let mut stmt = conn.prepare(&sql).map_err(|e| unreadable(path, e))?;
    let rows = stmt
        .query_map(params![service, since_ms as i64], |r| r.get::<_, String>(0))
        .map_err(|e| unreadable(path, e))?;
    let mut out = Vec::new();
    for text in rows {
        let text = text.map_err(|e| unreadable(path, e))?;
        out.push(serde_json::from_str(&text).map_err(|e| unreadable(path, e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

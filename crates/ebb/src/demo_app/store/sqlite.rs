//! The SQLite backend of the candidates table: one file shared by every
//! replica of a service on one host (or mounting one host directory).
//!
//! The seed app kept its candidates in DynamoDB, outside the instances, so a
//! POST through one instance was visible through all of them and survived
//! scale-in. One SQLite file in WAL mode gives local replicas the same
//! property: several processes may read while one writes, and `busy_timeout`
//! turns the short write-lock contention between replicas into a wait instead
//! of an error.
//!
//! A connection is blocking, so every query runs on tokio's blocking pool;
//! the mutex serialises this replica's queries on its one connection (the
//! demo's load is CPU in `/work`, not the database).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rusqlite::{Connection, ErrorCode};

/// How long a query waits for another replica's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long start-up keeps retrying when several replicas create the
/// database at the same moment (switching to WAL needs an exclusive lock,
/// and SQLite does not always wait for that one).
const SETUP_DEADLINE: Duration = Duration::from_secs(15);

/// See [`super`] for the columns.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS candidates (
    name            TEXT PRIMARY KEY NOT NULL,
    posts           INTEGER NOT NULL DEFAULT 1,
    last_replica    TEXT NOT NULL,
    updated_unix_ms INTEGER NOT NULL
)";

/// A handle on the shared SQLite file; cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl Sqlite {
    /// Opens (creating if needed) the database at `path`. Blocking.
    pub fn open(path: &Path) -> anyhow::Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory of the candidates database {}", dir.display()))?;
        }
        let started = std::time::Instant::now();
        let conn = loop {
            match open_and_setup(path) {
                Ok(conn) => break conn,
                Err(e) if is_busy(&e) && started.elapsed() < SETUP_DEADLINE => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).with_context(|| format!("opening the candidates database {}", path.display())),
            }
        };
        Ok(Sqlite { conn: Arc::new(Mutex::new(conn)), path: Arc::new(path.to_owned()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `name`, or updates it if present; `replica` is who served it.
    pub async fn put(&self, name: String, replica: String) -> anyhow::Result<()> {
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO candidates (name, posts, last_replica, updated_unix_ms) VALUES (?1, 1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET posts = posts + 1,
                     last_replica = excluded.last_replica, updated_unix_ms = excluded.updated_unix_ms",
                rusqlite::params![name, replica, crate::clock::unix_ms(SystemTime::now()) as i64],
            )?;
            Ok(())
        })
        .await
    }

    /// The stored names equal to `name` (zero or one of them).
    pub async fn get(&self, name: String) -> anyhow::Result<Vec<String>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT name FROM candidates WHERE name = ?1")?;
            let names = stmt.query_map([name], |row| row.get(0))?.collect();
            names
        })
        .await
    }

    /// Every stored name, oldest first.
    pub async fn all(&self) -> anyhow::Result<Vec<String>> {
        self.run(|conn| {
            let mut stmt = conn.prepare_cached("SELECT name FROM candidates ORDER BY rowid")?;
            let names = stmt.query_map([], |row| row.get(0))?.collect();
            names
        })
        .await
    }

    /// Runs `query` on the blocking pool with this replica's connection.
    async fn run<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let conn = Arc::clone(&self.conn);
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            query(&conn).with_context(|| format!("querying the candidates database {}", path.display()))
        })
        .await?
    }
}

fn open_and_setup(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers with the mode in effect; WAL persists in the file,
    // so only the first replica actually switches it.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(message = "SQLite refused WAL mode; replicas will block each other more.", %mode);
    }
    // NORMAL is durable enough for a demo in WAL mode and avoids an fsync per POST.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

//! The candidates table, shared by every replica of a service.
//!
//! The seed app kept its candidates in DynamoDB, outside the instances, so a
//! POST through one instance was visible through all of them and survived
//! scale-in. Two backends give replicas the same property:
//!
//! - [`sqlite`]: one file, for replicas on one host (or containers mounting
//!   one host directory): the default;
//! - [`postgres`]: a PostgreSQL server, for replicas on several hosts (Swarm
//!   nodes), where no file can be shared safely.
//!
//! Both hold the same columns: `name` is the key, as in the seed's table
//! (POSTing a name again updates it instead of adding a duplicate); `posts`,
//! `last_replica` and `updated_unix_ms` are not part of the API, they help
//! whoever opens the database to see which replica wrote what.

mod postgres;
mod sqlite;

use std::path::Path;

/// A handle on the shared candidates database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

impl Store {
    /// Opens `db`: a `postgres://` (or `postgresql://`) URL is a PostgreSQL
    /// server, retried for a while if it does not answer yet; anything else
    /// is a SQLite file, created if needed. The table is created if missing.
    pub async fn open(db: &Path) -> anyhow::Result<Store> {
        let backend = match db.to_str().filter(|s| postgres::is_url(s)) {
            Some(url) => Backend::Postgres(postgres::Postgres::open(url).await?),
            None => {
                let path = db.to_owned();
                Backend::Sqlite(tokio::task::spawn_blocking(move || sqlite::Sqlite::open(&path)).await??)
            }
        };
        Ok(Store { backend })
    }

    /// The database, for logs: the SQLite path, or the PostgreSQL URL with
    /// its password replaced by `***`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(db) => db.path().display().to_string(),
            Backend::Postgres(db) => db.describe().to_string(),
        }
    }

    /// Adds `name`, or updates it if present; `replica` is who served it.
    pub async fn put(&self, name: String, replica: String) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite(db) => db.put(name, replica).await,
            Backend::Postgres(db) => db.put(name, replica).await,
        }
    }

    /// The stored names equal to `name` (zero or one of them).
    pub async fn get(&self, name: String) -> anyhow::Result<Vec<String>> {
        match &self.backend {
            Backend::Sqlite(db) => db.get(name).await,
            Backend::Postgres(db) => db.get(name).await,
        }
    }

    /// Every stored name, oldest first.
    pub async fn all(&self) -> anyhow::Result<Vec<String>> {
        match &self.backend {
            Backend::Sqlite(db) => db.all().await,
            Backend::Postgres(db) => db.all().await,
        }
    }
}

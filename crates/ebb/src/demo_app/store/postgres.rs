//! The PostgreSQL backend of the candidates table: replicas on several hosts
//! (Swarm nodes) share one database server they reach over the network.
//!
//! Plain TCP without TLS (`NoTls`): meant for a private network between the
//! replicas and the server (an overlay network, a bridge on one machine).
//! One connection per replica; tokio-postgres pipelines concurrent queries on
//! it. If it breaks (the server restarted), the next query reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// How long start-up keeps trying a server that does not answer yet (it may
/// be starting beside the replicas).
const START_DEADLINE: Duration = Duration::from_secs(30);

/// One connection attempt, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `seq` keeps the order of first insertion, which SQLite's rowid gives the
/// other backend ("oldest first"); an update keeps it. The SET keeps the
/// server's "already exists, skipping" notice out of every replica's log.
const SCHEMA: &str = "SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS candidates (
    seq             BIGSERIAL NOT NULL,
    name            TEXT PRIMARY KEY NOT NULL,
    posts           BIGINT NOT NULL DEFAULT 1,
    last_replica    TEXT NOT NULL,
    updated_unix_ms BIGINT NOT NULL
)";

/// Whether `db` names a PostgreSQL server rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `url` with the password (if any) replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // The last '@' ends the user info: a password may hold an '@' itself.
    let Some(at) = rest.rfind('@') else { return url.to_string() };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// A handle on the shared PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    config: Arc<Config>,
    client: Arc<tokio::sync::Mutex<Arc<Client>>>,
    shown: Arc<str>,
}

impl Postgres {
    /// Connects to `url` and creates the table if missing, retrying for
    /// [`START_DEADLINE`] while the server does not answer or another replica
    /// creates the table at the same moment.
    pub async fn open(url: &str) -> anyhow::Result<Postgres> {
        Postgres::open_within(url, START_DEADLINE).await
    }

    async fn open_within(url: &str, deadline: Duration) -> anyhow::Result<Postgres> {
        let shown: Arc<str> = redact(url).into();
        let mut config: Config = url
            .parse()
            .with_context(|| format!("{shown} is not a PostgreSQL URL (postgres://USER[:PASS]@HOST:PORT/DB)"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let started = Instant::now();
        let mut told = false;
        let client = loop {
            let error = match connect(&config, &shown).await {
                Ok(client) => match client.batch_execute(SCHEMA).await {
                    Ok(()) => break client,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !worth_retrying(&error) || started.elapsed() >= deadline {
                return Err(error).with_context(|| {
                    format!(
                        "opening the candidates database {shown} (tried for {:.0} s)",
                        started.elapsed().as_secs_f64()
                    )
                });
            }
            if !told {
                tracing::warn!(message = "Candidates database not ready; retrying.", db = %shown, error = %error);
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        Ok(Postgres { config: Arc::new(config), client: Arc::new(tokio::sync::Mutex::new(Arc::new(client))), shown })
    }

    pub fn describe(&self) -> &str {
        &self.shown
    }

    pub async fn put(&self, name: String, replica: String) -> anyhow::Result<()> {
        let now = crate::clock::unix_ms(SystemTime::now()) as i64;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO candidates (name, posts, last_replica, updated_unix_ms) VALUES ($1, 1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET posts = candidates.posts + 1,
                     last_replica = excluded.last_replica, updated_unix_ms = excluded.updated_unix_ms",
                &[&name, &replica, &now],
            )
            .await
            .with_context(|| self.querying())?;
        Ok(())
    }

    pub async fn get(&self, name: String) -> anyhow::Result<Vec<String>> {
        self.names("SELECT name FROM candidates WHERE name = $1", &[&name]).await
    }

    pub async fn all(&self) -> anyhow::Result<Vec<String>> {
        self.names("SELECT name FROM candidates ORDER BY seq", &[]).await
    }

    async fn names(
        &self,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> anyhow::Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client.query(query, params).await.with_context(|| self.querying())?;
        rows.iter().map(|row| row.try_get(0).with_context(|| self.querying())).collect()
    }

    /// The connection, opened again if it broke since the last query.
    async fn client(&self) -> anyhow::Result<Arc<Client>> {
        let mut client = self.client.lock().await;
        if client.is_closed() {
            let fresh = connect(&self.config, &self.shown)
                .await
                .with_context(|| format!("reconnecting to the candidates database {}", self.shown))?;
            *client = Arc::new(fresh);
        }
        Ok(Arc::clone(&client))
    }

    fn querying(&self) -> String {
        format!("querying the candidates database {}", self.shown)
    }
}

/// One connection; its I/O runs in its own task until it closes.
async fn connect(config: &Config, shown: &Arc<str>) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let shown = Arc::clone(shown);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(message = "Candidates database connection lost; the next query reconnects.", db = %shown, %error);
        }
    });
    Ok(client)
}

/// Worth another try at start-up: the server is unreachable or starting, or
/// another replica is creating the table right now (two `CREATE TABLE IF NOT
/// EXISTS` at once: one of them fails on the catalog's unique index). Not a
/// refused password, a missing database or a bad URL: those fail at once.
fn worth_retrying(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true,
        Some(code) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::UNIQUE_VIOLATION,
            SqlState::DUPLICATE_TABLE,
            SqlState::DUPLICATE_OBJECT,
            SqlState::T_R_DEADLOCK_DETECTED,
        ]
        .contains(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_sqlite_paths() {
        assert!(is_url("postgres://u@h:5432/d") && is_url("postgresql://u@h/d"));
        assert!(!is_url("/data/candidates.sqlite") && !is_url("postgres.sqlite"));
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("postgres://ebb:s3cret@db:5432/ebb"), "postgres://ebb:***@db:5432/ebb");
        assert_eq!(redact("postgres://ebb:p@ss@db:5432/ebb"), "postgres://ebb:***@db:5432/ebb");
        assert_eq!(redact("postgres://ebb@db:5432/ebb"), "postgres://ebb@db:5432/ebb");
        assert_eq!(redact("postgres://db:5432/ebb"), "postgres://db:5432/ebb");
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_naming_it_without_the_password() {
        // A port nothing listens on, refused at once; the deadline bounds it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://ebb:s3cret@127.0.0.1:{port}/ebb?connect_timeout=1");
        let started = Instant::now();
        let open = Postgres::open_within(&url, Duration::from_secs(2)).await;
        let error = format!("{:#}", open.err().expect("nothing listens"));
        assert!(started.elapsed() < Duration::from_secs(6), "retried for {:?}", started.elapsed());
        assert!(error.contains(&format!("postgres://ebb:***@127.0.0.1:{port}/ebb")), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[tokio::test]
    async fn a_bad_url_fails_at_once_without_the_password() {
        let error = format!("{:#}", Postgres::open("postgres://ebb:s3cret@db:notaport/ebb").await.err().unwrap());
        assert!(error.contains("postgres://ebb:***@db:notaport/ebb is not a PostgreSQL URL"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }
}

//! The database: a sqlx pool over SQLite (the embedded default) or
//! PostgreSQL (for several replicas), its embedded migrations, and the
//! queries the rest of the host runs.
//!
//! On SQLite, units of work run their statements on the calling thread
//! instead, on connections of their own (`local`).
//!
//! Nothing here knows about wasmtime or axum. Callers get plain Rust values
//! and [`DbError`]s; the SQL differences between the two back ends stay in
//! this module.

mod local;
mod unit_of_work;

pub mod audit;
pub mod deployments;
pub mod locks;
pub mod outbox;
pub mod replicas;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::clock::SharedClock;

pub use unit_of_work::UnitOfWork;

/// How long a SQLite connection waits for the file lock before giving up.
/// Writers are serialised by [`Database::write_gate`] first, so this only
/// matters when another process holds the file.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;
/// How long a caller waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors from the store that callers may branch on.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored value under {key:?} is not a counter")]
    NotACounter { key: String },
    #[error("counter under {key:?} would overflow")]
    Overflow { key: String },
    #[error("what this invocation read changed before its first write; it runs again")]
    Conflict,
}

/// Which SQL dialect the pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A cheap-to-clone handle on the pool.
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    /// On SQLite, the connections units of work drive themselves
    /// (`local`); `None` on PostgreSQL.
    local: Option<Arc<local::Connections>>,
    /// A private file standing in for an in-memory SQLite database, which
    /// the pool's connections and `local`'s could not share; removed with
    /// the last handle.
    _scratch: Option<Arc<tempfile::TempDir>>,
    /// SQLite allows one writer at a time. Invocations take this permit
    /// before `BEGIN IMMEDIATE`, so they queue in the host (fair, no busy
    /// polling) instead of racing for the file lock. `None` on PostgreSQL,
    /// where row locks do the serialising.
    write_gate: Option<Arc<Semaphore>>,
    /// Stamps rows; the dispatcher compares those stamps with the same clock.
    clock: SharedClock,
    /// Bumped whenever new outbox messages commit, so dispatchers wake at
    /// once instead of on their next poll.
    outbox_signal: Arc<watch::Sender<u64>>,
    /// Set when messages commit here, cleared once other replicas are told.
    outbox_committed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl Database {
    /// Connects (creating a SQLite file if needed) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32, clock: SharedClock) -> anyhow::Result<Database> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let scratch = match backend {
            Backend::Sqlite if url.contains(":memory:") || url.contains("mode=memory") => {
                Some(Arc::new(tempfile::tempdir().context("cannot create a file for an in-memory database")?))
            }
            _ => None,
        };
        let url = match &scratch {
            Some(dir) => format!("sqlite://{}", dir.path().join("memory.db").display()),
            None => url.to_owned(),
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url).context("invalid database url")?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer;
                        // NORMAL sync is durable across process crashes,
                        // which is what the outbox needs.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str()).await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to the database ({})", redact(&url)))?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator.run(&pool).await.context("database migration failed")?;
        let local = match backend {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(&url).context("invalid database url")?;
                let path = options.get_filename().to_owned();
                Some(local::Connections::open(path).with_context(|| format!("cannot open {}", redact(&url)))?)
            }
            Backend::Postgres => None,
        };
        let write_gate = (backend == Backend::Sqlite).then(|| Arc::new(Semaphore::new(1)));
        let (outbox_signal, _) = watch::channel(0);
        Ok(Database {
            pool,
            backend,
            local,
            _scratch: scratch,
            write_gate,
            clock,
            outbox_signal: Arc::new(outbox_signal),
            outbox_committed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Milliseconds since the Unix epoch by the host's clock, the unit
    /// every timestamp column uses.
    pub fn now_millis(&self) -> i64 {
        self.clock.now_millis()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts an invocation's unit of work. No connection is taken until the
    /// component first touches its state.
    pub fn unit_of_work(&self, component: Arc<str>, request_id: Arc<str>) -> UnitOfWork {
        UnitOfWork::new(self.clone(), component, request_id)
    }

    /// On SQLite, the right to write; `None` on PostgreSQL.
    pub(crate) async fn write_permit(&self) -> Result<Option<OwnedSemaphorePermit>, DbError> {
        match &self.write_gate {
            Some(gate) => Ok(Some(gate.clone().acquire_owned().await.map_err(|_| sqlx::Error::PoolClosed)?)),
            None => Ok(None),
        }
    }

    /// Begins a pooled transaction that a
    /// cancelled caller cannot leave open.
    ///
    /// sqlx 0.8's `begin` is not cancel-safe: dropped after the database ran
    /// the `BEGIN` but before the `Transaction` exists, it returns the
    /// connection to the pool still inside that transaction, and nothing
    /// ever rolls it back. On SQLite that connection then holds the write
    /// lock for good: every later writer fails with "database is locked" and
    /// the next `BEGIN IMMEDIATE` on it with "non-zero transaction depth"
    /// (seen in `loadtest hostile`: clients that left mid-request stopped
    /// all orders until the host restarted). PostgreSQL keeps the session
    /// idle in a transaction (sqlx issue #4385). A request's future is
    /// dropped whenever its client disconnects, so the `BEGIN` runs in a
    /// task of its own: it always finishes, and a `Transaction` nobody waits
    /// for any more is dropped there, which rolls it back.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Any>, DbError> {
        let pool = self.pool.clone();
        let begun = tokio::spawn(async move { pool.begin().await });
        // A panic inside sqlx is reported as the worker's crash.
        Ok(begun.await.map_err(|_| sqlx::Error::WorkerCrashed)??)
    }

    /// Wakes outbox dispatchers: new messages committed here are due.
    pub fn signal_outbox(&self) {
        self.outbox_committed.store(true, Ordering::Release);
        self.wake_outbox();
    }

    /// Wakes outbox dispatchers for messages another replica committed.
    pub fn wake_outbox(&self) {
        self.outbox_signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether messages committed here since the last call: the cluster
    /// tells the other replicas' dispatchers then.
    pub fn take_outbox_committed(&self) -> bool {
        self.outbox_committed.swap(false, Ordering::AcqRel)
    }

    /// Changes whenever [`Database::signal_outbox`] is called.
    pub fn outbox_changes(&self) -> watch::Receiver<u64> {
        self.outbox_signal.subscribe()
    }

    /// Round trip to the database; for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Reads one key outside any unit of work (tests and admin use).
    pub async fn kv_get(&self, component: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let value =
            sqlx::query_scalar::<_, Vec<u8>>("SELECT value FROM kv WHERE component = $1 AND bucket = $2 AND key = $3")
                .bind(component)
                .bind(bucket)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(value)
    }

    /// Pool connections open, idle among them, and the configured maximum.
    pub fn pool_usage(&self) -> (u32, u32, u32) {
        (self.pool.size(), self.pool.num_idle() as u32, self.pool.options().get_max_connections())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::{Database, redact};
    use crate::clock::SystemClock;

    /// An in-memory database is a private file that the pool and the units
    /// of work share, and it is gone with the last handle.
    #[tokio::test]
    async fn an_in_memory_database_is_one_database_for_pool_and_units_of_work() {
        let db = Database::connect("sqlite::memory:", 2, Arc::new(SystemClock)).await.unwrap();
        let file = db._scratch.as_ref().unwrap().path().join("memory.db");
        assert!(file.exists());
        let mut unit = db.unit_of_work(Arc::from("c"), Arc::from("r"));
        unit.kv_set("b", "k", b"v").await.unwrap();
        unit.commit().await.unwrap();
        assert_eq!(db.kv_get("c", "b", "k").await.unwrap(), Some(b"v".to_vec()));
        let mut reader = db.unit_of_work(Arc::from("c"), Arc::from("r2")).reading_first();
        assert_eq!(reader.kv_get("b", "k").await.unwrap(), Some(b"v".to_vec()));
        reader.commit().await.unwrap();
        db.close().await;
        drop(db);
        assert!(!file.exists());
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("postgres://app:s3cret@localhost/db"), "postgres://app:***@localhost/db");
        assert_eq!(redact("sqlite://switchyard.db"), "sqlite://switchyard.db");
    }
}

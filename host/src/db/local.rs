//! SQLite connections that a unit of work drives on its own thread.
//!
//! sqlx runs each SQLite connection on a worker thread of its own: every
//! statement is sent to that thread and its answer sent back, and each
//! hand-off can wake a parked thread. An order's nine statements cost more
//! in those wake-ups than in SQLite (`docs/performance.md`, "Where the CPU
//! goes"). In WAL mode SQLite answers a unit of work's statements from its
//! page cache in microseconds, so units of work run them on the calling
//! thread instead, each on a connection of its own taken from here.
//!
//! Nothing here waits for a lock. A writer holds the host's write permit
//! (`Database::write_gate`) before its `BEGIN IMMEDIATE`, as every writer
//! of the file does, and a reader in WAL mode never waits for a writer. The
//! busy timeout is only for another process holding the file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::FromSql;
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql};

use super::{DbError, SQLITE_BUSY_TIMEOUT_MS};

/// Connections kept open between units of work; more are opened when more
/// run at once, and closed when they end.
const MAX_IDLE: usize = 16;
/// Statements each connection keeps prepared: a unit of work uses a few
/// dozen shapes (an outbox batch of n rows is a shape per n).
const STATEMENT_CACHE: usize = 64;

/// The database file's connections not in use.
pub(super) struct Connections {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Connections {
    /// Connections to the file at `path`, which the pool has already
    /// created and migrated (and put in WAL mode, which the file keeps).
    pub(super) fn open(path: PathBuf) -> Result<Arc<Self>, DbError> {
        let connections = Arc::new(Self { path, idle: Mutex::new(Vec::new()) });
        // Fails now, at start-up, if the file cannot be opened.
        let first = connections.connect()?;
        connections.put_back(first);
        Ok(connections)
    }

    fn connect(&self) -> Result<Connection, DbError> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS)))?;
        // The pool's pragmas (`Database::connect`); journal_mode is the file's.
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(connection)
    }

    fn put_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    /// Begins a transaction: `BEGIN IMMEDIATE` for a writer, which must hold
    /// the write permit, or a deferred `BEGIN`, whose first read takes a
    /// snapshot.
    pub(super) fn begin(self: &Arc<Self>, write: bool) -> Result<Session, DbError> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.connect()?,
        };
        // Until it is begun the session rolls nothing back on drop.
        let session = Session { connection: Some(connection), home: self.clone() };
        session.connection()?.execute_batch(if write { "BEGIN IMMEDIATE" } else { "BEGIN" })?;
        Ok(session)
    }
}

/// A transaction on a connection of its own. Dropped without
/// [`Session::commit`], it rolls back and the connection is put back.
pub(super) struct Session {
    connection: Option<Connection>,
    home: Arc<Connections>,
}

impl Session {
    fn connection(&self) -> Result<&Connection, DbError> {
        self.connection.as_ref().ok_or(DbError::Sqlite(rusqlite::Error::InvalidQuery))
    }

    /// The first column of the row `sql` returns, if any.
    pub(super) fn optional<T: FromSql>(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Option<T>, DbError> {
        let mut statement = self.connection()?.prepare_cached(sql)?;
        Ok(statement.query_row(params, |row| row.get(0)).optional()?)
    }

    /// The first column of every row `sql` returns.
    pub(super) fn column<T: FromSql>(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<T>, DbError> {
        let mut statement = self.connection()?.prepare_cached(sql)?;
        let rows = statement.query_map(params, |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs `sql`, returning how many rows it changed.
    pub(super) fn execute(&self, sql: &str, params: &[&dyn ToSql]) -> Result<usize, DbError> {
        let mut statement = self.connection()?.prepare_cached(sql)?;
        Ok(statement.execute(params)?)
    }

    pub(super) fn commit(self) -> Result<(), DbError> {
        // A failed COMMIT leaves the transaction open; drop rolls it back.
        self.connection()?.execute_batch("COMMIT")?;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else { return };
        if !connection.is_autocommit()
            && let Err(err) = connection.execute_batch("ROLLBACK")
        {
            // Closing the connection rolls it back instead.
            tracing::warn!(error = %err, "cannot roll back a SQLite transaction; closing its connection");
            return;
        }
        self.home.put_back(connection);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn connections() -> (tempfile::TempDir, Arc<Connections>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.db");
        let setup = Connection::open(&path).unwrap();
        setup.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)").unwrap();
        (dir, Connections::open(path).unwrap())
    }

    #[test]
    fn a_dropped_session_rolls_back_and_its_connection_is_reused() {
        let (_dir, connections) = connections();
        let session = connections.begin(true).unwrap();
        assert_eq!(session.execute("INSERT INTO t VALUES ($1, $2)", &[&"a", &1]).unwrap(), 1);
        drop(session);
        {
            // Put back outside any transaction.
            let idle = connections.idle.lock().unwrap();
            assert_eq!(idle.len(), 1);
            assert!(idle[0].is_autocommit());
        }
        let reader = connections.begin(false).unwrap();
        assert_eq!(reader.optional::<i64>("SELECT v FROM t WHERE k = $1", &[&"a"]).unwrap(), None);
    }

    #[test]
    fn a_committed_session_is_seen_by_the_next_and_a_reader_keeps_its_snapshot() {
        let (_dir, connections) = connections();
        let writer = connections.begin(true).unwrap();
        writer.execute("INSERT INTO t VALUES ($1, $2)", &[&"a", &1]).unwrap();
        writer.commit().unwrap();

        let reader = connections.begin(false).unwrap();
        assert_eq!(reader.optional::<i64>("SELECT v FROM t WHERE k = $1", &[&"a"]).unwrap(), Some(1));
        let writer = connections.begin(true).unwrap();
        writer.execute("UPDATE t SET v = $1 WHERE k = $2", &[&2, &"a"]).unwrap();
        writer.commit().unwrap();
        // Two connections are open now; the reader still sees its snapshot.
        assert_eq!(reader.column::<i64>("SELECT v FROM t", &[]).unwrap(), vec![1]);
        drop(reader);
        let next = connections.begin(false).unwrap();
        assert_eq!(next.column::<i64>("SELECT v FROM t", &[]).unwrap(), vec![2]);
    }
}

//! PostgreSQL advisory locks held by this replica on a connection of their
//! own: one per component whose rollout this replica's controller runs. A
//! session lock lives as long as the session, so when a replica dies its
//! locks go with it, and another replica can take the rollout over.
//!
//! On SQLite there is one process: every lock is granted.

use std::collections::BTreeSet;
use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::Mutex;

use super::DbError;

/// The key space of the locks: the component's name, hashed.
const LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('switchyard-rollout:' || $1, 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('switchyard-rollout:' || $1, 0))";

pub struct RolloutLocks {
    /// `None` on SQLite.
    options: Option<PgConnectOptions>,
    state: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    connection: Option<PgConnection>,
    components: BTreeSet<String>,
}

impl RolloutLocks {
    /// Locks on the database at `url`; the connection's `application_name`
    /// is `switchyard-rollouts:<replica>`.
    pub fn new(url: &str, replica: &str) -> RolloutLocks {
        let options = (!url.starts_with("sqlite:"))
            .then(|| PgConnectOptions::from_str(url).ok())
            .flatten()
            .map(|options| options.application_name(&format!("switchyard-rollouts:{replica}")));
        RolloutLocks { options, state: Mutex::new(Held::default()) }
    }

    /// Takes `component`'s lock if nobody holds it; true when this replica
    /// holds it now.
    pub async fn try_lock(&self, component: &str) -> Result<bool, DbError> {
        let Some(options) = &self.options else { return Ok(true) };
        let mut held = self.state.lock().await;
        if held.components.contains(component) {
            return Ok(true);
        }
        let connection = connected(&mut held.connection, options).await?;
        let granted: bool = sqlx::query_scalar(LOCK).bind(component).fetch_one(&mut *connection).await?;
        if granted {
            held.components.insert(component.to_owned());
        }
        Ok(granted)
    }

    /// Lets another replica take `component`'s rollout.
    pub async fn unlock(&self, component: &str) {
        if self.options.is_none() {
            return;
        }
        let mut held = self.state.lock().await;
        if held.components.remove(component)
            && let Some(connection) = held.connection.as_mut()
            && let Err(err) = sqlx::query(UNLOCK).bind(component).execute(&mut *connection).await
        {
            // The session is gone, and its locks with it.
            tracing::warn!(component, error = %err, "cannot release a rollout lock");
            held.connection = None;
        }
    }

    /// Checks that the locks are still held: after a lost connection they
    /// are taken again on a new one. Returns the components whose lock
    /// another replica holds now.
    pub async fn lost(&self) -> Vec<String> {
        let Some(options) = &self.options else { return Vec::new() };
        let mut held = self.state.lock().await;
        if held.components.is_empty() {
            return Vec::new();
        }
        if let Some(connection) = held.connection.as_mut()
            && connection.ping().await.is_ok()
        {
            return Vec::new();
        }
        held.connection = None;
        let components = std::mem::take(&mut held.components);
        let mut lost = Vec::new();
        for component in components {
            let granted = match connected(&mut held.connection, options).await {
                Ok(connection) => sqlx::query_scalar::<_, bool>(LOCK)
                    .bind(&component)
                    .fetch_one(&mut *connection)
                    .await
                    .map_err(DbError::from),
                Err(err) => Err(err),
            };
            match granted {
                Ok(true) => {
                    held.components.insert(component);
                }
                Ok(false) => lost.push(component),
                Err(err) => {
                    // The database is away: nobody else can take it either
                    // until it returns; try again at the next check.
                    tracing::warn!(component = component.as_str(), error = %err, "cannot take a rollout lock again");
                    held.components.insert(component);
                    held.connection = None;
                }
            }
        }
        lost
    }
}

async fn connected<'a>(
    connection: &'a mut Option<PgConnection>,
    options: &PgConnectOptions,
) -> Result<&'a mut PgConnection, DbError> {
    if connection.is_none() {
        *connection = Some(PgConnection::connect_with(options).await?);
    }
    connection.as_mut().ok_or_else(|| DbError::Sqlx(sqlx::Error::PoolClosed))
}

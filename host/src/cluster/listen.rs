//! The PostgreSQL listener: one connection per replica `LISTEN`ing on the
//! deploy and outbox channels.
//!
//! A lost connection is replaced by a new one, and every (re)connect is
//! followed by a reconcile: whatever was deployed while nobody listened is
//! caught then, not only at the next periodic reconcile. The connection's
//! `application_name` is `switchyard-listener:<replica id>`, so an operator
//! (or a test) can find it in `pg_stat_activity`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use super::Cluster;
use crate::db::replicas::{DEPLOYMENTS_CHANNEL, OUTBOX_CHANNEL};

/// Waits between failed connection attempts, doubling up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The `application_name` of a replica's listener connection.
pub fn application_name(replica: &str) -> String {
    format!("switchyard-listener:{replica}")
}

pub(super) async fn run(cluster: Arc<Cluster>) {
    let mut retry = RETRY_FIRST;
    loop {
        let mut listener = match connect(&cluster).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, retry_ms = retry.as_millis() as u64, "cannot listen for deploys");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        retry = RETRY_FIRST;
        tracing::debug!("listening for deploys and outbox messages");
        cluster.reconcile_soon();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.channel() == DEPLOYMENTS_CHANNEL => {
                    tracing::debug!(component = notification.payload(), "deploy notified");
                    cluster.reconcile_soon();
                }
                Ok(Some(notification)) => {
                    if notification.payload() != cluster.id {
                        cluster.db.wake_outbox();
                    }
                }
                Ok(None) => {
                    tracing::warn!("the deploy listener's connection was lost; reconnecting");
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the deploy listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect(cluster: &Cluster) -> Result<PgListener, sqlx::Error> {
    let options = PgConnectOptions::from_str(&cluster.database_url)?.application_name(&application_name(&cluster.id));
    // A pool of one, so the listener's reconnects keep the options.
    let pool =
        PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(5)).connect_lazy_with(options);
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen_all([DEPLOYMENTS_CHANNEL, OUTBOX_CHANNEL]).await?;
    Ok(listener)
}

//! The connection pool and the schema: which Postgres to use, and the
//! migrations in `migrations/`, applied at start-up.

use std::time::Duration;

use sqlx::{Connection, PgPool, postgres::PgPoolOptions};

use super::{
    config::KnockSettings,
    embedded_postgres::{EmbeddedPostgres, EmbeddedPostgresError},
};

/// Rows one pruning statement deletes at most, so that pruning never holds
/// locks or a snapshot for long.
pub const PRUNE_BATCH: i64 = 1000;

/// Runs `delete`, a statement that deletes at most [`PRUNE_BATCH`] rows and
/// returns how many, until it deletes fewer; returns the total.
///
/// # Errors
/// The first database error.
pub async fn delete_in_batches<F, Fut>(mut delete: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = delete().await?;
        total += deleted;
        if deleted < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a pooled connection may have been unused and still be handed
/// out without a `ping` first: 500 ms, the default of HikariCP's
/// `aliveBypassWindowMs` (a connection used that recently was alive).
pub const PING_IF_IDLE_FOR: Duration = Duration::from_millis(500);

/// The pool's settings: at most 20 connections, at most 5 s of waiting for
/// one, and a `ping` only for a connection idle for [`PING_IF_IDLE_FOR`] or
/// longer; a connection that fails it is closed and another one is taken.
///
/// sqlx's default (`test_before_acquire`) pings before every query: one more
/// round trip each, a measurable share of the messages/s under load. A
/// connection busy until less than 500 ms ago is
/// used as it is, so after a database restart a query on such a connection
/// can fail once; one that sat idle is checked as before.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Why the database is not usable; start-up stops on any of these.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The embedded cluster could not be started.
    #[error("embedded Postgres: {0}")]
    Embedded(#[from] EmbeddedPostgresError),
    /// The server could not be reached.
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed; the schema is left as the failed migration's
    /// transaction found it.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The database Knock runs on: the pool, and the embedded cluster when
/// Knock started one (stop it after the server has drained).
#[derive(Debug)]
pub struct Database {
    /// The pool every request shares.
    pub pool: PgPool,
    /// The embedded cluster, when `DATABASE_URL` was unset.
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts the embedded cluster in
    /// `KNOCK_DATA_DIR` when it is unset, then applies pending migrations.
    ///
    /// # Errors
    /// [`DatabaseError`] with the cause. An embedded cluster that started is
    /// stopped again before a connection or migration error is returned.
    pub async fn connect(settings: &KnockSettings) -> Result<Self, DatabaseError> {
        let (options, embedded) = match settings.database_options() {
            Some(options) => (options, None),
            None => {
                let cluster = EmbeddedPostgres::start(&settings.data_dir).await?;
                (cluster.connect_options(), Some(cluster))
            }
        };
        let ready = async {
            // Migrations run on a connection of their own, without the
            // statement timeout: rewriting a large table may take a while.
            let mut migrating = sqlx::PgConnection::connect_with(&options)
                .await
                .map_err(DatabaseError::Connect)?;
            MIGRATOR.run(&mut migrating).await?;
            migrating.close().await.map_err(DatabaseError::Connect)?;
            let timeout = format!("{}s", settings.statement_timeout_secs);
            let pool = pool_options()
                .connect_with(options.options([("statement_timeout", timeout.as_str())]))
                .await
                .map_err(DatabaseError::Connect)?;
            Ok::<_, DatabaseError>(pool)
        }
        .await;
        match ready {
            Ok(pool) => Ok(Self { pool, embedded }),
            Err(error) => {
                if let Some(cluster) = embedded
                    && let Err(stop) = cluster.stop().await
                {
                    tracing::error!(error = %stop, "could not stop embedded Postgres");
                }
                Err(error)
            }
        }
    }

    /// Closes the pool; stops the embedded cluster only if this process
    /// started it (a server running on it keeps it). For one-shot commands.
    pub async fn close_for_command(self) {
        self.pool.close().await;
        if let Some(cluster) = self.embedded
            && !cluster.adopted()
            && let Err(error) = cluster.stop().await
        {
            tracing::error!(%error, "could not stop embedded Postgres");
        }
    }

    /// Closes the pool and stops the embedded cluster, if any.
    pub async fn shutdown(self) {
        self.pool.close().await;
        if let Some(cluster) = self.embedded
            && let Err(error) = cluster.stop().await
        {
            tracing::error!(%error, "could not stop embedded Postgres");
        }
    }
}

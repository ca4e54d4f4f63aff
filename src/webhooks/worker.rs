//! Applies stored webhook deliveries: each is a `clerk_webhook` job on the
//! job queue ([`crate::jobs::server`]), which retries it with backoff and
//! shows its runs to operators. Applying is idempotent (see
//! [`crate::users::server`]), so a run repeated after a crash changes
//! nothing.

use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::{
    jobs::{
        self, Kind,
        server::{Filter, JobError, Run},
    },
    server::database::{PRUNE_BATCH, delete_in_batches},
    users::server::{ClerkUser, SyncOutcome, tombstone, upsert_from_clerk},
};

/// A stored event, as listed for operators.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The delivery's `svix-id`.
    pub svix_id: String,
    /// Clerk's event type.
    pub event_type: String,
    /// The run's status: `retrying` or `failed`.
    pub status: String,
    /// How many times processing was tried.
    pub attempts: i32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// When the event was received.
    pub received_at: OffsetDateTime,
}

/// Applies one Clerk event payload (the whole envelope). Returns what it
/// did, in a few words, for the run's `apply` step.
///
/// # Errors
/// [`JobError::Permanent`] for a payload that does not fit its type (such as
/// `user.deleted` without `data.id`); [`JobError::Retry`] for a database
/// error.
pub async fn apply(pool: &PgPool, event_type: &str, payload: &Value) -> Result<String, JobError> {
    let data = payload.get("data").cloned().unwrap_or(Value::Null);
    match event_type {
        "user.created" | "user.updated" => {
            let user: ClerkUser = serde_json::from_value(data)
                .map_err(|e| JobError::Permanent(format!("bad user object: {e}")))?;
            Ok(match upsert_from_clerk(pool, &user).await? {
                SyncOutcome::Created(id) => format!("created user {id}"),
                SyncOutcome::Updated(id) => format!("updated user {id}"),
                SyncOutcome::Stale(id) => format!("user {id} holds newer data; nothing changed"),
                SyncOutcome::Tombstoned(id) => format!("user {id} is deleted; nothing changed"),
            })
        }
        "user.deleted" => {
            let id = data
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| JobError::Permanent("user.deleted without data.id".into()))?;
            let user = tombstone(pool, id).await?.user_id();
            Ok(format!("deleted user {user}"))
        }
        other => Ok(format!("ignored: Knock does not use {other}")),
    }
}

/// The `clerk_webhook` job for the delivery whose `svix-id` is
/// `run.subject`: one step, `apply`, then the delivery is marked processed.
///
/// # Errors
/// [`JobError::Permanent`] for a delivery that is gone (pruned) or whose
/// payload does not fit its type; [`JobError::Retry`] for a database error.
pub async fn process(pool: &PgPool, run: &mut Run) -> Result<(), JobError> {
    let svix_id = run.subject.clone();
    let delivery = sqlx::query!(
        "SELECT event_type, payload FROM webhook_events WHERE svix_id = $1",
        svix_id,
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| JobError::Permanent("the delivery is no longer stored".into()))?;
    let outcome = run
        .step("apply", || async {
            apply(pool, &delivery.event_type, &delivery.payload).await
        })
        .await?;
    sqlx::query!(
        "UPDATE webhook_events SET processed_at = COALESCE(processed_at, now()) WHERE svix_id = $1",
        svix_id,
    )
    .execute(pool)
    .await?;
    tracing::info!(
        svix_id,
        event_type = delivery.event_type,
        outcome,
        "webhook applied"
    );
    Ok(())
}

/// Failed runs of webhook deliveries, oldest first (for `knock webhooks failed`).
///
/// # Errors
/// The database error.
pub async fn failed(pool: &PgPool) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as!(
        StoredEvent,
        r#"SELECT e.svix_id, e.event_type, j.status, j.attempts, j.last_error, e.received_at
           FROM webhook_events e JOIN jobs j ON j.kind = 'clerk_webhook' AND j.subject = e.svix_id
           WHERE j.status IN ('failed', 'retrying') ORDER BY e.received_at"#,
    )
    .fetch_all(pool)
    .await
}

/// Makes failed webhook runs due now (all of them, or the one of
/// `svix_id`); returns how many (for `knock webhooks retry`).
///
/// # Errors
/// The database error.
pub async fn retry_now(pool: &PgPool, svix_id: Option<&str>) -> Result<u64, sqlx::Error> {
    let filter = Filter {
        kind: Some(Kind::ClerkWebhook),
        subject: svix_id.map(str::to_owned),
        ..Filter::default()
    };
    jobs::server::retry(pool, None, &filter).await
}

/// How long a processed webhook delivery (`done` or `ignored`) is kept by
/// default (`KNOCK_WEBHOOK_RETENTION_DAYS`): long past Svix's retries (about
/// a day), so a repeated `svix-id` is still recognised, and long enough for
/// an operator to look into a delivery.
pub const RETENTION_DAYS: u32 = 7;

/// Deletes deliveries processed more than `days` ago (unprocessed ones
/// stay), in batches, and finished runs of jobs as old
/// ([`jobs::server::prune`]); returns how many deliveries.
///
/// # Errors
/// The database error.
pub async fn prune(pool: &PgPool, days: u32) -> Result<u64, sqlx::Error> {
    let deliveries = delete_in_batches(|| async {
        let deleted = sqlx::query!(
            "DELETE FROM webhook_events WHERE svix_id IN (
                 SELECT svix_id FROM webhook_events
                  WHERE processed_at < now() - $1 * interval '1 day'
                  LIMIT $2)",
            f64::from(days),
            PRUNE_BATCH,
        )
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    })
    .await?;
    jobs::server::prune(pool, days).await?;
    Ok(deliveries)
}

/// Forever: [`prune`] every hour.
pub async fn prune_forever(pool: PgPool, days: u32) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        ticks.tick().await;
        match prune(&pool, days).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned processed webhook deliveries"),
            Err(_) if pool.is_closed() => return,
            Err(error) => tracing::warn!(%error, "could not prune webhook deliveries"),
        }
    }
}

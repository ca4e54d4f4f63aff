//! Applies stored webhook events: a `SKIP LOCKED` queue on `webhook_events`.
//!
//! Each event is claimed with a lease (`status = 'processing'`,
//! `next_attempt_at` = now + [`LEASE`]), so an instance that dies mid-event
//! leaves it to be claimed again when the lease runs out. A failure records
//! `last_error` and schedules a retry with exponential backoff (2^attempts
//! seconds, at most an hour); the event stays `failed` and visible until a
//! retry succeeds. Applying is idempotent (see [`crate::users::server`]).

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::users::server::{ClerkUser, tombstone, upsert_from_clerk};

/// How long a claimed event is reserved for the instance working on it.
pub const LEASE: Duration = Duration::from_secs(300);
/// How often the worker looks for due retries when nothing wakes it.
pub const POLL: Duration = Duration::from_secs(5);

/// A stored event, as listed for operators.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The delivery's `svix-id`.
    pub svix_id: String,
    /// Clerk's event type.
    pub event_type: String,
    /// `pending`, `processing`, `done`, `failed` or `ignored`.
    pub status: String,
    /// How many times processing was tried.
    pub attempts: i32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// When the event was received.
    pub received_at: OffsetDateTime,
}

/// What [`apply`] made of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// A user event, applied.
    Done,
    /// An event type Knock does not use.
    Ignored,
}

/// Applies one Clerk event payload (the whole envelope).
///
/// # Errors
/// A message for `last_error`: a payload that does not fit its type (such as
/// `user.deleted` without `data.id`), or a database error.
pub async fn apply(pool: &PgPool, event_type: &str, payload: &Value) -> Result<Applied, String> {
    let data = payload.get("data").cloned().unwrap_or(Value::Null);
    match event_type {
        "user.created" | "user.updated" => {
            let user: ClerkUser =
                serde_json::from_value(data).map_err(|e| format!("bad user object: {e}"))?;
            upsert_from_clerk(pool, &user)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Applied::Done)
        }
        "user.deleted" => {
            let id = data
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or("user.deleted without data.id")?;
            tombstone(pool, id).await.map_err(|e| e.to_string())?;
            Ok(Applied::Done)
        }
        _ => Ok(Applied::Ignored),
    }
}

/// Claims and applies the oldest due event. Returns `false` when none is due.
///
/// # Errors
/// A database error while claiming or recording the outcome.
pub async fn process_one(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query!(
        "UPDATE webhook_events SET status = 'processing', attempts = attempts + 1,
                next_attempt_at = now() + make_interval(secs => $1)
         WHERE svix_id = (
             SELECT svix_id FROM webhook_events
             WHERE status IN ('pending', 'failed', 'processing') AND next_attempt_at <= now()
             ORDER BY received_at, svix_id
             FOR UPDATE SKIP LOCKED LIMIT 1)
         RETURNING svix_id, event_type, payload, attempts",
        LEASE.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    let Some(claimed) = claimed else {
        return Ok(false);
    };
    let (svix_id, event_type, payload, attempts): (String, String, Value, i32) = (
        claimed.svix_id,
        claimed.event_type,
        claimed.payload,
        claimed.attempts,
    );
    match apply(pool, &event_type, &payload).await {
        Ok(applied) => {
            let status = if applied == Applied::Done {
                "done"
            } else {
                "ignored"
            };
            sqlx::query!(
                "UPDATE webhook_events SET status = $2, last_error = NULL, processed_at = now()
                 WHERE svix_id = $1",
                svix_id,
                status,
            )
            .execute(pool)
            .await?;
            tracing::info!(svix_id, event_type, status, "webhook applied");
        }
        Err(error) => {
            let backoff = 2f64.powi(attempts.min(12)).min(3600.0);
            sqlx::query!(
                "UPDATE webhook_events SET status = 'failed', last_error = $2,
                        next_attempt_at = now() + make_interval(secs => $3)
                 WHERE svix_id = $1",
                svix_id,
                error,
                backoff,
            )
            .execute(pool)
            .await?;
            tracing::warn!(svix_id, event_type, attempts, %error, retry_in_secs = backoff, "webhook failed");
        }
    }
    Ok(true)
}

/// Applies every due event, then waits for a wake-up or [`POLL`]; until
/// the pool closes (at shutdown), when it returns quietly.
pub async fn run(pool: PgPool, wakeup: Arc<Notify>) {
    loop {
        match process_one(&pool).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(_) if pool.is_closed() => return,
            Err(error) => tracing::error!(%error, "webhook worker: database error"),
        }
        let _ = tokio::time::timeout(POLL, wakeup.notified()).await;
    }
}

/// Events whose last attempt failed, oldest first (for `knock webhooks failed`).
///
/// # Errors
/// The database error.
pub async fn failed(pool: &PgPool) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as!(
        StoredEvent,
        "SELECT svix_id, event_type, status, attempts, last_error, received_at
         FROM webhook_events WHERE status = 'failed' ORDER BY received_at",
    )
    .fetch_all(pool)
    .await
}

/// Makes failed events due now (all of them, or the one `svix_id`); returns
/// how many (for `knock webhooks retry`).
///
/// # Errors
/// The database error.
pub async fn retry_now(pool: &PgPool, svix_id: Option<&str>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "UPDATE webhook_events SET next_attempt_at = now()
         WHERE status = 'failed' AND ($1::text IS NULL OR svix_id = $1)",
        svix_id,
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// How long a processed webhook delivery (`done` or `ignored`) is kept by
/// default (`KNOCK_WEBHOOK_RETENTION_DAYS`): long past Svix's retries (about
/// a day), so a repeated `svix-id` is still recognised, and long enough for
/// an operator to look into a delivery.
pub const RETENTION_DAYS: u32 = 7;

/// Rows deleted per statement when pruning, so that pruning never holds
/// locks or a snapshot for long.
const PRUNE_BATCH: i64 = 1000;

/// Deletes processed deliveries older than `days` (failed and pending ones
/// stay), in batches; returns how many.
///
/// # Errors
/// The database error.
pub async fn prune(pool: &PgPool, days: u32) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query!(
            "DELETE FROM webhook_events WHERE svix_id IN (
                 SELECT svix_id FROM webhook_events
                  WHERE status IN ('done', 'ignored')
                    AND processed_at < now() - $1 * interval '1 day'
                  LIMIT $2)",
            f64::from(days),
            PRUNE_BATCH,
        )
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
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

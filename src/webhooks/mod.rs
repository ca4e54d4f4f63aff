//! `POST /api/webhooks/clerk`: Clerk's user events, delivered and signed by
//! Svix, stored durably, then applied by a background worker.
//!
//! The handler answers fast (Svix waits at most 15 s): it verifies the
//! `svix-id`, `svix-timestamp` and `svix-signature` headers (or their
//! Standard Webhooks names `webhook-id`, `webhook-timestamp`,
//! `webhook-signature`) with the `svix` crate (HMAC-SHA256 of
//! `{id}.{timestamp}.{body}`, timestamps within 5 minutes either way, per
//! Svix's verification guide), checks the body is a JSON event envelope,
//! stores it in `webhook_events` keyed by that id with its `clerk_webhook`
//! job, and only then answers 2xx. The job ([`worker`]) applies it, with
//! retries; operators see every run at `/admin/jobs` (see `README.md`).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{jobs::Kind, server::state::AppState};

pub mod worker;

/// The largest delivery accepted, in bytes (a Clerk User object is a few KB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The envelope of every Clerk webhook event:
/// `{data, object: "event", type, timestamp, instance_id}`.
#[derive(Debug, Deserialize)]
pub struct ClerkEvent {
    /// `user.created`, `user.updated`, `user.deleted`, …
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's object (a Clerk User for the user events).
    pub data: Value,
    /// When Clerk emitted the event, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: Option<i64>,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// The webhook endpoint. Answers:
/// - `200 {"received": true}` once the event is stored (also for a repeated
///   `svix-id`, which changes nothing, and for event types Knock ignores);
/// - `400` for a missing or bad signature, a timestamp more than 5 minutes
///   old or ahead, a body that is not a JSON event envelope, or a `user.*`
///   event without `data.id`; nothing is stored;
/// - `413` for a body over [`MAX_BODY_BYTES`];
/// - `503` when `CLERK_WEBHOOK_SIGNING_SECRET` is not configured.
pub async fn clerk_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(webhook) = state.webhook.as_deref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_not_configured",
            "CLERK_WEBHOOK_SIGNING_SECRET is not set",
        );
    };
    if body.len() > MAX_BODY_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the delivery is too large",
        );
    }
    if let Err(reason) = webhook.verify(&body, &headers) {
        tracing::warn!(%reason, "refused a webhook delivery");
        return error(
            StatusCode::BAD_REQUEST,
            "bad_signature",
            &format!("verification failed: {reason}"),
        );
    }
    let event: ClerkEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(reason) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                &format!("not a Clerk event: {reason}"),
            );
        }
    };
    if event.event_type.starts_with("user.")
        && event
            .data
            .get("id")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed_event",
            "a user event needs data.id",
        );
    }
    // Verified above, so one of the id headers is present and text: Svix's
    // own, or the Standard Webhooks name that the `svix` crate accepts too.
    let svix_id = headers
        .get("svix-id")
        .or_else(|| headers.get("webhook-id"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // One statement: the delivery and its job are stored together or not at all.
    let stored = sqlx::query!(
        "WITH stored AS (
             INSERT INTO webhook_events (svix_id, event_type, payload) VALUES ($1, $2, $3)
             ON CONFLICT (svix_id) DO NOTHING
             RETURNING svix_id)
         INSERT INTO jobs (kind, subject, max_attempts)
         SELECT $4, svix_id, $5 FROM stored
         ON CONFLICT (kind, subject) DO NOTHING",
        svix_id,
        event.event_type,
        payload,
        Kind::ClerkWebhook.as_str(),
        Kind::ClerkWebhook.max_attempts(),
    )
    .execute(&state.pool)
    .await;
    match stored {
        Ok(result) => {
            if result.rows_affected() == 1 {
                tracing::info!(svix_id, event_type = %event.event_type, "webhook stored");
                state.jobs.wakeup.notify_one();
            } else {
                tracing::info!(svix_id, "repeated webhook delivery; already stored");
            }
            (StatusCode::OK, Json(json!({ "received": true }))).into_response()
        }
        Err(cause) => {
            // Not stored: a 5xx makes Svix deliver again later.
            tracing::error!(%cause, svix_id, "could not store a webhook delivery");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "could not store the event",
            )
        }
    }
}

//! `GET /healthz`: is this instance able to serve?

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;
use sqlx::PgPool;

/// Answers `200 {"status":"ok"}` when the database answers a query, and
/// `503 {"status":"unavailable"}` (with the cause in the log) when it does not.
/// No session needed; meant for load balancers and operators.
pub async fn healthz(State(pool): State<PgPool>) -> impl IntoResponse {
    match sqlx::query_scalar!("SELECT 1").fetch_one(&pool).await {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(error) => {
            tracing::error!(%error, "health check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable" })),
            )
        }
    }
}

//! Operators: the people who may see `/admin/jobs` and `/metrics`.

use crate::{ids::UserId, server::state::AppState};

/// Whether the user `id` is an operator: their Clerk user id (`user_…`) is
/// in `KNOCK_ADMIN_USER_IDS`, or, in dev mode, their username is (compared
/// regardless of case). A deleted user is no operator.
///
/// # Errors
/// The database error.
pub async fn is_operator(state: &AppState, id: UserId) -> Result<bool, sqlx::Error> {
    if state.operators.is_empty() {
        return Ok(false);
    }
    let row = sqlx::query!(
        "SELECT clerk_id, username FROM users WHERE id = $1 AND deleted_at IS NULL",
        id as UserId,
    )
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.is_some_and(|row| {
        state.operators.iter().any(|operator| {
            *operator == row.clerk_id
                || (state.auth.is_dev() && operator.eq_ignore_ascii_case(&row.username))
        })
    }))
}

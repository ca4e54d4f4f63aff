//! Users: Knock's copy of the people Clerk knows.
//!
//! Rows are written only by the sync code in [`server`] (SSR only), from
//! Clerk's webhooks, from the first authenticated request of a user who has
//! no row yet, and from dev sign-in.

use serde::{Deserialize, Serialize};

use crate::ids::UserId;

#[cfg(feature = "ssr")]
pub mod server;

/// A user as the browser sees them (no email: that stays on the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Knock's id, used in URLs (`/chat/{id}`).
    pub id: UserId,
    /// Unique regardless of case.
    pub username: String,
    /// Clerk's `first_name`.
    pub first_name: Option<String>,
    /// Clerk's `last_name`.
    pub last_name: Option<String>,
    /// Clerk's `image_url`.
    pub image_url: Option<String>,
}

impl User {
    /// "First Last" when Clerk has a name, else the username.
    pub fn display_name(&self) -> String {
        let name = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .filter(|part| !part.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if name.is_empty() {
            self.username.clone()
        } else {
            name
        }
    }
}

/// `POST /api/users/get` `{user_id}`: one live user.
///
/// # Errors
/// 401 without a session; 404 for an unknown or deleted user.
#[leptos::server(prefix = "/api", endpoint = "users/get", input = leptos::server_fn::codec::Json)]
pub async fn get_user(user_id: UserId) -> Result<User, crate::error::AppError> {
    use crate::error::{AppError, respond};
    crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::find_live(&state.pool, user_id)
        .await
        .map_err(AppError::from)
        .and_then(|user| user.ok_or(AppError::NotFound))
        .map_err(respond)
}

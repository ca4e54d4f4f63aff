//! Identity: who is signed in, dev sign-in and sign-out.
//!
//! Server functions here are thin; verification and the user sync live in
//! [`server`] and [`crate::users::server`].

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{error::AppError, users::User};

pub mod client;
pub mod components;
#[cfg(feature = "ssr")]
pub mod server;

/// What the browser needs to know about the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The signed-in user, `None` when signed out.
    pub user: Option<User>,
    /// Clerk mode: the publishable key that loads ClerkJS; `None` in dev mode.
    pub clerk_publishable_key: Option<String>,
    /// Clerk mode: where ClerkJS is loaded from (the key's Frontend API).
    pub clerk_js_url: Option<String>,
}

/// `POST /api/session`: the signed-in user (none for a missing or invalid
/// token), and how to sign in. A first request of a Clerk user with no row
/// creates the row.
///
/// # Errors
/// [`AppError::Internal`] when the database fails.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "session")]
pub async fn session() -> Result<SessionInfo, AppError> {
    use crate::server::state::AppState;
    let state = AppState::current()?;
    let user = match server::request_user().await {
        Ok(user) => Some(user),
        Err(AppError::Unauthorized) => None,
        Err(error) => return Err(error),
    };
    let clerk_js_url = state
        .clerk_publishable_key
        .as_deref()
        .and_then(server::clerk_js_url);
    Ok(SessionInfo {
        user,
        clerk_publishable_key: state.clerk_publishable_key.clone(),
        clerk_js_url,
    })
}

/// `POST /api/session/dev-sign-in` (dev mode only; form field `username`):
/// creates or finds the user through the same sync as Clerk's webhook, sets
/// a Knock-signed `__session` cookie (HttpOnly, SameSite=Lax) and redirects
/// to `/`.
///
/// # Errors
/// [`AppError::BadRequest`] for a username with no letter or digit;
/// [`AppError::NotFound`] in Clerk mode.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "session/dev-sign-in")]
pub async fn dev_sign_in(username: String) -> Result<(), AppError> {
    use crate::{
        error::respond,
        server::state::AppState,
        users::server::{ClerkEmailAddress, ClerkUser, normalise_username, upsert_from_clerk},
    };
    let state = AppState::current()?;
    if !state.auth.is_dev() {
        return Err(respond(AppError::NotFound));
    }
    crate::error::refuse_control_characters(&username, "A username").map_err(respond)?;
    let username = normalise_username(&username);
    if username.is_empty() {
        return Err(respond(AppError::BadRequest(
            "A username needs letters or digits (a–z, 0–9, - and _).".into(),
        )));
    }
    let clerk_id = format!("dev_{username}");
    let existing = crate::users::server::find_by_clerk_id(&state.pool, &clerk_id).await?;
    if existing.is_none() {
        // Dev users get an address under the reserved `.localhost` domain,
        // so that their welcome email shows in the outbox.
        let user = ClerkUser {
            id: clerk_id.clone(),
            primary_email_address_id: Some("dev".into()),
            email_addresses: vec![ClerkEmailAddress {
                id: "dev".into(),
                email_address: format!("{username}@knock.localhost"),
            }],
            username: Some(username),
            updated_at: time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
            ..ClerkUser::default()
        };
        upsert_from_clerk(&state.pool, &user).await?;
        // The welcome email was enqueued with the user.
        state.jobs.wakeup.notify_one();
    }
    let token = state
        .auth
        .mint_dev_token(&clerk_id)
        .ok_or(AppError::Internal)?;
    server::set_session_cookie(Some(&token));
    leptos_axum::redirect("/");
    Ok(())
}

/// `POST /api/session/sign-out`: clears the `__session` cookie and
/// redirects to `/sign-in`. In Clerk mode the browser also signs out of
/// Clerk (ClerkJS), or Clerk would issue a new token.
///
/// # Errors
/// None in practice; the signature is that of every server function.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "session/sign-out")]
pub async fn sign_out() -> Result<(), AppError> {
    let state = crate::server::state::AppState::current()?;
    server::set_session_cookie(None);
    // In Clerk mode the sign-in page also signs the browser out of Clerk.
    leptos_axum::redirect(if state.clerk_publishable_key.is_some() {
        "/sign-in?signed_out=1"
    } else {
        "/sign-in"
    });
    Ok(())
}

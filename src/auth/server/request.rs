//! The signed-in user of a request: the session token from the request,
//! the [`CurrentUser`] extractor with the first-request upsert, and the
//! per-request cache that server functions share.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header::AUTHORIZATION, request::Parts},
};
use axum_extra::extract::CookieJar;

use super::tokens::SessionClaims;
use crate::{
    error::AppError,
    server::state::AppState,
    users::{
        User,
        server::{ClerkUser, SyncOutcome, find_by_clerk_id, upsert_from_clerk},
    },
};

/// Clerk's session cookie (Clerk docs, "Session tokens").
pub const SESSION_COOKIE: &str = "__session";

/// The session token of a request: `Authorization: Bearer …` first, else
/// the `__session` cookie.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_owned());
    }
    CookieJar::from_headers(headers)
        .get(SESSION_COOKIE)
        .map(|cookie| cookie.value().to_owned())
}

/// The signed-in user of a request. Extracting it verifies the session
/// token and, when the user has no row yet (Clerk's webhook has not arrived),
/// creates the row from the token's claims (DESIGN §3, fallback).
///
/// Rejection: [`AppError::Unauthorized`] (401) for no or a bad token, or a
/// deleted user; [`AppError::Internal`] for a database error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = session_token(&parts.headers).ok_or(AppError::Unauthorized)?;
        let claims = state.auth.verify(&token).await.map_err(|error| {
            tracing::debug!(%error, "session refused");
            AppError::Unauthorized
        })?;
        user_for_claims(state, &claims).await.map(CurrentUser)
    }
}

/// When the session token of a request expires (`exp`, Unix seconds), or
/// `None` without a valid token. Verified tokens are remembered, so after
/// the request's [`CurrentUser`] this costs a lookup.
pub async fn session_expiry(state: &AppState, headers: &HeaderMap) -> Option<i64> {
    let token = session_token(headers)?;
    state
        .auth
        .verify(&token)
        .await
        .ok()
        .map(|claims| claims.exp)
}

/// The live user for verified claims, created from the claims when missing.
///
/// # Errors
/// [`AppError::Unauthorized`] for a tombstoned user; [`AppError::Internal`]
/// for a database error.
pub async fn user_for_claims(state: &AppState, claims: &SessionClaims) -> Result<User, AppError> {
    if let Some((user, deleted)) = find_by_clerk_id(&state.pool, &claims.sub).await? {
        return if deleted {
            Err(AppError::Unauthorized)
        } else {
            Ok(user)
        };
    }
    // No row yet: create it now, from Clerk's Backend API when Knock has the
    // secret key, else from the claims; the webhook fills in the rest later
    // (its Clerk `updated_at` is newer than a stub's, which has none).
    let profile = match &state.clerk_api {
        Some(api) => match api.user(&claims.sub).await {
            Ok(user) => Some(user),
            Err(error) => {
                tracing::warn!(%error, "Clerk Backend API unavailable; creating the user from the token");
                None
            }
        },
        None => None,
    };
    let user = profile.unwrap_or_else(|| ClerkUser {
        id: claims.sub.clone(),
        ..ClerkUser::default()
    });
    if user.id != claims.sub {
        return Err(AppError::Unauthorized);
    }
    if let SyncOutcome::Created(_) = upsert_from_clerk(&state.pool, &user).await? {
        // The welcome email was enqueued with the user.
        state.jobs.wakeup.notify_one();
    }
    match find_by_clerk_id(&state.pool, &claims.sub).await? {
        Some((user, false)) => Ok(user),
        _ => Err(AppError::Unauthorized),
    }
}

/// In a server function: the signed-in user, or [`AppError::Unauthorized`]
/// (with the response status set to 401).
///
/// # Errors
/// [`AppError::Unauthorized`] without a valid session;
/// [`AppError::Internal`] when the database fails.
pub async fn current_user() -> Result<User, AppError> {
    request_user().await.map_err(crate::error::respond)
}

/// The signed-in user of one request, looked up at most once.
///
/// Rendering a chat page runs six server functions (the session, the DM
/// list, the people list, the other member, the DM, its messages), and each
/// needs the user: without this, each verified the session token and read
/// the `users` row again. The router provides a fresh one per request (see
/// [`crate::server::startup::router`]); the result, error included, holds
/// for that request only.
#[derive(Clone, Default)]
pub struct RequestUser(std::sync::Arc<tokio::sync::OnceCell<Result<User, AppError>>>);

/// In a server function: the request's user as [`CurrentUser`] finds it,
/// through the request's [`RequestUser`] when there is one. Sets no status.
///
/// # Errors
/// As [`current_user`].
pub async fn request_user() -> Result<User, AppError> {
    let state = AppState::current()?;
    let look_up = || async {
        let mut parts = leptos::prelude::use_context::<Parts>().ok_or(AppError::Internal)?;
        CurrentUser::from_request_parts(&mut parts, &state)
            .await
            .map(|CurrentUser(user)| user)
    };
    match leptos::prelude::use_context::<RequestUser>() {
        Some(RequestUser(cell)) => cell.get_or_init(look_up).await.clone(),
        None => look_up().await,
    }
}

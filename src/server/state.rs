//! What every handler and server function can reach.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{
    auth::server::{ClerkApi, SessionKeys},
    error::AppError,
};

/// Shared server state: given to axum handlers as `State<AppState>` and to
/// server functions through [`AppState::current`].
#[derive(Clone, Debug)]
pub struct AppState {
    /// Leptos's options (site root, output name, …).
    pub leptos_options: LeptosOptions,
    /// The one connection pool.
    pub pool: PgPool,
    /// Session-token verification (and minting, in dev mode).
    pub auth: Arc<SessionKeys>,
    /// Svix verification of Clerk's webhooks; `None` without
    /// `CLERK_WEBHOOK_SIGNING_SECRET` (the endpoint then answers 503).
    pub webhook: Option<Arc<svix::webhooks::Webhook>>,
    /// Wakes the webhook worker when an event was stored.
    pub webhook_wakeup: Arc<Notify>,
    /// This process's queue of sends, written in batches.
    pub sends: Arc<crate::messages::group_commit::Sends>,
    /// This process's real-time wake-ups.
    pub hub: Arc<crate::realtime::server::Hub>,
    /// One typing hint per user per DM every 2 s.
    pub typing_limiter: Arc<crate::messages::server::TypingLimiter>,
    /// Sends, edits and deletes per user (`KNOCK_MESSAGES_PER_SECOND`,
    /// `KNOCK_MESSAGE_BURST`).
    pub send_limiter: Arc<crate::messages::server::SendLimiter>,
    /// Event streams one user may hold open on this instance
    /// (`KNOCK_MAX_STREAMS_PER_USER`).
    pub max_streams_per_user: u32,
    /// Invites per user per minute (`KNOCK_INVITES_PER_MINUTE`).
    pub invite_limiter: Arc<crate::dms::server::InviteLimiter>,
    /// Clerk's Backend API, when `CLERK_SECRET_KEY` is set.
    pub clerk_api: Option<ClerkApi>,
    /// `CLERK_PUBLISHABLE_KEY`, for the sign-in page (Clerk mode).
    pub clerk_publishable_key: Option<String>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl FromRef<AppState> for PgPool {
    fn from_ref(state: &AppState) -> Self {
        state.pool.clone()
    }
}

impl AppState {
    /// Drops the rate limiters' state of users whose limits have fully
    /// recovered, so that the limiters hold only recently active users.
    pub fn forget_idle_limits(&self) {
        self.send_limiter.retain_recent();
        self.send_limiter.shrink_to_fit();
        self.invite_limiter.retain_recent();
        self.invite_limiter.shrink_to_fit();
        self.typing_limiter.retain_recent();
        self.typing_limiter.shrink_to_fit();
    }

    /// In a server function: the state provided by the router.
    ///
    /// # Errors
    /// [`AppError::Internal`] outside a request. That happens once at
    /// start-up, when Leptos renders the app to list its routes and the
    /// app's resources call their server functions directly.
    pub fn current() -> Result<Self, AppError> {
        leptos::prelude::use_context::<Self>().ok_or(AppError::Internal)
    }
}

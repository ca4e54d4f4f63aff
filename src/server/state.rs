//! What every handler and server function can reach.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use sqlx::PgPool;

use super::{
    config::{KnockSettings, Settings},
    tasks::BackgroundTasks,
};
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
    /// What background jobs need (the mailer), and the worker's wake-up.
    pub jobs: Arc<crate::jobs::server::Jobs>,
    /// `KNOCK_ADMIN_USER_IDS`: who may see `/admin/jobs` and `/metrics`.
    pub operators: Arc<Vec<String>>,
    /// Request, stream, message and job counts for `/metrics`.
    pub metrics: Arc<super::metrics::Metrics>,
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
    /// Uploaded images decoded at once: one per core, so that uploads
    /// take turns rather than memory and every core.
    pub image_work: Arc<tokio::sync::Semaphore>,
    /// Where images are kept when not in Postgres (`KNOCK_ATTACHMENT_STORE`).
    pub images: Option<crate::attachments::store::ImageStore>,
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
    /// The state of one server, as the server and the tests both build it:
    /// `pool`, the session keys `auth`, the Svix verifier `webhook` and the
    /// Backend API client `clerk_api` when configured, and the limits in
    /// `settings`. Starts the real-time hub's reader on `tasks`; the other
    /// background work starts with [`Self::spawn_background`].
    pub fn new(
        settings: &Settings,
        pool: PgPool,
        auth: Arc<SessionKeys>,
        webhook: Option<Arc<svix::webhooks::Webhook>>,
        clerk_api: Option<ClerkApi>,
        tasks: &BackgroundTasks,
    ) -> Self {
        let knock = &settings.knock;
        Self {
            leptos_options: settings.leptos.clone(),
            hub: crate::realtime::server::Hub::start(&pool, tasks),
            pool,
            auth,
            webhook,
            // The configured mailer when it parses (start-up has checked it),
            // else the outbox.
            jobs: Arc::new(crate::jobs::server::Jobs::new(
                knock.mailer().unwrap_or_else(|_| {
                    crate::mail::Mailer::new(None, None, &knock.data_dir)
                        .expect("the default sender parses")
                }),
            )),
            operators: Arc::new(knock.operators()),
            metrics: Arc::default(),
            clerk_api,
            sends: Default::default(),
            invite_limiter: Arc::new(crate::dms::server::invite_limiter(knock.invites_per_minute)),
            send_limiter: Arc::new(crate::messages::server::send_limiter(
                knock.messages_per_second,
                knock.message_burst,
            )),
            max_streams_per_user: knock.max_streams_per_user,
            typing_limiter: Arc::new(crate::messages::server::typing_limiter()),
            clerk_publishable_key: knock.clerk.publishable_key.clone(),
            image_work: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            images: None,
        }
    }

    /// Starts the server's background work on `tasks`: the job worker,
    /// LISTEN, the presence heartbeat, pruning of the event log, of
    /// processed webhooks and of images never sent, and dropping per-user state of quiet users.
    pub fn spawn_background(&self, tasks: &BackgroundTasks, knock: &KnockSettings) {
        use crate::webhooks::worker;
        let pool = &self.pool;
        for _ in 0..crate::jobs::server::WORKERS {
            tasks.spawn(
                "job worker",
                crate::jobs::server::work(pool.clone(), self.jobs.clone()),
            );
        }
        tasks.spawn("listen", self.hub.clone().listen(pool.clone()));
        tasks.spawn(
            "presence heartbeat",
            self.hub.presence.clone().heartbeat(pool.clone()),
        );
        tasks.spawn(
            "event log pruning",
            crate::realtime::server::prune_forever(pool.clone()),
        );
        let (images, store) = (pool.clone(), self.images.clone());
        tasks.spawn("unsent image pruning", async move {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                ticks.tick().await;
                if let Err(error) =
                    crate::attachments::server::prune_unsent(&images, store.as_ref()).await
                {
                    tracing::warn!(%error, "could not prune unsent images");
                }
            }
        });
        tasks.spawn(
            "webhook pruning",
            worker::prune_forever(pool.clone(), knock.webhook_retention_days),
        );
        let state = self.clone();
        tasks.spawn("forget idle users", async move {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                ticks.tick().await;
                state.hub.forget_idle();
                state.forget_idle_limits();
            }
        });
    }

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

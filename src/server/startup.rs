//! Start-up: database, router with its layers, listener, graceful shutdown.
//! `main` and the integration tests both start Knock through [`Application`].

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use svix::webhooks::Webhook;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    routing::{get, post},
};
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::{
    compression::{
        CompressionLayer,
        predicate::{NotForContentType, Predicate, SizeAbove},
    },
    limit::RequestBodyLimitLayer,
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use super::{
    config::{KnockSettings, Settings},
    database::{Database, DatabaseError},
    health,
    state::AppState,
    tasks::BackgroundTasks,
};
use crate::{
    app::{App, shell},
    attachments::{MAX_BYTES, UPLOAD_PATH},
    auth::{
        self,
        server::{ClerkApi, JWKS_REFETCH, KeyError, RequestUser, SessionKeys},
    },
    webhooks,
};

/// Why Knock could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be started, reached or migrated.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The session keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// `KNOCK_ATTACHMENT_STORE` names no store Knock supports.
    #[error("invalid setting KNOCK_ATTACHMENT_STORE: {0}")]
    AttachmentStore(String),
    /// `KNOCK_SMTP_URL` or `KNOCK_MAIL_FROM` does not parse.
    #[error(transparent)]
    Mail(#[from] crate::mail::MailSettingError),
    /// `CLERK_WEBHOOK_SIGNING_SECRET` is not a Svix secret.
    #[error("invalid setting CLERK_WEBHOOK_SIGNING_SECRET: {0}")]
    WebhookSecret(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `LEPTOS_SITE_ADDR`.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A Knock server that is bound and connected but not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    database: Database,
    grace: Duration,
    limits: super::serve::ConnectionLimits,
    hub: Arc<crate::realtime::server::Hub>,
    tasks: BackgroundTasks,
    metrics_addr: Option<SocketAddr>,
}

impl Application {
    /// Connects the database (starting the embedded cluster when
    /// `DATABASE_URL` is unset), applies migrations, builds the router and
    /// binds `LEPTOS_SITE_ADDR` (port 0 picks a free port; see
    /// [`Self::local_addr`]).
    ///
    /// # Errors
    /// [`StartupError`] naming what failed.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let knock = &settings.knock;
        let parties = knock.clerk.authorized_parties();
        let auth = match (&knock.clerk.jwt_key, &knock.clerk.jwks_url) {
            (Some(pem), _) => SessionKeys::clerk(pem, parties)?,
            (None, Some(url)) => SessionKeys::clerk_jwks(url, parties, JWKS_REFETCH),
            (None, None) => SessionKeys::dev(&knock.data_dir.join("dev-session-key.pem")).await?,
        };
        let clerk_api = knock
            .clerk
            .secret_key
            .clone()
            .map(|secret| ClerkApi::new(&knock.clerk.api_url, secret));
        let webhook = match &knock.clerk.webhook_signing_secret {
            Some(secret) => Some(Arc::new(
                Webhook::new(secret.expose_secret())
                    .map_err(|e| StartupError::WebhookSecret(e.to_string()))?,
            )),
            None => None,
        };
        let images = knock
            .attachment_store
            .as_deref()
            .map(crate::attachments::store::ImageStore::from_url)
            .transpose()
            .map_err(StartupError::AttachmentStore)?;
        let mailer = knock.mailer()?;
        tracing::info!("email goes {}", mailer.describe());
        let database = Database::connect(knock).await?;
        let addr = settings.site_addr();
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(source) => {
                database.shutdown().await;
                return Err(StartupError::Bind { addr, source });
            }
        };
        let metrics_listener = match knock.metrics_addr {
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(listener) => Some(listener),
                Err(source) => {
                    database.shutdown().await;
                    return Err(StartupError::Bind { addr, source });
                }
            },
            None => None,
        };
        let tasks = BackgroundTasks::default();
        let mut state = AppState::new(
            &settings,
            database.pool.clone(),
            Arc::new(auth),
            webhook,
            clerk_api,
            &tasks,
        );
        state.images = images;
        state.jobs = Arc::new(crate::jobs::server::Jobs::new(mailer));
        state.spawn_background(&tasks, knock);
        let metrics_addr = metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        if let Some(listener) = metrics_listener {
            let metrics = Router::new()
                .route("/metrics", get(super::metrics::open_metrics))
                .with_state(state.clone());
            tracing::info!(addr = ?listener.local_addr(), "serving /metrics");
            tasks.spawn("metrics listener", async move {
                if let Err(error) = axum::serve(listener, metrics).await {
                    tracing::error!(%error, "the metrics listener stopped");
                }
            });
        }
        Ok(Self {
            listener,
            tasks,
            hub: state.hub.clone(),
            router: router(state, &settings.knock),
            database,
            grace: settings.knock.shutdown_grace(),
            limits: settings.knock.connection_limits(),
            metrics_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address bound for `KNOCK_METRICS_ADDR`, if set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The shared pool (tests inspect the database through it).
    pub fn pool(&self) -> sqlx::PgPool {
        self.database.pool.clone()
    }

    /// Serves until `shutdown` completes, then lets open requests finish for
    /// up to `KNOCK_SHUTDOWN_GRACE_SECS`, closes the pool and stops the
    /// embedded cluster.
    ///
    /// # Errors
    /// The listener's I/O error, if its address cannot be read.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Self {
            listener,
            router,
            database,
            grace,
            hub,
            limits,
            tasks,
            metrics_addr: _,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        let shutdown = async {
            shutdown.await;
            tracing::info!("shutting down: draining open requests");
            // Event streams never finish by themselves.
            hub.close_streams();
        };
        super::serve::serve(listener, router, limits, grace, shutdown).await;
        // Background work stops before this instance's presence is cleared
        // (a heartbeat would write it again) and the pool closes.
        tasks.stop().await;
        hub.presence.leave(&database.pool).await;
        // The other instances hear of this one's last changes (its users
        // going offline) before the pool closes.
        if let Err(error) = hub.wakeups.flush(&database.pool).await {
            tracing::warn!(%error, "could not NOTIFY on shutdown");
        }
        database.shutdown().await;
        Ok(())
    }
}

/// The largest upload body: an image of [`MAX_BYTES`] and the form
/// around it.
const UPLOAD_LIMIT: usize = MAX_BYTES + 64 * 1024;

async fn api_not_found() -> crate::error::AppError {
    crate::error::AppError::NotFound
}

/// The whole HTTP surface with its layers: `/healthz`, the server functions
/// and pages of the Leptos app, and the static files of `site-root`. Each
/// page and server-function request gets a fresh [`RequestUser`], so its
/// server functions look the signed-in user up once.
pub fn router(state: AppState, settings: &KnockSettings) -> Router {
    let routes = route_list();
    let leptos_options = state.leptos_options.clone();
    // WASM is served as it is: cargo-leptos already optimised it; small
    // responses are not worth it.
    let compress = SizeAbove::new(256).and(NotForContentType::const_new("application/wasm"));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(super::metrics::metrics))
        .route("/api/webhooks/clerk", post(webhooks::clerk_webhook))
        .route("/api/avatars/{user_id}", get(crate::users::server::avatar))
        // Any other path under /api/ that no server function answers is a
        // JSON 404, not the app's HTML page.
        .route("/api", axum::routing::any(api_not_found))
        .route("/api/", axum::routing::any(api_not_found))
        .route("/api/{*path}", axum::routing::any(api_not_found))
        .leptos_routes_with_context(
            &state,
            routes,
            || provide_context(RequestUser::default()),
            move || shell(leptos_options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(|| provide_context(RequestUser::default()), shell))
        .layer(axum::middleware::map_response(crate::error::error_status))
        // The compressor's response body holds every encoder's state
        // inline for as long as the response lasts: the event stream, which
        // is never compressed, is routed past it.
        .layer(CompressionLayer::new().compress_when(compress))
        .route("/api/events", get(crate::realtime::server::events))
        .route(
            "/api/attachments/{id}",
            get(crate::attachments::server::image),
        )
        .route(
            "/api/attachments/{id}/thumbnail",
            get(crate::attachments::server::thumbnail),
        )
        .layer(RequestBodyLimitLayer::new(settings.body_limit_bytes))
        // An image upload has a limit of its own: the image and the form
        // around it.
        .route(
            UPLOAD_PATH,
            post(crate::attachments::server::upload)
                .layer(axum::extract::DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::server::refresh_expired_session,
        ))
        .layer(axum::middleware::from_fn(auth::server::refuse_cross_origin))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::server::refuse_foreign_host,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::metrics::track,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                // Browser-facing hardening (DESIGN §9): no MIME sniffing, no
                // framing by other sites (clickjacking), no page URL (a
                // DM's, with the other user's id) in the Referer of links
                // to other sites.
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("frame-ancestors 'none'"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("DENY"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    settings.request_timeout(),
                )),
        )
        .with_state(state)
}

/// The app's routes, generated once per process and then copied.
///
/// Leptos's [`generate_route_list`] renders the whole app to find its
/// routes, and while it does, a process-wide flag makes every resource
/// that starts loading anywhere in the process wait forever
/// (`SuppressResourceLoad` in `leptos_server`; leptos-rs/leptos#4773). A
/// page rendering at that moment never finishes: a 404 page ends in 408 at
/// the request timeout, a streamed page never ends. So only the first
/// [`router`] of a process generates them, before any page is served; a
/// second instance in one process, or a test's router per request, reuses
/// the list.
fn route_list() -> Vec<leptos_axum::AxumRouteListing> {
    static ROUTES: std::sync::OnceLock<Vec<leptos_axum::AxumRouteListing>> =
        std::sync::OnceLock::new();
    ROUTES.get_or_init(|| generate_route_list(App)).clone()
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

//! What every handler and server function can reach.

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use sqlx::PgPool;

/// Shared server state: given to axum handlers as `State<AppState>` and to
/// server functions through `expect_context::<AppState>()`.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Leptos's options (site root, output name, …).
    pub leptos_options: LeptosOptions,
    /// The one connection pool.
    pub pool: PgPool,
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

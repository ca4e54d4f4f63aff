//! Request guards: dev mode answers only loopback host names, and
//! state-changing API requests from other origins are refused.

use axum::response::IntoResponse;

use crate::{error::AppError, server::state::AppState};

/// Dev mode on a loopback address answers only requests whose `Host` is a
/// loopback name (`localhost`, `*.localhost`, `127.0.0.1`, `[::1]`, any
/// port): a site whose DNS name is made to point at 127.0.0.1 (DNS
/// rebinding) cannot reach dev sign-in, whose sessions need no password.
/// Other requests get 400. A request without `Host` (not from a browser)
/// passes, and so does everything in Clerk mode or when dev mode listens
/// on another address (`KNOCK_ALLOW_DEV_AUTH=1`).
pub async fn refuse_foreign_host(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let guarded = state.auth.is_dev() && state.leptos_options.site_addr.ip().is_loopback();
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .map(|v| v.to_str().unwrap_or_default());
    if guarded && let Some(host) = host {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !port.contains(']') => name,
            _ => host,
        };
        let name = name.to_ascii_lowercase();
        let loopback = name == "localhost"
            || name.ends_with(".localhost")
            || name == "127.0.0.1"
            || name == "[::1]";
        if !loopback {
            tracing::warn!(%host, "refused a request for a foreign host in dev mode");
            return AppError::BadRequest("This dev-mode server answers only to localhost.".into())
                .into_response();
        }
    }
    next.run(request).await
}

/// Refuses state-changing requests from other origins (DESIGN §6): a
/// `POST`/`PUT`/`PATCH`/`DELETE` under `/api/` whose `Origin` header is set
/// and names another host than the request's `Host` (or, behind a reverse
/// proxy that rewrites `Host`, the first `X-Forwarded-Host`) gets 403 and
/// changes nothing. Browsers always send `Origin` on cross-origin requests,
/// so this stops cross-site form posts, which cannot set
/// `X-Forwarded-Host`; requests without `Origin` (other programs) pass. The
/// Clerk webhook is exempt: Svix signs it.
pub async fn refuse_cross_origin(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    let path = request.uri().path();
    let changes_state = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if changes_state && path.starts_with("/api/") && !path.starts_with("/api/webhooks/") {
        let headers = request.headers();
        let origin_host = headers
            .get(axum::http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(|origin| {
                origin
                    .split_once("://")
                    .map_or(origin, |(_, rest)| rest)
                    .to_owned()
            });
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok());
        let forwarded_host = headers
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim);
        if let Some(origin_host) = origin_host
            && Some(origin_host.as_str()) != host
            && Some(origin_host.as_str()) != forwarded_host
        {
            tracing::warn!(origin = %origin_host, ?host, %path, "refused a cross-origin request");
            return AppError::Forbidden.into_response();
        }
    }
    next.run(request).await
}

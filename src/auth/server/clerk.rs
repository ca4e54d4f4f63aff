//! Clerk's other surfaces: the Frontend API named by a publishable key,
//! the Backend API call for a user's profile, and the page that lets
//! ClerkJS refresh an expired session before the app renders.

use axum::{http::HeaderMap, response::IntoResponse};
use axum_extra::extract::CookieJar;

use super::{request::session_token, tokens::TokenError};
use crate::{server::state::AppState, users::server::ClerkUser};

/// The Frontend API host encoded in a Clerk publishable key: `pk_test_` or
/// `pk_live_` followed by base64 of `<host>$` (Clerk docs, "Clerk
/// environment variables").
pub fn frontend_api(publishable_key: &str) -> Option<String> {
    use base64::Engine;
    let encoded = publishable_key
        .strip_prefix("pk_test_")
        .or_else(|| publishable_key.strip_prefix("pk_live_"))?;
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()?;
    let host = String::from_utf8(decoded).ok()?;
    let host = host.strip_suffix('$')?;
    (!host.is_empty()).then(|| host.to_owned())
}

/// Where ClerkJS is loaded from for a publishable key: the browser bundle
/// of `@clerk/clerk-js` v5 on the key's Frontend API (Clerk docs, "Clerk
/// JavaScript SDK", script tag). `None` for a key that names no host.
pub fn clerk_js_url(publishable_key: &str) -> Option<String> {
    frontend_api(publishable_key)
        .map(|host| format!("https://{host}/npm/@clerk/clerk-js@5/dist/clerk.browser.js"))
}

#[cfg(test)]
mod tests {
    use super::frontend_api;

    #[test]
    fn the_frontend_api_is_read_from_a_publishable_key() {
        // base64("clerk.example.com$") = Y2xlcmsuZXhhbXBsZS5jb20k
        assert_eq!(
            frontend_api("pk_test_Y2xlcmsuZXhhbXBsZS5jb20k").as_deref(),
            Some("clerk.example.com")
        );
        assert_eq!(frontend_api("sk_test_Y2xlcmsuZXhhbXBsZS5jb20k"), None);
        assert_eq!(frontend_api("pk_test_!!!"), None);
    }
}

/// Clerk's Backend API, for the one call Knock makes: `GET /v1/users/{id}`
/// (Clerk Backend API reference, "Retrieve a user"), authenticated with
/// `CLERK_SECRET_KEY` as a Bearer token.
#[derive(Clone)]
pub struct ClerkApi {
    client: reqwest::Client,
    base_url: String,
    secret_key: secrecy::SecretString,
}

impl std::fmt::Debug for ClerkApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClerkApi")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ClerkApi {
    /// Clerk's API at `base_url` (`CLERK_API_URL`, default
    /// `https://api.clerk.com`), with a 5 s timeout per call.
    pub fn new(base_url: &str, secret_key: secrecy::SecretString) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret_key,
        }
    }

    /// The Clerk User `id`.
    ///
    /// # Errors
    /// The HTTP or decoding error, as text.
    pub async fn user(&self, id: &str) -> Result<ClerkUser, String> {
        use secrecy::ExposeSecret;
        self.client
            .get(format!("{}/v1/users/{id}", self.base_url))
            .bearer_auth(self.secret_key.expose_secret())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }
}

/// Clerk's cookie that tells whether the browser has a Clerk client signed
/// in: `__client_uat` is the Unix time of the last sign-in, `0` when signed
/// out (Clerk docs, "How Clerk works": the handshake).
pub const CLIENT_UAT_COOKIE: &str = "__client_uat";

/// Clerk mode: a page request whose `__session` token has expired, from a
/// browser that Clerk still has signed in (`__client_uat` > 0), gets a short
/// "Signing you in…" page instead of the app. The page loads ClerkJS, which
/// issues a fresh `__session` (tokens live 60 s; ClerkJS refreshes them
/// while a page is open), then reloads. So a signed-in person is never
/// rendered as signed out. Everything else passes through.
pub async fn refresh_expired_session(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(key) = state.clerk_publishable_key.as_deref()
        && request.method() == axum::http::Method::GET
        && wants_html(request.headers())
        && client_uat(request.headers()) > 0
        && let Some(token) = session_token(request.headers())
        && let Err(TokenError::Invalid(error)) = state.auth.verify(&token).await
        && *error.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature
        && let Some(clerk_js) = clerk_js_url(key)
    {
        let options = &state.leptos_options;
        let css = format!("/{}/{}.css", options.site_pkg_dir, options.output_name);
        return refresh_page(key, &clerk_js, &css);
    }
    next.run(request).await
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

fn client_uat(headers: &HeaderMap) -> i64 {
    CookieJar::from_headers(headers)
        .get(CLIENT_UAT_COOKIE)
        .and_then(|c| c.value().parse().ok())
        .unwrap_or(0)
}

fn refresh_page(publishable_key: &str, clerk_js: &str, css: &str) -> axum::response::Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let html = format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Knock</title><link rel="stylesheet" href="{css}"></head><body><main class="welcome" aria-busy="true"><h1>Knock</h1><p id="refresh-status" role="status">Signing you in…</p></main><script async crossorigin="anonymous" data-clerk-publishable-key="{key}" src="{clerk_js}" onload="window.Clerk.load().then(function () {{ location.reload(); }})" onerror="document.getElementById('refresh-status').textContent = 'Could not reach Clerk to refresh your session. Reload to try again.'"></script></body></html>"#,
        css = escape(css),
        key = escape(publishable_key),
        clerk_js = escape(clerk_js),
    );
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::response::Html(html),
    )
        .into_response()
}

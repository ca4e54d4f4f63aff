//! Session verification (Clerk session tokens) and dev-mode token minting.
//!
//! A Clerk session token is an RS256 JWT (Clerk docs, "Manual JWT
//! verification"): `sub` is the user id, `exp`/`nbf` bound its life (Clerk
//! issues them for 60 s), `azp` is the origin that asked for it. Knock
//! accepts RS256 only, with 5 s of leeway on `exp` and `nbf`, and checks `azp`
//! against `CLERK_AUTHORIZED_PARTIES` when both are present.
//!
//! In dev mode (no Clerk keys) Knock signs tokens of the same shape with its
//! own RSA key, kept in `<KNOCK_DATA_DIR>/dev-session-key.pem`.

use std::path::Path;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header::AUTHORIZATION, request::Parts},
    response::IntoResponse,
};
use axum_extra::extract::CookieJar;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::{
    RsaPrivateKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding},
};
use serde::{Deserialize, Serialize};

use crate::{
    error::AppError,
    server::state::AppState,
    users::{
        User,
        server::{ClerkUser, find_by_clerk_id, upsert_from_clerk},
    },
};

/// Clerk's session cookie (Clerk docs, "Session tokens").
pub const SESSION_COOKIE: &str = "__session";
/// Leeway on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// How long a dev-mode token lives, in seconds (no refresher runs in dev mode).
pub const DEV_TOKEN_SECS: i64 = 30 * 24 * 3600;

/// The claims Knock reads from a session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The Clerk user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: Option<i64>,
    /// Authorized party: the origin the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    /// Issuer (Clerk's Frontend API URL; `knock-dev` in dev mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// Why a token was refused (logged; the client only sees 401).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No `__session` cookie and no `Authorization: Bearer`.
    #[error("no session token")]
    Missing,
    /// Signature, algorithm, `exp`, `nbf` or required claims failed.
    #[error("invalid session token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// `azp` is not one of `CLERK_AUTHORIZED_PARTIES`.
    #[error("session token for another origin: {0:?}")]
    UnauthorizedParty(Option<String>),
    /// The token names a `kid` the JWKS does not have (or no `kid`).
    #[error("session token signed with an unknown key")]
    UnknownKey,
    /// The JWKS could not be fetched.
    #[error("JWKS: {0}")]
    Jwks(String),
}

/// Verifies session tokens; in dev mode also signs them.
pub struct SessionKeys {
    source: KeySource,
    encoding: Option<EncodingKey>,
    authorized_parties: Vec<String>,
    verified: VerifiedTokens,
}

/// How many verified tokens [`SessionKeys`] remembers.
pub const VERIFIED_TOKENS: usize = 4096;

/// Tokens whose signature and `azp` were checked, with their claims: a
/// browser sends the same token with every request until it is refreshed,
/// and an RS256 check costs far more than the request around it. A
/// remembered token is still checked against `exp` and `nbf` at every use.
struct VerifiedTokens(std::sync::Mutex<lru::LruCache<String, SessionClaims>>);

impl Default for VerifiedTokens {
    fn default() -> Self {
        let capacity =
            std::num::NonZeroUsize::new(VERIFIED_TOKENS).unwrap_or(std::num::NonZeroUsize::MIN);
        Self(std::sync::Mutex::new(lru::LruCache::new(capacity)))
    }
}

impl VerifiedTokens {
    /// The claims of `token` if it was verified and is within its lifetime
    /// now (the same `exp`/`nbf` rules and leeway as the full check).
    fn get(&self, token: &str) -> Option<SessionClaims> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let leeway = LEEWAY_SECS as i64;
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let claims = tokens.get(token)?;
        let live = claims.exp >= now - leeway && claims.nbf.is_none_or(|nbf| nbf <= now + leeway);
        if live {
            Some(claims.clone())
        } else {
            tokens.pop(token);
            None
        }
    }

    fn put(&self, token: &str, claims: &SessionClaims) {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tokens.put(token.to_owned(), claims.clone());
    }
}

enum KeySource {
    /// One PEM key (`CLERK_JWT_KEY`, or the dev key).
    Static(DecodingKey),
    /// Keys by `kid` from a JWKS (`CLERK_JWKS_URL`).
    Jwks(Jwks),
}

/// A JWKS fetched on first use and again when a token names an unknown
/// `kid` (Clerk rotates keys that way), at most once per [`JWKS_REFETCH`].
struct Jwks {
    min_refetch: std::time::Duration,
    url: String,
    client: reqwest::Client,
    keys: tokio::sync::RwLock<std::collections::HashMap<String, DecodingKey>>,
    last_fetch: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// The shortest time between two JWKS fetches.
pub const JWKS_REFETCH: std::time::Duration = std::time::Duration::from_secs(10);

impl Jwks {
    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another request may have fetched while this one waited.
            if let Some(key) = self.keys.read().await.get(kid) {
                return Ok(key.clone());
            }
            if last.is_none_or(|at| at.elapsed() >= self.min_refetch) {
                *last = Some(std::time::Instant::now());
                let set: jsonwebtoken::jwk::JwkSet = self
                    .client
                    .get(&self.url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| TokenError::Jwks(e.to_string()))?
                    .json()
                    .await
                    .map_err(|e| TokenError::Jwks(e.to_string()))?;
                let keys = set
                    .keys
                    .iter()
                    .filter_map(|jwk| {
                        Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?))
                    })
                    .collect();
                *self.keys.write().await = keys;
            }
        }
        self.keys
            .read()
            .await
            .get(kid)
            .cloned()
            .ok_or(TokenError::UnknownKey)
    }
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("dev_mode", &self.encoding.is_some())
            .field("authorized_parties", &self.authorized_parties)
            .finish_non_exhaustive()
    }
}

/// Why the session keys could not be loaded (start-up stops).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `CLERK_JWT_KEY` is not an RSA public key in PEM.
    #[error("invalid setting CLERK_JWT_KEY: {0}")]
    ClerkJwtKey(jsonwebtoken::errors::Error),
    /// The dev key file could not be read, made or written.
    #[error("dev session key {path}: {message}")]
    DevKey {
        /// The key file.
        path: String,
        /// The cause.
        message: String,
    },
}

impl SessionKeys {
    /// Clerk mode: verify with Clerk's instance public key (`CLERK_JWT_KEY`,
    /// PEM, from the Clerk Dashboard's API keys page).
    ///
    /// # Errors
    /// [`KeyError::ClerkJwtKey`] when the PEM is not an RSA public key.
    pub fn clerk(public_key_pem: &str, authorized_parties: Vec<String>) -> Result<Self, KeyError> {
        let decoding =
            DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).map_err(KeyError::ClerkJwtKey)?;
        Ok(Self {
            source: KeySource::Static(decoding),
            encoding: None,
            authorized_parties,
            verified: VerifiedTokens::default(),
        })
    }

    /// Clerk mode with a JWKS (`CLERK_JWKS_URL`, e.g.
    /// `https://<frontend-api>/.well-known/jwks.json`): keys are fetched on
    /// first use and again for an unknown `kid`.
    /// `min_refetch` is the shortest time between two fetches
    /// ([`JWKS_REFETCH`] in the server).
    pub fn clerk_jwks(
        url: &str,
        authorized_parties: Vec<String>,
        min_refetch: std::time::Duration,
    ) -> Self {
        let jwks = Jwks {
            min_refetch,
            url: url.to_owned(),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            keys: Default::default(),
            last_fetch: Default::default(),
        };
        Self {
            source: KeySource::Jwks(jwks),
            encoding: None,
            authorized_parties,
            verified: VerifiedTokens::default(),
        }
    }

    /// Dev mode: load the RSA key in `path`, or make a 2048-bit one and keep
    /// it there (mode 0600) so sessions survive restarts.
    ///
    /// # Errors
    /// [`KeyError::DevKey`] when the file cannot be read, parsed or written.
    pub async fn dev(path: &Path) -> Result<Self, KeyError> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::dev_blocking(&path))
            .await
            .map_err(|e| KeyError::DevKey {
                path: String::new(),
                message: e.to_string(),
            })?
    }

    /// [`Self::dev`] on the calling thread (RSA key generation takes a
    /// moment: keep it off async workers).
    ///
    /// # Errors
    /// As [`Self::dev`].
    pub fn dev_blocking(path: &Path) -> Result<Self, KeyError> {
        let fail = |message: String| KeyError::DevKey {
            path: path.display().to_string(),
            message,
        };
        let private = match std::fs::read_to_string(path) {
            Ok(pem) => RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| fail(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                    .map_err(|e| fail(e.to_string()))?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| fail(e.to_string()))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                }
                use std::os::unix::fs::OpenOptionsExt;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| fail(e.to_string()))?;
                std::io::Write::write_all(&mut file, pem.as_bytes())
                    .map_err(|e| fail(e.to_string()))?;
                key
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| fail(e.to_string()))?;
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            source: KeySource::Static(
                DecodingKey::from_rsa_pem(public_pem.as_bytes())
                    .map_err(|e| fail(e.to_string()))?,
            ),
            encoding: Some(
                EncodingKey::from_rsa_pem(private_pem.as_bytes())
                    .map_err(|e| fail(e.to_string()))?,
            ),
            authorized_parties: Vec::new(),
            verified: VerifiedTokens::default(),
        })
    }

    /// Whether these keys sign dev-mode tokens.
    pub fn is_dev(&self) -> bool {
        self.encoding.is_some()
    }

    /// Checks a token and returns its claims. The last [`VERIFIED_TOKENS`]
    /// tokens that passed are remembered, so a repeated token costs a
    /// lookup and the `exp`/`nbf` check instead of an RS256 verification.
    ///
    /// # Errors
    /// [`TokenError`] for a bad signature, another algorithm than RS256, an
    /// expired or not-yet-valid token (±5 s), no `sub`, or a foreign `azp`.
    pub async fn verify(&self, token: &str) -> Result<SessionClaims, TokenError> {
        if let Some(claims) = self.verified.get(token) {
            return Ok(claims);
        }
        let key = match &self.source {
            KeySource::Static(key) => key.clone(),
            KeySource::Jwks(jwks) => {
                let kid = jsonwebtoken::decode_header(token)?
                    .kid
                    .ok_or(TokenError::UnknownKey)?;
                jwks.key(&kid).await?
            }
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<SessionClaims>(token, &key, &validation)?.claims;
        if !self.authorized_parties.is_empty()
            && let Some(azp) = &claims.azp
            && !self.authorized_parties.iter().any(|party| party == azp)
        {
            return Err(TokenError::UnauthorizedParty(claims.azp));
        }
        self.verified.put(token, &claims);
        Ok(claims)
    }

    /// Dev mode: a Clerk-shaped session token for `clerk_id`, or `None` in
    /// Clerk mode (Clerk issues the tokens there).
    pub fn mint_dev_token(&self, clerk_id: &str) -> Option<String> {
        let encoding = self.encoding.as_ref()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = SessionClaims {
            sub: clerk_id.to_owned(),
            exp: now + DEV_TOKEN_SECS,
            nbf: Some(now),
            iat: Some(now),
            azp: None,
            iss: Some("knock-dev".to_owned()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, encoding).ok()
    }
}

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
    upsert_from_clerk(&state.pool, &user).await?;
    match find_by_clerk_id(&state.pool, &claims.sub).await? {
        Some((user, false)) => Ok(user),
        _ => Err(AppError::Unauthorized),
    }
}

/// In a server function: sets the `__session` cookie to `token` (HttpOnly,
/// SameSite=Lax, path `/`, for [`DEV_TOKEN_SECS`]), or removes it.
pub fn set_session_cookie(token: Option<&str>) {
    use axum_extra::extract::cookie::{Cookie, SameSite};
    let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() else {
        return;
    };
    let cookie = match token {
        Some(token) => Cookie::build((SESSION_COOKIE, token.to_owned()))
            .max_age(time::Duration::seconds(DEV_TOKEN_SECS)),
        None => Cookie::build((SESSION_COOKIE, "")).max_age(time::Duration::ZERO),
    }
    .path("/")
    .http_only(true)
    .same_site(SameSite::Lax)
    .build();
    if let Ok(value) = axum::http::HeaderValue::from_str(&cookie.to_string()) {
        response.append_header(axum::http::header::SET_COOKIE, value);
    }
}

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

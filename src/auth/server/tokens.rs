//! Clerk session tokens: the claims, RS256 verification against a PEM key
//! or Clerk's JWKS, and the cache of tokens already verified.
//!
//! A Clerk session token is an RS256 JWT (Clerk docs, "Manual JWT
//! verification"): `sub` is the user id, `exp`/`nbf` bound its life (Clerk
//! issues them for 60 s), `azp` is the origin that asked for it. Knock
//! accepts RS256 only, with 5 s of leeway on `exp` and `nbf`, and checks `azp`
//! against `CLERK_AUTHORIZED_PARTIES` when both are present.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};

/// Leeway on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

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
    pub(super) source: KeySource,
    pub(super) encoding: Option<EncodingKey>,
    pub(super) authorized_parties: Vec<String>,
    pub(super) verified: VerifiedTokens,
}

/// How many verified tokens [`SessionKeys`] remembers.
pub const VERIFIED_TOKENS: usize = 4096;

/// Tokens whose signature and `azp` were checked, with their claims: a
/// browser sends the same token with every request until it is refreshed,
/// and an RS256 check costs far more than the request around it. A
/// remembered token is still checked against `exp` and `nbf` at every use.
pub(super) struct VerifiedTokens(std::sync::Mutex<lru::LruCache<String, SessionClaims>>);

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

pub(super) enum KeySource {
    /// One PEM key (`CLERK_JWT_KEY`, or the dev key).
    Static(DecodingKey),
    /// Keys by `kid` from a JWKS (`CLERK_JWKS_URL`).
    Jwks(Jwks),
}

/// A JWKS fetched on first use and again when a token names an unknown
/// `kid` (Clerk rotates keys that way), at most once per [`JWKS_REFETCH`].
pub(super) struct Jwks {
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
}

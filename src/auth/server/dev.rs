//! Dev mode (no Clerk keys): Knock signs Clerk-shaped session tokens with
//! its own RSA key, kept in `<KNOCK_DATA_DIR>/dev-session-key.pem`, and sets
//! them as the `__session` cookie.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::{
    RsaPrivateKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding},
};

use super::{
    request::SESSION_COOKIE,
    tokens::{KeyError, KeySource, SessionClaims, SessionKeys, VerifiedTokens},
};

/// How long a dev-mode token lives, in seconds (no refresher runs in dev mode).
pub const DEV_TOKEN_SECS: i64 = 30 * 24 * 3600;

impl SessionKeys {
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

//! Typed settings: `Leptos.toml`, then `.env`, then the environment.
//!
//! `Leptos.toml` holds the Leptos options the server needs when it runs
//! without cargo-leptos (`[leptos]`, the keys of [`LeptosOptions`]) and
//! Knock's own settings (`[knock]`). Environment variables win over the file:
//! `LEPTOS_*` for Leptos options (`LEPTOS_SITE_ADDR`, `LEPTOS_ENV`, …),
//! `DATABASE_URL` and `KNOCK_*` for Knock's. The names of the files that
//! cargo-leptos builds (`output-name`, `site-root`, `site-pkg-dir`) come from
//! `[package.metadata.leptos]` in `Cargo.toml`, which cargo-leptos passes to
//! the compiler, so no value is written in both files.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use leptos::config::LeptosOptions;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

/// The path of the settings file, relative to the working directory.
pub const SETTINGS_FILE: &str = "Leptos.toml";

/// A setting that is missing or malformed. Its `Display` is one line that
/// names the setting, fit to print before exiting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable holds a value of the wrong shape.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// `DATABASE_URL` is set but is not a Postgres URL.
    #[error("invalid setting DATABASE_URL: {0}")]
    DatabaseUrl(String),
}

/// Every setting the server reads at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Leptos's own options (site address, output names, environment).
    pub leptos: LeptosOptions,
    /// Knock's settings.
    pub knock: KnockSettings,
}

/// Knock's own settings, the `[knock]` table of `Leptos.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnockSettings {
    /// `DATABASE_URL`: the Postgres server to use. Unset: Knock runs its own
    /// cluster in [`Self::data_dir`] (see [`crate::server::embedded_postgres`]).
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// `KNOCK_DATA_DIR` (default `./data`): where Knock keeps its embedded
    /// Postgres cluster and its keys.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `KNOCK_REQUEST_TIMEOUT_SECS` (default 30): the longest a request may
    /// take to produce its response head, in seconds; later it gets 408.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// `KNOCK_STATEMENT_TIMEOUT_SECS` (default 15): Postgres cancels any of
    /// the server's statements that runs longer (`statement_timeout`); the
    /// request gets 503.
    #[serde(default = "default_statement_timeout_secs")]
    pub statement_timeout_secs: u64,
    /// `KNOCK_BODY_LIMIT_BYTES` (default 1 MiB): the largest request body
    /// accepted, in bytes; larger bodies get 413.
    #[serde(default = "default_body_limit_bytes")]
    pub body_limit_bytes: usize,
    /// `KNOCK_SHUTDOWN_GRACE_SECS` (default 10): on SIGINT or SIGTERM, how
    /// long open requests may run on before the server stops, in seconds.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// `KNOCK_HEADER_READ_TIMEOUT_SECS` (default 15): a request head must
    /// arrive in full within this many seconds of the connection opening or
    /// of the previous response; idle keep-alive connections close after it.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// `KNOCK_MAX_CONNECTIONS` (default 20,000): connections open at once
    /// (each event stream holds one); more wait until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `KNOCK_INVITES_PER_MINUTE` (default 20): invites one user may send
    /// per minute; more get 429.
    #[serde(default = "default_invites_per_minute")]
    pub invites_per_minute: u32,
    /// `KNOCK_MESSAGES_PER_SECOND` (default 10): messages one user may send,
    /// edit or delete per second, sustained; more get 429.
    #[serde(default = "default_messages_per_second")]
    pub messages_per_second: u32,
    /// `KNOCK_MESSAGE_BURST` (default 50): messages one user may send at
    /// once beyond the sustained rate.
    #[serde(default = "default_message_burst")]
    pub message_burst: u32,
    /// `KNOCK_MAX_STREAMS_PER_USER` (default 50): event streams one user may
    /// hold open on one instance (a closed one counts for presence's
    /// offline grace); more get 429.
    #[serde(default = "default_max_streams_per_user")]
    pub max_streams_per_user: u32,
    /// `KNOCK_WEBHOOK_RETENTION_DAYS` (default 7): days a processed webhook
    /// delivery is kept before it is deleted.
    #[serde(default = "default_webhook_retention_days")]
    pub webhook_retention_days: u32,
    /// `KNOCK_ATTACHMENT_STORE`: where images are kept, when not in
    /// Postgres: `s3://bucket/prefix` (configured by the `AWS_*` variables)
    /// or `file:///path` (see [`crate::attachments::store`]).
    #[serde(default)]
    pub attachment_store: Option<String>,
    /// `KNOCK_SMTP_URL`: the SMTP server for email, as a URL in lettre's
    /// forms (`smtps://user:pass@host:465`, `smtp://host:587?tls=required`).
    /// Unset: email is written to the outbox `{KNOCK_DATA_DIR}/outbox`.
    #[serde(default)]
    pub smtp_url: Option<SecretString>,
    /// `KNOCK_MAIL_FROM`: the sender of Knock's email (`Knock
    /// <hello@example.com>`); needed with `KNOCK_SMTP_URL`.
    #[serde(default)]
    pub mail_from: Option<String>,
    /// `KNOCK_ADMIN_USER_IDS`: comma-separated Clerk user ids (or, in dev
    /// mode, usernames) of the operators who may see `/admin/jobs` and
    /// `/metrics`.
    #[serde(default)]
    pub admin_user_ids: Option<String>,
    /// `KNOCK_METRICS_ADDR`: a second address that serves only `/metrics`,
    /// to anyone who reaches it (for a scraper on a private network).
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// `KNOCK_ALLOW_DEV_AUTH`: `1` (or `true`) lets dev mode listen on a
    /// non-loopback address (anyone who reaches it can sign in as anyone).
    #[serde(default)]
    pub allow_dev_auth: bool,
    /// Clerk's settings, the `CLERK_*` environment variables.
    #[serde(default = "default_clerk")]
    pub clerk: ClerkSettings,
}

/// Clerk's settings, under Clerk's own environment variable names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClerkSettings {
    /// `CLERK_PUBLISHABLE_KEY` (`pk_test_…` / `pk_live_…`): set = Clerk mode.
    #[serde(default)]
    pub publishable_key: Option<String>,
    /// `CLERK_SECRET_KEY` (`sk_…`): Clerk's Backend API key.
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// `CLERK_JWT_KEY`: the instance's PEM public key, for networkless
    /// session-token verification.
    #[serde(default)]
    pub jwt_key: Option<String>,
    /// `CLERK_JWKS_URL`: a JWKS to verify session tokens against.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// `CLERK_AUTHORIZED_PARTIES`: comma-separated origins accepted in `azp`.
    #[serde(default)]
    pub authorized_parties: Option<String>,
    /// `CLERK_WEBHOOK_SIGNING_SECRET` (`whsec_…`): verifies Svix deliveries.
    #[serde(default)]
    pub webhook_signing_secret: Option<SecretString>,
    /// `CLERK_API_URL` (default `https://api.clerk.com`): Clerk's Backend API.
    #[serde(default = "default_clerk_api_url")]
    pub api_url: String,
}

fn default_clerk() -> ClerkSettings {
    ClerkSettings {
        publishable_key: None,
        secret_key: None,
        jwt_key: None,
        jwks_url: None,
        authorized_parties: None,
        webhook_signing_secret: None,
        api_url: default_clerk_api_url(),
    }
}

fn default_clerk_api_url() -> String {
    "https://api.clerk.com".to_owned()
}

impl KnockSettings {
    /// The operators of `KNOCK_ADMIN_USER_IDS`, trimmed, empties dropped.
    pub fn operators(&self) -> Vec<String> {
        self.admin_user_ids
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The mailer `KNOCK_SMTP_URL` and `KNOCK_MAIL_FROM` describe.
    ///
    /// # Errors
    /// A one-line message naming the setting that does not parse.
    pub fn mailer(&self) -> Result<crate::mail::Mailer, crate::mail::MailSettingError> {
        crate::mail::Mailer::new(
            self.smtp_url.as_ref(),
            self.mail_from.as_deref(),
            &self.data_dir,
        )
    }
}

impl ClerkSettings {
    /// The origins of `CLERK_AUTHORIZED_PARTIES`, trimmed, empties dropped.
    pub fn authorized_parties(&self) -> Vec<String> {
        self.authorized_parties
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Clerk mode: `CLERK_PUBLISHABLE_KEY` is set.
    pub fn is_clerk_mode(&self) -> bool {
        self.publishable_key.is_some()
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_statement_timeout_secs() -> u64 {
    15
}
fn default_body_limit_bytes() -> usize {
    1024 * 1024
}
fn default_invites_per_minute() -> u32 {
    crate::dms::server::INVITES_PER_MINUTE
}
fn default_header_read_timeout_secs() -> u64 {
    15
}
fn default_max_connections() -> usize {
    20_000
}
fn default_messages_per_second() -> u32 {
    crate::messages::server::MESSAGES_PER_SECOND
}
fn default_message_burst() -> u32 {
    crate::messages::server::MESSAGE_BURST
}
fn default_max_streams_per_user() -> u32 {
    crate::realtime::server::MAX_STREAMS_PER_USER
}
fn default_webhook_retention_days() -> u32 {
    crate::webhooks::worker::RETENTION_DAYS
}
fn default_shutdown_grace_secs() -> u64 {
    10
}

/// Knock's environment variables and the `[knock]` keys they set.
const KNOCK_ENV: &[(&str, &str)] = &[
    ("DATABASE_URL", "database_url"),
    ("KNOCK_DATA_DIR", "data_dir"),
    ("KNOCK_REQUEST_TIMEOUT_SECS", "request_timeout_secs"),
    ("KNOCK_BODY_LIMIT_BYTES", "body_limit_bytes"),
    ("KNOCK_STATEMENT_TIMEOUT_SECS", "statement_timeout_secs"),
    ("KNOCK_SHUTDOWN_GRACE_SECS", "shutdown_grace_secs"),
    ("KNOCK_ALLOW_DEV_AUTH", "allow_dev_auth"),
    ("KNOCK_HEADER_READ_TIMEOUT_SECS", "header_read_timeout_secs"),
    ("KNOCK_MAX_CONNECTIONS", "max_connections"),
    ("KNOCK_INVITES_PER_MINUTE", "invites_per_minute"),
    ("KNOCK_MESSAGES_PER_SECOND", "messages_per_second"),
    ("KNOCK_MESSAGE_BURST", "message_burst"),
    ("KNOCK_MAX_STREAMS_PER_USER", "max_streams_per_user"),
    ("KNOCK_WEBHOOK_RETENTION_DAYS", "webhook_retention_days"),
    ("KNOCK_ATTACHMENT_STORE", "attachment_store"),
    ("KNOCK_SMTP_URL", "smtp_url"),
    ("KNOCK_MAIL_FROM", "mail_from"),
    ("KNOCK_ADMIN_USER_IDS", "admin_user_ids"),
    ("KNOCK_METRICS_ADDR", "metrics_addr"),
    ("CLERK_PUBLISHABLE_KEY", "clerk.publishable_key"),
    ("CLERK_SECRET_KEY", "clerk.secret_key"),
    ("CLERK_JWT_KEY", "clerk.jwt_key"),
    ("CLERK_JWKS_URL", "clerk.jwks_url"),
    ("CLERK_AUTHORIZED_PARTIES", "clerk.authorized_parties"),
    (
        "CLERK_WEBHOOK_SIGNING_SECRET",
        "clerk.webhook_signing_secret",
    ),
];

impl Settings {
    /// Reads `.env` (if present), [`SETTINGS_FILE`] (if present) and the
    /// environment, in rising order of precedence.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first setting that is malformed.
    pub fn load() -> Result<Self, ConfigError> {
        // `.env` only fills variables the environment does not already set.
        let _ = dotenvy::dotenv();
        Self::from_figment(
            Self::defaults()
                .merge(Toml::file(SETTINGS_FILE))
                .merge(Self::environment()),
        )
    }

    /// The built-in defaults: the names cargo-leptos compiled in.
    pub fn defaults() -> Figment {
        Figment::new()
            .merge(Serialized::default(
                "leptos.output-name",
                option_env!("LEPTOS_OUTPUT_NAME").unwrap_or(env!("CARGO_PKG_NAME")),
            ))
            .merge(Serialized::default(
                "leptos.site-root",
                option_env!("LEPTOS_SITE_ROOT").unwrap_or("target/site"),
            ))
            .merge(Serialized::default(
                "leptos.site-pkg-dir",
                option_env!("LEPTOS_SITE_PKG_DIR").unwrap_or("pkg"),
            ))
            .merge(Serialized::default("knock", serde_json::json!({})))
    }

    /// The environment as a settings source: `LEPTOS_*` into `[leptos]`
    /// (`LEPTOS_SITE_ADDR` → `site-addr`), Knock's variables into `[knock]`.
    pub fn environment() -> Figment {
        Figment::new()
            .merge(
                Env::prefixed("LEPTOS_")
                    .map(|key| format!("leptos.{}", key.as_str().replace('_', "-")).into()),
            )
            .merge(Env::raw().filter_map(|key| {
                KNOCK_ENV
                    .iter()
                    .find(|(var, _)| key.as_str().eq_ignore_ascii_case(var))
                    .map(|(_, setting)| format!("knock.{setting}").into())
            }))
    }

    /// Extracts and checks settings from any figment (tests build their own).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first setting that is malformed.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct Both {
            leptos: LeptosOptions,
            knock: KnockSettings,
        }
        // Lossy: `1`/`true`/`yes` are booleans, as operators write them.
        let Both { leptos, knock } = figment
            .extract_lossy()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        knock.check_auth(leptos.site_addr)?;
        knock.check_limits()?;
        if let Some(url) = &knock.database_url {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::DatabaseUrl(
                    "expected a postgres:// or postgresql:// URL".into(),
                ));
            }
            url.parse::<PgConnectOptions>()
                .map_err(|e| ConfigError::DatabaseUrl(e.to_string()))?;
        }
        Ok(Self { leptos, knock })
    }

    /// The address the server listens on (`LEPTOS_SITE_ADDR`).
    pub fn site_addr(&self) -> SocketAddr {
        self.leptos.site_addr
    }
}

impl KnockSettings {
    /// Start-up rules for identity (DESIGN §2): Clerk mode needs a way to
    /// verify tokens; keys of Clerk mode without the publishable key are a
    /// mistake; dev mode listens only on loopback unless allowed.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting.
    pub fn check_auth(&self, site_addr: SocketAddr) -> Result<(), ConfigError> {
        let clerk = &self.clerk;
        if clerk.is_clerk_mode() {
            if clerk.jwt_key.is_none() && clerk.jwks_url.is_none() {
                return Err(ConfigError::Invalid(
                    "CLERK_JWT_KEY: missing (Clerk mode needs CLERK_JWT_KEY or CLERK_JWKS_URL)"
                        .into(),
                ));
            }
        } else if clerk.jwt_key.is_some() || clerk.jwks_url.is_some() {
            return Err(ConfigError::Invalid(
                "CLERK_PUBLISHABLE_KEY: missing (CLERK_JWT_KEY or CLERK_JWKS_URL is set)".into(),
            ));
        } else if !site_addr.ip().is_loopback() && !self.allow_dev_auth {
            return Err(ConfigError::Invalid(format!(
                "LEPTOS_SITE_ADDR: dev sign-in refuses to listen on {site_addr}; set Clerk keys, or KNOCK_ALLOW_DEV_AUTH=1"
            )));
        }
        Ok(())
    }

    /// [`Self::request_timeout_secs`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Limits that would stop the server from serving anyone, or turn a
    /// guard off: a zero header timeout, statement timeout or connection
    /// bound.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting.
    pub fn check_limits(&self) -> Result<(), ConfigError> {
        if self.header_read_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "KNOCK_HEADER_READ_TIMEOUT_SECS: must be at least 1".into(),
            ));
        }
        if self.statement_timeout_secs == 0 {
            // 0 would mean no timeout at all to Postgres.
            return Err(ConfigError::Invalid(
                "KNOCK_STATEMENT_TIMEOUT_SECS: must be at least 1".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "KNOCK_MAX_CONNECTIONS: must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// [`Self::header_read_timeout_secs`] and [`Self::max_connections`].
    pub fn connection_limits(&self) -> crate::server::serve::ConnectionLimits {
        crate::server::serve::ConnectionLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            max_connections: self.max_connections,
        }
    }

    /// [`Self::shutdown_grace_secs`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The parsed `DATABASE_URL`, if one is set (checked by [`Settings::load`]).
    pub fn database_options(&self) -> Option<PgConnectOptions> {
        self.database_url
            .as_ref()
            .and_then(|url| url.expose_secret().parse().ok())
    }
}

/// One line naming the setting as the operator wrote it: the environment
/// variable when it is set (it wins), else the key and table of the file.
fn describe(error: figment::Error) -> String {
    let Some(error) = error.into_iter().next() else {
        return "unknown error".into();
    };
    let env_var = match error.path.as_slice() {
        [table, rest @ ..] if table == "knock" => KNOCK_ENV
            .iter()
            .find(|(_, setting)| *setting == rest.join("."))
            .map(|(var, _)| (*var).to_owned()),
        [table, key] if table == "leptos" => {
            Some(format!("LEPTOS_{}", key.replace('-', "_").to_uppercase()))
        }
        _ => None,
    };
    let name = match (env_var, error.path.split_first()) {
        (Some(var), _) if std::env::var_os(&var).is_some() => var,
        (_, Some((table, rest))) if !rest.is_empty() => {
            format!("{} in [{table}] of {SETTINGS_FILE}", rest.join("."))
        }
        _ => SETTINGS_FILE.to_owned(),
    };
    format!("{name}: {}", error.kind).replace('\n', " ")
}

#[cfg(test)]
// `figment::Jail` closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn environment_wins_over_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                SETTINGS_FILE,
                "[leptos]\nsite-addr = \"127.0.0.1:4000\"\n[knock]\ndata_dir = \"from-file\"\n",
            )?;
            jail.set_env("KNOCK_DATA_DIR", "from-env");
            let settings = Settings::from_figment(
                Settings::defaults()
                    .merge(Toml::file(SETTINGS_FILE))
                    .merge(Settings::environment()),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(settings.knock.data_dir, PathBuf::from("from-env"));
            assert_eq!(settings.site_addr().port(), 4000);
            jail.set_env("LEPTOS_SITE_ADDR", "127.0.0.1:5000");
            let settings = Settings::from_figment(
                Settings::defaults()
                    .merge(Toml::file(SETTINGS_FILE))
                    .merge(Settings::environment()),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(settings.site_addr().port(), 5000);
            Ok(())
        });
    }

    #[test]
    fn a_malformed_setting_is_named_in_one_line() {
        Jail::expect_with(|jail| {
            jail.set_env("KNOCK_BODY_LIMIT_BYTES", "lots");
            let error = Settings::from_figment(Settings::defaults().merge(Settings::environment()))
                .expect_err("a word is not a byte count");
            let line = error.to_string();
            assert!(line.contains("KNOCK_BODY_LIMIT_BYTES"), "{line}");
            assert!(!line.contains('\n'));
            Ok(())
        });
    }

    #[test]
    fn a_malformed_file_setting_names_its_key_and_table() {
        Jail::expect_with(|jail| {
            jail.create_file(SETTINGS_FILE, "[knock]\nshutdown_grace_secs = \"later\"\n")?;
            let error =
                Settings::from_figment(Settings::defaults().merge(Toml::file(SETTINGS_FILE)))
                    .expect_err("a word is not a number of seconds");
            let line = error.to_string();
            assert!(
                line.contains("shutdown_grace_secs in [knock] of Leptos.toml"),
                "{line}"
            );
            Ok(())
        });
    }

    #[test]
    fn dev_mode_refuses_a_public_listen_address_unless_allowed() {
        Jail::expect_with(|jail| {
            jail.set_env("LEPTOS_SITE_ADDR", "0.0.0.0:3000");
            let load =
                || Settings::from_figment(Settings::defaults().merge(Settings::environment()));
            let error = load().expect_err("dev sign-in on a public address");
            assert!(
                error.to_string().contains("KNOCK_ALLOW_DEV_AUTH"),
                "{error}"
            );
            jail.set_env("KNOCK_ALLOW_DEV_AUTH", "1");
            load().map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn clerk_mode_needs_a_key_to_verify_tokens() {
        Jail::expect_with(|jail| {
            jail.set_env("CLERK_PUBLISHABLE_KEY", "pk_test_Y2xlcmsuZXhhbXBsZS5jb20k");
            let error = Settings::from_figment(Settings::defaults().merge(Settings::environment()))
                .expect_err("no CLERK_JWT_KEY");
            assert!(
                error
                    .to_string()
                    .starts_with("invalid setting: CLERK_JWT_KEY"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_database_url_that_is_not_postgres_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "mysql://nope");
            let error = Settings::from_figment(Settings::defaults().merge(Settings::environment()))
                .expect_err("not a Postgres URL");
            assert!(
                error
                    .to_string()
                    .starts_with("invalid setting DATABASE_URL")
            );
            Ok(())
        });
    }
}

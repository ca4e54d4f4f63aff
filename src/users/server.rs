//! The user sync: the one place that writes `users`, shared by Clerk's
//! webhooks, the first-request fallback and dev sign-in.
//!
//! Rules (DESIGN §3):
//! - `user.created` / `user.updated` upsert on `clerk_id`; data older than the
//!   stored Clerk `updated_at` changes nothing (equal: an idempotent no-op).
//! - `user.deleted` tombstones: the profile is scrubbed, the row stays; a
//!   tombstone is never revived by a late `user.created` or `user.updated`.
//! - Usernames: Clerk's `username` when set, else derived from the first
//!   name, then the email's local part, then `user`; normalised to
//!   `[a-z0-9_-]`; on a case-insensitive clash the first free of `name2`,
//!   `name3`, … is taken, so the same data always resolves the same way.

use serde::Deserialize;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use super::User;
use crate::error::AppError;
use crate::ids::UserId;

/// The fields Knock keeps from a Clerk User object (Clerk Backend API
/// `User`, also the `data` of `user.created` / `user.updated` webhooks).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClerkUser {
    /// Clerk's user id (`user_…`), the session token's `sub`.
    pub id: String,
    /// Clerk's `username`, when the instance uses usernames.
    #[serde(default)]
    pub username: Option<String>,
    /// Clerk's `first_name`.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Clerk's `last_name`.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Clerk's `image_url`.
    #[serde(default)]
    pub image_url: Option<String>,
    /// The id of the primary entry of `email_addresses`.
    #[serde(default)]
    pub primary_email_address_id: Option<String>,
    /// Clerk's `email_addresses`.
    #[serde(default)]
    pub email_addresses: Vec<ClerkEmailAddress>,
    /// Clerk's `updated_at`: milliseconds since the Unix epoch.
    #[serde(default)]
    pub updated_at: i64,
}

/// One entry of a Clerk user's `email_addresses`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClerkEmailAddress {
    /// `idn_…`
    pub id: String,
    /// The address.
    pub email_address: String,
}

impl ClerkUser {
    /// The address whose id is `primary_email_address_id`.
    pub fn primary_email(&self) -> Option<&str> {
        let primary = self.primary_email_address_id.as_deref()?;
        self.email_addresses
            .iter()
            .find(|e| e.id == primary)
            .map(|e| e.email_address.as_str())
    }

    /// The username before clash resolution: Clerk's, else derived.
    pub fn base_username(&self) -> String {
        let email_local = self.primary_email().and_then(|e| e.split('@').next());
        [
            self.username.as_deref(),
            self.first_name.as_deref(),
            email_local,
        ]
        .into_iter()
        .flatten()
        .map(normalise_username)
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "user".to_owned())
    }
}

/// The prefix of tombstone usernames (`deleted-` + md5 of the Clerk id);
/// no live user's username starts with it.
pub const TOMBSTONE_PREFIX: &str = "deleted-";

/// Lower-case ASCII letters, digits, `_` and `-`; at most 48 characters
/// (room for a numeric suffix within the 64 the schema allows). A name that
/// would start with [`TOMBSTONE_PREFIX`] gets `deleted_` instead, so that
/// nobody can hold a deleted user's tombstone name ahead of time.
pub fn normalise_username(raw: &str) -> String {
    let name: String = raw
        .trim()
        .chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(48)
        .collect();
    match name.strip_prefix(TOMBSTONE_PREFIX) {
        Some(rest) => format!("deleted_{rest}"),
        None => name,
    }
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// A new row.
    Created(UserId),
    /// An existing row took the newer data.
    Updated(UserId),
    /// The data was not newer than what is stored; nothing changed.
    Stale(UserId),
    /// The user is tombstoned; nothing changed.
    Tombstoned(UserId),
}

impl SyncOutcome {
    /// The user's Knock id.
    pub fn user_id(self) -> UserId {
        match self {
            Self::Created(id) | Self::Updated(id) | Self::Stale(id) | Self::Tombstoned(id) => id,
        }
    }
}

/// Two writers raced on a unique key; the whole sync runs again.
const MAX_ATTEMPTS: usize = 5;

/// Inserts or updates the user `clerk` describes (see the module rules).
///
/// # Errors
/// The database error, after retrying races on `clerk_id` and usernames.
#[tracing::instrument(skip_all, fields(clerk_id = %clerk.id))]
pub async fn upsert_from_clerk(
    pool: &PgPool,
    clerk: &ClerkUser,
) -> Result<SyncOutcome, sqlx::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut tx = pool.begin().await?;
        match upsert_in(&mut tx, clerk).await {
            Ok(outcome) => {
                tx.commit().await?;
                return Ok(outcome);
            }
            Err(error) if attempt < MAX_ATTEMPTS && is_unique_race(&error) => {
                tracing::debug!(attempt, "sync raced on a unique key; retrying");
            }
            Err(error) => return Err(error),
        }
    }
}

fn is_unique_race(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.constraint())
        .is_some_and(|c| c == "users_clerk_id_key" || c == "users_username_lower_key")
}

fn clerk_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

async fn upsert_in(
    tx: &mut Transaction<'_, Postgres>,
    clerk: &ClerkUser,
) -> Result<SyncOutcome, sqlx::Error> {
    let updated_at = clerk_time(clerk.updated_at);
    let existing = sqlx::query!(
        r#"SELECT id AS "id: UserId", clerk_updated_at, deleted_at, email
           FROM users WHERE clerk_id = $1 FOR UPDATE"#,
        clerk.id,
    )
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = &existing {
        if row.deleted_at.is_some() {
            return Ok(SyncOutcome::Tombstoned(row.id));
        }
        if row
            .clerk_updated_at
            .is_some_and(|stored| stored >= updated_at)
        {
            return Ok(SyncOutcome::Stale(row.id));
        }
    }
    let username = free_username(tx, &clerk.base_username(), &clerk.id).await?;
    if let Some(row) = existing {
        sqlx::query!(
            "UPDATE users SET username = $2, email = $3, first_name = $4, last_name = $5,
                    image_url = $6, clerk_updated_at = $7, updated_at = now()
             WHERE id = $1",
            row.id as UserId,
            username,
            clerk.primary_email(),
            clerk.first_name,
            clerk.last_name,
            clerk.image_url,
            updated_at,
        )
        .execute(&mut **tx)
        .await?;
        if row.email.as_deref().is_none_or(str::is_empty) {
            welcome(tx, row.id, clerk).await?;
        }
        return Ok(SyncOutcome::Updated(row.id));
    }
    let id = sqlx::query_scalar!(
        r#"INSERT INTO users (clerk_id, username, email, first_name, last_name, image_url, clerk_updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id AS "id: UserId""#,
        clerk.id,
        username,
        clerk.primary_email(),
        clerk.first_name,
        clerk.last_name,
        clerk.image_url,
        updated_at,
    )
    .fetch_one(&mut **tx)
    .await?;
    welcome(tx, id, clerk).await?;
    Ok(SyncOutcome::Created(id))
}

/// Enqueues the user's welcome email, in the transaction that gives them
/// their first address: at creation, or when Clerk's data brings the
/// address to a user the first-request fallback created without one. At
/// most once per user (one `welcome_email` run per subject).
async fn welcome(
    tx: &mut Transaction<'_, Postgres>,
    id: UserId,
    clerk: &ClerkUser,
) -> Result<(), sqlx::Error> {
    if clerk.primary_email().is_some_and(|e| !e.is_empty()) {
        crate::jobs::server::enqueue(&mut **tx, crate::jobs::Kind::WelcomeEmail, &id.to_string())
            .await?;
    }
    Ok(())
}

/// `base`, or the first of `base2`, `base3`, … that no other user holds
/// (case-insensitively). A name this user already holds counts as free.
async fn free_username(
    tx: &mut Transaction<'_, Postgres>,
    base: &str,
    clerk_id: &str,
) -> Result<String, sqlx::Error> {
    // Creators of the same base name take turns (until commit), so that
    // many first requests at once (all "user" before the webhook arrives)
    // do not keep choosing the same suffix.
    let base_lower = base.to_lowercase();
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 1))",
        base_lower
    )
    .execute(&mut **tx)
    .await?;
    let taken = sqlx::query_scalar!(
        r#"SELECT lower(username) AS "name!" FROM users
           WHERE clerk_id <> $2 AND (lower(username) = $1 OR lower(username) LIKE $1 || '%')"#,
        base_lower,
        clerk_id,
    )
    .fetch_all(&mut **tx)
    .await?;
    let free = (1..)
        .map(|n| {
            if n == 1 {
                base.to_owned()
            } else {
                format!("{base}{n}")
            }
        })
        .find(|candidate| !taken.contains(&candidate.to_lowercase()))
        .expect("an unbounded sequence has a free name");
    Ok(free)
}

/// Tombstones the Clerk user `clerk_id` (`user.deleted`): keeps the row,
/// and removes their personal data (email, names, image URL) from every
/// table, in one transaction. A user Knock has never seen gets a tombstone
/// row, so that a late `user.created` cannot bring them back.
///
/// - `users`: the profile is emptied; the username becomes
///   [`TOMBSTONE_PREFIX`] + md5 of the Clerk id.
/// - `webhook_events`: every delivery that mentions the Clerk id keeps only
///   its type and `data.id` (applied later, it changes nothing: the user is
///   a tombstone).
/// - `jobs`: the errors of those deliveries' runs and of the user's welcome
///   email are removed; a welcome email not yet sent is skipped.
/// - `events`: `dm` events that showed the user to others show the
///   tombstone instead.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(clerk_id))]
pub async fn tombstone(pool: &PgPool, clerk_id: &str) -> Result<SyncOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"INSERT INTO users (clerk_id, username, deleted_at)
           VALUES ($1, $2 || md5($1), now())
           ON CONFLICT (clerk_id) DO UPDATE SET
               username = $2 || md5(users.clerk_id), email = NULL, first_name = NULL,
               last_name = NULL, image_url = NULL,
               deleted_at = COALESCE(users.deleted_at, now()), updated_at = now()
           RETURNING id AS "id: UserId", username"#,
        clerk_id,
        TOMBSTONE_PREFIX,
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE webhook_events
            SET payload = jsonb_build_object('type', event_type,
                                             'data', jsonb_build_object('id', $1::text))
          WHERE strpos(payload::text, $1) > 0",
        clerk_id,
    )
    .execute(&mut *tx)
    .await?;
    // An error may quote what it failed on (an address, a name).
    sqlx::query!(
        "UPDATE jobs SET last_error = 'removed: the user was deleted'
          WHERE last_error IS NOT NULL
            AND ((kind = 'clerk_webhook' AND subject IN (
                     SELECT svix_id FROM webhook_events WHERE strpos(payload::text, $1) > 0))
                 OR (kind = 'welcome_email' AND subject = $2::uuid::text))",
        clerk_id,
        row.id as UserId,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE events
            SET payload = payload || jsonb_build_object('other_user', jsonb_build_object(
                    'id', $1::uuid, 'username', $2::text, 'first_name', NULL,
                    'last_name', NULL, 'image_url', NULL))
          WHERE kind = 'dm' AND payload -> 'other_user' ->> 'id' = $1::uuid::text",
        row.id as UserId,
        row.username,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(SyncOutcome::Tombstoned(row.id))
}

/// The user with this Clerk id, and whether they are tombstoned.
///
/// # Errors
/// The database error.
pub async fn find_by_clerk_id(
    pool: &PgPool,
    clerk_id: &str,
) -> Result<Option<(User, bool)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT id AS "id: UserId", username, first_name, last_name, image_url,
                  deleted_at IS NOT NULL AS "deleted!"
           FROM users WHERE clerk_id = $1"#,
        clerk_id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        let user = User {
            id: r.id,
            username: r.username,
            first_name: r.first_name,
            last_name: r.last_name,
            image_url: r.image_url,
        };
        (user, r.deleted)
    }))
}

/// The live (not tombstoned) user with Knock id `id`.
///
/// # Errors
/// The database error.
pub async fn find_live(pool: &PgPool, id: UserId) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"SELECT id AS "id: UserId", username, first_name, last_name, image_url FROM users
           WHERE id = $1 AND deleted_at IS NULL"#,
        id as UserId,
    )
    .fetch_optional(pool)
    .await
}

/// `GET /api/avatars/{user_id}`: the identicon of `user_id`, a 5×5 pattern
/// as an 96×96 PNG (80 px and a border of 8; the `identicon-rs` crate), the same for the
/// same id forever, so it is cached for a year. Needs no session: it is
/// made from the id alone.
///
/// # Errors
/// 404 for a path that is not a UUID; 500 if the image cannot be made.
pub async fn avatar(
    axum::extract::Path(user_id): axum::extract::Path<String>,
) -> Result<impl axum::response::IntoResponse, AppError> {
    use axum::http::header;
    let id: UserId = user_id.parse().map_err(|_| AppError::NotFound)?;
    let png = tokio::task::spawn_blocking(move || {
        identicon_rs::Identicon::new(&id.to_string())
            .set_border(8)
            .set_scale(80)?
            .export_png_data()
    })
    .await
    .map_err(|_| AppError::Internal)?
    .map_err(|error| {
        tracing::error!(%error, "identicon");
        AppError::Internal
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        png,
    ))
}

//! The DM state machine (DESIGN §4), in one place. Every transition is one
//! transaction with the DM row locked (`SELECT … FOR UPDATE`), so double
//! clicks, two tabs and two servers end in one DM in one consistent state;
//! the unique `dm_key` makes the first invite of a pair win.
//!
//! | from | action | by | to |
//! | --- | --- | --- | --- |
//! | NONE | invite | either | INVITED (inviter ACCEPTED, other PENDING) |
//! | INVITED | invite | the inviter | 409 |
//! | INVITED | invite | the invitee | unchanged |
//! | INVITED | accept | the invitee | ACTIVE (both ACCEPTED) |
//! | INVITED | decline | the invitee | DECLINED (invitee DECLINED) |
//! | ACTIVE | invite | either | unchanged |
//! | DECLINED | invite | either | INVITED, roles reset to the new inviter |
//! | other | accept / decline | anyone | 409 |
//!
//! Invites are rate-limited per user ([`INVITES_PER_MINUTE`], 429). An
//! invite from someone the invitee blocked is declined silently: the inviter
//! sees an ordinary pending invite, the invitee never sees it.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sqlx::{PgPool, Postgres, Transaction};

use super::{Dm, DmStatus, DmSummary, UserWithDm};
use crate::ids::{DmId, UserId};
use crate::{
    error::AppError,
    realtime::{Event, server as realtime},
    server::state::AppState,
    users::User,
};

/// How many invites one user may send per minute by default
/// (`KNOCK_INVITES_PER_MINUTE`), bursts included.
pub const INVITES_PER_MINUTE: u32 = 20;

/// The per-user invite limiter (GCRA, the `governor` crate), per server
/// instance.
pub type InviteLimiter = DefaultKeyedRateLimiter<UserId>;

/// A limiter allowing `per_minute` invites per user per minute (at least 1).
pub fn invite_limiter(per_minute: u32) -> InviteLimiter {
    RateLimiter::keyed(Quota::per_minute(
        NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN),
    ))
}

/// The pair as the `dms` table stores it: smaller id first.
fn ordered(a: UserId, b: UserId) -> (UserId, UserId) {
    if a < b { (a, b) } else { (b, a) }
}

async fn live_user_exists(pool: &PgPool, id: UserId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL) AS "live!""#,
        id as UserId,
    )
    .fetch_one(pool)
    .await
}

async fn is_blocked(pool: &PgPool, blocker: UserId, blocked: UserId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = $1 AND blocked_id = $2) AS "blocked!""#,
        blocker as UserId,
        blocked as UserId,
    )
    .fetch_one(pool)
    .await
}

/// Our DM with `other`, or `None` (NONE). One statement: whether `other`
/// is a live user, and our DM's row if there is one.
///
/// # Errors
/// 404 when `other` is not a live user; 500 on a database error.
pub async fn get(pool: &PgPool, me: UserId, other: UserId) -> Result<Option<Dm>, AppError> {
    let (a, b) = ordered(me, other);
    let found = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE id = $3 AND deleted_at IS NULL) AS "live!",
                  d.id AS "id?: DmId", d.status AS "status?: DmStatus",
                  d.invited_by_user_id AS "invited_by_user_id?: UserId", d.invite_note,
                  (SELECT m.muted FROM dm_members m WHERE m.dm_id = d.id AND m.user_id = $4) AS muted
           FROM (SELECT 1) AS one
           LEFT JOIN dms d ON d.user_a_id = $1 AND d.user_b_id = $2"#,
        a as UserId,
        b as UserId,
        other as UserId,
        me as UserId,
    )
    .fetch_one(pool)
    .await?;
    if other != me && !found.live {
        return Err(AppError::NotFound);
    }
    Ok(match (found.id, found.status, found.invited_by_user_id) {
        (Some(id), Some(status), Some(invited_by_user_id)) => Some(Dm {
            id,
            status,
            invited_by_user_id,
            invite_note: found.invite_note,
            muted: found.muted.unwrap_or(false),
        }),
        _ => None,
    })
}

/// The note with an invite: trimmed, line breaks as `\n`; `None` when
/// absent or empty.
///
/// # Errors
/// 400 over [`super::MAX_NOTE_CHARS`] characters or holding a control
/// character other than newline and tab.
pub fn check_note(note: Option<&str>) -> Result<Option<String>, AppError> {
    let Some(note) = note else {
        return Ok(None);
    };
    let note = note.trim().replace("\r\n", "\n").replace('\r', "\n");
    crate::error::refuse_control_characters(&note, "A note")?;
    match note.chars().count() {
        0 => Ok(None),
        n if n > super::MAX_NOTE_CHARS => Err(AppError::BadRequest(format!(
            "A note can have at most {} characters; this one has {n}.",
            super::MAX_NOTE_CHARS
        ))),
        _ => Ok(Some(note)),
    }
}

/// `me` invites `other` (see the module table).
///
/// # Errors
/// 400 inviting oneself; 404 unknown or deleted user; 409 a repeat invite,
/// or inviting a user `me` blocked; 429 over the invite rate.
#[tracing::instrument(skip_all, fields(%me, %other))]
pub async fn invite(
    state: &AppState,
    me: UserId,
    other: UserId,
    note: Option<&str>,
) -> Result<Dm, AppError> {
    let pool = &state.pool;
    if me == other {
        return Err(AppError::BadRequest("You cannot invite yourself.".into()));
    }
    let note = check_note(note)?;
    if !live_user_exists(pool, other).await? {
        return Err(AppError::NotFound);
    }
    if is_blocked(pool, me, other).await? {
        return Err(AppError::Conflict(
            "You blocked this user; unblock them first.".into(),
        ));
    }
    if state.invite_limiter.check_key(&me).is_err() {
        return Err(AppError::TooManyRequests);
    }
    // An invite from someone the invitee blocked reaches only the inviter.
    let mut recipients = vec![me];
    if !is_blocked(pool, other, me).await? {
        recipients.push(other);
    }
    let mut tx = pool.begin().await?;
    let before = dm_state(&mut tx, me, other).await?;
    let dm = invite_in(&mut tx, me, other, note.as_deref()).await?;
    // Only a change is news; an unchanged DM (see the table) is not.
    let events = if before.as_ref() == Some(&dm) {
        Vec::new()
    } else {
        dm_events(&mut tx, &recipients, dm.id).await?
    };
    realtime::commit_with_events(tx, &state.hub.wakeups, &events).await?;
    Ok(dm)
}

async fn dm_state(
    tx: &mut Transaction<'_, Postgres>,
    me: UserId,
    other: UserId,
) -> Result<Option<Dm>, sqlx::Error> {
    let (a, b) = ordered(me, other);
    sqlx::query_as!(
        Dm,
        r#"SELECT id AS "id: DmId", status AS "status: DmStatus", invited_by_user_id AS "invited_by_user_id: UserId", invite_note,
                  COALESCE((SELECT m.muted FROM dm_members m WHERE m.dm_id = dms.id AND m.user_id = $3),
                           false) AS "muted!"
           FROM dms WHERE user_a_id = $1 AND user_b_id = $2"#,
        a as UserId,
        b as UserId,
        me as UserId,
    )
    .fetch_optional(&mut **tx)
    .await
}

async fn invite_in(
    tx: &mut Transaction<'_, Postgres>,
    me: UserId,
    other: UserId,
    note: Option<&str>,
) -> Result<Dm, AppError> {
    let (a, b) = ordered(me, other);
    let created = sqlx::query_as!(
        Dm,
        r#"INSERT INTO dms (user_a_id, user_b_id, status, invited_by_user_id, invite_note)
           VALUES ($1, $2, 'INVITED', $3, $4)
           ON CONFLICT (dm_key) DO NOTHING
           RETURNING id AS "id: DmId", status AS "status: DmStatus", invited_by_user_id AS "invited_by_user_id: UserId", invite_note, false AS "muted!""#,
        a as UserId,
        b as UserId,
        me as UserId,
        note,
    )
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(dm) = created {
        sqlx::query!(
            "INSERT INTO dm_members (dm_id, user_id, status)
             VALUES ($1, $2, 'ACCEPTED'), ($1, $3, 'PENDING')",
            dm.id as DmId,
            me as UserId,
            other as UserId,
        )
        .execute(&mut **tx)
        .await?;
        return Ok(dm);
    }
    // The DM exists (or a concurrent invite just made it): lock and decide.
    let dm = sqlx::query_as!(
        Dm,
        r#"SELECT id AS "id: DmId", status AS "status: DmStatus", invited_by_user_id AS "invited_by_user_id: UserId", invite_note,
                  COALESCE((SELECT m.muted FROM dm_members m WHERE m.dm_id = dms.id AND m.user_id = $3),
                           false) AS "muted!"
           FROM dms WHERE user_a_id = $1 AND user_b_id = $2 FOR UPDATE"#,
        a as UserId,
        b as UserId,
        me as UserId,
    )
    .fetch_one(&mut **tx)
    .await?;
    match dm.status {
        DmStatus::Invited if dm.invited_by_user_id == me => Err(AppError::Conflict(
            "Your invite is already waiting for an answer.".into(),
        )),
        DmStatus::Invited | DmStatus::Active => Ok(dm),
        DmStatus::Declined => {
            sqlx::query!(
                "UPDATE dm_members SET status = CASE WHEN user_id = $2 THEN 'ACCEPTED' ELSE 'PENDING' END::member_status,
                        updated_at = now()
                 WHERE dm_id = $1",
                dm.id as DmId,
                me as UserId,
            )
            .execute(&mut **tx)
            .await?;
            Ok(sqlx::query_as!(
                Dm,
                r#"UPDATE dms SET status = 'INVITED', invited_by_user_id = $2, invite_note = $3,
                          updated_at = now()
                   WHERE id = $1 RETURNING id AS "id: DmId", status AS "status: DmStatus", invited_by_user_id AS "invited_by_user_id: UserId", invite_note, false AS "muted!""#,
                dm.id as DmId,
                me as UserId,
                note,
            )
            .fetch_one(&mut **tx)
            .await?)
        }
    }
}

/// An invitee's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// INVITED → ACTIVE.
    Accept,
    /// INVITED → DECLINED.
    Decline,
}

/// The pending invitee `me` answers the invite of `dm_id`.
///
/// # Errors
/// 404 when the DM does not exist or `me` is not in it (never revealing
/// which); 409 when it is not an invite pending on `me`, or (accepting)
/// when the inviter has deleted their account since.
#[tracing::instrument(skip_all, fields(%me, %dm_id, ?answer))]
pub async fn answer(
    state: &AppState,
    me: UserId,
    dm_id: DmId,
    answer: Answer,
) -> Result<Dm, AppError> {
    let mut tx = state.pool.begin().await?;
    let dm = sqlx::query_as!(
        Dm,
        r#"SELECT id AS "id: DmId", status AS "status: DmStatus", invited_by_user_id AS "invited_by_user_id: UserId", invite_note, false AS "muted!" FROM dms WHERE id = $1 FOR UPDATE"#,
        dm_id as DmId,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let my_status = sqlx::query_scalar!(
        r#"SELECT status::text AS "status!" FROM dm_members WHERE dm_id = $1 AND user_id = $2"#,
        dm_id as DmId,
        me as UserId,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (Some(dm), Some(my_status)) = (dm, my_status) else {
        return Err(AppError::NotFound);
    };
    if dm.status != DmStatus::Invited || my_status != "PENDING" {
        return Err(AppError::Conflict(
            "There is no invite waiting for your answer.".into(),
        ));
    }
    if answer == Answer::Accept && !live_user_exists(&state.pool, dm.invited_by_user_id).await? {
        return Err(AppError::Conflict(
            "This invite can no longer be accepted: its sender deleted their account.".into(),
        ));
    }
    let (member, status) = match answer {
        Answer::Accept => ("ACCEPTED", "ACTIVE"),
        Answer::Decline => ("DECLINED", "DECLINED"),
    };
    sqlx::query!(
        "UPDATE dm_members SET status = $3::text::member_status, updated_at = now()
         WHERE dm_id = $1 AND user_id = $2",
        dm_id as DmId,
        me as UserId,
        member,
    )
    .execute(&mut *tx)
    .await?;
    let dm = sqlx::query_as!(
        Dm,
        r#"UPDATE dms SET status = $2::text::dm_status, invite_note = NULL, updated_at = now()
           WHERE id = $1 RETURNING id AS "id: DmId", status AS "status: DmStatus", invited_by_user_id AS "invited_by_user_id: UserId", invite_note, false AS "muted!""#,
        dm_id as DmId,
        status,
    )
    .fetch_one(&mut *tx)
    .await?;
    let events = dm_events(&mut tx, &[me, dm.invited_by_user_id], dm.id).await?;
    realtime::commit_with_events(tx, &state.hub.wakeups, &events).await?;
    Ok(dm)
}

struct UserDmRow {
    id: UserId,
    username: String,
    first_name: Option<String>,
    last_name: Option<String>,
    image_url: Option<String>,
    dm_id: Option<DmId>,
    dm_status: Option<DmStatus>,
    invited_by_user_id: Option<UserId>,
    invite_note: Option<String>,
    muted: Option<bool>,
    online: bool,
}

/// The longest people search, in characters (DESIGN §6).
pub const MAX_QUERY_CHARS: usize = 100;

/// Live users other than `me` and those `me` blocked, matching `query`
/// (case-insensitive, in username, first or last name), with our DM; at
/// most 100, by username. An invite from a user `me` blocked stays hidden.
///
/// The users are read in the order of the unique index on
/// `lower(username)`, so the scan stops at the hundredth match instead of
/// sorting everyone; my DMs (a few rows, through my memberships) are joined
/// to them. An empty `query` filters nothing.
///
/// # Errors
/// 500 on a database error.
pub async fn list_users(
    pool: &PgPool,
    me: UserId,
    query: &str,
) -> Result<Vec<UserWithDm>, AppError> {
    let query = query.trim();
    crate::error::refuse_control_characters(query, "A search")?;
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(AppError::BadRequest(format!(
            "A search can have at most {MAX_QUERY_CHARS} characters."
        )));
    }
    // Two statements, not one with `$2 = '' OR …`: planned once for all
    // calls, that one's plan counted on the filter to keep few users and
    // sorted all of them, where the unfiltered statement walks the index
    // (figures in docs/benchmarks.md).
    let rows = if query.is_empty() {
        sqlx::query_as!(
            UserDmRow,
            r#"WITH d AS (
                   SELECT d.id, d.status, d.invited_by_user_id, d.invite_note, m.muted,
                          CASE WHEN d.user_a_id = $1 THEN d.user_b_id ELSE d.user_a_id END AS other_id
                   FROM dm_members m JOIN dms d ON d.id = m.dm_id
                   WHERE m.user_id = $1)
                 SELECT u.id AS "id: UserId", u.username, u.first_name, u.last_name, u.image_url,
                        d.id AS "dm_id?: DmId", d.status AS "dm_status?: DmStatus",
                        d.invited_by_user_id AS "invited_by_user_id?: UserId", d.invite_note,
                        d.muted AS "muted?",
                        CASE WHEN d.status = 'ACTIVE'
                             THEN has_live_stream(u.id) AND NOT blocked_between($1, u.id)
                             ELSE false END AS "online!"
                 FROM users u
                 LEFT JOIN d ON d.other_id = u.id
                 WHERE u.id <> $1 AND u.deleted_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = $1 AND blocked_id = u.id)
                 ORDER BY lower(u.username)
                 LIMIT 100"#,
            me as UserId,
        )
        .fetch_all(pool)
        .await?
    } else {
        let pattern = format!(
            "%{}%",
            query
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        sqlx::query_as!(
            UserDmRow,
            r#"WITH d AS (
                   SELECT d.id, d.status, d.invited_by_user_id, d.invite_note, m.muted,
                          CASE WHEN d.user_a_id = $1 THEN d.user_b_id ELSE d.user_a_id END AS other_id
                   FROM dm_members m JOIN dms d ON d.id = m.dm_id
                   WHERE m.user_id = $1)
                 SELECT u.id AS "id: UserId", u.username, u.first_name, u.last_name, u.image_url,
                        d.id AS "dm_id?: DmId", d.status AS "dm_status?: DmStatus",
                        d.invited_by_user_id AS "invited_by_user_id?: UserId", d.invite_note,
                        d.muted AS "muted?",
                        CASE WHEN d.status = 'ACTIVE'
                             THEN has_live_stream(u.id) AND NOT blocked_between($1, u.id)
                             ELSE false END AS "online!"
                 FROM users u
                 LEFT JOIN d ON d.other_id = u.id
                 WHERE u.id <> $1 AND u.deleted_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = $1 AND blocked_id = u.id)
                   AND (u.username ILIKE $2 OR u.first_name ILIKE $2 OR u.last_name ILIKE $2)
                 ORDER BY lower(u.username)
                 LIMIT 100"#,
            me as UserId,
            pattern,
        )
        .fetch_all(pool)
        .await?
    };
    Ok(rows
        .into_iter()
        .map(|r| UserWithDm {
            user: User {
                id: r.id,
                username: r.username,
                first_name: r.first_name,
                last_name: r.last_name,
                image_url: r.image_url,
            },
            online: r.online,
            dm: match (r.dm_id, r.dm_status, r.invited_by_user_id) {
                (Some(id), Some(status), Some(invited_by_user_id)) => Some(Dm {
                    id,
                    status,
                    invited_by_user_id,
                    invite_note: r.invite_note,
                    muted: r.muted.unwrap_or(false),
                }),
                _ => None,
            },
        })
        .collect())
}

struct SummaryRow {
    id: DmId,
    status: DmStatus,
    invited_by_user_id: UserId,
    invite_note: Option<String>,
    muted: bool,
    other_id: UserId,
    username: String,
    first_name: Option<String>,
    last_name: Option<String>,
    image_url: Option<String>,
    last_message: Option<String>,
    last_activity_at: time::OffsetDateTime,
    unread_count: i64,
    last_seq: i64,
    online: bool,
    last_seen_at: Option<time::OffsetDateTime>,
}

/// My DMs with the other member, newest activity first; DMs with users I
/// blocked are left out. A DM's last activity is its last state change or
/// its last message (by `seq`: one row of the index, however long the DM).
///
/// # Errors
/// 500 on a database error.
pub async fn list(pool: &PgPool, me: UserId) -> Result<Vec<DmSummary>, AppError> {
    Ok(summaries(pool, me, None).await?)
}

/// `me`'s rows of the conversation list ([`list`]), or only DM `only`'s
/// (none if `me` is not its member or blocked the other member).
async fn summaries<'c>(
    db: impl sqlx::Executor<'c, Database = Postgres>,
    me: UserId,
    only: Option<DmId>,
) -> Result<Vec<DmSummary>, sqlx::Error> {
    let rows = sqlx::query_as!(
        SummaryRow,
        r#"SELECT d.id AS "id: DmId", d.status AS "status: DmStatus",
                  d.invited_by_user_id AS "invited_by_user_id: UserId", d.invite_note, me.muted,
                  d.last_seq,
                  CASE WHEN d.status = 'ACTIVE'
                       THEN has_live_stream(u.id) AND NOT blocked_between($1, u.id)
                       ELSE false END AS "online!",
                  CASE WHEN d.status = 'ACTIVE' AND NOT blocked_between($1, u.id)
                       THEN u.last_seen_at END AS last_seen_at,
                  u.id AS "other_id: UserId", u.username, u.first_name, u.last_name, u.image_url,
                  (SELECT m.body FROM messages m WHERE m.dm_id = d.id AND m.deleted_at IS NULL
                   ORDER BY m.seq DESC LIMIT 1) AS last_message,
                  date_trunc('milliseconds', GREATEST(d.updated_at, (SELECT m.created_at FROM messages m
                      WHERE m.dm_id = d.id ORDER BY m.seq DESC LIMIT 1))) AS "last_activity_at!",
                  (SELECT count(*) FROM messages m
                   WHERE m.dm_id = d.id AND m.sender_id <> $1 AND m.seq > me.last_read_seq
                     AND m.deleted_at IS NULL) AS "unread_count!"
           FROM dm_members me
           JOIN dms d ON d.id = me.dm_id
           JOIN users u ON u.id = CASE WHEN d.user_a_id = $1 THEN d.user_b_id ELSE d.user_a_id END
           WHERE me.user_id = $1 AND ($2::uuid IS NULL OR d.id = $2)
             AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = $1 AND blocked_id = u.id)
           ORDER BY "last_activity_at!" DESC"#,
        me as UserId,
        only as Option<DmId>,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DmSummary {
            dm: Dm {
                id: r.id,
                status: r.status,
                invited_by_user_id: r.invited_by_user_id,
                invite_note: r.invite_note,
                muted: r.muted,
            },
            other_user: User {
                id: r.other_id,
                username: r.username,
                first_name: r.first_name,
                last_name: r.last_name,
                image_url: r.image_url,
            },
            last_message: r.last_message,
            last_activity_at: r.last_activity_at,
            unread_count: r.unread_count,
            last_seq: r.last_seq,
            online: r.online,
            last_seen_at: r.last_seen_at,
        })
        .collect())
}

/// The `dm` events of a handshake step of DM `dm_id`: for each of
/// `recipients`, the DM as their conversation list shows it, read in `tx`
/// (after the change). A recipient who blocked the other member gets none.
async fn dm_events(
    tx: &mut Transaction<'_, Postgres>,
    recipients: &[UserId],
    dm_id: DmId,
) -> Result<Vec<(UserId, Event)>, sqlx::Error> {
    let mut events = Vec::new();
    for &recipient in recipients {
        for row in summaries(&mut **tx, recipient, Some(dm_id)).await? {
            events.push((recipient, Event::Dm(row)));
        }
    }
    Ok(events)
}

/// Blocks (`on`) or unblocks `other` for `me`. Idempotent.
///
/// When it changes something and the two share an ACTIVE DM, each gets a
/// `presence` event about the other: offline on a block (neither sees the
/// other's presence across it), their current state on an unblock.
///
/// # Errors
/// 400 for oneself; 404 unknown user.
pub async fn set_block(
    state: &AppState,
    me: UserId,
    other: UserId,
    on: bool,
) -> Result<(), AppError> {
    if me == other {
        return Err(AppError::BadRequest("You cannot block yourself.".into()));
    }
    if !live_user_exists(&state.pool, other).await? {
        return Err(AppError::NotFound);
    }
    let mut tx = state.pool.begin().await?;
    let done = if on {
        sqlx::query!(
            "INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            me as UserId,
            other as UserId,
        )
        .execute(&mut *tx)
        .await?
    } else {
        sqlx::query!(
            "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2",
            me as UserId,
            other as UserId,
        )
        .execute(&mut *tx)
        .await?
    };
    let changed = done.rows_affected() > 0;
    let (lo, hi) = ordered(me, other);
    let active = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM dms WHERE user_a_id = $1 AND user_b_id = $2
                                             AND status = 'ACTIVE') AS "active!""#,
        lo as UserId,
        hi as UserId,
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut events = Vec::new();
    if changed && active {
        for (recipient, about) in [(me, other), (other, me)] {
            let online =
                !on && crate::realtime::presence::visible_online(&mut tx, recipient, about).await?;
            let last_seen_at = if on {
                None
            } else {
                sqlx::query_scalar!(
                    "SELECT last_seen_at FROM users WHERE id = $1",
                    about as UserId
                )
                .fetch_one(&mut *tx)
                .await?
            };
            events.push((
                recipient,
                Event::Presence(crate::realtime::PresenceEvent {
                    user_id: about,
                    online,
                    last_seen_at,
                }),
            ));
        }
    }
    realtime::commit_with_events(tx, &state.hub.wakeups, &events).await?;
    Ok(())
}

/// `me` mutes (`muted`) or unmutes their side of DM `dm_id`; `me`'s other
/// tabs and devices hear of it through a `dm` event.
///
/// # Errors
/// 404 when the DM does not exist or `me` is not in it; 409 when it is not
/// ACTIVE.
pub async fn set_muted(
    state: &AppState,
    me: UserId,
    dm_id: DmId,
    muted: bool,
) -> Result<(), AppError> {
    let mut tx = state.pool.begin().await?;
    let status = sqlx::query_scalar!(
        r#"SELECT d.status AS "status: DmStatus"
             FROM dms d JOIN dm_members m ON m.dm_id = d.id AND m.user_id = $2
            WHERE d.id = $1 FOR UPDATE OF m"#,
        dm_id as DmId,
        me as UserId,
    )
    .fetch_optional(&mut *tx)
    .await?;
    match status {
        None => return Err(AppError::NotFound),
        Some(DmStatus::Active) => {}
        Some(_) => {
            return Err(AppError::Conflict(
                "Only an active conversation can be muted.".into(),
            ));
        }
    }
    let changed = sqlx::query!(
        "UPDATE dm_members SET muted = $3, updated_at = now()
          WHERE dm_id = $1 AND user_id = $2 AND muted <> $3",
        dm_id as DmId,
        me as UserId,
        muted,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    let events = if changed {
        dm_events(&mut tx, &[me], dm_id).await?
    } else {
        Vec::new()
    };
    realtime::commit_with_events(tx, &state.hub.wakeups, &events).await?;
    Ok(())
}

/// The live users `me` blocked, by username.
///
/// # Errors
/// 500 on a database error.
pub async fn blocked_users(pool: &PgPool, me: UserId) -> Result<Vec<User>, AppError> {
    Ok(sqlx::query_as!(
        User,
        r#"SELECT u.id AS "id: UserId", u.username, u.first_name, u.last_name, u.image_url
             FROM blocks b JOIN users u ON u.id = b.blocked_id
            WHERE b.blocker_id = $1 AND u.deleted_at IS NULL
            ORDER BY lower(u.username)"#,
        me as UserId,
    )
    .fetch_all(pool)
    .await?)
}

/// `me`'s view of one of their DMs: its state and the other member.
#[derive(Debug)]
pub struct Counterpart {
    /// The DM's state.
    pub status: DmStatus,
    /// The other member.
    pub user_id: UserId,
    /// How far the other member has read (`seq`).
    pub last_read_seq: i64,
    /// The other member deleted their account: the DM is read-only.
    pub deleted: bool,
    /// One of the two blocked the other: typing, presence and read
    /// receipts do not cross (DESIGN §5).
    pub blocked: bool,
}

/// `me`'s side of DM `dm_id`; `None` when the DM does not exist or `me` is
/// not in it.
///
/// # Errors
/// The database error.
pub async fn other_member(
    pool: &PgPool,
    me: UserId,
    dm_id: DmId,
) -> Result<Option<Counterpart>, sqlx::Error> {
    sqlx::query_as!(
        Counterpart,
        r#"SELECT d.status AS "status: DmStatus", o.user_id AS "user_id: UserId", o.last_read_seq,
                  u.deleted_at IS NOT NULL AS "deleted!",
                  blocked_between($2, o.user_id) AS "blocked!"
           FROM dms d
           JOIN dm_members m ON m.dm_id = d.id AND m.user_id = $2
           JOIN dm_members o ON o.dm_id = d.id AND o.user_id <> $2
           JOIN users u ON u.id = o.user_id
           WHERE d.id = $1"#,
        dm_id as DmId,
        me as UserId,
    )
    .fetch_optional(pool)
    .await
}

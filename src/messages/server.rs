//! Messages in an ACTIVE DM (DESIGN §5): `seq` counts from 1 per DM with no
//! gaps, allocated in the sending transaction with the DM row locked; a
//! retried `client_id` returns the message it already made.

use sqlx::{FromRow, PgPool, Row};
use uuid::Uuid;

use super::{COLUMNS, Message, group_commit::Outgoing};
use crate::{
    dms::DmStatus,
    error::AppError,
    realtime::{Event, ReadEvent, TypingEvent, server as realtime},
    server::state::AppState,
};

/// The most characters a message may have after trimming.
pub const MAX_CHARS: usize = 4000;
/// Bodies over this many bytes are refused as too large (413) before any
/// counting; between [`MAX_CHARS`] characters and this, 400.
pub const MAX_BYTES: usize = 64 * 1024;
/// The most messages one `list` returns (DESIGN §6: `limit` 1–100).
pub const MAX_PAGE: i64 = 100;

/// Trims `body`, turns its line breaks into `\n` (a form posts a
/// textarea's as `\r\n`) and checks it (DESIGN §5).
///
/// # Errors
/// 413 over [`MAX_BYTES`]; 400 when empty after trimming, over
/// [`MAX_CHARS`] characters, or holding a control character other than
/// newline and tab.
pub fn check_body(body: &str) -> Result<String, AppError> {
    if body.len() > MAX_BYTES {
        return Err(AppError::PayloadTooLarge);
    }
    let body = body.trim().replace("\r\n", "\n").replace('\r', "\n");
    crate::error::refuse_control_characters(&body, "A message")?;
    match body.chars().count() {
        0 => Err(AppError::BadRequest("A message needs some text.".into())),
        n if n > MAX_CHARS => Err(AppError::BadRequest(format!(
            "A message can have at most {MAX_CHARS} characters; this one has {n}."
        ))),
        _ => Ok(body),
    }
}

/// The 409's message for a change to a DM whose other member deleted their
/// account (DESIGN §5: such DMs are read-only).
const READ_ONLY: &str = "This conversation is read-only: the other person deleted their account.";

/// `me` sends `body` to DM `dm_id`; `client_id` makes a retry return the
/// same message.
///
/// # Errors
/// 400/413 for the body (see [`check_body`]); 404 when the DM does not
/// exist or `me` is not in it; 409 when the DM is not ACTIVE or the other
/// member deleted their account; 403 when the other member blocked `me`; 429 past [`SendLimiter`]'s rate; 503 when the
/// send queue is full ([`crate::messages::group_commit::MAX_QUEUED`]).
#[tracing::instrument(skip_all, fields(%me, %dm_id))]
pub async fn send(
    state: &AppState,
    me: Uuid,
    dm_id: Uuid,
    body: &str,
    client_id: Uuid,
) -> Result<Message, AppError> {
    let body = check_body(body)?;
    check_rate(state, me)?;
    // One statement (`send_messages`), in one transaction with the sends
    // queued beside it: it locks the DM, checks, numbers, stores and
    // records the events.
    let outgoing = Outgoing {
        dm_id,
        sender_id: me,
        body,
        client_id,
    };
    let row = state.sends.send(&state.pool, outgoing).await?;
    let outcome: String = row.try_get("outcome")?;
    match outcome.as_str() {
        "sent" => {
            let message = Message::from_row(&row)?;
            state.hub.wakeups.wake();
            Ok(message)
        }
        // A retry after the first attempt committed: the same message.
        "existing" => Ok(Message::from_row(&row)?),
        "client_id_used" => Err(AppError::BadRequest(
            "client_id was already used for another DM.".into(),
        )),
        "not_found" => Err(AppError::NotFound),
        "not_active" => Err(AppError::Conflict(
            "Messages can be sent once both have accepted.".into(),
        )),
        "read_only" => Err(AppError::Conflict(READ_ONLY.into())),
        "blocked" => Err(AppError::Forbidden),
        other => {
            tracing::error!(outcome = other, "send_messages: unknown outcome");
            Err(AppError::Internal)
        }
    }
}

/// Messages of DM `dm_id` in `seq` order: after `after_seq` (the oldest
/// first), or before `before_seq` (the newest `limit` of them), or the
/// newest `limit`. `limit` defaults to 50, at most [`MAX_PAGE`].
///
/// # Errors
/// 400 for a `limit` outside 1–[`MAX_PAGE`] or a negative `seq`; 404 when
/// the DM does not exist or `me` is not in it.
pub async fn list(
    pool: &PgPool,
    me: Uuid,
    dm_id: Uuid,
    before_seq: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
) -> Result<Vec<Message>, AppError> {
    // Membership is a condition of the page's own statement (one round
    // trip); only an empty page asks whether it was empty or not mine.
    const MINE: &str = "EXISTS (SELECT 1 FROM dm_members WHERE dm_id = $1 AND user_id = $2)";
    // Postgres plans a prepared statement for its parameters' values until
    // the shared (generic) plan looks no dearer; for a DM whose statistics
    // promise fewer rows than the average (a new DM) it never does, and
    // every call would be planned anew, which costs more than running it.
    // `(SELECT $n)` hides the DM's id and the limit from the planner, so
    // each call's plan costs what the shared one does and the shared one
    // is kept.
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}."
        )));
    }
    if [before_seq, after_seq]
        .into_iter()
        .flatten()
        .any(|seq| seq < 0)
    {
        return Err(AppError::BadRequest("A seq cannot be negative.".into()));
    }
    let mut messages: Vec<Message> = match (after_seq, before_seq) {
        (Some(after), _) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM messages WHERE dm_id = (SELECT $1) AND {MINE} AND seq > $3
                 ORDER BY seq LIMIT (SELECT $4)"
            ))
            .bind(dm_id)
            .bind(me)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        (None, Some(before)) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM messages WHERE dm_id = (SELECT $1) AND {MINE} AND seq < $3
                 ORDER BY seq DESC LIMIT (SELECT $4)"
            ))
            .bind(dm_id)
            .bind(me)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        (None, None) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM messages WHERE dm_id = (SELECT $1) AND {MINE}
                 ORDER BY seq DESC LIMIT (SELECT $3)"
            ))
            .bind(dm_id)
            .bind(me)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
    };
    if messages.is_empty() {
        let member: bool = sqlx::query_scalar(&format!("SELECT {MINE}"))
            .bind(dm_id)
            .bind(me)
            .fetch_one(pool)
            .await?;
        if !member {
            return Err(AppError::NotFound);
        }
    }
    messages.sort_by_key(|m| m.seq);
    Ok(messages)
}

/// Moves `me`'s read position in DM `dm_id` up to `seq` (never back, never
/// past the last message). When it moved, both members get a `read` event
/// (`{dm_id, user_id, seq}`): my other tabs clear their unread counts. Across
/// a block (either way) only `me` gets it.
///
/// # Errors
/// 404 when the DM does not exist or `me` is not in it.
pub async fn read(state: &AppState, me: Uuid, dm_id: Uuid, seq: i64) -> Result<(), AppError> {
    if seq < 0 {
        return Err(AppError::BadRequest("A seq cannot be negative.".into()));
    }
    let mut tx = state.pool.begin().await?;
    // Both members, or only me across a block (my other tabs still hear).
    let (is_member, members): (bool, Vec<Uuid>) = sqlx::query_as(
        "SELECT coalesce(bool_or(m.user_id = $2), false),
                coalesce(array_agg(m.user_id) FILTER (WHERE m.user_id = $2 OR NOT EXISTS (
                    SELECT 1 FROM blocks b
                     WHERE (b.blocker_id, b.blocked_id) IN (($2, m.user_id), (m.user_id, $2)))),
                         '{}')
         FROM dm_members m WHERE m.dm_id = $1",
    )
    .bind(dm_id)
    .bind(me)
    .fetch_one(&mut *tx)
    .await?;
    if !is_member {
        return Err(AppError::NotFound);
    }
    let moved: Option<i64> = sqlx::query_scalar(
        "UPDATE dm_members m SET last_read_seq = LEAST($3, d.last_seq)
         FROM dms d WHERE d.id = m.dm_id AND m.dm_id = $1 AND m.user_id = $2
           AND m.last_read_seq < LEAST($3, d.last_seq)
         RETURNING m.last_read_seq",
    )
    .bind(dm_id)
    .bind(me)
    .bind(seq)
    .fetch_optional(&mut *tx)
    .await?;
    let event = moved.map(|seq| {
        Event::Read(ReadEvent {
            dm_id,
            user_id: me,
            seq,
        })
    });
    realtime::commit_with_event(tx, &state.hub.wakeups, &members, event).await?;
    Ok(())
}

/// `me` edits (`Some(body)`) or deletes (`None`) their message
/// `message_id`. Deleting erases the text and keeps the place; deleting
/// again is a no-op. Both members get a `message` event with the message.
///
/// # Errors
/// 400/413 for the body (see [`check_body`]); 404 when the message is not
/// in a DM of `me`; 403 when it is someone else's or the other member
/// blocked `me`; 409 when it was deleted (edit), the DM is not ACTIVE or the
/// other member deleted their account; 429 past [`SendLimiter`]'s rate.
#[tracing::instrument(skip_all, fields(%me, %message_id))]
pub async fn edit(
    state: &AppState,
    me: Uuid,
    message_id: Uuid,
    body: Option<&str>,
) -> Result<Message, AppError> {
    let body = body.map(check_body).transpose()?;
    check_rate(state, me)?;
    let mut tx = state.pool.begin().await?;
    let found: Option<(Uuid, Uuid, DmStatus, bool, bool, bool)> = sqlx::query_as(
        "SELECT m.dm_id, m.sender_id, d.status, m.deleted_at IS NOT NULL,
                u.deleted_at IS NOT NULL,
                EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = o.user_id AND b.blocked_id = $2)
         FROM messages m
         JOIN dms d ON d.id = m.dm_id
         JOIN dm_members me ON me.dm_id = d.id AND me.user_id = $2
         JOIN dm_members o ON o.dm_id = d.id AND o.user_id <> $2
         JOIN users u ON u.id = o.user_id
         WHERE m.id = $1 FOR UPDATE OF m",
    )
    .bind(message_id)
    .bind(me)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((dm_id, sender, status, deleted, other_gone, blocked)) = found else {
        return Err(AppError::NotFound);
    };
    if sender != me || blocked {
        return Err(AppError::Forbidden);
    }
    if status != DmStatus::Active {
        return Err(AppError::Conflict(
            "Messages can be changed only while the DM is active.".into(),
        ));
    }
    if other_gone {
        return Err(AppError::Conflict(READ_ONLY.into()));
    }
    let sql = match (body.as_deref(), deleted) {
        (Some(_), true) => {
            return Err(AppError::Conflict(
                "A deleted message cannot be edited.".into(),
            ));
        }
        (None, true) => {
            format!("SELECT {COLUMNS} FROM messages WHERE id = $1 AND $2::text IS NULL")
        }
        (Some(_), false) => format!(
            "UPDATE messages SET body = $2, edited_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ),
        (None, false) => format!(
            "UPDATE messages SET body = '', deleted_at = now()
             WHERE id = $1 AND $2::text IS NULL RETURNING {COLUMNS}"
        ),
    };
    let message: Message = sqlx::query_as(&sql)
        .bind(message_id)
        .bind(body)
        .fetch_one(&mut *tx)
        .await?;
    if deleted {
        tx.commit().await?;
        return Ok(message);
    }
    let members: Vec<Uuid> = sqlx::query_scalar("SELECT user_id FROM dm_members WHERE dm_id = $1")
        .bind(dm_id)
        .fetch_all(&mut *tx)
        .await?;
    let event = Event::Message(message.clone());
    realtime::commit_with_event(tx, &state.hub.wakeups, &members, Some(event)).await?;
    Ok(message)
}

/// The other member's read position in DM `dm_id` (0 unless ACTIVE: an
/// invite reveals no receipts).
///
/// # Errors
/// 404 when the DM does not exist or `me` is not in it.
pub async fn seen(pool: &PgPool, me: Uuid, dm_id: Uuid) -> Result<i64, AppError> {
    match crate::dms::server::other_member(pool, me, dm_id).await? {
        None => Err(AppError::NotFound),
        Some(other) if other.status == DmStatus::Active => Ok(other.last_read_seq),
        Some(_) => Ok(0),
    }
}

/// Messages one user may send, edit or delete per second by default
/// (`KNOCK_MESSAGES_PER_SECOND`), sustained.
pub const MESSAGES_PER_SECOND: u32 = 10;
/// How many messages beyond the sustained rate one user may send at once
/// by default (`KNOCK_MESSAGE_BURST`).
pub const MESSAGE_BURST: u32 = 50;

/// The per-user limiter of sends, edits and deletes (GCRA, the `governor`
/// crate), per server instance.
pub type SendLimiter = governor::DefaultKeyedRateLimiter<Uuid>;

/// A [`SendLimiter`] allowing `per_second` sustained and `burst` at once
/// (each at least 1).
pub fn send_limiter(per_second: u32, burst: u32) -> SendLimiter {
    let nonzero = |n| std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
    governor::RateLimiter::keyed(
        governor::Quota::per_second(nonzero(per_second)).allow_burst(nonzero(burst)),
    )
}

/// 429 when `me` is past [`SendLimiter`]'s rate.
fn check_rate(state: &AppState, me: Uuid) -> Result<(), AppError> {
    state
        .send_limiter
        .check_key(&me)
        .map_err(|_| AppError::TooManyRequests)
}

/// At most one `typing` event per user per DM in this period (per
/// instance); clients keep showing the hint for [`realtime::TYPING_TTL`].
pub const TYPING_THROTTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The typing throttle: one key per (user, DM).
pub type TypingLimiter = governor::DefaultKeyedRateLimiter<(Uuid, Uuid)>;

/// A [`TypingLimiter`] allowing one hint per [`TYPING_THROTTLE`].
pub fn typing_limiter() -> TypingLimiter {
    governor::RateLimiter::keyed(
        governor::Quota::with_period(TYPING_THROTTLE).expect("a non-zero period"),
    )
}

/// `me` is typing in DM `dm_id`: the other member gets a `typing` event
/// `{dm_id, user_id}`, at most one per [`TYPING_THROTTLE`]; clients show it
/// for [`realtime::TYPING_TTL`] or until a message from that user arrives.
///
/// Across a block (either way) no event is sent, and the answer is the
/// same as when one is.
///
/// # Errors
/// 404 when the DM does not exist or `me` is not in it; 409 when it is not
/// ACTIVE (an invite reveals no typing) or the other member deleted their
/// account.
pub async fn typing(state: &AppState, me: Uuid, dm_id: Uuid) -> Result<(), AppError> {
    let dm = crate::dms::server::other_member(&state.pool, me, dm_id).await?;
    let Some(other) = dm else {
        return Err(AppError::NotFound);
    };
    if other.status != crate::dms::DmStatus::Active {
        return Err(AppError::Conflict(
            "Typing is shared once both have accepted.".into(),
        ));
    }
    if other.deleted {
        return Err(AppError::Conflict(READ_ONLY.into()));
    }
    // Across a block the hint goes nowhere, and the typist is not told.
    if other.blocked || state.typing_limiter.check_key(&(me, dm_id)).is_err() {
        return Ok(());
    }
    let other = other.user_id;
    let tx = state.pool.begin().await?;
    let event = Event::Typing(TypingEvent { dm_id, user_id: me });
    realtime::commit_with_event(tx, &state.hub.wakeups, &[other], Some(event)).await?;
    Ok(())
}

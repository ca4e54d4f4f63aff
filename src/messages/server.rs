//! Messages in an ACTIVE DM (DESIGN §5): `seq` counts from 1 per DM with no
//! gaps, allocated in the sending transaction with the DM row locked; a
//! retried `client_id` returns the message it already made.

use sqlx::PgPool;
use uuid::Uuid;

use super::{
    Attachment, Message, MessageBody, REACTIONS, Reactions, ReplyTo, SearchHit,
    group_commit::Outgoing,
};
use crate::ids::{AttachmentId, DmId, MessageId, UserId};
use crate::{
    dms::DmStatus,
    error::AppError,
    realtime::{Event, ReactionEvent, ReadEvent, TypingEvent, server as realtime},
    server::state::AppState,
};

/// `sqlx::query_as!` for [`Message`]s: `$head` comes before the message
/// columns (`SELECT` or `… RETURNING`), `$tail` after them. The column list
/// is the one place that says how a row of `messages` becomes a [`Message`]
/// (timestamps to the millisecond, as the `message` event carries them).
macro_rules! query_messages {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Message,
            $head
                + r#" id AS "id: MessageId", dm_id AS "dm_id: DmId", seq,
                      sender_id AS "sender_id: UserId", body, client_id,
                      date_trunc('milliseconds', created_at) AS "created_at!",
                      date_trunc('milliseconds', edited_at) AS edited_at,
                      deleted_at IS NOT NULL AS "deleted!",
                      message_reactions(id) AS "reactions!: Reactions",
                      message_reply_to(reply_to_id) AS "reply_to: ReplyTo",
                      attachment_json(attachment_id) AS "attachment: Attachment" "#
                + $tail
            $(, $arg)*
        )
    };
}

/// The most messages one `list` returns (DESIGN §6: `limit` 1–100).
pub const MAX_PAGE: i64 = 100;

/// The 409's message for a change to a DM whose other member deleted their
/// account (DESIGN §5: such DMs are read-only).
const READ_ONLY: &str = "This conversation is read-only: the other person deleted their account.";

/// `me` sends `body` to DM `dm_id`, answering `reply_to_id` and carrying
/// the image `attachment_id` when given; `client_id` makes a retry return
/// the same message.
///
/// # Errors
/// 400/413 for the body (see [`MessageBody::parse`]); 400 without both
/// body and image, for a `reply_to_id` not in the DM, or an
/// `attachment_id` that is not `me`'s upload to it or was sent already; 404 when the DM does not
/// exist or `me` is not in it; 409 when the DM is not ACTIVE or the other
/// member deleted their account; 403 when the other member blocked `me`; 429 past [`SendLimiter`]'s rate; 503 when the
/// send queue is full ([`crate::messages::group_commit::MAX_QUEUED`]).
#[tracing::instrument(skip_all, fields(%me, %dm_id))]
pub async fn send(
    state: &AppState,
    me: UserId,
    dm_id: DmId,
    body: Option<MessageBody>,
    client_id: Uuid,
    reply_to_id: Option<MessageId>,
    attachment_id: Option<AttachmentId>,
) -> Result<Message, AppError> {
    if body.is_none() && attachment_id.is_none() {
        return Err(AppError::BadRequest("A message needs some text.".into()));
    }
    check_rate(state, me)?;
    // One statement (`send_messages`), in one transaction with the sends
    // queued beside it: it locks the DM, checks, numbers, stores and
    // records the events.
    let outgoing = Outgoing {
        dm_id,
        sender_id: me,
        body,
        client_id,
        reply_to_id,
        attachment_id,
    };
    let sent = state.sends.send(&state.pool, outgoing).await?;
    match (sent.outcome.as_str(), sent.message) {
        ("sent", Some(message)) => {
            state.hub.wakeups.wake();
            state.metrics.messages_sent.inc();
            Ok(message)
        }
        // A retry after the first attempt committed: the same message.
        ("existing", Some(message)) => Ok(message),
        ("client_id_used", _) => Err(AppError::BadRequest(
            "client_id was already used for another DM.".into(),
        )),
        ("not_found", _) => Err(AppError::NotFound),
        ("not_active", _) => Err(AppError::Conflict(
            "Messages can be sent once both have accepted.".into(),
        )),
        ("read_only", _) => Err(AppError::Conflict(READ_ONLY.into())),
        ("bad_reply", _) => Err(AppError::BadRequest(
            "reply_to_id is not a message of this DM.".into(),
        )),
        ("bad_attachment", _) => Err(AppError::BadRequest(
            "attachment_id is not an image you uploaded to this DM, or it was sent already.".into(),
        )),
        ("blocked", _) => Err(AppError::Forbidden),
        (other, _) => {
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
    me: UserId,
    dm_id: DmId,
    before_seq: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
) -> Result<Vec<Message>, AppError> {
    // Membership is a condition of the page's own statement (one round
    // trip); only an empty page asks whether it was empty or not mine.
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
            query_messages!(
                "SELECT",
                r#"FROM messages
                   WHERE dm_id = (SELECT $1::uuid) AND EXISTS (SELECT 1 FROM dm_members WHERE dm_id = $1 AND user_id = $2) AND seq > $3
                   ORDER BY seq LIMIT (SELECT $4::int8)"#,
                dm_id as DmId,
                me as UserId,
                after,
                limit,
            )
            .fetch_all(pool)
            .await?
        }
        (None, Some(before)) => {
            query_messages!(
                "SELECT",
                r#"FROM messages
                   WHERE dm_id = (SELECT $1::uuid) AND EXISTS (SELECT 1 FROM dm_members WHERE dm_id = $1 AND user_id = $2) AND seq < $3
                   ORDER BY seq DESC LIMIT (SELECT $4::int8)"#,
                dm_id as DmId,
                me as UserId,
                before,
                limit,
            )
            .fetch_all(pool)
            .await?
        }
        (None, None) => {
            query_messages!(
                "SELECT",
                r#"FROM messages
                   WHERE dm_id = (SELECT $1::uuid) AND EXISTS (SELECT 1 FROM dm_members WHERE dm_id = $1 AND user_id = $2)
                   ORDER BY seq DESC LIMIT (SELECT $3::int8)"#,
                dm_id as DmId,
                me as UserId,
                limit,
            )
            .fetch_all(pool)
            .await?
        }
    };
    if messages.is_empty() {
        let member = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM dm_members WHERE dm_id = $1 AND user_id = $2) AS "member!""#,
            dm_id as DmId,
            me as UserId,
        )
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
pub async fn read(state: &AppState, me: UserId, dm_id: DmId, seq: i64) -> Result<(), AppError> {
    if seq < 0 {
        return Err(AppError::BadRequest("A seq cannot be negative.".into()));
    }
    let mut tx = state.pool.begin().await?;
    // Both members, or only me across a block (my other tabs still hear).
    let row = sqlx::query!(
        r#"SELECT coalesce(bool_or(m.user_id = $2), false) AS "is_member!",
                  coalesce(array_agg(m.user_id) FILTER (
                      WHERE m.user_id = $2 OR NOT blocked_between($2, m.user_id)),
                           '{}') AS "members!: Vec<UserId>"
           FROM dm_members m WHERE m.dm_id = $1"#,
        dm_id as DmId,
        me as UserId,
    )
    .fetch_one(&mut *tx)
    .await?;
    let (is_member, members) = (row.is_member, row.members);
    if !is_member {
        return Err(AppError::NotFound);
    }
    let moved = sqlx::query_scalar!(
        "UPDATE dm_members m SET last_read_seq = LEAST($3, d.last_seq)
         FROM dms d WHERE d.id = m.dm_id AND m.dm_id = $1 AND m.user_id = $2
           AND m.last_read_seq < LEAST($3, d.last_seq)
         RETURNING m.last_read_seq",
        dm_id as DmId,
        me as UserId,
        seq,
    )
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

/// A message in a DM of `me`, locked for a change, with what decides
/// whether `me` may make it.
struct Target {
    dm_id: DmId,
    sender: UserId,
    /// The other member of the DM.
    other: UserId,
    status: DmStatus,
    deleted: bool,
    /// The other member deleted their account (the DM is read-only).
    other_gone: bool,
    /// The other member blocked `me`.
    blocked_by_other: bool,
    /// A block stands between the two, either way.
    blocked_either: bool,
}

/// Locks message `message_id` (`FOR UPDATE`, so that changes to it take
/// turns) if it is in a DM of `me`; `None` otherwise.
async fn lock_message(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    me: UserId,
    message_id: MessageId,
) -> Result<Option<Target>, sqlx::Error> {
    sqlx::query_as!(
        Target,
        r#"SELECT m.dm_id AS "dm_id: DmId", m.sender_id AS "sender: UserId",
                  o.user_id AS "other: UserId", d.status AS "status: DmStatus",
                  m.deleted_at IS NOT NULL AS "deleted!",
                  u.deleted_at IS NOT NULL AS "other_gone!",
                  EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = o.user_id AND b.blocked_id = $2)
                    AS "blocked_by_other!",
                  blocked_between($2, o.user_id) AS "blocked_either!"
           FROM messages m
           JOIN dms d ON d.id = m.dm_id
           JOIN dm_members me ON me.dm_id = d.id AND me.user_id = $2
           JOIN dm_members o ON o.dm_id = d.id AND o.user_id <> $2
           JOIN users u ON u.id = o.user_id
           WHERE m.id = $1 FOR UPDATE OF m"#,
        message_id as MessageId,
        me as UserId,
    )
    .fetch_optional(&mut **tx)
    .await
}

/// `me` edits (`Some(body)`) or deletes (`None`) their message
/// `message_id`. Deleting erases the text and keeps the place; deleting
/// again is a no-op. Both members get a `message` event with the message.
///
/// # Errors
/// 400/413 for the body (see [`MessageBody::parse`]); 404 when the message is not
/// in a DM of `me`; 403 when it is someone else's or the other member
/// blocked `me`; 409 when it was deleted (edit), the DM is not ACTIVE or the
/// other member deleted their account; 429 past [`SendLimiter`]'s rate.
#[tracing::instrument(skip_all, fields(%me, %message_id))]
pub async fn edit(
    state: &AppState,
    me: UserId,
    message_id: MessageId,
    body: Option<MessageBody>,
) -> Result<Message, AppError> {
    check_rate(state, me)?;
    let mut tx = state.pool.begin().await?;
    let Some(Target {
        dm_id,
        sender,
        status,
        deleted,
        other_gone,
        blocked_by_other: blocked,
        ..
    }) = lock_message(&mut tx, me, message_id).await?
    else {
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
    // The image a deletion removed: its bytes go after the commit.
    let mut gone_image: Option<AttachmentId> = None;
    let message = match (&body, deleted) {
        (Some(_), true) => {
            return Err(AppError::Conflict(
                "A deleted message cannot be edited.".into(),
            ));
        }
        (None, true) => {
            query_messages!(
                "SELECT",
                r#"FROM messages WHERE id = $1"#,
                message_id as MessageId,
            )
            .fetch_one(&mut *tx)
            .await?
        }
        (Some(body), false) => {
            query_messages!(
                r#"UPDATE messages SET body = $2, edited_at = now() WHERE id = $1
               RETURNING"#,
                "",
                message_id as MessageId,
                body.as_str(),
            )
            .fetch_one(&mut *tx)
            .await?
        }
        (None, false) => {
            // A deleted message keeps its place, not its reactions or image.
            sqlx::query!(
                "DELETE FROM reactions WHERE message_id = $1",
                message_id as MessageId
            )
            .execute(&mut *tx)
            .await?;
            let attachment = sqlx::query_scalar!(
                r#"SELECT attachment_id AS "id: AttachmentId" FROM messages WHERE id = $1"#,
                message_id as MessageId,
            )
            .fetch_one(&mut *tx)
            .await?;
            let message = query_messages!(
                r#"UPDATE messages SET body = '', deleted_at = now(), attachment_id = NULL
               WHERE id = $1 RETURNING"#,
                "",
                message_id as MessageId,
            )
            .fetch_one(&mut *tx)
            .await?;
            if let Some(attachment) = attachment {
                sqlx::query!(
                    "DELETE FROM attachments WHERE id = $1",
                    attachment as AttachmentId
                )
                .execute(&mut *tx)
                .await?;
            }
            gone_image = attachment;
            message
        }
    };
    if deleted {
        tx.commit().await?;
        return Ok(message);
    }
    let members = sqlx::query_scalar!(
        r#"SELECT user_id AS "user_id: UserId" FROM dm_members WHERE dm_id = $1"#,
        dm_id as DmId,
    )
    .fetch_all(&mut *tx)
    .await?;
    let event = Event::Message(message.clone());
    realtime::commit_with_event(tx, &state.hub.wakeups, &members, Some(event)).await?;
    // Its bytes, when an object store holds them, once the row is gone.
    if let (Some(id), Some(store)) = (gone_image, &state.images) {
        store.delete(id).await;
    }
    Ok(message)
}

/// The longest message search, in characters.
pub const MAX_SEARCH_CHARS: usize = 100;

/// `me`'s messages matching `query`, newest first (see
/// `super::search_messages`).
///
/// # Errors
/// 400 for an empty query, one over [`MAX_SEARCH_CHARS`] characters or
/// with a control character; 404 for a `dm_id` that is not `me`'s.
pub async fn search(
    pool: &PgPool,
    me: UserId,
    query: &str,
    dm_id: Option<DmId>,
    before: Option<time::OffsetDateTime>,
) -> Result<Vec<SearchHit>, AppError> {
    let query = query.trim();
    crate::error::refuse_control_characters(query, "A search")?;
    if query.is_empty() {
        return Err(AppError::BadRequest("A search needs some text.".into()));
    }
    if query.chars().count() > MAX_SEARCH_CHARS {
        return Err(AppError::BadRequest(format!(
            "A search can have at most {MAX_SEARCH_CHARS} characters."
        )));
    }
    // Each of my DMs' newest matches (at most a page), then the newest of
    // those: in one DM the planner can walk the newest messages when the
    // words are common, or take the text index when they are rare. Only
    // the words tell which, so the statement is planned for them each time,
    // never with a shared plan.
    let mut tx = pool.begin().await?;
    sqlx::query!("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query!(
        r#"SELECT m.id AS "id: MessageId", m.dm_id AS "dm_id: DmId", m.seq,
                  m.sender_id AS "sender_id: UserId", m.body, m.client_id,
                  date_trunc('milliseconds', m.created_at) AS "created_at!",
                  date_trunc('milliseconds', m.edited_at) AS edited_at,
                  message_reactions(m.id) AS "reactions!: Reactions",
                  message_reply_to(m.reply_to_id) AS "reply_to: ReplyTo",
                  attachment_json(m.attachment_id) AS "attachment: Attachment",
                  u.id AS "other_id: UserId", u.username, u.first_name, u.last_name, u.image_url
           FROM dm_members me
           JOIN dms d ON d.id = me.dm_id AND d.status = 'ACTIVE'
           JOIN users u ON u.id = CASE WHEN d.user_a_id = $1 THEN d.user_b_id ELSE d.user_a_id END
           CROSS JOIN LATERAL (
               SELECT * FROM messages m
                WHERE m.dm_id = d.id AND m.search @@ websearch_to_tsquery('simple', $2)
                  AND m.deleted_at IS NULL AND ($4::timestamptz IS NULL OR m.created_at < $4)
                ORDER BY m.seq DESC LIMIT $5) m
           WHERE me.user_id = $1 AND ($3::uuid IS NULL OR d.id = $3)
             AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = $1 AND blocked_id = u.id)
           ORDER BY m.created_at DESC, m.id
           LIMIT $5"#,
        me as UserId,
        query,
        dm_id as Option<DmId>,
        before,
        super::SEARCH_PAGE,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    if rows.is_empty()
        && let Some(dm_id) = dm_id
        && crate::dms::server::other_member(pool, me, dm_id)
            .await?
            .is_none()
    {
        return Err(AppError::NotFound);
    }
    Ok(rows
        .into_iter()
        .map(|r| SearchHit {
            message: Message {
                id: r.id,
                dm_id: r.dm_id,
                seq: r.seq,
                sender_id: r.sender_id,
                body: r.body,
                client_id: r.client_id,
                created_at: r.created_at,
                edited_at: r.edited_at,
                deleted: false,
                reactions: r.reactions,
                reply_to: r.reply_to,
                attachment: r.attachment,
            },
            other_user: crate::users::User {
                id: r.other_id,
                username: r.username,
                first_name: r.first_name,
                last_name: r.last_name,
                image_url: r.image_url,
            },
        })
        .collect())
}

/// `me` toggles reaction `emoji` on message `message_id`: adds it, or
/// takes it back if `me` had it. Both members get a `reaction` event with
/// the message's reactions, which this returns.
///
/// # Errors
/// 400 for an emoji not in [`REACTIONS`]; 404 when the message is not in a
/// DM of `me`; 403 when a block stands between the two, either way; 409
/// when the message was deleted, the DM is not ACTIVE or the other member
/// deleted their account; 429 past [`SendLimiter`]'s rate.
#[tracing::instrument(skip_all, fields(%me, %message_id))]
pub async fn react(
    state: &AppState,
    me: UserId,
    message_id: MessageId,
    emoji: &str,
) -> Result<Reactions, AppError> {
    if !REACTIONS.contains(&emoji) {
        return Err(AppError::BadRequest(format!(
            "A reaction is one of {}.",
            REACTIONS.join(" ")
        )));
    }
    check_rate(state, me)?;
    let mut tx = state.pool.begin().await?;
    let found = lock_message(&mut tx, me, message_id)
        .await?
        .ok_or(AppError::NotFound)?;
    if found.blocked_either {
        return Err(AppError::Forbidden);
    }
    if found.status != DmStatus::Active {
        return Err(AppError::Conflict(
            "Reactions are possible only while the DM is active.".into(),
        ));
    }
    if found.other_gone {
        return Err(AppError::Conflict(READ_ONLY.into()));
    }
    if found.deleted {
        return Err(AppError::Conflict(
            "A deleted message cannot get reactions.".into(),
        ));
    }
    let removed = sqlx::query!(
        "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
        message_id as MessageId,
        me as UserId,
        emoji,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if removed == 0 {
        sqlx::query!(
            "INSERT INTO reactions (message_id, user_id, emoji) VALUES ($1, $2, $3)",
            message_id as MessageId,
            me as UserId,
            emoji,
        )
        .execute(&mut *tx)
        .await?;
    }
    let reactions = sqlx::query_scalar!(
        r#"SELECT message_reactions($1) AS "reactions!: Reactions""#,
        message_id as MessageId,
    )
    .fetch_one(&mut *tx)
    .await?;
    let event = Event::Reaction(ReactionEvent {
        dm_id: found.dm_id,
        message_id,
        reactions: reactions.clone(),
    });
    realtime::commit_with_event(tx, &state.hub.wakeups, &[me, found.other], Some(event)).await?;
    Ok(reactions)
}

/// The other member's read position in DM `dm_id` (0 unless ACTIVE: an
/// invite reveals no receipts).
///
/// # Errors
/// 404 when the DM does not exist or `me` is not in it.
pub async fn seen(pool: &PgPool, me: UserId, dm_id: DmId) -> Result<i64, AppError> {
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
pub type SendLimiter = governor::DefaultKeyedRateLimiter<UserId>;

/// A [`SendLimiter`] allowing `per_second` sustained and `burst` at once
/// (each at least 1).
pub fn send_limiter(per_second: u32, burst: u32) -> SendLimiter {
    let nonzero = |n| std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
    governor::RateLimiter::keyed(
        governor::Quota::per_second(nonzero(per_second)).allow_burst(nonzero(burst)),
    )
}

/// 429 when `me` is past [`SendLimiter`]'s rate.
pub(crate) fn check_rate(state: &AppState, me: UserId) -> Result<(), AppError> {
    state
        .send_limiter
        .check_key(&me)
        .map_err(|_| AppError::TooManyRequests)
}

/// At most one `typing` event per user per DM in this period (per
/// instance); clients keep showing the hint for [`realtime::TYPING_TTL`].
pub const TYPING_THROTTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The typing throttle: one key per (user, DM).
pub type TypingLimiter = governor::DefaultKeyedRateLimiter<(UserId, DmId)>;

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
pub async fn typing(state: &AppState, me: UserId, dm_id: DmId) -> Result<(), AppError> {
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

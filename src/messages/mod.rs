//! Messages: text in an ACTIVE DM, ordered by a per-DM `seq`. Who may send,
//! edit and delete is in `server.rs`; the conversation's UI in `components.rs`.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use body::{MAX_BYTES, MAX_CHARS, MessageBody};

use crate::{
    error::AppError,
    ids::{AttachmentId, DmId, MessageId, UserId},
};

mod body;
pub mod components;
#[cfg(feature = "ssr")]
pub mod group_commit;
pub mod search;
#[cfg(feature = "ssr")]
pub mod server;

/// A message: `{id, dm_id, seq, sender_id, body, client_id, created_at,
/// edited_at, deleted, reactions?, reply_to?, attachment?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message's id.
    pub id: MessageId,
    /// Its DM.
    pub dm_id: DmId,
    /// Its place in the DM: 1, 2, 3, … with no gaps.
    pub seq: i64,
    /// Who sent it.
    pub sender_id: UserId,
    /// 1–4000 characters, trimmed; may be empty for a message with an
    /// image.
    pub body: String,
    /// The sender's idempotency key.
    pub client_id: Uuid,
    /// When it was stored, to the millisecond; RFC 3339 on the wire.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its sender last edited it, like `created_at`; `null` if never.
    #[serde(with = "time::serde::rfc3339::option")]
    pub edited_at: Option<OffsetDateTime>,
    /// Its sender deleted it: `body` is empty, the place in the DM stays.
    pub deleted: bool,
    /// The members' reactions, `[{emoji, user_ids}]`; left out when none.
    #[serde(default, skip_serializing_if = "Reactions::is_empty")]
    pub reactions: Reactions,
    /// The message this one answers; left out when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
    /// Its image; left out when none. `body` is then its caption and may
    /// be empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
}

/// A message's text as a reply quotes it: on one line, at most 100
/// characters (as `message_reply_to` in the migrations makes it).
pub fn excerpt(body: &str) -> String {
    body.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(100)
        .collect()
}

/// The emoji a member can react with (DESIGN §5: a small fixed set).
pub const REACTIONS: [&str; 6] = ["👍", "❤️", "😂", "😮", "😢", "🙏"];

/// One emoji on a message and who chose it, in the order they did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// One of [`REACTIONS`].
    pub emoji: String,
    /// Who reacted with it, at least one.
    pub user_ids: Vec<UserId>,
}

/// A message's reactions, each emoji in the order it was first chosen
/// (`message_reactions` in the migrations builds them). The bare list on
/// the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Reactions(pub Vec<Reaction>);

impl Reactions {
    /// Whether no one reacted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Decodes a `jsonb` column (made by a SQL function of the migrations)
/// into `$ty` through serde.
macro_rules! from_jsonb {
    ($ty:ty) => {
        #[cfg(feature = "ssr")]
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <sqlx::types::JsonValue as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <sqlx::types::JsonValue as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        #[cfg(feature = "ssr")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let json = <sqlx::types::Json<$ty> as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(json.0)
            }
        }
    };
}

from_jsonb!(Reactions);
from_jsonb!(ReplyTo);
from_jsonb!(Attachment);

/// The message a reply answers, as the reply shows it
/// (`message_reply_to` in the migrations makes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// The quoted message's id.
    pub id: MessageId,
    /// Its place in the DM, to load the history back to it.
    pub seq: i64,
    /// Who sent it.
    pub sender_id: UserId,
    /// Its text on one line, at most 100 characters; empty when it was
    /// deleted or is an image without a caption.
    pub excerpt: String,
    /// Its sender deleted it since.
    pub deleted: bool,
}

/// The image a message carries (`attachment_json` in the migrations
/// makes it): served at `/api/attachments/{id}`, its thumbnail at
/// `/api/attachments/{id}/thumbnail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The image's id.
    pub id: AttachmentId,
    /// Its width in pixels, upright.
    pub width: i32,
    /// Its height in pixels, upright.
    pub height: i32,
    /// `image/jpeg`, `image/png`, `image/webp` or `image/gif`.
    pub content_type: String,
}

/// One message that `messages/search` found, with the other member of its
/// DM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The message.
    pub message: Message,
    /// The other member of its DM.
    pub other_user: crate::users::User,
}

/// The most results one `messages/search` returns.
pub const SEARCH_PAGE: i64 = 20;

/// `POST /api/messages/search` `{query, dm_id?, before?}`: my messages
/// (sent and received, in my ACTIVE DMs, or in DM `dm_id` only) whose text
/// matches `query` (web search syntax: words, `"a phrase"`, `-word`,
/// `or`), newest first, at most [`SEARCH_PAGE`]; `before` (RFC 3339, the
/// last result's `created_at`) asks for the next page. Deleted messages
/// and DMs with people I blocked are never found.
///
/// # Errors
/// 400 for an empty query, one over 100 characters or with a control
/// character; 404 for a `dm_id` that is not mine.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "messages/search", input = server_fn::codec::Json)]
pub async fn search_messages(
    query: String,
    dm_id: Option<DmId>,
    before: Option<String>,
) -> Result<Vec<SearchHit>, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    let before = before
        .map(|at| {
            OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .map_err(|_| AppError::BadRequest("before must be an RFC 3339 time.".into()))
        })
        .transpose()
        .map_err(crate::error::respond)?;
    server::search(&state.pool, me.id, &query, dm_id, before)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/messages/react` `{message_id, emoji}`: adds my reaction
/// `emoji` to the message, or takes it back if I had it; both members get
/// a `reaction` event. Returns the message's reactions.
///
/// # Errors
/// 400 for an emoji not in [`REACTIONS`]; 404 no such message in my DMs;
/// 403 across a block; 409 the message was deleted, the DM is not ACTIVE,
/// or the other member deleted their account; 429 past the message rate.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "messages/react", input = server_fn::codec::Json)]
pub async fn react(message_id: MessageId, emoji: String) -> Result<Reactions, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::react(&state, me.id, message_id, &emoji)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/messages/send` `{dm_id, body, client_id, reply_to_id?,
/// attachment_id?}`: the message (the same one again for a repeated
/// `client_id`). `reply_to_id` is a message of the same DM that this one
/// answers; `attachment_id` an image from `POST /api/attachments`, whose
/// caption `body` is (then it may be empty).
///
/// # Errors
/// 400 empty (without an image) or over 4000 characters, a `reply_to_id`
/// not in the DM, an `attachment_id` that is not my upload to the DM or
/// was sent already; 413 far over; 404 not my DM; 409 the DM is not
/// ACTIVE; 403 blocked.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "messages/send", input = server_fn::codec::Json)]
pub async fn send_message(
    dm_id: DmId,
    body: String,
    client_id: Uuid,
    #[server(default)] reply_to_id: Option<MessageId>,
    #[server(default)] attachment_id: Option<AttachmentId>,
) -> Result<Message, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    let body = MessageBody::parse_caption(&body).map_err(crate::error::respond)?;
    server::send(
        &state,
        me.id,
        dm_id,
        body,
        client_id,
        reply_to_id,
        attachment_id,
    )
    .await
    .map_err(crate::error::respond)
}

/// The form twin of `messages/send` for the composer before (or without)
/// the WASM bundle: form fields `dm_id`, `other_user_id`, `body` and
/// `client_id` (made by the server when it renders the form, so a form
/// posted twice stores one message); redirects back to
/// `/chat/{other_user_id}`.
///
/// # Errors
/// As `messages/send`.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "messages/send-form")]
pub async fn send_message_form(
    dm_id: DmId,
    other_user_id: UserId,
    body: String,
    client_id: Uuid,
) -> Result<Message, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    let body = MessageBody::parse(&body).map_err(crate::error::respond)?;
    let message = server::send(&state, me.id, dm_id, Some(body), client_id, None, None)
        .await
        .map_err(crate::error::respond)?;
    leptos_axum::redirect(&format!("/chat/{other_user_id}"));
    Ok(message)
}

/// `POST /api/messages/list` `{dm_id, before_seq?, after_seq?, limit?}`:
/// messages in `seq` order.
///
/// # Errors
/// 404 not my DM.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "messages/list", input = server_fn::codec::Json)]
pub async fn list_messages(
    dm_id: DmId,
    before_seq: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
) -> Result<Vec<Message>, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::list(&state.pool, me.id, dm_id, before_seq, after_seq, limit)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/messages/read` `{dm_id, seq}`: I have read up to `seq`.
///
/// # Errors
/// 404 not my DM.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "messages/read", input = server_fn::codec::Json)]
pub async fn read_messages(dm_id: DmId, seq: i64) -> Result<(), AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::read(&state, me.id, dm_id, seq)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/messages/edit` `{message_id, body}`: replaces the text of my
/// message; both members get a `message` event.
///
/// # Errors
/// 400/413 for the body as in `messages/send`; 404 no such message in my
/// DMs; 403 not mine; 409 deleted, or the DM is not ACTIVE.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "messages/edit", input = server_fn::codec::Json)]
pub async fn edit_message(message_id: MessageId, body: String) -> Result<Message, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    let body = MessageBody::parse(&body).map_err(crate::error::respond)?;
    server::edit(&state, me.id, message_id, Some(body))
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/messages/delete` `{message_id}`: deletes my message (its text
/// is erased, its place stays and shows as deleted); both members get a
/// `message` event. Deleting again changes nothing.
///
/// # Errors
/// 404 no such message in my DMs; 403 not mine; 409 the DM is not ACTIVE.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "messages/delete", input = server_fn::codec::Json)]
pub async fn delete_message(message_id: MessageId) -> Result<Message, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::edit(&state, me.id, message_id, None)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/messages/seen` `{dm_id}`: `{seq}`, the highest `seq` the other
/// member has read (their read receipt), 0 while the DM is not ACTIVE.
///
/// # Errors
/// 404 not my DM.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "messages/seen", input = server_fn::codec::Json)]
pub async fn read_receipt(dm_id: DmId) -> Result<Receipt, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::seen(&state.pool, me.id, dm_id)
        .await
        .map(|seq| Receipt { seq })
        .map_err(crate::error::respond)
}

/// The other member's read receipt: `{seq}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The highest `seq` they have read.
    pub seq: i64,
}

/// `POST /api/typing` `{dm_id}`: I am typing in DM `dm_id`. The other
/// member gets a `typing` event (at most one per 2 s); nothing when
/// throttled.
///
/// # Errors
/// 404 not my DM; 409 the DM is not ACTIVE.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "typing", input = server_fn::codec::Json)]
pub async fn typing(dm_id: DmId) -> Result<(), AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::typing(&state, me.id, dm_id)
        .await
        .map_err(crate::error::respond)
}

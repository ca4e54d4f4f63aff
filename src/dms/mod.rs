//! DMs: one per pair of users, opened by a handshake (DESIGN §4).
//!
//! `NONE → INVITED → ACTIVE`, or `INVITED → DECLINED`; a re-invite brings a
//! declined DM back to `INVITED` with roles reset. The rules live in
//! [`server`]; the server functions here are thin. Each action has a JSON
//! endpoint (the API of DESIGN §6, used by the hydrated app) and a form twin
//! (`…/form`) that `ActionForm` posts before the WASM bundle has loaded.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ids::{DmId, UserId};
use crate::{error::AppError, users::User};

pub mod components;
#[cfg(feature = "ssr")]
pub mod server;

/// The state of a DM (`dm_status`); no row at all is `NONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(
    feature = "ssr",
    derive(sqlx::Type),
    sqlx(type_name = "dm_status", rename_all = "SCREAMING_SNAKE_CASE")
)]
pub enum DmStatus {
    /// The inviter has accepted, the invitee is pending.
    Invited,
    /// Both accepted: messages allowed.
    Active,
    /// The invitee declined: frozen until someone re-invites.
    Declined,
}

/// A DM as the API shows it: `{id, status, invited_by_user_id,
/// invite_note, muted}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dm {
    /// The DM's id.
    pub id: DmId,
    /// Its state.
    pub status: DmStatus,
    /// Who sent the current invite.
    pub invited_by_user_id: UserId,
    /// The inviter's note with the invite, while it waits (`INVITED`);
    /// `null` otherwise.
    #[serde(default)]
    pub invite_note: Option<String>,
    /// Whether I muted it (only an ACTIVE DM can be muted): its unread
    /// count stays out of the tab title, and it raises no notification.
    #[serde(default)]
    pub muted: bool,
}

/// The longest note with an invite, in characters (DESIGN §4).
pub const MAX_NOTE_CHARS: usize = 200;

/// What one side of a DM sees, by state and role (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MyView {
    /// No DM yet: **Start chat**.
    None,
    /// I invited: disabled **Invite sent**.
    InviteSent,
    /// I was invited: **Accept**, **Decline**.
    Invited,
    /// Messages and composer.
    Active,
    /// My invite was declined: **Invite declined**, **Re-invite**.
    InviteDeclined,
    /// I declined: **You declined**, **Re-invite**.
    YouDeclined,
}

/// What a screen reader announces to `me` when DM `row` has just changed
/// state through the other member: an invite, an accept, a decline. My
/// own steps are not announced (the page I acted on shows them).
pub fn handshake_news(row: &DmSummary, me: UserId) -> Option<String> {
    let name = row.other_user.display_name();
    match MyView::of(Some(&row.dm), me) {
        MyView::Invited => Some(format!("{name} wants to chat with you")),
        MyView::Active if row.dm.invited_by_user_id == me => {
            Some(format!("{name} accepted your invite"))
        }
        MyView::InviteDeclined => Some(format!("{name} declined your invite")),
        _ => None,
    }
}

impl MyView {
    /// The view of `me` on `dm` (only the invitee can decline, so in a
    /// declined DM the decliner is whoever did not invite).
    pub fn of(dm: Option<&Dm>, me: UserId) -> Self {
        match dm {
            None => Self::None,
            Some(dm) => match (dm.status, dm.invited_by_user_id == me) {
                (DmStatus::Invited, true) => Self::InviteSent,
                (DmStatus::Invited, false) => Self::Invited,
                (DmStatus::Active, _) => Self::Active,
                (DmStatus::Declined, true) => Self::InviteDeclined,
                (DmStatus::Declined, false) => Self::YouDeclined,
            },
        }
    }
}

/// A user with their DM with me, as `users/list` returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserWithDm {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// Whether they have an open event stream on any instance; always
    /// false unless our DM is ACTIVE (an invite reveals no presence).
    pub online: bool,
    /// Our DM, `null` when nobody has invited.
    pub dm: Option<Dm>,
}

/// One of my DMs with the other user, as `dm/list` returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmSummary {
    /// The DM.
    #[serde(flatten)]
    pub dm: Dm,
    /// The other member.
    pub other_user: User,
    /// The last message's text, if any.
    pub last_message: Option<String>,
    /// When the DM last changed (its newest message or handshake step), to
    /// the millisecond; RFC 3339 on the wire.
    #[serde(with = "time::serde::rfc3339")]
    pub last_activity_at: time::OffsetDateTime,
    /// Messages from the other user after my read position.
    pub unread_count: i64,
    /// The `seq` of the DM's newest message (0 before the first): what
    /// this summary knows of, so that a page can add what arrives after.
    pub last_seq: i64,
    /// Whether the other user is online (false unless ACTIVE).
    pub online: bool,
    /// When the other user's last event stream closed (RFC 3339); `null`
    /// unless ACTIVE, and before they were ever seen.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<time::OffsetDateTime>,
}

/// `POST /api/users/list` `{query?}`: everyone but me (and users I blocked),
/// matching `query` in username or name, each with our DM.
///
/// # Errors
/// 400 for a query over 100 characters or with a control character; 401
/// without a session; 500 on a database error.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "users/list", input = server_fn::codec::Json)]
pub async fn list_users(query: Option<String>) -> Result<Vec<UserWithDm>, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::list_users(&state.pool, me.id, query.as_deref().unwrap_or_default())
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/dm/get` `{other_user_id}`: our DM, or `null` (state `NONE`).
///
/// # Errors
/// 401 without a session; 404 for an unknown user.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "dm/get", input = server_fn::codec::Json)]
pub async fn get_dm(other_user_id: UserId) -> Result<Option<Dm>, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::get(&state.pool, me.id, other_user_id)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/dm/invite` `{other_user_id, note?}`: invite, or re-invite
/// after a decline, with an optional note (at most [`MAX_NOTE_CHARS`]
/// characters, the character rules of messages). Returns the DM.
///
/// # Errors
/// 400 inviting myself or a note that breaks the rules; 404 unknown user;
/// 409 a repeat invite (or inviting someone I blocked); 429 too many
/// invites.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "dm/invite", input = server_fn::codec::Json)]
pub async fn invite(other_user_id: UserId, note: Option<String>) -> Result<Dm, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::invite(&state, me.id, other_user_id, note.as_deref())
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/dm/accept` `{dm_id}`: the pending invitee accepts.
///
/// # Errors
/// 404 unknown DM or not mine; 409 not a pending invite of mine.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "dm/accept", input = server_fn::codec::Json)]
pub async fn accept(dm_id: DmId) -> Result<Dm, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::answer(&state, me.id, dm_id, server::Answer::Accept)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/dm/decline` `{dm_id}`: the pending invitee declines.
///
/// # Errors
/// 404 unknown DM or not mine; 409 not a pending invite of mine.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "dm/decline", input = server_fn::codec::Json)]
pub async fn decline(dm_id: DmId) -> Result<Dm, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::answer(&state, me.id, dm_id, server::Answer::Decline)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/dm/mute` `{dm_id, muted}`: mutes (or unmutes) my side of an
/// ACTIVE DM, on every device of mine (a `dm` event tells them).
///
/// # Errors
/// 404 unknown DM or not mine; 409 when it is not ACTIVE.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "dm/mute", input = server_fn::codec::Json)]
pub async fn mute(dm_id: DmId, muted: bool) -> Result<(), AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::set_muted(&state, me.id, dm_id, muted)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/dm/list` `{}`: my DMs, most recent first.
///
/// # Errors
/// 401 without a session.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "dm/list", input = server_fn::codec::Json)]
pub async fn list_dms() -> Result<Vec<DmSummary>, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::list(&state.pool, me.id)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/users/block` `{user_id}`: their invites stop reaching me.
///
/// # Errors
/// 400 blocking myself; 404 unknown user.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "users/block", input = server_fn::codec::Json)]
pub async fn block(user_id: UserId) -> Result<(), AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::set_block(&state, me.id, user_id, true)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/users/unblock` `{user_id}`.
///
/// # Errors
/// 404 unknown user.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "users/unblock", input = server_fn::codec::Json)]
pub async fn unblock(user_id: UserId) -> Result<(), AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::set_block(&state, me.id, user_id, false)
        .await
        .map_err(crate::error::respond)
}

/// `POST /api/users/blocked` `{}`: the live users I blocked, by username.
///
/// # Errors
/// 401 without a session.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "users/blocked", input = server_fn::codec::Json)]
pub async fn blocked_users() -> Result<Vec<User>, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::blocked_users(&state.pool, me.id)
        .await
        .map_err(crate::error::respond)
}

/// The form twin of `users/block` and `users/unblock`, for `ActionForm`:
/// `action` is `block` or `unblock`. Redirects to `/blocked` when `back`
/// is `blocked`, else to `/chat/{user_id}`.
///
/// # Errors
/// As the JSON endpoints; 400 for another `action`.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "users/block-form")]
pub async fn block_form(
    action: String,
    user_id: UserId,
    back: Option<String>,
) -> Result<(), AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    let on = match action.as_str() {
        "block" => true,
        "unblock" => false,
        _ => {
            return Err(crate::error::respond(AppError::BadRequest(
                "unknown action".into(),
            )));
        }
    };
    server::set_block(&state, me.id, user_id, on)
        .await
        .map_err(crate::error::respond)?;
    match back.as_deref() {
        Some("blocked") => leptos_axum::redirect("/blocked"),
        _ => leptos_axum::redirect(&format!("/chat/{user_id}")),
    }
    Ok(())
}

/// The form twin of the handshake actions, for `ActionForm`: `action` is
/// `invite` (with an optional `note`), `accept`, `decline`, `mute` or
/// `unmute`;
/// `other_user_id` names the chat page to return to. Redirects to
/// `/chat/{other_user_id}`.
///
/// # Errors
/// As the JSON endpoints.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "dm/form")]
pub async fn dm_form(
    action: String,
    other_user_id: UserId,
    dm_id: Option<DmId>,
    note: Option<String>,
) -> Result<Dm, AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    let result = match (action.as_str(), dm_id) {
        ("invite", _) => server::invite(&state, me.id, other_user_id, note.as_deref()).await,
        ("accept", Some(dm_id)) => {
            server::answer(&state, me.id, dm_id, server::Answer::Accept).await
        }
        ("decline", Some(dm_id)) => {
            server::answer(&state, me.id, dm_id, server::Answer::Decline).await
        }
        (mute @ ("mute" | "unmute"), Some(dm_id)) => {
            server::set_muted(&state, me.id, dm_id, mute == "mute").await?;
            server::get(&state.pool, me.id, other_user_id)
                .await
                .and_then(|dm| dm.ok_or(AppError::NotFound))
        }
        _ => Err(AppError::BadRequest("unknown action".into())),
    };
    let dm = result.map_err(crate::error::respond)?;
    leptos_axum::redirect(&format!("/chat/{other_user_id}"));
    Ok(dm)
}

//! The handshake UI: the sidebar's people and conversations, and the chat
//! page with each side's buttons per state (DESIGN §4 labels).

use std::collections::HashMap;

use leptos::prelude::*;
use leptos_router::{
    components::Form,
    hooks::{use_params_map, use_query_map},
};

use leptos_meta::Title;

use super::{BlockForm, Dm, DmForm, DmStatus, MyView, blocked_users, get_dm, list_dms, list_users};
use crate::ids::{DmId, UserId};
use crate::{
    auth::{SessionInfo, components::Session},
    components::{
        avatar::Avatar, last_seen::LastSeen, load_error::LoadError, notify::NotificationsButton,
    },
    error::AppError,
    messages::{
        components::{Conversation, ThreadState, first_page},
        search,
    },
    realtime::{Event, Live},
    users::get_user,
};

/// The one handshake action of the app, shared by the chat page (which
/// dispatches it) and the sidebar (which refetches when it completes).
#[derive(Clone, Copy)]
pub struct Handshake(pub ServerAction<DmForm>);

/// The block and unblock action, shared by the chat page and the blocked
/// people page (which dispatch it) and the sidebar (which refetches when it
/// completes: a blocked person leaves its lists).
#[derive(Clone, Copy)]
pub struct Blocking(pub ServerAction<BlockForm>);

/// Creates the [`Handshake`] and [`Blocking`] actions and provides them.
/// Call once, in `App`.
pub fn provide_handshake() {
    provide_context(Handshake(ServerAction::<DmForm>::new()));
    provide_context(Blocking(ServerAction::<BlockForm>::new()));
}

/// The sidebar: incoming invites, conversations and people (with search).
#[component]
pub fn Sidebar() -> impl IntoView {
    let Session { info, .. } = expect_context::<Session>();
    let Handshake(action) = expect_context::<Handshake>();
    let Blocking(blocking) = expect_context::<Blocking>();
    let query = use_query_map();
    let search = move || query.read().get("q").unwrap_or_default();
    // Signed out, nothing is fetched (the lists would only say 401).
    let live = expect_context::<Live>();
    // What the event stream said since the list was fetched, applied on
    // top of it: the list is fetched again only for a handshake step, a
    // resync, or an edit or deletion (which may change a preview).
    let patches = RwSignal::new(HashMap::<DmId, RowPatch>::new());
    let refetch = RwSignal::new(0u64);
    let dms = Resource::new(
        move || {
            (
                action.version().get(),
                blocking.version().get(),
                live.dms.get(),
                live.resyncs.get(),
                refetch.get(),
            )
        },
        move |_| async move {
            let fetched = if signed_in(info).await {
                list_dms().await
            } else {
                Ok(Vec::new())
            };
            // What the list now holds needs no patch.
            #[cfg(feature = "hydrate")]
            if let Ok(rows) = &fetched {
                patches.try_update(|all| {
                    for row in rows {
                        if let Some(patch) = all.get_mut(&row.dm.id) {
                            patch.arrived.retain(|(seq, _)| *seq > row.last_seq);
                        }
                    }
                });
                live.dm_rows.try_update(|heard| {
                    for row in rows {
                        if heard.get(&row.dm.id).is_some_and(|h| h.dm == row.dm) {
                            heard.remove(&row.dm.id);
                        }
                    }
                });
            }
            fetched
        },
    );
    live.on_event(move |event| match event {
        Event::Message(message) if message.edited_at.is_none() && !message.deleted => {
            let theirs = live.me.get_untracked() != Some(message.sender_id);
            patches.update(|all| {
                let patch = all.entry(message.dm_id).or_default();
                if !patch.arrived.iter().any(|(seq, _)| *seq == message.seq) {
                    patch.arrived.push((message.seq, theirs));
                }
                if patch.newest.as_ref().is_none_or(|m| m.seq < message.seq) {
                    patch.newest = Some(message.clone());
                }
            });
        }
        Event::Message(_) => refetch.update(|n| *n += 1),
        Event::Read(read) if live.me.get_untracked() == Some(read.user_id) => {
            patches.update(|all| {
                let patch = all.entry(read.dm_id).or_default();
                patch.read_through = patch.read_through.max(read.seq);
            });
        }
        _ => {}
    });
    // A handshake step's `dm` event patches a person's state label below.
    let people = Resource::new(
        move || {
            (
                search(),
                action.version().get(),
                blocking.version().get(),
                live.dms.get(),
            )
        },
        move |(q, _, _, _)| async move {
            if signed_in(info).await {
                list_users((!q.is_empty()).then_some(q)).await
            } else {
                Ok(Vec::new())
            }
        },
    );
    view! {
        <crate::messages::search::MessageSearch />
        <Transition fallback=|| ()>
            {move || {
                let patched = patches.get();
                let heard = live.dm_rows.get();
                Suspend::new(async move {
                let Ok(SessionInfo { user: Some(me), .. }) = info.await else {
                    return view! {
                        <p class="muted">"Sign in to see people and conversations."</p>
                    }
                        .into_any();
                };
                // A failed load says so, with a way to try again, instead
                // of showing an empty list.
                let dms = match dms.await {
                    Ok(dms) => apply(dms, &heard, &patched),
                    Err(error) => {
                        return view! {
                            <LoadError what="Your conversations could not be loaded." error />
                        }
                            .into_any();
                    }
                };
                let mut people = match people.await {
                    Ok(people) => people,
                    Err(error) => {
                        return view! {
                            <LoadError what="The people list could not be loaded." error />
                        }
                            .into_any();
                    }
                };
                for person in &mut people {
                    if let Some(row) = heard.values().find(|r| r.other_user.id == person.user.id) {
                        person.dm = Some(row.dm.clone());
                    }
                }
                // What the lists say now is the latest presence. Browser
                // only: on the server the page's parts render on several
                // threads at once, and a signal read while another thread
                // writes it panics (reactive_graph takes its locks with
                // `try_read`); the dots light up once the page hydrates.
                #[cfg(feature = "hydrate")]
                live.online.update(|online| {
                    for d in &dms {
                        online.insert(d.other_user.id, d.online);
                    }
                });
                #[cfg(feature = "hydrate")]
                live.last_seen.update(|seen| {
                    for d in &dms {
                        if let Some(at) = d.last_seen_at {
                            seen.insert(d.other_user.id, at);
                        }
                    }
                });
                #[cfg(feature = "hydrate")]
                live.muted.update(|muted| {
                    for d in &dms {
                        muted.insert(d.dm.id, d.dm.muted);
                    }
                });
                #[cfg(feature = "hydrate")]
                live.statuses.update(|statuses| {
                    for d in &dms {
                        statuses.insert(d.dm.id, d.dm.status);
                    }
                });
                // Invites waiting on me are kept apart from conversations.
                let (requests, conversations): (Vec<_>, Vec<_>) = dms
                    .into_iter()
                    .partition(|d| MyView::of(Some(&d.dm), me.id) == MyView::Invited);
                // The tab title counts unread messages, muted DMs' aside:
                // "(3) Knock".
                let unread_total: i64 = conversations
                    .iter()
                    .filter(|d| !d.dm.muted)
                    .map(|d| d.unread_count)
                    .sum();
                let waiting = requests.len();
                view! {
                    <Title formatter=move |text: String| match unread_total {
                        0 => text,
                        n => format!("({n}) {text}"),
                    } />
                    <NotificationsButton />
                    <section aria-labelledby="requests-title">
                        <h2 id="requests-title">
                            "Requests"
                            {(waiting > 0)
                                .then(|| {
                                    view! {
                                        // `role="img"`: a generic span cannot carry a name.
                                        <span
                                            class="badge"
                                            role="img"
                                            aria-label=format!("{waiting} waiting")
                                        >
                                            {waiting}
                                        </span>
                                    }
                                })}
                        </h2>
                        {if requests.is_empty() {
                            view! { <p class="muted">"No requests."</p> }.into_any()
                        } else {
                            view! {
                                <ul class="list" aria-label="Requests">
                                    {requests
                                        .into_iter()
                                        .map(|d| {
                                            // The note, else who knocks.
                                            let preview = d
                                                .dm
                                                .invite_note
                                                .clone()
                                                .unwrap_or_else(|| "Invited you".to_owned());
                                            conversation_row(d, preview)
                                        })
                                        .collect_view()}
                                </ul>
                            }
                                .into_any()
                        }}
                    </section>
                    <section aria-labelledby="conversations-title">
                        <h2 id="conversations-title">"Conversations"</h2>
                        {if conversations.is_empty() {
                            view! { <p class="muted">"No conversations yet."</p> }.into_any()
                        } else {
                            view! {
                                <ul class="list" aria-label="Conversations">
                                    {conversations
                                        .into_iter()
                                        .map(|d| {
                                            let label = state_label(MyView::of(Some(&d.dm), me.id));
                                            // The last message, else the handshake state.
                                            let preview = d
                                                .last_message
                                                .clone()
                                                .unwrap_or_else(|| label.to_owned());
                                            conversation_row(d, preview)
                                        })
                                        .collect_view()}
                                </ul>
                            }
                                .into_any()
                        }}
                    </section>
                    <section aria-labelledby="people-title">
                        <h2 id="people-title">"People"</h2>
                        <form method="get" action="" role="search" class="search">
                            <input
                                type="search"
                                name="q"
                                aria-label="Search people"
                                maxlength="100"
                                placeholder="Search people"
                                value=search()
                            />
                        </form>
                        <ul class="list" aria-label="People">
                            {people
                                .into_iter()
                                .map(|p| {
                                    let label = state_label(MyView::of(p.dm.as_ref(), me.id));
                                    view! {
                                        <li>
                                            <a href=format!("/chat/{}", p.user.id)>
                                                <Avatar user=p.user.clone() />
                                                <span class="name">{p.user.display_name()}</span>
                                                <span class="username">"@" {p.user.username.clone()}</span>
                                                <span class="state">{label}</span>
                                            </a>
                                        </li>
                                    }
                                })
                                .collect_view()}
                        </ul>
                    </section>
                    <nav class="sidebar-more" aria-label="More">
                        <a href="/blocked">"Blocked people"</a>
                    </nav>
                }
                    .into_any()
            })}}
        </Transition>
    }
}

/// One row of the sidebar's Requests or Conversations: avatar (with
/// presence across an ACTIVE DM), name, `preview` and unread badge.
fn conversation_row(d: super::DmSummary, preview: String) -> impl IntoView {
    let unread = d.unread_count;
    let muted = d.dm.muted;
    let presence = d.dm.status == DmStatus::Active;
    view! {
        <li>
            <a href=format!("/chat/{}", d.other_user.id)>
                <Avatar user=d.other_user.clone() presence />
                <span class="name">{d.other_user.display_name()}</span>
                <span class="preview">{preview}</span>
                <span class="state">
                    {(unread > 0)
                        .then(|| {
                            view! {
                                <span
                                    class="badge"
                                    class:muted=muted
                                    role="img"
                                    aria-label=if muted {
                                        format!("{unread} unread, muted")
                                    } else {
                                        format!("{unread} unread")
                                    }
                                >
                                    {unread}
                                </span>
                            }
                        })}
                </span>
            </a>
        </li>
    }
}

/// What the event stream said of one DM of the conversation list: applied
/// on top of the fetched row, it counts only what came after the row's
/// `last_seq`.
#[derive(Debug, Clone, Default)]
struct RowPatch {
    /// New messages heard of: `seq`, and whether the other member sent it.
    arrived: Vec<(i64, bool)>,
    /// The newest of them.
    newest: Option<crate::messages::Message>,
    /// My read position as the `read` events told it.
    read_through: i64,
}

/// The fetched list with the rows of `dm` events (`heard`, which replace
/// or add rows) and `patches` applied, newest activity first.
fn apply(
    mut dms: Vec<super::DmSummary>,
    heard: &HashMap<DmId, super::DmSummary>,
    patches: &HashMap<DmId, RowPatch>,
) -> Vec<super::DmSummary> {
    for row in heard.values() {
        match dms.iter_mut().find(|d| d.dm.id == row.dm.id) {
            // A fetched row in the same state is at least as new.
            Some(fetched) if fetched.dm != row.dm => *fetched = row.clone(),
            Some(_) => {}
            None => dms.push(row.clone()),
        }
    }
    for dm in &mut dms {
        let Some(patch) = patches.get(&dm.dm.id) else {
            continue;
        };
        if let Some(newest) = &patch.newest
            && newest.seq > dm.last_seq
        {
            dm.last_message = Some(newest.body.clone());
            dm.last_activity_at = dm.last_activity_at.max(newest.created_at);
        }
        // Reading the newest message the row knew of read all it counted.
        let base = if patch.read_through >= dm.last_seq {
            0
        } else {
            dm.unread_count
        };
        let after = dm.last_seq.max(patch.read_through);
        let added = patch
            .arrived
            .iter()
            .filter(|(seq, theirs)| *theirs && *seq > after)
            .count();
        dm.unread_count = base + i64::try_from(added).unwrap_or(0);
    }
    dms.sort_by_key(|dm| std::cmp::Reverse(dm.last_activity_at));
    dms
}

/// Whether the session resource has a signed-in user.
async fn signed_in(info: Resource<Result<SessionInfo, crate::error::AppError>>) -> bool {
    matches!(info.await, Ok(SessionInfo { user: Some(_), .. }))
}

fn state_label(view: MyView) -> &'static str {
    match view {
        MyView::None => "",
        MyView::InviteSent => "Invite sent",
        MyView::Invited => "Invited you",
        MyView::Active => "",
        MyView::InviteDeclined => "Invite declined",
        MyView::YouDeclined => "You declined",
    }
}

/// `/chat/{user_id}`: the DM with that user, with this side's buttons.
#[component]
pub fn ChatPage() -> impl IntoView {
    let Session { info, .. } = expect_context::<Session>();
    let Handshake(action) = expect_context::<Handshake>();
    let params = use_params_map();
    let other_id = move || {
        params
            .read()
            .get("user_id")
            .and_then(|id| id.parse::<UserId>().ok())
    };
    let other_id_untracked = move || untrack(other_id);
    let other = Resource::new(other_id, move |id| async move {
        match id {
            Some(id) if signed_in(info).await => get_user(id).await,
            Some(_) => Err(crate::error::AppError::Unauthorized),
            None => Err(crate::error::AppError::NotFound),
        }
    });
    let live = expect_context::<Live>();
    let Blocking(blocking) = expect_context::<Blocking>();
    // Whether I blocked this person (the page then offers only Unblock).
    let blocked = Resource::new(
        move || (other_id(), blocking.version().get()),
        move |(id, _)| async move {
            match id {
                Some(id) if signed_in(info).await => blocked_users()
                    .await
                    .map(|users| users.iter().any(|u| u.id == id)),
                _ => Ok(false),
            }
        },
    );
    // `?confirm=block`: the confirmation dialog is open (a GET form opens
    // it, so it works without WASM too).
    let query = use_query_map();
    let confirming = move || query.read().get("confirm").as_deref() == Some("block");
    // `?search=…`: Search this conversation's query and its results.
    let searching = Resource::new(
        move || {
            (
                other_id(),
                query
                    .read()
                    .get(search::IN_DM)
                    .filter(|q| !q.trim().is_empty()),
            )
        },
        move |(id, find)| async move {
            let (Some(id), Some(find)) = (id, find) else {
                return None;
            };
            if !signed_in(info).await {
                return None;
            }
            let results = match get_dm(id).await {
                Ok(Some(dm)) => search::in_dm(find.clone(), dm.id).await,
                Ok(None) => Err(AppError::NotFound),
                Err(error) => Err(error),
            };
            Some((find, results))
        },
    );
    // Keyboard focus: into the dialog when it opens (on Cancel), back to
    // the Block button that opened it when it closes. Escape closes it.
    let cancel_ref = NodeRef::<leptos::html::Button>::new();
    let opener_ref = NodeRef::<leptos::html::Button>::new();
    let return_focus = StoredValue::new(false);
    Effect::new(move |_| {
        if let Some(cancel) = cancel_ref.get() {
            return_focus.set_value(true);
            let _ = cancel.focus();
        }
    });
    Effect::new(move |_| {
        if let Some(opener) = opener_ref.get()
            && !confirming_untracked(query)
            && return_focus.get_value()
        {
            return_focus.set_value(false);
            let _ = opener.focus();
        }
    });
    let navigate = leptos_router::hooks::use_navigate();
    let thread = ThreadState::new();
    // The DM with this person as the last `dm` event told it, with the
    // `seq` of its newest message.
    let heard = Memo::new(move |_| {
        let other = other_id()?;
        live.dm_rows.with(|rows| {
            rows.values()
                .find(|row| row.other_user.id == other)
                .map(|row| (row.dm.clone(), row.last_seq))
        })
    });
    // A handshake step reaches this page twice, as my action's result and
    // as the `dm` event; the page renders again only when what it shows
    // changes. `shown` is the DM the page last rendered (or is rendering),
    // `handed` a newer one to render without fetching it.
    let shown = StoredValue::new(None::<Dm>);
    let handed = StoredValue::new(None::<(Dm, Option<i64>)>);
    let refresh = RwSignal::new(0u64);
    let offer = move |dm: Dm, last_seq: Option<i64>| {
        let (same, was_active) = shown.with_value(|shown| {
            let shown = shown.as_ref();
            (
                shown == Some(&dm),
                shown.is_some_and(|s| s.status == DmStatus::Active),
            )
        });
        if !same {
            // ACTIVE is final and messages need it: a DM that has just
            // become ACTIVE has none yet.
            let last_seq = last_seq.or((dm.status == DmStatus::Active && !was_active).then_some(0));
            shown.set_value(Some(dm.clone()));
            handed.set_value(Some((dm, last_seq)));
            refresh.update(|n| *n += 1);
        }
    };
    Effect::new(move |first: Option<()>| {
        let heard = heard.get();
        if first.is_some()
            && let Some((dm, last_seq)) = heard
        {
            offer(dm, Some(last_seq));
        }
    });
    // Whom my pending handshake step is with: its answer is this page's
    // only if it is still about the same person.
    let acting_for = StoredValue::new(None::<UserId>);
    Effect::new(move |_| {
        if let Some(with) = action
            .input()
            .with(|form| form.as_ref().map(|f| f.other_user_id))
        {
            acting_for.set_value(Some(with));
        }
    });
    Effect::new(move |first: Option<()>| {
        action.version().track();
        if first.is_some() {
            match action.value().get_untracked() {
                Some(Ok(dm)) if acting_for.get_value() == other_id_untracked() => offer(dm, None),
                // A refused step (the DM changed meanwhile): fetch it.
                _ => refresh.update(|n| *n += 1),
            }
        }
    });
    // The DM and, while it is ACTIVE, its newest page: one resource, so
    // that the conversation's data is not fetched again each time this
    // page's `Suspend` runs (Leptos walks a `Suspense`'s children more than
    // once on the server). The stream coming back fetches it again.
    let dm = Resource::new(
        move || (other_id(), refresh.get(), live.dms.get()),
        move |(id, generation, _)| async move {
            let Some(id) = id else {
                return Err(crate::error::AppError::NotFound);
            };
            if !signed_in(info).await {
                return Err(crate::error::AppError::Unauthorized);
            }
            let (dm, last_seq) = match handed.try_update_value(Option::take).flatten() {
                Some((dm, last_seq)) => (Some(dm), last_seq),
                None => (get_dm(id).await?, None),
            };
            // A fetch overtaken by a newer step leaves `shown` to that step.
            if refresh.try_get_untracked() == Some(generation) {
                shown.set_value(dm.clone());
            }
            let first = match &dm {
                // Just accepted, with no message yet: nothing to fetch.
                Some(dm) if dm.status == DmStatus::Active && last_seq == Some(0) => {
                    Some(Ok((Vec::new(), 0)))
                }
                Some(dm) if dm.status == DmStatus::Active => Some(first_page(dm.id).await),
                _ => None,
            };
            Ok((dm, first))
        },
    );
    let error = move || {
        let handshake = action.value().get().and_then(Result::err);
        let block = blocking.value().get().and_then(Result::err);
        handshake
            .or(block)
            .map(|e| view! { <p class="form-error" role="alert">{e.to_string()}</p> })
    };
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || {
                let confirm = confirming();
                let navigate = navigate.clone();
                Suspend::new(async move {
                let me = match info.await {
                    Ok(SessionInfo { user: Some(me), .. }) => me,
                    _ => {
                        return view! {
                            <section class="welcome">
                                <p>
                                    <a href="/sign-in">"Sign in"</a>
                                    " to chat."
                                </p>
                            </section>
                        }
                            .into_any();
                    }
                };
                let (other, dm) = (other.await, dm.await);
                let (other, (dm, first)) = match (other, dm) {
                    (Ok(other), Ok(dm)) => (other, dm),
                    (Err(AppError::NotFound), _) | (_, Err(AppError::NotFound)) => {
                        return view! {
                            <section class="welcome">
                                <h1>"No such person"</h1>
                            </section>
                        }
                            .into_any();
                    }
                    (Err(error), _) | (_, Err(error)) => {
                        return view! {
                            <section class="welcome">
                                <LoadError what="This conversation could not be loaded." error />
                            </section>
                        }
                            .into_any();
                    }
                };
                let is_blocked = blocked.await.unwrap_or(false);
                let found = searching.await;
                let my_view = MyView::of(dm.as_ref(), me.id);
                // Presence only across an ACTIVE DM.
                let presence = my_view == MyView::Active && !is_blocked;
                let avatar = view! { <Avatar user=other.clone() presence /> };
                let dm_id = dm.as_ref().map(|d| d.id.to_string()).unwrap_or_default();
                let form = move |act: &'static str, label: &'static str| {
                    let dm_id = dm_id.clone();
                    view! {
                        <ActionForm action=action>
                            <input type="hidden" name="action" value=act />
                            <input type="hidden" name="other_user_id" value=other.id.to_string() />
                            {(!dm_id.is_empty())
                                .then(|| view! { <input type="hidden" name="dm_id" value=dm_id.clone() /> })}
                            // An invite may carry a note for the invitee.
                            {(act == "invite")
                                .then(|| {
                                    view! {
                                        <label class="invite-note-field">
                                            "Note"
                                            <input
                                                type="text"
                                                name="note"
                                                maxlength=super::MAX_NOTE_CHARS.to_string()
                                                placeholder="Why you are knocking (optional)"
                                            />
                                        </label>
                                    }
                                })}
                            <button type="submit" class=format!("button-{act}")>
                                {label}
                            </button>
                        </ActionForm>
                    }
                };
                let block_form = move |act: &'static str, label: &'static str| {
                    view! {
                        <ActionForm action=blocking>
                            <input type="hidden" name="action" value=act />
                            <input type="hidden" name="user_id" value=other.id.to_string() />
                            <button type="submit" class=format!("button-{act}")>
                                {label}
                            </button>
                        </ActionForm>
                    }
                };
                let body = match my_view {
                    _ if is_blocked => {
                        view! {
                            <p>"You blocked this person"</p>
                            {block_form("unblock", "Unblock")}
                        }
                            .into_any()
                    }
                    MyView::None => form("invite", "Start chat").into_any(),
                    MyView::InviteSent => {
                        view! {
                            <button type="button" disabled>
                                "Invite sent"
                            </button>
                        }
                            .into_any()
                    }
                    MyView::Invited => {
                        let note = dm.as_ref().and_then(|d| d.invite_note.clone());
                        view! {
                            <p>{other.display_name()} " wants to chat with you."</p>
                            {note
                                .map(|note| {
                                    view! {
                                        <figure class="invite-note">
                                            <figcaption>"Their note"</figcaption>
                                            <blockquote>{note}</blockquote>
                                        </figure>
                                    }
                                })}
                            <div class="actions">
                                {form("accept", "Accept")} {form("decline", "Decline")}
                            </div>
                        }
                            .into_any()
                    }
                    MyView::Active => {
                        let dm_id = dm.as_ref().map(|d| d.id).unwrap_or_default();
                        let first = first.unwrap_or(Err(crate::error::AppError::NotFound));
                        let results = found
                            .map(|(find, results)| {
                                search::conversation_results(results, &find, me.id, &other)
                            });
                        view! {
                            {results}
                            <Conversation dm_id other=other.clone() me=me.id state=thread first />
                        }
                            .into_any()
                    }
                    MyView::InviteDeclined => {
                        view! {
                            <p>"Invite declined"</p>
                            {form("invite", "Re-invite")}
                        }
                            .into_any()
                    }
                    MyView::YouDeclined => {
                        view! {
                            <p>"You declined"</p>
                            {form("invite", "Re-invite")}
                        }
                            .into_any()
                    }
                };
                let name = other.display_name();
                // An ACTIVE DM can be muted, per member.
                let mute_button = (my_view == MyView::Active && !is_blocked).then(|| {
                    if dm.as_ref().is_some_and(|d| d.muted) {
                        form("unmute", "Unmute").into_any()
                    } else {
                        form("mute", "Mute").into_any()
                    }
                });
                // Blocking asks first, saying what it does.
                let cancel_url = format!("/chat/{}", other.id);
                if is_blocked {
                    // Blocked: the opener is gone, focus has nowhere to return.
                    return_focus.set_value(false);
                }
                let dialog = (confirm && !is_blocked).then(|| {
                    view! {
                        <div class="dialog-backdrop">
                            <div
                                class="dialog"
                                role="dialog"
                                aria-modal="true"
                                aria-labelledby="block-title"
                                aria-describedby="block-text"
                                on:keydown={
                                    let navigate = navigate.clone();
                                    let cancel_url = cancel_url.clone();
                                    move |ev: leptos::ev::KeyboardEvent| {
                                        if ev.key() == "Escape" {
                                            navigate(&cancel_url, Default::default());
                                        }
                                    }
                                }
                            >
                                <h2 id="block-title">"Block " {name.clone()} "?"</h2>
                                <p id="block-text">
                                    "They will not be able to message you or send you invites, "
                                    "and neither of you will see the other online. "
                                    "They are not told, and you can unblock them later."
                                </p>
                                <div class="actions">
                                    {block_form("block", "Block")}
                                    <Form method="GET" action=cancel_url.clone()>
                                        <button type="submit" node_ref=cancel_ref>
                                            "Cancel"
                                        </button>
                                    </Form>
                                </div>
                            </div>
                        </div>
                    }
                });
                view! {
                    <section class="chat" aria-labelledby="chat-title">
                        <header class="chat-header">
                            {avatar}
                            <h1 id="chat-title">{name}</h1>
                            <span class="username">"@" {other.username.clone()}</span>
                            <LastSeen user=other.id presence />
                            <span class="spacer"></span>
                            {(my_view == MyView::Active && !is_blocked)
                                .then(|| view! { <search::ConversationSearchForm /> })}
                            {mute_button}
                            {(!is_blocked)
                                .then(|| {
                                    view! {
                                        <Form method="GET" action="" attr:class="block-opener">
                                            <input type="hidden" name="confirm" value="block" />
                                            <button type="submit" node_ref=opener_ref>
                                                "Block"
                                            </button>
                                        </Form>
                                    }
                                })}
                        </header>
                        <div class="handshake">{body}</div>
                        {dialog}
                    </section>
                }
                    .into_any()
            })}}
        </Transition>
        {error}
    }
}

/// Whether `?confirm=block` is in the URL, read without tracking it.
fn confirming_untracked(query: Memo<leptos_router::params::ParamsMap>) -> bool {
    query.with_untracked(|q| q.get("confirm").as_deref() == Some("block"))
}

/// `/blocked`: the people I blocked, each with **Unblock**.
#[component]
pub fn BlockedPage() -> impl IntoView {
    let Session { info, .. } = expect_context::<Session>();
    let Blocking(blocking) = expect_context::<Blocking>();
    let list = Resource::new(
        move || blocking.version().get(),
        move |_| async move {
            if signed_in(info).await {
                blocked_users().await.map(Some)
            } else {
                Ok(None)
            }
        },
    );
    view! {
        <Title text="Blocked people" />
        <section class="blocked" aria-labelledby="blocked-title">
            <h1 id="blocked-title">"Blocked people"</h1>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match list.await {
                        Ok(None) => {
                            view! {
                                <p>
                                    <a href="/sign-in">"Sign in"</a>
                                    " to see whom you blocked."
                                </p>
                            }
                                .into_any()
                        }
                        Ok(Some(users)) if users.is_empty() => {
                            view! { <p class="muted">"You have not blocked anyone."</p> }.into_any()
                        }
                        Ok(Some(users)) => {
                            view! {
                                <p class="muted">
                                    "They cannot message you or send you invites, and do not see you online."
                                </p>
                                <ul class="list" aria-label="Blocked people">
                                    {users
                                        .into_iter()
                                        .map(|user| {
                                            view! {
                                                <li>
                                                    <span class="person">
                                                        <Avatar user=user.clone() />
                                                        <span class="name">{user.display_name()}</span>
                                                        <span class="username">"@" {user.username.clone()}</span>
                                                    </span>
                                                    <ActionForm action=blocking>
                                                        <input type="hidden" name="action" value="unblock" />
                                                        <input type="hidden" name="user_id" value=user.id.to_string() />
                                                        <input type="hidden" name="back" value="blocked" />
                                                        <button type="submit">"Unblock"</button>
                                                    </ActionForm>
                                                </li>
                                            }
                                        })
                                        .collect_view()}
                                </ul>
                            }
                                .into_any()
                        }
                        Err(error) => {
                            view! { <p class="form-error" role="alert">{error.to_string()}</p> }
                                .into_any()
                        }
                    }
                })}
            </Transition>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dms::{Dm, DmSummary},
        ids::MessageId,
        messages::Message,
        users::User,
    };

    #[test]
    fn the_other_members_handshake_steps_are_announced_and_mine_are_not() {
        // Row 1 is a DM with bob (user 2), who invited; I am user 3.
        let (bob, me) = (UserId::from_u128(2), UserId::from_u128(3));
        let news = |status, invited_by_user_id| {
            let mut r = row(0, 0);
            r.dm.status = status;
            r.dm.invited_by_user_id = invited_by_user_id;
            crate::dms::handshake_news(&r, me)
        };
        assert_eq!(
            news(DmStatus::Invited, bob).as_deref(),
            Some("bob wants to chat with you")
        );
        assert_eq!(
            news(DmStatus::Active, me).as_deref(),
            Some("bob accepted your invite")
        );
        assert_eq!(
            news(DmStatus::Declined, me).as_deref(),
            Some("bob declined your invite")
        );
        // My own invite, accept and decline.
        assert_eq!(news(DmStatus::Invited, me), None);
        assert_eq!(news(DmStatus::Active, bob), None);
        assert_eq!(news(DmStatus::Declined, bob), None);
    }

    fn row(last_seq: i64, unread_count: i64) -> DmSummary {
        DmSummary {
            dm: Dm {
                id: DmId::from_u128(1),
                status: DmStatus::Active,
                invited_by_user_id: UserId::from_u128(2),
                invite_note: None,
                muted: false,
            },
            other_user: User {
                id: UserId::from_u128(2),
                username: "bob".into(),
                first_name: None,
                last_name: None,
                image_url: None,
            },
            last_message: Some("older".into()),
            last_activity_at: time::macros::datetime!(2026-12-02 10:00 UTC),
            unread_count,
            last_seq,
            online: false,
            last_seen_at: None,
        }
    }

    fn message(seq: i64, body: &str) -> Message {
        Message {
            id: MessageId::from_u128(10 + seq as u128),
            dm_id: DmId::from_u128(1),
            seq,
            sender_id: UserId::from_u128(2),
            body: body.into(),
            client_id: uuid::Uuid::from_u128(100 + seq as u128),
            created_at: time::macros::datetime!(2026-12-02 11:00 UTC)
                + time::Duration::seconds(seq),
            edited_at: None,
            deleted: false,
            reactions: Default::default(),
            reply_to: None,
            attachment: None,
        }
    }

    #[test]
    fn a_row_counts_only_what_arrived_after_what_it_knew() {
        // Fetched with seq 3 the newest and 2 unread; then seq 3 (already
        // counted), their 4 and my 5 arrive.
        let patch = RowPatch {
            arrived: vec![(3, true), (4, true), (5, false)],
            newest: Some(message(5, "mine, newest")),
            read_through: 0,
        };
        let patches = HashMap::from([(DmId::from_u128(1), patch.clone())]);
        let [patched] = apply(vec![row(3, 2)], &HashMap::new(), &patches)
            .try_into()
            .unwrap();
        assert_eq!(patched.unread_count, 3);
        assert_eq!(patched.last_message.as_deref(), Some("mine, newest"));
        assert_eq!(
            patched.last_activity_at,
            time::macros::datetime!(2026-12-02 11:00:05 UTC)
        );

        // Reading through 4 reads all the row counted and the 4.
        let read = RowPatch {
            read_through: 4,
            ..patch
        };
        let patches = HashMap::from([(DmId::from_u128(1), read)]);
        let [patched] = apply(vec![row(3, 2)], &HashMap::new(), &patches)
            .try_into()
            .unwrap();
        assert_eq!(patched.unread_count, 0);

        // A list fetched later that knows seq 5 shows its own figures.
        let [fresh] = apply(vec![row(5, 1)], &HashMap::new(), &patches)
            .try_into()
            .unwrap();
        assert_eq!(
            (fresh.unread_count, fresh.last_message.as_deref()),
            (1, Some("older"))
        );
    }

    #[test]
    fn a_dm_event_replaces_a_row_in_another_state_and_adds_a_new_one() {
        let invited = DmSummary {
            dm: Dm {
                status: DmStatus::Invited,
                ..row(0, 0).dm
            },
            last_message: None,
            ..row(0, 0)
        };
        let active = row(0, 0);
        let heard = HashMap::from([(active.dm.id, active.clone())]);
        let [patched] = apply(vec![invited.clone()], &heard, &HashMap::new())
            .try_into()
            .unwrap();
        assert_eq!(patched.dm.status, DmStatus::Active);

        // A fetched row in the same state keeps its (newer) figures.
        let [kept] = apply(vec![row(7, 3)], &heard, &HashMap::new())
            .try_into()
            .unwrap();
        assert_eq!((kept.last_seq, kept.unread_count), (7, 3));

        // A DM the list did not have yet (a new invite) is added.
        let [added] = apply(Vec::new(), &heard, &HashMap::new())
            .try_into()
            .unwrap();
        assert_eq!(added.dm.id, active.dm.id);
    }
}

//! The conversation of an ACTIVE DM: messages with day separators and
//! grouping, optimistic sends (pending → sent, or failed with **Retry**),
//! **Seen**, "… is typing", edit and delete of one's own messages, older
//! history on scroll up, new messages kept in view (or **New messages**
//! for a reader scrolled up), and the composer (textbox **Message**; Enter
//! sends, Shift+Enter makes a new line).
//!
//! The newest page is rendered on the server (so the page works without
//! WASM: the composer is then a plain form). After hydration the messages
//! live in signals, updated by the event stream ([`Live::on_event`]) and by
//! the user's own actions. A `message` event carries the message, which is
//! shown without a request; one with a `seq` past the next fetches
//! everything after the newest shown first, so nothing is skipped or
//! doubled.

use leptos::{ev, prelude::*, server_fn::ServerFn};
use time::{
    OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339, macros::format_description,
};
use uuid::Uuid;

use super::{
    Attachment, Message, REACTIONS, Reactions, ReplyTo, SendMessageForm, delete_message,
    edit_message, excerpt, list_messages, react, read_messages, read_receipt, send_message, typing,
};
use crate::ids::{DmId, MessageId, UserId};
use crate::{
    attachments::components::{AttachImage, MessageImage, UploadStatus, Uploads},
    components::message_text::message_text,
    error::AppError,
    realtime::{Event, Live},
    users::User,
};

/// Messages per page of history.
pub const PAGE: i64 = 50;

/// How many messages each request of a catch-up asks for: the most
/// `messages/list` returns at once (DESIGN §6).
const CATCH_UP_PAGE: i64 = 100;
/// Messages of one sender closer together than this form one group.
const GROUP_GAP_SECS: i64 = 5 * 60;
/// How long a typing hint stays without a new one (milliseconds).
const TYPING_SHOWN_MS: i32 = 6_000;
/// The least time between two typing notices sent (milliseconds).
const TYPING_EVERY_MS: f64 = 2_000.0;

/// A message sent from this tab that the server has not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    dm_id: DmId,
    client_id: Uuid,
    body: String,
    reply_to: Option<ReplyTo>,
    attachment: Option<Attachment>,
    failed: bool,
}

/// One line of the thread.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Row {
    Day(String),
    Message {
        message: Message,
        mine: bool,
        starts_group: bool,
        time: String,
        seen: bool,
    },
    Pending(Pending),
}

impl Row {
    fn key(&self) -> String {
        match self {
            Row::Day(label) => format!("day {label}"),
            Row::Message {
                message,
                starts_group,
                time,
                seen,
                ..
            } => format!(
                "{} {:?} {} {starts_group} {time} {seen} {:?} {:?}",
                message.id, message.edited_at, message.deleted, message.reactions, message.reply_to
            ),
            Row::Pending(p) => format!("pending {} {}", p.client_id, p.failed),
        }
    }
}

/// Replaces the reactions of message `id`, if it is shown.
fn set_reactions(messages: RwSignal<Vec<Message>>, id: MessageId, reactions: Reactions) {
    messages.update(|all| {
        if let Some(message) = all.iter_mut().find(|m| m.id == id) {
            message.reactions = reactions;
        }
    });
}

/// Merges `new` into `messages` (sorted by `seq`, one per `seq`; a newer
/// copy replaces an older one) and drops the pending sends they confirm.
/// Replies shown that quote a message edited or deleted in `new` quote it
/// as it is now.
fn merge(messages: RwSignal<Vec<Message>>, pending: RwSignal<Vec<Pending>>, new: Vec<Message>) {
    if new.is_empty() {
        return;
    }
    pending.update(|p| p.retain(|p| !new.iter().any(|m| m.client_id == p.client_id)));
    messages.update(|all| {
        for message in new {
            let changed = message.deleted || message.edited_at.is_some();
            if changed {
                for reply in all.iter_mut().filter_map(|m| m.reply_to.as_mut()) {
                    if reply.id == message.id {
                        reply.deleted = message.deleted;
                        reply.excerpt = excerpt(&message.body);
                    }
                }
            }
            match all.binary_search_by_key(&message.seq, |m| m.seq) {
                Ok(i) => all[i] = message,
                Err(i) => all.insert(i, message),
            }
        }
    });
}

/// The thread's rows: day separators, groups, **Seen** under my last
/// message the other has read, then the pending sends. Times are shown at
/// `offset` (UTC on the server, the browser's zone after hydration).
fn rows(
    messages: &[Message],
    pending: &[Pending],
    me: UserId,
    other_read: i64,
    offset: UtcOffset,
) -> Vec<Row> {
    let seen_seq = messages
        .iter()
        .filter(|m| m.sender_id == me && m.seq <= other_read)
        .map(|m| m.seq)
        .max();
    let mut rows = Vec::with_capacity(messages.len() + pending.len() + 4);
    let mut last: Option<(OffsetDateTime, UserId)> = None;
    for message in messages {
        let at = message.created_at.to_offset(offset);
        if last.is_none_or(|(prev, _)| prev.date() != at.date()) {
            let label = at
                .format(format_description!(
                    "[weekday], [day padding:none] [month repr:long] [year]"
                ))
                .unwrap_or_default();
            rows.push(Row::Day(label));
            last = None;
        }
        let starts_group = last.is_none_or(|(prev, sender)| {
            sender != message.sender_id || (at - prev).whole_seconds() > GROUP_GAP_SECS
        });
        last = Some((at, message.sender_id));
        rows.push(Row::Message {
            mine: message.sender_id == me,
            starts_group,
            time: at
                .format(format_description!("[hour]:[minute]"))
                .unwrap_or_default(),
            seen: Some(message.seq) == seen_seq,
            message: message.clone(),
        });
    }
    rows.extend(pending.iter().cloned().map(Row::Pending));
    rows
}

/// The client state of the open conversation. The chat page creates it
/// once, outside its `Transition`, so that what the user sees (pending
/// sends, loaded history, an edit in progress) outlives a re-render of the
/// page when the DM's state is refetched.
#[derive(Clone, Copy)]
pub struct ThreadState {
    dm_id: RwSignal<Option<DmId>>,
    messages: RwSignal<Vec<Message>>,
    pending: RwSignal<Vec<Pending>>,
    other_read: RwSignal<i64>,
    typing_shown: RwSignal<u32>,
    has_older: RwSignal<bool>,
    editing: RwSignal<Option<MessageId>>,
    draft: RwSignal<String>,
    composer: RwSignal<String>,
    last_marked: RwSignal<i64>,
    /// The zone times are shown in: UTC on the server, the browser's after
    /// hydration.
    offset: RwSignal<UtcOffset>,
    /// Whether a send of `pending` is on its way (one at a time).
    sending: StoredValue<bool>,
    /// The message the next send answers (**Reply**).
    replying: RwSignal<Option<ReplyTo>>,
    /// The image the next send carries.
    uploads: Uploads,
    /// What the rows of the thread read as they are drawn: the other
    /// member's name, whether the page has hydrated, and the message
    /// marked by `?at=`. Kept here, beside the messages, rather than in the
    /// thread's view: a view being replaced can still draw a row.
    other_name: RwSignal<String>,
    hydrated: RwSignal<bool>,
    marked: RwSignal<Option<i64>>,
}

impl ThreadState {
    /// An empty state; [`Conversation`] fills it.
    pub fn new() -> Self {
        Self {
            dm_id: RwSignal::new(None),
            messages: RwSignal::new(Vec::new()),
            pending: RwSignal::new(Vec::new()),
            other_read: RwSignal::new(0),
            typing_shown: RwSignal::new(0),
            has_older: RwSignal::new(false),
            editing: RwSignal::new(None),
            draft: RwSignal::new(String::new()),
            composer: RwSignal::new(String::new()),
            last_marked: RwSignal::new(0),
            offset: RwSignal::new(UtcOffset::UTC),
            sending: StoredValue::new(false),
            replying: RwSignal::new(None),
            uploads: Uploads::new(),
            other_name: RwSignal::new(String::new()),
            hydrated: RwSignal::new(false),
            marked: RwSignal::new(None),
        }
    }

    /// Takes the server's newest page of DM `dm_id`: a fresh start for
    /// another DM, else merged into what is there.
    fn load(&self, dm_id: DmId, messages: Vec<Message>, other_read: i64) {
        if self.dm_id.get_untracked() != Some(dm_id) {
            self.dm_id.set(Some(dm_id));
            self.has_older
                .set(messages.first().is_some_and(|m| m.seq > 1));
            self.messages.set(messages);
            self.pending.set(Vec::new());
            self.other_read.set(other_read);
            self.typing_shown.set(0);
            self.editing.set(None);
            self.composer.set(String::new());
            self.last_marked.set(0);
            self.replying.set(None);
            self.uploads.clear();
        } else {
            merge(self.messages, self.pending, messages);
            self.other_read.update(|r| *r = (*r).max(other_read));
        }
    }
}

impl Default for ThreadState {
    fn default() -> Self {
        Self::new()
    }
}

/// The newest page of an ACTIVE DM as the chat page first shows it: up to
/// [`PAGE`] messages in `seq` order and the other member's read position
/// (`seq`, 0 before they read anything).
pub type FirstPage = (Vec<Message>, i64);

/// Fetches DM `dm_id`'s [`FirstPage`]: its messages and the read receipt
/// at once (one round trip fewer on the way to the page).
///
/// # Errors
/// Those of [`list_messages`] and [`read_receipt`]: 401, 404 for a DM that
/// is not mine, 500.
pub async fn first_page(dm_id: DmId) -> Result<FirstPage, AppError> {
    let (messages, receipt) = futures::future::try_join(
        list_messages(dm_id, None, None, Some(PAGE)),
        read_receipt(dm_id),
    )
    .await?;
    Ok((messages, receipt.seq))
}

/// The texts of the other member's messages (not `me`'s) in `messages`
/// past `seq` `known`, deleted ones left out: what is news to the reader.
fn news(messages: &[Message], known: i64, me: UserId) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.seq > known && m.sender_id != me && !m.deleted)
        .map(|m| m.body.clone())
        .collect()
}

/// Says once, in the page's live region, what the other member (`other_name`)
/// sent that arrived without its own event (`bodies`, oldest first): one
/// message as "name: text", several as their count.
fn announce_arrivals(live: Live, other_name: &str, bodies: &[String]) {
    match bodies {
        [] => {}
        [body] => live.announce(format!("{other_name}: {body}")),
        many => live.announce(format!("{} new messages from {other_name}", many.len())),
    }
}

/// An ACTIVE DM with `other`: the thread and the composer, kept in `state`,
/// starting from `first` (the chat page loads it with the DM, in the same
/// resource: a resource created here, inside the page's `Transition`, is
/// created again each time the page's `Suspend` runs, and so is its fetch).
#[component]
pub fn Conversation(
    dm_id: DmId,
    other: User,
    me: UserId,
    state: ThreadState,
    first: Result<FirstPage, AppError>,
) -> impl IntoView {
    match first {
        Ok((messages, other_read)) => {
            // Loaded again (the stream came back after a drop): what the
            // other member sent meanwhile is news, as if it came live.
            if state.dm_id.get_untracked() == Some(dm_id) {
                let known = state
                    .messages
                    .with_untracked(|all| all.last().map_or(0, |m| m.seq));
                let theirs = news(&messages, known, me);
                announce_arrivals(expect_context::<Live>(), &other.display_name(), &theirs);
            }
            state.load(dm_id, messages, other_read);
            view! { <Thread dm_id other me state /> }.into_any()
        }
        Err(error) => view! {
            <crate::components::load_error::LoadError
                what="The messages could not be loaded."
                error
            />
        }
        .into_any(),
    }
}

#[component]
fn Thread(dm_id: DmId, other: User, me: UserId, state: ThreadState) -> impl IntoView {
    let live = expect_context::<Live>();
    let ThreadState {
        messages,
        pending,
        other_read,
        typing_shown,
        has_older,
        editing,
        draft,
        composer,
        last_marked,
        offset,
        sending,
        replying,
        uploads,
        hydrated,
        marked,
        ..
    } = state;
    state.other_name.set(other.display_name());
    let other_name_stored = state.other_name;
    // A failed edit, delete or read position, said in an alert.
    let problem = RwSignal::new(None::<String>);
    let last_typing = StoredValue::new(0f64);
    // Whether the reader is at the bottom of the thread (then new messages
    // scroll into view), and how many arrived below while they were not.
    let at_bottom = RwSignal::new(true);
    let unseen = RwSignal::new(0usize);
    let list_ref = NodeRef::<leptos::html::Ol>::new();
    let textbox = NodeRef::<leptos::html::Textarea>::new();
    let form_ref = NodeRef::<leptos::html::Form>::new();
    #[cfg(feature = "ssr")]
    let form_client_id = Uuid::new_v4().to_string();
    #[cfg(not(feature = "ssr"))]
    let form_client_id = String::new();
    let other_name = other.display_name();

    let newest = move || {
        messages
            .try_with_untracked(|m| m.last().map_or(0, |m| m.seq))
            .unwrap_or(0)
    };
    // What is on screen in a visible tab is read. My own messages need no
    // request: sending moved my read position on the server.
    let mark_read = move || {
        let seq = newest();
        if seq <= last_marked.get_untracked() || !browser::visible() {
            return;
        }
        let newest_theirs = messages
            .try_with_untracked(|m| m.iter().rev().find(|m| m.sender_id != me).map(|m| m.seq))
            .flatten()
            .unwrap_or(0);
        let unread_theirs = newest_theirs > last_marked.get_untracked();
        last_marked.set(seq);
        if unread_theirs {
            leptos::task::spawn_local(async move {
                if let Err(error) = read_messages(dm_id, seq).await {
                    // Said, and tried again with the next message shown.
                    problem.try_set(Some(format!("Could not mark messages as read: {error}")));
                    last_marked.try_update(|marked| *marked = (*marked).min(seq - 1));
                }
            });
        }
    };
    let other_id = other.id;
    let other_name_for_news = other_name.clone();
    // Everything after the newest message, page by page. What the other
    // member sent meanwhile (the stream was down, or not open yet) is
    // announced once, like a message that arrives live.
    let catch_up = {
        let other_name = other_name.clone();
        move || {
            let other_name = other_name.clone();
            leptos::task::spawn_local(async move {
                let mut theirs: Vec<String> = Vec::new();
                loop {
                    let Ok(page) =
                        list_messages(dm_id, None, Some(newest()), Some(CATCH_UP_PAGE)).await
                    else {
                        break;
                    };
                    let full = page.len() as i64 == CATCH_UP_PAGE;
                    // Not what the stream delivered while this page loaded.
                    let known = newest();
                    theirs.extend(news(&page, known, me));
                    merge(messages, pending, page);
                    if !full {
                        break;
                    }
                }
                announce_arrivals(live, &other_name, &theirs);
                if !theirs.is_empty() {
                    typing_shown.set(0);
                }
                mark_read();
            });
        }
    };
    live.on_event(move |event| match event {
        // The event carries the message: a new one next in line, an edit or
        // a deletion is shown as it is; after a gap, what is missing is
        // fetched first.
        Event::Message(message) if message.dm_id == dm_id => {
            if message.seq > newest() + 1 {
                catch_up();
            } else {
                if message.sender_id != me {
                    typing_shown.set(0);
                    // A new message (not an edit or a deletion) is said
                    // once in the page's live region.
                    if message.seq > newest() && !message.deleted && message.edited_at.is_none() {
                        live.announce(format!("{}: {}", other_name_for_news, message.body));
                    }
                }
                merge(messages, pending, vec![message.clone()]);
                mark_read();
            }
        }
        Event::Reaction(e) if e.dm_id == dm_id => {
            set_reactions(messages, e.message_id, e.reactions.clone());
        }
        Event::Read(e) if e.dm_id == dm_id && e.user_id == other_id => {
            other_read.update(|r| *r = (*r).max(e.seq));
        }
        Event::Typing(e) if e.dm_id == dm_id && e.user_id == other_id => {
            let shown = typing_shown.get_untracked().wrapping_add(1).max(1);
            typing_shown.set(shown);
            set_timeout(
                move || {
                    if typing_shown.get_untracked() == shown {
                        typing_shown.set(0);
                    }
                },
                std::time::Duration::from_millis(TYPING_SHOWN_MS as u64),
            );
        }
        Event::Resync(_) => {
            catch_up();
            leptos::task::spawn_local(async move {
                if let Ok(receipt) = read_receipt(dm_id).await {
                    other_read.update(|r| *r = (*r).max(receipt.seq));
                }
            });
        }
        _ => {}
    });
    // After hydration: local times, read what is shown, start at the bottom.
    Effect::new(move |_| {
        // A draft survives the page re-rendering this thread.
        let draft = composer.get_untracked();
        if let Some(textbox) = textbox.get_untracked()
            && !draft.is_empty()
            && textbox.value().is_empty()
        {
            textbox.set_value(&draft);
        }
        offset.set(browser::local_offset());
        mark_read();
        browser::scroll_to_bottom(list_ref);
        browser::focus_composer(textbox);
    });
    let _focus = window_event_listener(ev::focus, move |_| mark_read());
    // A new line at the bottom (older history loads at the top) scrolls
    // into view when the reader was at the bottom, and always when it is
    // their own send; a reader scrolled up gets **New messages** instead.
    Effect::new(move |previous: Option<(i64, usize)>| {
        let newest = messages.with(|m| m.last().map_or(0, |m| m.seq));
        let sending = pending.with(Vec::len);
        if let Some((was_newest, was_sending)) = previous {
            if sending > was_sending || at_bottom.get_untracked() {
                if newest > was_newest || sending > was_sending {
                    browser::scroll_to_bottom_after_render(list_ref);
                    unseen.set(0);
                }
            } else if newest > was_newest {
                let arrived = messages.with_untracked(|m| {
                    m.iter()
                        .filter(|m| m.seq > was_newest && m.sender_id != me)
                        .count()
                });
                unseen.update(|n| *n += arrived);
            }
        }
        (newest, sending)
    });
    let jump_down = move |_| {
        browser::scroll_to_bottom(list_ref);
        at_bottom.set(true);
        unseen.set(0);
    };

    // Sends go one at a time, oldest first: the server numbers messages in
    // the order their sends arrive, so two sends on their way at once could
    // swap (a slow first request, as after a server restart). A send that
    // fails fails those queued behind it too, so that none overtakes it;
    // **Retry** queues one again.
    let drain = move || {
        if sending.try_get_value() != Some(false) {
            return;
        }
        sending.set_value(true);
        leptos::task::spawn_local(async move {
            while let Some(next) = pending
                .try_with_untracked(|p| p.iter().find(|p| !p.failed).cloned())
                .flatten()
            {
                let result = send_message(
                    next.dm_id,
                    next.body.clone(),
                    next.client_id,
                    next.reply_to.as_ref().map(|r| r.id),
                    next.attachment.as_ref().map(|a| a.id),
                )
                .await;
                match result {
                    Ok(message) => {
                        // Sending moved my read position on the server.
                        last_marked.update(|seq| *seq = (*seq).max(message.seq));
                        // Drops `next` from `pending`: it has the same `client_id`.
                        merge(messages, pending, vec![message]);
                    }
                    Err(_) => {
                        pending.try_update(|p| {
                            if let Some(at) = p.iter().position(|p| p.client_id == next.client_id) {
                                p[at..].iter_mut().for_each(|p| p.failed = true);
                            }
                        });
                    }
                }
            }
            sending.try_set_value(false);
        });
    };
    // A new send, or **Retry** of a failed one (by its `client_id`).
    let send = move |new: Pending| {
        pending.update(
            |p| match p.iter_mut().find(|p| p.client_id == new.client_id) {
                Some(p) => p.failed = false,
                None => p.push(new),
            },
        );
        drain();
    };
    let on_submit = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        // The text box is the truth: it may hold text typed before the page
        // hydrated, which no input event reported.
        let Some(textbox) = textbox.get() else {
            return;
        };
        // The image goes with the text once it is stored.
        if uploads.sending() {
            return;
        }
        let attachment = uploads.ready();
        let body = textbox.value().trim().to_owned();
        if body.is_empty() && attachment.is_none() {
            return;
        }
        textbox.set_value("");
        composer.set(String::new());
        uploads.clear();
        send(Pending {
            dm_id,
            client_id: browser::new_client_id(),
            body,
            reply_to: replying.get_untracked(),
            attachment,
            failed: false,
        });
        replying.set(None);
    };
    let on_keydown = move |ev: ev::KeyboardEvent| {
        if ev.key() == "Escape" && replying.get_untracked().is_some() {
            replying.set(None);
        }
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            // `try_`: the view can outlive this thread for a moment while
            // the page re-renders it (its draft is kept in `composer`).
            if let Some(form) = form_ref.try_get().flatten() {
                let _ = form.request_submit();
            }
        }
    };
    let on_input = move |ev: ev::Event| {
        composer.set(event_target_value(&ev));
        let now = browser::now_ms();
        let Some(last) = last_typing.try_get_value() else {
            return;
        };
        if now - last >= TYPING_EVERY_MS {
            last_typing.set_value(now);
            leptos::task::spawn_local(async move {
                let _ = typing(dm_id).await;
            });
        }
    };
    let load_older = move || {
        let Some(before) = messages.with_untracked(|m| m.first().map(|m| m.seq)) else {
            return;
        };
        if !has_older.get_untracked() {
            return;
        }
        has_older.set(false);
        leptos::task::spawn_local(async move {
            match list_messages(dm_id, Some(before), None, Some(PAGE)).await {
                Ok(page) => {
                    let more = page.first().is_some_and(|m| m.seq > 1);
                    let keep = browser::keep_scroll_position(list_ref);
                    merge(messages, pending, page);
                    keep();
                    has_older.set(more);
                }
                Err(_) => has_older.set(true),
            }
        });
    };
    // `?at=SEQ` (a search result) and a reply's quote: the history back to
    // message SEQ is loaded, however old it is, and the message is shown,
    // marked and focused.
    let query = leptos_router::hooks::use_query_map();
    let wanted = Memo::new(move |_| {
        query
            .read()
            .get("at")
            .and_then(|at| at.parse::<i64>().ok())
            .filter(|at| *at >= 1)
    });
    marked.set(wanted.get_untracked());
    let show_at = move |at: i64| {
        marked.set(Some(at));
        leptos::task::spawn_local(async move {
            let loaded_from = messages.with_untracked(|m| m.first().map_or(i64::MAX, |m| m.seq));
            let mut after = (at - 10).max(0);
            while after + 1 < loaded_from {
                let Ok(page) = list_messages(dm_id, None, Some(after), Some(CATCH_UP_PAGE)).await
                else {
                    break;
                };
                let Some(last) = page.last().map(|m| m.seq) else {
                    break;
                };
                merge(messages, pending, page);
                after = last;
            }
            has_older.set(messages.with_untracked(|m| m.first().is_some_and(|m| m.seq > 1)));
            browser::show_message(at);
        });
    };
    Effect::new(move |_| {
        if let Some(at) = wanted.get() {
            show_at(at);
        }
    });
    let on_scroll = move |_| {
        let bottom = browser::at_bottom(list_ref);
        at_bottom.set(bottom);
        if bottom {
            unseen.set(0);
        }
        if browser::at_top(list_ref) {
            load_older();
        }
    };
    let save_edit = move |id: MessageId| {
        let body = draft.get_untracked();
        leptos::task::spawn_local(async move {
            match edit_message(id, body).await {
                Ok(message) => {
                    merge(messages, pending, vec![message]);
                    editing.set(None);
                    problem.try_set(None);
                }
                Err(error) => {
                    problem.try_set(Some(format!("Could not save the edit: {error}")));
                }
            }
        });
    };
    let delete = move |id: MessageId| {
        leptos::task::spawn_local(async move {
            match delete_message(id).await {
                Ok(message) => {
                    merge(messages, pending, vec![message]);
                    problem.try_set(None);
                }
                Err(error) => {
                    problem.try_set(Some(format!("Could not delete the message: {error}")));
                }
            }
        });
    };

    // Reactions need the WASM bundle: their buttons wait for hydration.
    Effect::new(move |_| hydrated.set(true));
    // The message's row is drawn anew with its reactions: a keyboard user
    // who reacted keeps the focus on that reaction (or on **React** once
    // it is gone).
    let react_to = move |id: MessageId, seq: i64, emoji: &'static str| {
        let had_focus = browser::focus_within(seq);
        leptos::task::spawn_local(async move {
            match react(id, emoji.to_owned()).await {
                Ok(reactions) => {
                    set_reactions(messages, id, reactions);
                    problem.try_set(None);
                    if had_focus {
                        browser::focus_reaction(seq, emoji);
                    }
                }
                Err(error) => {
                    problem.try_set(Some(format!("Could not react: {error}")));
                }
            }
        });
    };
    // An image pasted into the composer or dropped on the conversation is
    // uploaded as **Attach image** would.
    let on_paste = move |ev: ev::ClipboardEvent| {
        #[cfg(feature = "hydrate")]
        if uploads.start_first(dm_id, ev.clipboard_data().and_then(|data| data.files())) {
            ev.prevent_default();
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    };
    let on_dragover = move |ev: ev::DragEvent| ev.prevent_default();
    let on_drop = move |ev: ev::DragEvent| {
        #[cfg(feature = "hydrate")]
        if uploads.start_first(dm_id, ev.data_transfer().and_then(|data| data.files())) {
            ev.prevent_default();
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    };
    // A reply's quote: whom and what it answers (*Message deleted* once it
    // is). In a sent reply, pressing it shows the original message.
    let quote = move |r: ReplyTo, sent: bool| {
        let who = if r.sender_id == me {
            "You".to_owned()
        } else {
            other_name_stored.get_untracked()
        };
        let text = if r.deleted {
            "Message deleted".to_owned()
        } else if r.excerpt.is_empty() {
            "Image".to_owned()
        } else {
            r.excerpt.clone()
        };
        let seq = r.seq;
        // Named by its text: "Reply to {who}: {text}".
        view! {
            <button
                type="button"
                class="quote"
                disabled=move || !sent || !hydrated.get()
                on:click=move |_| show_at(seq)
            >
                <span class="visually-hidden">{format!("Reply to {who}: {text}")}</span>
                <span class="quote-sender" aria-hidden="true">{who}</span>
                <span class="quote-text" class:deleted-text=r.deleted aria-hidden="true">{text}</span>
            </button>
        }
    };
    let all_rows =
        move || messages.with(|m| pending.with(|p| rows(m, p, me, other_read.get(), offset.get())));
    let render = move |row: Row| match row {
        Row::Day(label) => view! {
            // A list item like the others (a `separator` role would take
            // it out of the list for assistive technology).
            <li class="day">
                <span>{label}</span>
            </li>
        }
        .into_any(),
        Row::Pending(p) => {
            let retry = {
                let p = p.clone();
                move |_| send(p.clone())
            };
            view! {
                <li class="message mine pending" class:failed=p.failed>
                    {p.reply_to.clone().map(|r| quote(r, false))}
                    {p.attachment.clone().map(|attachment| view! { <MessageImage attachment /> })}
                    {(!p.body.is_empty()).then(|| view! { <p>{message_text(&p.body)}</p> })}
                    <span class="status" role="status">
                        {if p.failed { "Not sent" } else { "Sending…" }}
                    </span>
                    {p.failed.then(|| view! {
                        <button type="button" class="link-button" on:click=retry>"Retry"</button>
                    })}
                </li>
            }
            .into_any()
        }
        Row::Message {
            message,
            mine,
            starts_group,
            time,
            seen,
        } => {
            let id = message.id;
            let seq = message.seq;
            let is_editing = move || editing.get() == Some(id);
            let reply = {
                let quoted = ReplyTo {
                    id,
                    seq,
                    sender_id: message.sender_id,
                    excerpt: excerpt(&message.body),
                    deleted: false,
                };
                move |_| {
                    replying.set(Some(quoted.clone()));
                    browser::focus_textbox(textbox);
                }
            };
            let body = message.body.clone();
            let start_edit = move |_| {
                draft.set(body.clone());
                editing.set(Some(id));
            };
            view! {
                <li
                    id=format!("m{}", message.seq)
                    tabindex="-1"
                    class="message"
                    class:mine=mine
                    class:group-start=starts_group
                    class:deleted=message.deleted
                    class:found=move || marked.get() == Some(seq)
                >
                    {starts_group.then(|| view! {
                        <time class="meta" datetime=message.created_at.format(&Rfc3339).unwrap_or_default()>{time}</time>
                    })}
                    <Show
                        when=is_editing
                        fallback={
                            let message = message.clone();
                            move || if message.deleted {
                                view! { <p class="deleted-text">"Message deleted"</p> }.into_any()
                            } else {
                                view! {
                                    {message.reply_to.clone().map(|r| quote(r, true))}
                                    {message.attachment.clone().map(|attachment| view! { <MessageImage attachment /> })}
                                    {(!message.body.is_empty()).then(|| view! { <p>{message_text(&message.body)}</p> })}
                                    {message.edited_at.is_some().then(|| view! { <span class="meta">"edited"</span> })}
                                }.into_any()
                            }
                        }
                    >
                        <form class="edit" on:submit=move |ev: ev::SubmitEvent| { ev.prevent_default(); save_edit(id); }>
                            <textarea
                                aria-label="Edit message"
                                rows="2"
                                maxlength="4000"
                                prop:value=move || draft.get()
                                on:input=move |ev| draft.set(event_target_value(&ev))
                            ></textarea>
                            <button type="submit">"Save"</button>
                            <button type="button" on:click=move |_| editing.set(None)>"Cancel"</button>
                        </form>
                    </Show>
                    {(!message.deleted).then(|| {
                        let other_name = other_name_stored.get_untracked();
                        let chosen = message.reactions.0.clone().into_iter().map(|r| {
                            let emoji = REACTIONS.iter().copied().find(|e| *e == r.emoji);
                            let mine = r.user_ids.contains(&me);
                            let who = r
                                .user_ids
                                .iter()
                                .map(|u| if *u == me { "you".to_owned() } else { other_name.clone() })
                                .collect::<Vec<_>>()
                                .join(" and ");
                            let count = r.user_ids.len();
                            let label = format!("{} {count}: {who}", r.emoji);
                            view! {
                                <button
                                    type="button"
                                    class="reaction"
                                    class:mine=mine
                                    aria-pressed=mine.to_string()
                                    aria-label=label.clone()
                                    title=label
                                    disabled=move || !hydrated.get()
                                    data-emoji=r.emoji.clone()
                                    on:click=move |_| {
                                        if let Some(emoji) = emoji {
                                            react_to(id, seq, emoji);
                                        }
                                    }
                                >
                                    {r.emoji.clone()} " " {count}
                                </button>
                            }
                        }).collect::<Vec<_>>();
                        view! {
                            <div class="reactions">
                                {chosen}
                                <details class="react-picker">
                                    <summary aria-label="React">"🙂"</summary>
                                    {REACTIONS.map(|emoji| view! {
                                        <button
                                            type="button"
                                            aria-label=format!("React with {emoji}")
                                            disabled=move || !hydrated.get()
                                            on:click=move |_| react_to(id, seq, emoji)
                                        >
                                            {emoji}
                                        </button>
                                    })}
                                </details>
                            </div>
                        }
                    })}
                    {(!message.deleted).then(|| view! {
                        <span class="message-actions">
                            <button
                                type="button"
                                class="link-button"
                                disabled=move || !hydrated.get()
                                on:click=reply.clone()
                            >
                                "Reply"
                            </button>
                            {mine.then(|| view! {
                                <button type="button" class="link-button" on:click=start_edit.clone()>"Edit"</button>
                                <button type="button" class="link-button" on:click=move |_| delete(id)>"Delete"</button>
                            })}
                        </span>
                    })}
                    {seen.then(|| view! { <span class="seen">"Seen"</span> })}
                </li>
            }
            .into_any()
        }
    };

    view! {
        <div class="thread" on:dragover=on_dragover on:drop=on_drop>
            {move || has_older.get().then(|| view! {
                <button type="button" class="older" on:click=move |_| load_older()>
                    "Load earlier messages"
                </button>
            })}
            <ol
                class="messages"
                aria-label="Messages"
                node_ref=list_ref
                on:scroll=on_scroll
            >
                {move || (messages.with(Vec::is_empty) && pending.with(Vec::is_empty)).then(|| view! {
                    <li class="muted">"No messages yet. Say hello!"</li>
                })}
                <For each=all_rows key=Row::key children=render />
            </ol>
            {move || (unseen.get() > 0).then(|| view! {
                <button type="button" class="new-messages" on:click=jump_down>
                    "New messages"
                </button>
            })}
            {move || {
                problem.get().map(|text| view! { <p class="form-error" role="alert">{text}</p> })
            }}
            <p class="typing" aria-live="polite">
                {move || (typing_shown.get() > 0).then(|| format!("{other_name} is typing…"))}
            </p>
        </div>
        {move || replying.get().map(|r| {
            let who = if r.sender_id == me { "yourself".to_owned() } else { other_name_stored.get_untracked() };
            let text = if r.excerpt.is_empty() { "Image".to_owned() } else { r.excerpt };
            view! {
                <div class="replying">
                    <span>"Replying to " {who} ": " <span class="quote-text">{text}</span></span>
                    <button type="button" class="link-button" on:click=move |_| replying.set(None)>
                        "Cancel reply"
                    </button>
                </div>
            }
        })}
        <UploadStatus uploads />
        <form
            class="composer"
            method="post"
            action=SendMessageForm::url()
            node_ref=form_ref
            on:submit=on_submit
            on:dragover=on_dragover
            on:drop=on_drop
        >
            <input type="hidden" name="dm_id" value=dm_id.to_string() />
            <input type="hidden" name="other_user_id" value=other.id.to_string() />
            // The form's idempotency key: the same form posted twice (a
            // double click, a resubmit) stores one message. Made when the
            // server renders the page; the hydrated composer makes its own.
            <input type="hidden" name="client_id" value=form_client_id />
            <textarea
                node_ref=textbox
                name="body"
                aria-label="Message"
                rows="2"
                required=move || uploads.ready().is_none()
                maxlength="4000"
                on:keydown=on_keydown
                on:input=on_input
                on:paste=on_paste
            ></textarea>
            <AttachImage dm_id uploads hydrated />
            <button type="submit">"Send"</button>
        </form>
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::{
        html::{Ol, Textarea},
        prelude::*,
    };
    use time::UtcOffset;
    use uuid::Uuid;
    use web_sys::VisibilityState;

    /// Moves the keyboard focus into the composer, unless it is already
    /// somewhere in the main pane: a conversation just opened from the
    /// sidebar, or just accepted (the button that had focus is gone).
    /// Scrolls message `seq` (its row's id is `m{seq}`) to the middle of
    /// the thread and gives it the focus, after the next frame.
    pub fn show_message(seq: i64) {
        request_animation_frame(move || {
            let Some(row) = document().get_element_by_id(&format!("m{seq}")) else {
                return;
            };
            let options = web_sys::ScrollIntoViewOptions::new();
            options.set_block(web_sys::ScrollLogicalPosition::Center);
            row.scroll_into_view_with_scroll_into_view_options(&options);
            if let Ok(row) = wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(row) {
                let _ = row.focus();
            }
        });
    }

    /// Whether the keyboard focus is in message `seq`'s row.
    pub fn focus_within(seq: i64) -> bool {
        let active = document().active_element();
        document()
            .get_element_by_id(&format!("m{seq}"))
            .zip(active)
            .is_some_and(|(row, active)| row.contains(Some(&active)))
    }

    /// After the next frame, focuses message `seq`'s reaction `emoji`, or
    /// its **React** when that reaction is gone.
    pub fn focus_reaction(seq: i64, emoji: &str) {
        let selectors = [
            format!("#m{seq} button.reaction[data-emoji=\"{emoji}\"]"),
            format!("#m{seq} .react-picker summary"),
        ];
        request_animation_frame(move || {
            let target = selectors
                .iter()
                .find_map(|selector| document().query_selector(selector).ok().flatten());
            if let Some(el) = target
                .and_then(|el| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(el).ok())
            {
                let _ = el.focus();
            }
        });
    }

    /// Moves the keyboard focus into the composer's text box, after the
    /// next frame.
    pub fn focus_textbox(textbox: NodeRef<Textarea>) {
        request_animation_frame(move || {
            if let Some(textbox) = textbox.try_get_untracked().flatten() {
                let _ = textbox.focus();
            }
        });
    }

    pub fn focus_composer(textbox: NodeRef<Textarea>) {
        // After the frame, once the view this thread replaces (with the
        // button that had the focus) has left the page.
        request_animation_frame(move || {
            let Some(textbox) = textbox.try_get_untracked().flatten() else {
                return;
            };
            // In the main pane, but not the pane itself (where opening a
            // page puts it).
            let in_main = document()
                .active_element()
                .filter(|el| el.tag_name() != "MAIN" && el.is_connected())
                .and_then(|el| el.closest("main").ok().flatten())
                .is_some();
            if !in_main {
                let _ = textbox.focus();
            }
        });
    }

    pub fn visible() -> bool {
        document().visibility_state() == VisibilityState::Visible
    }

    pub fn now_ms() -> f64 {
        js_sys::Date::now()
    }

    /// A v4 UUID from the browser's CSPRNG (`crypto.getRandomValues`).
    pub fn new_client_id() -> Uuid {
        let mut bytes = [0u8; 16];
        if let Ok(crypto) = window().crypto() {
            let _ = crypto.get_random_values_with_u8_array(&mut bytes);
        }
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    pub fn local_offset() -> UtcOffset {
        let minutes = -(js_sys::Date::new_0().get_timezone_offset() as i32);
        UtcOffset::from_whole_seconds(minutes * 60).unwrap_or(UtcOffset::UTC)
    }

    pub fn scroll_to_bottom(list: NodeRef<Ol>) {
        if let Some(list) = list.get_untracked() {
            list.set_scroll_top(list.scroll_height());
        }
    }

    /// Scrolls to the bottom once the list has rendered what just changed
    /// (this runs before the list's own update).
    pub fn scroll_to_bottom_after_render(list: NodeRef<Ol>) {
        request_animation_frame(move || scroll_to_bottom(list));
    }

    /// Whether the view shows the end of the list (within a few pixels).
    pub fn at_bottom(list: NodeRef<Ol>) -> bool {
        list.get_untracked().is_none_or(|list| {
            list.scroll_height() - list.scroll_top() - list.client_height() <= 24
        })
    }

    pub fn at_top(list: NodeRef<Ol>) -> bool {
        list.get_untracked().is_some_and(|l| l.scroll_top() <= 4)
    }

    /// Call before prepending; the returned closure, called after, keeps
    /// the same messages in view.
    pub fn keep_scroll_position(list: NodeRef<Ol>) -> impl FnOnce() {
        let before = list
            .get_untracked()
            .map(|l| (l.scroll_height(), l.scroll_top()));
        move || {
            request_animation_frame(move || {
                if let (Some(list), Some((height, top))) = (list.get_untracked(), before) {
                    list.set_scroll_top(top + list.scroll_height() - height);
                }
            });
        }
    }
}

/// On the server nothing here runs; these keep the shared code compiling.
#[cfg(not(feature = "hydrate"))]
mod browser {
    use leptos::html::{Ol, Textarea};
    use leptos::prelude::NodeRef;
    use time::UtcOffset;
    use uuid::Uuid;

    pub fn focus_composer(_: NodeRef<Textarea>) {}
    pub fn focus_textbox(_: NodeRef<Textarea>) {}
    pub fn focus_within(_: i64) -> bool {
        false
    }
    pub fn focus_reaction(_: i64, _: &str) {}
    pub fn show_message(_: i64) {}

    pub fn visible() -> bool {
        false
    }
    pub fn now_ms() -> f64 {
        0.0
    }
    pub fn new_client_id() -> Uuid {
        Uuid::nil()
    }
    pub fn local_offset() -> UtcOffset {
        UtcOffset::UTC
    }
    pub fn scroll_to_bottom(_: NodeRef<Ol>) {}
    pub fn at_bottom(_: NodeRef<Ol>) -> bool {
        true
    }
    pub fn scroll_to_bottom_after_render(_: NodeRef<Ol>) {}
    pub fn at_top(_: NodeRef<Ol>) -> bool {
        false
    }
    pub fn keep_scroll_position(_: NodeRef<Ol>) -> impl FnOnce() {
        || {}
    }
}

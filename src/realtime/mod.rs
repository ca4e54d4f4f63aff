//! Real time: what flows on the event stream ([`event`], both sides), the
//! server's event log, SSE stream and presence ([`server`], [`presence`]),
//! and the browser's side ([`Live`]): one `EventSource` per browser, shared
//! by its tabs. A handshake step updates [`Live::dm_rows`]; a resync bumps
//! the signals that lists refetch on; every event reaches the open
//! conversation and the sidebar, which patch themselves, through
//! [`Live::on_event`].

use std::{collections::HashMap, sync::Arc};

use leptos::prelude::*;

use crate::dms::{DmStatus, DmSummary};
use crate::ids::{DmId, UserId};

pub mod event;
#[cfg(feature = "ssr")]
pub mod presence;
#[cfg(feature = "ssr")]
pub mod server;

pub use event::{Event, PresenceEvent, ReactionEvent, ReadEvent, ResyncEvent, TypingEvent};

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Client state of the event stream, provided by [`provide_live`].
#[derive(Clone, Copy)]
pub struct Live {
    /// Changes when the handshake states shown may be stale: the stream
    /// was down and came back.
    pub dms: RwSignal<u64>,
    /// The DMs as the `dm` events since the page loaded told them (each a
    /// row of my conversation list), by DM id: newer than what the page
    /// fetched, so the sidebar and the chat page show them without a
    /// request.
    pub dm_rows: RwSignal<HashMap<DmId, DmSummary>>,
    /// Changes when what the page shows must be fetched again: the stream
    /// (re)opened, or the server said `resync`.
    pub resyncs: RwSignal<u64>,
    /// The stream dropped and the browser is reconnecting.
    pub reconnecting: RwSignal<bool>,
    /// The signed-in user, if any.
    pub me: Signal<Option<UserId>>,
    /// Presence heard since the page loaded, by user (newer than lists).
    pub online: RwSignal<HashMap<UserId, bool>>,
    /// When each user's last stream closed, as the lists and `presence`
    /// events said (only for the other members of my ACTIVE DMs).
    pub last_seen: RwSignal<HashMap<UserId, time::OffsetDateTime>>,
    /// Each DM's state as the conversation list and the `dm` events said,
    /// by DM id: a `dm` event that changes it is announced.
    pub statuses: RwSignal<HashMap<DmId, DmStatus>>,
    /// What the page's one polite live region says now: a new message in
    /// the open conversation, or a handshake step of the other member.
    pub announcement: RwSignal<Option<String>>,
    /// Whether I muted each DM, by DM id, as the conversation list and the
    /// `dm` events said: a muted DM raises no notification.
    pub muted: RwSignal<HashMap<DmId, bool>>,
    listeners: StoredValue<Vec<(u64, Listener)>>,
    next_listener: StoredValue<u64>,
}

impl Live {
    /// Calls `listener` for each event until the calling component is
    /// cleaned up.
    pub fn on_event(&self, listener: impl Fn(&Event) + Send + Sync + 'static) {
        let id = self.next_listener.get_value();
        self.next_listener.set_value(id + 1);
        self.listeners
            .update_value(|all| all.push((id, Arc::new(listener))));
        let listeners = self.listeners;
        on_cleanup(move || {
            listeners.try_update_value(|all| all.retain(|(i, _)| *i != id));
        });
    }

    /// Whether `user` is online: the latest `presence` event, else what
    /// the conversation list said when it was fetched; false if neither.
    pub fn is_online(&self, user: UserId) -> bool {
        self.online
            .with(|online| online.get(&user).copied())
            .unwrap_or(false)
    }

    /// Says `text` once in the page's live region.
    pub fn announce(&self, text: String) {
        self.announcement.try_set(Some(text));
    }

    /// When `user`'s last stream closed, if known and visible to me.
    pub fn last_seen_at(&self, user: UserId) -> Option<time::OffsetDateTime> {
        self.last_seen.with(|seen| seen.get(&user).copied())
    }

    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn dispatch(&self, event: &Event) {
        let listeners: Vec<Listener> = self
            .listeners
            .with_value(|all| all.iter().map(|(_, l)| l.clone()).collect());
        for listener in listeners {
            listener(event);
        }
    }
}

/// Creates [`Live`], provides it, and (in the browser) keeps this tab on
/// the browser's event stream (`/api/events`) while someone is signed in.
pub fn provide_live(me: Signal<Option<UserId>>) -> Live {
    let live = Live {
        dms: RwSignal::new(0),
        resyncs: RwSignal::new(0),
        reconnecting: RwSignal::new(false),
        me,
        online: RwSignal::new(HashMap::new()),
        last_seen: RwSignal::new(HashMap::new()),
        muted: RwSignal::new(HashMap::new()),
        statuses: RwSignal::new(HashMap::new()),
        announcement: RwSignal::new(None),
        dm_rows: RwSignal::new(HashMap::new()),
        listeners: StoredValue::new(Vec::new()),
        next_listener: StoredValue::new(0),
    };
    provide_context(live);
    #[cfg(feature = "hydrate")]
    browser::connect(live);
    live
}

#[cfg(feature = "hydrate")]
mod browser {
    //! One stream per browser: the tab holding the Web Lock
    //! `knock-events:{user}` opens the `EventSource` and passes what it
    //! receives to the browser's other tabs over the `BroadcastChannel` of
    //! the same name ([`Relay`]); each tab handles the events in its own
    //! state. When that tab closes, the lock passes to another tab, which
    //! opens the stream where the last event left off (`Last-Event-ID`), so
    //! nothing is lost. Any number of tabs costs one of the browser's six
    //! HTTP/1.1 connections per host. A browser without Web Locks or
    //! `BroadcastChannel` gives every tab a stream of its own.

    use crate::ids::UserId;
    use futures::StreamExt;
    use gloo_net::eventsource::{State, futures::EventSource};
    use leptos::prelude::*;
    use serde::{Deserialize, Serialize};
    use wasm_bindgen::{JsCast, JsValue, closure::Closure};
    use web_sys::{AbortController, BroadcastChannel};

    use super::{Event, Live, PresenceEvent, ResyncEvent};

    /// A DOM event (what `EventSource` and `BroadcastChannel` hand their
    /// listeners).
    type DomEvent = web_sys::Event;

    /// What the tab holding the stream tells the others (JSON).
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(tag = "relay", rename_all = "snake_case")]
    enum Relay {
        /// An event from the stream, with its SSE `id`.
        Event { id: String, event: Box<Event> },
        /// The stream opened; `was_down`: after it had dropped.
        Open { was_down: bool },
        /// The stream dropped; it is reconnecting.
        Down,
    }

    /// The open `EventSource` (gloo-net's, which closes when dropped) and
    /// the task that handles its events, which stops when this is dropped.
    struct Stream {
        _source: EventSource,
        _stop: futures::channel::oneshot::Sender<()>,
    }

    /// A `BroadcastChannel` that closes when dropped.
    struct Channel {
        channel: BroadcastChannel,
        _on_message: Closure<dyn FnMut(DomEvent)>,
    }

    impl Drop for Channel {
        fn drop(&mut self) {
            self.channel.set_onmessage(None);
            self.channel.close();
        }
    }

    fn bump(signal: RwSignal<u64>) {
        signal.update(|v| *v = v.wrapping_add(1));
    }

    fn handle(live: Live, me: Option<UserId>, event: Event) {
        match &event {
            Event::Dm(row) => {
                live.muted.update(|muted| {
                    muted.insert(row.dm.id, row.dm.muted);
                });
                let before = live
                    .statuses
                    .try_update(|statuses| statuses.insert(row.dm.id, row.dm.status))
                    .flatten();
                if before != Some(row.dm.status)
                    && let Some(text) = me.and_then(|me| crate::dms::handshake_news(row, me))
                {
                    live.announce(text);
                }
                // A DM that just became ACTIVE brings the other's presence.
                if row.dm.status == crate::dms::DmStatus::Active {
                    live.online.update(|all| {
                        all.insert(row.other_user.id, row.online);
                    });
                    if let Some(at) = row.last_seen_at {
                        live.last_seen.update(|all| {
                            all.insert(row.other_user.id, at);
                        });
                    }
                }
                live.dm_rows.update(|rows| {
                    rows.insert(row.dm.id, row.clone());
                });
            }
            Event::Message(message) => {
                let muted = live
                    .muted
                    .with_untracked(|muted| muted.get(&message.dm_id).copied().unwrap_or(false));
                if !muted {
                    crate::components::notify::message_arrived(message, me);
                }
            }
            Event::Read(_) => {}
            Event::Typing(_) | Event::Reaction(_) => {}
            Event::Presence(PresenceEvent {
                user_id,
                online,
                last_seen_at,
            }) => {
                live.online.update(|all| {
                    all.insert(*user_id, *online);
                });
                if let Some(at) = last_seen_at {
                    live.last_seen.update(|all| {
                        all.insert(*user_id, *at);
                    });
                }
            }
            Event::Resync(_) => return resync(live, true),
        }
        live.dispatch(&event);
    }

    /// Refetches what the page shows. `handshakes` too when the stream was
    /// down (the chat page re-renders for them); on the first open, the
    /// messages and lists are enough.
    fn resync(live: Live, handshakes: bool) {
        if handshakes {
            bump(live.dms);
        }
        bump(live.resyncs);
        live.dispatch(&Event::Resync(ResyncEvent {}));
    }

    /// This tab's side of the browser's stream.
    #[derive(Clone, Copy)]
    struct Slot {
        live: Live,
        /// The `EventSource`, while this tab holds the stream.
        stream: StoredValue<Option<Stream>, LocalStorage>,
        /// The id of the last event seen (here or relayed).
        last_id: StoredValue<Option<String>, LocalStorage>,
        was_down: StoredValue<bool, LocalStorage>,
        /// Whether this tab holds the stream.
        leader: StoredValue<bool, LocalStorage>,
        channel: StoredValue<Option<Channel>, LocalStorage>,
        /// Resolves the promise that keeps the lock held.
        release: StoredValue<Option<js_sys::Function>, LocalStorage>,
        /// Withdraws a lock request still waiting.
        abort: StoredValue<Option<AbortController>, LocalStorage>,
        /// Counts starts, so that a lock granted for an earlier session
        /// is let go at once.
        generation: StoredValue<u64, LocalStorage>,
    }

    /// How long the stream may be down before the page says
    /// **Reconnecting…**: the server ends each stream when its session
    /// token expires, and the browser reconnects within about 3 s.
    const QUIET_RECONNECT_MS: u64 = 5_000;

    /// Resolves after `ms` milliseconds.
    async fn sleep(ms: u64) {
        let (done, wait) = futures::channel::oneshot::channel::<()>();
        set_timeout(
            move || {
                let _ = done.send(());
            },
            std::time::Duration::from_millis(ms),
        );
        let _ = wait.await;
    }

    fn relay(slot: Slot, message: &Relay) {
        let Ok(text) = serde_json::to_string(message) else {
            return;
        };
        slot.channel.with_value(|channel| {
            if let Some(channel) = channel {
                let _ = channel.channel.post_message(&JsValue::from_str(&text));
            }
        });
    }

    /// The stream dropped (here, or in the tab that holds it): say
    /// **Reconnecting…** if it stays down.
    fn went_down(slot: Slot) {
        let Slot { live, was_down, .. } = slot;
        was_down.set_value(true);
        set_timeout(
            move || {
                if was_down.try_get_value() == Some(true) {
                    live.reconnecting.set(true);
                }
            },
            std::time::Duration::from_millis(QUIET_RECONNECT_MS),
        );
    }

    /// The stream opened (here, or in the tab that holds it).
    fn came_up(slot: Slot, was_down: bool) {
        slot.live.reconnecting.set(false);
        // Whatever happened while away (or since the page was made).
        resync(slot.live, was_down);
        slot.was_down.set_value(false);
    }

    /// After the browser gave up on the stream (it does for any answer but
    /// 200, a 401 included): renews the session if that is what failed,
    /// then opens the stream again, resuming from the last event seen. A
    /// session that has ended stays closed (the page says so).
    fn recover(slot: Slot, me: UserId) {
        leptos::task::spawn_local(async move {
            use crate::auth::client::{Refresh, refresh};
            match crate::auth::session().await {
                Ok(info) if info.user.is_some() => {}
                Ok(_) => match refresh().await {
                    Refresh::Token(_) => {}
                    Refresh::SignedOut => return,
                    Refresh::Unavailable => sleep(QUIET_RECONNECT_MS).await,
                },
                Err(_) => sleep(QUIET_RECONNECT_MS / 2).await,
            }
            if slot.live.me.get_untracked() == Some(me) && slot.leader.get_value() {
                slot.stream.set_value(open(slot, me));
            }
        });
    }

    /// Opens `/api/events`, resuming after the last event seen when there
    /// is one (a new `EventSource` cannot send `Last-Event-ID`, so it goes
    /// in the query), and relays what it receives to the other tabs.
    fn open(slot: Slot, me: UserId) -> Option<Stream> {
        let Slot { live, last_id, .. } = slot;
        let url = match last_id.get_value() {
            Some(id) => format!(
                "/api/events?last_event_id={}",
                js_sys::encode_uri_component(&id)
            ),
            None => "/api/events".to_owned(),
        };
        let mut source = EventSource::new(&url).ok()?;
        // One subscription per event kind, and `open` and `error` (whose
        // DOM events gloo-net hands over as they are). Each DOM event wakes
        // the task below before the browser dispatches the next one, so
        // events are handled in the order they arrived.
        let mut subscriptions = Vec::new();
        for kind in Event::KINDS.into_iter().chain(["open", "error"]) {
            subscriptions.push(source.subscribe(kind).ok()?);
        }
        let mut events = futures::stream::select_all(subscriptions);
        let (stop, mut stopped) = futures::channel::oneshot::channel::<()>();
        let state = source.clone();
        leptos::task::spawn_local(async move {
            loop {
                let next = match futures::future::select(&mut stopped, events.next()).await {
                    futures::future::Either::Right((Some(next), _)) => next,
                    _ => return,
                };
                // A closed source also ends each subscription with an
                // error; its `error` event says what needs saying.
                let Ok((kind, message)) = next else { continue };
                match kind.as_str() {
                    "open" => {
                        let was_down = slot.was_down.get_value();
                        relay(slot, &Relay::Open { was_down });
                        came_up(slot, was_down);
                    }
                    "error" => {
                        relay(slot, &Relay::Down);
                        went_down(slot);
                        // The browser gave up (it does for any answer but
                        // 200); while it is reconnecting, it stays open.
                        if state.state() == State::Closed {
                            recover(slot, me);
                        }
                    }
                    kind => {
                        let id = message.last_event_id();
                        if !id.is_empty() {
                            last_id.set_value(Some(id.clone()));
                        }
                        let data = message.data().as_string().unwrap_or_default();
                        match Event::decode(kind, &data) {
                            Ok(event) => {
                                relay(
                                    slot,
                                    &Relay::Event {
                                        id,
                                        event: Box::new(event.clone()),
                                    },
                                );
                                handle(live, Some(me), event);
                            }
                            Err(error) => {
                                leptos::logging::warn!(
                                    "an event Knock cannot read: {kind}: {error}"
                                )
                            }
                        }
                    }
                }
            }
        });
        Some(Stream {
            _source: source,
            _stop: stop,
        })
    }

    /// Another tab's relay.
    fn on_relay(slot: Slot, me: UserId, text: &str) {
        match serde_json::from_str::<Relay>(text) {
            Ok(Relay::Event { id, event }) => {
                if !id.is_empty() {
                    slot.last_id.set_value(Some(id));
                }
                handle(slot.live, Some(me), *event);
            }
            Ok(Relay::Open { was_down }) => came_up(slot, was_down),
            Ok(Relay::Down) => went_down(slot),
            Err(error) => leptos::logging::warn!("a relay Knock cannot read: {error}"),
        }
    }

    /// `navigator.locks.request(name, options, callback)` (Web Locks), or
    /// `None` where the browser has no Web Locks.
    fn request_lock(
        name: &str,
        if_available: bool,
        abort: Option<&AbortController>,
        callback: &JsValue,
    ) -> Option<js_sys::Promise> {
        let navigator = js_sys::Reflect::get(&window(), &"navigator".into()).ok()?;
        let locks = js_sys::Reflect::get(&navigator, &"locks".into()).ok()?;
        if locks.is_undefined() || locks.is_null() {
            return None;
        }
        let request = js_sys::Reflect::get(&locks, &"request".into())
            .ok()?
            .dyn_into::<js_sys::Function>()
            .ok()?;
        let options = js_sys::Object::new();
        if if_available {
            js_sys::Reflect::set(&options, &"ifAvailable".into(), &JsValue::TRUE).ok()?;
        }
        if let Some(abort) = abort {
            js_sys::Reflect::set(&options, &"signal".into(), &abort.signal()).ok()?;
        }
        let promise = request
            .call3(&locks, &name.into(), &options, callback)
            .ok()?
            .dyn_into::<js_sys::Promise>()
            .ok()?;
        // A withdrawn request rejects; that is expected.
        let ignore = Closure::<dyn FnMut(JsValue)>::new(|_| {});
        let _ = promise.catch(&ignore);
        ignore.forget();
        Some(promise)
    }

    /// Asks for the stream's lock: at once (`if_available`: a tab that
    /// does not get it follows), or waiting for the tab that holds it to go.
    fn claim(slot: Slot, me: UserId, name: String, if_available: bool) -> bool {
        let generation = slot.generation.get_value();
        let callback = {
            let name = name.clone();
            Closure::once_into_js(move |lock: JsValue| -> JsValue {
                let current = slot.generation.try_get_value() == Some(generation)
                    && slot.live.me.try_get_untracked() == Some(Some(me));
                if !current {
                    return JsValue::UNDEFINED;
                }
                if lock.is_null() {
                    // Another tab holds the stream: follow it, catch up on
                    // what happened since this page was made, and wait
                    // for the lock.
                    resync(slot.live, false);
                    claim(slot, me, name, false);
                    return JsValue::UNDEFINED;
                }
                slot.leader.set_value(true);
                slot.stream.set_value(open(slot, me));
                js_sys::Promise::new(&mut |resolve, _| {
                    slot.release.set_value(Some(resolve));
                })
                .into()
            })
        };
        // A waiting request can be withdrawn; one that only asks whether
        // the lock is free answers at once (and may not carry a signal).
        let abort = if if_available {
            None
        } else {
            AbortController::new().ok()
        };
        let requested = request_lock(&name, if_available, abort.as_ref(), &callback).is_some();
        slot.abort.set_value(abort);
        requested
    }

    /// Joins (or, alone, opens) the browser's stream for `me`.
    fn start(slot: Slot, me: UserId) {
        slot.generation.update_value(|g| *g += 1);
        let name = format!("knock-events:{me}");
        let Ok(channel) = BroadcastChannel::new(&name) else {
            slot.leader.set_value(true);
            slot.stream.set_value(open(slot, me));
            return;
        };
        let on_message = Closure::<dyn FnMut(DomEvent)>::new(move |event: DomEvent| {
            if let Some(text) = event
                .dyn_ref::<web_sys::MessageEvent>()
                .and_then(|event| event.data().as_string())
            {
                on_relay(slot, me, &text);
            }
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        slot.channel.set_value(Some(Channel {
            channel,
            _on_message: on_message,
        }));
        if !claim(slot, me, name, true) {
            // No Web Locks: a stream of this tab's own.
            slot.channel.set_value(None);
            slot.leader.set_value(true);
            slot.stream.set_value(open(slot, me));
        }
    }

    /// Leaves the browser's stream: closes it if this tab holds it (the
    /// lock passes to another tab), withdraws a waiting request.
    fn stop(slot: Slot) {
        slot.stream.set_value(None);
        slot.leader.set_value(false);
        if let Some(resolve) = slot.release.try_update_value(Option::take).flatten() {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
        if let Some(abort) = slot.abort.try_update_value(Option::take).flatten() {
            abort.abort();
        }
        slot.channel.set_value(None);
    }

    pub fn connect(live: Live) {
        let slot = Slot {
            live,
            stream: StoredValue::new_local(None),
            last_id: StoredValue::new_local(None),
            was_down: StoredValue::new_local(false),
            leader: StoredValue::new_local(false),
            channel: StoredValue::new_local(None),
            release: StoredValue::new_local(None),
            abort: StoredValue::new_local(None),
            generation: StoredValue::new_local(0),
        };
        // Talks to the outside world: joins or leaves the stream as the
        // session changes. After a server restart, a dropped connection or
        // the end of a stream whose session token expired, the browser
        // reconnects by itself, sending `Last-Event-ID` (and the fresh
        // `__session` cookie ClerkJS keeps), and the server replays what was
        // missed; when it gives up, `recover` takes over.
        Effect::new(move |_| {
            stop(slot);
            if let Some(me) = live.me.get() {
                start(slot, me);
            }
        });
        // When the device goes offline the old connection may linger
        // unnoticed: close it at once, and open a new one on coming back.
        let offline = window_event_listener(leptos::ev::offline, move |_| {
            if slot.leader.get_value() {
                slot.stream.set_value(None);
            }
            slot.was_down.set_value(true);
            live.reconnecting.set(true);
        });
        let online = window_event_listener(leptos::ev::online, move |_| {
            if let Some(me) = live.me.get_untracked()
                && slot.leader.get_value()
            {
                slot.stream.set_value(open(slot, me));
            }
        });
        on_cleanup(move || {
            offline.remove();
            online.remove();
        });
    }
}

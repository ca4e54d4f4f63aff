//! Real time: what flows on the event stream ([`event`], both sides), the
//! server's event log, SSE stream and presence ([`server`], [`presence`]),
//! and the browser's side ([`Live`]): one `EventSource` per signed-in tab
//! whose events bump the signals that lists refetch on and reach the open
//! conversation through [`Live::on_event`].

use std::{collections::HashMap, sync::Arc};

use leptos::prelude::*;
use uuid::Uuid;

use crate::error::AppError;

pub mod event;
#[cfg(feature = "ssr")]
pub mod presence;
#[cfg(feature = "ssr")]
pub mod server;

pub use event::{DmEvent, Event, MessageEvent, PresenceEvent, ReadEvent, ResyncEvent, TypingEvent};

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Client state of the event stream, provided by [`provide_live`].
#[derive(Clone, Copy)]
pub struct Live {
    /// Changes on every `dm` event (a handshake step on either side).
    pub dms: RwSignal<u64>,
    /// Changes on every `message` or `read` event.
    pub messages: RwSignal<u64>,
    /// The stream dropped and the browser is reconnecting.
    pub reconnecting: RwSignal<bool>,
    /// The signed-in user, if any.
    pub me: Signal<Option<Uuid>>,
    /// Presence heard since the page loaded, by user (newer than lists).
    pub online: RwSignal<HashMap<Uuid, bool>>,
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
    pub fn is_online(&self, user: Uuid) -> bool {
        self.online
            .with(|online| online.get(&user).copied())
            .unwrap_or(false)
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

/// Creates [`Live`], provides it, and (in the browser) keeps an
/// `EventSource` on `/api/events` open while someone is signed in.
pub fn provide_live(me: Signal<Option<Uuid>>) -> Live {
    let live = Live {
        dms: RwSignal::new(0),
        messages: RwSignal::new(0),
        reconnecting: RwSignal::new(false),
        me,
        online: RwSignal::new(HashMap::new()),
        listeners: StoredValue::new(Vec::new()),
        next_listener: StoredValue::new(0),
    };
    provide_context(live);
    #[cfg(feature = "hydrate")]
    browser::connect(live);
    live
}

/// `POST /api/typing` `{dm_id}`: I am typing in DM `dm_id`. The other
/// member gets a `typing` event (at most one per 2 s); nothing when
/// throttled.
///
/// # Errors
/// 404 not my DM; 409 the DM is not ACTIVE.
#[server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "typing", input = server_fn::codec::Json)]
pub async fn typing(dm_id: Uuid) -> Result<(), AppError> {
    let me = crate::auth::server::current_user().await?;
    let state = crate::server::state::AppState::current()?;
    server::typing(&state, me.id, dm_id)
        .await
        .map_err(crate::error::respond)
}

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::prelude::*;
    use wasm_bindgen::{JsCast, closure::Closure};
    use web_sys::{EventSource, MessageEvent as SseMessage};

    use super::{Event, Live, PresenceEvent, ResyncEvent};

    /// A DOM event (what `EventSource` hands its listeners).
    type DomEvent = web_sys::Event;

    /// An `EventSource` that closes when dropped.
    struct Stream {
        source: EventSource,
        _handlers: Vec<Closure<dyn FnMut(DomEvent)>>,
    }

    impl Drop for Stream {
        fn drop(&mut self) {
            self.source.close();
        }
    }

    fn bump(signal: RwSignal<u64>) {
        signal.update(|v| *v = v.wrapping_add(1));
    }

    fn handle(live: Live, me: Option<uuid::Uuid>, event: Event) {
        match &event {
            Event::Dm(_) => bump(live.dms),
            Event::Message(message) => {
                bump(live.messages);
                crate::components::notify::message_arrived(message, me);
            }
            Event::Read(_) => bump(live.messages),
            Event::Typing(_) => {}
            Event::Presence(PresenceEvent { user_id, online }) => {
                live.online.update(|all| {
                    all.insert(*user_id, *online);
                });
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
        bump(live.messages);
        live.dispatch(&Event::Resync(ResyncEvent {}));
    }

    /// Opens `/api/events`, resuming after `last_id` when there is one (a
    /// new `EventSource` cannot send `Last-Event-ID`, so it goes in the
    /// query).
    /// The stream's state between its `EventSource`s.
    #[derive(Clone, Copy)]
    struct Slot {
        live: Live,
        stream: StoredValue<Option<Stream>, LocalStorage>,
        last_id: StoredValue<Option<String>, LocalStorage>,
        was_down: StoredValue<bool, LocalStorage>,
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

    /// After the browser gave up on the stream (it does for any answer but
    /// 200, a 401 included): renews the session if that is what failed,
    /// then opens the stream again, resuming from the last event seen. A
    /// session that has ended stays closed (the page says so).
    fn recover(slot: Slot, me: uuid::Uuid) {
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
            if slot.live.me.get_untracked() == Some(me) {
                slot.stream.set_value(open(slot, me));
            }
        });
    }

    fn open(slot: Slot, me: uuid::Uuid) -> Option<Stream> {
        let Slot {
            live,
            last_id,
            was_down,
            ..
        } = slot;
        let url = match last_id.get_value() {
            Some(id) => format!(
                "/api/events?last_event_id={}",
                js_sys::encode_uri_component(&id)
            ),
            None => "/api/events".to_owned(),
        };
        let source = EventSource::new(&url).ok()?;
        let mut handlers = Vec::new();
        for kind in Event::KINDS {
            let handler = Closure::<dyn FnMut(DomEvent)>::new(move |event: DomEvent| {
                let Some(event) = event.dyn_ref::<SseMessage>() else {
                    return;
                };
                let id = event.last_event_id();
                if !id.is_empty() {
                    last_id.set_value(Some(id));
                }
                let data = event.data().as_string().unwrap_or_default();
                match Event::decode(kind, &data) {
                    Ok(event) => handle(live, Some(me), event),
                    Err(error) => {
                        leptos::logging::warn!("an event Knock cannot read: {kind}: {error}")
                    }
                }
            });
            let _ = source.add_event_listener_with_callback(kind, handler.as_ref().unchecked_ref());
            handlers.push(handler);
        }
        let opened = Closure::<dyn FnMut(DomEvent)>::new(move |_| {
            live.reconnecting.set(false);
            // Whatever happened while away (or since the page was made).
            resync(live, was_down.get_value());
            was_down.set_value(false);
        });
        source.set_onopen(Some(opened.as_ref().unchecked_ref()));
        handlers.push(opened);
        let error = Closure::<dyn FnMut(DomEvent)>::new(move |event: DomEvent| {
            was_down.set_value(true);
            set_timeout(
                move || {
                    if was_down.try_get_value() == Some(true) {
                        live.reconnecting.set(true);
                    }
                },
                std::time::Duration::from_millis(QUIET_RECONNECT_MS),
            );
            let closed = event
                .target()
                .and_then(|target| target.dyn_into::<EventSource>().ok())
                .is_some_and(|source| source.ready_state() == EventSource::CLOSED);
            if closed {
                recover(slot, me);
            }
        });
        source.set_onerror(Some(error.as_ref().unchecked_ref()));
        handlers.push(error);
        Some(Stream {
            source,
            _handlers: handlers,
        })
    }

    pub fn connect(live: Live) {
        let stream = StoredValue::new_local(None::<Stream>);
        let last_id = StoredValue::new_local(None::<String>);
        let was_down = StoredValue::new_local(false);
        let slot = Slot {
            live,
            stream,
            last_id,
            was_down,
        };
        // Talks to the outside world: opens or closes the stream as the
        // session changes. After a server restart, a dropped connection or
        // the end of a stream whose session token expired, the browser
        // reconnects by itself, sending `Last-Event-ID` (and the fresh
        // `__session` cookie ClerkJS keeps), and the server replays what was
        // missed; when it gives up, `recover` takes over.
        Effect::new(move |_| {
            stream.set_value(None);
            if let Some(me) = live.me.get() {
                stream.set_value(open(slot, me));
            }
        });
        // When the device goes offline the old connection may linger
        // unnoticed: close it at once, and open a new one on coming back.
        let offline = window_event_listener(leptos::ev::offline, move |_| {
            stream.set_value(None);
            was_down.set_value(true);
            live.reconnecting.set(true);
        });
        let online = window_event_listener(leptos::ev::online, move |_| {
            if let Some(me) = live.me.get_untracked() {
                stream.set_value(open(slot, me));
            }
        });
        on_cleanup(move || {
            offline.remove();
            online.remove();
        });
    }
}

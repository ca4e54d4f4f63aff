//! Real time: the server's event log and SSE stream ([`server`]), and the
//! browser's side ([`Live`]): one `EventSource` per signed-in tab whose
//! events bump a signal that the lists and the chat page refetch on.

use leptos::prelude::*;

#[cfg(feature = "ssr")]
pub mod server;

/// Client state of the event stream, provided by [`provide_live`].
#[derive(Clone, Copy)]
pub struct Live {
    /// Changes on every `dm` event (a handshake step on either side).
    pub dms: RwSignal<u64>,
    /// Changes on every `message` or `read` event.
    pub messages: RwSignal<u64>,
    /// The stream dropped and the browser is reconnecting.
    pub reconnecting: RwSignal<bool>,
}

/// Creates [`Live`], provides it, and (in the browser) keeps an
/// `EventSource` on `/api/events` open while someone is signed in.
pub fn provide_live(signed_in: Signal<bool>) -> Live {
    let live = Live {
        dms: RwSignal::new(0),
        messages: RwSignal::new(0),
        reconnecting: RwSignal::new(false),
    };
    provide_context(live);
    #[cfg(feature = "hydrate")]
    browser::connect(live, signed_in);
    #[cfg(not(feature = "hydrate"))]
    let _ = signed_in;
    live
}

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::prelude::*;
    use wasm_bindgen::{JsCast, closure::Closure};
    use web_sys::{Event, EventSource};

    use super::Live;

    /// An `EventSource` that closes when dropped.
    struct Stream {
        source: EventSource,
        _handlers: Vec<Closure<dyn FnMut(Event)>>,
    }

    impl Drop for Stream {
        fn drop(&mut self) {
            self.source.close();
        }
    }

    pub fn connect(live: Live, signed_in: Signal<bool>) {
        // Talks to the outside world: opens or closes the stream as the
        // session changes. The browser reconnects by itself (sending
        // `Last-Event-ID`), and the server replays what was missed.
        let stream = StoredValue::new_local(None::<Stream>);
        Effect::new(move |_| {
            stream.set_value(None);
            if !signed_in.get() {
                return;
            }
            let Ok(source) = EventSource::new("/api/events") else {
                return;
            };
            let mut handlers = Vec::new();
            for kind in ["message", "dm", "read"] {
                let signal = if kind == "dm" {
                    live.dms
                } else {
                    live.messages
                };
                let handler = Closure::<dyn FnMut(Event)>::new(move |_| {
                    signal.update(|v| *v = v.wrapping_add(1));
                });
                let _ =
                    source.add_event_listener_with_callback(kind, handler.as_ref().unchecked_ref());
                handlers.push(handler);
            }
            let open = Closure::<dyn FnMut(Event)>::new(move |_| {
                live.reconnecting.set(false);
                // Whatever happened while away: refetch.
                live.dms.update(|v| *v = v.wrapping_add(1));
                live.messages.update(|v| *v = v.wrapping_add(1));
            });
            source.set_onopen(Some(open.as_ref().unchecked_ref()));
            handlers.push(open);
            let error = Closure::<dyn FnMut(Event)>::new(move |_| live.reconnecting.set(true));
            source.set_onerror(Some(error.as_ref().unchecked_ref()));
            handlers.push(error);
            stream.set_value(Some(Stream {
                source,
                _handlers: handlers,
            }));
        });
    }
}

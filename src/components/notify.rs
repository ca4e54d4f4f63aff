//! Desktop notifications for messages that arrive while the tab is hidden
//! (the [Notification API](https://notifications.spec.whatwg.org/)).
//!
//! Knock never asks on its own: [`NotificationsButton`] offers
//! **Turn on notifications** while the browser's permission is still
//! `default`, and a notification is shown only when it is `granted`, the
//! tab is hidden, and the message is from someone else.

use leptos::prelude::*;

/// A button asking for permission to notify, shown (after hydration) only
/// while the browser has not been asked yet.
#[component]
pub fn NotificationsButton() -> impl IntoView {
    let askable = RwSignal::new(false);
    // Effects run only in the browser: read the permission there.
    Effect::new(move |_| askable.set(browser::permission_default()));
    move || {
        askable.get().then(|| {
            view! {
                <button
                    type="button"
                    class="notifications-button"
                    on:click=move |_| {
                        browser::ask(askable);
                    }
                >
                    "Turn on notifications"
                </button>
            }
        })
    }
}

#[cfg(feature = "hydrate")]
pub use browser::message_arrived;

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::prelude::*;
    use wasm_bindgen::{JsCast, closure::Closure};
    use web_sys::{Notification, NotificationOptions, NotificationPermission, VisibilityState};

    use crate::{ids::UserId, messages::Message};

    pub fn permission_default() -> bool {
        js_sys::Reflect::has(&window(), &"Notification".into()).unwrap_or(false)
            && Notification::permission() == NotificationPermission::Default
    }

    pub fn ask(askable: RwSignal<bool>) {
        if let Ok(promise) = Notification::request_permission() {
            let done = Closure::<dyn FnMut(wasm_bindgen::JsValue)>::new(move |_| {
                askable.set(permission_default());
            });
            let _ = promise.then(&done);
            done.forget();
        }
    }

    /// Shows a notification for `message`, just received, when it is new
    /// (not an edit or a deletion), someone else's, the tab is hidden and
    /// permission was granted.
    pub fn message_arrived(message: &Message, me: Option<UserId>) {
        let hidden = document().visibility_state() == VisibilityState::Hidden;
        let allowed = js_sys::Reflect::has(&window(), &"Notification".into()).unwrap_or(false)
            && Notification::permission() == NotificationPermission::Granted;
        if !hidden || !allowed {
            return;
        }
        if Some(message.sender_id) == me || message.deleted || message.edited_at.is_some() {
            return;
        }
        let options = NotificationOptions::new();
        options.set_body(&message.body);
        options.set_tag(&message.dm_id.to_string());
        if let Ok(notification) = Notification::new_with_options("New message on Knock", &options) {
            let click = Closure::<dyn FnMut()>::new(move || {
                let _ = window().focus();
            });
            notification.set_onclick(Some(click.as_ref().unchecked_ref()));
            click.forget();
        }
    }
}

#[cfg(not(feature = "hydrate"))]
mod browser {
    use leptos::prelude::*;

    pub fn permission_default() -> bool {
        false
    }

    pub fn ask(_: RwSignal<bool>) {}
}

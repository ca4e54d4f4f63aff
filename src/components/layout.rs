//! The page frame: a top bar, the sidebar and the main pane.

use leptos::prelude::*;

use crate::{
    auth::components::{SignedOutNotice, UserMenu},
    dms::components::Sidebar,
    realtime::Live,
};

/// The sidebar / main-pane layout every page sits in.
///
/// The **Menu** button shows and hides the sidebar. On a wide screen the
/// sidebar is open by default. At phone width (≤ 700 px, where it covers
/// the pane) it is open on the home page, where it is the list of
/// conversations, and closed on the other pages; opening a page closes it
/// again. The button is disabled in the server-rendered HTML and enabled
/// once the WASM bundle has hydrated the page, so it never looks clickable
/// while it cannot work.
#[component]
pub fn Layout(children: Children) -> impl IntoView {
    // Whether the user flipped the sidebar away from its default.
    let toggled = RwSignal::new(false);
    let hydrated = RwSignal::new(false);
    let phone = RwSignal::new(false);
    let live = expect_context::<Live>();
    let location = leptos_router::hooks::use_location();
    let home = move || location.pathname.with(|p| p == "/");
    let sidebar_open = move || {
        if phone.get() {
            home() != toggled.get()
        } else {
            !toggled.get()
        }
    };
    // Effects run only in the browser, after hydration.
    Effect::new(move |_| {
        hydrated.set(true);
        phone.set(phone_width());
    });
    // A new page starts with the sidebar in its default place.
    Effect::new(move |_| {
        location.pathname.track();
        toggled.set(false);
    });

    view! {
        <div class="layout" class:home=home class:toggled=move || toggled.get()>
            <header class="topbar">
                <button
                    type="button"
                    class="menu-button"
                    aria-controls="sidebar"
                    aria-expanded=move || sidebar_open().to_string()
                    disabled=move || !hydrated.get()
                    on:click=move |_| toggled.update(|t| *t = !*t)
                >
                    "Menu"
                </button>
                <a class="brand" href="/">
                    "Knock"
                </a>
                {move || {
                    live.reconnecting
                        .get()
                        .then(|| {
                            view! {
                                <span class="reconnecting" role="status">
                                    "Reconnecting…"
                                </span>
                            }
                        })
                }}
                <SignedOutNotice />
                <UserMenu />
            </header>
            <aside id="sidebar" class="sidebar" aria-label="Conversations">
                <Sidebar />
            </aside>
            <main class="main-pane">{children()}</main>
        </div>
    }
}

/// Whether the window is at phone width (the CSS breakpoint, 700 px).
#[cfg(feature = "hydrate")]
fn phone_width() -> bool {
    window()
        .match_media("(max-width: 700px)")
        .ok()
        .flatten()
        .is_some_and(|m| m.matches())
}

#[cfg(not(feature = "hydrate"))]
fn phone_width() -> bool {
    false
}

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
    let main_ref = NodeRef::<leptos::html::Main>::new();
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
    // A new page starts with the sidebar in its default place, and with
    // the keyboard focus on the main pane when it was in the sidebar (which
    // may now be hidden) or nowhere.
    Effect::new(move |previous: Option<String>| {
        let path = location.pathname.get();
        toggled.set(false);
        if previous.is_some_and(|p| p != path) {
            focus_main_from_sidebar(main_ref);
        }
        path
    });

    view! {
        <div class="layout" class:home=home class:toggled=move || toggled.get()>
            // First in the tab order, shown when focused.
            <a
                class="skip-link"
                href="#conversation"
                on:click=move |ev| {
                    // The router would treat the fragment as a navigation;
                    // moving the focus is what the link is for.
                    if let Some(main) = main_ref.get_untracked() {
                        ev.prevent_default();
                        let _ = main.focus();
                    }
                }
            >
                "Skip to conversation"
            </a>
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
            // The one polite live region: new messages and handshake steps
            // are said here once, not each time a list re-renders.
            <p class="visually-hidden" role="status" aria-label="Announcements">
                {move || live.announcement.get()}
            </p>
            <main class="main-pane" id="conversation" tabindex="-1" node_ref=main_ref>
                {children()}
            </main>
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

/// Moves the focus to the main pane if it is in the sidebar or nowhere.
#[cfg(feature = "hydrate")]
fn focus_main_from_sidebar(main: NodeRef<leptos::html::Main>) {
    let in_sidebar_or_nowhere = document().active_element().is_none_or(|el| {
        el.tag_name() == "BODY" || el.closest("#sidebar").ok().flatten().is_some()
    });
    if in_sidebar_or_nowhere && let Some(main) = main.get_untracked() {
        let _ = main.focus();
    }
}

#[cfg(not(feature = "hydrate"))]
fn focus_main_from_sidebar(_: NodeRef<leptos::html::Main>) {}

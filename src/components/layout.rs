//! The page frame: a top bar, the sidebar and the main pane.

use leptos::prelude::*;

use crate::{auth::components::UserMenu, dms::components::Sidebar, realtime::Live};

/// The sidebar / main-pane layout every page sits in.
///
/// The **Menu** button shows and hides the sidebar (on a phone the sidebar
/// covers the pane). It is disabled in the server-rendered HTML and enabled
/// once the WASM bundle has hydrated the page, so it never looks clickable
/// while it cannot work.
#[component]
pub fn Layout(children: Children) -> impl IntoView {
    let sidebar_open = RwSignal::new(true);
    let hydrated = RwSignal::new(false);
    let live = expect_context::<Live>();
    // Effects run only in the browser, after hydration.
    Effect::new(move |_| hydrated.set(true));

    view! {
        <div class="layout" class:sidebar-closed=move || !sidebar_open.get()>
            <header class="topbar">
                <button
                    type="button"
                    class="menu-button"
                    aria-controls="sidebar"
                    aria-expanded=move || sidebar_open.get().to_string()
                    disabled=move || !hydrated.get()
                    on:click=move |_| sidebar_open.update(|open| *open = !*open)
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
                <UserMenu />
            </header>
            <aside
                id="sidebar"
                class="sidebar"
                aria-label="Conversations"
                hidden=move || !sidebar_open.get()
            >
                <Sidebar />
            </aside>
            <main class="main-pane">{children()}</main>
        </div>
    }
}

//! The HTML shell, the root component and the routes.

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::{
    ParamSegment, SsrMode, StaticSegment,
    components::{Route, Router, Routes},
};

use crate::{
    auth::components::{SignInPage, provide_session},
    components::layout::Layout,
    dms::components::{BlockedPage, ChatPage, provide_handshake},
    realtime::provide_live,
};

/// The document around the app: rendered on the server only, with the
/// hydration scripts that load the WASM bundle.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <SessionScript />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// `public/session.js`, the session glue every page loads (see
/// [`crate::auth::client`]). In Clerk mode its tag carries the publishable
/// key and the ClerkJS URL, so that ClerkJS runs on every page and keeps the
/// `__session` cookie fresh.
#[component]
fn SessionScript() -> impl IntoView {
    #[cfg(feature = "ssr")]
    let key = use_context::<crate::server::state::AppState>()
        .and_then(|state| state.clerk_publishable_key.clone());
    #[cfg(not(feature = "ssr"))]
    let key: Option<String> = None;
    #[cfg(feature = "ssr")]
    let clerk_js_url = key.as_deref().and_then(crate::auth::server::clerk_js_url);
    #[cfg(not(feature = "ssr"))]
    let clerk_js_url: Option<String> = None;
    view! {
        <script
            src="/session.js"
            data-clerk-publishable-key=key
            data-clerk-js-url=clerk_js_url
        ></script>
    }
}

/// The root component: metadata, stylesheet and routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let session = provide_session();
    provide_handshake();
    let me = Signal::derive(move || match session.info.get() {
        Some(Ok(crate::auth::SessionInfo { user: Some(me), .. })) if !session.ended.get() => {
            Some(me.id)
        }
        _ => None,
    });
    provide_live(me);
    view! {
        <Stylesheet id="leptos" href="/pkg/knock.css" />
        <Title text="Knock" />
        <Router>
            <Layout>
                <Routes fallback=NotFound>
                    // In-order streaming: each page arrives complete, so it
                    // works before (and without) the WASM bundle.
                    <Route path=StaticSegment("") view=HomePage ssr=SsrMode::InOrder />
                    <Route path=StaticSegment("sign-in") view=SignInPage ssr=SsrMode::InOrder />
                    <Route path=StaticSegment("blocked") view=BlockedPage ssr=SsrMode::InOrder />
                    <Route
                        path=(StaticSegment("admin"), StaticSegment("jobs"))
                        view=crate::jobs::components::JobsPage
                        // Rendered whole before the head is sent, so that
                        // a non-operator's 404 status can still be set.
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=(StaticSegment("chat"), ParamSegment("user_id"))
                        view=ChatPage
                        ssr=SsrMode::InOrder
                    />
                </Routes>
            </Layout>
        </Router>
    }
}

/// `/`: the welcome pane beside the sidebar.
#[component]
fn HomePage() -> impl IntoView {
    view! {
        <section class="welcome" aria-labelledby="welcome-title">
            <h1 id="welcome-title">"Every conversation starts with a knock"</h1>
            <p>
                "Pick someone from the sidebar and knock. "
                "Once they accept, the conversation opens for both of you."
            </p>
        </section>
    }
}

/// Any unknown path (and a page the user may not see): a 404 with a way
/// back.
#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <section class="welcome">
            <h1>"Page not found"</h1>
            <p>
                <a href="/">"Back to Knock"</a>
            </p>
        </section>
    }
}

//! Sign-in page and the signed-in user's corner of the top bar.

use leptos::prelude::*;

use super::{DevSignIn, SessionInfo, SignOut, session};
use crate::error::AppError;

/// The session as the UI holds it: a resource refetched after each sign-in
/// and sign-out, plus the two actions. Provided by [`provide_session`].
#[derive(Clone, Copy)]
pub struct Session {
    /// The current [`SessionInfo`].
    pub info: Resource<Result<SessionInfo, AppError>>,
    /// The session this page was shown with has ended (Clerk said so, or
    /// **Sign out** in another tab): the page stays as it is, with a way to
    /// sign in again, and nothing more is sent for it.
    pub ended: RwSignal<bool>,
    /// Dev sign-in.
    pub sign_in: ServerAction<DevSignIn>,
    /// Sign-out.
    pub sign_out: ServerAction<SignOut>,
}

/// Creates the [`Session`] and provides it as context. Call once, in `App`.
pub fn provide_session() -> Session {
    let sign_in = ServerAction::<DevSignIn>::new();
    let sign_out = ServerAction::<SignOut>::new();
    let info = Resource::new(
        move || (sign_in.version().get(), sign_out.version().get()),
        |_| session(),
    );
    let ended = RwSignal::new(false);
    let session = Session {
        info,
        ended,
        sign_in,
        sign_out,
    };
    provide_context(session);
    #[cfg(feature = "hydrate")]
    {
        use super::client;
        let signed_in = move || matches!(info.get(), Some(Ok(SessionInfo { user: Some(_), .. })));
        // Talks to the outside world: whether a 401 may renew the session.
        Effect::new(move |_| client::set_signed_in(signed_in() && !ended.get()));
        let listener = window_event_listener_untyped(client::SIGNED_OUT_EVENT, move |_| {
            if signed_in() {
                ended.set(true);
            }
        });
        on_cleanup(move || listener.remove());
        // **Sign out** here signs out every other tab of the browser too.
        Effect::new(move |_| {
            if matches!(sign_out.value().get(), Some(Ok(()))) {
                client::announce_sign_out();
            }
        });
    }
    session
}

/// Shown when the session ended while the page was open: the page keeps
/// what it shows (a draft included) and offers to sign in again.
#[component]
pub fn SignedOutNotice() -> impl IntoView {
    let Session { ended, .. } = expect_context::<Session>();
    move || {
        ended.get().then(|| {
            view! {
                <p class="signed-out" role="alert">
                    "You are signed out. "
                    <a href="/sign-in">"Sign in again"</a>
                </p>
            }
        })
    }
}

/// The top bar's right side: the username and **Sign out**, or **Sign in**
/// (also once the session has ended while the page was open).
#[component]
pub fn UserMenu() -> impl IntoView {
    let Session {
        info,
        sign_out,
        ended,
        ..
    } = expect_context::<Session>();
    let sign_in_link = || view! { <a class="sign-in-link" href="/sign-in">"Sign in"</a> };
    view! {
        <Show when=move || !ended.get() fallback=sign_in_link>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match info.await {
                        Ok(SessionInfo { user: Some(user), .. }) => {
                            view! {
                                <div class="user-menu">
                                    <span class="me" aria-label="Signed in as">
                                        {user.username.clone()}
                                    </span>
                                    <ActionForm action=sign_out>
                                        <button type="submit">"Sign out"</button>
                                    </ActionForm>
                                </div>
                            }
                                .into_any()
                        }
                        _ => sign_in_link().into_any(),
                    }
                })}
            </Transition>
        </Show>
    }
}

/// `/sign-in`. Dev mode: a **Username** field and a **Continue** button
/// (works without WASM: the form posts to the server function). Clerk mode:
/// Clerk's sign-in, mounted by ClerkJS.
#[component]
pub fn SignInPage() -> impl IntoView {
    let Session { info, sign_in, .. } = expect_context::<Session>();
    let error = move || {
        sign_in
            .value()
            .get()
            .and_then(Result::err)
            .map(|e| view! { <p class="form-error" role="alert">{e.to_string()}</p> })
    };
    view! {
        <section class="sign-in" aria-labelledby="sign-in-title">
            <h1 id="sign-in-title">"Sign in to Knock"</h1>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match info.await {
                        Ok(SessionInfo { clerk_publishable_key: Some(_), .. }) => {
                            view! { <ClerkSignIn /> }.into_any()
                        }
                        _ => {
                            view! {
                                <ActionForm action=sign_in attr:class="dev-sign-in">
                                    <label for="username">"Username"</label>
                                    <input
                                        id="username"
                                        name="username"
                                        type="text"
                                        required
                                        maxlength="48"
                                        autocomplete="username"
                                    />
                                    <button type="submit">"Continue"</button>
                                </ActionForm>
                                <p class="muted">
                                    "Development sign-in: no password; pick any username."
                                </p>
                            }
                                .into_any()
                        }
                    }
                })}
            </Transition>
            {error}
        </section>
    }
}

/// Clerk's sign-in, mounted by ClerkJS (which `public/session.js` loads
/// on every page in Clerk mode): it finishes a Knock sign-out at Clerk too,
/// sends a person Clerk has signed in home, and else mounts Clerk's
/// sign-in, which returns to `/` when done.
#[component]
fn ClerkSignIn() -> impl IntoView {
    let mount = NodeRef::<leptos::html::Div>::new();
    // The page may also arrive by client-side navigation (after **Sign
    // out**), when the glue's own look for the element has passed.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        if let Some(el) = mount.get() {
            crate::auth::client::mount_sign_in(&el);
        }
    });
    view! { <div id="clerk-sign-in" node_ref=mount></div> }
}

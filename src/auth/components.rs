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
    let session = Session {
        info,
        sign_in,
        sign_out,
    };
    provide_context(session);
    session
}

/// The top bar's right side: the username and **Sign out**, or **Sign in**.
#[component]
pub fn UserMenu() -> impl IntoView {
    let Session { info, sign_out, .. } = expect_context::<Session>();
    view! {
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
                    _ => view! { <a class="sign-in-link" href="/sign-in">"Sign in"</a> }.into_any(),
                }
            })}
        </Transition>
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
                        Ok(
                            SessionInfo {
                                clerk_publishable_key: Some(key),
                                clerk_js_url: Some(url),
                                ..
                            },
                        ) => view! { <ClerkSignIn publishable_key=key clerk_js_url=url /> }.into_any(),
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

/// Once ClerkJS has loaded: finish a Knock sign-out at Clerk too (or Clerk
/// would issue a new session token), send a signed-in person home, else
/// mount Clerk's sign-in, which returns to `/` when done.
const CLERK_SIGN_IN_SCRIPT: &str = "window.Clerk.load().then(function () {\
  var el = document.getElementById('clerk-sign-in');\
  var mount = function () { window.Clerk.mountSignIn(el, { fallbackRedirectUrl: '/' }); };\
  if (window.Clerk.session && /signed_out/.test(location.search)) { window.Clerk.signOut().then(mount); }\
  else if (window.Clerk.session) { location.href = '/'; }\
  else { mount(); }\
})";

/// Clerk's sign-in component, mounted by ClerkJS from `clerk_js_url`.
#[component]
fn ClerkSignIn(publishable_key: String, clerk_js_url: String) -> impl IntoView {
    view! {
        <div id="clerk-sign-in"></div>
        <script
            async
            crossorigin="anonymous"
            data-clerk-publishable-key=publishable_key
            src=clerk_js_url
            onload=CLERK_SIGN_IN_SCRIPT
        ></script>
    }
}

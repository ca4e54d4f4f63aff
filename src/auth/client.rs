//! The browser's side of a session: server-function calls that outlive a
//! session token, and the moment the person is signed out.
//!
//! Clerk's session tokens live 60 s (Clerk docs, "Session tokens"). In Clerk
//! mode `public/session.js` loads ClerkJS on every page and calls
//! `Clerk.load()`, so ClerkJS renews the `__session` cookie in the
//! background for as long as the tab is open. When a call still meets 401
//! (a tab whose timers the browser throttled, a laptop that slept),
//! [`SessionClient`] asks for a fresh token (`Clerk.session.getToken()`)
//! and sends the same request once more with it. Only when Clerk says the
//! session has ended (in dev mode: on any 401) is the tab marked signed out:
//! `public/session.js` dispatches [`SIGNED_OUT_EVENT`] in this tab and, over
//! a `BroadcastChannel`, in every other tab of the browser.

/// The window event `public/session.js` dispatches when this browser's
/// session has ended (here or in another tab).
pub const SIGNED_OUT_EVENT: &str = "knock:signed-out";

/// The client every Knock server function sends with
/// (`#[server(client = SessionClient)]`): in the browser, the `fetch`
/// client with one renewal on 401 (see the module docs); on the server,
/// where it never sends, Leptos's browser client.
#[cfg(not(feature = "hydrate"))]
pub type SessionClient = leptos::server_fn::client::browser::BrowserClient;

#[cfg(feature = "hydrate")]
pub use browser::{SessionClient, announce_sign_out, mount_sign_in, refresh, set_signed_in};

/// What asking for a fresh session token gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// A fresh session token (an RS256 JWT); ClerkJS has also put it in the
    /// `__session` cookie.
    Token(String),
    /// The session has ended: Clerk said so, or (dev mode) there is no
    /// Clerk to renew it.
    SignedOut,
    /// Clerk could not be asked (offline, ClerkJS not loaded): try later.
    Unavailable,
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::Cell;

    use http::Method;
    use leptos::server_fn::{
        Bytes,
        client::{Client, browser::BrowserClient},
        error::FromServerFnError,
        request::{
            ClientReq,
            browser::{BrowserFormData, BrowserRequest},
        },
        response::{ClientRes, browser::BrowserResponse},
    };
    use send_wrapper::SendWrapper;
    use wasm_bindgen::{JsCast, JsValue};

    use super::Refresh;

    thread_local! {
        /// Whether this tab shows a signed-in person.
        static SIGNED_IN: Cell<bool> = const { Cell::new(false) };
    }

    /// Records whether this tab shows a signed-in person. A 401 is renewed
    /// (or ends the session) only then: a signed-out page's 401s mean
    /// nothing new.
    pub fn set_signed_in(signed_in: bool) {
        SIGNED_IN.with(|cell| cell.set(signed_in));
    }

    /// `window.knockSession`, the object `public/session.js` defines.
    fn glue() -> Option<JsValue> {
        let glue = js_sys::Reflect::get(&leptos::prelude::window(), &"knockSession".into()).ok()?;
        (!glue.is_undefined() && !glue.is_null()).then_some(glue)
    }

    fn call(glue: &JsValue, method: &str, args: &[&JsValue]) -> Option<JsValue> {
        let function = js_sys::Reflect::get(glue, &method.into())
            .ok()?
            .dyn_into::<js_sys::Function>()
            .ok()?;
        match args {
            [] => function.call0(glue).ok(),
            [arg] => function.call1(glue, arg).ok(),
            _ => None,
        }
    }

    /// Clerk mode: mounts Clerk's sign-in in `el` (`knockSession.mountSignIn`;
    /// once per element).
    pub fn mount_sign_in(el: &web_sys::HtmlDivElement) {
        if let Some(glue) = glue() {
            call(&glue, "mountSignIn", &[el.as_ref()]);
        }
    }

    /// Asks ClerkJS (through `knockSession.refresh()`) for a fresh session
    /// token. When it answers [`Refresh::SignedOut`], every tab of the
    /// browser has been told.
    pub async fn refresh() -> Refresh {
        let Some(promise) = glue()
            .and_then(|glue| call(&glue, "refresh", &[]))
            .and_then(|value| value.dyn_into::<js_sys::Promise>().ok())
        else {
            return Refresh::Unavailable;
        };
        let Ok(answer) = wasm_bindgen_futures::JsFuture::from(promise).await else {
            return Refresh::Unavailable;
        };
        let field = |name: &str| js_sys::Reflect::get(&answer, &name.into()).ok();
        if let Some(token) = field("token").and_then(|t| t.as_string()) {
            Refresh::Token(token)
        } else if field("signedOut").is_some_and(|s| s.is_truthy()) {
            Refresh::SignedOut
        } else {
            Refresh::Unavailable
        }
    }

    /// Tells the other tabs of this browser that the person signed out here
    /// (Knock's **Sign out**), so that they show it too.
    pub fn announce_sign_out() {
        set_signed_in(false);
        if let Some(glue) = glue() {
            call(&glue, "announceSignOut", &[]);
        }
    }

    /// How to build a request again for the retry (a `fetch` request's body
    /// can be read only once). Streaming bodies cannot be rebuilt.
    enum Replay {
        Query {
            path: String,
            content_type: String,
            accepts: String,
            query: String,
            method: Method,
        },
        Text {
            path: String,
            content_type: String,
            accepts: String,
            body: String,
            method: Method,
        },
        Bytes {
            path: String,
            content_type: String,
            accepts: String,
            body: Bytes,
            method: Method,
        },
        Form {
            path: String,
            accepts: String,
            content_type: String,
            body: SendWrapper<web_sys::FormData>,
            method: Method,
        },
        Multipart {
            path: String,
            accepts: String,
            body: SendWrapper<web_sys::FormData>,
            method: Method,
        },
    }

    impl Replay {
        fn build<E: FromServerFnError>(&self) -> Result<BrowserRequest, E> {
            match self {
                Replay::Query {
                    path,
                    content_type,
                    accepts,
                    query,
                    method,
                } => <BrowserRequest as ClientReq<E>>::try_new_req_query(
                    path,
                    content_type,
                    accepts,
                    query,
                    method.clone(),
                ),
                Replay::Text {
                    path,
                    content_type,
                    accepts,
                    body,
                    method,
                } => <BrowserRequest as ClientReq<E>>::try_new_req_text(
                    path,
                    content_type,
                    accepts,
                    body.clone(),
                    method.clone(),
                ),
                Replay::Bytes {
                    path,
                    content_type,
                    accepts,
                    body,
                    method,
                } => <BrowserRequest as ClientReq<E>>::try_new_req_bytes(
                    path,
                    content_type,
                    accepts,
                    body.clone(),
                    method.clone(),
                ),
                Replay::Form {
                    path,
                    accepts,
                    content_type,
                    body,
                    method,
                } => <BrowserRequest as ClientReq<E>>::try_new_req_form_data(
                    path,
                    accepts,
                    content_type,
                    BrowserFormData::from((**body).clone()),
                    method.clone(),
                ),
                Replay::Multipart {
                    path,
                    accepts,
                    body,
                    method,
                } => <BrowserRequest as ClientReq<E>>::try_new_req_multipart(
                    path,
                    accepts,
                    BrowserFormData::from((**body).clone()),
                    method.clone(),
                ),
            }
        }
    }

    /// A server-function request with what it takes to send it again.
    pub struct SessionRequest {
        request: BrowserRequest,
        replay: Option<Replay>,
    }

    impl SessionRequest {
        fn new<E: FromServerFnError>(replay: Replay) -> Result<Self, E> {
            Ok(Self {
                request: replay.build::<E>()?,
                replay: Some(replay),
            })
        }
    }

    impl<E: FromServerFnError> ClientReq<E> for SessionRequest {
        type FormData = BrowserFormData;

        fn try_new_req_query(
            path: &str,
            content_type: &str,
            accepts: &str,
            query: &str,
            method: Method,
        ) -> Result<Self, E> {
            Self::new::<E>(Replay::Query {
                path: path.into(),
                content_type: content_type.into(),
                accepts: accepts.into(),
                query: query.into(),
                method,
            })
        }

        fn try_new_req_text(
            path: &str,
            content_type: &str,
            accepts: &str,
            body: String,
            method: Method,
        ) -> Result<Self, E> {
            Self::new::<E>(Replay::Text {
                path: path.into(),
                content_type: content_type.into(),
                accepts: accepts.into(),
                body,
                method,
            })
        }

        fn try_new_req_bytes(
            path: &str,
            content_type: &str,
            accepts: &str,
            body: Bytes,
            method: Method,
        ) -> Result<Self, E> {
            Self::new::<E>(Replay::Bytes {
                path: path.into(),
                content_type: content_type.into(),
                accepts: accepts.into(),
                body,
                method,
            })
        }

        fn try_new_req_form_data(
            path: &str,
            accepts: &str,
            content_type: &str,
            body: Self::FormData,
            method: Method,
        ) -> Result<Self, E> {
            Self::new::<E>(Replay::Form {
                path: path.into(),
                accepts: accepts.into(),
                content_type: content_type.into(),
                body: SendWrapper::new(body.take()),
                method,
            })
        }

        fn try_new_req_multipart(
            path: &str,
            accepts: &str,
            body: Self::FormData,
            method: Method,
        ) -> Result<Self, E> {
            Self::new::<E>(Replay::Multipart {
                path: path.into(),
                accepts: accepts.into(),
                body: SendWrapper::new(body.take()),
                method,
            })
        }

        fn try_new_req_streaming(
            path: &str,
            accepts: &str,
            content_type: &str,
            body: impl futures::Stream<Item = Bytes> + Send + 'static,
            method: Method,
        ) -> Result<Self, E> {
            Ok(Self {
                request: <BrowserRequest as ClientReq<E>>::try_new_req_streaming(
                    path,
                    accepts,
                    content_type,
                    body,
                    method,
                )?,
                replay: None,
            })
        }
    }

    /// Leptos's `fetch` client, with one renewal of the session on 401.
    pub struct SessionClient;

    impl<E, IS, OS> Client<E, IS, OS> for SessionClient
    where
        E: FromServerFnError,
        IS: FromServerFnError,
        OS: FromServerFnError,
    {
        type Request = SessionRequest;
        type Response = BrowserResponse;

        fn send(request: Self::Request) -> impl Future<Output = Result<Self::Response, E>> + Send {
            SendWrapper::new(async move {
                let SessionRequest { request, replay } = request;
                let response = <BrowserClient as Client<E, IS, OS>>::send(request).await?;
                let signed_in = SIGNED_IN.with(Cell::get);
                if <BrowserResponse as ClientRes<E>>::status(&response) != 401 || !signed_in {
                    return Ok(response);
                }
                let Some(replay) = replay else {
                    return Ok(response);
                };
                match refresh().await {
                    Refresh::Token(token) => {
                        let again = replay.build::<E>()?;
                        again
                            .headers()
                            .set("authorization", &format!("Bearer {token}"));
                        <BrowserClient as Client<E, IS, OS>>::send(again).await
                    }
                    Refresh::SignedOut | Refresh::Unavailable => Ok(response),
                }
            })
        }

        fn open_websocket(
            path: &str,
        ) -> impl Future<
            Output = Result<
                (
                    impl futures::Stream<Item = Result<Bytes, Bytes>> + Send + 'static,
                    impl futures::Sink<Bytes> + Send + 'static,
                ),
                E,
            >,
        > + Send {
            <BrowserClient as Client<E, IS, OS>>::open_websocket(path)
        }

        fn spawn(future: impl Future<Output = ()> + Send + 'static) {
            <BrowserClient as Client<E, IS, OS>>::spawn(future);
        }
    }
}

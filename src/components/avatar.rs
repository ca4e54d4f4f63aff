//! Avatars: the user's Clerk image, or an identicon made from their id,
//! with a presence dot when presence may be shown.

use leptos::prelude::*;

use crate::{realtime::Live, users::User};

/// Where `user`'s picture is: Clerk's `image_url`, else the identicon at
/// `/api/avatars/{id}` (a PNG derived from the id alone).
pub fn avatar_url(user: &User) -> String {
    user.image_url
        .clone()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| format!("/api/avatars/{}", user.id))
}

/// A round picture of `user`; with `presence`, a dot that is filled while
/// they are online ([`Live::is_online`]), also said in words for screen
/// readers.
#[component]
pub fn Avatar(
    /// Whose.
    user: User,
    /// Whether their presence may be shown (we share an ACTIVE DM).
    #[prop(optional)]
    presence: bool,
) -> impl IntoView {
    // Reads only app-wide signals, so the dot stays valid while a
    // `Transition` still shows this avatar after its data changed.
    let live = expect_context::<Live>();
    let id = user.id;
    let online = move || live.is_online(id);
    view! {
        <span class="avatar">
            <img src=avatar_url(&user) alt="" width="32" height="32" loading="lazy" />
            {presence
                .then(|| {
                    view! {
                        <span class="presence" class:online=online></span>
                        <span class="visually-hidden">
                            {move || if online() { "online" } else { "offline" }}
                        </span>
                    }
                })}
        </span>
    }
}

//! Avatars: the user's Clerk image, or an identicon made from their id,
//! with a presence dot when presence may be shown.

use leptos::prelude::*;

use crate::users::User;

/// Where `user`'s picture is: Clerk's `image_url`, else the identicon at
/// `/api/avatars/{id}` (a PNG derived from the id alone).
pub fn avatar_url(user: &User) -> String {
    user.image_url
        .clone()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| format!("/api/avatars/{}", user.id))
}

/// A round picture of `user`; with `online`, a dot that is filled while
/// they are online, also said in words for screen readers.
#[component]
pub fn Avatar(
    /// Whose.
    user: User,
    /// Their presence, when it may be shown (an ACTIVE DM).
    #[prop(optional_no_strip)]
    online: Option<Signal<bool>>,
) -> impl IntoView {
    view! {
        <span class="avatar">
            <img src=avatar_url(&user) alt="" width="32" height="32" loading="lazy" />
            {online
                .map(|online| {
                    view! {
                        <span class="presence" class:online=move || online.get()></span>
                        <span class="visually-hidden">
                            {move || if online.get() { "online" } else { "offline" }}
                        </span>
                    }
                })}
        </span>
    }
}

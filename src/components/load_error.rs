//! What a page shows when something it needs could not be loaded.

use leptos::prelude::*;

/// An alert (`role="alert"`) saying what could not be loaded and why, with
/// **Try again**, which loads the page afresh (a plain GET form, so it
/// works with and without WASM).
#[component]
pub fn LoadError(
    /// What failed, e.g. "Your conversations could not be loaded."
    what: &'static str,
    /// The error, as the server or the network reported it.
    error: crate::error::AppError,
) -> impl IntoView {
    view! {
        <div class="load-error" role="alert">
            <p>{what} " " {error.to_string()}</p>
            <form method="get" action="">
                <button type="submit">"Try again"</button>
            </form>
        </div>
    }
}

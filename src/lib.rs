//! Knock: one-to-one chat in which every conversation starts with a knock.
//!
//! The crate builds twice: with `ssr` as the server (see `main.rs` and
//! [`server`]), and with `hydrate` as the WASM bundle that makes the
//! server-rendered pages interactive ([`hydrate`]).

// Leptos views are nested types; the WASM build of the larger pages needs
// more than the default 128 levels to lay them out.
#![recursion_limit = "256"]

pub mod app;
pub mod attachments;
pub mod auth;
pub mod components;
pub mod dms;
pub mod error;
pub mod ids;
pub mod jobs;
#[cfg(feature = "load")]
pub mod load;
#[cfg(feature = "ssr")]
pub mod mail;
pub mod messages;
pub mod realtime;
#[cfg(feature = "ssr")]
pub mod server;
pub mod users;
#[cfg(feature = "ssr")]
pub mod webhooks;

/// The WASM entry point: hydrates the server-rendered `<body>`.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}

//! Session verification and the signed-in user, one module per concern.
//! Imports run one way: [`tokens`] (Clerk session tokens, JWKS) needs none
//! of the others; [`request`] (the request's user) needs `tokens`; [`dev`]
//! (dev-mode keys and cookie), [`operator`] and [`clerk`] (Clerk's Frontend and Backend
//! APIs) need both; [`origin`] (request guards) needs none.

pub mod clerk;
pub mod dev;
pub mod operator;
pub mod origin;
pub mod request;
pub mod tokens;

pub use clerk::{CLIENT_UAT_COOKIE, ClerkApi, clerk_js_url, frontend_api, refresh_expired_session};
pub use dev::{DEV_TOKEN_SECS, set_session_cookie};
pub use operator::is_operator;
pub use origin::{refuse_cross_origin, refuse_foreign_host};
pub use request::{
    CurrentUser, RequestUser, SESSION_COOKIE, current_user, request_user, session_expiry,
    session_token, user_for_claims,
};
pub use tokens::{
    JWKS_REFETCH, KeyError, LEEWAY_SECS, SessionClaims, SessionKeys, TokenError, VERIFIED_TOKENS,
};

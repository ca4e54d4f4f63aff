//! UI shared by several parts of Knock.

pub mod avatar;
pub mod last_seen;
pub mod layout;
pub mod load_error;
pub mod notify;

//! UI shared by several parts of Knock: the page layout, avatars, last
//! seen, the alert for a failed load, and desktop notifications.

pub mod avatar;
pub mod last_seen;
pub mod layout;
pub mod load_error;
pub mod notify;

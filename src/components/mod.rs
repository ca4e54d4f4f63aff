//! UI shared by several parts of Knock: the page layout, avatars, last
//! seen, the alert for a failed load, message text with its links, and
//! desktop notifications.

pub mod avatar;
pub mod last_seen;
pub mod layout;
pub mod load_error;
pub mod message_text;
pub mod notify;

//! UI shared by several parts of Knock.

pub mod layout;

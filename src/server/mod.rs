//! The server side: settings, database, state, routes, start-up and the
//! background tasks.
//! Compiled only with the `ssr` feature.

pub mod config;
pub mod database;
pub mod embedded_postgres;
pub mod health;
pub mod metrics;
pub mod serve;
pub mod startup;
pub mod state;
pub mod tasks;
pub mod telemetry;

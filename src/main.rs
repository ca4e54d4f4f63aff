//! The Knock server: settings → telemetry → database → router → serve, with
//! graceful shutdown on SIGINT and SIGTERM.
//!
//! Operator commands (same settings, same database):
//! - `knock jobs failed`: list runs of background jobs whose last attempt
//!   failed (retrying or failed);
//! - `knock jobs retry [ID]`: make those runs (or one) due now; a running
//!   server runs them within seconds;
//! - `knock webhooks failed` / `knock webhooks retry [SVIX_ID]`: the same
//!   for Clerk webhook deliveries, by `svix-id`.

use std::process::ExitCode;

use knock::{
    server::{
        config::Settings,
        database::Database,
        startup::{Application, shutdown_signal},
        telemetry,
    },
    webhooks::worker,
};

/// The server's allocator: mimalloc, not the system's (glibc) malloc, which
/// spent much of a chat page's render. Built without transparent huge pages
/// (the crate's `no_thp` feature), which made every idle event stream hold
/// more memory (the measurements are in `git log`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "usage: knock [jobs failed | jobs retry [ID] | webhooks failed | webhooks retry [SVIX_ID]]";

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Any start-up failure is one line on stderr and a non-zero exit.
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("knock: {error}");
            return ExitCode::FAILURE;
        }
    };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => serve(settings).await,
        ["webhooks", "failed"] => webhooks(settings, None, false).await,
        ["webhooks", "retry"] => webhooks(settings, None, true).await,
        ["webhooks", "retry", svix_id] => webhooks(settings, Some(svix_id), true).await,
        ["jobs", "failed"] => jobs(settings, None, false).await,
        ["jobs", "retry"] => jobs(settings, None, true).await,
        ["jobs", "retry", id] => match id.parse() {
            Ok(id) => jobs(settings, Some(id), true).await,
            Err(_) => {
                eprintln!("{USAGE}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `knock webhooks failed` / `knock webhooks retry [SVIX_ID]`.
async fn webhooks(settings: Settings, svix_id: Option<&str>, retry: bool) -> ExitCode {
    let database = match Database::connect(&settings.knock).await {
        Ok(database) => database,
        Err(error) => {
            eprintln!("knock: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = if retry {
        worker::retry_now(&database.pool, svix_id)
            .await
            .map(|n| println!("{n} event(s) due for another attempt"))
    } else {
        worker::failed(&database.pool).await.map(|events| {
            for e in &events {
                println!(
                    "{}\t{}\tattempts={}\treceived={}\t{}",
                    e.svix_id,
                    e.event_type,
                    e.attempts,
                    e.received_at,
                    e.last_error.as_deref().unwrap_or("")
                );
            }
            println!("{} failed event(s)", events.len());
        })
    };
    database.close_for_command().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("knock: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `knock jobs failed` / `knock jobs retry [ID]`.
async fn jobs(settings: Settings, id: Option<i64>, retry: bool) -> ExitCode {
    use knock::jobs::{JobStatus, server::Filter};
    let database = match Database::connect(&settings.knock).await {
        Ok(database) => database,
        Err(error) => {
            eprintln!("knock: {error}");
            return ExitCode::FAILURE;
        }
    };
    let pool = &database.pool;
    let result = if retry {
        knock::jobs::server::retry(pool, id, &Filter::default())
            .await
            .map(|n| println!("{n} run(s) due for another attempt"))
    } else {
        let filter = Filter {
            statuses: vec![JobStatus::Failed, JobStatus::Retrying],
            ..Filter::default()
        };
        knock::jobs::server::list(pool, &filter, i64::MAX)
            .await
            .map(|runs| {
                for run in &runs {
                    println!(
                        "{}\t{}\t{}\t{}\tattempts={}/{}\t{}",
                        run.id,
                        run.kind.as_str(),
                        run.subject,
                        run.status.as_str(),
                        run.attempts,
                        run.max_attempts,
                        run.last_error.as_deref().unwrap_or("")
                    );
                }
                println!("{} failed run(s)", runs.len());
            })
    };
    database.close_for_command().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("knock: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            eprintln!("knock: {error}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("knock: {error}");
            ExitCode::FAILURE
        }
    }
}

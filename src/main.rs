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

/// Runs an operator command against the server's database: connects (the
/// same settings as the server), runs `command`, closes the pool.
async fn with_database<F, Fut>(settings: Settings, command: F) -> ExitCode
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
{
    let database = match Database::connect(&settings.knock).await {
        Ok(database) => database,
        Err(error) => {
            eprintln!("knock: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = command(database.pool.clone()).await;
    database.close_for_command().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("knock: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `knock webhooks failed` / `knock webhooks retry [SVIX_ID]`.
async fn webhooks(settings: Settings, svix_id: Option<&str>, retry: bool) -> ExitCode {
    with_database(settings, |pool| async move {
        if retry {
            let n = worker::retry_now(&pool, svix_id).await?;
            println!("{n} event(s) due for another attempt");
        } else {
            let events = worker::failed(&pool).await?;
            for e in &events {
                println!(
                    "{}\t{}\t{}\tattempts={}\treceived={}\t{}",
                    e.svix_id,
                    e.event_type,
                    e.status,
                    e.attempts,
                    e.received_at,
                    e.last_error.as_deref().unwrap_or("")
                );
            }
            println!("{} failed event(s)", events.len());
        }
        Ok(())
    })
    .await
}

/// `knock jobs failed` / `knock jobs retry [ID]`.
async fn jobs(settings: Settings, id: Option<i64>, retry: bool) -> ExitCode {
    use knock::jobs::{JobStatus, server::Filter};
    with_database(settings, |pool| async move {
        if retry {
            let n = knock::jobs::server::retry(&pool, id, &Filter::default()).await?;
            println!("{n} run(s) due for another attempt");
        } else {
            let filter = Filter {
                statuses: vec![JobStatus::Failed, JobStatus::Retrying],
                ..Filter::default()
            };
            let runs = knock::jobs::server::list(&pool, &filter, i64::MAX).await?;
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
        }
        Ok(())
    })
    .await
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

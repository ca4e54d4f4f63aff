//! The Knock server: settings → telemetry → database → router → serve, with
//! graceful shutdown on SIGINT and SIGTERM.

use std::process::ExitCode;

use knock::server::{
    config::Settings,
    startup::{Application, shutdown_signal},
    telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    // Any start-up failure is one line on stderr and a non-zero exit.
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("knock: {error}");
            return ExitCode::FAILURE;
        }
    };
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

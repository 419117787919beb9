//! The `parley` binary: read the configuration, start logging, serve.

use clap::Parser;
use parley::config::Config;
use parley::startup::Application;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    parley::telemetry::init(&config);
    let bind = config.bind.clone();
    let application = match Application::build(config).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!("{error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(%bind, port = application.port(), "parley is listening");
    match application.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("server stopped: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

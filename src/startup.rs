//! Building and running the server: [`Application::build`] connects the
//! database, starts the actors and binds the listener (port 0 picks a free
//! port, as the tests do); [`Application::run_until_stopped`] serves until
//! the server is stopped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use parley_actors::{Chat, ChatError};

use crate::auth::{
    password,
    token::{self, Tokens},
};
use crate::config::Config;
use crate::error::ApiError;
use crate::{middleware, routes};

/// What every handler can reach.
pub struct AppState {
    pub chat: Chat,
    pub tokens: Tokens,
    /// Where uploaded bytes are kept, one file per `file_id`.
    pub files_dir: PathBuf,
    pub max_upload_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Database(#[source] ChatError),
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let data_dir_error = |source| StartupError::DataDir {
            path: config.data_dir.clone(),
            source,
        };
        let files_dir = config.data_dir.join("files");
        std::fs::create_dir_all(&files_dir).map_err(data_dir_error)?;
        let secret = token::load_or_create_secret(config.jwt_secret.as_deref(), &config.data_dir)
            .map_err(data_dir_error)?;

        let chat = Chat::start(&config.effective_database_url(), config.chat_settings())
            .await
            .map_err(StartupError::Database)?;
        password::warm_up().await;

        let bind_error = |source| StartupError::Bind {
            bind: config.bind.clone(),
            source,
        };
        let listener = TcpListener::bind(&config.bind).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();

        let state = web::Data::new(AppState {
            chat,
            tokens: Tokens::new(&secret, config.token_ttl),
            files_dir,
            max_upload_bytes: config.max_upload_bytes,
        });
        let query_errors = web::QueryConfig::default()
            .error_handler(|err, _| ApiError(ChatError::invalid(format!("query: {err}"))).into());
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(query_errors.clone())
                .wrap(middleware::CatchPanic)
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        // Chat frames are small and latency matters more than packet count.
        .tcp_nodelay(true)
        .shutdown_timeout(10)
        .client_request_timeout(Duration::from_secs(30));
        if let Some(workers) = config.workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener).map_err(bind_error)?.run();
        Ok(Application { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

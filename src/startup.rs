//! Building and running the server: [`Application::build`] connects the
//! database, starts the actors and binds the listener (port 0 picks a free
//! port, as the tests do); [`Application::run_until_stopped`] serves until
//! SIGINT or SIGTERM, then shuts down gracefully: it stops accepting, closes
//! every WebSocket with 1001, lets in-flight requests finish (up to
//! [`SHUTDOWN_GRACE`]) and flushes the persistence actor, so every message
//! acknowledged before the signal is on disk when the process exits.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use parley_actors::limits::RateLimiter;
use parley_actors::{Chat, ChatError};

use crate::auth::password;
use crate::config::{Config, Switch};
use crate::error::ApiError;
use crate::middleware::HttpMetrics;
use crate::routes::docs::OpenApiDocument;
use crate::state::AppState;
use crate::token::{self, Tokens};
use crate::{middleware, openapi, routes};

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

/// How long in-flight requests get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct Application {
    port: u16,
    server: Server,
    chat: Chat,
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
        let hashing = web::Data::new(
            password::Hashing::start(config.hash_queue, config.hash_spare_cpu == Switch::On).await,
        );

        let bind_error = |source| StartupError::Bind {
            bind: config.bind.clone(),
            source,
        };
        let listener = TcpListener::bind(&config.bind).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();

        let state = web::Data::new(AppState {
            chat: chat.clone(),
            tokens: Tokens::new(&secret, config.token_ttl),
            files_dir,
            max_upload_bytes: config.max_upload_bytes,
            auth_limiter: config.auth_rate().map(RateLimiter::new),
        });
        let sweeper = state.clone();
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                if let Some(limiter) = &sweeper.auth_limiter {
                    limiter.forget_idle();
                }
            }
        });
        let http_metrics = HttpMetrics::register(&chat.metrics().registry);
        let chat_metrics = chat.metrics().clone();
        let openapi_document = web::Data::new(OpenApiDocument(openapi::json()));
        let query_errors = web::QueryConfig::default()
            .error_handler(|err, _| ApiError(ChatError::invalid(format!("query: {err}"))).into());
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(hashing.clone())
                .app_data(openapi_document.clone())
                .app_data(query_errors.clone())
                .wrap(middleware::CatchPanic)
                .wrap(middleware::Observe::new(
                    http_metrics.clone(),
                    chat_metrics.clone(),
                ))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        // Chat frames are small and latency matters more than packet count.
        .tcp_nodelay(true)
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        .disable_signals()
        .client_request_timeout(Duration::from_secs(30));
        if let Some(workers) = config.workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener).map_err(bind_error)?.run();
        Ok(Application { port, server, chat })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The chat core the server runs on, for code embedding it (and tests
    /// that drive its actors directly).
    pub fn chat(&self) -> Chat {
        self.chat.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application { server, chat, .. } = self;
        let handle = server.handle();
        let mut server = std::pin::pin!(server);
        tokio::select! {
            result = &mut server => return result,
            () = shutdown_signal() => {}
        }
        tracing::info!("shutting down: closing sockets and finishing requests");
        // The server's commands are carried out by its own future, so it
        // keeps being polled while they are sent.
        let stop = async {
            handle.pause().await;
            chat.close_all_sockets();
            handle.stop(true).await;
        };
        let (result, ()) = tokio::join!(server, stop);
        chat.flush_and_close().await;
        tracing::info!("all accepted writes are committed; bye");
        result
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        let mut terminate = match signal(SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = actix_web::rt::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = actix_web::rt::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = actix_web::rt::signal::ctrl_c().await;
}

//! `parley-relay`: the machine's ceiling for `parley-load`. It speaks as
//! much of Parley's protocol as the `pairs`, `fanout`, `broadcast`, `seed`
//! and `history` scenarios use, on Parley's own stack (actix-web 4 and
//! actix-web-actors WebSocket actors), but stores nothing, hashes nothing
//! and makes history pages up: each message is parsed, routed, encoded
//! once and written to every recipient socket, and that is all. What the
//! tool measures against it is what this machine and the tool can reach
//! at all, so a slow machine shows as such next to Parley's figures.
//!
//! It listens on loopback only and exits by itself after `--max-secs`.

mod rest;
mod session;
mod state;

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "parley-relay",
    about = "A bare relay speaking Parley's protocol, for measuring the load tool's ceiling (loopback only)"
)]
struct Cli {
    /// Where to listen; the address must be a loopback one.
    #[arg(long, default_value = "127.0.0.1:18190")]
    bind: SocketAddr,
    /// HTTP worker threads [default: the CPUs this process may run on, as Parley].
    #[arg(long)]
    workers: Option<usize>,
    /// Exit by itself after this many seconds (it is stopped earlier by
    /// whoever started it; this only bounds a forgotten one).
    #[arg(long, default_value_t = 4 * 3600)]
    max_secs: u64,
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    if !cli.bind.ip().is_loopback() {
        eprintln!(
            "parley-relay: {} is not a loopback address; the relay only serves this machine",
            cli.bind
        );
        std::process::exit(2);
    }
    actix_web::rt::System::new().block_on(serve(cli))
}

async fn serve(cli: Cli) -> std::io::Result<()> {
    let relay = web::Data::new(state::Relay::new());
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(relay.clone())
            .configure(rest::configure)
    })
    .tcp_nodelay(true)
    .shutdown_timeout(1)
    .client_request_timeout(Duration::from_secs(30));
    if let Some(workers) = cli.workers {
        server = server.workers(workers.max(1));
    }
    let server = server.bind(cli.bind)?.run();
    let handle = server.handle();
    let max = Duration::from_secs(cli.max_secs);
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(max).await;
        eprintln!("parley-relay: --max-secs reached; stopping");
        handle.stop(false).await;
    });
    eprintln!("parley-relay: listening on {}", cli.bind);
    server.await
}

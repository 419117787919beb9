//! `parley-load`: a client that drives a running Parley server through its
//! real protocol (REST for accounts, `/ws/chat` for messages). For now it has
//! one scenario, `smoke`: two fresh users, two sockets, messages back and
//! forth, each round trip timed.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Parser)]
#[command(
    name = "parley-load",
    about = "Load and smoke tests for a Parley server"
)]
struct Cli {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Register two users, open a socket for each, and bounce messages between them.
    Smoke {
        /// Round trips to make (each is one message there and one back).
        #[arg(long, default_value_t = 10)]
        round_trips: u32,
        /// Give up if a reply takes longer than this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let outcome = match cli.scenario {
        Scenario::Smoke {
            round_trips,
            timeout_secs,
        } => smoke(&cli.url, round_trips, Duration::from_secs(timeout_secs)).await,
    };
    if let Err(error) = outcome {
        eprintln!("parley-load: {error}");
        std::process::exit(1);
    }
}

async fn smoke(base: &str, round_trips: u32, timeout: Duration) -> Result<(), Failure> {
    let http = reqwest::Client::new();
    let suffix =
        std::process::id() % 100_000 * 1000 + Instant::now().elapsed().subsec_micros() % 1000;
    let alice = format!("smoke_a{suffix}");
    let bob = format!("smoke_b{suffix}");
    let alice_token = account(&http, base, &alice).await?;
    let bob_token = account(&http, base, &bob).await?;
    let mut alice_socket = connect(base, &alice_token).await?;
    let mut bob_socket = connect(base, &bob_token).await?;

    let mut round_trip_times = Vec::with_capacity(round_trips as usize);
    for n in 0..round_trips {
        let started = Instant::now();
        send(&mut alice_socket, &bob, &format!("ping {n}")).await?;
        expect_message(&mut bob_socket, &alice, timeout).await?;
        send(&mut bob_socket, &alice, &format!("pong {n}")).await?;
        expect_message(&mut alice_socket, &bob, timeout).await?;
        let elapsed = started.elapsed();
        println!("round trip {n}: {:.2} ms", elapsed.as_secs_f64() * 1000.0);
        round_trip_times.push(elapsed);
    }
    round_trip_times.sort();
    if let (Some(first), Some(last)) = (round_trip_times.first(), round_trip_times.last()) {
        let median = round_trip_times[round_trip_times.len() / 2];
        println!(
            "{round_trips} round trips between {alice} and {bob}: min {:.2} ms, median {:.2} ms, max {:.2} ms",
            first.as_secs_f64() * 1000.0,
            median.as_secs_f64() * 1000.0,
            last.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

/// Registers a user and logs in; returns the access token.
async fn account(http: &reqwest::Client, base: &str, username: &str) -> Result<String, Failure> {
    let password = "smoke-test-password";
    let registered = http
        .post(format!("{base}/auth/register"))
        .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": password}))
        .send()
        .await?;
    if !registered.status().is_success() {
        return Err(format!("register {username}: {}", registered.text().await?).into());
    }
    let login: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    login["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "login answered without an access_token".into())
}

async fn connect(base: &str, token: &str) -> Result<Socket, Failure> {
    let ws_base = base.replacen("http", "ws", 1);
    let mut request = format!("{ws_base}/ws/chat").into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

async fn send(socket: &mut Socket, recipient: &str, content: &str) -> Result<(), Failure> {
    let frame = json!({"type": "message", "recipient": recipient, "content": content});
    socket.send(Message::Text(frame.to_string())).await?;
    Ok(())
}

/// Waits for a `message` frame from `sender`, skipping acks, presence and pings.
async fn expect_message(
    socket: &mut Socket,
    sender: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(remaining, socket.next())
            .await
            .map_err(|_| format!("no message from {sender} within {timeout:?}"))?
            .ok_or("the server closed the socket")??;
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("message") if value["sender"] == sender => return Ok(()),
            Some("error") => return Err(format!("server error frame: {text}").into()),
            _ => continue,
        }
    }
}

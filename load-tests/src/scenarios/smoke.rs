//! `smoke`: two fresh users, two sockets, messages bounced between them,
//! each round trip timed. Quick proof that the server speaks the protocol.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::accounts::Accounts;
use crate::ctx::Ctx;
use crate::net::Ws;
use crate::report::Report;
use crate::stats::{self, percentiles, CpuWindow};
use crate::Failure;

pub async fn run(ctx: &Ctx, round_trips: u32, timeout: Duration) -> Result<Report, Failure> {
    let accounts = Accounts::load(ctx);
    let alice = format!("smoke_a{}", ctx.run_id);
    let bob = format!("smoke_b{}", ctx.run_id);
    let tokens = accounts.ensure(ctx, &[alice.clone(), bob.clone()]).await?;
    let (mut alice_socket, _) = accounts.connect(ctx, 0, &alice, &tokens[0]).await?;
    let (mut bob_socket, _) = accounts.connect(ctx, 1, &bob, &tokens[1]).await?;

    let cpu = CpuWindow::start(&ctx.server_pids);
    let mut times = stats::histogram();
    for n in 0..round_trips {
        let started = Instant::now();
        send(&mut alice_socket, &bob, &format!("ping {n}")).await?;
        expect_message(&mut bob_socket, &alice, timeout).await?;
        send(&mut bob_socket, &alice, &format!("pong {n}")).await?;
        expect_message(&mut alice_socket, &bob, timeout).await?;
        let elapsed = started.elapsed();
        if !ctx.json && !ctx.quiet {
            println!("round trip {n}: {:.2} ms", elapsed.as_secs_f64() * 1000.0);
        }
        times.saturating_record((elapsed.as_micros() as u64).max(1));
    }
    let _ = alice_socket.close(None).await;
    let _ = bob_socket.close(None).await;

    let mut report = Report::new("smoke");
    report
        .param("round_trips", round_trips)
        .figure("users", json!([alice, bob]))
        .figure("round_trips", times.len())
        .figure("round_trip_ms", percentiles(&times))
        .figures(cpu.finish());
    if times.len() != u64::from(round_trips) {
        report.fail("not every round trip completed");
    }
    Ok(report)
}

async fn send(socket: &mut Ws, recipient: &str, content: &str) -> Result<(), Failure> {
    let frame = json!({"type": "message", "recipient": recipient, "content": content});
    socket.send(Message::Text(frame.to_string().into())).await?;
    Ok(())
}

/// Waits for a `message` frame from `sender`, skipping acks, presence and pings.
async fn expect_message(socket: &mut Ws, sender: &str, timeout: Duration) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(remaining, socket.next())
            .await
            .map_err(|_| format!("no message from {sender} within {timeout:?}"))?
            .ok_or("the server closed the socket")??;
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(text.as_str())?;
        match value["type"].as_str() {
            Some("message") if value["sender"] == sender => return Ok(()),
            Some("error") => return Err(format!("server error frame: {}", text.as_str()).into()),
            _ => continue,
        }
    }
}

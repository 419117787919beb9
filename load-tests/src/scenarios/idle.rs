//! `idle`: opens and holds N authenticated sockets, reading each all the
//! time (pings are answered), and reports how fast they opened and, with
//! `--server-pid`, how much server memory each one costs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::accounts::Accounts;
use crate::ctx::Ctx;
use crate::net::{self, Ws};
use crate::report::Report;
use crate::stats::{process_rss_kib, CpuWindow};
use crate::traffic::open_all;
use crate::Failure;

/// Counts shared by the holder tasks.
#[derive(Default)]
struct Held {
    /// Sockets that ended before the run let them go.
    closed_early: AtomicU64,
    /// Frames received while holding (presence, pings, anything).
    frames: AtomicU64,
}

pub async fn run(ctx: &Ctx, conns: usize, hold: Duration) -> Result<Report, Failure> {
    let file_limit = net::raise_open_file_limit();
    if conns as u64 + 64 > file_limit {
        ctx.log(format!(
            "warning: {conns} sockets and an open-file limit of {file_limit}: some will fail"
        ));
    }
    let accounts = Accounts::load(ctx);
    let names = ctx.users(0..conns);
    let tokens = accounts.ensure(ctx, &names).await?;

    let pid = ctx.server_pid;
    // Let the server settle after the account work before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = pid.and_then(process_rss_kib);
    let mut samples = Vec::new();
    let step = (conns / 10).max(1);
    let held = Arc::new(Held::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut holders = Vec::with_capacity(conns);
    let mut opened_count = 0usize;

    let cpu = CpuWindow::start(pid);
    let opened = open_all(ctx, &accounts, &names, &tokens, 0, |_, ws| {
        holders.push(tokio::spawn(hold_socket(ws, held.clone(), stop_rx.clone())));
        opened_count += 1;
        if opened_count % step == 0 || opened_count == conns {
            if let Some(rss) = pid.and_then(process_rss_kib) {
                samples.push(json!({"sockets": opened_count, "rss_kib": rss}));
            }
        }
    })
    .await;
    let connect_cpu = cpu.finish();
    let rss_connected = pid.and_then(process_rss_kib);

    ctx.log(format!(
        "{} sockets open in {:.1} s; holding for {} s",
        opened.opened,
        opened.elapsed.as_secs_f64(),
        hold.as_secs()
    ));
    let hold_cpu = CpuWindow::start(pid);
    let bar = ctx.timer_bar(hold.as_secs(), "holding");
    let hold_started = Instant::now();
    while hold_started.elapsed() < hold {
        bar.set_position(hold_started.elapsed().as_secs());
        bar.set_message(format!(
            "{} open, {} closed early",
            opened.opened as u64 - held.closed_early.load(Relaxed),
            held.closed_early.load(Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(200).min(hold)).await;
    }
    bar.finish_and_clear();
    let hold_figures = hold_cpu.finish();
    let rss_held = pid.and_then(process_rss_kib);
    let closed_early = held.closed_early.load(Relaxed);

    let _ = stop.send(true);
    let closing = Instant::now();
    for holder in holders {
        let _ = holder.await;
    }
    let close_secs = closing.elapsed().as_secs_f64();

    let mut report = Report::new("idle");
    report
        .param("conns", conns)
        .param("hold_secs", hold.as_secs())
        .figure("open_file_limit", file_limit)
        .figures(opened.figures())
        .figure("closed_during_hold", closed_early)
        .figure("frames_received", held.frames.load(Relaxed))
        .figure("close_secs", (close_secs * 1000.0).round() / 1000.0);
    if let (Some(before), Some(after)) = (rss_before, rss_connected) {
        let per = (after as f64 - before as f64) * 1024.0 / opened.opened.max(1) as f64;
        report
            .figure("server_rss_before_kib", before)
            .figure("server_rss_connected_kib", after)
            .figure("server_rss_after_hold_kib", rss_held.unwrap_or_default())
            .figure("server_rss_per_conn_bytes", per.round())
            .figure("server_rss_samples", samples);
    }
    let rename = |figures: Vec<(&'static str, serde_json::Value)>, prefix: &str| {
        figures
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect::<Vec<_>>()
    };
    for (key, value) in rename(connect_cpu, "connect_") {
        report.figure(&key, value);
    }
    for (key, value) in rename(hold_figures, "hold_") {
        report.figure(&key, value);
    }
    report.fail_if(opened.failed as u64, "sockets could not be opened");
    if let Some(error) = &opened.first_error {
        report.note(format!("first connect error: {error}"));
    }
    report.fail_if(closed_early, "sockets closed while held");
    Ok(report)
}

/// Reads a socket until told to stop, then closes it (bounded).
async fn hold_socket(mut ws: Ws, held: Arc<Held>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            next = ws.next() => match next {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    held.closed_early.fetch_add(1, Relaxed);
                    return;
                }
                Some(Ok(_)) => {
                    held.frames.fetch_add(1, Relaxed);
                }
            },
            _ = stop.changed() => break,
        }
    }
    let close = async {
        let _ = ws.send(Message::Close(None)).await;
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
}

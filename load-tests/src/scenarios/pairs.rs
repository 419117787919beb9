//! `pairs`: P pairs of users, one socket each, both sides sending private
//! messages to each other on a paced open-loop schedule at a total rate R
//! for S seconds; then a bounded drain, and every delivery checked.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounts::Accounts;
use crate::ctx::Ctx;
use crate::report::Report;
use crate::scenarios::Traffic;
use crate::stats::CpuWindow;
use crate::traffic::{self, Composer, Fleet, Schedule};
use crate::{net, Failure};

pub async fn run(
    ctx: &Ctx,
    pairs: usize,
    slo_p99_ms: f64,
    traffic: &Traffic,
) -> Result<Report, Failure> {
    if pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    net::raise_open_file_limit();
    let users = pairs * 2;
    let accounts = Accounts::load(ctx);
    let names = ctx.users(0..users);
    let tokens = accounts.ensure(ctx, &names).await?;
    let mut fleet = Fleet::open(ctx, &accounts, &names, &tokens, None).await?;
    // Let presence frames of the connects settle.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut report = Report::new("pairs");
    report
        .param("pairs", pairs)
        .param("rate", traffic.rate)
        .param("duration_secs", traffic.duration.as_secs_f64())
        .param("content_bytes", traffic.content_bytes)
        .param("slo_p99_ms", slo_p99_ms)
        .figures(fleet.opened.figures());
    let window = send_phase(
        ctx,
        &mut fleet,
        traffic,
        |i| Composer::private(&ctx.run_id, i, &names[i ^ 1], traffic.content_bytes),
        1,
    )
    .await;
    report.figures(window.cpu);
    traffic::message_figures(&fleet.shared, &mut report, window.drain);
    let p99_ms = fleet.shared.delivery.merged().value_at_quantile(0.99) as f64 / 1000.0;
    let delivered = fleet.shared.delivered.load(Relaxed) as f64;
    let wanted = traffic.rate * traffic.duration.as_secs_f64();
    let sustained = report.ok() && delivered >= 0.95 * wanted && p99_ms <= slo_p99_ms;
    report.figure("sustained", sustained);
    fleet.close().await;
    Ok(report)
}

/// What a send phase measured.
pub struct Window {
    pub cpu: Vec<(&'static str, serde_json::Value)>,
    pub drain: Duration,
}

/// Every socket of `fleet` sends on its share of the schedule (total
/// `traffic.rate`, phases spread evenly), each message owed to
/// `recipients` sockets; then the drain. CPU is measured over both.
pub async fn send_phase(
    ctx: &Ctx,
    fleet: &mut Fleet,
    traffic: &Traffic,
    composer: impl Fn(usize) -> Composer,
    recipients: u64,
) -> Window {
    let senders = fleet.sinks.len();
    let per_sender = traffic.rate / senders as f64;
    let interval = 1.0 / per_sender.max(1e-9);
    let cpu = CpuWindow::start(&ctx.server_pids);
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + traffic.duration;
    let bar = ctx.timer_bar(traffic.duration.as_secs(), "sending");
    let done = Arc::new(AtomicBool::new(false));
    let progress = traffic::show_progress(fleet.shared.clone(), bar.clone(), start, done.clone());
    let mut writers = Vec::with_capacity(senders);
    for i in 0..senders {
        let schedule = Schedule {
            start,
            end,
            offset: i as f64 / traffic.rate.max(1e-9) % interval,
            interval,
        };
        let sink = fleet.take_sink(i);
        writers.push(tokio::spawn(traffic::paced_writer(
            fleet.shared.clone(),
            i,
            sink,
            composer(i),
            schedule,
            recipients,
        )));
    }
    for (i, writer) in writers.into_iter().enumerate() {
        if let Ok(sink) = writer.await {
            fleet.put_sink(i, sink);
        }
    }
    done.store(true, Relaxed);
    let _ = progress.await;
    let drain = traffic::drain(&fleet.shared, traffic.drain_timeout, &bar).await;
    bar.finish_and_clear();
    Window {
        cpu: cpu.finish(),
        drain,
    }
}

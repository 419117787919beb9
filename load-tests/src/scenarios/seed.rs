//! `seed`: fills the server's database through the real protocol. A few
//! sender sockets pipeline sends (a window of unacked messages each) into
//! one private conversation and one group each, whose other members are
//! offline; what was seeded is written to the state file for `history`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use crate::accounts::{read_json, write_json, Accounts};
use crate::ctx::Ctx;
use crate::report::Report;
use crate::scenarios::State;
use crate::stats::{now_us, CpuWindow};
use crate::traffic::{self, Composer, Fleet, Shared, Sink, SocketAcks};
use crate::{api, Failure};

/// What one `seed` run stored, for `history`.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SeedInfo {
    pub run: String,
    pub messages: u64,
    pub min_id: i64,
    pub max_id: i64,
    /// Private conversations: `reader` may read its conversation `with`.
    pub conversations: Vec<SeedConversation>,
    pub groups: Vec<SeedGroup>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SeedConversation {
    pub reader: String,
    pub with: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SeedGroup {
    pub id: i64,
    pub reader: String,
}

pub async fn run(
    ctx: &Ctx,
    messages: u64,
    senders: usize,
    window: u64,
    content_bytes: usize,
) -> Result<Report, Failure> {
    if senders == 0 || window == 0 {
        return Err("--senders and --window must be at least 1".into());
    }
    let accounts = Accounts::load(ctx);
    let prefix = &ctx.user_prefix;
    let sender_names: Vec<String> = (0..senders).map(|i| format!("{prefix}seed_s{i}")).collect();
    let other_names: Vec<String> = (0..senders).map(|i| format!("{prefix}seed_r{i}")).collect();
    let all: Vec<String> = sender_names.iter().chain(&other_names).cloned().collect();
    let tokens = accounts.ensure(ctx, &all).await?;

    let base = ctx.target.http_base.as_str();
    let mut groups = Vec::with_capacity(senders);
    for i in 0..senders {
        let name = format!("load-seed-{}-{i}", ctx.run_id);
        let id = api::create_group(&ctx.http, base, &tokens[i], &name).await?;
        api::add_member(&ctx.http, base, &tokens[i], id, &other_names[i]).await?;
        let next = &other_names[(i + 1) % senders];
        api::add_member(&ctx.http, base, &tokens[i], id, next).await?;
        groups.push(id);
    }

    let acks: Vec<Arc<SocketAcks>> = (0..senders).map(|_| Arc::default()).collect();
    let mut fleet = Fleet::open(
        ctx,
        &accounts,
        &sender_names,
        &tokens[..senders],
        Some(&acks),
    )
    .await?;
    let shared = fleet.shared.clone();

    let cpu = CpuWindow::start(&ctx.server_pids);
    let started = Instant::now();
    let bar = ctx.bar(messages, "seeding");
    let done = Arc::new(AtomicBool::new(false));
    let progress = {
        let (shared, bar, done) = (shared.clone(), bar.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Relaxed) {
                bar.set_position(shared.acked.load(Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut writers = Vec::with_capacity(senders);
    for i in 0..senders {
        let quota = messages / senders as u64 + u64::from((i as u64) < messages % senders as u64);
        let private = Composer::private(&ctx.run_id, i, &other_names[i], content_bytes);
        let group = Composer::group(&ctx.run_id, i, groups[i], content_bytes);
        writers.push(tokio::spawn(windowed_writer(
            shared.clone(),
            fleet.take_sink(i),
            [private, group],
            quota,
            window,
            acks[i].clone(),
            ctx.drain_timeout,
        )));
    }
    for (i, writer) in writers.into_iter().enumerate() {
        if let Ok(sink) = writer.await {
            fleet.put_sink(i, sink);
        }
    }
    let drain = traffic::drain(&shared, ctx.drain_timeout, &bar).await;
    done.store(true, Relaxed);
    let _ = progress.await;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let acked = shared.acked.load(Relaxed);

    let info = SeedInfo {
        run: ctx.run_id.clone(),
        messages: acked,
        min_id: shared.min_ack_id.load(Relaxed),
        max_id: shared.max_ack_id.load(Relaxed),
        conversations: (0..senders)
            .map(|i| SeedConversation {
                reader: sender_names[i].clone(),
                with: other_names[i].clone(),
            })
            .collect(),
        groups: (0..senders)
            .map(|i| SeedGroup {
                id: groups[i],
                reader: sender_names[i].clone(),
            })
            .collect(),
    };
    if acked > 0 {
        let mut state: State = read_json(&ctx.state_path);
        state.seed = Some(info.clone());
        write_json(&ctx.state_path, &state)?;
    }

    let mut report = Report::new("seed");
    report
        .param("messages", messages)
        .param("senders", senders)
        .param("window", window)
        .param("content_bytes", content_bytes)
        .figure("stored", acked)
        .figure(
            "stored_per_sec",
            (acked as f64 / elapsed.max(1e-9) * 10.0).round() / 10.0,
        )
        .figure("seed_secs", (elapsed * 1000.0).round() / 1000.0)
        .figure("min_id", info.min_id)
        .figure("max_id", info.max_id)
        .figure("state_file", ctx.state_path.display().to_string())
        .figures(cpu.finish());
    traffic::message_figures(&shared, &mut report, drain);
    if shared.sent.load(Relaxed) < messages {
        report.fail(format!(
            "only {} of {messages} messages were sent",
            shared.sent.load(Relaxed)
        ));
    }
    fleet.close().await;
    Ok(report)
}

/// Sends `quota` messages, alternating between the two composers, keeping
/// at most `window` unacked; gives up if no ack comes for `stall`.
async fn windowed_writer(
    shared: Arc<Shared>,
    mut sink: Sink,
    composers: [Composer; 2],
    quota: u64,
    window: u64,
    acks: Arc<SocketAcks>,
    stall: Duration,
) -> Sink {
    let mut k: u64 = 0;
    while k < quota {
        let in_flight = k.saturating_sub(acks.count.load(Relaxed));
        if in_flight >= window {
            if tokio::time::timeout(stall, acks.notify.notified())
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
        let batch = (window - in_flight).min(quota - k).min(256);
        let sent_us = now_us();
        shared.first_send_us.fetch_min(sent_us, Relaxed);
        shared.last_send_us.fetch_max(sent_us, Relaxed);
        for _ in 0..batch {
            let frame = composers[(k % 2) as usize].frame(k as u32, sent_us);
            shared.sent.fetch_add(1, Relaxed);
            if sink.feed(Message::Text(frame.into())).await.is_err() {
                shared.write_errors.fetch_add(1, Relaxed);
                return sink;
            }
            k += 1;
        }
        if sink.flush().await.is_err() {
            shared.write_errors.fetch_add(1, Relaxed);
            return sink;
        }
    }
    sink
}

//! `broadcast`: one group of N members, every member's socket open; one
//! post at a time, timed until the last member's socket has it. Repeated a
//! few times; each round and the median are reported.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::accounts::{read_json, write_json, Accounts};
use crate::ctx::Ctx;
use crate::report::Report;
use crate::scenarios::fanout::make_groups;
use crate::scenarios::State;
use crate::stats::{now_us, percentiles, CpuWindow};
use crate::traffic::{self, Composer, Fleet};
use crate::{api, net, Failure};

pub async fn run(
    ctx: &Ctx,
    members: usize,
    repeats: u32,
    content_bytes: usize,
) -> Result<Report, Failure> {
    if members < 2 {
        return Err("--members must be at least 2".into());
    }
    let file_limit = net::raise_open_file_limit();
    if members as u64 + 64 > file_limit {
        ctx.log(format!(
            "warning: {members} sockets and an open-file limit of {file_limit}: some will fail"
        ));
    }
    let accounts = Accounts::load(ctx);
    let names = ctx.users(0..members);
    let tokens = accounts.ensure(ctx, &names).await?;
    let group = broadcast_group(ctx, &names, &tokens).await?;
    let mut fleet = Fleet::open(ctx, &accounts, &names, &tokens, None).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let shared = fleet.shared.clone();
    let mut sink = fleet.take_sink(0);
    let composer = Composer::group(&ctx.run_id, 0, group, content_bytes);
    let owed = members as u64 - 1;
    let cpu = CpuWindow::start(&ctx.server_pids);
    let bar = ctx.bar(u64::from(repeats), "rounds");
    let mut rounds = Vec::new();
    let mut times = Vec::new();
    for round in 0..repeats {
        let before = shared.delivery.merged();
        let sent_us = now_us();
        shared.sent.fetch_add(1, Relaxed);
        shared.expected.fetch_add(owed, Relaxed);
        shared.first_send_us.fetch_min(sent_us, Relaxed);
        shared.last_send_us.fetch_max(sent_us, Relaxed);
        let frame = composer.frame(round, sent_us);
        if sink.send(Message::Text(frame.into())).await.is_err() {
            shared.write_errors.fetch_add(1, Relaxed);
            break;
        }
        let started = Instant::now();
        while !shared.settled() && started.elapsed() < ctx.drain_timeout {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut this_round = shared.delivery.merged();
        this_round.subtract(&before).ok();
        let last = shared
            .last_delivery_us
            .load(Relaxed)
            .saturating_sub(sent_us) as f64
            / 1000.0;
        let complete = shared.settled();
        let to_last = (last * 100.0).round() / 100.0;
        rounds.push(json!({
            "round": round,
            "delivered": this_round.len(),
            "complete": complete,
            "time_to_last_ms": to_last,
            "latency_ms": percentiles(&this_round),
        }));
        if complete {
            times.push(to_last);
        }
        bar.inc(1);
        bar.set_message(format!("last round: {to_last:.1} ms to the last member"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.finish_and_clear();
    fleet.put_sink(0, sink);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied();

    let mut report = Report::new("broadcast");
    report
        .param("members", members)
        .param("repeats", repeats)
        .param("content_bytes", content_bytes)
        .figure("group_id", group)
        .figures(fleet.opened.figures())
        .figure("time_to_last_ms", json!(times))
        .figure("time_to_last_max_ms", json!(sorted.last()))
        .figure("time_to_last_median_ms", json!(median))
        .figure("rounds", json!(rounds))
        .figures(cpu.finish());
    traffic::message_figures(&shared, &mut report, Duration::ZERO);
    fleet.close().await;
    Ok(report)
}

/// The group of `names` (owner `names[0]`): the one a previous run made if
/// it still has exactly these members, else a new one.
async fn broadcast_group(ctx: &Ctx, names: &[String], tokens: &[String]) -> Result<i64, Failure> {
    let state: State = read_json(&ctx.state_path);
    let key = format!("{}x{}", names[0], names.len());
    if let Some(&id) = state.broadcast_groups.get(&key) {
        let members = api::group_members(&ctx.http, &ctx.target.http_base, &tokens[0], id).await?;
        if members.is_some_and(|m| m.len() == names.len()) {
            ctx.log(format!(
                "reusing broadcast group {id} ({} members)",
                names.len()
            ));
            return Ok(id);
        }
    }
    ctx.log(format!("making a group of {} members", names.len()));
    let id = make_groups(ctx, names, tokens, 1, names.len(), "broadcast").await?[0];
    let mut state: State = read_json(&ctx.state_path);
    state.broadcast_groups.insert(key, id);
    write_json(&ctx.state_path, &state)?;
    Ok(id)
}

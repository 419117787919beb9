//! `fanout`: K groups of M members, one socket per member; every member
//! posts to its group on a paced open-loop schedule (total rate R); each
//! post is owed to the M−1 other members' sockets (the sender's socket gets
//! only the ack).

use futures_util::{stream, StreamExt};

use crate::accounts::Accounts;
use crate::ctx::Ctx;
use crate::report::Report;
use crate::scenarios::pairs::send_phase;
use crate::scenarios::Traffic;
use crate::traffic::{self, Composer, Fleet};
use crate::{api, net, Failure};

pub async fn run(
    ctx: &Ctx,
    groups: usize,
    members: usize,
    traffic: &Traffic,
) -> Result<Report, Failure> {
    if groups == 0 || members < 2 {
        return Err("--groups must be at least 1 and --members at least 2".into());
    }
    net::raise_open_file_limit();
    let users = groups * members;
    let accounts = Accounts::load(ctx);
    let names = ctx.users(0..users);
    let tokens = accounts.ensure(ctx, &names).await?;
    let group_ids = make_groups(ctx, &names, &tokens, groups, members, "fanout").await?;
    let mut fleet = Fleet::open(ctx, &accounts, &names, &tokens, None).await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut report = Report::new("fanout");
    report
        .param("groups", groups)
        .param("members", members)
        .param("rate", traffic.rate)
        .param("duration_secs", traffic.duration.as_secs_f64())
        .param("content_bytes", traffic.content_bytes)
        .figures(fleet.opened.figures());
    let window = send_phase(
        ctx,
        &mut fleet,
        traffic,
        |i| {
            Composer::group(
                &ctx.run_id,
                i,
                group_ids[i / members],
                traffic.content_bytes,
            )
        },
        members as u64 - 1,
    )
    .await;
    report.figures(window.cpu);
    traffic::message_figures(&fleet.shared, &mut report, window.drain);
    fleet.close().await;
    Ok(report)
}

/// Creates `groups` groups named after this run; group `k`'s members are
/// `names[k*members .. (k+1)*members]`, the first being the owner.
pub async fn make_groups(
    ctx: &Ctx,
    names: &[String],
    tokens: &[String],
    groups: usize,
    members: usize,
    label: &str,
) -> Result<Vec<i64>, Failure> {
    let mut ids = Vec::with_capacity(groups);
    for k in 0..groups {
        let owner = k * members;
        let name = format!("load-{label}-{}-{k}", ctx.run_id);
        let base = ctx.rest_base();
        ids.push(api::create_group(&ctx.http, base, &tokens[owner], &name).await?);
    }
    let adds: Vec<(usize, usize)> = (0..groups)
        .flat_map(|k| (1..members).map(move |m| (k, k * members + m)))
        .collect();
    let bar = ctx.bar(adds.len() as u64, "members");
    let results: Vec<Result<(), Failure>> = stream::iter(adds)
        .map(|(k, member)| {
            let (ids, bar) = (&ids, &bar);
            async move {
                let owner = &tokens[k * members];
                let base = ctx.rest_base();
                api::add_member(&ctx.http, base, owner, ids[k], &names[member]).await?;
                bar.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(ctx.auth_concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    results.into_iter().collect::<Result<Vec<()>, Failure>>()?;
    Ok(ids)
}

//! `idle`: opens and holds N authenticated sockets, reading each all the
//! time (pings are answered), and reports how fast they opened and, with
//! `--server-pid`, how much server memory each one costs (summed over the
//! nodes). With `--procs P` the sockets are held by this process and P−1
//! children of it (one process may hold only ~20,000).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::accounts::Accounts;
use crate::ctx::Ctx;
use crate::net::{self, Ws};
use crate::report::Report;
use crate::stats::{processes_rss_kib, CpuWindow};
use crate::traffic::{open_all, Opened};
use crate::Failure;

/// Counts shared by the holder tasks.
#[derive(Default)]
struct Held {
    /// Sockets that ended before the run let them go.
    closed_early: AtomicU64,
    /// Frames received while holding (presence, pings, anything).
    frames: AtomicU64,
}

/// What `idle` holds: `conns` sockets of users `users_from..`, from
/// `procs` processes, for `hold`.
pub struct Plan {
    pub conns: usize,
    pub hold: Duration,
    pub users_from: usize,
    pub procs: usize,
}

/// `(first user, count)` of each process's share, the first one's the largest.
fn shares(plan: &Plan) -> Vec<(usize, usize)> {
    let procs = plan.procs.clamp(1, plan.conns.max(1));
    let mut from = plan.users_from;
    (0..procs)
        .map(|k| {
            let count = plan.conns / procs + usize::from(k < plan.conns % procs);
            let share = (from, count);
            from += count;
            share
        })
        .collect()
}

pub async fn run(ctx: &Ctx, plan: &Plan) -> Result<Report, Failure> {
    if plan.procs == 0 {
        return Err("--procs must be at least 1".into());
    }
    let conns = plan.conns;
    let hold = plan.hold;
    let shares = shares(plan);
    let own = shares[0].1;
    let file_limit = net::raise_open_file_limit();
    if own as u64 + 64 > file_limit {
        ctx.log(format!(
            "warning: {own} sockets and an open-file limit of {file_limit}: some will fail"
        ));
    }
    let accounts = Accounts::load(ctx);
    // Every share's tokens: the children find them all in the cache.
    let names = ctx.users(plan.users_from..plan.users_from + conns);
    let tokens = accounts.ensure(ctx, &names).await?;

    let pids = &ctx.server_pids;
    // Let the server settle after the account work before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = processes_rss_kib(pids);
    let mut samples = Vec::new();
    let step = (conns / 10).max(1);
    let held = Arc::new(Held::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut holders = Vec::with_capacity(own);
    let mut opened_count = 0usize;
    let several = shares.len() > 1;

    let cpu = CpuWindow::start(pids);
    let started = Instant::now();
    let mut children = Vec::new();
    for &(from, count) in &shares[1..] {
        children.push(ChildProc::spawn(ctx, from, count, hold)?);
    }
    let mut opened = open_all(
        ctx,
        &accounts,
        &names[..own],
        &tokens[..own],
        plan.users_from,
        |_, ws| {
            holders.push(tokio::spawn(hold_socket(ws, held.clone(), stop_rx.clone())));
            opened_count += 1;
            if !several && (opened_count % step == 0 || opened_count == conns) {
                if let Some(rss) = processes_rss_kib(pids) {
                    samples.push(json!({"sockets": opened_count, "rss_kib": rss}));
                }
            }
        },
    )
    .await;
    for child in &mut children {
        child.add_opened(&mut opened).await;
    }
    if several {
        opened.elapsed = started.elapsed();
    }
    let connect_cpu = cpu.finish();
    let rss_connected = processes_rss_kib(pids);

    ctx.log(format!(
        "{} sockets open in {:.1} s; holding for {} s",
        opened.opened,
        opened.elapsed.as_secs_f64(),
        hold.as_secs()
    ));
    let hold_cpu = CpuWindow::start(pids);
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
    let rss_held = processes_rss_kib(pids);
    let mut closed_early = held.closed_early.load(Relaxed);
    let mut frames = held.frames.load(Relaxed);

    let _ = stop.send(true);
    let closing = Instant::now();
    for child in &mut children {
        child.stop();
    }
    for holder in holders {
        let _ = holder.await;
    }
    let mut child_lost = 0u64;
    for mut child in children {
        match child.line(Duration::from_secs(30)).await {
            Some(end) => {
                closed_early += end["closed_early"].as_u64().unwrap_or(0);
                frames += end["frames"].as_u64().unwrap_or(0);
            }
            None => child_lost += 1,
        }
        child.reap();
    }
    let close_secs = closing.elapsed().as_secs_f64();

    let mut report = Report::new("idle");
    report
        .param("conns", conns)
        .param("hold_secs", hold.as_secs());
    if plan.users_from > 0 {
        report.param("users_from", plan.users_from);
    }
    if several {
        report.param("procs", shares.len());
    }
    report
        .figure("open_file_limit", file_limit)
        .figures(opened.figures())
        .figure("closed_during_hold", closed_early)
        .figure("frames_received", frames)
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
    report.fail_if(child_lost, "child processes gave no final report");
    if several {
        report.note(format!(
            "{} processes held the sockets; tool CPU figures are the first process's only",
            shares.len()
        ));
    }
    Ok(report)
}

/// One child process holding a share of the sockets (`idle --child`). It
/// prints one JSON line when its sockets are open, holds them until a line
/// (or the end) on its stdin, then prints one more line and exits. Dropped,
/// it is killed if it still runs.
struct ChildProc {
    process: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    share: (usize, usize),
}

/// How long a child may take to open its share.
const CHILD_OPEN_TIMEOUT: Duration = Duration::from_secs(900);

impl ChildProc {
    fn spawn(ctx: &Ctx, from: usize, count: usize, hold: Duration) -> Result<ChildProc, Failure> {
        let urls: Vec<&str> = ctx.targets.iter().map(|t| t.http_base.as_str()).collect();
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("--url")
            .arg(urls.join(","))
            .arg("--accounts")
            .arg(&ctx.accounts_path)
            .arg("--user-prefix")
            .arg(&ctx.user_prefix)
            .arg("--connect-concurrency")
            .arg(ctx.connect_concurrency.to_string())
            .arg("--auth-concurrency")
            .arg(ctx.auth_concurrency.to_string())
            .arg("--quiet");
        if let Some(threads) = ctx.threads {
            command.arg("--threads").arg(threads.to_string());
        }
        command
            .args(["idle", "--child", "--conns", &count.to_string()])
            .args(["--users-from", &from.to_string()])
            .args(["--hold", &hold.as_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut process = command
            .spawn()
            .map_err(|e| format!("cannot start a child parley-load: {e}"))?;
        let stdin = process.stdin.take();
        let stdout = process.stdout.take().ok_or("no stdout from the child")?;
        let (lines_tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProc {
            process,
            stdin,
            lines,
            share: (from, count),
        })
    }

    /// The child's next JSON line (within `timeout`).
    async fn line(&mut self, timeout: Duration) -> Option<Value> {
        let line = tokio::time::timeout(timeout, self.lines.recv())
            .await
            .ok()??;
        serde_json::from_str(&line).ok()
    }

    /// Waits for the child's "open" line and adds its counts to `opened`.
    async fn add_opened(&mut self, opened: &mut Opened) {
        let (from, count) = self.share;
        let Some(line) = self.line(CHILD_OPEN_TIMEOUT).await else {
            opened.failed += count;
            opened.first_error.get_or_insert_with(|| {
                format!("the child holding users {from}.. reported nothing")
            });
            return;
        };
        let get = |key: &str| line[key].as_u64().unwrap_or(0) as usize;
        opened.opened += get("opened");
        opened.failed += get("failed") + count.saturating_sub(get("opened") + get("failed"));
        opened.renewed += get("renewed");
        if let Some(error) = line["first_error"].as_str() {
            opened.first_error.get_or_insert_with(|| error.to_owned());
        }
        for pair in line["latency_us"].as_array().into_iter().flatten() {
            if let (Some(value), Some(n)) = (pair[0].as_u64(), pair[1].as_u64()) {
                let _ = opened.latency.record_n(value.max(1), n);
            }
        }
    }

    /// Tells the child to close its sockets and finish.
    fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "stop");
        }
    }

    /// Waits (bounded) for the child to exit; kills it if it does not.
    fn reap(mut self) {
        self.stop();
        for _ in 0..150 {
            if let Ok(Some(_)) = self.process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

/// `idle --child`: holds users `users_from..+conns` for a parent `idle`
/// (see [`ChildProc`]); returns the exit code.
pub async fn child(ctx: &Ctx, plan: &Plan) -> i32 {
    net::raise_open_file_limit();
    let accounts = Accounts::load(ctx);
    let names = ctx.users(plan.users_from..plan.users_from + plan.conns);
    let tokens = match accounts.ensure(ctx, &names).await {
        Ok(tokens) => tokens,
        Err(error) => {
            println!(
                "{}",
                json!({"opened": 0, "failed": names.len(), "first_error": error.to_string()})
            );
            return 2;
        }
    };
    let held = Arc::new(Held::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut holders = Vec::with_capacity(names.len());
    let opened = open_all(ctx, &accounts, &names, &tokens, plan.users_from, |_, ws| {
        holders.push(tokio::spawn(hold_socket(ws, held.clone(), stop_rx.clone())));
    })
    .await;
    let latency: Vec<[u64; 2]> = opened
        .latency
        .iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect();
    println!(
        "{}",
        json!({
            "opened": opened.opened,
            "failed": opened.failed,
            "renewed": opened.renewed,
            "first_error": opened.first_error,
            "latency_us": latency,
        })
    );
    let (told, told_rx) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = told.send(());
    });
    // Bounded even if the parent never says: its hold and then some.
    let _ = tokio::time::timeout(plan.hold + Duration::from_secs(900), told_rx).await;
    let closed_early = held.closed_early.load(Relaxed);
    let _ = stop.send(true);
    let closing = Instant::now();
    for holder in holders {
        let _ = holder.await;
    }
    println!(
        "{}",
        json!({
            "closed_early": closed_early,
            "frames": held.frames.load(Relaxed),
            "close_secs": closing.elapsed().as_secs_f64(),
        })
    );
    0
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_users_once() {
        let plan = Plan {
            conns: 10,
            hold: Duration::ZERO,
            users_from: 5,
            procs: 3,
        };
        assert_eq!(shares(&plan), vec![(5, 4), (9, 3), (12, 3)]);
        let one = Plan { procs: 1, ..plan };
        assert_eq!(shares(&one), vec![(5, 10)]);
        let many = Plan {
            conns: 2,
            procs: 8,
            ..one
        };
        assert_eq!(shares(&many), vec![(5, 1), (6, 1)]);
    }
}

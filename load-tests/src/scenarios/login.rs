//! `login`: logins of existing users at a paced rate (open loop) for a
//! while, meant to run beside `pairs` in another process. Each login costs
//! the server an argon2 verification; this shows what that does to it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::accounts::Accounts;
use crate::api;
use crate::ctx::Ctx;
use crate::report::Report;
use crate::stats::{histogram, percentiles, CpuWindow};
use crate::Failure;

pub async fn run(
    ctx: &Ctx,
    rate: f64,
    duration: Duration,
    users: usize,
    max_in_flight: usize,
) -> Result<Report, Failure> {
    if rate <= 0.0 || users == 0 {
        return Err("--rate and --users must be positive".into());
    }
    let accounts = Accounts::load(ctx);
    let names = Arc::new(ctx.users(0..users));
    accounts.ensure(ctx, &names).await?;

    let latency = Arc::new(Mutex::new(histogram()));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let mut skipped = 0u64;
    let mut started_count = 0u64;
    let mut tasks = Vec::new();

    let cpu = CpuWindow::start(&ctx.server_pids);
    let start = Instant::now();
    let end = start + duration;
    let bar = ctx.timer_bar(duration.as_secs(), "logins");
    let interval = 1.0 / rate;
    loop {
        let due = start + Duration::from_secs_f64(started_count as f64 * interval);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        started_count += 1;
        bar.set_position(start.elapsed().as_secs());
        bar.set_message(format!(
            "{} ok, {} errors, {} in flight",
            ok.load(Relaxed),
            errors.load(Relaxed),
            in_flight.load(Relaxed)
        ));
        if in_flight.load(Relaxed) >= max_in_flight {
            skipped += 1;
            continue;
        }
        in_flight.fetch_add(1, Relaxed);
        let name = names[(started_count as usize - 1) % names.len()].clone();
        let (http, base) = (ctx.http.clone(), ctx.target.http_base.clone());
        let (latency, ok, errors, in_flight, first_error) = (
            latency.clone(),
            ok.clone(),
            errors.clone(),
            in_flight.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let outcome =
                tokio::time::timeout(Duration::from_secs(30), api::login(&http, &base, &name))
                    .await;
            let took = began.elapsed().as_micros() as u64;
            match outcome {
                Ok(Ok(Some(_))) => {
                    ok.fetch_add(1, Relaxed);
                    latency
                        .lock()
                        .expect("latency lock")
                        .saturating_record(took.max(1));
                }
                other => {
                    errors.fetch_add(1, Relaxed);
                    let why = match other {
                        Ok(Ok(None)) => format!("login {name}: 401"),
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("login {name}: no answer within 30 s"),
                    };
                    first_error.lock().expect("error lock").get_or_insert(why);
                }
            }
            in_flight.fetch_sub(1, Relaxed);
        }));
    }
    let send_secs = start.elapsed().as_secs_f64();
    let waited = tokio::time::timeout(ctx.drain_timeout, async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    bar.finish_and_clear();
    let unfinished = in_flight.load(Relaxed) as u64;
    let ok = ok.load(Relaxed);

    let mut report = Report::new("login");
    report
        .param("rate", rate)
        .param("duration_secs", duration.as_secs_f64())
        .param("users", users)
        .figure("attempted", started_count - skipped)
        .figure("succeeded", ok)
        .figure(
            "logins_per_sec",
            (ok as f64 / duration.as_secs_f64().max(1e-9) * 10.0).round() / 10.0,
        )
        .figure(
            "scheduled_per_sec",
            (started_count as f64 / send_secs.max(1e-9) * 10.0).round() / 10.0,
        )
        .figure("errors", errors.load(Relaxed))
        .figure("skipped_too_many_in_flight", skipped)
        .figure("unfinished", unfinished)
        .figure(
            "latency_ms",
            percentiles(&latency.lock().expect("latency lock")),
        )
        .figures(cpu.finish());
    report
        .fail_if(errors.load(Relaxed), "logins failed")
        .fail_if(unfinished, "logins never answered");
    if skipped > 0 {
        report.note(format!(
            "{skipped} logins were skipped: {max_in_flight} were already waiting (the server could not keep up)"
        ));
    }
    if waited.is_err() {
        report.note("gave up waiting for the last logins");
    }
    if let Some(error) = first_error.lock().expect("error lock").take() {
        report.note(format!("first error: {error}"));
    }
    Ok(report)
}

//! `login`: logins of existing users at a paced rate (open loop) for a
//! while, meant to run beside `pairs` in another process. Each login costs
//! the server an argon2 verification; this shows what that does to it.
//!
//! Each login ends one of three ways: answered (a token), refused (503 with
//! `Retry-After`: the server's hashing queue was full and it shed the login
//! at once; not retried, the schedule is open loop), or an error (any other
//! status, a transport error, no answer within 30 s). Only errors fail the
//! run; refusals are the server working as designed under overload.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::accounts::Accounts;
use crate::api::{self, LoginAnswer};
use crate::ctx::Ctx;
use crate::report::Report;
use crate::stats::{histogram, percentiles, CpuWindow};
use crate::Failure;

/// What the login tasks record, shared between them.
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicUsize,
    /// Answered logins, µs.
    latency: Mutex<Histogram<u64>>,
    /// Refusals, µs: how soon the server said no.
    refusal_latency: Mutex<Histogram<u64>>,
    /// The `Retry-After` seconds of every refusal.
    retry_after: Mutex<Vec<u64>>,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            ok: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            latency: Mutex::new(histogram()),
            refusal_latency: Mutex::new(histogram()),
            retry_after: Mutex::new(Vec::new()),
            first_error: Mutex::new(None),
        }
    }
}

fn record(into: &Mutex<Histogram<u64>>, micros: u64) {
    into.lock()
        .expect("histogram lock")
        .saturating_record(micros.max(1));
}

fn summary(of: &Mutex<Histogram<u64>>) -> Value {
    percentiles(&of.lock().expect("histogram lock"))
}

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

    let tally = Arc::new(Tally::new());
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
            "{} ok, {} refused, {} errors, {} in flight",
            tally.ok.load(Relaxed),
            tally.refused.load(Relaxed),
            tally.errors.load(Relaxed),
            tally.in_flight.load(Relaxed)
        ));
        if tally.in_flight.load(Relaxed) >= max_in_flight {
            skipped += 1;
            continue;
        }
        tally.in_flight.fetch_add(1, Relaxed);
        let name = names[(started_count as usize - 1) % names.len()].clone();
        let (http, base) = (ctx.http.clone(), ctx.target.http_base.clone());
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let outcome =
                tokio::time::timeout(Duration::from_secs(30), api::try_login(&http, &base, &name))
                    .await;
            let took = began.elapsed().as_micros() as u64;
            let error = match outcome {
                Ok(Ok(LoginAnswer::Token(_))) => {
                    tally.ok.fetch_add(1, Relaxed);
                    record(&tally.latency, took);
                    None
                }
                Ok(Ok(LoginAnswer::Refused { retry_after })) => {
                    tally.refused.fetch_add(1, Relaxed);
                    record(&tally.refusal_latency, took);
                    tally
                        .retry_after
                        .lock()
                        .expect("retry-after lock")
                        .push(retry_after);
                    None
                }
                Ok(Ok(LoginAnswer::Rejected)) => Some(format!("login {name}: 401")),
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("login {name}: no answer within 30 s")),
            };
            if let Some(why) = error {
                tally.errors.fetch_add(1, Relaxed);
                tally
                    .first_error
                    .lock()
                    .expect("error lock")
                    .get_or_insert(why);
            }
            tally.in_flight.fetch_sub(1, Relaxed);
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
    let unfinished = tally.in_flight.load(Relaxed) as u64;
    let ok = tally.ok.load(Relaxed);
    let refused = tally.refused.load(Relaxed);
    let errors = tally.errors.load(Relaxed);
    let per_sec =
        |count: u64| (count as f64 / duration.as_secs_f64().max(1e-9) * 10.0).round() / 10.0;

    let mut report = Report::new("login");
    report
        .param("rate", rate)
        .param("duration_secs", duration.as_secs_f64())
        .param("users", users)
        .figure("attempted", started_count - skipped)
        .figure("succeeded", ok)
        .figure("logins_per_sec", per_sec(ok))
        .figure(
            "scheduled_per_sec",
            (started_count as f64 / send_secs.max(1e-9) * 10.0).round() / 10.0,
        )
        .figure("refused", refused)
        .figure("refused_per_sec", per_sec(refused))
        .figure("errors", errors)
        .figure("skipped_too_many_in_flight", skipped)
        .figure("unfinished", unfinished)
        .figure("latency_ms", summary(&tally.latency))
        .figure("refusal_latency_ms", summary(&tally.refusal_latency))
        .figure(
            "retry_after_secs",
            spread(&tally.retry_after.lock().expect("retry-after lock")),
        )
        .figures(cpu.finish());
    report
        .fail_if(errors, "logins failed")
        .fail_if(unfinished, "logins never answered");
    if refused > 0 {
        report.note(format!(
            "{refused} logins were refused at once with 503 and Retry-After (the server's hashing queue was full)"
        ));
    }
    if skipped > 0 {
        report.note(format!(
            "{skipped} logins were skipped: {max_in_flight} were already waiting (the server could not keep up)"
        ));
    }
    if waited.is_err() {
        report.note("gave up waiting for the last logins");
    }
    if let Some(error) = tally.first_error.lock().expect("error lock").take() {
        report.note(format!("first error: {error}"));
    }
    Ok(report)
}

/// `{count, min, max}` of the refusals' `Retry-After` seconds.
fn spread(values: &[u64]) -> Value {
    match (values.iter().min(), values.iter().max()) {
        (Some(min), Some(max)) => json!({"count": values.len(), "min": min, "max": max}),
        _ => json!({"count": 0}),
    }
}

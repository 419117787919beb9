//! `history`: paged history reads over REST from what `seed` stored:
//! `limit=50` pages below random `before` cursors, half private
//! conversations, half groups, C requests in flight; each page is checked
//! (a JSON array of at most `limit` messages in ascending id below the cursor).
//! With `--newest` every request reads the newest page instead (no cursor:
//! the first page a client reads when it opens a conversation), checked as
//! a JSON array of at most `limit` messages in ascending id.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use crate::accounts::{read_json, Accounts};
use crate::ctx::Ctx;
use crate::report::Report;
use crate::scenarios::State;
use crate::stats::{histogram, percentiles, CpuWindow, Rng};
use crate::Failure;

const PAGE: u32 = 50;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
    bad_pages: AtomicU64,
    messages: AtomicU64,
    empty_pages: AtomicU64,
    private: AtomicU64,
    group: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn sample(&self, what: String) {
        let mut samples = self.samples.lock().expect("samples lock");
        if samples.len() < 5 {
            samples.push(what);
        }
    }
}

#[derive(Deserialize)]
struct Row {
    id: i64,
}

/// Which page each request reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// Below a random `before` cursor in the seeded id range.
    Random,
    /// The newest page (no cursor).
    Newest,
}

pub async fn run(
    ctx: &Ctx,
    requests: u64,
    concurrency: usize,
    max_duration: Duration,
    pages: Pages,
) -> Result<Report, Failure> {
    let state: State = read_json(&ctx.state_path);
    let seed = state.seed.ok_or_else(|| {
        format!(
            "no seeded data recorded in {}: run `seed` against this server first",
            ctx.state_path.display()
        )
    })?;
    if seed.max_id <= 0 || seed.conversations.is_empty() || seed.groups.is_empty() {
        return Err("the recorded seed is empty: run `seed` again".into());
    }
    let accounts = Accounts::load(ctx);
    let mut readers: Vec<String> = seed
        .conversations
        .iter()
        .map(|c| c.reader.clone())
        .collect();
    readers.extend(seed.groups.iter().map(|g| g.reader.clone()));
    readers.sort();
    readers.dedup();
    let tokens = accounts.ensure(ctx, &readers).await?;
    let token_of = |name: &str| -> String {
        readers
            .iter()
            .position(|r| r == name)
            .map(|i| tokens[i].clone())
            .unwrap_or_default()
    };
    // (url without the cursor, token) for every target, privates first.
    let base = &ctx.target.http_base;
    let privates: Vec<(String, String)> = seed
        .conversations
        .iter()
        .map(|c| {
            (
                format!("{base}/messages/private/{}", c.with),
                token_of(&c.reader),
            )
        })
        .collect();
    let groups: Vec<(String, String)> = seed
        .groups
        .iter()
        .map(|g| {
            (
                format!("{base}/groups/{}/messages", g.id),
                token_of(&g.reader),
            )
        })
        .collect();
    let targets = Arc::new((privates, groups));

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .timeout(Duration::from_secs(10))
        .build()?;
    let remaining = Arc::new(AtomicU64::new(requests));
    let tally = Arc::new(Tally::default());
    let cpu = CpuWindow::start(&ctx.server_pids);
    let started = Instant::now();
    let deadline = started + max_duration;
    let bar = ctx.bar(requests, "requests");
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency.max(1) {
        let (http, remaining, tally, targets, bar) = (
            http.clone(),
            remaining.clone(),
            tally.clone(),
            targets.clone(),
            bar.clone(),
        );
        let (min_id, max_id) = (seed.min_id.max(1), seed.max_id);
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x5eed ^ (w as u64 + 1) << 20 ^ std::process::id() as u64);
            let mut latency = histogram();
            while Instant::now() < deadline
                && remaining
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                    .is_ok()
            {
                let private = rng.below(2) == 0;
                let list = if private { &targets.0 } else { &targets.1 };
                let (url, token) = &list[rng.below(list.len() as u64) as usize];
                let before = match pages {
                    Pages::Random => min_id + 1 + rng.below((max_id - min_id + 1) as u64) as i64,
                    Pages::Newest => i64::MAX,
                };
                let began = Instant::now();
                let request = http.get(url).bearer_auth(token);
                let request = match pages {
                    Pages::Random => {
                        request.query(&[("before", before), ("limit", i64::from(PAGE))])
                    }
                    Pages::Newest => request.query(&[("limit", i64::from(PAGE))]),
                };
                let outcome = request.send().await;
                let checked = match outcome {
                    Ok(response) if response.status().is_success() => {
                        response.json::<Vec<Row>>().await.map_err(|e| e.to_string())
                    }
                    Ok(response) => Err(format!("{url}: {}", response.status())),
                    Err(error) => Err(format!("{url}: {error}")),
                };
                latency.saturating_record((began.elapsed().as_micros() as u64).max(1));
                match checked {
                    Ok(rows) => {
                        tally.ok.fetch_add(1, Relaxed);
                        (if private { &tally.private } else { &tally.group }).fetch_add(1, Relaxed);
                        tally.messages.fetch_add(rows.len() as u64, Relaxed);
                        if rows.is_empty() {
                            tally.empty_pages.fetch_add(1, Relaxed);
                        }
                        let ascending = rows.windows(2).all(|w| w[0].id < w[1].id);
                        let below = rows.iter().all(|r| r.id < before);
                        if rows.len() > PAGE as usize || !ascending || !below {
                            tally.bad_pages.fetch_add(1, Relaxed);
                            let cursor = match pages {
                                Pages::Random => format!("?before={before}"),
                                Pages::Newest => String::new(),
                            };
                            tally.sample(format!(
                                "bad page from {url}{cursor}: {} rows, ascending {ascending}, all below the cursor {below}",
                                rows.len()
                            ));
                        }
                    }
                    Err(error) => {
                        tally.errors.fetch_add(1, Relaxed);
                        tally.sample(error);
                    }
                }
                bar.inc(1);
            }
            latency
        }));
    }
    let mut latency = histogram();
    for worker in workers {
        if let Ok(h) = worker.await {
            latency.add(&h).ok();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let done = tally.ok.load(Relaxed) + tally.errors.load(Relaxed);
    let ok = tally.ok.load(Relaxed);

    let mut report = Report::new("history");
    report
        .param(
            "pages",
            match pages {
                Pages::Random => "random",
                Pages::Newest => "newest",
            },
        )
        .param("requests", requests)
        .param("concurrency", concurrency)
        .param("limit", PAGE)
        .figure("seeded_messages", seed.messages)
        .figure("seeded_id_range", json!([seed.min_id, seed.max_id]))
        .figure("requests_done", done)
        .figure("requests_ok", ok)
        .figure("private_requests", tally.private.load(Relaxed))
        .figure("group_requests", tally.group.load(Relaxed))
        .figure(
            "requests_per_sec",
            (done as f64 / elapsed.max(1e-9) * 10.0).round() / 10.0,
        )
        .figure("errors", tally.errors.load(Relaxed))
        .figure("bad_pages", tally.bad_pages.load(Relaxed))
        .figure("empty_pages", tally.empty_pages.load(Relaxed))
        .figure(
            "messages_per_page",
            (tally.messages.load(Relaxed) as f64 / ok.max(1) as f64 * 10.0).round() / 10.0,
        )
        .figure("latency_ms", percentiles(&latency))
        .figures(cpu.finish());
    report
        .fail_if(tally.errors.load(Relaxed), "requests failed")
        .fail_if(tally.bad_pages.load(Relaxed), "pages were malformed");
    if done < requests {
        report.fail(format!(
            "only {done} of {requests} requests were made within {} s",
            max_duration.as_secs()
        ));
    }
    for sample in tally.samples.lock().expect("samples lock").iter() {
        report.note(sample.clone());
    }
    Ok(report)
}

//! `changes`: what an edit, a reaction and a search cost. Pairs of users
//! exchange a few messages over REST (each holding a word of its own, so
//! searches find something), then three phases run one after another, each
//! with C requests in flight and a bounded count: the senders edit their
//! messages, the recipients react to them (alternating two emojis, so every
//! request is a real change), and the recipients search for a word their
//! messages hold.
//! Every answer is checked: an edit must carry the new text, a reaction the
//! emoji, a search at least one result.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::accounts::Accounts;
use crate::ctx::Ctx;
use crate::report::Report;
use crate::stats::{histogram, percentiles, CpuWindow};
use crate::Failure;

/// Words the messages hold, one per message in turn; searches look for them.
const WORDS: [&str; 8] = [
    "harbour", "lantern", "meadow", "quartz", "saffron", "tundra", "velvet", "zephyr",
];
const EMOJIS: [&str; 2] = ["👍", "🎉"];

/// One message a pair exchanged: the sender's and recipient's tokens, its id.
#[derive(Clone)]
struct Sent {
    sender: String,
    recipient: String,
    id: i64,
    /// The word it holds, edited or not.
    word: &'static str,
}

#[derive(Clone, Copy)]
enum Operation {
    Edit,
    React,
    Search,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Edit => "edit",
            Operation::React => "react",
            Operation::Search => "search",
        }
    }
}

pub async fn run(
    ctx: &Ctx,
    pairs: usize,
    messages_per_pair: usize,
    requests: u64,
    concurrency: usize,
    max_duration: Duration,
) -> Result<Report, Failure> {
    if pairs == 0 || messages_per_pair == 0 || requests == 0 || concurrency == 0 {
        return Err("--pairs, --messages, --requests and --concurrency must be positive".into());
    }
    let accounts = Accounts::load(ctx);
    let names = ctx.users(0..pairs * 2);
    let tokens = accounts.ensure(ctx, &names).await?;
    let base = ctx.target.http_base.clone();

    let mut sent = Vec::with_capacity(pairs * messages_per_pair);
    for pair in 0..pairs {
        let (sender, recipient) = (&tokens[2 * pair], &tokens[2 * pair + 1]);
        for n in 0..messages_per_pair {
            let word = WORDS[n % WORDS.len()];
            let body = json!({"recipient": names[2 * pair + 1], "content": format!("about the {word}, note {n}")});
            let url = format!("{base}/messages/private");
            let answer = call(&ctx.http, reqwest::Method::POST, &url, sender, Some(body)).await?;
            let id = answer["id"]
                .as_i64()
                .ok_or_else(|| format!("a send answered {answer}"))?;
            sent.push(Sent {
                sender: sender.clone(),
                recipient: recipient.clone(),
                id,
                word,
            });
        }
    }

    let mut report = Report::new("changes");
    report
        .param("pairs", pairs)
        .param("messages_per_pair", messages_per_pair)
        .param("requests", requests)
        .param("concurrency", concurrency)
        .figure("messages", sent.len());
    let sent = Arc::new(sent);
    let mut failed = 0;
    for operation in [Operation::Edit, Operation::React, Operation::Search] {
        let (figures, errors) =
            phase(ctx, &sent, operation, requests, concurrency, max_duration).await;
        failed += errors;
        report.figure(operation.name(), figures);
    }
    report.fail_if(failed, "requests failed or answered wrongly");
    Ok(report)
}

/// Runs `requests` of one operation with `concurrency` workers; its figures
/// and how many failed.
async fn phase(
    ctx: &Ctx,
    sent: &Arc<Vec<Sent>>,
    operation: Operation,
    requests: u64,
    concurrency: usize,
    max_duration: Duration,
) -> (Value, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let latency = Arc::new(Mutex::new(histogram()));
    let cpu = CpuWindow::start(&ctx.server_pids);
    let started = Instant::now();
    let deadline = started + max_duration;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, base, sent, next, errors, first_error, latency) = (
            ctx.http.clone(),
            ctx.target.http_base.clone(),
            sent.clone(),
            next.clone(),
            errors.clone(),
            first_error.clone(),
            latency.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= requests || Instant::now() >= deadline {
                    return;
                }
                let began = Instant::now();
                let outcome = tokio::time::timeout(
                    Duration::from_secs(30),
                    one(&http, &base, &sent, operation, n),
                )
                .await;
                let took = began.elapsed().as_micros() as u64;
                match outcome {
                    Ok(Ok(())) => latency
                        .lock()
                        .expect("latency lock")
                        .saturating_record(took.max(1)),
                    Ok(Err(error)) => {
                        errors.fetch_add(1, Relaxed);
                        first_error
                            .lock()
                            .expect("error lock")
                            .get_or_insert(error.to_string());
                    }
                    Err(_) => {
                        errors.fetch_add(1, Relaxed);
                        first_error
                            .lock()
                            .expect("error lock")
                            .get_or_insert("no answer within 30 s".into());
                    }
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let latency = latency.lock().expect("latency lock");
    let done = latency.len();
    let mut figures = json!({
        "ok": done,
        "errors": errors.load(Relaxed),
        "per_sec": (done as f64 / secs).round(),
        "latency_ms": percentiles(&latency),
    });
    let cpu_figures = cpu.finish();
    for (key, value) in &cpu_figures {
        figures[*key] = value.clone();
    }
    if let Some(server) = cpu_figures
        .iter()
        .find(|(key, _)| *key == "server_cpu_secs")
    {
        if let Some(server) = server.1.as_f64() {
            figures["server_cpu_us_per_request"] =
                json!((server * 1e6 / done.max(1) as f64).round());
        }
    }
    if let Some(error) = first_error.lock().expect("error lock").take() {
        figures["first_error"] = json!(error);
    }
    (figures, errors.load(Relaxed))
}

/// Request `n` of `operation`, checked.
async fn one(
    http: &reqwest::Client,
    base: &str,
    sent: &[Sent],
    operation: Operation,
    n: u64,
) -> Result<(), Failure> {
    let message = &sent[(n as usize) % sent.len()];
    let round = n as usize / sent.len();
    let url = format!("{base}/messages/{}", message.id);
    match operation {
        Operation::Edit => {
            let content = format!("about the {}, edit {round}", message.word);
            let answer = call(
                http,
                reqwest::Method::PATCH,
                &url,
                &message.sender,
                Some(json!({"content": content})),
            )
            .await?;
            check(answer["content"] == content.as_str(), "an edit", &answer)
        }
        Operation::React => {
            let emoji = EMOJIS[round % EMOJIS.len()];
            let answer = call(
                http,
                reqwest::Method::PUT,
                &format!("{url}/reaction"),
                &message.recipient,
                Some(json!({"emoji": emoji})),
            )
            .await?;
            let mine = answer["reactions"]
                .as_array()
                .is_some_and(|all| all.iter().any(|r| r["emoji"] == emoji));
            check(mine, "a reaction", &answer)
        }
        Operation::Search => {
            let word = message.word;
            let answer = call(
                http,
                reqwest::Method::GET,
                &format!("{base}/search?q={word}&limit=20"),
                &message.recipient,
                None,
            )
            .await?;
            let found = answer["results"]
                .as_array()
                .is_some_and(|results| !results.is_empty());
            check(found, "a search", &answer)
        }
    }
}

fn check(ok: bool, what: &str, answer: &Value) -> Result<(), Failure> {
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{what} answered {}",
            answer.to_string().chars().take(300).collect::<String>()
        )
        .into()),
    }
}

/// One authorised JSON request; the body of a 200, else an error.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    if status != 200 {
        return Err(format!(
            "{url}: {status}: {}",
            text.chars().take(300).collect::<String>()
        )
        .into());
    }
    Ok(serde_json::from_str(&text)?)
}

//! The message engine the socket scenarios share: opening many sockets,
//! a reader task per socket that never stops reading and checks every
//! delivery (exactly once, in id order) and ack, paced open-loop writers,
//! the bounded drain, and the figures all of this adds up to.
//!
//! Every message carries a tag in its content, `RUN.SENDER.SEQ.SENT_US.`
//! (then padding), and a `client_id` of `RUN.SEQ.SENT_US`: the receiver
//! needs no shared state to know who sent it, which one it is and when it
//! was sent (one clock, [`stats::now_us`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{stream, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::accounts::Accounts;
use crate::ctx::Ctx;
use crate::net::Ws;
use crate::report::Report;
use crate::stats::{self, now_us, percentiles, Shards};
use crate::Failure;

pub type Sink = SplitSink<Ws, Message>;
pub type Source = SplitStream<Ws>;

/// Counters and histograms every socket task of a run adds to.
pub struct Shared {
    pub run: String,
    /// Messages written to sockets.
    pub sent: AtomicU64,
    /// Deliveries owed: each sent message times its intended recipients.
    pub expected: AtomicU64,
    /// First receipts of a message at an intended recipient's socket.
    pub delivered: AtomicU64,
    /// Receipts of a message a socket already had.
    pub duplicates: AtomicU64,
    /// Deliveries whose server id was not above the last one seen in the
    /// same conversation by the same socket.
    pub out_of_order: AtomicU64,
    /// Message frames not sent by this run (other runs, other clients).
    pub foreign: AtomicU64,
    pub acked: AtomicU64,
    pub duplicate_acks: AtomicU64,
    pub error_frames: AtomicU64,
    /// Sockets the server closed (or that failed) before the run ended.
    pub closed: AtomicU64,
    pub write_errors: AtomicU64,
    /// Frames that were not JSON of the expected shape.
    pub unreadable: AtomicU64,
    pub first_send_us: AtomicU64,
    pub last_send_us: AtomicU64,
    pub last_delivery_us: AtomicU64,
    pub last_ack_us: AtomicU64,
    pub min_ack_id: AtomicI64,
    pub max_ack_id: AtomicI64,
    /// Send → receipt at the recipient's socket.
    pub delivery: Shards,
    /// Send → ack at the sender's socket.
    pub ack: Shards,
    /// How late each send was against its schedule (tool or TCP back-pressure).
    pub lag: Shards,
    /// The first few error frames and unexpected closes, verbatim.
    pub samples: Mutex<Vec<String>>,
    /// Set once the run is over: closes are expected from then on.
    pub stopping: AtomicBool,
}

impl Shared {
    pub fn new(run: &str) -> Arc<Shared> {
        Arc::new(Shared {
            run: run.to_owned(),
            sent: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            duplicate_acks: AtomicU64::new(0),
            error_frames: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            first_send_us: AtomicU64::new(u64::MAX),
            last_send_us: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            last_ack_us: AtomicU64::new(0),
            min_ack_id: AtomicI64::new(i64::MAX),
            max_ack_id: AtomicI64::new(0),
            delivery: Shards::default(),
            ack: Shards::default(),
            lag: Shards::default(),
            samples: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        })
    }

    fn sample(&self, what: String) {
        let mut samples = self.samples.lock().expect("samples lock");
        if samples.len() < 10 {
            samples.push(what);
        }
    }

    /// Everything owed has arrived: every delivery and every ack.
    pub fn settled(&self) -> bool {
        self.delivered.load(Relaxed) >= self.expected.load(Relaxed)
            && self.acked.load(Relaxed) >= self.sent.load(Relaxed)
    }

    pub fn progress_line(&self) -> String {
        format!(
            "sent {} acked {} delivered {}/{}",
            self.sent.load(Relaxed),
            self.acked.load(Relaxed),
            self.delivered.load(Relaxed),
            self.expected.load(Relaxed)
        )
    }
}

/// Per-socket ack count a closed-loop writer waits on (`seed`).
#[derive(Default)]
pub struct SocketAcks {
    pub count: AtomicU64,
    pub notify: Notify,
}

/// A set of sequence numbers (one bit each).
#[derive(Default)]
struct SeqSet {
    words: Vec<u64>,
}

/// Sequence numbers above this are not ours (a bit set that size is 6 MB).
const MAX_SEQ: u32 = 50_000_000;

impl SeqSet {
    /// Adds `n`; true if it was not there yet.
    fn insert(&mut self, n: u32) -> bool {
        let word = (n / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (n % 64);
        let new = self.words[word] & bit == 0;
        self.words[word] |= bit;
        new
    }
}

/// The parts of a server frame the reader looks at, borrowed from the text.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    content: Option<&'a str>,
    #[serde(default)]
    client_id: Option<&'a str>,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    group_id: Option<i64>,
}

/// `RUN.SENDER.SEQ.SENT_US.…` → (run, sender, seq, sent_us).
fn parse_tag(content: &str) -> Option<(&str, u32, u32, u64)> {
    let mut parts = content.splitn(5, '.');
    let run = parts.next()?;
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((run, sender, seq, sent))
}

/// `RUN.SEQ.SENT_US` → (run, seq, sent_us).
fn parse_client_id(client_id: &str) -> Option<(&str, u32, u64)> {
    let mut parts = client_id.splitn(3, '.');
    let run = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((run, seq, sent))
}

/// What one socket has seen: per sender, which messages; per conversation,
/// the highest id; which of its own sends were acked.
struct ReaderState {
    me: usize,
    seen: HashMap<u32, SeqSet>,
    last_id: HashMap<i64, i64>,
    acks: SeqSet,
    own_acks: Option<Arc<SocketAcks>>,
}

impl ReaderState {
    fn on_text(&mut self, shared: &Shared, text: &str) {
        let frame: Incoming = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(_) => {
                shared.unreadable.fetch_add(1, Relaxed);
                shared.sample(format!(
                    "unreadable frame: {}",
                    text.chars().take(200).collect::<String>()
                ));
                return;
            }
        };
        match frame.kind {
            "message" => {
                let now = now_us();
                let tag = frame.content.and_then(parse_tag);
                let Some((run, sender, seq, sent)) = tag.filter(|t| t.0 == shared.run) else {
                    shared.foreign.fetch_add(1, Relaxed);
                    return;
                };
                let _ = run;
                if seq > MAX_SEQ {
                    shared.foreign.fetch_add(1, Relaxed);
                    return;
                }
                if !self.seen.entry(sender).or_default().insert(seq) {
                    shared.duplicates.fetch_add(1, Relaxed);
                    return;
                }
                shared.delivered.fetch_add(1, Relaxed);
                shared.last_delivery_us.fetch_max(now, Relaxed);
                shared.delivery.record(self.me, now.saturating_sub(sent));
                // Private conversations are keyed by the (negative) sender.
                let conversation = frame.group_id.unwrap_or(-(i64::from(sender)) - 1);
                if let Some(id) = frame.id {
                    let last = self.last_id.entry(conversation).or_insert(0);
                    if id <= *last {
                        shared.out_of_order.fetch_add(1, Relaxed);
                    } else {
                        *last = id;
                    }
                }
            }
            "ack" => {
                let now = now_us();
                let parsed = frame.client_id.and_then(parse_client_id);
                let Some((_, seq, sent)) = parsed.filter(|c| c.0 == shared.run && c.1 <= MAX_SEQ)
                else {
                    return;
                };
                if !self.acks.insert(seq) {
                    shared.duplicate_acks.fetch_add(1, Relaxed);
                    return;
                }
                shared.acked.fetch_add(1, Relaxed);
                shared.last_ack_us.fetch_max(now, Relaxed);
                shared.ack.record(self.me, now.saturating_sub(sent));
                if let Some(id) = frame.id {
                    shared.min_ack_id.fetch_min(id, Relaxed);
                    shared.max_ack_id.fetch_max(id, Relaxed);
                }
                if let Some(own) = &self.own_acks {
                    own.count.fetch_add(1, Relaxed);
                    own.notify.notify_one();
                }
            }
            "error" => {
                shared.error_frames.fetch_add(1, Relaxed);
                shared.sample(format!("error frame: {text}"));
            }
            // Presence, receipts, typing, synced: not counted.
            _ => {}
        }
    }
}

/// How long a socket keeps reading after the run ended, waiting for the
/// server's answer to its close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Spawns the task that reads socket `me` until the run stops (and then
/// until the close handshake ends, at most [`CLOSE_GRACE`]).
pub fn spawn_reader(
    shared: Arc<Shared>,
    me: usize,
    mut source: Source,
    mut stop: watch::Receiver<bool>,
    own_acks: Option<Arc<SocketAcks>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut state = ReaderState {
            me,
            seen: HashMap::new(),
            last_id: HashMap::new(),
            acks: SeqSet::default(),
            own_acks,
        };
        let mut deadline: Option<tokio::time::Instant> = None;
        // The early end of this socket was counted already (a close frame).
        let mut counted = false;
        loop {
            let next = match deadline {
                None => tokio::select! {
                    next = source.next() => next,
                    _ = stop.changed() => {
                        deadline = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                        continue;
                    }
                },
                Some(at) => match tokio::time::timeout_at(at, source.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                Some(Ok(Message::Text(text))) => state.on_text(&shared, text.as_str()),
                Some(Ok(Message::Close(reason))) => {
                    if !counted && !shared.stopping.load(Relaxed) {
                        counted = true;
                        shared.closed.fetch_add(1, Relaxed);
                        shared.sample(format!("socket {me} closed by the server: {reason:?}"));
                    }
                    // Keep polling so the close handshake completes.
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    if !counted && !shared.stopping.load(Relaxed) {
                        shared.closed.fetch_add(1, Relaxed);
                        shared.sample(format!("socket {me} failed: {error}"));
                    }
                    break;
                }
                None => {
                    if !counted && !shared.stopping.load(Relaxed) {
                        shared.closed.fetch_add(1, Relaxed);
                        shared.sample(format!("socket {me} ended"));
                    }
                    break;
                }
            }
        }
    })
}

/// 8 KiB of padding to slice message content from.
const PADDING: &str = match std::str::from_utf8(&[b'x'; 8192]) {
    Ok(s) => s,
    Err(_) => "",
};

/// Builds the send frames of one socket: everything but the numbers is
/// encoded once; each frame is one allocation.
pub struct Composer {
    /// `{"type":"message",<target>,"client_id":"`
    prefix: String,
    run: String,
    me: usize,
    content_bytes: usize,
}

impl Composer {
    pub fn private(run: &str, me: usize, recipient: &str, content_bytes: usize) -> Composer {
        Composer {
            prefix: format!(
                r#"{{"type":"message","recipient":{},"client_id":""#,
                Value::from(recipient)
            ),
            run: run.to_owned(),
            me,
            content_bytes,
        }
    }

    pub fn group(run: &str, me: usize, group_id: i64, content_bytes: usize) -> Composer {
        Composer {
            prefix: format!(r#"{{"type":"message","group_id":{group_id},"client_id":""#),
            run: run.to_owned(),
            me,
            content_bytes,
        }
    }

    /// The frame for message `seq`, sent at `sent_us`.
    pub fn frame(&self, seq: u32, sent_us: u64) -> String {
        let mut frame = String::with_capacity(self.prefix.len() + 96 + self.content_bytes);
        frame.push_str(&self.prefix);
        let run = &self.run;
        let _ = write!(frame, r#"{run}.{seq}.{sent_us}","content":""#);
        let tag_start = frame.len();
        let _ = write!(frame, "{run}.{}.{seq}.{sent_us}.", self.me);
        let tag_len = frame.len() - tag_start;
        let pad = self
            .content_bytes
            .saturating_sub(tag_len)
            .min(PADDING.len());
        frame.push_str(&PADDING[..pad]);
        frame.push_str("\"}");
        frame
    }
}

/// When a paced writer sends: message `k` is due at
/// `start + offset + k × interval`, for every due time before `end`.
#[derive(Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub end: Instant,
    pub offset: f64,
    pub interval: f64,
}

impl Schedule {
    fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(self.offset + k as f64 * self.interval)
    }
}

/// Most frames written in one go before flushing.
const MAX_BATCH: u32 = 512;

/// Sends on `schedule` (open loop: a slow server does not slow the
/// schedule; sends that fall behind go out as soon as possible, and how late
/// they were is recorded). Returns the sink for closing.
pub async fn paced_writer(
    shared: Arc<Shared>,
    me: usize,
    mut sink: Sink,
    composer: Composer,
    schedule: Schedule,
    recipients: u64,
) -> Sink {
    let mut k: u64 = 0;
    loop {
        let next = schedule.due(k);
        if next >= schedule.end {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        let sent_us = stats::us_at(now);
        let mut batch = 0u32;
        while batch < MAX_BATCH {
            let due = schedule.due(k);
            if due > now || due >= schedule.end {
                break;
            }
            shared
                .lag
                .record(me, now.saturating_duration_since(due).as_micros() as u64);
            let frame = composer.frame(k as u32, sent_us);
            shared.sent.fetch_add(1, Relaxed);
            shared.expected.fetch_add(recipients, Relaxed);
            if sink.feed(Message::Text(frame.into())).await.is_err() {
                shared.write_errors.fetch_add(1, Relaxed);
                return sink;
            }
            k += 1;
            batch += 1;
        }
        if batch > 0 {
            shared.first_send_us.fetch_min(sent_us, Relaxed);
            shared.last_send_us.fetch_max(sent_us, Relaxed);
        }
        if sink.flush().await.is_err() {
            shared.write_errors.fetch_add(1, Relaxed);
            return sink;
        }
    }
    sink
}

/// The outcome of opening many sockets.
pub struct Opened {
    pub opened: usize,
    pub failed: usize,
    /// Tokens refused at the handshake and renewed by logging in again.
    pub renewed: usize,
    pub elapsed: Duration,
    /// TCP connect + WebSocket handshake.
    pub latency: Histogram<u64>,
    pub first_error: Option<String>,
}

impl Opened {
    pub fn figures(&self) -> Vec<(&'static str, Value)> {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        vec![
            ("connected", json!(self.opened)),
            ("connect_failures", json!(self.failed)),
            ("tokens_renewed", json!(self.renewed)),
            ("connect_secs", json!((secs * 1000.0).round() / 1000.0)),
            (
                "connects_per_sec",
                json!((self.opened as f64 / secs * 10.0).round() / 10.0),
            ),
            ("connect_latency_ms", percentiles(&self.latency)),
        ]
    }
}

/// Opens a socket for each of `names` (`ctx.connect_concurrency` at a
/// time, source addresses numbered from `first_source`), handing each to
/// `on_open(index, socket)` as soon as it is open.
pub async fn open_all(
    ctx: &Ctx,
    accounts: &Accounts,
    names: &[String],
    tokens: &[String],
    first_source: usize,
    mut on_open: impl FnMut(usize, Ws),
) -> Opened {
    let bar = ctx.bar(names.len() as u64, "sockets");
    let started = Instant::now();
    let mut opened = Opened {
        opened: 0,
        failed: 0,
        renewed: 0,
        elapsed: Duration::ZERO,
        latency: stats::histogram(),
        first_error: None,
    };
    let mut attempts = stream::iter(names.iter().zip(tokens).enumerate())
        .map(|(i, (name, token))| async move {
            let began = Instant::now();
            let result = accounts.connect(ctx, first_source + i, name, token).await;
            (i, began.elapsed(), result)
        })
        .buffer_unordered(ctx.connect_concurrency.max(1));
    while let Some((i, took, result)) = attempts.next().await {
        match result {
            Ok((ws, renewed)) => {
                opened.opened += 1;
                opened.renewed += usize::from(renewed);
                opened
                    .latency
                    .saturating_record((took.as_micros() as u64).max(1));
                on_open(i, ws);
            }
            Err(error) => {
                opened.failed += 1;
                opened.first_error.get_or_insert_with(|| error.to_string());
            }
        }
        bar.inc(1);
    }
    opened.elapsed = started.elapsed();
    bar.finish_and_clear();
    if opened.renewed > 0 {
        if let Err(error) = accounts.save() {
            ctx.log(format!("could not save the accounts cache: {error}"));
        }
    }
    opened
}

/// Splits sockets into sinks and reader tasks.
pub struct Fleet {
    pub shared: Arc<Shared>,
    pub sinks: Vec<Option<Sink>>,
    pub readers: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    pub opened: Opened,
}

impl Fleet {
    /// Opens one socket per name and starts reading each at once. Fails if
    /// any socket could not be opened.
    pub async fn open(
        ctx: &Ctx,
        accounts: &Accounts,
        names: &[String],
        tokens: &[String],
        own_acks: Option<&[Arc<SocketAcks>]>,
    ) -> Result<Fleet, Failure> {
        let shared = Shared::new(&ctx.run_id);
        let (stop, stop_rx) = watch::channel(false);
        let mut sinks: Vec<Option<Sink>> = (0..names.len()).map(|_| None).collect();
        let mut readers = Vec::with_capacity(names.len());
        let opened = open_all(ctx, accounts, names, tokens, 0, |i, ws| {
            let (sink, source) = ws.split();
            sinks[i] = Some(sink);
            let acks = own_acks.map(|a| a[i].clone());
            readers.push(spawn_reader(
                shared.clone(),
                i,
                source,
                stop_rx.clone(),
                acks,
            ));
        })
        .await;
        let fleet = Fleet {
            shared,
            sinks,
            readers,
            stop,
            opened,
        };
        if fleet.opened.failed > 0 {
            let why = format!(
                "{} of {} sockets could not be opened; first error: {}",
                fleet.opened.failed,
                names.len(),
                fleet.opened.first_error.clone().unwrap_or_default()
            );
            fleet.close().await;
            return Err(why.into());
        }
        Ok(fleet)
    }

    pub fn take_sink(&mut self, i: usize) -> Sink {
        self.sinks[i].take().expect("sink taken once")
    }

    /// Ends the run: closes every socket and waits for the readers (bounded).
    pub async fn close(mut self) {
        self.shared.stopping.store(true, Relaxed);
        let _ = self.stop.send(true);
        let sinks: Vec<Sink> = self.sinks.iter_mut().filter_map(Option::take).collect();
        close_sinks(sinks).await;
        for reader in self.readers {
            let _ = reader.await;
        }
    }

    /// Puts back sinks a writer task returned, for [`Fleet::close`].
    pub fn put_sink(&mut self, i: usize, sink: Sink) {
        self.sinks[i] = Some(sink);
    }
}

/// Sends a close frame on every sink (at most a few seconds in all).
pub async fn close_sinks(sinks: Vec<Sink>) {
    let closes = stream::iter(sinks)
        .map(|mut sink| async move {
            let _ = tokio::time::timeout(Duration::from_secs(3), sink.close()).await;
        })
        .buffer_unordered(1024)
        .collect::<Vec<()>>();
    let _ = tokio::time::timeout(Duration::from_secs(10), closes).await;
}

/// Waits (at most `timeout`) until every delivery and ack owed has arrived;
/// returns how long it waited.
pub async fn drain(shared: &Shared, timeout: Duration, bar: &ProgressBar) -> Duration {
    let started = Instant::now();
    while !shared.settled() && started.elapsed() < timeout {
        bar.set_message(format!("draining: {}", shared.progress_line()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// Spawns a task that shows `shared`'s counts on `bar` until `done` is set.
pub fn show_progress(
    shared: Arc<Shared>,
    bar: ProgressBar,
    started: Instant,
    done: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while !done.load(Relaxed) {
            bar.set_position(started.elapsed().as_secs());
            bar.set_message(shared.progress_line());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn rate(count: u64, from_us: u64, to_us: u64) -> f64 {
    let secs = to_us.saturating_sub(from_us) as f64 / 1e6;
    if count == 0 || secs <= 0.0 {
        return 0.0;
    }
    (count as f64 / secs * 10.0).round() / 10.0
}

/// The delivery figures of a run, and its failures: anything lost,
/// doubled, unacked, refused, out of order or cut off.
pub fn message_figures(shared: &Shared, report: &mut Report, drain: Duration) {
    let get = |counter: &AtomicU64| counter.load(Relaxed);
    let sent = get(&shared.sent);
    let expected = get(&shared.expected);
    let delivered = get(&shared.delivered);
    let acked = get(&shared.acked);
    let first = get(&shared.first_send_us);
    let lost = expected.saturating_sub(delivered);
    let missing_acks = sent.saturating_sub(acked);
    report
        .figure("sent", sent)
        .figure("sent_per_sec", rate(sent, first, get(&shared.last_send_us)))
        .figure("deliveries_expected", expected)
        .figure("delivered", delivered)
        .figure(
            "delivered_per_sec",
            rate(delivered, first, get(&shared.last_delivery_us)),
        )
        .figure("acked", acked)
        .figure("acks_per_sec", rate(acked, first, get(&shared.last_ack_us)))
        .figure("lost", lost)
        .figure("duplicates", get(&shared.duplicates))
        .figure("missing_acks", missing_acks)
        .figure("duplicate_acks", get(&shared.duplicate_acks))
        .figure("out_of_order", get(&shared.out_of_order))
        .figure("error_frames", get(&shared.error_frames))
        .figure("sockets_closed", get(&shared.closed))
        .figure("write_errors", get(&shared.write_errors))
        .figure("foreign_messages", get(&shared.foreign))
        .figure("unreadable_frames", get(&shared.unreadable))
        .figure(
            "drain_secs",
            (drain.as_secs_f64() * 1000.0).round() / 1000.0,
        )
        .figure(
            "delivery_latency_ms",
            percentiles(&shared.delivery.merged()),
        )
        .figure("ack_latency_ms", percentiles(&shared.ack.merged()))
        .figure("send_lag_ms", percentiles(&shared.lag.merged()));
    report
        .fail_if(lost, "deliveries lost (sent but never received)")
        .fail_if(get(&shared.duplicates), "duplicate deliveries")
        .fail_if(missing_acks, "sends never acked")
        .fail_if(get(&shared.duplicate_acks), "duplicate acks")
        .fail_if(get(&shared.out_of_order), "deliveries out of id order")
        .fail_if(get(&shared.error_frames), "error frames")
        .fail_if(get(&shared.closed), "sockets closed early")
        .fail_if(get(&shared.write_errors), "write errors")
        .fail_if(get(&shared.unreadable), "unreadable frames");
    for sample in shared.samples.lock().expect("samples lock").iter() {
        report.note(sample.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_composed_frame_is_json_with_a_tag_the_reader_understands() {
        let composer = Composer::private("abcd1234", 7, "load_00008", 100);
        let frame = composer.frame(42, 123_456);
        let value: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["type"], "message");
        assert_eq!(value["recipient"], "load_00008");
        let content = value["content"].as_str().unwrap();
        assert_eq!(content.len(), 100);
        assert_eq!(parse_tag(content), Some(("abcd1234", 7, 42, 123_456)));
        assert_eq!(
            parse_client_id(value["client_id"].as_str().unwrap()),
            Some(("abcd1234", 42, 123_456))
        );
        let group = Composer::group("abcd1234", 1, 9, 10).frame(0, 1);
        let value: Value = serde_json::from_str(&group).unwrap();
        assert_eq!(value["group_id"], 9);
    }

    #[test]
    fn the_reader_counts_deliveries_duplicates_order_and_acks() {
        let shared = Shared::new("run1");
        let mut state = ReaderState {
            me: 0,
            seen: HashMap::new(),
            last_id: HashMap::new(),
            acks: SeqSet::default(),
            own_acks: None,
        };
        let message = |id: i64, seq: u32| {
            format!(
                r#"{{"type":"message","id":{id},"sender":"a","recipient":"b","content":"run1.3.{seq}.0.xx","timestamp":"t","status":"delivered"}}"#
            )
        };
        state.on_text(&shared, &message(10, 0));
        state.on_text(&shared, &message(11, 1));
        state.on_text(&shared, &message(11, 1));
        state.on_text(&shared, &message(9, 2));
        state.on_text(
            &shared,
            r#"{"type":"message","id":12,"sender":"x","recipient":"b","content":"hello","timestamp":"t"}"#,
        );
        state.on_text(
            &shared,
            r#"{"type":"ack","client_id":"run1.5.0","id":13,"timestamp":"t","status":"sent"}"#,
        );
        state.on_text(
            &shared,
            r#"{"type":"ack","client_id":"run1.5.0","id":13,"timestamp":"t","status":"sent"}"#,
        );
        state.on_text(&shared, r#"{"type":"status","user":"a","status":"online"}"#);
        state.on_text(
            &shared,
            r#"{"type":"error","detail":"no \"such\" user","code":404}"#,
        );
        assert_eq!(shared.delivered.load(Relaxed), 3);
        assert_eq!(shared.duplicates.load(Relaxed), 1);
        assert_eq!(shared.out_of_order.load(Relaxed), 1);
        assert_eq!(shared.foreign.load(Relaxed), 1);
        assert_eq!(shared.acked.load(Relaxed), 1);
        assert_eq!(shared.duplicate_acks.load(Relaxed), 1);
        assert_eq!(shared.error_frames.load(Relaxed), 1);
        assert_eq!(shared.unreadable.load(Relaxed), 0);
        assert_eq!(shared.max_ack_id.load(Relaxed), 13);
    }
}

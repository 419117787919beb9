//! Prometheus metrics of the chat core, in one registry that the HTTP layer
//! extends with its own and serves at `/metrics`. Actors and sessions update
//! them as things happen; nothing here is read on a hot path.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

/// Which kind of message a figure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Private,
    Group,
}

impl MessageKind {
    const ALL: [MessageKind; 2] = [MessageKind::Private, MessageKind::Group];

    pub fn label(self) -> &'static str {
        match self {
            MessageKind::Private => "private",
            MessageKind::Group => "group",
        }
    }
}

/// One series per [`MessageKind`], resolved once: a labelled lookup hashes
/// the label and takes a lock, too dear for every delivered frame.
struct ByKind<T>([T; 2]);

impl<T> ByKind<T> {
    fn new(series: impl Fn(&str) -> T) -> Self {
        ByKind(MessageKind::ALL.map(|kind| series(kind.label())))
    }

    fn get(&self, kind: MessageKind) -> &T {
        &self.0[kind as usize]
    }
}

/// Why a request or frame was refused before doing any work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    RateLimit,
    Oversize,
    Auth,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Rejection::RateLimit => "rate_limit",
            Rejection::Oversize => "oversize",
            Rejection::Auth => "auth",
        }
    }

    /// The rejection an error status stands for, if any.
    pub fn for_status(status: u16) -> Option<Rejection> {
        match status {
            429 => Some(Rejection::RateLimit),
            413 => Some(Rejection::Oversize),
            401 => Some(Rejection::Auth),
            _ => None,
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub open_sockets: IntGauge,
    pub users_online: IntGauge,
    pub rooms_running: IntGauge,
    messages_accepted: ByKind<IntCounter>,
    messages_delivered: ByKind<IntCounter>,
    delivery_latency: ByKind<Histogram>,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    /// Writes waiting in the persistence actor for their transaction.
    pub persistence_queue: IntGauge,
    rejected: IntCounterVec,
    /// History pages answered from memory, and read from the database.
    pub history_pages_cached: IntCounter,
    pub history_pages_stored: IntCounter,
    /// Bytes the recent-history cache holds.
    pub history_cache_bytes: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("parley".to_owned()), None).expect("a valid metrics prefix");
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("a valid gauge");
            registry
                .register(Box::new(gauge.clone()))
                .expect("a unique metric");
            gauge
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter =
                IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
            registry
                .register(Box::new(counter.clone()))
                .expect("a unique metric");
            counter
        };
        // 100 µs .. ~6.5 s, doubling.
        let latency_buckets = exponential_buckets(0.0001, 2.0, 17).expect("valid buckets");
        let delivery_latency = HistogramVec::new(
            HistogramOpts::new(
                "delivery_latency_seconds",
                "From accepting a message to writing it to a recipient's socket",
            )
            .buckets(latency_buckets.clone()),
            &["kind"],
        )
        .expect("a valid histogram");
        registry
            .register(Box::new(delivery_latency.clone()))
            .expect("a unique metric");
        let per_kind =
            |counter: IntCounterVec| ByKind::new(|kind| counter.with_label_values(&[kind]));
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("a valid histogram");
            registry
                .register(Box::new(histogram.clone()))
                .expect("a unique metric");
            histogram
        };
        let history_pages = counter(
            "history_pages_total",
            "History pages read, by where they came from",
            &["source"],
        );
        Metrics {
            open_sockets: gauge("open_sockets", "WebSocket connections open now"),
            users_online: gauge("users_online", "Users with at least one socket open"),
            rooms_running: gauge("rooms_running", "Group rooms in memory now"),
            history_pages_cached: history_pages.with_label_values(&["memory"]),
            history_pages_stored: history_pages.with_label_values(&["database"]),
            history_cache_bytes: gauge(
                "history_cache_bytes",
                "Bytes the recent-history cache holds",
            ),
            messages_accepted: per_kind(counter(
                "messages_accepted_total",
                "Messages committed to the database",
                &["kind"],
            )),
            messages_delivered: per_kind(counter(
                "messages_delivered_total",
                "Message frames written to sockets",
                &["kind"],
            )),
            delivery_latency: ByKind::new(|kind| delivery_latency.with_label_values(&[kind])),
            batch_size: histogram(
                "persistence_batch_size",
                "Writes committed per transaction",
                exponential_buckets(1.0, 2.0, 12).expect("valid buckets"),
            ),
            commit_seconds: histogram(
                "persistence_commit_seconds",
                "Time to apply and commit one batch",
                latency_buckets,
            ),
            persistence_queue: gauge(
                "persistence_queue_depth",
                "Writes waiting in the persistence actor for a transaction",
            ),
            rejected: counter(
                "rejected_total",
                "Requests and frames refused, by reason",
                &["reason"],
            ),
            registry,
        }
    }

    pub fn accepted(&self, kind: MessageKind) {
        self.messages_accepted.get(kind).inc();
    }

    pub fn delivered(&self, kind: MessageKind, latency: std::time::Duration) {
        self.messages_delivered.get(kind).inc();
        self.delivery_latency
            .get(kind)
            .observe(latency.as_secs_f64());
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejected.with_label_values(&[reason.label()]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

//! `parley-load`: drives a running Parley server through its real protocol
//! (REST for accounts and history, `/ws/chat` for messages) and measures it.
//! Subcommands: `smoke`, `idle`, `pairs`, `fanout`, `broadcast`, `seed`,
//! `history`, `changes` and `login` (see `load-tests/README.md`), and
//! `hash-cost`, which needs no server. Every run prints a
//! summary (and with `--json` one JSON line on stdout), checks that nothing
//! was lost or doubled, and exits non-zero if anything was.

mod accounts;
mod api;
mod ctx;
mod net;
mod report;
mod scenarios;
mod stats;
mod summary;
mod traffic;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::ctx::Ctx;
use crate::net::Target;
use crate::scenarios::Traffic;

pub type Failure = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(
    name = "parley-load",
    about = "Load and smoke tests for a Parley server (loopback only)"
)]
struct Cli {
    /// Base URL of the server; its host must be a loopback address. Several
    /// nodes of one cluster: a comma-separated list (sockets are spread over
    /// them round-robin).
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// Print one JSON line with every figure on stdout (the summary goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars or log lines.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// The server's process id: report its CPU time and memory. Several
    /// nodes: a comma-separated list (CPU and memory are summed over them).
    #[arg(long, global = true)]
    server_pid: Option<String>,
    /// The username → token cache [default: target/parley-load/accounts-<port>.json].
    #[arg(long, global = true)]
    accounts: Option<PathBuf>,
    /// Where `seed` records what it stored for `history`, and reusable groups
    /// [default: target/parley-load/state-<port>.json].
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Seconds to wait for outstanding deliveries and acks after the send phase.
    #[arg(long, default_value_t = 10.0, global = true)]
    drain_timeout: f64,
    /// Registrations/logins in flight at once while preparing accounts.
    #[arg(long, default_value_t = 16, global = true)]
    auth_concurrency: usize,
    /// WebSocket handshakes in flight at once.
    #[arg(long, default_value_t = 64, global = true)]
    connect_concurrency: usize,
    /// Prefix of the load users' names (`<prefix>00042`).
    #[arg(long, default_value = "load_", global = true)]
    user_prefix: String,
    /// Runtime worker threads [default: the CPUs this process may run on].
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Args, Clone)]
struct TrafficArgs {
    /// Messages per second, all senders together (an open-loop schedule).
    #[arg(long)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes of content per message.
    #[arg(long, default_value_t = 64)]
    content_bytes: usize,
}

#[derive(Subcommand)]
enum Scenario {
    /// Register two users, open a socket for each, and bounce messages between them.
    Smoke {
        /// Round trips to make (each is one message there and one back).
        #[arg(long, default_value_t = 10)]
        round_trips: u32,
        /// Give up if a reply takes longer than this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Register/log in users 0..N and cache their tokens (no measurement).
    Prepare {
        #[arg(long)]
        users: usize,
        /// The users exist already (made outside this tool): only log in.
        #[arg(long)]
        existing: bool,
    },
    /// Open and hold N authenticated sockets; connect rate and server memory per socket.
    Idle {
        #[arg(long)]
        conns: usize,
        /// Seconds to hold them open.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// The first load user (users FROM..FROM+conns hold the sockets).
        #[arg(long, default_value_t = 0)]
        users_from: usize,
        /// Hold the sockets from this many processes (this one and P−1
        /// children), for more sockets than one process's open-file limit.
        #[arg(long, default_value_t = 1)]
        procs: usize,
        /// Run as one of those children (internal).
        #[arg(long, hide = true)]
        child: bool,
    },
    /// P pairs of users sending private messages to each other at a total rate.
    Pairs {
        #[arg(long)]
        pairs: usize,
        /// The run counts as `sustained` if nothing was lost, at least 95% of
        /// the rate was delivered, and delivery p99 stayed at or below this.
        #[arg(long, default_value_t = 250.0)]
        slo_p99_ms: f64,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// K groups of M members, every member posting; deliveries to all other members.
    Fanout {
        #[arg(long)]
        groups: usize,
        #[arg(long)]
        members: usize,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// One group of N members; time from one post until the last member has it.
    Broadcast {
        #[arg(long)]
        members: usize,
        /// Posts to time, one at a time.
        #[arg(long, default_value_t = 5)]
        repeats: u32,
        #[arg(long, default_value_t = 64)]
        content_bytes: usize,
    },
    /// Fill the database with messages through pipelined socket sends.
    Seed {
        #[arg(long)]
        messages: u64,
        /// Sender sockets (each seeds one private conversation and one group).
        #[arg(long, default_value_t = 8)]
        senders: usize,
        /// Unacked messages each sender keeps in flight.
        #[arg(long, default_value_t = 256)]
        window: u64,
        #[arg(long, default_value_t = 100)]
        content_bytes: usize,
    },
    /// Paged history reads over REST from what `seed` stored.
    History {
        #[arg(long)]
        requests: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Stop after this many seconds even if requests remain.
        #[arg(long, default_value_t = 300)]
        max_duration: u64,
        /// Read the newest page of each conversation (no `before` cursor)
        /// instead of pages below random cursors.
        #[arg(long)]
        newest: bool,
    },
    /// What edits, reactions and searches cost: pairs exchange messages,
    /// then each operation runs `requests` times with C in flight.
    Changes {
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Messages each pair exchanges first (the ones edited and reacted to).
        #[arg(long, default_value_t = 20)]
        messages: usize,
        /// Requests of each operation.
        #[arg(long, default_value_t = 5000)]
        requests: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Stop each operation after this many seconds even if requests remain.
        #[arg(long, default_value_t = 120)]
        max_duration: u64,
    },
    /// Logins per second of existing users (run it beside `pairs`).
    Login {
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// How many different users log in (round robin).
        #[arg(long, default_value_t = 32)]
        users: usize,
        /// Logins waiting for an answer at once; beyond it a due login is skipped.
        #[arg(long, default_value_t = 256)]
        max_in_flight: usize,
    },
    /// What one password hash costs here: the server's argon2id, N times on
    /// one thread, by CPU and wall time (no server needed).
    HashCost {
        #[arg(long, default_value_t = 50)]
        iterations: u32,
    },
    /// Write RESULTS.md from the JSON lines run.sh collected (no server needed).
    Summarize {
        /// One `{"label","command","exit","result"}` object a line.
        #[arg(long)]
        input: PathBuf,
        /// Markdown to put under the title (machine, date, commit).
        #[arg(long)]
        header: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Put the targets table for this backend at the top.
        #[arg(long, value_enum)]
        targets: Option<summary::Backend>,
        /// The runs were a smoke run's: say so above the targets table.
        #[arg(long)]
        smoke: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("parley-load: cannot start the runtime: {error}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(run(cli));
    // Don't wait for stray tasks (sockets mid-close) at shutdown.
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

fn secs(value: f64, flag: &str) -> Result<Duration, String> {
    if (0.0..=86_400.0).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("{flag} must be between 0 and 86400 seconds"))
    }
}

async fn run(cli: Cli) -> i32 {
    if let Scenario::Summarize {
        input,
        header,
        out,
        targets,
        smoke,
    } = &cli.scenario
    {
        let options = summary::Options {
            header: header.as_deref(),
            targets: *targets,
            smoke: *smoke,
        };
        return match summary::summarize(input, out, &options) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("parley-load: {error}");
                2
            }
        };
    }
    if let Scenario::HashCost { iterations } = &cli.scenario {
        return finish(scenarios::hash_cost::run(*iterations), cli.json);
    }
    let ctx = match context(&cli) {
        Ok(ctx) => ctx,
        Err(error) => {
            eprintln!("parley-load: {error}");
            return 2;
        }
    };
    let traffic = |args: &TrafficArgs| -> Result<Traffic, Failure> {
        if !(args.rate > 0.0 && args.rate.is_finite()) {
            return Err("--rate must be a positive number".into());
        }
        Ok(Traffic {
            rate: args.rate,
            duration: secs(args.duration, "--duration")?,
            content_bytes: args.content_bytes,
            drain_timeout: ctx.drain_timeout,
        })
    };
    let outcome = match &cli.scenario {
        Scenario::Smoke {
            round_trips,
            timeout_secs,
        } => scenarios::smoke::run(&ctx, *round_trips, Duration::from_secs(*timeout_secs)).await,
        Scenario::Prepare { users, existing } => scenarios::prepare(&ctx, *users, *existing).await,
        Scenario::Idle {
            conns,
            hold,
            users_from,
            procs,
            child,
        } => {
            let plan = scenarios::idle::Plan {
                conns: *conns,
                hold: Duration::from_secs(*hold),
                users_from: *users_from,
                procs: *procs,
            };
            if *child {
                return scenarios::idle::child(&ctx, &plan).await;
            }
            scenarios::idle::run(&ctx, &plan).await
        }
        Scenario::Pairs {
            pairs,
            slo_p99_ms,
            traffic: t,
        } => match traffic(t) {
            Ok(t) => scenarios::pairs::run(&ctx, *pairs, *slo_p99_ms, &t).await,
            Err(e) => Err(e),
        },
        Scenario::Fanout {
            groups,
            members,
            traffic: t,
        } => match traffic(t) {
            Ok(t) => scenarios::fanout::run(&ctx, *groups, *members, &t).await,
            Err(e) => Err(e),
        },
        Scenario::Broadcast {
            members,
            repeats,
            content_bytes,
        } => scenarios::broadcast::run(&ctx, *members, *repeats, *content_bytes).await,
        Scenario::Seed {
            messages,
            senders,
            window,
            content_bytes,
        } => scenarios::seed::run(&ctx, *messages, *senders, *window, *content_bytes).await,
        Scenario::History {
            requests,
            concurrency,
            max_duration,
            newest,
        } => {
            let pages = if *newest {
                scenarios::history::Pages::Newest
            } else {
                scenarios::history::Pages::Random
            };
            scenarios::history::run(
                &ctx,
                *requests,
                *concurrency,
                Duration::from_secs(*max_duration),
                pages,
            )
            .await
        }
        Scenario::Changes {
            pairs,
            messages,
            requests,
            concurrency,
            max_duration,
        } => {
            scenarios::changes::run(
                &ctx,
                *pairs,
                *messages,
                *requests,
                *concurrency,
                Duration::from_secs(*max_duration),
            )
            .await
        }
        Scenario::Login {
            rate,
            duration,
            users,
            max_in_flight,
        } => match secs(*duration, "--duration") {
            Ok(d) => scenarios::login::run(&ctx, *rate, d, *users, *max_in_flight).await,
            Err(e) => Err(e.into()),
        },
        Scenario::HashCost { .. } | Scenario::Summarize { .. } => unreachable!("handled above"),
    };
    let outcome = outcome.map(|mut report| {
        if ctx.nodes() > 1 {
            report.param("nodes", ctx.nodes());
        }
        report
    });
    finish(outcome, ctx.json)
}

/// Prints the report (and with `--json` its JSON line on stdout); the exit code.
fn finish(outcome: Result<report::Report, Failure>, json: bool) -> i32 {
    match outcome {
        Ok(report) => {
            if json {
                eprint!("{}", report.human());
                println!("{}", report.json_line());
            } else {
                print!("{}", report.human());
            }
            if report.ok() {
                0
            } else {
                1
            }
        }
        Err(error) => {
            eprintln!("parley-load: {error}");
            2
        }
    }
}

/// `--server-pid 12,34`: the process ids, in any number (none without the flag).
fn pids(list: Option<&str>) -> Result<Vec<u32>, Failure> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(|pid| {
            pid.trim()
                .parse::<u32>()
                .map_err(|_| format!("--server-pid {list:?}: {pid:?} is not a process id").into())
        })
        .collect()
}

fn context(cli: &Cli) -> Result<Ctx, Failure> {
    let targets = Target::parse_list(&cli.url)?;
    let target = targets[0].clone();
    let cache = ctx::default_cache_dir();
    let port = target.port();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()?;
    Ok(Ctx {
        http,
        quiet: cli.quiet,
        json: cli.json,
        server_pids: pids(cli.server_pid.as_deref())?,
        accounts_path: cli
            .accounts
            .clone()
            .unwrap_or_else(|| cache.join(format!("accounts-{port}.json"))),
        state_path: cli
            .state
            .clone()
            .unwrap_or_else(|| cache.join(format!("state-{port}.json"))),
        run_id: ctx::new_run_id(),
        auth_concurrency: cli.auth_concurrency,
        connect_concurrency: cli.connect_concurrency,
        drain_timeout: secs(cli.drain_timeout, "--drain-timeout")?,
        user_prefix: cli.user_prefix.clone(),
        target,
        targets,
        rest_turn: Default::default(),
        threads: cli.threads,
    })
}

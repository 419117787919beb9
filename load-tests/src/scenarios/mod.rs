//! One module per subcommand. Each prepares its users (from the accounts
//! cache), measures, and returns a [`crate::report::Report`].

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::accounts::Accounts;
use crate::ctx::Ctx;
use crate::report::Report;
use crate::Failure;

pub mod broadcast;
pub mod changes;
pub mod fanout;
pub mod hash_cost;
pub mod history;
pub mod idle;
pub mod login;
pub mod pairs;
pub mod seed;
pub mod smoke;

/// The shape of a paced messaging run (`pairs`, `fanout`).
pub struct Traffic {
    /// Messages per second, all senders together.
    pub rate: f64,
    /// How long the send phase lasts.
    pub duration: Duration,
    /// Bytes of content per message (tag and padding).
    pub content_bytes: usize,
    pub drain_timeout: Duration,
}

/// What runs leave for later runs against the same server (beside the
/// accounts cache): the broadcast group, and what `seed` stored.
#[derive(Default, Serialize, Deserialize)]
pub struct State {
    /// `"<owner>x<members>"` → group id.
    #[serde(default)]
    pub broadcast_groups: HashMap<String, i64>,
    #[serde(default)]
    pub seed: Option<seed::SeedInfo>,
}

/// `prepare`: makes sure users 0..N exist and have cached tokens, so a
/// later run (e.g. `idle` against a freshly restarted server) measures no
/// argon2 work.
pub async fn prepare(ctx: &Ctx, users: usize, existing: bool) -> Result<Report, Failure> {
    let started = std::time::Instant::now();
    let mut accounts = Accounts::load(ctx);
    accounts.users_exist = existing;
    let names = ctx.users(0..users);
    accounts.ensure(ctx, &names).await?;
    let mut report = Report::new("prepare");
    report
        .param("users", users)
        .figure(
            "secs",
            (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        )
        .figure("accounts_file", ctx.accounts_path.display().to_string());
    Ok(report)
}

//! `hash-cost`: what one password hash costs on this machine. Runs the
//! server's own argon2id (`parley::auth::password::argon2`, the exact
//! parameters) N times on one thread of this process, timing each hash by
//! that thread's CPU clock and by the wall clock, the way the server times
//! the hash it measures at start-up to size its hashing queue. No server is
//! needed.

use std::time::Duration;

use parley::auth::password::{self, HashTiming};
use serde_json::{json, Value};

use crate::report::Report;
use crate::Failure;

pub fn run(iterations: u32) -> Result<Report, Failure> {
    if iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    let measured = std::thread::Builder::new()
        .name("hash-cost".into())
        .spawn(move || {
            // The first hash also pays for the heap growing to 19 MiB;
            // it is reported on its own, not in the spread.
            let first = password::time_one_hash();
            let timings: Vec<HashTiming> =
                (0..iterations).map(|_| password::time_one_hash()).collect();
            (first, timings)
        })?
        .join()
        .map_err(|_| "the hashing thread panicked")?;
    let (first, timings) = measured;

    let cpu: Option<Vec<Duration>> = timings.iter().map(|t| t.cpu).collect();
    let wall: Vec<Duration> = timings.iter().map(|t| t.wall).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut report = Report::new("hash-cost");
    report
        .param("iterations", iterations)
        .param("argon2", "argon2id m=19456 KiB, t=2, p=1 (the server's)");
    match &cpu {
        Some(cpu) => {
            let cpu = spread(cpu);
            let median = cpu["median"].as_f64().unwrap_or(0.0);
            report
                .figure("cpu_ms", cpu)
                .figure("wall_ms", spread(&wall))
                .figure("first_cpu_ms", ms(first.cost()))
                .figure("first_wall_ms", ms(first.wall))
                .figure("threads", threads)
                .figure(
                    "cap_at_median",
                    password::cap_for(threads, Duration::from_secs_f64(median / 1000.0)),
                );
        }
        None => {
            report
                .figure("wall_ms", spread(&wall))
                .figure("first_wall_ms", ms(first.wall))
                .note("this platform gives no per-thread CPU clock; wall time only");
        }
    }
    report.note(format!(
        "a server with {threads} hashing thread(s) admits threads × {} s ÷ the cost of one hash \
         at once (cap_at_median: at the median CPU cost)",
        password::QUEUE_BUDGET.as_secs_f64()
    ));
    Ok(report)
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e5).round() / 100.0
}

/// `{min, median, p90, max}` in milliseconds (nearest rank).
fn spread(samples: &[Duration]) -> Value {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |q: f64| {
        let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        ms(sorted[index])
    };
    json!({
        "count": sorted.len(),
        "min": ms(sorted[0]),
        "median": rank(0.5),
        "p90": rank(0.9),
        "max": ms(sorted[sorted.len() - 1]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_by_nearest_rank_in_milliseconds() {
        let samples: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        let s = spread(&samples);
        assert_eq!(s["count"], 10);
        assert_eq!(s["min"], 1.0);
        assert_eq!(s["median"], 5.0);
        assert_eq!(s["p90"], 9.0);
        assert_eq!(s["max"], 10.0);
        let one = spread(&[Duration::from_micros(15_250)]);
        assert_eq!(one["median"], 15.25);
        assert_eq!(one["p90"], 15.25);
    }
}

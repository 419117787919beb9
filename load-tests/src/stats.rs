//! Measuring: latency histograms (microseconds, shared between socket tasks
//! in lock shards), the process clock every timestamp is taken on, and CPU
//! and memory readings of this process and of the server (`/proc/PID`).

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// The instant every timestamp in message content counts from. One process
/// sends and receives, so send and receive times share this clock.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// Microseconds since [`epoch`] at `instant`.
pub fn us_at(instant: Instant) -> u64 {
    instant.saturating_duration_since(epoch()).as_micros() as u64
}

/// An empty latency histogram: 1 µs to one hour, three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A latency histogram many tasks record into: a few shards, each behind its
/// own lock, picked by the caller's index, so tasks rarely wait on each other.
pub struct Shards {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Shards {
    fn default() -> Self {
        Shards {
            shards: (0..32).map(|_| Mutex::new(histogram())).collect(),
        }
    }
}

impl Shards {
    pub fn record(&self, shard: usize, micros: u64) {
        let shard = &self.shards[shard % self.shards.len()];
        shard
            .lock()
            .expect("histogram lock")
            .saturating_record(micros.max(1));
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            all.add(&*shard.lock().expect("histogram lock"))
                .expect("same histogram bounds");
        }
        all
    }
}

fn ms(micros: f64) -> f64 {
    (micros / 10.0).round() / 100.0
}

/// Percentiles in milliseconds: `{count, min, mean, p50, p90, p99, p999, max}`.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "min": ms(h.min() as f64),
        "mean": ms(h.mean()),
        "p50": ms(h.value_at_quantile(0.50) as f64),
        "p90": ms(h.value_at_quantile(0.90) as f64),
        "p99": ms(h.value_at_quantile(0.99) as f64),
        "p999": ms(h.value_at_quantile(0.999) as f64),
        "max": ms(h.max() as f64),
    })
}

/// CPU seconds (user + system) this process has used.
pub fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds (utime + stime) of another process, from `/proc/PID/stat`.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it don't.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) / ticks)
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/PID/status`).
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Resident memory of several processes summed, in KiB; `None` if there
/// are none or one cannot be read.
pub fn processes_rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| process_rss_kib(pid)).sum()
}

/// CPU seconds of several processes summed; `None` if there are none or
/// one cannot be read.
pub fn processes_cpu_secs(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| process_cpu_secs(pid)).sum()
}

/// CPU use over a measured window, of this tool and (if known) the server
/// (every node's process, summed).
pub struct CpuWindow {
    started: Instant,
    own: f64,
    server_pids: Vec<u32>,
    server: Option<f64>,
}

impl CpuWindow {
    pub fn start(server_pids: &[u32]) -> Self {
        CpuWindow {
            started: Instant::now(),
            own: own_cpu_secs(),
            server_pids: server_pids.to_vec(),
            server: processes_cpu_secs(server_pids),
        }
    }

    /// `(key, value)` figures: the window, CPU seconds and the share of one
    /// core each process used during it.
    pub fn finish(&self) -> Vec<(&'static str, Value)> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let own = own_cpu_secs() - self.own;
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let mut figures = vec![
            ("window_secs", json!(round(wall))),
            ("tool_cpu_secs", json!(round(own))),
            ("tool_cpu_cores", json!(round(own / wall))),
        ];
        let server = processes_cpu_secs(&self.server_pids)
            .zip(self.server)
            .map(|(now, then)| now - then);
        if let Some(server) = server {
            figures.push(("server_cpu_secs", json!(round(server))));
            figures.push(("server_cpu_cores", json!(round(server / wall))));
        }
        figures
    }
}

/// A small, fast, seedable random generator (xorshift64*) for picking
/// cursors and targets; no cryptographic use.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_reported_in_milliseconds() {
        let mut h = histogram();
        for micros in 1..=1000u64 {
            h.record(micros * 1000).unwrap();
        }
        let p = percentiles(&h);
        assert_eq!(p["count"], 1000);
        assert!((p["p50"].as_f64().unwrap() - 500.0).abs() < 1.0);
        assert!((p["max"].as_f64().unwrap() - 1000.0).abs() < 1.0);
    }

    #[test]
    fn own_cpu_time_and_memory_can_be_read() {
        assert!(own_cpu_secs() >= 0.0);
        let me = std::process::id();
        assert!(process_cpu_secs(me).is_some());
        assert!(process_rss_kib(me).unwrap() > 0);
        let one = process_rss_kib(me).unwrap();
        assert!(processes_rss_kib(&[me, me]).unwrap() >= one);
        assert!(processes_rss_kib(&[]).is_none());
        assert!(processes_cpu_secs(&[me, me]).is_some());
    }

    #[test]
    fn rng_stays_below_its_bound() {
        let mut rng = Rng::new(7);
        assert!((0..1000).all(|_| rng.below(10) < 10));
    }
}

//! How many password hashes a second fit in the CPU the rest of the server
//! leaves over. [`super::password::Hashing`] asks [`SpareCpuGate::take`] on
//! each admission; nothing else talks to it.
//!
//! The hashing threads run at idle priority, so the scheduler already gives
//! sockets the CPU first. That is not enough when the sockets use nearly all
//! of it: a hash then runs in the gaps (while the writer waits for the disk),
//! evicts the caches with its 19 MiB, and every socket thread pays for it
//! afterwards. So hashes are also admitted at a rate: what the CPU beyond
//! [`SOCKET_RESERVE`] of the server's cores, less what everything but
//! hashing used over the last [`SAMPLE`], can hash at the measured cost, and
//! never under [`MIN_RATE`], so a login still gets through on a server busy
//! for hours.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::password::QUEUE_BUDGET;

/// The share of the server's cores kept for everything but hashing.
pub const SOCKET_RESERVE: f64 = 0.25;

/// Hashes admitted per second however busy the rest of the server is
/// (at ~15 ms each, under 2% of a core).
pub const MIN_RATE: f64 = 1.0;

/// How long the CPU use is averaged over before the rate follows it.
pub const SAMPLE: Duration = Duration::from_millis(250);

/// CPU time used up to `at` by the whole process and by its hashing threads.
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    pub at: Instant,
    pub process: Duration,
    pub hashing: Duration,
}

/// Hashes a second that fit beside `others` cores of other work on `cores`
/// cores, at `cost` of CPU per hash.
pub fn rate_for(cores: f64, others: f64, cost: Duration) -> f64 {
    let spare = (cores * (1.0 - SOCKET_RESERVE) - others).max(0.0);
    (spare / cost.as_secs_f64().max(1e-6)).max(MIN_RATE)
}

/// Hashes admitted at once after a quiet spell: one [`QUEUE_BUDGET`] at the
/// rate, at least one.
fn burst(rate: f64) -> f64 {
    (rate * QUEUE_BUDGET.as_secs_f64()).max(1.0)
}

/// A token bucket whose rate follows the spare CPU, fed readings by its
/// owner (so that tests can feed their own).
#[derive(Debug)]
pub struct SpareCpu {
    cores: f64,
    cost: Duration,
    /// The reading the current rate was set from.
    last: CpuUse,
    /// Hashes a second admitted now.
    rate: f64,
    tokens: f64,
    /// Up to when `tokens` has been refilled.
    refilled: Instant,
}

impl SpareCpu {
    /// Starts as if nothing else ran: the full rate, with a full burst.
    pub fn new(cores: usize, cost: Duration, now: CpuUse) -> SpareCpu {
        let cores = cores.max(1) as f64;
        let rate = rate_for(cores, 0.0, cost);
        SpareCpu {
            cores,
            cost,
            last: now,
            rate,
            tokens: burst(rate),
            refilled: now.at,
        }
    }

    /// Whether a reading taken at `at` would start a new sample.
    pub fn wants_reading(&self, at: Instant) -> bool {
        at.saturating_duration_since(self.last.at) >= SAMPLE
    }

    /// Sets the rate from the CPU used since the last reading.
    pub fn observe(&mut self, now: CpuUse) {
        let wall = now.at.saturating_duration_since(self.last.at);
        if wall.is_zero() {
            return;
        }
        let process = now.process.saturating_sub(self.last.process);
        let hashing = now.hashing.saturating_sub(self.last.hashing);
        let others = process.saturating_sub(hashing).as_secs_f64() / wall.as_secs_f64();
        self.refill(now.at);
        self.rate = rate_for(self.cores, others, self.cost);
        self.tokens = self.tokens.min(burst(self.rate));
        self.last = now;
    }

    /// Takes one hash's token, or says how long until the next one.
    pub fn take(&mut self, at: Instant) -> Result<(), Duration> {
        self.refill(at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Returns a token taken for a hash that was not admitted after all.
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(burst(self.rate));
    }

    fn refill(&mut self, at: Instant) {
        let elapsed = at.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(burst(self.rate));
        self.refilled = self.refilled.max(at);
    }
}

/// The bucket, fed from the process's and the hashing threads' CPU clocks.
pub struct SpareCpuGate {
    hashing_threads: Vec<CpuClock>,
    bucket: Mutex<SpareCpu>,
}

impl SpareCpuGate {
    /// A gate over `hashing_threads`, on `cores` cores at `cost` per hash;
    /// `None` where the platform has no per-thread CPU clocks.
    pub fn new(hashing_threads: Vec<CpuClock>, cores: usize, cost: Duration) -> Option<Self> {
        let now = read(Instant::now(), &hashing_threads)?;
        Some(SpareCpuGate {
            hashing_threads,
            bucket: Mutex::new(SpareCpu::new(cores, cost, now)),
        })
    }

    /// Takes a token for one hash, reading the clocks when a sample is
    /// due; or says how long until the next token.
    pub fn take(&self) -> Result<(), Duration> {
        let mut bucket = self.bucket();
        let at = Instant::now();
        if bucket.wants_reading(at) {
            if let Some(now) = read(at, &self.hashing_threads) {
                bucket.observe(now);
            }
        }
        bucket.take(at)
    }

    pub fn give_back(&self) {
        self.bucket().give_back();
    }

    /// The bucket; a panic while it was held left it whole (no update
    /// spans two statements that could panic), so a poisoned lock is used as is.
    fn bucket(&self) -> std::sync::MutexGuard<'_, SpareCpu> {
        self.bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The CPU clocks, read at `at`.
fn read(at: Instant, hashing_threads: &[CpuClock]) -> Option<CpuUse> {
    let process = CpuClock::process()?.elapsed()?;
    let hashing = hashing_threads
        .iter()
        .map(|clock| clock.elapsed())
        .sum::<Option<Duration>>()?;
    Some(CpuUse {
        at,
        process,
        hashing,
    })
}

/// A CPU-time clock: of the whole process, or of one thread (readable from
/// any thread).
#[derive(Clone, Copy, Debug)]
pub struct CpuClock(#[cfg(target_os = "linux")] libc::clockid_t);

impl CpuClock {
    /// The whole process's CPU clock.
    pub fn process() -> Option<CpuClock> {
        #[cfg(target_os = "linux")]
        {
            Some(CpuClock(libc::CLOCK_PROCESS_CPUTIME_ID))
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// The calling thread's CPU clock.
    pub fn this_thread() -> Option<CpuClock> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: pthread_self has no preconditions.
            CpuClock::of_pthread(unsafe { libc::pthread_self() })
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// A thread's CPU clock, readable from any thread while that thread runs.
    pub fn of_thread<T>(thread: &std::thread::JoinHandle<T>) -> Option<CpuClock> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::thread::JoinHandleExt;
            CpuClock::of_pthread(thread.as_pthread_t())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = thread;
            None
        }
    }

    #[cfg(target_os = "linux")]
    fn of_pthread(thread: libc::pthread_t) -> Option<CpuClock> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread has not been joined (the caller holds its
        // handle, or is it); the call only writes the id into `clock`.
        let failed = unsafe { libc::pthread_getcpuclockid(thread, &mut clock) };
        (failed == 0).then_some(CpuClock(clock))
    }

    /// CPU time on this clock so far.
    pub fn elapsed(self) -> Option<Duration> {
        #[cfg(target_os = "linux")]
        {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime only writes into the timespec we hand it;
            // a thread's clock stays valid while the thread lives, and the
            // hashing threads live as long as the process.
            let failed = unsafe { libc::clock_gettime(self.0, &mut now) } != 0;
            (!failed).then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COST: Duration = Duration::from_millis(15);

    fn reading(start: Instant, after: Duration, process: Duration, hashing: Duration) -> CpuUse {
        CpuUse {
            at: start + after,
            process,
            hashing,
        }
    }

    #[test]
    fn the_rate_is_the_spare_cpu_beyond_the_reserve_at_the_cost_of_a_hash() {
        // One idle core: three quarters of it hash at 15 ms each.
        assert_eq!(rate_for(1.0, 0.0, COST).round(), 50.0);
        // Half of it busy: a quarter left.
        assert_eq!(rate_for(1.0, 0.5, COST).round(), 17.0);
        // Busier than the reserve allows: the floor.
        assert_eq!(rate_for(1.0, 0.9, COST), MIN_RATE);
        assert_eq!(rate_for(2.0, 0.9, COST).round(), 40.0);
    }

    #[test]
    fn busy_sockets_bring_admission_down_to_the_floor_and_back() {
        let start = Instant::now();
        let zero = Duration::ZERO;
        let ms = Duration::from_millis;
        let mut bucket = SpareCpu::new(1, COST, reading(start, zero, zero, zero));
        assert_eq!(bucket.rate.round(), 50.0);
        assert!(!bucket.wants_reading(start + ms(100)));
        assert!(bucket.wants_reading(start + SAMPLE));

        // 900 ms of CPU in a second, 100 of them hashing: 0.8 core of other work.
        bucket.observe(reading(start, ms(1000), ms(900), ms(100)));
        assert_eq!(bucket.rate, MIN_RATE);
        let at = start + ms(1000);
        assert_eq!(bucket.take(at), Ok(()), "the burst shrank to one token");
        let wait = bucket
            .take(at)
            .expect_err("the next token is a second away");
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!(bucket.take(at + ms(500)), Err(ms(500)));
        assert_eq!(bucket.take(at + ms(1000)), Ok(()));

        // A token taken for a hash the queue then refused comes back.
        bucket.give_back();
        assert_eq!(bucket.take(at + ms(1000)), Ok(()));

        // The sockets go quiet: a second with 20 ms of other work.
        bucket.observe(reading(start, ms(2000), ms(920), ms(100)));
        assert_eq!(bucket.rate.round(), 49.0);
        assert_eq!(bucket.take(at + ms(1500)), Ok(()), "tokens build up again");
        // Hashing alone using the whole core counts as no other work.
        bucket.observe(reading(start, ms(3000), ms(1920), ms(1100)));
        assert_eq!(bucket.rate.round(), 50.0);
    }

    #[test]
    fn the_clocks_count_the_cpu_a_thread_uses_read_from_another_thread() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
                CpuClock::this_thread().and_then(CpuClock::elapsed)
            })
        };
        let clock = CpuClock::of_thread(&spinner);
        std::thread::sleep(Duration::from_millis(50));
        let seen_from_outside = clock.and_then(CpuClock::elapsed);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen_from_inside = spinner.join().unwrap();
        if cfg!(target_os = "linux") {
            let outside = seen_from_outside.expect("a thread's CPU clock reads on Linux");
            let inside = seen_from_inside.expect("and from the thread itself");
            assert!(outside >= Duration::from_millis(20), "{outside:?}");
            assert!(inside >= outside, "{inside:?} < {outside:?}");
            let process = CpuClock::process().and_then(CpuClock::elapsed).unwrap();
            assert!(process >= inside, "{process:?} < {inside:?}");
        } else {
            assert!(seen_from_outside.is_none() && seen_from_inside.is_none());
        }
    }
}

//! Password hashing with argon2id at OWASP's parameters (19 MiB, 2 passes,
//! 1 lane). Hashing is deliberately slow (milliseconds of CPU), so it runs on
//! its own small pool of idle-priority threads, one per CPU, shared by the
//! process: never on an actor or async worker thread, and never ahead of
//! them for the CPU, so a burst of logins cannot stall the sockets.
//!
//! **Shedding.** A server admits at most [`Hashing::cap`] hashes at once
//! (waiting for a thread or running); one more is refused at once with 503
//! ([`ChatError::Overloaded`]), a `Retry-After` and the error body, rather
//! than left to wait seconds for a hash the CPU cannot get to. The cap is
//! [`QUEUE_BUDGET`] (one second) of hashing work: at start-up
//! [`Hashing::start`] times one hash on a hashing thread by that thread's CPU
//! clock, and the cap is `threads × QUEUE_BUDGET / cost`, at least 1
//! (`PARLEY_HASH_QUEUE` sets it instead). That is a second of waiting only
//! while the hashing threads have the CPU; when busy sockets leave them a
//! tenth of it, the same queue takes ten seconds to drain. So a hash is also
//! refused while the queue is longer than one [`QUEUE_BUDGET`] at the rate
//! hashes actually finish now (measured on each hash, by how many were ahead
//! of it and how long it took from admission to finish). [`QUEUE_DEADLINE`]
//! stays as a backstop: an admitted hash not started within 10 s (the
//! idle-priority threads got no CPU all that time) is given up with the same 503.
//! And while the rest of the server uses nearly all of its CPU, hashes are
//! admitted only at the rate the CPU it leaves over can hash
//! ([`SpareCpuGate`]), so that hashing does not slow the sockets down even
//! from the gaps they leave.
//!
//! Who talks to it: start-up builds one [`Hashing`] per server and hands it
//! to the routes as app data; registration, login, password change and
//! account deletion hash or verify through it. The load tool's `hash-cost`
//! measures [`argon2`] with [`time_one_hash`].

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parley_actors::ChatError;

use super::spare_cpu::{CpuClock, SpareCpuGate};
use crate::error::ApiError;

/// The server's argon2id: OWASP's parameters (19 MiB, 2 passes, 1 lane).
/// Public so that the load tool measures exactly what the server runs.
pub fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// How much hashing work may wait: the cap on admitted hashes is this much
/// at the measured cost of one hash, with every hashing thread busy.
pub const QUEUE_BUDGET: Duration = Duration::from_secs(1);

/// A hash not started within this long (the CPU was busy with sockets the
/// whole time) is given up with 503 rather than left hanging. A backstop:
/// the cap keeps the normal wait near [`QUEUE_BUDGET`].
pub const QUEUE_DEADLINE: Duration = Duration::from_secs(10);

/// What a refused request is told it was waiting for.
const TASK: &str = "check passwords";

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads of this process. The queue itself is unbounded:
/// each server's [`Hashing`] bounds what it lets in.
struct Pool {
    jobs: Sender<Job>,
    threads: usize,
    /// Each thread's CPU clock (empty where the platform has none).
    clocks: Vec<CpuClock>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let handles: Vec<_> = (0..threads)
            .map(|n| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("parley-argon2-{n}"))
                    .spawn(move || run_jobs(&queue))
                    .expect("the hashing threads can start")
            })
            .collect();
        // The threads run as long as the process; their handles are only
        // needed for their clocks.
        let clocks = handles
            .iter()
            .map(CpuClock::of_thread)
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        Pool {
            jobs,
            threads,
            clocks,
        }
    })
}

impl Pool {
    /// Queues a job; gives it back if the threads are gone.
    fn send(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).map_err(|mpsc::SendError(job)| job)
    }
}

fn run_jobs(queue: &Mutex<Receiver<Job>>) {
    run_only_when_idle();
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Puts the calling thread in Linux's SCHED_IDLE class: it runs only on CPU
/// time no other thread wants, and any waking socket or actor thread
/// preempts it at once.
fn run_only_when_idle() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on the calling thread (pid 0) with a valid parameter.
        let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
        if failed {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "password hashing threads run at normal priority"
            );
        }
    }
}

/// What one hash took on the thread that ran it.
#[derive(Clone, Copy, Debug)]
pub struct HashTiming {
    /// The thread's CPU time (`None` where the platform cannot tell).
    pub cpu: Option<Duration>,
    /// Wall-clock time, including any time the thread was preempted.
    pub wall: Duration,
}

impl HashTiming {
    /// The cost of one hash: its CPU time, else its wall time.
    pub fn cost(&self) -> Duration {
        self.cpu.unwrap_or(self.wall)
    }
}

/// Hashes a fixed password with a fresh salt at the server's parameters on
/// the calling thread, and times it.
pub fn time_one_hash() -> HashTiming {
    let salt = SaltString::generate(&mut OsRng);
    let hasher = argon2();
    let clock = CpuClock::this_thread();
    let (cpu_before, started) = (clock.and_then(CpuClock::elapsed), Instant::now());
    let hashed = hasher.hash_password(b"a password of typical length", &salt);
    let wall = started.elapsed();
    let cpu = clock
        .and_then(CpuClock::elapsed)
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    std::hint::black_box(hashed.expect("hashing a constant succeeds"));
    HashTiming { cpu, wall }
}

/// The cap [`QUEUE_BUDGET`] allows: `threads × QUEUE_BUDGET / cost`, at least 1.
pub fn cap_for(threads: usize, cost: Duration) -> usize {
    let cost = cost.max(Duration::from_micros(1)).as_secs_f64();
    let cap = threads.max(1) as f64 * QUEUE_BUDGET.as_secs_f64() / cost;
    (cap.floor() as usize).max(1)
}

/// Starts the hashing threads, computes the dummy hash ahead of the first
/// login for an unknown user, and times one more hash (the first one also
/// pays for the allocator growing the heap): once per process.
async fn calibrate() -> HashTiming {
    static COST: tokio::sync::OnceCell<HashTiming> = tokio::sync::OnceCell::const_new();
    *COST
        .get_or_init(|| async {
            let (reply, timing) = tokio::sync::oneshot::channel();
            let job: Job = Box::new(move || {
                dummy_hash();
                let _ = reply.send(time_one_hash());
            });
            if pool().send(job).is_err() {
                panic!("the password hashing threads stopped at start-up");
            }
            timing
                .await
                .expect("the password hashing threads answer at start-up")
        })
        .await
}

/// One server's way onto the hashing pool, with its admission count.
pub struct Hashing {
    /// Hashes admitted at once (waiting or running) before refusing.
    cap: usize,
    /// The pool's threads (the cap and the retry estimate count on them).
    threads: usize,
    /// One hash's CPU cost, measured at start.
    cost: Duration,
    admitted: Arc<Admitted>,
    /// Admission by the CPU the rest of the server leaves over, when on.
    spare_cpu: Option<SpareCpuGate>,
}

/// What the admitted hashes share with the slots they hold.
struct Admitted {
    /// Hashes admitted and not yet finished (or given up).
    now: AtomicUsize,
    /// What the times below count from.
    epoch: Instant,
    /// Microseconds from admission to finish of the hash that finished last.
    last_turnaround_us: AtomicU64,
    /// When it finished, in microseconds since `epoch`.
    last_finish_us: AtomicU64,
    /// Hashes the queue drained per 1,000 s as the last hash saw it: how
    /// many were admitted before it (and so finished before it, on a FIFO
    /// pool), plus itself, over its turnaround. Zero until a hash finishes.
    drain_per_ks: AtomicU64,
}

impl Admitted {
    fn new() -> Self {
        Admitted {
            now: AtomicUsize::new(0),
            epoch: Instant::now(),
            last_turnaround_us: AtomicU64::new(0),
            last_finish_us: AtomicU64::new(0),
            drain_per_ks: AtomicU64::new(0),
        }
    }

    /// How many hashes the queue drains in [`QUEUE_BUDGET`] at the rate
    /// measured last, at least 1. None before any hash finished, and when
    /// none finished within the last [`QUEUE_BUDGET`]: a rate measured while
    /// the sockets kept the CPU says nothing once they have let go, and a
    /// queue that drains that slowly finishes a hash more often than that.
    fn drained_within_budget(&self) -> Option<usize> {
        let finished = Duration::from_micros(self.last_finish_us.load(Ordering::Relaxed));
        if self.epoch.elapsed().saturating_sub(finished) > QUEUE_BUDGET {
            return None;
        }
        let per_ks = self.drain_per_ks.load(Ordering::Relaxed);
        (per_ks > 0).then(|| {
            let within = per_ks as f64 / 1000.0 * QUEUE_BUDGET.as_secs_f64();
            (within.floor() as usize).max(1)
        })
    }

    /// How long the last hash took from admission to finish, if it finished
    /// lately enough to say something about the queue now.
    fn recent_turnaround(&self) -> Duration {
        let finished = Duration::from_micros(self.last_finish_us.load(Ordering::Relaxed));
        if self.epoch.elapsed().saturating_sub(finished) > QUEUE_DEADLINE {
            return Duration::ZERO;
        }
        Duration::from_micros(self.last_turnaround_us.load(Ordering::Relaxed))
    }
}

/// An admitted hash's place in the count; freed when dropped.
struct Slot {
    admitted: Arc<Admitted>,
    since: Instant,
    /// Hashes admitted and unfinished when this one was admitted.
    ahead: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let admitted = &self.admitted;
        let turnaround = self.since.elapsed();
        let finish = admitted.epoch.elapsed().as_micros() as u64;
        let drained = (self.ahead + 1) as f64 / turnaround.as_secs_f64().max(1e-6);
        admitted
            .last_turnaround_us
            .store(turnaround.as_micros() as u64, Ordering::Relaxed);
        admitted.last_finish_us.store(finish, Ordering::Relaxed);
        admitted
            .drain_per_ks
            .store((drained * 1000.0).ceil() as u64, Ordering::Relaxed);
        admitted.now.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hashing {
    /// Starts (once per process) and measures the hashing pool, and sets the
    /// cap: `configured`, or one [`QUEUE_BUDGET`] of hashing at the measured
    /// cost. With `spare_cpu_only`, hashes are also admitted only at the
    /// rate the CPU the rest of the server leaves over can hash.
    pub async fn start(configured: Option<NonZeroUsize>, spare_cpu_only: bool) -> Hashing {
        let timing = calibrate().await;
        let pool = pool();
        let threads = pool.threads;
        let cost = timing.cost();
        let cap = configured.map_or_else(|| cap_for(threads, cost), NonZeroUsize::get);
        let spare_cpu = spare_cpu_only
            .then(|| SpareCpuGate::new(pool.clocks.clone(), threads, cost))
            .flatten();
        if spare_cpu_only && spare_cpu.is_none() {
            tracing::warn!("no per-thread CPU clocks here: hashes are admitted by the cap only");
        }
        tracing::info!(
            cpu_ms = cost.as_secs_f64() * 1000.0,
            wall_ms = timing.wall.as_secs_f64() * 1000.0,
            threads,
            cap,
            spare_cpu_only = spare_cpu.is_some(),
            "password hashing: one hash measured; beyond the cap hashes are refused with 503"
        );
        Hashing {
            cap,
            threads,
            cost,
            admitted: Arc::new(Admitted::new()),
            spare_cpu,
        }
    }

    /// How many hashes may be admitted at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// How many hashes may be admitted at once right now: the cap, or
    /// fewer when they drain slower than the cap assumes.
    fn limit(&self) -> usize {
        self.admitted
            .drained_within_budget()
            .map_or(self.cap, |drained| drained.min(self.cap))
    }

    /// Takes a slot, or refuses with 503 when the spare CPU has no room
    /// for another hash yet, or beyond [`Hashing::limit`] (at least 1, so a
    /// rate measured while the CPU was busy is measured again by the next
    /// hash).
    fn admit(&self) -> Result<Slot, ChatError> {
        if let Some(spare_cpu) = &self.spare_cpu {
            if let Err(next_token) = spare_cpu.take() {
                tracing::debug!(?next_token, "password hash refused: no spare CPU");
                return Err(self.overloaded(next_token));
            }
        }
        let limit = self.limit();
        let taken = self
            .admitted
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now < limit).then_some(now + 1)
            });
        match taken {
            Ok(ahead) => Ok(Slot {
                admitted: self.admitted.clone(),
                since: Instant::now(),
                ahead,
            }),
            Err(now) => {
                tracing::debug!(admitted = now, limit, "password hash refused");
                if let Some(spare_cpu) = &self.spare_cpu {
                    spare_cpu.give_back();
                }
                Err(self.overloaded(Duration::ZERO))
            }
        }
    }

    /// The refusal, with an estimate of when the hashes now admitted will
    /// have finished: at the measured cost with every thread busy, or, when
    /// the threads get less CPU than that (busy sockets), as long as the last
    /// hash took from admission to finish (if it finished within the last
    /// [`QUEUE_DEADLINE`]), and at least `next_admission`; from 1 s to
    /// [`QUEUE_DEADLINE`].
    fn overloaded(&self, next_admission: Duration) -> ChatError {
        let now = self.admitted.now.load(Ordering::Acquire);
        let at_cost = self.cost.mul_f64(now as f64 / self.threads.max(1) as f64);
        let observed = self.admitted.recent_turnaround();
        ChatError::Overloaded {
            task: TASK,
            retry_after: at_cost
                .max(observed)
                .max(next_admission)
                .clamp(Duration::from_secs(1), QUEUE_DEADLINE),
        }
    }

    /// Runs `work` on the hashing pool if a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let slot = self.admit()?;
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = if slot.since.elapsed() > QUEUE_DEADLINE {
                None
            } else {
                Some(work())
            };
            // Free the slot before answering, so that the caller's next
            // request never finds its own finished hash still counted.
            drop(slot);
            let _ = reply.send(outcome);
        });
        if pool().send(job).is_err() {
            return Err(ChatError::internal_msg("the password hashing threads stopped").into());
        }
        match result.await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(self.overloaded(Duration::ZERO).into()),
            Err(_) => Err(ChatError::internal_msg("a password hashing job was dropped").into()),
        }
    }

    /// Hashes a password into a PHC string with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let hashed = self
            .run(move || {
                let salt = SaltString::generate(&mut OsRng);
                argon2()
                    .hash_password(password.as_bytes(), &salt)
                    .map(|hash| hash.to_string())
            })
            .await?;
        hashed.map_err(|err| ChatError::internal_msg(format_args!("argon2: {err}")).into())
    }

    /// Checks a password against a stored hash, or — when the user does not
    /// exist (`None`) — against a dummy hash, so that an unknown username
    /// costs the same time as a wrong password and reveals nothing.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let matched = self
            .run(move || {
                let stored = stored.as_deref().unwrap_or_else(|| dummy_hash());
                let parsed = PasswordHash::new(stored)?;
                match argon2().verify_password(password.as_bytes(), &parsed) {
                    Ok(()) => Ok(true),
                    Err(argon2::password_hash::Error::Password) => Ok(false),
                    Err(err) => Err(err),
                }
            })
            .await?;
        let matched =
            matched.map_err(|err| ChatError::internal_msg(format_args!("argon2: {err}")))?;
        Ok(matched)
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(b"no user has this password", &salt)
            .expect("hashing a constant succeeds")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_hash_verifies_only_its_password() {
        // Without spare-CPU admission: it reads the whole process's CPU, and
        // the other tests of this binary (one spins every core) share it.
        let hashing = Hashing::start(None, false).await;
        let stored = hashing.hash("correct horse".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(hashing
            .verify("correct horse".into(), Some(stored.clone()))
            .await
            .unwrap());
        assert!(!hashing
            .verify("wrong horse".into(), Some(stored))
            .await
            .unwrap());
        assert!(!hashing.verify("anything".into(), None).await.unwrap());
    }

    #[test]
    fn the_cap_is_one_budget_of_hashing_on_every_thread_and_at_least_one() {
        assert_eq!(cap_for(1, Duration::from_millis(15)), 66);
        assert_eq!(cap_for(2, Duration::from_millis(15)), 133);
        assert_eq!(cap_for(1, Duration::from_millis(30)), 33);
        // A hash slower than the whole budget still lets one in.
        assert_eq!(cap_for(1, Duration::from_secs(3)), 1);
    }

    /// A full queue of `admitted` hashes at 20 ms on 2 threads, whose last
    /// hash took `turnaround` and finished `ago`, with the spare CPU's next
    /// admission `next` away: the refusal's delay.
    fn retry_after(
        admitted: usize,
        turnaround: Duration,
        ago: Duration,
        next: Duration,
    ) -> Duration {
        let epoch = Instant::now() - Duration::from_secs(60);
        let finish = Duration::from_secs(60) - ago;
        let hashing = Hashing {
            cap: admitted,
            threads: 2,
            cost: Duration::from_millis(20),
            admitted: Arc::new(Admitted {
                now: AtomicUsize::new(admitted),
                epoch,
                last_turnaround_us: AtomicU64::new(turnaround.as_micros() as u64),
                last_finish_us: AtomicU64::new(finish.as_micros() as u64),
                drain_per_ks: AtomicU64::new(0),
            }),
            spare_cpu: None,
        };
        hashing
            .overloaded(next)
            .retry_after()
            .expect("a refusal says when")
    }

    #[test]
    fn a_refusal_says_when_the_hashes_admitted_will_have_finished() {
        let secs = Duration::from_secs;
        // 300 hashes of 20 ms on 2 threads: 3 s of work.
        assert_eq!(
            retry_after(300, Duration::ZERO, secs(1), Duration::ZERO),
            secs(3)
        );
        // The threads got less CPU than that: the last hash took 7 s.
        assert_eq!(retry_after(300, secs(7), secs(1), Duration::ZERO), secs(7));
        // ...but that was long ago, so it says nothing about the queue now.
        assert_eq!(retry_after(300, secs(7), secs(30), Duration::ZERO), secs(3));
        // Never under 1 s nor over the deadline.
        assert_eq!(
            retry_after(2, Duration::ZERO, secs(1), Duration::ZERO),
            secs(1)
        );
        assert_eq!(
            retry_after(300, secs(40), secs(1), Duration::ZERO),
            QUEUE_DEADLINE
        );
        // The spare CPU admits the next hash later than the queue drains.
        assert_eq!(retry_after(2, Duration::ZERO, secs(1), secs(4)), secs(4));
    }

    /// A hash admitted `took` ago with `ahead` before it finishes now.
    fn finish_one(hashing: &Hashing, ahead: usize, took: Duration) {
        hashing.admitted.now.fetch_add(1, Ordering::AcqRel);
        drop(Slot {
            admitted: hashing.admitted.clone(),
            since: Instant::now() - took,
            ahead,
        });
    }

    #[test]
    fn while_hashes_drain_slower_than_the_cap_assumes_fewer_are_admitted() {
        let hashing = Hashing {
            cap: 66,
            threads: 1,
            cost: Duration::from_millis(15),
            admitted: Arc::new(Admitted {
                epoch: Instant::now() - Duration::from_secs(60),
                ..Admitted::new()
            }),
            spare_cpu: None,
        };
        assert_eq!(hashing.limit(), 66, "no hash finished yet: the cap");
        // Busy sockets left the hashing thread a tenth of the CPU: a hash
        // with 9 ahead of it took 1.5 s, so 6.6 drain a second.
        finish_one(&hashing, 9, Duration::from_millis(1500));
        assert_eq!(hashing.limit(), 6);
        let admitted: Vec<Slot> = (0..6)
            .map(|_| hashing.admit().expect("within the limit"))
            .collect();
        assert!(matches!(hashing.admit(), Err(ChatError::Overloaded { .. })));
        // The CPU is back: each of them finishes at once.
        drop(admitted);
        assert_eq!(hashing.limit(), 66, "never above the cap");
        // A slow rate measured more than a budget ago no longer counts.
        finish_one(&hashing, 0, Duration::from_millis(1500));
        assert_eq!(hashing.limit(), 1);
        let stale = hashing.admitted.epoch.elapsed() - QUEUE_BUDGET - Duration::from_millis(10);
        hashing
            .admitted
            .last_finish_us
            .store(stale.as_micros() as u64, Ordering::Relaxed);
        assert_eq!(hashing.limit(), 66);
    }

    #[actix_web::test]
    async fn while_the_rest_of_the_process_keeps_every_core_busy_about_one_hash_a_second_is_admitted(
    ) {
        let hashing = Hashing::start(None, true).await;
        if cfg!(not(target_os = "linux")) {
            assert!(hashing.spare_cpu.is_none());
            return;
        }
        assert!(
            hashing.spare_cpu.is_some(),
            "Linux has per-thread CPU clocks"
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinners: Vec<_> = (0..hashing.threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        tokio::time::sleep(super::super::spare_cpu::SAMPLE * 3).await;
        let first = hashing.admit();
        let second = hashing.admit();
        stop.store(true, Ordering::Relaxed);
        for spinner in spinners {
            spinner.join().unwrap();
        }
        assert!(first.is_ok(), "one hash a second still gets through");
        match second {
            Err(ChatError::Overloaded { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
            }
            other => panic!(
                "the second hash should wait for spare CPU, got {:?}",
                other.err()
            ),
        }
    }

    #[actix_web::test]
    async fn beyond_the_cap_a_hash_is_refused_at_once_until_a_slot_frees() {
        let hashing = Hashing::start(NonZeroUsize::new(2), false).await;
        assert_eq!(hashing.cap(), 2);
        let first = hashing.admit().expect("a slot is free");
        let _second = hashing.admit().expect("a second slot is free");
        match hashing.admit() {
            Err(ChatError::Overloaded { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
                assert!(retry_after <= QUEUE_DEADLINE, "{retry_after:?}");
            }
            other => panic!("the third hash should be refused, got {:?}", other.err()),
        }
        let refused = hashing.verify("anything".into(), None).await.unwrap_err();
        assert_eq!(refused.0.status(), 503);
        assert!(refused.0.retry_after().is_some());
        drop(first);
        assert!(!hashing.verify("anything".into(), None).await.unwrap());
    }
}

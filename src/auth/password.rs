//! Password hashing with argon2id at OWASP's parameters (19 MiB, 2 passes,
//! 1 lane). Hashing is deliberately slow (milliseconds of CPU), so it runs on
//! its own small pool of idle-priority threads: never on an actor or async
//! worker thread, and never ahead of them for the CPU, so a burst of logins
//! cannot stall the sockets. The pool's queue is bounded; when it is full a
//! request fails fast with 503 rather than piling up 19 MiB hashes.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parley_actors::ChatError;

use crate::error::ApiError;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

type Job = Box<dyn FnOnce() + Send>;

/// Hashes waiting for a thread; beyond this, requests get 503.
const QUEUE: usize = 256;
/// A hash not started within this long (the CPU was busy with sockets the
/// whole time) is given up with 503 rather than left hanging.
const QUEUE_DEADLINE: Duration = Duration::from_secs(10);

fn pool() -> &'static SyncSender<Job> {
    static POOL: OnceLock<SyncSender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("parley-argon2-{n}"))
                .spawn(move || run_jobs(&queue))
                .expect("the hashing threads can start");
        }
        jobs
    })
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

/// Runs `work` on the hashing pool.
async fn on_hashing_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let (reply, result) = tokio::sync::oneshot::channel();
    let queued_at = Instant::now();
    let job: Job = Box::new(move || {
        let outcome = if queued_at.elapsed() > QUEUE_DEADLINE {
            None
        } else {
            Some(work())
        };
        let _ = reply.send(outcome);
    });
    match pool().try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(ChatError::Unavailable("the password hashing queue is full".into()).into())
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(ChatError::internal_msg("the password hashing threads stopped").into())
        }
    }
    match result.await {
        Ok(Some(value)) => Ok(value),
        Ok(None) => {
            Err(ChatError::Unavailable("the server is too busy to check passwords".into()).into())
        }
        Err(_) => Err(ChatError::internal_msg("a password hashing job was dropped").into()),
    }
}

/// Hashes a password into a PHC string with a fresh random salt.
pub async fn hash(password: String) -> Result<String, ApiError> {
    let hashed = on_hashing_pool(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
    })
    .await?;
    hashed.map_err(|err| ChatError::internal_msg(format_args!("argon2: {err}")).into())
}

/// Checks a password against a stored hash, or — when the user does not
/// exist (`None`) — against a dummy hash, so that an unknown username costs
/// the same time as a wrong password and reveals nothing.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    let matched = on_hashing_pool(move || {
        let stored = stored.as_deref().unwrap_or_else(|| dummy_hash());
        let parsed = PasswordHash::new(stored)?;
        match argon2().verify_password(password.as_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(err) => Err(err),
        }
    })
    .await?;
    let matched = matched.map_err(|err| ChatError::internal_msg(format_args!("argon2: {err}")))?;
    Ok(matched)
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

/// Starts the hashing threads and computes the dummy hash ahead of the
/// first login for an unknown user.
pub async fn warm_up() {
    let _ = on_hashing_pool(|| {
        dummy_hash();
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_hash_verifies_only_its_password() {
        let stored = hash("correct horse".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse".into(), Some(stored.clone()))
            .await
            .unwrap());
        assert!(!verify("wrong horse".into(), Some(stored)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }
}

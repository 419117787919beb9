//! Password hashing with argon2id at OWASP's parameters (19 MiB, 2 passes,
//! 1 lane). Hashing is deliberately slow, so it runs on the blocking thread
//! pool, never on an actor or async worker thread.

use std::sync::OnceLock;

use actix_web::web;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parley_actors::ChatError;

use crate::error::ApiError;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string with a fresh random salt.
pub async fn hash(password: String) -> Result<String, ApiError> {
    let hashed = web::block(move || {
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
    let matched = web::block(move || {
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

/// Computes the dummy hash ahead of the first login for an unknown user.
pub fn warm_up() {
    dummy_hash();
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

//! Access tokens: JWT signed with HS256, carrying the user id and name, an
//! expiry and a unique id. The algorithm is pinned when decoding, so a token
//! claiming `none` or another algorithm is refused. Without a configured
//! secret, one is generated on first start and kept in the data dir (0600).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parley_actors::model::UserRef;
use parley_actors::ChatError;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// File in the data dir holding the generated secret.
pub const SECRET_FILE: &str = "jwt-secret";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id, as a string (JWT convention).
    sub: String,
    /// The username as registered, so requests need no lookup to name the caller.
    name: String,
    iat: u64,
    exp: u64,
    /// Unique per token: what logout revokes.
    jti: String,
    /// The account's token generation when issued: a password change bumps
    /// it, which makes every older token invalid.
    #[serde(rename = "gen")]
    generation: i64,
}

/// A token that verified: whose it is and what revocation checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user: UserRef,
    pub jti: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub generation: i64,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Tokens {
    pub fn new(secret: &[u8], ttl: Duration) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn issue(&self, user: &UserRef, generation: i64) -> Result<String, ChatError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.id.to_string(),
            name: user.username.to_string(),
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            generation,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ChatError::internal)
    }

    /// Checks signature, algorithm and expiry (not revocation: see `auth::authenticate`).
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, ChatError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| rejected())?;
        let claims = data.claims;
        Ok(VerifiedToken {
            user: UserRef {
                id: claims.sub.parse().map_err(|_| rejected())?,
                username: claims.name.into(),
            },
            jti: claims.jti,
            expires_at: i64::try_from(claims.exp).map_err(|_| rejected())?,
            generation: claims.generation,
        })
    }
}

/// The one answer for every token that does not prove who the caller is.
pub fn rejected() -> ChatError {
    ChatError::Unauthenticated("token: invalid, expired or revoked".to_owned())
}

/// The configured secret, or the one kept in `data_dir` (generated on first use).
pub fn load_or_create_secret(
    configured: Option<&str>,
    data_dir: &Path,
) -> std::io::Result<Vec<u8>> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(&path)?.write_all(secret.as_bytes())?;
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserRef {
        UserRef {
            id: 7,
            username: "alice".into(),
        }
    }

    #[test]
    fn an_issued_token_verifies_as_its_user() {
        let tokens = Tokens::new(b"secret", Duration::from_secs(60));
        let token = tokens.issue(&alice(), 3).unwrap();
        let verified = tokens.verify(&token).unwrap();
        assert_eq!(verified.user, alice());
        assert_eq!(verified.generation, 3);
        assert_eq!(verified.jti.len(), 32);
    }

    #[test]
    fn a_token_signed_with_another_key_or_algorithm_is_refused() {
        let tokens = Tokens::new(b"secret", Duration::from_secs(60));
        let other = Tokens::new(b"other", Duration::from_secs(60));
        assert!(tokens.verify(&other.issue(&alice(), 0).unwrap()).is_err());
        // Same key, but HS512: the algorithm is pinned to HS256.
        let claims = serde_json::json!({"sub": "7", "name": "alice", "exp": 4102444800u64, "jti": "x", "gen": 0});
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(tokens.verify(&hs512).is_err());
        // An unsigned token.
        let unsigned = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            hs512.split('.').nth(1).unwrap()
        );
        assert!(tokens.verify(&unsigned).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let tokens = Tokens::new(b"secret", Duration::ZERO);
        let token = tokens.issue(&alice(), 0).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(tokens.verify(&token).is_err());
    }

    #[test]
    fn a_generated_secret_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(None, dir.path()).unwrap();
        let second = load_or_create_secret(None, dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

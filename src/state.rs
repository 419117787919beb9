//! What every HTTP handler can reach ([`AppState`]): the chat core, the
//! token keys, where uploads go and the login limits. Built by start-up;
//! the routes and the authentication extractor read it.

use std::net::IpAddr;
use std::path::PathBuf;

use actix_web::HttpRequest;
use parley_actors::limits::RateLimiter;
use parley_actors::{Chat, ChatError};

use crate::token::Tokens;

/// What every handler can reach.
pub struct AppState {
    pub chat: Chat,
    pub tokens: Tokens,
    /// Where uploaded bytes are kept, one file per `file_id`.
    pub files_dir: PathBuf,
    pub max_upload_bytes: u64,
    /// Logins and registrations per client address, when limited.
    pub auth_limiter: Option<RateLimiter<IpAddr>>,
}

impl AppState {
    /// Takes one login/registration from the client address's allowance.
    pub fn check_auth_rate(&self, req: &HttpRequest) -> Result<(), ChatError> {
        let (Some(limiter), Some(peer)) = (&self.auth_limiter, req.peer_addr()) else {
            return Ok(());
        };
        limiter
            .check(&peer.ip())
            .map_err(|retry_after| ChatError::TooManyRequests { retry_after })
    }
}

//! The chat core's caches of facts the database holds: users by name, the
//! conversation of each pair of users, what token checks need about each
//! account, and revoked tokens. They are read on every send and every
//! authenticated request. The writer fills them only after the transaction
//! that established a fact committed (so a rolled-back batch leaves no
//! trace), reads fill users and accounts on a miss, and the cluster
//! listener applies what other nodes committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::error::ChatResult;
use crate::model::{AccountState, UserRef};
use crate::store::{Store, Usernames};
use crate::validate;

pub struct Caches {
    store: Store,
    /// Lower-cased username → user (users are never renamed; deleted
    /// accounts are removed, only through [`Caches::forget_user`]).
    users: DashMap<String, UserRef>,
    /// How many names were removed from `users`: a name read from the
    /// database is cached only if none was removed while it was read, as
    /// the read may predate that account's deletion.
    names_forgotten: AtomicU64,
    /// (lower user id, higher user id) → conversation id.
    conversations: DashMap<(i64, i64), i64>,
    /// User id → name, also of deleted accounts (history still shows it).
    names: DashMap<i64, Arc<str>>,
    /// User id → what token checks need (filled on first check).
    accounts: DashMap<i64, AccountState>,
    /// jti → expiry (Unix seconds) of tokens revoked by logout.
    revoked_tokens: DashMap<String, i64>,
}

impl Caches {
    /// Empty caches over `store`, but for the revocations still in force at
    /// `now_secs`, which token checks must know from the start.
    pub(crate) async fn load(store: Store, now_secs: i64) -> ChatResult<Caches> {
        let caches = Caches {
            users: DashMap::new(),
            names_forgotten: AtomicU64::new(0),
            conversations: DashMap::new(),
            names: DashMap::new(),
            accounts: DashMap::new(),
            revoked_tokens: DashMap::new(),
            store,
        };
        for (jti, expires_at) in caches.store.revoked_tokens(now_secs).await? {
            caches.revoked_tokens.insert(jti, expires_at);
        }
        Ok(caches)
    }

    /// Finds a user by name, case-insensitively.
    pub async fn user(&self, username: &str) -> ChatResult<Option<UserRef>> {
        let key = validate::lookup_key(username);
        if let Some(user) = self.cached_user(&key) {
            return Ok(Some(user));
        }
        let mark = self.names_forgotten.load(Ordering::SeqCst);
        let user = self.store.user_by_name(username).await?;
        if let Some(user) = &user {
            self.remember_read_user(key, user.clone(), mark);
        }
        Ok(user)
    }

    /// The user with this lookup key ([`validate::lookup_key`]), if cached.
    pub(crate) fn cached_user(&self, key: &str) -> Option<UserRef> {
        self.users.get(key).map(|user| user.clone())
    }

    /// Caches a user whose row a committed transaction wrote or read.
    pub(crate) fn remember_user(&self, key: String, user: UserRef) {
        self.names.insert(user.id, user.username.clone());
        self.users.insert(key, user);
    }

    /// Caches a user read outside the writer, unless a name was forgotten
    /// since `mark` was taken (before the read).
    fn remember_read_user(&self, key: String, user: UserRef, mark: u64) {
        // Checked under the entry's lock: a removal that has not counted
        // itself yet takes this lock after us and removes what we insert.
        self.names.insert(user.id, user.username.clone());
        let entry = self.users.entry(key);
        if self.names_forgotten.load(Ordering::SeqCst) == mark {
            entry.or_insert(user);
        }
    }

    /// Forgets a deleted account's name (once the deletion committed).
    pub(crate) fn forget_user(&self, key: &str) {
        self.names_forgotten.fetch_add(1, Ordering::SeqCst);
        self.users.remove(key);
    }

    /// The conversation between two users, by (lower id, higher id), if cached.
    pub(crate) fn conversation(&self, pair: (i64, i64)) -> Option<i64> {
        self.conversations.get(&pair).map(|id| *id)
    }

    pub(crate) fn remember_conversation(&self, pair: (i64, i64), id: i64) {
        self.conversations.insert(pair, id);
    }

    /// What token checks need about a user: cached after the first look.
    /// `None` if there is no such user.
    pub async fn account(&self, user: i64) -> ChatResult<Option<AccountState>> {
        if let Some(state) = self.accounts.get(&user) {
            return Ok(Some(*state));
        }
        let state = self.store.account(user).await?;
        if let Some(state) = state {
            // A change committed meanwhile has already cached the newer state.
            self.accounts.entry(user).or_insert(state);
        }
        Ok(state)
    }

    /// Records an account's new state (a password change or deletion committed).
    pub(crate) fn set_account(&self, user: i64, state: AccountState) {
        self.accounts.insert(user, state);
    }

    /// Whether a token id was revoked by logout.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked_tokens.contains_key(jti)
    }

    pub(crate) fn revoke(&self, jti: String, expires_at: i64) {
        self.revoked_tokens.insert(jti, expires_at);
    }

    /// Forgets revocations of tokens that have expired by `now_secs`.
    pub(crate) fn forget_expired_revocations(&self, now_secs: i64) {
        self.revoked_tokens
            .retain(|_, expires_at| *expires_at > now_secs);
    }
}

/// Names never change and stay after an account is deleted, so once known
/// they are kept.
impl Usernames for Caches {
    fn username(&self, id: i64) -> Option<Arc<str>> {
        self.names.get(&id).map(|name| name.clone())
    }

    fn remember_username(&self, id: i64, name: Arc<str>) {
        self.names.insert(id, name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{fresh_test_database, Durability};

    #[actix::test]
    async fn a_name_read_while_an_account_was_deleted_is_not_cached() {
        let (dir, url) = fresh_test_database("caches-names");
        let store = Store::connect(&url, Durability::Full)
            .await
            .expect("create the database");
        let caches = Caches::load(store.clone(), 0).await.expect("load");
        let alice = UserRef {
            id: 1,
            username: "alice".into(),
        };
        let mark = caches.names_forgotten.load(Ordering::SeqCst);
        // Some account is deleted while alice's row is being read: the read
        // may have seen the deleted account, so it is not cached.
        caches.forget_user("bob");
        caches.remember_read_user("alice".into(), alice.clone(), mark);
        assert!(caches.cached_user("alice").is_none());

        let mark = caches.names_forgotten.load(Ordering::SeqCst);
        caches.remember_read_user("alice".into(), alice, mark);
        assert_eq!(caches.cached_user("alice").map(|user| user.id), Some(1));
        caches.forget_user("alice");
        assert!(caches.cached_user("alice").is_none());
        store.close().await;
        std::fs::remove_dir_all(dir).expect("remove the test directory");
    }
}

//! Everything the relay keeps, in memory only: users with their passwords
//! as given (no hashing) and opaque tokens, groups and their members, and
//! each user's open sockets. Nothing is written anywhere.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use actix::{Message, Recipient};
use bytestring::ByteString;
use serde::Serialize;

/// A frame encoded once for many sockets, queued on one of them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Push(pub ByteString);

pub type UserId = u32;

pub struct User {
    /// As registered (original case).
    pub name: Arc<str>,
    pub email: String,
    password: String,
    pub created_at: String,
    /// The groups this user belongs to, in the order they joined.
    pub groups: Vec<i64>,
}

pub struct Group {
    pub name: String,
    pub description: String,
    pub owner: UserId,
    pub created_at: String,
    /// Members in the order they joined (the owner first).
    pub members: Vec<(UserId, String)>,
    member_set: HashSet<UserId>,
}

impl Group {
    pub fn has(&self, user: UserId) -> bool {
        self.member_set.contains(&user)
    }
}

/// Users, tokens and groups: read on every message, written only by the
/// REST calls that prepare a run.
#[derive(Default)]
pub struct Directory {
    pub users: Vec<User>,
    /// Lower-cased name → user.
    by_key: HashMap<String, UserId>,
    tokens: HashMap<String, UserId>,
    pub groups: HashMap<i64, Group>,
    next_group: i64,
}

/// Why a request was refused: an HTTP status (also the `code` of an
/// `error` frame) and a line for people.
pub type Refusal = (u16, &'static str);

impl Directory {
    /// The user of that name, compared case-insensitively like Parley.
    pub fn find(&self, name: &str) -> Option<UserId> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_key.get(&name.to_ascii_lowercase()).copied()
        } else {
            self.by_key.get(name).copied()
        }
    }

    pub fn user(&self, id: UserId) -> &User {
        &self.users[id as usize]
    }

    pub fn register(&mut self, name: &str, email: &str, password: &str) -> Result<UserId, Refusal> {
        let valid = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid {
            return Err((400, "username: 1-32 letters, digits, _ - or ."));
        }
        if password.is_empty() {
            return Err((400, "password: must not be empty"));
        }
        let key = name.to_ascii_lowercase();
        if self.by_key.contains_key(&key) {
            return Err((409, "username: taken"));
        }
        let id = self.users.len() as UserId;
        self.users.push(User {
            name: name.into(),
            email: email.to_owned(),
            password: password.to_owned(),
            created_at: now(),
            groups: Vec::new(),
        });
        self.by_key.insert(key, id);
        Ok(id)
    }

    /// Checks the password as given; a new token on success.
    pub fn login(&mut self, name: &str, password: &str, token: String) -> Option<String> {
        let id = self.find(name)?;
        if self.users[id as usize].password != password {
            return None;
        }
        self.tokens.insert(token.clone(), id);
        Some(token)
    }

    pub fn authenticate(&self, token: &str) -> Option<UserId> {
        self.tokens.get(token).copied()
    }

    pub fn create_group(&mut self, owner: UserId, name: &str, description: &str) -> i64 {
        self.next_group += 1;
        let id = self.next_group;
        let created_at = now();
        self.groups.insert(
            id,
            Group {
                name: name.to_owned(),
                description: description.to_owned(),
                owner,
                created_at: created_at.clone(),
                members: vec![(owner, created_at)],
                member_set: HashSet::from([owner]),
            },
        );
        self.users[owner as usize].groups.push(id);
        id
    }

    /// Adds `user` to the group; only its owner may.
    pub fn add_member(&mut self, group: i64, by: UserId, user: UserId) -> Result<(), Refusal> {
        let entry = self
            .groups
            .get_mut(&group)
            .ok_or((404, "group_id: no such group"))?;
        if !entry.has(by) {
            return Err((403, "not a member of this group"));
        }
        if entry.owner != by {
            return Err((403, "only the owner adds members here"));
        }
        if !entry.member_set.insert(user) {
            return Err((409, "username: already a member"));
        }
        entry.members.push((user, now()));
        self.users[user as usize].groups.push(group);
        Ok(())
    }
}

/// Who sends: the user, and the socket the frame came from (which gets
/// the ack, not a copy of its own message).
pub struct Origin<'a> {
    pub user: UserId,
    pub name: &'a str,
    pub session: u64,
}

/// Where a message goes, as the client wrote it.
pub enum To<'a> {
    User(&'a str),
    Group(i64),
}

/// What the sender's `ack` says.
pub struct Routed {
    pub id: i64,
    pub timestamp: String,
    pub status: &'static str,
}

/// The open sockets of every user (by user id; each a session id and the
/// session actor's mailbox, as Parley's hub keeps them), and the message id
/// counter. Ids are taken and frames queued under one lock, so every
/// socket receives a conversation's messages in id order whichever worker
/// thread routed them.
#[derive(Default)]
struct Router {
    next_id: i64,
    sockets: Vec<Vec<(u64, Recipient<Push>)>>,
}

pub struct Relay {
    pub directory: RwLock<Directory>,
    router: Mutex<Router>,
    /// The highest message id handed out (what a newest history page ends at).
    last_id: AtomicI64,
    next_session: AtomicU64,
    next_token: AtomicU64,
    token_seed: u64,
}

/// A `message` frame as Parley writes it (`actors/src/protocol.rs`).
#[derive(Serialize)]
#[serde(untagged)]
enum MessageFrame<'a> {
    Private {
        #[serde(rename = "type")]
        kind: &'static str,
        id: i64,
        sender: &'a str,
        recipient: &'a str,
        content: &'a str,
        timestamp: &'a str,
        message_type: &'a str,
        content_type: &'a str,
        status: &'static str,
    },
    Group {
        #[serde(rename = "type")]
        kind: &'static str,
        id: i64,
        group_id: i64,
        sender: &'a str,
        content: &'a str,
        timestamp: &'a str,
        message_type: &'a str,
        content_type: &'a str,
    },
}

/// An RFC 3339 timestamp with milliseconds, as Parley writes them.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Relay {
    pub fn new() -> Relay {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Relay {
            directory: RwLock::new(Directory::default()),
            router: Mutex::new(Router::default()),
            last_id: AtomicI64::new(0),
            next_session: AtomicU64::new(1),
            next_token: AtomicU64::new(1),
            token_seed: nanos ^ u64::from(std::process::id()) << 32,
        }
    }

    pub fn directory(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.directory.read().expect("directory lock")
    }

    pub fn directory_mut(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.directory.write().expect("directory lock")
    }

    /// An opaque token: a counter mixed with this process's seed.
    pub fn new_token(&self) -> String {
        let n = self.next_token.fetch_add(1, Relaxed);
        let mixed = (n ^ self.token_seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!("relay.{mixed:016x}.{n}")
    }

    pub fn last_id(&self) -> i64 {
        self.last_id.load(Relaxed)
    }

    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Relaxed)
    }

    pub fn socket_opened(&self, user: UserId, session: u64, push: Recipient<Push>) {
        let mut router = self.router.lock().expect("router lock");
        let at = user as usize;
        if router.sockets.len() <= at {
            router.sockets.resize_with(at + 1, Vec::new);
        }
        router.sockets[at].push((session, push));
    }

    pub fn socket_closed(&self, user: UserId, session: u64) {
        let mut router = self.router.lock().expect("router lock");
        if let Some(list) = router.sockets.get_mut(user as usize) {
            list.retain(|(id, _)| *id != session);
        }
    }

    /// Routes one message: resolves the recipients, takes the next id,
    /// encodes the `message` frame once and queues it on every recipient
    /// socket (and the sender's other sockets).
    pub fn route(
        &self,
        from: &Origin<'_>,
        to: To<'_>,
        content: &str,
        message_type: &str,
        content_type: &str,
    ) -> Result<Routed, Refusal> {
        let directory = self.directory();
        match to {
            To::User(name) => {
                let recipient = directory
                    .find(name)
                    .ok_or((404, "recipient: no such user"))?;
                if recipient == from.user {
                    return Err((400, "recipient: cannot be yourself"));
                }
                let recipient_name = &*directory.user(recipient).name;
                let mut router = self.router.lock().expect("router lock");
                let delivered_to = |router: &Router, user: UserId| {
                    router
                        .sockets
                        .get(user as usize)
                        .is_some_and(|list| !list.is_empty())
                };
                let status = if delivered_to(&router, recipient) {
                    "delivered"
                } else {
                    "sent"
                };
                router.next_id += 1;
                let id = router.next_id;
                let timestamp = now();
                let frame = encode(&MessageFrame::Private {
                    kind: "message",
                    id,
                    sender: from.name,
                    recipient: recipient_name,
                    content,
                    timestamp: &timestamp,
                    message_type,
                    content_type,
                    status,
                });
                push_to(&router, recipient, u64::MAX, &frame);
                push_to(&router, from.user, from.session, &frame);
                self.last_id.store(id, Relaxed);
                Ok(Routed {
                    id,
                    timestamp,
                    status,
                })
            }
            To::Group(group_id) => {
                let group = directory
                    .groups
                    .get(&group_id)
                    .ok_or((404, "group_id: no such group"))?;
                if !group.has(from.user) {
                    return Err((403, "not a member of this group"));
                }
                let mut router = self.router.lock().expect("router lock");
                router.next_id += 1;
                let id = router.next_id;
                let timestamp = now();
                let frame = encode(&MessageFrame::Group {
                    kind: "message",
                    id,
                    group_id,
                    sender: from.name,
                    content,
                    timestamp: &timestamp,
                    message_type,
                    content_type,
                });
                for (member, _) in &group.members {
                    push_to(&router, *member, from.session, &frame);
                }
                self.last_id.store(id, Relaxed);
                Ok(Routed {
                    id,
                    timestamp,
                    status: "sent",
                })
            }
        }
    }
}

fn encode(frame: &MessageFrame<'_>) -> ByteString {
    ByteString::from(serde_json::to_string(frame).expect("frames serialise"))
}

/// Queues `frame` on every socket of `user` except `skip`.
fn push_to(router: &Router, user: UserId, skip: u64, frame: &ByteString) {
    if let Some(list) = router.sockets.get(user as usize) {
        for (session, push) in list {
            if *session != skip {
                push.do_send(Push(frame.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_case_insensitively_and_names_are_unique() {
        let mut directory = Directory::default();
        let alice = directory.register("Alice", "a@x", "pw").unwrap();
        assert_eq!(directory.find("alice"), Some(alice));
        assert_eq!(directory.find("ALICE"), Some(alice));
        assert_eq!(
            directory.register("alice", "b@x", "pw"),
            Err((409, "username: taken"))
        );
        assert!(directory.register("", "c@x", "pw").is_err());
        assert!(directory.login("alice", "wrong", "t1".into()).is_none());
        assert_eq!(
            directory.login("alice", "pw", "t2".into()).as_deref(),
            Some("t2")
        );
        assert_eq!(directory.authenticate("t2"), Some(alice));
        assert_eq!(directory.authenticate("t1"), None);
    }

    #[test]
    fn only_the_owner_adds_members_and_only_once() {
        let mut directory = Directory::default();
        let owner = directory.register("o", "o@x", "pw").unwrap();
        let bob = directory.register("b", "b@x", "pw").unwrap();
        let carol = directory.register("c", "c@x", "pw").unwrap();
        let group = directory.create_group(owner, "g", "");
        assert_eq!(directory.add_member(group, bob, carol).unwrap_err().0, 403);
        directory.add_member(group, owner, bob).unwrap();
        assert_eq!(directory.add_member(group, owner, bob).unwrap_err().0, 409);
        assert_eq!(
            directory.add_member(group + 1, owner, bob).unwrap_err().0,
            404
        );
        assert!(directory.groups[&group].has(bob));
        assert_eq!(directory.user(bob).groups, vec![group]);
    }

    #[test]
    fn message_frames_have_parleys_fields() {
        let text = encode(&MessageFrame::Group {
            kind: "message",
            id: 7,
            group_id: 3,
            sender: "a",
            content: "hi",
            timestamp: "2026-01-01T00:00:00.000Z",
            message_type: "text",
            content_type: "text/plain",
        });
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "message");
        assert_eq!(value["id"], 7);
        assert_eq!(value["group_id"], 3);
        assert_eq!(value["content"], "hi");
    }
}

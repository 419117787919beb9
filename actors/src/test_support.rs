//! Helpers for the crate's own actor tests: a chat on a fresh SQLite file
//! and users created through the persistence actor.

use crate::model::UserRef;
use crate::persistence::CreateUser;
use crate::{Chat, ChatSettings};

/// A started chat on a fresh SQLite file, and the directory to remove after.
pub(crate) async fn fresh_chat(test: &str) -> (Chat, std::path::PathBuf) {
    fresh_chat_with(test, ChatSettings::default()).await
}

/// [`fresh_chat`] with other settings.
pub(crate) async fn fresh_chat_with(
    test: &str,
    settings: ChatSettings,
) -> (Chat, std::path::PathBuf) {
    let (dir, url) = crate::store::fresh_test_database(test);
    let chat = Chat::start(&url, settings)
        .await
        .expect("start on a fresh SQLite file");
    (chat, dir)
}

/// Creates a user (without a real password hash).
pub(crate) async fn create_user(chat: &Chat, name: &str) -> UserRef {
    let user = chat
        .persistence()
        .send(CreateUser {
            username: name.into(),
            email: format!("{name}@example.com"),
            password_hash: "not a real hash".into(),
        })
        .await
        .expect("the writer answers")
        .expect("the user is created");
    UserRef {
        id: user.id,
        username: user.username.as_str().into(),
    }
}

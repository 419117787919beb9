-- Parley's schema on SQLite. Timestamps are Unix milliseconds (BIGINT) on
-- both backends so one query text serves both.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL,
    username_key  TEXT    NOT NULL,  -- lower-cased: unique and looked up case-insensitively
    email         TEXT    NOT NULL,
    email_key     TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    last_seen     BIGINT,           -- when the user's last socket closed (or first opened)
    token_generation BIGINT NOT NULL DEFAULT 0,  -- bumped by a password change: older tokens die
    deleted_at    BIGINT            -- set when the account is deleted; its name stays taken
);

-- Tokens revoked by logout, kept until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti        TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_username_key ON users (username_key);
CREATE UNIQUE INDEX users_email_key ON users (email_key);

-- One row per pair of users who have exchanged a private message, lower id
-- first: the contact list, and the key private history is read by.
CREATE TABLE conversations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_lo    BIGINT NOT NULL REFERENCES users (id),
    user_hi    BIGINT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    CHECK (user_lo < user_hi)
);
CREATE UNIQUE INDEX conversations_pair_key ON conversations (user_lo, user_hi);
CREATE INDEX conversations_user_hi ON conversations (user_hi);

CREATE TABLE chat_groups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL,
    created_by  BIGINT NOT NULL REFERENCES users (id),
    created_at  BIGINT NOT NULL,
    member_count BIGINT NOT NULL DEFAULT 0  -- kept by the writer; bounds presence fan-out
);

CREATE TABLE group_members (
    group_id    BIGINT NOT NULL REFERENCES chat_groups (id),
    user_id     BIGINT NOT NULL REFERENCES users (id),
    role        TEXT   NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at   BIGINT NOT NULL,
    read_cursor BIGINT NOT NULL DEFAULT 0,  -- highest group message id the member has read
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);


-- Private and group messages share one id sequence, so one sync cursor covers
-- both. Ids are handed out by the writer from `id_sequence`, a whole batch at
-- a time, so a batch of messages is stored with one multi-row INSERT.
CREATE TABLE id_sequence (
    name    TEXT   PRIMARY KEY,
    last_id BIGINT NOT NULL
);
INSERT INTO id_sequence (name, last_id) VALUES ('messages', 0);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    sender_id       BIGINT NOT NULL REFERENCES users (id),
    conversation_id BIGINT REFERENCES conversations (id),
    recipient_id    BIGINT REFERENCES users (id),
    group_id        BIGINT REFERENCES chat_groups (id),
    content         TEXT   NOT NULL,
    message_type    TEXT   NOT NULL,
    content_type    TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    status          TEXT   CHECK (status IN ('sent', 'delivered', 'read')),  -- private only
    client_id       TEXT,  -- the sender's idempotency key, if given
    CHECK ((conversation_id IS NULL) = (group_id IS NOT NULL))
);
CREATE INDEX messages_conversation ON messages (conversation_id, id) WHERE conversation_id IS NOT NULL;
CREATE INDEX messages_group ON messages (group_id, id) WHERE group_id IS NOT NULL;
CREATE UNIQUE INDEX messages_client_id_key ON messages (sender_id, client_id) WHERE client_id IS NOT NULL;

CREATE TABLE devices (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       BIGINT NOT NULL REFERENCES users (id),
    device_id     TEXT   NOT NULL,
    device_name   TEXT   NOT NULL,
    device_type   TEXT   NOT NULL,
    registered_at BIGINT NOT NULL,
    last_seen     BIGINT
);
CREATE UNIQUE INDEX devices_device_id_key ON devices (device_id);
CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE files (
    file_id     TEXT   PRIMARY KEY,  -- a UUID; also the name of the bytes on disk
    uploader_id BIGINT NOT NULL REFERENCES users (id),
    filename    TEXT   NOT NULL,
    size        BIGINT NOT NULL,
    upload_time BIGINT NOT NULL
);

-- Which messages mention which files (by id or url): who may download a
-- file besides its uploader.
CREATE TABLE file_refs (
    file_id    TEXT   NOT NULL REFERENCES files (file_id),
    message_id BIGINT NOT NULL REFERENCES messages (id),
    PRIMARY KEY (file_id, message_id)
);

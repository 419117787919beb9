-- Full-text search over message content (`GET /search`), kept by the
-- database itself so that every write path (new messages, edits, deletions
-- that empty `content`) updates the index without the writer knowing.

-- An external-content FTS5 index: it holds only the tokens, the text stays
-- in `messages`. Diacritics are kept (`remove_diacritics 0`) because the
-- Postgres index cannot fold them without an extension, and both backends
-- must find the same messages.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 0'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;

-- An external-content index forgets a row only when told the exact text it
-- indexed, hence `old.content`.
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;

-- Who left (or was removed from) a group, and the highest message id that
-- existed then: a former member's search covers what they could read while
-- a member, and nothing posted after. Re-joining shows the whole history
-- again (as to any member); leaving again moves the bound up.
CREATE TABLE group_departures (
    user_id         BIGINT NOT NULL REFERENCES users (id),
    group_id        BIGINT NOT NULL REFERENCES chat_groups (id),
    last_visible_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, group_id)
);

-- Ids are reserved and their messages inserted in one step of the writer's
-- batch, so `last_id` is the newest message stored when the member goes.
CREATE TRIGGER group_members_departure AFTER DELETE ON group_members BEGIN
    INSERT INTO group_departures (user_id, group_id, last_visible_id)
    VALUES (old.user_id, old.group_id, (SELECT last_id FROM id_sequence WHERE name = 'messages'))
    ON CONFLICT (user_id, group_id) DO UPDATE SET last_visible_id = excluded.last_visible_id;
END;

-- Full-text search over message content (`GET /search`), kept by the
-- database itself so that every write path (new messages, edits, deletions
-- that empty `content`) updates the index without the writer knowing.

-- The 'simple' configuration only lower-cases: no stemming and no stop
-- words, as SQLite's unicode61 tokenizer. ASCII punctuation becomes a space
-- first so that Postgres's parser sees words where SQLite does: left alone
-- it keeps `bob@example.com`, `example.com/a`, `3.14` or `v1.2` as single
-- tokens, which a search for `example` or `14` would then miss.
ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', translate(content,
        '!"#$%&''()*+,-./:;<=>?@[\]^_`{|}~',
        '                                '))
) STORED;
CREATE INDEX messages_search ON messages USING GIN (search_vector);

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
CREATE FUNCTION record_group_departure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO group_departures (user_id, group_id, last_visible_id)
    VALUES (OLD.user_id, OLD.group_id, (SELECT last_id FROM id_sequence WHERE name = 'messages'))
    ON CONFLICT (user_id, group_id) DO UPDATE SET last_visible_id = EXCLUDED.last_visible_id;
    RETURN OLD;
END;
$$;

CREATE TRIGGER group_members_departure AFTER DELETE ON group_members
    FOR EACH ROW EXECUTE FUNCTION record_group_departure();

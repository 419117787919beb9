-- Replies, edits, deletions and reactions.
--
-- A change to a stored message (edit, deletion, reaction) takes the next
-- value of the message id sequence as its `change_id`, so the one `sync`
-- cursor clients keep covers changes as well as new messages: a replay from
-- `since` sends every message above it and every older message whose last
-- change is above it, in its current state.
ALTER TABLE messages ADD COLUMN reply_to BIGINT;     -- a message of the same conversation
ALTER TABLE messages ADD COLUMN edited_at BIGINT;    -- last edit; earlier texts are not kept
ALTER TABLE messages ADD COLUMN deleted_at BIGINT;   -- a tombstone: content emptied, row kept
ALTER TABLE messages ADD COLUMN reactions TEXT;      -- JSON [{emoji, count, users}], kept by the writer
ALTER TABLE messages ADD COLUMN change_id BIGINT;    -- sequence value of the last change
CREATE INDEX messages_change ON messages (change_id) WHERE change_id IS NOT NULL;

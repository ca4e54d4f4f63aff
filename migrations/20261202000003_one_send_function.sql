-- One send path in SQL: `send_messages` writes every send, a batch of one
-- included (group commit, src/messages/group_commit.rs); `send_message`,
-- its one-send twin, goes.
DROP FUNCTION send_message(uuid, uuid, text, uuid);

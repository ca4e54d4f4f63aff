-- Reactions: one row per emoji a member put on a message, one of each per
-- person. The emoji are Knock's fixed set (REACTIONS in
-- src/messages/mod.rs). A deleted message loses its reactions.

CREATE TABLE reactions (
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id),
    emoji text NOT NULL CONSTRAINT reactions_emoji CHECK (emoji IN ('👍', '❤️', '😂', '😮', '😢', '🙏')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, emoji, user_id)
);

-- A message's reactions as the API shows them:
-- `[{"emoji": "👍", "user_ids": [...]}, ...]`, each emoji in the order it was
-- first chosen, each person in the order they chose it.
CREATE FUNCTION message_reactions(message uuid) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT COALESCE(jsonb_agg(jsonb_build_object('emoji', emoji, 'user_ids', user_ids) ORDER BY first), '[]')
    FROM (SELECT emoji, array_agg(user_id ORDER BY created_at) AS user_ids, min(created_at) AS first
            FROM reactions WHERE message_id = message GROUP BY emoji) r
$$;

-- The log carries `reaction` events too.
ALTER TABLE events DROP CONSTRAINT events_kind_known;
ALTER TABLE events ADD CONSTRAINT events_kind_known
    CHECK (kind IN ('message', 'dm', 'read', 'typing', 'presence', 'reaction'));

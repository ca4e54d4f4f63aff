-- Replies and images. A message may answer an earlier message of its DM
-- (`reply_to_id`) and may carry one image (`attachment_id`), uploaded to its
-- DM by its sender before the send; a message with an image may have no
-- text (the text is the image's caption).

CREATE TABLE attachments (
    id uuid PRIMARY KEY,
    dm_id uuid NOT NULL REFERENCES dms (id),
    uploader_id uuid NOT NULL REFERENCES users (id),
    content_type text NOT NULL CONSTRAINT attachments_content_type
        CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp', 'image/gif')),
    width integer NOT NULL CHECK (width > 0),
    height integer NOT NULL CHECK (height > 0),
    data bytea NOT NULL,
    thumbnail_content_type text NOT NULL
        CHECK (thumbnail_content_type IN ('image/jpeg', 'image/png')),
    thumbnail bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The target of messages' (attachment_id, dm_id): an image stays in its DM.
    UNIQUE (id, dm_id)
);
CREATE INDEX attachments_created_at ON attachments (created_at);

-- The target of messages' (reply_to_id, dm_id): a reply stays in its DM.
ALTER TABLE messages ADD CONSTRAINT messages_id_dm UNIQUE (id, dm_id);

ALTER TABLE messages
    ADD COLUMN reply_to_id uuid,
    ADD COLUMN attachment_id uuid CONSTRAINT messages_attachment_once UNIQUE,
    ADD CONSTRAINT messages_reply_in_dm FOREIGN KEY (reply_to_id, dm_id) REFERENCES messages (id, dm_id),
    ADD CONSTRAINT messages_attachment_in_dm FOREIGN KEY (attachment_id, dm_id) REFERENCES attachments (id, dm_id);
CREATE INDEX messages_reply_to ON messages (reply_to_id) WHERE reply_to_id IS NOT NULL;

-- A message with an image may have no text; a deleted one keeps neither.
ALTER TABLE messages DROP CONSTRAINT messages_body_length;
ALTER TABLE messages ADD CONSTRAINT messages_body_length CHECK (
    (deleted_at IS NULL AND (char_length(btrim(body, E' \t\r\n')) BETWEEN 1 AND 4000
                             OR (attachment_id IS NOT NULL AND body = '')))
    OR (deleted_at IS NOT NULL AND body = '' AND attachment_id IS NULL)
);

-- The message a reply quotes, as the API shows it:
-- `{id, seq, sender_id, excerpt, deleted}`; `excerpt` is its text on one
-- line, at most 100 characters ('' for a deleted or image-only message).
CREATE FUNCTION message_reply_to(reply_to uuid) RETURNS jsonb
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'id', r.id,
        'seq', r.seq,
        'sender_id', r.sender_id,
        'excerpt', left(btrim(regexp_replace(r.body, '\s+', ' ', 'g')), 100),
        'deleted', r.deleted_at IS NOT NULL)
      FROM messages r WHERE r.id = reply_to
$$;

-- An image as the API shows it: `{id, width, height, content_type}`.
CREATE FUNCTION attachment_json(attachment uuid) RETURNS jsonb
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT jsonb_build_object('id', a.id, 'width', a.width, 'height', a.height,
                              'content_type', a.content_type)
      FROM attachments a WHERE a.id = attachment
$$;

-- The `message` event's JSON carries both (left out when absent, as in the API).
CREATE OR REPLACE FUNCTION message_json(m messages) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'reply_to', message_reply_to(m.reply_to_id),
        'attachment', attachment_json(m.attachment_id)
    )) || jsonb_build_object(
        'id', m.id,
        'dm_id', m.dm_id,
        'seq', m.seq,
        'sender_id', m.sender_id,
        'body', m.body,
        'client_id', m.client_id,
        'created_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'edited_at', to_char(m.edited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'deleted', m.deleted_at IS NOT NULL
    )
$$;

-- `send_messages` takes each send's `reply_to_id` and `attachment_id` (NULL
-- for none) and answers `bad_reply` for a message that is not in the DM,
-- `bad_attachment` for an image that is not the sender's upload to the DM
-- or was already sent.
DROP FUNCTION send_messages(uuid[], uuid[], text[], uuid[]);

CREATE FUNCTION send_messages(
    p_dm_ids uuid[], p_sender_ids uuid[], p_bodies text[], p_client_ids uuid[],
    p_reply_to_ids uuid[], p_attachment_ids uuid[]
)
RETURNS TABLE (
    ord           integer,
    outcome       text,
    id            uuid,
    dm_id         uuid,
    seq           bigint,
    sender_id     uuid,
    body          text,
    client_id     uuid,
    created_at    timestamptz,
    edited_at     timestamptz,
    deleted_at    timestamptz,
    reply_to_id   uuid,
    attachment_id uuid
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_dm uuid;
BEGIN
    FOR v_dm IN SELECT DISTINCT u.d FROM unnest(p_dm_ids) AS u(d) ORDER BY u.d LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(v_dm::text, 2));
    END LOOP;
    -- Against a concurrent accept or decline.
    PERFORM 1 FROM dms d WHERE d.id = ANY (p_dm_ids) ORDER BY d.id FOR UPDATE;
    RETURN QUERY
    WITH input AS (
        SELECT t.ord::integer AS ord, t.dm_id, t.sender_id, t.body, t.client_id,
               t.reply_to_id, t.attachment_id
          FROM unnest(p_dm_ids, p_sender_ids, p_bodies, p_client_ids, p_reply_to_ids, p_attachment_ids)
               WITH ORDINALITY AS t (dm_id, sender_id, body, client_id, reply_to_id, attachment_id, ord)
    ), checked AS (
        SELECT i.ord, i.dm_id, i.sender_id, i.body, i.client_id, i.reply_to_id, i.attachment_id,
               prior.id AS prior_id,
               CASE
                   WHEN m.user_id IS NULL THEN 'not_found'
                   WHEN prior.id IS NOT NULL AND prior.dm_id = i.dm_id THEN 'existing'
                   WHEN prior.id IS NOT NULL THEN 'client_id_used'
                   WHEN d.status <> 'ACTIVE' THEN 'not_active'
                   WHEN EXISTS (SELECT 1 FROM dm_members o JOIN users u ON u.id = o.user_id
                                 WHERE o.dm_id = i.dm_id AND o.user_id <> i.sender_id
                                   AND u.deleted_at IS NOT NULL) THEN 'read_only'
                   WHEN EXISTS (SELECT 1 FROM blocks b JOIN dm_members o ON o.user_id = b.blocker_id
                                 WHERE o.dm_id = i.dm_id AND o.user_id <> i.sender_id
                                   AND b.blocked_id = i.sender_id) THEN 'blocked'
                   WHEN i.reply_to_id IS NOT NULL AND NOT EXISTS (
                            SELECT 1 FROM messages r WHERE r.id = i.reply_to_id AND r.dm_id = i.dm_id)
                        THEN 'bad_reply'
                   WHEN i.attachment_id IS NOT NULL AND (
                            NOT EXISTS (SELECT 1 FROM attachments a
                                         WHERE a.id = i.attachment_id AND a.dm_id = i.dm_id
                                           AND a.uploader_id = i.sender_id)
                            OR EXISTS (SELECT 1 FROM messages u WHERE u.attachment_id = i.attachment_id)
                            OR count(*) OVER (PARTITION BY i.attachment_id) > 1)
                        THEN 'bad_attachment'
                   ELSE 'sent'
               END AS outcome
          FROM input i
          LEFT JOIN dms d ON d.id = i.dm_id
          LEFT JOIN dm_members m ON m.dm_id = i.dm_id AND m.user_id = i.sender_id
          LEFT JOIN messages prior ON prior.sender_id = i.sender_id AND prior.client_id = i.client_id
    ), to_send AS (
        SELECT c.*, row_number() OVER (PARTITION BY c.dm_id ORDER BY c.ord) AS k
          FROM checked c
         WHERE c.outcome = 'sent'
    ), counts AS (
        SELECT t.dm_id, count(*) AS n FROM to_send t GROUP BY t.dm_id
    ), numbered AS (
        UPDATE dms d SET last_seq = d.last_seq + counts.n, updated_at = now()
          FROM counts
         WHERE d.id = counts.dm_id
        RETURNING d.id AS dm_id, d.last_seq - counts.n AS base
    ), sent AS (
        INSERT INTO messages (dm_id, seq, sender_id, body, client_id, reply_to_id, attachment_id)
        SELECT t.dm_id, n.base + t.k, t.sender_id, t.body, t.client_id, t.reply_to_id, t.attachment_id
          FROM to_send t JOIN numbered n ON n.dm_id = t.dm_id
        RETURNING *
    ), marked AS (
        -- What I sent, I have read.
        UPDATE dm_members a SET last_read_seq = s.seq
          FROM (SELECT s.dm_id, s.sender_id, max(s.seq) AS seq FROM sent s GROUP BY s.dm_id, s.sender_id) s
         WHERE a.dm_id = s.dm_id AND a.user_id = s.sender_id
    ), dm_members_of AS (
        SELECT a.dm_id, array_agg(a.user_id) AS members
          FROM dm_members a
         WHERE a.dm_id IN (SELECT c.dm_id FROM counts c)
         GROUP BY a.dm_id
    ), logged AS (
        INSERT INTO events (user_id, kind, payload)
        SELECT member, 'message',
               message_json(ROW(s.*)::messages)
          FROM sent s
          JOIN dm_members_of mb ON mb.dm_id = s.dm_id
         CROSS JOIN LATERAL unnest(mb.members) AS member
         ORDER BY s.dm_id, s.seq
    )
    SELECT c.ord, c.outcome,
           msg.id, msg.dm_id, msg.seq, msg.sender_id, msg.body, msg.client_id,
           msg.created_at, msg.edited_at, msg.deleted_at, msg.reply_to_id, msg.attachment_id
      FROM checked c
      LEFT JOIN LATERAL (
          SELECT s.* FROM sent s
           WHERE c.outcome = 'sent' AND s.sender_id = c.sender_id AND s.client_id = c.client_id
          UNION ALL
          SELECT p.* FROM messages p
           WHERE c.outcome = 'existing' AND p.id = c.prior_id
      ) msg ON true
     ORDER BY c.ord;
END
$$;

-- A `message` event carries the whole message, as the API returns it
-- (`Message` in src/messages/mod.rs), so that a page showing the
-- conversation adds it without asking for it. `send_message` and
-- `send_messages` are as before but for the events they log.

-- A message as JSON: `{id, dm_id, seq, sender_id, body, client_id,
-- created_at, edited_at, deleted}`, timestamps as RFC 3339 text in UTC with
-- milliseconds (the select list `COLUMNS` in src/messages/server.rs).
CREATE FUNCTION message_json(m messages) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
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

CREATE OR REPLACE FUNCTION send_message(p_dm_id uuid, p_sender_id uuid, p_body text, p_client_id uuid)
RETURNS TABLE (
    outcome    text,
    members    uuid[],
    id         uuid,
    dm_id      uuid,
    seq        bigint,
    sender_id  uuid,
    body       text,
    client_id  uuid,
    created_at timestamptz,
    edited_at  timestamptz,
    deleted_at timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_status      dm_status;
    v_existing    uuid;
    v_existing_dm uuid;
    v_blocked     boolean;
    v_members     uuid[];
    v_message     messages%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_dm_id::text, 2));
    -- Everything the checks need, in one statement, with the DM row locked
    -- against a concurrent accept or decline.
    SELECT d.status, prior.id, prior.dm_id,
           EXISTS (SELECT 1 FROM blocks b JOIN dm_members o ON o.user_id = b.blocker_id
                    WHERE o.dm_id = d.id AND o.user_id <> p_sender_id
                      AND b.blocked_id = p_sender_id),
           (SELECT array_agg(a.user_id) FROM dm_members a WHERE a.dm_id = d.id)
      INTO v_status, v_existing, v_existing_dm, v_blocked, v_members
      FROM dms d
      JOIN dm_members m ON m.dm_id = d.id AND m.user_id = p_sender_id
      LEFT JOIN messages prior ON prior.sender_id = p_sender_id AND prior.client_id = p_client_id
     WHERE d.id = p_dm_id
       FOR UPDATE OF d;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found', NULL::uuid[], (NULL::messages).*;
    ELSIF v_existing IS NOT NULL AND v_existing_dm = p_dm_id THEN
        RETURN QUERY SELECT 'existing', NULL::uuid[], prior.* FROM messages prior
                      WHERE prior.id = v_existing;
    ELSIF v_existing IS NOT NULL THEN
        RETURN QUERY SELECT 'client_id_used', NULL::uuid[], (NULL::messages).*;
    ELSIF v_status <> 'ACTIVE' THEN
        RETURN QUERY SELECT 'not_active', NULL::uuid[], (NULL::messages).*;
    ELSIF v_blocked THEN
        RETURN QUERY SELECT 'blocked', NULL::uuid[], (NULL::messages).*;
    ELSE
        -- The writes, in one statement: the next `seq`, the message, the
        -- sender's read position (what I sent, I have read), the events.
        WITH numbered AS (
            UPDATE dms SET last_seq = last_seq + 1, updated_at = now()
             WHERE id = p_dm_id
            RETURNING last_seq
        ), sent AS (
            INSERT INTO messages (dm_id, seq, sender_id, body, client_id)
            SELECT p_dm_id, numbered.last_seq, p_sender_id, p_body, p_client_id FROM numbered
            RETURNING *
        ), marked AS (
            UPDATE dm_members SET last_read_seq = (SELECT sent.seq FROM sent)
             WHERE dm_id = p_dm_id AND user_id = p_sender_id
        ), logged AS (
            INSERT INTO events (user_id, kind, payload)
            SELECT member, 'message',
                   message_json(ROW(sent.*)::messages)
              FROM sent, unnest(v_members) AS member
        )
        SELECT * INTO v_message FROM sent;
        RETURN QUERY SELECT 'sent', v_members, (v_message).*;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION send_messages(
    p_dm_ids uuid[], p_sender_ids uuid[], p_bodies text[], p_client_ids uuid[]
)
RETURNS TABLE (
    ord        integer,
    outcome    text,
    members    uuid[],
    id         uuid,
    dm_id      uuid,
    seq        bigint,
    sender_id  uuid,
    body       text,
    client_id  uuid,
    created_at timestamptz,
    edited_at  timestamptz,
    deleted_at timestamptz
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
        SELECT t.ord::integer AS ord, t.dm_id, t.sender_id, t.body, t.client_id
          FROM unnest(p_dm_ids, p_sender_ids, p_bodies, p_client_ids)
               WITH ORDINALITY AS t (dm_id, sender_id, body, client_id, ord)
    ), checked AS (
        SELECT i.ord, i.dm_id, i.sender_id, i.body, i.client_id, prior.id AS prior_id,
               CASE
                   WHEN m.user_id IS NULL THEN 'not_found'
                   WHEN prior.id IS NOT NULL AND prior.dm_id = i.dm_id THEN 'existing'
                   WHEN prior.id IS NOT NULL THEN 'client_id_used'
                   WHEN d.status <> 'ACTIVE' THEN 'not_active'
                   WHEN EXISTS (SELECT 1 FROM blocks b JOIN dm_members o ON o.user_id = b.blocker_id
                                 WHERE o.dm_id = i.dm_id AND o.user_id <> i.sender_id
                                   AND b.blocked_id = i.sender_id) THEN 'blocked'
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
        INSERT INTO messages (dm_id, seq, sender_id, body, client_id)
        SELECT t.dm_id, n.base + t.k, t.sender_id, t.body, t.client_id
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
    SELECT c.ord, c.outcome, CASE WHEN c.outcome = 'sent' THEN mb.members END,
           msg.id, msg.dm_id, msg.seq, msg.sender_id, msg.body, msg.client_id,
           msg.created_at, msg.edited_at, msg.deleted_at
      FROM checked c
      LEFT JOIN dm_members_of mb ON mb.dm_id = c.dm_id
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

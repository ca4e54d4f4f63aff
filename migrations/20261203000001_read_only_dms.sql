-- A DM whose other member deleted their account is read-only (DESIGN §5):
-- `send_messages` answers `read_only` for it. Its result loses the
-- `members` column, which nothing read.
DROP FUNCTION send_messages(uuid[], uuid[], text[], uuid[]);

CREATE FUNCTION send_messages(
    p_dm_ids uuid[], p_sender_ids uuid[], p_bodies text[], p_client_ids uuid[]
)
RETURNS TABLE (
    ord        integer,
    outcome    text,
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
                   WHEN EXISTS (SELECT 1 FROM dm_members o JOIN users u ON u.id = o.user_id
                                 WHERE o.dm_id = i.dm_id AND o.user_id <> i.sender_id
                                   AND u.deleted_at IS NOT NULL) THEN 'read_only'
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
    SELECT c.ord, c.outcome,
           msg.id, msg.dm_id, msg.seq, msg.sender_id, msg.body, msg.client_id,
           msg.created_at, msg.edited_at, msg.deleted_at
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

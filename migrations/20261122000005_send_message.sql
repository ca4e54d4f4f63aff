-- Sending a message in one statement: one round trip instead of the nine of
-- a transaction driven from the server (lock, idempotency check, block
-- check, `seq`, insert, read position, members, events, commit).
--
-- The DM is first locked with a transaction-scoped advisory lock, before
-- the transaction writes anything and so before it has a transaction id:
-- the next sender of the DM gets its id only after the previous one
-- committed. The event log is read in transaction-id order (see the
-- `events` migration), so a DM's `message` events are then in `seq` order.
-- (With only the row lock, a sender could take its id, wait for the lock,
-- and commit `seq` n + 1 under a smaller id than `seq` n.)
--
-- Returns one row: `outcome` is `sent`, `existing` (a retried `client_id`:
-- the message it made), `client_id_used` (that `client_id` made a message
-- in another DM), `not_found` (no such DM, or the sender is not in it),
-- `not_active` or `blocked`; `members` are the DM's members (for `sent`),
-- and the other columns are the message's (NULL unless `sent` or
-- `existing`). The caller checks the body (1–4000 characters after
-- trimming; the `messages_body_length` constraint backs it).
CREATE FUNCTION send_message(p_dm_id uuid, p_sender_id uuid, p_body text, p_client_id uuid)
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
                   jsonb_build_object('dm_id', p_dm_id, 'message_id', sent.id, 'seq', sent.seq)
              FROM sent, unnest(v_members) AS member
        )
        SELECT * INTO v_message FROM sent;
        RETURN QUERY SELECT 'sent', v_members, (v_message).*;
    END IF;
END
$$;

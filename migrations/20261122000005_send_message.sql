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
    v_status  dm_status;
    v_message messages%ROWTYPE;
    v_members uuid[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_dm_id::text, 2));
    SELECT d.status INTO v_status
      FROM dms d JOIN dm_members m ON m.dm_id = d.id AND m.user_id = p_sender_id
     WHERE d.id = p_dm_id
       FOR UPDATE OF d;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found', NULL::uuid[], (NULL::messages).*;
        RETURN;
    END IF;
    SELECT * INTO v_message FROM messages
     WHERE sender_id = p_sender_id AND client_id = p_client_id;
    IF FOUND THEN
        IF v_message.dm_id = p_dm_id THEN
            RETURN QUERY SELECT 'existing', NULL::uuid[], (v_message).*;
        ELSE
            RETURN QUERY SELECT 'client_id_used', NULL::uuid[], (NULL::messages).*;
        END IF;
        RETURN;
    END IF;
    IF v_status <> 'ACTIVE' THEN
        RETURN QUERY SELECT 'not_active', NULL::uuid[], (NULL::messages).*;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM blocks b JOIN dm_members o ON o.user_id = b.blocker_id
                WHERE o.dm_id = p_dm_id AND o.user_id <> p_sender_id
                  AND b.blocked_id = p_sender_id) THEN
        RETURN QUERY SELECT 'blocked', NULL::uuid[], (NULL::messages).*;
        RETURN;
    END IF;
    UPDATE dms SET last_seq = last_seq + 1, updated_at = now()
     WHERE id = p_dm_id
    RETURNING last_seq INTO v_message.seq;
    INSERT INTO messages (dm_id, seq, sender_id, body, client_id)
    VALUES (p_dm_id, v_message.seq, p_sender_id, p_body, p_client_id)
    RETURNING * INTO v_message;
    -- What I sent, I have read.
    UPDATE dm_members SET last_read_seq = v_message.seq
     WHERE dm_id = p_dm_id AND user_id = p_sender_id;
    SELECT array_agg(user_id) INTO v_members FROM dm_members WHERE dm_id = p_dm_id;
    INSERT INTO events (user_id, kind, payload)
    SELECT unnest(v_members), 'message',
           jsonb_build_object('dm_id', p_dm_id, 'message_id', v_message.id,
                              'seq', v_message.seq);
    RETURN QUERY SELECT 'sent', v_members, (v_message).*;
END
$$;

-- Group commit: several sends in one transaction, so that they share one
-- commit (one WAL flush) and one round trip instead of one each.
--
-- Item `i` of the arrays is one send, as `send_message` takes it; the
-- result has `send_message`'s row for each item, `ord` = `i`, in item
-- order. The DMs' advisory locks are all taken first, in `dm_id` order:
-- before anything is written (so before the transaction has an id, as
-- `send_message` requires for the log's order) and in one order for every
-- batch (so two batches cannot wait for each other). `send_message` takes
-- its DM's lock again, which a transaction that holds it gets at once.
-- Items of one DM are numbered in item order; a retried `client_id` later
-- in the same batch finds the message an earlier item made (`existing`).
CREATE FUNCTION send_messages(
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
DECLARE
    v_dm uuid;
BEGIN
    FOR v_dm IN SELECT DISTINCT u.d FROM unnest(p_dm_ids) AS u(d) ORDER BY u.d LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(v_dm::text, 2));
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(p_dm_ids), 0) LOOP
        RETURN QUERY
            SELECT i, s.*
              FROM send_message(p_dm_ids[i], p_sender_ids[i], p_bodies[i], p_client_ids[i]) AS s;
    END LOOP;
END
$$;

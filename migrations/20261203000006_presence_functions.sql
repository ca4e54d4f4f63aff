-- The two presence rules, each in one place, for every statement that
-- shows presence (src/realtime/presence.rs, src/dms/server.rs):
-- `has_live_stream`: the user has an event stream on an instance that sent
-- a heartbeat in the last 30 s; `blocked_between`: a block stands between
-- the two users, either way.

CREATE FUNCTION has_live_stream(who uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT EXISTS (SELECT 1 FROM presence p JOIN instances i ON i.id = p.instance_id
                  WHERE p.user_id = who AND i.seen_at > now() - interval '30 seconds')
$$;

CREATE FUNCTION blocked_between(a uuid, b uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT EXISTS (SELECT 1 FROM blocks WHERE (blocker_id, blocked_id) IN ((a, b), (b, a)))
$$;

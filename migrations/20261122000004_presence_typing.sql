-- Typing hints and presence travel through the same event log as messages.
ALTER TABLE events DROP CONSTRAINT events_kind_known;
ALTER TABLE events ADD CONSTRAINT events_kind_known
    CHECK (kind IN ('message', 'dm', 'read', 'typing', 'presence'));

-- Server instances that hold event streams, with their last heartbeat. An
-- instance that stops beating (killed, cut off) is swept by the others.
CREATE TABLE instances (
    id      uuid        PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- Open event streams per user per instance: a user is online while any
-- live instance holds at least one.
CREATE TABLE presence (
    instance_id uuid    NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    user_id     uuid    NOT NULL REFERENCES users (id),
    streams     integer NOT NULL,
    CONSTRAINT presence_pkey PRIMARY KEY (instance_id, user_id),
    CONSTRAINT presence_streams_positive CHECK (streams > 0)
);
CREATE INDEX presence_user_id_idx ON presence (user_id);

-- How far the event log has been pruned: events of transactions up to
-- `pruned_through` may be gone, so a stream resuming from before it is
-- told to resync.
CREATE TABLE events_horizon (
    singleton      boolean PRIMARY KEY DEFAULT true,
    pruned_through xid8    NOT NULL DEFAULT '0',
    CONSTRAINT events_horizon_singleton CHECK (singleton)
);
INSERT INTO events_horizon DEFAULT VALUES;
CREATE INDEX events_created_at_idx ON events (created_at);

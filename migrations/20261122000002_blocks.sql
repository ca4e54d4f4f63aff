-- A user can block another: invites from the blocked user are declined
-- silently (the blocker never sees them) and they cannot message.
CREATE TABLE blocks (
    blocker_id uuid        NOT NULL REFERENCES users (id),
    blocked_id uuid        NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT blocks_pkey PRIMARY KEY (blocker_id, blocked_id),
    CONSTRAINT blocks_not_self CHECK (blocker_id <> blocked_id)
);
CREATE INDEX blocks_blocked_id_idx ON blocks (blocked_id);

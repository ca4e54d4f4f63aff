-- The durable event log behind `GET /api/events` (SSE): one row per
-- recipient per event, carrying ids only. Rows are read in commit-safe
-- order: by the writing transaction's id, then by `id`, and only from
-- transactions older than every transaction still running
-- (`pg_snapshot_xmin`), so a row that commits late is never skipped.
CREATE TABLE events (
    id         bigserial   PRIMARY KEY,
    tx_id      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    user_id    uuid        NOT NULL REFERENCES users (id),
    kind       text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_kind_known CHECK (kind IN ('message', 'dm', 'read'))
);
CREATE INDEX events_user_cursor_idx ON events (user_id, tx_id, id);

-- No live user holds a tombstone's name (`deleted-` + md5 of the Clerk id),
-- so a deletion can always take its tombstone name. Live names of that
-- shape become `deleted_…`, as new ones are made.
UPDATE users SET username = 'deleted_' || substr(username, 9)
 WHERE deleted_at IS NULL AND lower(username) LIKE 'deleted-%';
ALTER TABLE users ADD CONSTRAINT users_live_username_not_tombstone
    CHECK (deleted_at IS NOT NULL OR lower(username) NOT LIKE 'deleted-%');

-- Webhook payloads are pruned once processed and old
-- (`webhooks::worker::prune`).
CREATE INDEX webhook_events_processed_idx ON webhook_events (processed_at)
    WHERE status IN ('done', 'ignored');

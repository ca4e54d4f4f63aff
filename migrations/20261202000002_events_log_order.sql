-- Each server process reads the whole event log once, in commit-safe order
-- (`tx_id`, then `id`), and hands the events to its open streams.
CREATE INDEX events_log_order_idx ON events (tx_id, id);

-- Full-text search over message text. The `simple` configuration keeps
-- every word as it is (lower-cased, no stemming, no stop words), so that
-- words of any language match. Deleted messages have an empty body, and
-- the search leaves them out besides.
ALTER TABLE messages
    ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED;
CREATE INDEX messages_search ON messages USING gin (search);

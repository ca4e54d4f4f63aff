-- Images may be kept in an object store (KNOCK_ATTACHMENT_STORE): their
-- row then holds no bytes. An image and its thumbnail live in the same place.
ALTER TABLE attachments
    ALTER COLUMN data DROP NOT NULL,
    ALTER COLUMN thumbnail DROP NOT NULL,
    ADD CONSTRAINT attachments_bytes_together CHECK ((data IS NULL) = (thumbnail IS NULL));

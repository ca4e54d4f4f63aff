-- Knock's schema: users from Clerk, DMs as a handshake, messages, and the
-- Clerk webhook inbox. Every invariant the database can hold is a constraint
-- here; application code relies on these, it does not re-implement them.

CREATE TYPE dm_status AS ENUM ('INVITED', 'ACTIVE', 'DECLINED');
CREATE TYPE member_status AS ENUM ('PENDING', 'ACCEPTED', 'DECLINED');

-- One row per Clerk user. `clerk_id` is Clerk's `user_…` id (the session
-- token's `sub`); `id` is Knock's own id, used in URLs (`/chat/{id}`).
CREATE TABLE users (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    clerk_id         text        NOT NULL,
    username         text        NOT NULL,
    email            text,
    first_name       text,
    last_name        text,
    image_url        text,
    -- Clerk's `updated_at` of the data held here; an older event never
    -- overwrites newer data.
    clerk_updated_at timestamptz,
    -- Set when Clerk sends `user.deleted`: the profile is scrubbed and the
    -- row stays so that DMs and messages keep their foreign keys.
    deleted_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_clerk_id_key UNIQUE (clerk_id),
    CONSTRAINT users_username_length CHECK (char_length(username) BETWEEN 1 AND 64),
    CONSTRAINT users_username_trimmed CHECK (username = btrim(username))
);
-- Usernames are unique regardless of case.
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

-- One DM per unordered pair of distinct users: the pair is stored ordered
-- (user_a_id < user_b_id) and `dm_key` is derived from it, so a second DM
-- for the same two people cannot exist.
CREATE TABLE dms (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_a_id          uuid        NOT NULL REFERENCES users (id),
    user_b_id          uuid        NOT NULL REFERENCES users (id),
    dm_key             text        NOT NULL
        GENERATED ALWAYS AS (user_a_id::text || ':' || user_b_id::text) STORED,
    status             dm_status   NOT NULL DEFAULT 'INVITED',
    invited_by_user_id uuid        NOT NULL REFERENCES users (id),
    -- The last `seq` handed out to a message of this DM (0 = none yet).
    last_seq           bigint      NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dms_dm_key_key UNIQUE (dm_key),
    CONSTRAINT dms_users_ordered CHECK (user_a_id < user_b_id),
    CONSTRAINT dms_inviter_is_member CHECK (invited_by_user_id IN (user_a_id, user_b_id)),
    CONSTRAINT dms_last_seq_nonnegative CHECK (last_seq >= 0)
);
CREATE INDEX dms_user_b_id_idx ON dms (user_b_id);

-- Each side of a DM with its own handshake status and read position.
CREATE TABLE dm_members (
    dm_id         uuid          NOT NULL REFERENCES dms (id) ON DELETE CASCADE,
    user_id       uuid          NOT NULL REFERENCES users (id),
    status        member_status NOT NULL,
    -- The highest message `seq` this member has read (0 = none).
    last_read_seq bigint        NOT NULL DEFAULT 0,
    created_at    timestamptz   NOT NULL DEFAULT now(),
    updated_at    timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT dm_members_pkey PRIMARY KEY (dm_id, user_id),
    CONSTRAINT dm_members_last_read_seq_nonnegative CHECK (last_read_seq >= 0)
);
CREATE INDEX dm_members_user_id_idx ON dm_members (user_id);

-- Messages, ordered within their DM by a gapless `seq` counting from 1.
-- `client_id` is the sender's idempotency key: a retried send finds the
-- message it already created.
CREATE TABLE messages (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    dm_id      uuid        NOT NULL,
    seq        bigint      NOT NULL,
    sender_id  uuid        NOT NULL,
    body       text        NOT NULL,
    client_id  uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    edited_at  timestamptz,
    deleted_at timestamptz,
    CONSTRAINT messages_dm_id_seq_key UNIQUE (dm_id, seq),
    CONSTRAINT messages_sender_id_client_id_key UNIQUE (sender_id, client_id),
    -- Only a member of the DM can have sent a message in it.
    CONSTRAINT messages_sender_is_member FOREIGN KEY (dm_id, sender_id)
        REFERENCES dm_members (dm_id, user_id) ON DELETE CASCADE,
    CONSTRAINT messages_seq_positive CHECK (seq >= 1),
    -- 1–4000 characters after trimming; a deleted message keeps no text.
    CONSTRAINT messages_body_length CHECK (
        (deleted_at IS NULL AND char_length(btrim(body, E' \t\r\n')) BETWEEN 1 AND 4000)
        OR (deleted_at IS NOT NULL AND body = '')
    )
);

-- The Clerk webhook inbox: every verified delivery, keyed by its `svix-id`,
-- stored before it is acknowledged and then processed (with retries) from here.
CREATE TABLE webhook_events (
    svix_id         text        PRIMARY KEY,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    CONSTRAINT webhook_events_status_known
        CHECK (status IN ('pending', 'processing', 'done', 'failed', 'ignored')),
    CONSTRAINT webhook_events_attempts_nonnegative CHECK (attempts >= 0)
);
CREATE INDEX webhook_events_due_idx ON webhook_events (next_attempt_at)
    WHERE status IN ('pending', 'failed');

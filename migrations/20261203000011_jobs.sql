-- Background jobs: one queue for every kind of deferred work (applying a
-- Clerk webhook delivery, sending a welcome email), claimed with
-- `FOR UPDATE SKIP LOCKED` by any instance (`jobs::server`).
--
-- status: `pending` (due at `run_at`), `running` (leased by an instance until
-- `run_at`; an expired lease is claimed again), `retrying` (the last attempt
-- failed; due again at `run_at`), `done`, `failed` (a permanent error, or
-- attempts used up; only an operator's retry brings it back).
-- steps: each finished step's outcome, `{name: {"outcome": text, "at": time}}`;
-- a step recorded here is never run again for this job.
CREATE TABLE jobs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text        NOT NULL,
    subject      text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL,
    run_at       timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    steps        jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    -- One job per kind and subject: one run per webhook delivery, one
    -- welcome email per user.
    CONSTRAINT jobs_kind_subject_key UNIQUE (kind, subject),
    CONSTRAINT jobs_kind_known CHECK (kind IN ('clerk_webhook', 'welcome_email')),
    CONSTRAINT jobs_status_known
        CHECK (status IN ('pending', 'running', 'retrying', 'done', 'failed')),
    CONSTRAINT jobs_attempts_in_range CHECK (attempts >= 0 AND max_attempts >= 1),
    CONSTRAINT jobs_finished_when_final
        CHECK ((status IN ('done', 'failed')) = (finished_at IS NOT NULL)),
    CONSTRAINT jobs_steps_object CHECK (jsonb_typeof(steps) = 'object')
);
CREATE INDEX jobs_due_idx ON jobs (run_at, id) WHERE status IN ('pending', 'running', 'retrying');
CREATE INDEX jobs_newest_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE status = 'done';

-- Webhook deliveries keep their payload; their processing is a job.
INSERT INTO jobs (kind, subject, status, attempts, max_attempts, run_at, last_error,
                  created_at, finished_at)
SELECT 'clerk_webhook', svix_id,
       CASE status WHEN 'ignored' THEN 'done' WHEN 'failed' THEN 'retrying'
                   WHEN 'processing' THEN 'pending' ELSE status END,
       attempts, GREATEST(12, attempts + 1), next_attempt_at, last_error, received_at,
       CASE WHEN status IN ('done', 'ignored') THEN COALESCE(processed_at, now()) END
  FROM webhook_events;

DROP INDEX webhook_events_due_idx;
DROP INDEX webhook_events_processed_idx;
ALTER TABLE webhook_events
    DROP CONSTRAINT webhook_events_status_known,
    DROP CONSTRAINT webhook_events_attempts_nonnegative,
    DROP COLUMN status,
    DROP COLUMN attempts,
    DROP COLUMN last_error,
    DROP COLUMN next_attempt_at;
CREATE INDEX webhook_events_processed_idx ON webhook_events (processed_at)
    WHERE processed_at IS NOT NULL;


-- Token-bucket rate limiting and a background job queue (SKIP LOCKED workers).

CREATE TABLE rate_limit_buckets (
    key             TEXT PRIMARY KEY,             -- e.g. 'user:<uuid>:api' or 'ip:203.0.113.7:login'
    tokens          DOUBLE PRECISION NOT NULL CHECK (tokens >= 0),
    capacity        INTEGER NOT NULL CHECK (capacity > 0),
    refill_per_sec  DOUBLE PRECISION NOT NULL CHECK (refill_per_sec > 0),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rate_limit_buckets_updated_at_idx ON rate_limit_buckets (updated_at);

CREATE TYPE job_status AS ENUM ('queued', 'running', 'succeeded', 'failed', 'dead');

CREATE TABLE background_jobs (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue           TEXT NOT NULL DEFAULT 'default',
    kind            TEXT NOT NULL,
    payload         JSONB NOT NULL DEFAULT '{}'::jsonb,
    status          job_status NOT NULL DEFAULT 'queued',
    priority        SMALLINT NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts    INTEGER NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    run_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_at       TIMESTAMPTZ,
    locked_by       TEXT,
    last_error      TEXT,
    user_id         UUID REFERENCES users (id) ON DELETE SET NULL,
    dedupe_key      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    CHECK ((status = 'running') = (locked_at IS NOT NULL))
);
-- Workers poll the ready jobs of a queue, highest priority first.
CREATE INDEX background_jobs_ready_idx ON background_jobs (queue, priority DESC, run_at)
    WHERE status = 'queued';
CREATE INDEX background_jobs_user_idx ON background_jobs (user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX background_jobs_dedupe_idx ON background_jobs (queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');

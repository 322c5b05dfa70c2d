-- A table the backend's /health writes to, proving the database accepts writes.

CREATE TABLE health_checks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    component       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('ok', 'degraded', 'down')),
    latency_ms      DOUBLE PRECISION CHECK (latency_ms >= 0),
    details         JSONB NOT NULL DEFAULT '{}'::jsonb,
    checked_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX health_checks_component_idx ON health_checks (component, checked_at DESC);

-- Richer audit context and per-endpoint rate-limit policies.

ALTER TABLE audit_log
    ADD COLUMN session_id UUID REFERENCES user_sessions (id) ON DELETE SET NULL,
    ADD COLUMN severity TEXT NOT NULL DEFAULT 'info' CHECK (severity IN ('debug', 'info', 'warning', 'critical'));
CREATE INDEX audit_log_severity_idx ON audit_log (severity, occurred_at DESC) WHERE severity IN ('warning', 'critical');

CREATE TABLE rate_limit_policies (
    name            TEXT PRIMARY KEY,
    scope           TEXT NOT NULL CHECK (scope IN ('ip', 'user', 'api_key', 'global')),
    capacity        INTEGER NOT NULL CHECK (capacity > 0),
    refill_per_sec  DOUBLE PRECISION NOT NULL CHECK (refill_per_sec > 0),
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO rate_limit_policies (name, scope, capacity, refill_per_sec) VALUES
    ('login', 'ip', 10, 0.1),
    ('api', 'user', 120, 2),
    ('search', 'user', 30, 0.5);

CREATE TABLE rate_limit_violations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy          TEXT NOT NULL REFERENCES rate_limit_policies (name) ON UPDATE CASCADE,
    bucket_key      TEXT NOT NULL,
    user_id         UUID REFERENCES users (id) ON DELETE SET NULL,
    ip_address      INET,
    occurred_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rate_limit_violations_recent_idx ON rate_limit_violations (policy, occurred_at DESC);

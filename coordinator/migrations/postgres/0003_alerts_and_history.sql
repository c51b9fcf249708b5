-- Tenant health: threshold overrides, alerts with their history, silences
-- and per-minute health rollups.

-- A tenant's own thresholds (JSON of every level); no row: the defaults.
CREATE TABLE tenant_thresholds (
    tenant_id  TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    thresholds TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    updated_by TEXT NOT NULL
);

-- One alert per (tenant, check) at a time.
--   state      firing | flapping | resolved
--   sequence   its last transition's number (the idempotency key's second half)
--   notified   whether a firing notification went out (a silenced alert's
--              resolution is only sent when it did, or when configured)
CREATE TABLE alerts (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    check_name       TEXT NOT NULL,
    severity         TEXT NOT NULL,
    state            TEXT NOT NULL,
    sequence         BIGINT NOT NULL,
    summary          TEXT NOT NULL,
    value            TEXT NOT NULL,
    threshold        TEXT NOT NULL,
    opened_at        TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    resolved_at      TIMESTAMPTZ,
    resolved_by      TEXT,
    resolve_note     TEXT,
    acknowledged_at  TIMESTAMPTZ,
    acknowledged_by  TEXT,
    notified         BOOLEAN NOT NULL DEFAULT FALSE,
    last_notified_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (tenant_id, check_name) WHERE resolved_at IS NULL;
CREATE INDEX alerts_by_tenant ON alerts (tenant_id, opened_at);
CREATE INDEX alerts_resolved ON alerts (resolved_at) WHERE resolved_at IS NOT NULL;

-- Every transition of an alert, in order: its severity history.
CREATE TABLE alert_events (
    alert_id      TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    sequence      BIGINT NOT NULL,
    at            TIMESTAMPTZ NOT NULL,
    kind          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    summary       TEXT NOT NULL,
    actor         TEXT NOT NULL,
    note          TEXT,
    notifications BIGINT NOT NULL,
    PRIMARY KEY (alert_id, sequence)
);

-- Silences: no notification for a tenant's alerts (or one check's) until ends_at.
CREATE TABLE silences (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    check_name     TEXT,
    starts_at      TIMESTAMPTZ NOT NULL,
    ends_at        TIMESTAMPTZ NOT NULL,
    end_on_resolve BOOLEAN NOT NULL,
    comment        TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX silences_by_end ON silences (ends_at);

-- When what caused a notification happened (an alert's breaching result
-- arriving), to measure the time to the first delivery attempt.
ALTER TABLE outbox ADD COLUMN caused_at TIMESTAMPTZ;

-- One row per tenant per minute.
CREATE TABLE health_rollups (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    minute             TIMESTAMPTZ NOT NULL,
    status             TEXT NOT NULL,
    availability       DOUBLE PRECISION NOT NULL,
    latency_p50_ms     DOUBLE PRECISION,
    latency_p95_ms     DOUBLE PRECISION,
    latency_max_ms     DOUBLE PRECISION,
    error_rate_percent DOUBLE PRECISION,
    requests_per_minute DOUBLE PRECISION,
    storage_bytes      BIGINT,
    users              DOUBLE PRECISION,
    samples            BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, minute)
);
CREATE INDEX health_rollups_by_minute ON health_rollups (minute);

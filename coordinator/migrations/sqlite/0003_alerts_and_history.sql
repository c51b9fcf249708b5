-- Tenant health: threshold overrides, alerts with their history, silences
-- and per-minute health rollups.

-- A tenant's own thresholds (JSON of every level); no row: the defaults.
CREATE TABLE tenant_thresholds (
    tenant_id  TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    thresholds TEXT NOT NULL,
    updated_at TEXT NOT NULL,
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
    sequence         INTEGER NOT NULL,
    summary          TEXT NOT NULL,
    value            TEXT NOT NULL,
    threshold        TEXT NOT NULL,
    opened_at        TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    resolved_at      TEXT,
    resolved_by      TEXT,
    resolve_note     TEXT,
    acknowledged_at  TEXT,
    acknowledged_by  TEXT,
    notified         INTEGER NOT NULL DEFAULT 0,
    last_notified_at TEXT
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (tenant_id, check_name) WHERE resolved_at IS NULL;
CREATE INDEX alerts_by_tenant ON alerts (tenant_id, opened_at);
CREATE INDEX alerts_resolved ON alerts (resolved_at) WHERE resolved_at IS NOT NULL;

-- Every transition of an alert, in order: its severity history.
CREATE TABLE alert_events (
    alert_id      TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    sequence      INTEGER NOT NULL,
    at            TEXT NOT NULL,
    kind          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    summary       TEXT NOT NULL,
    actor         TEXT NOT NULL,
    note          TEXT,
    notifications INTEGER NOT NULL,
    PRIMARY KEY (alert_id, sequence)
);

-- Silences: no notification for a tenant's alerts (or one check's) until ends_at.
CREATE TABLE silences (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    check_name     TEXT,
    starts_at      TEXT NOT NULL,
    ends_at        TEXT NOT NULL,
    end_on_resolve INTEGER NOT NULL,
    comment        TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX silences_by_end ON silences (ends_at);

-- When what caused a notification happened (an alert's breaching result
-- arriving), to measure the time to the first delivery attempt.
ALTER TABLE outbox ADD COLUMN caused_at TEXT;

-- One row per tenant per minute.
CREATE TABLE health_rollups (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    minute             TEXT NOT NULL,
    status             TEXT NOT NULL,
    availability       REAL NOT NULL,
    latency_p50_ms     REAL,
    latency_p95_ms     REAL,
    latency_max_ms     REAL,
    error_rate_percent REAL,
    requests_per_minute REAL,
    storage_bytes      INTEGER,
    users              REAL,
    samples            INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, minute)
);
CREATE INDEX health_rollups_by_minute ON health_rollups (minute);

-- Backup runs: each attempt to back up a tenant's database or files, what
-- it moved and how it ended. The backups themselves are in the backup
-- repository; a run that succeeded names its backup.

--   kind         database | storage
--   trigger_kind schedule | manual
--   status       running | succeeded | failed
--   updated_at   bumped while the run works: a running row not updated for
--                minutes belongs to a coordinator that stopped, and is
--                marked failed (interrupted) before another run starts
CREATE TABLE backup_runs (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    trigger_kind  TEXT NOT NULL,
    actor         TEXT NOT NULL,
    status        TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    finished_at   TEXT,
    bytes_read    INTEGER NOT NULL DEFAULT 0,
    bytes_written INTEGER NOT NULL DEFAULT 0,
    new_chunks    INTEGER NOT NULL DEFAULT 0,
    backup_id     TEXT,
    error         TEXT
);
CREATE INDEX backup_runs_by_tenant ON backup_runs (tenant_id, started_at);
-- One run at a time per tenant and kind.
CREATE UNIQUE INDEX backup_runs_one_running ON backup_runs (tenant_id, kind)
    WHERE status = 'running';

-- Restores as jobs: started by POST /api/v1/tenants/{id}/restore (202),
-- polled by the CLI and by operators until they end. A job that stopped
-- updating belongs to a coordinator that stopped, and is marked failed
-- (interrupted) before another restore of the tenant starts.

--   tenant_id   the tenant restored into; source_slug the tenant whose
--               backups are restored (itself, or another)
--   status      running | succeeded | failed
--   phase       what the job is doing, for people
--   parts       JSON: the backups restored (or planned), with the safety
--               backups taken before
CREATE TABLE restore_jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source_slug  TEXT NOT NULL,
    restore_at   TEXT NOT NULL,
    only_kind    TEXT,
    actor        TEXT NOT NULL,
    status       TEXT NOT NULL,
    phase        TEXT NOT NULL,
    bytes_total  INTEGER NOT NULL,
    bytes_done   INTEGER NOT NULL,
    parts        TEXT NOT NULL,
    error_code   TEXT,
    error        TEXT,
    started_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX restore_jobs_by_tenant ON restore_jobs (tenant_id, started_at);
CREATE UNIQUE INDEX restore_jobs_one_running ON restore_jobs (tenant_id)
    WHERE status = 'running';

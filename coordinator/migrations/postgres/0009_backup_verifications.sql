-- Verifications of a tenant's backups, as they ended: the latest one of a
-- tenant decides whether its backup alert says "cannot be restored".

--   deep          restored into a scratch database and directory and compared,
--                 rather than only every object read and checked
--   trigger_kind  schedule | manual
--   problems      JSON array of the first problems found, each naming the
--                 backup and the object or table; problems_total counts all
CREATE TABLE backup_verifications (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    deep           BOOLEAN NOT NULL,
    trigger_kind   TEXT NOT NULL,
    actor          TEXT NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ NOT NULL,
    backups        BIGINT NOT NULL,
    problems       TEXT NOT NULL,
    problems_total BIGINT NOT NULL
);
CREATE INDEX backup_verifications_by_tenant ON backup_verifications (tenant_id, finished_at);

-- Configuration backups: every configuration version is written to the
-- backup repository after it is committed. The history row is the queue
-- entry, written in the same transaction as the change, so a crash cannot
-- skip a version.
--
--   settings      what the version committed beside its snapshot, for the
--                 backup alone: the tenant's own thresholds and its
--                 notification channels with their secrets still sealed
--                 (JSON); NULL for versions recorded before this migration
--   backed_up_at  when the version's backup was written; NULL: pending
ALTER TABLE tenant_config_history ADD COLUMN settings TEXT;
ALTER TABLE tenant_config_history ADD COLUMN backed_up_at TEXT;
-- The queue: only the pending versions, oldest first.
CREATE INDEX tenant_config_history_pending ON tenant_config_history (changed_at)
    WHERE backed_up_at IS NULL;

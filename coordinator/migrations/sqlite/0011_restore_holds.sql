-- A restore of a tenant's database or files holds the tenant at zero
-- replicas (nothing writes what is being replaced) until the data is
-- back; the deployer renders a held tenant stopped. A hold counts only
-- while its job is running and alive (updated lately): a coordinator that
-- died mid-restore does not keep the tenant down.
ALTER TABLE restore_jobs ADD COLUMN holds_tenant INTEGER NOT NULL DEFAULT 0;

-- Each tenant's API request budget, shared by the coordinator replicas:
-- the theoretical arrival time of GCRA (when the budget would be full
-- again), in milliseconds since the Unix epoch on the database's clock.
-- Replicas lease tokens from it in small batches. `granted` is what the
-- last lease got, read back by that lease alone. A missing row is a full
-- budget: rows full again are deleted, and a purge deletes the tenant's.
CREATE TABLE tenant_rate_limits (
    tenant_id TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tat_ms    INTEGER NOT NULL,
    granted   INTEGER NOT NULL
);

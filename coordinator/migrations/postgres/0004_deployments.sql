-- Tenant deployments on Kubernetes: each tenant's latest deployment with
-- its progress, the settings that only the deployment uses, and what the
-- deployer did (phases, drift repairs, pruning, scaling).

--   phase        pending | applying | waiting | verifying | ready | failed | skipped
--   attempt      the number of the latest deployment, counting from 1
--   trigger_kind what asked for it: provisioned | updated | manual | deprovisioned | reconcile | scaled
--   objects_hash sha256 of the rendered objects (Secret values excluded)
--   allowlist    JSON list of CIDRs allowed to reach the ingress ([]: everyone)
--   min_replicas the backend's minimum raised by scaling; NULL: the plan's
CREATE TABLE tenant_deployments (
    tenant_id    TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    phase        TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    trigger_kind TEXT NOT NULL,
    reason       TEXT,
    objects_hash TEXT,
    allowlist    TEXT NOT NULL DEFAULT '[]',
    min_replicas BIGINT,
    scaled_at    TIMESTAMPTZ,
    requested_at TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX tenant_deployments_by_phase ON tenant_deployments (phase);

--   kind   phase | drift | prune | scale
CREATE TABLE deployment_events (
    id        TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at        TIMESTAMPTZ NOT NULL,
    attempt   BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX deployment_events_by_tenant ON deployment_events (tenant_id, at);

-- Tenant registry. Every tenant-owned table references tenants(id) and is
-- deleted explicitly by a purge (the ON DELETE CASCADE is a second line).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    slug             TEXT NOT NULL,
    plan             TEXT NOT NULL,
    domain           TEXT NOT NULL,
    status           TEXT NOT NULL,
    config_version   BIGINT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    deprovisioned_at TIMESTAMPTZ,
    retain_until     TIMESTAMPTZ,
    CONSTRAINT tenants_slug_key UNIQUE (slug),
    CONSTRAINT tenants_domain_key UNIQUE (domain)
);

CREATE TABLE tenant_users (
    id                   TEXT PRIMARY KEY NOT NULL,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email                TEXT NOT NULL,
    role                 TEXT NOT NULL,
    password_hash        TEXT NOT NULL,
    must_change_password BOOLEAN NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    CONSTRAINT tenant_users_email_key UNIQUE (tenant_id, email)
);

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    key_hash       TEXT NOT NULL,
    display_prefix TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ,
    CONSTRAINT api_keys_hash_key UNIQUE (key_hash)
);
CREATE UNIQUE INDEX api_keys_one_active ON api_keys (tenant_id, kind) WHERE revoked_at IS NULL;

CREATE TABLE tenant_branding (
    tenant_id       TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    company_name    TEXT NOT NULL,
    primary_color   TEXT NOT NULL,
    secondary_color TEXT NOT NULL,
    logo_url        TEXT
);

CREATE TABLE tenant_features (
    tenant_id                 TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    enable_nft                BOOLEAN NOT NULL,
    enable_bonds              BOOLEAN NOT NULL,
    enable_fractionalization  BOOLEAN NOT NULL,
    enable_enterprise         BOOLEAN NOT NULL,
    enable_custom_development BOOLEAN NOT NULL
);

CREATE TABLE tenant_usage (
    tenant_id     TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    users         BIGINT NOT NULL,
    storage_bytes BIGINT NOT NULL,
    api_requests  BIGINT NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE tenant_secrets (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    sealed     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE tenant_config_history (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version    BIGINT NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    actor      TEXT NOT NULL,
    change     TEXT NOT NULL,
    snapshot   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- Durable notifications: written in the same transaction as the change that
-- causes them, drained by the notifier. The body is sealed (it may carry a
-- temporary password).
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    sealed_body     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    delivered_at    TIMESTAMPTZ,
    last_error      TEXT,
    CONSTRAINT outbox_idempotency_key UNIQUE (idempotency_key)
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
